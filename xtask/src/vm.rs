//! `cargo xtask vm-test`: the integration suite on another kernel and architecture, in qemu.
//!
//! 1. Debian's packages: qemu for the architecture, the kernel (`linux-image-<arch>`'s current
//!    6.1 build unless `--kernel` names one) and a static busybox, both for the guest's
//!    architecture (`apt-get download`, cached in `target/vm/<arch>/`).
//! 2. Static (musl) builds of leaktrace and the integration test executables for the guest's
//!    architecture; aarch64 is cross-built and linked with rust-lld. The reproducers are the
//!    programs the host suite traces, built for the guest's architecture: leaktrace-reproducer
//!    and tests/build.rs's C programs are glibc programs (the tests assert on glibc's locks and
//!    unwind through its frames, as they would on a user's machine), cross-compiled with Debian's
//!    `aarch64-linux-gnu-gcc`; glibc's loader and libraries go into the guest. The Go
//!    reproducers are built for the guest's GOARCH (xtask/src/golang.rs).
//! 3. An initramfs: busybox, those binaries, and an `/init` that mounts proc, sysfs, tracefs,
//!    debugfs, bpffs and cgroup2, runs each test executable and powers off.
//! 4. qemu with TCG (this host's KVM cannot run ordinary guests), the serial console streamed and
//!    kept in `target/vm/<arch>/console.log`. The guest's `vm-test:` lines and libtest's
//!    `test NAME ... ok|FAILED` lines become a summary and the exit status: every executable must
//!    end with status 0, having run at least one test, and the guest must reach its last line.
//!
//! The guest suite is every integration test file but those of [`NOT_IN_GUEST`] (the Redis load
//! test, the churn rates): they run on the host only, and the summary says so.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader, Write as _},
    os::unix::fs::{symlink, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{bootstrap, cargo, ensure_apt_packages, golang, output, run, target_root};

/// Integration test files the host runs that a guest does not: (file, the reason). `vm-test`'s
/// summary prints each.
const NOT_IN_GUEST: &[(&str, &str)] = &[
    (
        "no_false_alarms",
        "drives a Redis server under load: not in the initramfs, and not meaningful under emulation",
    ),
    (
        "churn",
        "holds thread and process rates (10k threads/s) that emulation cannot reach",
    ),
];

/// Guest CPUs: two, like this machine, taking turns on one qemu thread (see [`ACCEL`]).
const SMP: u16 = 2;
/// Single-threaded TCG, for both architectures: QEMU 7.2's multi-threaded TCG keeps running
/// stale translations of kernel text the guest has just patched, which every tracepoint attach
/// and detach does (the static key of `sys_enter`, among others). On x86_64 a vCPU kept
/// executing text_poke_bp's int3 after the final bytes were written: toggling
/// raw_syscalls/sys_enter under `-smp 2` livelocked both vCPUs in syscall_trace_enter within
/// seconds, while one host thread ran 566 toggles in 180 s clean. On aarch64 the stale
/// jump-label NOP silences the tracepoint instead: 11 of 1091 toggles left both vCPUs recording
/// no sys_enter for 0.6 s, 0 of 937 on one host thread; a leaktrace under test then saw none of
/// its program's syscalls. docs/qemu-tcg.md has the reproducer. (This host's KVM cannot run
/// ordinary guests.)
const ACCEL: &str = "tcg,thread=single";
/// Guest memory: the initramfs (~75 MiB unpacked) stays in it, and the tests run several tracers.
const MEMORY_MIB: u32 = 4096;
/// A guest suite takes 5-10 minutes under emulation; a hung guest is stopped after this.
const TIMEOUT_MIN: u64 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
}

#[derive(clap::Args)]
pub struct VmArgs {
    /// The guest's architecture.
    #[arg(long, value_enum, default_value_t = Arch::host())]
    arch: Arch,
    /// The kernel: a Debian package (e.g. linux-image-6.1.0-57-amd64) or a vmlinuz file. By
    /// default the package `linux-image-<amd64|arm64>` currently depends on.
    #[arg(long)]
    kernel: Option<String>,
    /// Only these integration test files (e.g. tracer,unwind); all of the guest suite by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Guest CPUs.
    #[arg(long, default_value_t = SMP)]
    smp: u16,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = MEMORY_MIB)]
    memory: u32,
    /// More kernel command-line parameters (e.g. `loglevel=7` to see every kernel message).
    #[arg(long, default_value = "")]
    kernel_args: String,
    /// The whole guest run is stopped (and fails) after this many minutes.
    #[arg(long, default_value_t = TIMEOUT_MIN)]
    timeout_min: u64,
    /// Passed to every test executable (libtest's: a name filter, --test-threads N, ...).
    #[arg(last = true)]
    test_args: Vec<String>,
}

