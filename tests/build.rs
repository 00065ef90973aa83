//! Builds the C and C++ leaky programs of tests/c/ into OUT_DIR, for tests/tests/unwind.rs
//! (which finds them through `env!("LEAKTRACE_C_REPROS")`):
//! - `leaky-O2`: `-O2 -g -fomit-frame-pointer`, the way distributions build C: no frame pointers,
//!   so only .eh_frame can unwind it;
//! - `leaky-fp`: the same with `-fno-omit-frame-pointer`;
//! - `leaky-stripped`: `leaky-O2` after `strip --strip-all` (.eh_frame stays, symbols go);
//!   `leaky-O2` is its unstripped twin, whose symbol table the test reads;
//! - `leakypp-O2`: tests/c/leaky.cpp, `-O2 -g -fomit-frame-pointer`;
//! - `fp-only`: tests/c/fp-only.c, frame pointers in every frame: no libc, static, its own
//!   entry point.
//!
//! Executables, not libraries, hence plain compiler commands rather than the `cc` crate. The
//! tools are named the way the `cc` crate names them: `$CC_<target>` (e.g.
//! `CC_aarch64_unknown_linux_musl`), else `$CC`, else `cc`; the same for CXX (`c++`) and STRIP
//! (`strip`). Cross builds (the aarch64 VM tests) name Debian's `aarch64-linux-gnu-*` there: the
//! programs are glibc executables whichever libc the Rust target uses.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Flags every variant shares. The unwind tables are the default on x86_64; explicit, because
/// they are what the tests exercise.
const COMMON: &[&str] = &[
    "-O2",
    "-g",
    "-fasynchronous-unwind-tables",
    "-Wall",
    "-Wextra",
];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("c");
    println!("cargo:rerun-if-changed=build.rs");
    for file in ["leaky.c", "leaky.cpp", "protocol.h", "fp-only.c"] {
        println!("cargo:rerun-if-changed={}", src.join(file).display());
    }
    for var in ["CC", "CXX", "STRIP"] {
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rerun-if-env-changed={}", target_var(var));
    }
    let cc = tool("CC", "cc");
    let cxx = tool("CXX", "c++");

    let c = src.join("leaky.c");
    compile(
        &cc,
        &c,
        &["-std=c11", "-pthread", "-fomit-frame-pointer"],
        &out.join("leaky-O2"),
    );
    compile(
        &cc,
        &c,
        &["-std=c11", "-pthread", "-fno-omit-frame-pointer"],
        &out.join("leaky-fp"),
    );
    run(
        Command::new(tool("STRIP", "strip"))
            .arg("--strip-all")
            .arg("-o")
            .arg(out.join("leaky-stripped"))
            .arg(out.join("leaky-O2")),
        "strip (binutils)",
    );
    compile(
        &cxx,
        &src.join("leaky.cpp"),
        &["-std=c++17", "-pthread", "-fomit-frame-pointer"],
        &out.join("leakypp-O2"),
    );
    compile(
        &cc,
        &src.join("fp-only.c"),
        &[
            "-std=gnu11",
            "-fno-omit-frame-pointer",
            "-ffreestanding",
            "-fno-stack-protector",
            "-nostdlib",
            "-static",
            "-no-pie",
        ],
        &out.join("fp-only"),
    );
    println!("cargo:rustc-env=LEAKTRACE_C_REPROS={}", out.display());
}

/// `CC_<target>` for `CC`: the target's triple with `-` as `_`.
fn target_var(var: &str) -> String {
    let target = env::var("TARGET").expect("cargo sets TARGET");
    format!("{var}_{}", target.replace('-', "_"))
}

fn tool(var: &str, default: &str) -> String {
    [target_var(var), var.to_owned()]
        .into_iter()
        .find_map(|name| env::var(name).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

fn compile(compiler: &str, source: &Path, flags: &[&str], output: &Path) {
    run(
        Command::new(compiler)
            .args(COMMON)
            .args(flags)
            .arg("-o")
            .arg(output)
            .arg(source),
        "a C/C++ compiler (gcc and g++: `apt-get install gcc g++`)",
    );
}

/// Runs a build tool; its warnings become cargo warnings, its failure (or absence) a build error
/// that says what is missing.
fn run(cmd: &mut Command, what: &str) {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().unwrap_or_else(|err| {
        panic!(
            "tests/build.rs: cannot run `{program}` ({err}). The unwinding tests' C and C++ \
             programs need {what}; install it, or name another in $CC / $CXX / $STRIP."
        )
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "tests/build.rs: {cmd:?} failed ({}):\n{stderr}",
            output.status
        );
    }
    for line in stderr.lines() {
        println!("cargo:warning={program}: {line}");
    }
}
