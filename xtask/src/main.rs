//! Everything that is not plain cargo: toolchain bootstrap, build, the demo run, the test suite.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "leaktrace's build, run and test tasks")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF programs needs: rust-src and bpf-linker (idempotent).
    Bootstrap,
    /// Bootstrap, then build leaktrace and the reproducer (release).
    Build,
    /// Build, then trace the bundled reproducer leaking sockets (needs root). Extra
    /// arguments replace the default leaktrace arguments.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, run the unit tests, then the integration tests against the real kernel (root).
    Test,
    /// cargo fmt --check and clippy -D warnings on every crate, the eBPF one for its target.
    Lint,
}

/// bpf-linker release that links against the Rust toolchain's own LLVM (rustc 1.95: LLVM 22).
const BPF_LINKER_VERSION: &str = "0.13.0";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn bootstrap() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let sysroot = Path::new(sysroot.trim());
    let src = sysroot.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        eprintln!("xtask: rust-src present");
    } else {
        run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }

    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    if linker_ok {
        eprintln!("xtask: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    // Link bpf-linker against the toolchain's own libLLVM: distribution LLVMs are too old and
    // prebuilt releases cannot be downloaded here. Only the LLVM major version must match.
    let version = output(Command::new("rustc").arg("-vV"))?;
    let field = |name: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("rustc -vV has no {name}"))
    };
    let host = field("host:")?;
    let llvm_major = field("LLVM version:")?
        .split('.')
        .next()
        .context("LLVM version")?
        .to_owned();
    let lib = sysroot.join("lib");
    let libllvm = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so") || n.starts_with("libLLVM-"))
        .with_context(|| format!("no libLLVM in {}", lib.display()))?;
    let rustflags = format!(
        "-C link-arg={}/{libllvm} -C link-arg=-Wl,-rpath,{}",
        lib.display(),
        lib.display()
    );
    run(Command::new("cargo")
        .args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
        ])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{llvm_major},no-llvm-linking"))
        // --target keeps RUSTFLAGS away from build scripts.
        .args(["--target", host])
        .env("RUSTFLAGS", rustflags))
}

fn build() -> Result<()> {
    bootstrap()?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "leaktrace",
        "--package",
        "leaktrace-tests",
        "--bins",
    ]))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
        .join("release")
}

fn demo(args: Vec<String>) -> Result<()> {
    build()?;
    let bin = target_dir();
    let args = if args.is_empty() {
        [
            "--interval",
            "2s",
            "--min-age",
            "1s",
            "--duration",
            "9s",
            "--",
            &bin.join("leaktrace-reproducer").to_string_lossy(),
            "fd-socket",
            "--count",
            "60",
            "--interval-ms",
            "100",
        ]
        .map(String::from)
        .to_vec()
    } else {
        args
    };
    let leaktrace = bin.join("leaktrace");
    let mut cmd = if is_root() {
        Command::new(leaktrace)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(leaktrace);
        sudo
    };
    run(cmd.args(args))
}

fn test() -> Result<()> {
    build()?;
    // The eBPF crate only builds for the BPF target (leaktrace's build script does that).
    run(cargo().args([
        "test",
        "--release",
        "--workspace",
        "--exclude",
        "leaktrace-ebpf",
        "--lib",
        "--bins",
    ]))?;
    if !is_root() {
        bail!(
            "INTEGRATION TESTS NOT RUN: they load eBPF programs into the kernel and need root. \
             Run `sudo -E cargo xtask test`."
        );
    }
    let bin = target_dir();
    run(cargo()
        .args([
            "test",
            "--release",
            "--package",
            "leaktrace-tests",
            "--tests",
        ])
        .env("LEAKTRACE_BIN", bin.join("leaktrace"))
        .env("LEAKTRACE_REPRODUCER", bin.join("leaktrace-reproducer")))
}

fn lint() -> Result<()> {
    bootstrap()?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "leaktrace-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo()
        .args(["clippy", "--release", "--package", "leaktrace-ebpf"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .args(["--", "-D", "warnings"])
        // build-std on the stable toolchain, as leaktrace/build.rs does for the real build.
        .env("RUSTC_BOOTSTRAP", "1"))
}

fn main() -> Result<()> {
    match Args::parse().task {
        Task::Bootstrap => bootstrap(),
        Task::Build => build(),
        Task::Run { args } => demo(args),
        Task::Test => test(),
        Task::Lint => lint(),
    }
}