impl VmArgs {
    /// The whole guest suite on `arch`'s default kernel, with the default machine.
    pub fn suite(arch: Arch) -> Self {
        VmArgs {
            arch,
            kernel: None,
            only: Vec::new(),
            smp: SMP,
            memory: MEMORY_MIB,
            kernel_args: String::new(),
            timeout_min: TIMEOUT_MIN,
            test_args: Vec::new(),
        }
    }
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Aarch64
        } else {
            Self::X86_64
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }

    /// Debian's name.
    fn debian(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Aarch64 => "arm64",
        }
    }

    fn goarch(self) -> &'static str {
        self.debian()
    }

    /// The static target of leaktrace and the test executables.
    fn rust_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The glibc target of the reproducer.
    fn glibc_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-gnu",
            Self::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The prefix of Debian's tools for this architecture: "" natively, `aarch64-linux-gnu-`
    /// across.
    fn tool_prefix(self) -> &'static str {
        if self == Self::host() {
            ""
        } else {
            match self {
                Self::X86_64 => "x86_64-linux-gnu-",
                Self::Aarch64 => "aarch64-linux-gnu-",
            }
        }
    }

    /// Debian's multiarch tuple: the guest's library directory is /lib/<tuple>.
    fn multiarch(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-linux-gnu",
            Self::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// Where this host keeps the glibc the C reproducers link against, and the guest path of
    /// the dynamic loader.
    fn glibc(self) -> (PathBuf, &'static str) {
        let dir = if self == Self::host() {
            PathBuf::from("/lib").join(self.multiarch())
        } else {
            PathBuf::from("/usr").join(self.multiarch()).join("lib")
        };
        let loader = match self {
            Self::X86_64 => "/lib64/ld-linux-x86-64.so.2",
            Self::Aarch64 => "/lib/ld-linux-aarch64.so.1",
        };
        (dir, loader)
    }

    /// qemu, its machine arguments and the kernel's console.
    fn qemu(self) -> (&'static str, &'static [&'static str], &'static str) {
        match self {
            Self::X86_64 => ("qemu-system-x86_64", &["-M", "pc", "-cpu", "max"], "ttyS0"),
            // pauth-impdef: the cheap pointer-authentication algorithm; boots 4x faster than
            // the architected one under emulation.
            Self::Aarch64 => (
                "qemu-system-aarch64",
                &["-M", "virt", "-cpu", "max,pauth-impdef=on"],
                "ttyAMA0",
            ),
        }
    }

    /// (Debian package, command) pairs of what builds and boots this guest.
    fn host_packages(self) -> Vec<(&'static str, &'static str)> {
        let mut packages = vec![("cpio", "cpio"), ("gzip", "gzip")];
        packages.push(match self {
            Self::X86_64 => ("qemu-system-x86", "qemu-system-x86_64"),
            Self::Aarch64 => ("qemu-system-arm", "qemu-system-aarch64"),
        });
        if self != Self::host() {
            // tests/build.rs's C and C++ programs and ring's C code (kube's TLS), for the guest.
            packages.extend(match self {
                Self::X86_64 => [
                    ("gcc-x86-64-linux-gnu", "x86_64-linux-gnu-gcc"),
                    ("g++-x86-64-linux-gnu", "x86_64-linux-gnu-g++"),
                ],
                Self::Aarch64 => [
                    ("gcc-aarch64-linux-gnu", "aarch64-linux-gnu-gcc"),
                    ("g++-aarch64-linux-gnu", "aarch64-linux-gnu-g++"),
                ],
            });
        }
        packages
    }
}

/// `target/vm/<arch>`: downloads, the staged root, the initramfs, the console log.
fn vm_dir(arch: Arch) -> PathBuf {
    target_root().join("vm").join(arch.name())
}

pub fn vm_test(args: VmArgs) -> Result<()> {
    let start = Instant::now();
    let arch = args.arch;
    let dir = vm_dir(arch);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    ensure_apt_packages(&arch.host_packages())?;
    let kernel = kernel(arch, args.kernel.as_deref(), &dir)?;
    let busybox = debian_file(arch, "busybox-static", "bin/busybox", &dir)?;
    let build = build(arch)?;
    let suite = suite(&build.tests, &args.only)?;
    let go = if arch == Arch::host() {
        golang::build_host()?
    } else {
        golang::build_go(
            arch.goarch(),
            &golang::go_dir().join(format!("bin-{}", arch.goarch())),
        )?
    };
    let initramfs = initramfs(
        arch,
        &dir,
        &busybox,
        &build,
        &suite,
        &go.bins,
        &args.test_args,
    )?;
    let prepared = start.elapsed().as_secs_f64();

    let log = dir.join("console.log");
    let boot = Instant::now();
    let console = boot_guest(arch, &args, &kernel, &initramfs, &log)?;
    let outcome = Outcome::parse(&console);
    println!(
        "{}",
        outcome.summary(
            arch,
            &kernel,
            &suite,
            boot.elapsed().as_secs_f64(),
            prepared
        )
    );
    if let Some(failure) = outcome.failure(&suite) {
        bail!(
            "vm-test {} failed: {failure}; the guest's console is in {}",
            arch.name(),
            log.display()
        );
    }
    Ok(())
}

/// Runs apt-get in `dir` (where `download` writes), quietly and without questions.
fn apt(dir: &Path) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(dir)
        .arg("-q")
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Lets apt download `arch`'s packages: for a foreign architecture, `dpkg --add-architecture`
/// and `apt-get update` once.
fn enable_arch(arch: Arch, dir: &Path) -> Result<()> {
    let native = output(Command::new("dpkg").arg("--print-architecture"))?;
    if native.trim() == arch.debian() {
        return Ok(());
    }
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|l| l.trim() == arch.debian()) {
        return Ok(());
    }
    run(Command::new("dpkg").args(["--add-architecture", arch.debian()]))?;
    run(apt(dir).arg("update"))
}

/// `package` for `arch` (`name:arm64` across), downloaded into `dir` unless a `.deb` of it is
/// there, and unpacked into `dir/<package>/`; returns that directory.
fn debian_package(arch: Arch, package: &str, dir: &Path) -> Result<PathBuf> {
    let unpacked = dir.join(package);
    let deb_prefix = format!("{package}_");
    let find_deb = || -> Result<Option<PathBuf>> {
        Ok(fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.starts_with(&deb_prefix) && name.ends_with(&format!("_{}.deb", arch.debian()))
            }))
    };
    let deb = match find_deb()? {
        Some(deb) => {
            eprintln!("xtask: vm: {} cached", deb.display());
            deb
        }
        None => {
            enable_arch(arch, dir)?;
            let name = format!("{package}:{}", arch.debian());
            if run(apt(dir).args(["download", &name])).is_err() {
                // A fresh machine's package lists may be missing or stale.
                run(apt(dir).arg("update"))?;
                run(apt(dir).args(["download", &name]))?;
            }
            find_deb()?.with_context(|| format!("apt-get download {name} left no .deb"))?
        }
    };
    if !unpacked.is_dir() {
        let partial = dir.join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &unpacked)?;
    }
    Ok(unpacked)
}

/// The file at `path` inside `package` for `arch`.
fn debian_file(arch: Arch, package: &str, path: &str, dir: &Path) -> Result<PathBuf> {
    let file = debian_package(arch, package, dir)?.join(path);
    if !file.is_file() {
        bail!("{package} for {} has no {path}", arch.debian());
    }
    Ok(file)
}

/// The guest's kernel image: `--kernel` as a file, or as a package, or the package Debian's
/// `linux-image-<arch>` depends on now.
fn kernel(arch: Arch, choice: Option<&str>, dir: &Path) -> Result<PathBuf> {
    if let Some(file) = choice.map(Path::new).filter(|p| p.is_file()) {
        return Ok(file.to_path_buf());
    }
    let package = match choice {
        Some(package) => package.to_owned(),
        None => {
            enable_arch(arch, dir)?;
            let meta = format!("linux-image-{}:{}", arch.debian(), arch.debian());
            let depends = match output(Command::new("apt-cache").args(["depends", &meta])) {
                Ok(depends) if depends.contains("Depends: linux-image-") => depends,
                _ => {
                    run(apt(dir).arg("update"))?;
                    output(Command::new("apt-cache").args(["depends", &meta]))?
                }
            };
            depends
                .lines()
                .find_map(|l| l.trim().strip_prefix("Depends: "))
                .map(|p| p.split(':').next().unwrap_or(p).to_owned())
                .with_context(|| format!("apt-cache depends {meta} names no kernel package"))?
        }
    };
    let unpacked = debian_package(arch, &package, dir)?;
    fs::read_dir(unpacked.join("boot"))
        .with_context(|| format!("{package} has no boot/"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))
}

/// What the guest runs, built for its architecture.
struct Build {
    /// leaktrace (static).
    leaktrace: PathBuf,
    /// leaktrace-reproducer (glibc).
    reproducer: PathBuf,
    /// tests/build.rs's C reproducers.
    c_repros: PathBuf,
    /// Integration test file name -> its executable.
    tests: BTreeMap<String, PathBuf>,
}

/// The environment of a cargo build for `target` of `arch`: across, the static target links
/// with rust-lld and the glibc one with Debian's cross gcc, and the C and C++ code (ring,
/// tests/build.rs) is compiled with Debian's cross compilers.
fn cross_env(arch: Arch, target: &str) -> Vec<(String, String)> {
    let prefix = arch.tool_prefix();
    if prefix.is_empty() {
        return Vec::new();
    }
    let var = |tool: &str| format!("{tool}_{}", target.replace('-', "_"));
    let linker = if target == arch.rust_target() {
        "rust-lld".to_owned()
    } else {
        format!("{prefix}gcc")
    };
    vec![
        (
            format!(
                "CARGO_TARGET_{}_LINKER",
                target.replace('-', "_").to_uppercase()
            ),
            linker,
        ),
        (var("CC"), format!("{prefix}gcc")),
        (var("CXX"), format!("{prefix}g++")),
        (var("AR"), format!("{prefix}ar")),
        (var("STRIP"), format!("{prefix}strip")),
    ]
}

/// Adds rustup's standard library for `target` unless it is there.
fn ensure_rust_target(target: &str) -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if installed.lines().any(|l| l.trim() == target) {
        eprintln!("xtask: vm: rust target {target} present");
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", target]))
}

fn build(arch: Arch) -> Result<Build> {
    bootstrap()?;
    let glibc = arch.glibc_target();
    ensure_rust_target(glibc)?;
    run(cargo()
        .args(["build", "--release", "--target", glibc])
        .args([
            "--package",
            "leaktrace-tests",
            "--bin",
            "leaktrace-reproducer",
        ])
        .envs(cross_env(arch, glibc)))?;
    let target = arch.rust_target();
    ensure_rust_target(target)?;
    let env = cross_env(arch, target);
    run(cargo()
        .args(["build", "--release", "--target", target])
        .args(["--package", "leaktrace", "--bin", "leaktrace"])
        .envs(env.iter().cloned()))?;
    let messages = output(
        cargo()
            .args(["test", "--no-run", "--release", "--target", target])
            .args(["--package", "leaktrace-tests", "--tests"])
            .arg("--message-format=json-render-diagnostics")
            .envs(env.iter().cloned()),
    )?;
    let mut tests = BTreeMap::new();
    let mut c_repros = None;
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let package = msg["package_id"].as_str().unwrap_or_default();
        match msg["reason"].as_str() {
            Some("compiler-artifact") if msg["target"]["kind"][0] == "test" => {
                if let (Some(name), Some(exe)) =
                    (msg["target"]["name"].as_str(), msg["executable"].as_str())
                {
                    tests.insert(name.to_owned(), PathBuf::from(exe));
                }
            }
            Some("build-script-executed") if package.contains("leaktrace-tests") => {
                c_repros = msg["out_dir"].as_str().map(PathBuf::from);
            }
            _ => {}
        }
    }
    if tests.is_empty() {
        bail!("cargo test --no-run built no integration test executables");
    }
    let release = |target: &str| target_root().join(target).join("release");
    Ok(Build {
        leaktrace: release(target).join("leaktrace"),
        reproducer: release(glibc).join("leaktrace-reproducer"),
        c_repros: c_repros
            .context("no build-script output for leaktrace-tests (tests/build.rs)")?,
        tests,
    })
}

/// The integration test files the guest runs: all but those [`NOT_IN_GUEST`], or those of
/// `--only`.
fn suite(tests: &BTreeMap<String, PathBuf>, only: &[String]) -> Result<Vec<String>> {
    if let Some(unknown) = only.iter().find(|name| !tests.contains_key(*name)) {
        bail!(
            "--only {unknown}: no such integration test file (there are: {})",
            tests.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(tests
        .keys()
        .filter(|name| {
            if only.is_empty() {
                !NOT_IN_GUEST.iter().any(|(file, _)| file == name)
            } else {
                only.contains(name)
            }
        })
        .cloned()
        .collect())
}

/// The guest's `/init`: mounts what leaktrace reads, runs each test executable (`vm-test:`
/// lines frame each one's output), powers off.
fn init_script(suite: &[String], test_args: &[String], loader_dir: &str) -> String {
    let quoted: Vec<String> = test_args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut script = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TMPDIR=/tmp RUST_BACKTRACE=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
ulimit -n 65536
export LEAKTRACE_BIN=/leaktrace/leaktrace
export LEAKTRACE_REPRODUCER=/leaktrace/leaktrace-reproducer
export LEAKTRACE_C_REPROS=/leaktrace/c
export LEAKTRACE_GO_BINS=/leaktrace/go
export LD_LIBRARY_PATH={loader_dir}
echo "vm-test: kernel $(uname -r) $(uname -m), $(nproc) cpus"
kprobes=absent; [ -e /sys/bus/event_source/devices/kprobe ] && kprobes=present
echo "vm-test: kprobes $kprobes"
"#
    );
    for test in suite {
        let _ = writeln!(
            script,
            "echo 'vm-test: begin {test}'\n/tests/{test} {}\necho \"vm-test: end {test} status=$?\"",
            quoted.join(" ")
        );
    }
    script.push_str("echo 'vm-test: done'\npoweroff -f\n");
    script
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Stages the guest's root in `dir/root` and packs it into `dir/initramfs.cpio.gz`.
fn initramfs(
    arch: Arch,
    dir: &Path,
    busybox: &Path,
    build: &Build,
    suite: &[String],
    go_bins: &Path,
    test_args: &[String],
) -> Result<PathBuf> {
    let root = dir.join("root");
    let _ = fs::remove_dir_all(&root);
    for sub in [
        "bin",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "leaktrace/c",
        "leaktrace/go",
    ] {
        fs::create_dir_all(root.join(sub))?;
    }
    copy(busybox, &root.join("bin/busybox"))?;
    // leaktrace without its debug info (a quarter of the size); the reproducer keeps its
    // symbols, which the tests read back from the reports.
    run(Command::new(format!("{}strip", arch.tool_prefix()))
        .arg("--strip-debug")
        .arg("-o")
        .arg(root.join("leaktrace/leaktrace"))
        .arg(&build.leaktrace))?;
    copy(
        &build.reproducer,
        &root.join("leaktrace/leaktrace-reproducer"),
    )?;
    for entry in fs::read_dir(&build.c_repros)? {
        let path = entry?.path();
        if path.is_file() {
            copy(
                &path,
                &root
                    .join("leaktrace/c")
                    .join(path.file_name().unwrap_or_default()),
            )?;
        }
    }
    for entry in fs::read_dir(go_bins)? {
        let path = entry?.path();
        copy(
            &path,
            &root
                .join("leaktrace/go")
                .join(path.file_name().unwrap_or_default()),
        )?;
    }
    for test in suite {
        copy(&build.tests[test], &root.join("tests").join(test))?;
    }
    // glibc for the C reproducers and the Go PIE: the loader at its fixed path, the libraries
    // where it looks.
    let (glibc, loader) = arch.glibc();
    let lib_dir = format!("/lib/{}", arch.multiarch());
    for lib in ["libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1"] {
        copy(&glibc.join(lib), &root.join(&lib_dir[1..]).join(lib))?;
    }
    let loader_name = Path::new(loader).file_name().unwrap_or_default();
    copy(&glibc.join(loader_name), &root.join(&loader[1..]))?;
    let init = root.join("init");
    fs::write(&init, init_script(suite, test_args, &lib_dir))?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    symlink("/bin/busybox", root.join("bin/sh"))?;

    let packed = dir.join("initramfs.cpio.gz");
    let file = fs::File::create(&packed)?;
    let mut find = Command::new("find")
        .arg(".")
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run find")?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(find.stdout.take().context("find's stdout")?)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cpio")?;
    let gzip = Command::new("gzip")
        .arg("-1")
        .stdin(cpio.stdout.take().context("cpio's stdout")?)
        .stdout(file)
        .status()
        .context("cannot run gzip")?;
    if !(find.wait()?.success() && cpio.wait()?.success() && gzip.success()) {
        bail!(
            "packing {} into {} failed",
            root.display(),
            packed.display()
        );
    }
    eprintln!(
        "xtask: vm: {} ({} MiB)",
        packed.display(),
        fs::metadata(&packed)?.len() >> 20
    );
    Ok(packed)
}

/// Boots the guest; streams its console to stderr and `log`; returns it, `\r` stripped. Stops
/// qemu at the timeout.
fn boot_guest(
    arch: Arch,
    args: &VmArgs,
    kernel: &Path,
    initramfs: &Path,
    log: &Path,
) -> Result<Vec<String>> {
    let (qemu, machine, console) = arch.qemu();
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", ACCEL])
        .args(machine)
        .args(["-smp", &args.smp.to_string()])
        .args(["-m", &args.memory.to_string()])
        .args(["-nographic", "-no-reboot"])
        // No network: the suite needs none, and the default NIC's option ROM (efi-virtio.rom,
        // in ipxe-qemu) is only a Recommends of qemu-system-arm, so a fresh machine lacks it.
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console={console} panic=-1 loglevel=5 softlockup_panic=1 {}",
            args.kernel_args
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("xtask: {cmd:?}");
    let mut child = cmd.spawn().with_context(|| format!("cannot run {qemu}"))?;
    let stdout = child.stdout.take().context("qemu's stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line.replace('\r', "")).is_err() {
                break;
            }
        }
    });
    let mut file = fs::File::create(log)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout_min * 60);
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                eprintln!("guest: {line}");
                writeln!(file, "{line}")?;
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                lines.push(format!(
                    "vm-test: TIMEOUT after {} min: qemu stopped",
                    args.timeout_min
                ));
                break;
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        lines.push(format!("vm-test: qemu exited with {status}"));
    }
    Ok(lines)
}

/// Kernel console lines that end a guest run early. The guest boots with `softlockup_panic=1`
/// and `panic=-1`, so a soft lockup (x86_64 under multi-threaded TCG hit one; see [`ACCEL`])
/// stops qemu at once with its stacks on the console (`loglevel=5` prints them) instead of
/// spinning until the timeout.
const GUEST_KERNEL_TROUBLE: [&str; 2] = ["] watchdog: BUG: soft lockup", "] Kernel panic"];

/// One test executable's run in the guest.
#[derive(Default)]
struct FileRun {
    /// Exit status, None if it never ended.
    status: Option<i32>,
    passed: Vec<String>,
    failed: Vec<String>,
    ignored: Vec<String>,
}

/// What the guest's console says happened.
struct Outcome {
    /// `vm-test: kernel ...` and `vm-test: kprobes ...`.
    facts: Vec<String>,
    files: BTreeMap<String, FileRun>,
    done: bool,
    /// TIMEOUT / qemu's own failure, if any.
    trouble: Vec<String>,
}

impl Outcome {
    fn parse(console: &[String]) -> Self {
        let mut outcome = Self {
            facts: Vec::new(),
            files: BTreeMap::new(),
            done: false,
            trouble: Vec::new(),
        };
        let mut current: Option<String> = None;
        let mut kernel_trouble = false;
        for line in console {
            // libtest prints `test NAME ... ok`; a test's own output may share the line.
            if let (Some(file), Some(rest)) = (&current, line.find("test ").map(|i| &line[i..])) {
                if let Some((name, result)) = rest["test ".len()..].split_once(" ... ") {
                    let run = outcome.files.entry(file.clone()).or_default();
                    let name = name.to_owned();
                    match result.trim() {
                        "ok" => run.passed.push(name),
                        "FAILED" => run.failed.push(name),
                        r if r.starts_with("ignored") => run.ignored.push(name),
                        _ => {}
                    }
                }
            }
            // The first such line says what happened; the rest repeat it.
            if !kernel_trouble && GUEST_KERNEL_TROUBLE.iter().any(|t| line.contains(t)) {
                kernel_trouble = true;
                outcome.trouble.push(format!("guest kernel: {line}"));
            }
            let Some(said) = line.strip_prefix("vm-test: ") else {
                continue;
            };
            if let Some(file) = said.strip_prefix("begin ") {
                current = Some(file.to_owned());
                outcome.files.entry(file.to_owned()).or_default();
            } else if let Some((file, status)) = said
                .strip_prefix("end ")
                .and_then(|s| s.split_once(" status="))
            {
                outcome.files.entry(file.to_owned()).or_default().status = status.parse().ok();
                current = None;
            } else if said == "done" {
                outcome.done = true;
            } else if said.starts_with("kernel ") || said.starts_with("kprobes ") {
                outcome.facts.push(said.to_owned());
            } else {
                outcome.trouble.push(said.to_owned());
            }
        }
        outcome
    }

    /// Why the run failed, if it did.
    fn failure(&self, suite: &[String]) -> Option<String> {
        let mut why = self.trouble.clone();
        if !self.done {
            why.push("the guest never finished its suite".to_owned());
        }
        for name in suite {
            match self.files.get(name) {
                None => why.push(format!("{name} never started")),
                Some(run) if run.status != Some(0) => {
                    why.push(format!("{name} exited with {:?}", run.status));
                }
                Some(run) if run.passed.is_empty() => why.push(format!("{name} passed no test")),
                Some(_) => {}
            }
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    fn summary(
        &self,
        arch: Arch,
        kernel: &Path,
        suite: &[String],
        boot_secs: f64,
        prepared_secs: f64,
    ) -> String {
        let mut out = format!(
            "vm-test {} on {} (prepared in {prepared_secs:.0}s, guest ran {boot_secs:.0}s)\n",
            arch.name(),
            kernel.display()
        );
        for fact in &self.facts {
            let _ = writeln!(out, "  {fact}");
        }
        let _ = writeln!(
            out,
            "  {:<16} {:>6} {:>6} {:>7}  status",
            "test file", "passed", "failed", "ignored"
        );
        for name in suite {
            let run = self.files.get(name);
            let status = match run.map(|r| r.status) {
                None => "never started".to_owned(),
                Some(None) => "never ended".to_owned(),
                Some(Some(code)) => code.to_string(),
            };
            let count = |f: fn(&FileRun) -> &Vec<String>| run.map_or(0, |r| f(r).len());
            let _ = writeln!(
                out,
                "  {name:<16} {:>6} {:>6} {:>7}  {status}",
                count(|r| &r.passed),
                count(|r| &r.failed),
                count(|r| &r.ignored)
            );
            for failed in run.map(|r| r.failed.as_slice()).unwrap_or_default() {
                let _ = writeln!(out, "    FAILED: {failed}");
            }
        }
        for &(name, reason) in NOT_IN_GUEST {
            if !suite.iter().any(|s| s == name) {
                let _ = writeln!(out, "  {name:<16} NOT RUN IN THIS GUEST: {reason}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn a_guest_soft_lockup_fails_the_run_and_names_the_stuck_task() {
        let outcome = Outcome::parse(&console(&[
            "vm-test: kernel 6.1.0-57-amd64 x86_64, 2 cpus",
            "vm-test: begin goroutines",
            "test go1_23_9::chan_send ... ok",
            "[   73.011683] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! [leaktrace:440]",
            "[   73.011700] Kernel panic - not syncing: softlockup: hung tasks",
        ]));
        assert_eq!(
            outcome.trouble,
            [
                "guest kernel: [   73.011683] watchdog: BUG: soft lockup - CPU#1 stuck for 26s! \
              [leaktrace:440]"
            ]
        );
        let why = outcome
            .failure(&["goroutines".to_owned()])
            .expect("a failure");
        assert!(why.starts_with("guest kernel: "), "{why}");
        assert!(why.contains("goroutines exited with None"), "{why}");
    }

    #[test]
    fn a_clean_guest_run_has_no_trouble() {
        let outcome = Outcome::parse(&console(&[
            "vm-test: begin goroutines",
            "test go1_23_9::chan_send ... ok",
            "[   38.966043] hrtimer: interrupt took 4021720 ns",
            "vm-test: end goroutines status=0",
            "vm-test: done",
        ]));
        assert!(outcome.trouble.is_empty(), "{:?}", outcome.trouble);
        assert_eq!(outcome.failure(&["goroutines".to_owned()]), None);
    }
}
