//! `cargo xtask bench`: what leaktrace costs, measured side by side with the floor and bpftrace.
//!
//! - overhead: every workload of `leaktrace-workload` (tests/src/bin) runs `--rounds` times
//!   under each [`Mode`], the modes alternating within a round so drift hits them alike. Per
//!   workload: median ns/op with min–max per mode, and ratios of leaktrace (pid mode) to the
//!   others from the same run, as ratios of the medians and as the min–max of per-round ratios.
//! - goroutines: the Go reproducer's `churn` untraced, under the floor of the goroutine probes,
//!   `leaktrace --pid` and `--all`.
//! - throughput: the `fd-rate` generator at rising offered rates under `leaktrace --pid`: events
//!   seen, lost records, leaktrace's CPU per million events and peak RSS.
//! - memory: holder processes keep fds and threads; leaktrace's RSS against what it tracks; then
//!   the aggregator alone fed 1M fds + 100k threads (the `aggregator_memory` bench).
//!
//! The workload runs on the last CPU and every tracer on CPU 0, so the tracer's userspace work
//! is not charged to the workload's time (the kernel-side work is: that is the cost measured).
//! Nothing here asserts a timing; it prints tables and writes target/bench/results.json.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::{json, Value};

use crate::{ensure_apt_packages, target_dir, workspace};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Runs per workload and mode; medians and spreads are over these.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Sections to run (comma-separated; default all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// A tenth of the work and one round: checks the harness works, not figures to quote.
    #[arg(long)]
    quick: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Overhead,
    Goroutines,
    Profile,
    Throughput,
    Memory,
}

/// How a workload run is traced.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// (a) Nothing attached.
    Untraced,
    /// (b) The empty program on every tracepoint leaktrace uses (`leaktrace __floor`).
    Floor,
    /// (c) `leaktrace --pid <workload>`: stacks unwound from a copy of the stack top.
    Pid,
    /// (c') `leaktrace --pid <workload> --stack-copy 0`: frame-pointer stacks only.
    PidFp,
    /// (d) `leaktrace --all`.
    SystemWide,
    /// (e) bench.bt, the same state kept by bpftrace.
    Bpftrace,
}

const MODES: [Mode; 6] = [
    Mode::Untraced,
    Mode::Floor,
    Mode::Pid,
    Mode::PidFp,
    Mode::SystemWide,
    Mode::Bpftrace,
];

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Floor => "floor",
            Mode::Pid => "leaktrace-pid",
            Mode::PidFp => "leaktrace-pid-fp",
            Mode::SystemWide => "leaktrace-all",
            Mode::Bpftrace => "bpftrace",
        }
    }
}

/// Workloads and their operations per run (about half a second untraced here).
const WORKLOADS: &[(&str, u64)] = &[
    ("open-close", 400_000),
    ("socket-close", 200_000),
    ("pipe-close", 200_000),
    ("thread-spawn-join", 20_000),
    ("futex-pingpong", 100_000),
    ("mixed", 40_000),
];

/// Memory points: (fds, threads) in all, spread over holders of at most `FDS_PER_HOLDER` fds.
const MEMORY_POINTS: &[(u64, u64)] = &[(9_000, 1_000), (90_000, 10_000), (1_000_000, 100_000)];
/// 100k threads need more pids than the 32768 a 2-CPU kernel defaults to: pid_max is raised to
/// this for the memory section, and restored after.
const MEMORY_PID_MAX: u64 = 4_194_304;
/// Below the per-process fd limit of 20000 here, leaving room for the holder's own fds.
const FDS_PER_HOLDER: u64 = 19_000;

const START_TIMEOUT: Duration = Duration::from_secs(60);

struct Env {
    leaktrace: PathBuf,
    workload: PathBuf,
    script: PathBuf,
    dir: PathBuf,
    /// CPU lists for taskset: (workload, tracer); None on a single CPU.
    cpus: Option<(String, String)>,
}

impl Env {
    fn pinned(&self, program: &Path, tracer: bool) -> Command {
        match &self.cpus {
            Some((workload, tracer_cpu)) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", if tracer { tracer_cpu } else { workload }])
                    .arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }
}

/// `key=value` fields of a line.
fn fields(line: &str) -> BTreeMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Result<T> {
    fields(line)
        .get(key)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key}= in {line:?}"))
}

/// A `leaktrace-workload` process between `ready` and its result.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Workload {
    fn spawn(env: &Env, args: &[String]) -> Result<Self> {
        Self::spawn_program(env, &env.workload, args)
    }

    /// Any program that speaks the workload's protocol (`ready pid=N`, a line on stdin to
    /// start): the Go reproducer does.
    fn spawn_program(env: &Env, program: &Path, args: &[String]) -> Result<Self> {
        let mut child = env
            .pinned(program, false)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("workload stdout")?);
        let ready = read_line(&mut stdout)?;
        let pid = field(&ready, "pid").context("workload did not say ready")?;
        Ok(Self {
            child,
            stdin,
            stdout,
            pid,
        })
    }

    fn start(&mut self) -> Result<()> {
        writeln!(self.stdin.as_mut().context("workload stdin")?, "go")?;
        Ok(())
    }

    /// The next line starting with `prefix`.
    fn expect(&mut self, prefix: &str) -> Result<String> {
        loop {
            let line = read_line(&mut self.stdout)?;
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        ensure!(status.success(), "workload failed: {status}");
        Ok(())
    }
}

fn read_line(r: &mut impl std::io::BufRead) -> Result<String> {
    let mut line = String::new();
    ensure!(r.read_line(&mut line)? > 0, "unexpected end of output");
    Ok(line.trim_end().to_owned())
}

/// CPU time and peak RSS of a reaped child.
struct Usage {
    cpu_s: f64,
    max_rss_kib: u64,
}

/// Waits for `child` up to `timeout` (then SIGKILL) and returns its resource usage.
fn reap(child: &mut Child, timeout: Duration) -> Result<Usage> {
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data the kernel fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child; the pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        ensure!(r >= 0, "wait4({pid}): {}", std::io::Error::last_os_error());
        if r == pid {
            let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return Ok(Usage {
                cpu_s: secs(usage.ru_utime) + secs(usage.ru_stime),
                max_rss_kib: usage.ru_maxrss as u64,
            });
        }
        if Instant::now() > deadline {
            child.kill().ok();
            bail!("pid {pid} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: signals our own, not yet reaped, child.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// A tracer attached to a workload, from attach to its final report.
struct Tracer {
    mode: Mode,
    child: Child,
    stdin: Option<ChildStdin>,
    /// leaktrace's JSON lines report.
    report: PathBuf,
}

/// What a tracer saw, from leaktrace's final report (bpftrace and the floor report nothing).
#[derive(Default)]
struct Seen {
    events: u64,
    lost: u64,
    usage: Option<Usage>,
    /// Per program {name, runs, run_ns}, when the kernel counted them.
    programs: Vec<Value>,
}

impl Tracer {
    /// Starts the tracer for `mode` on `pids` and returns once it is attached; None untraced.
    fn attach(env: &Env, mode: Mode, pids: &[u32]) -> Result<Option<Self>> {
        Self::attach_with_go(env, mode, pids, None)
    }

    /// [`Self::attach`]; the floor also puts its empty program at the goroutine probe points
    /// of `go_binary`.
    fn attach_with_go(
        env: &Env,
        mode: Mode,
        pids: &[u32],
        go_binary: Option<&Path>,
    ) -> Result<Option<Self>> {
        let log = env.dir.join(format!("{}.log", mode.name()));
        let report = env.dir.join(format!("{}.jsonl", mode.name()));
        let (mut cmd, ready) = match mode {
            Mode::Untraced => return Ok(None),
            Mode::Floor => {
                let mut cmd = env.pinned(&env.leaktrace, true);
                cmd.arg("__floor").args(go_binary);
                (cmd, "attached ")
            }
            Mode::Pid | Mode::PidFp | Mode::SystemWide => {
                let mut cmd = env.pinned(&env.leaktrace, true);
                cmd.args(["--format", "json", "--interval", "1s", "-o"])
                    .arg(&report);
                if mode == Mode::SystemWide {
                    cmd.arg("--all");
                } else {
                    for pid in pids {
                        cmd.args(["--pid", &pid.to_string()]);
                    }
                }
                if mode == Mode::PidFp {
                    cmd.args(["--stack-copy", "0"]);
                }
                (cmd, "leaktrace: tracing ")
            }
            Mode::Bpftrace => {
                let mut cmd = env.pinned(Path::new("bpftrace"), true);
                // Paths as long as bpftrace 0.17 allows, like leaktrace's.
                cmd.env("BPFTRACE_STRLEN", "200")
                    .arg(&env.script)
                    .arg(pids[0].to_string());
                (cmd, "attached")
            }
        };
        let out = File::create(&log)?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stdin = child.stdin.take();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.lines().any(|l| l.starts_with(ready)) {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited before attaching ({status}):\n{text}",
                    mode.name()
                );
            }
            if Instant::now() > deadline {
                child.kill().ok();
                bail!(
                    "{} did not attach within {START_TIMEOUT:?}:\n{text}",
                    mode.name()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(Self {
            mode,
            child,
            stdin,
            report,
        }))
    }

    /// Stops the tracer (leaktrace --pid stops by itself once its targets exit) and reads what
    /// it saw.
    fn stop(mut self) -> Result<Seen> {
        match self.mode {
            Mode::Floor => drop(self.stdin.take()),
            Mode::SystemWide | Mode::Bpftrace => signal(&self.child, libc::SIGINT),
            Mode::Pid | Mode::PidFp | Mode::Untraced => {}
        }
        let usage = reap(&mut self.child, Duration::from_secs(60))?;
        let mut seen = Seen::default();
        if matches!(self.mode, Mode::Pid | Mode::PidFp | Mode::SystemWide) {
            let health = last_of_type(&self.report, "health")?
                .with_context(|| format!("no health line in {}", self.report.display()))?;
            seen.events = health["events"].as_u64().context("health.events")?;
            seen.lost = health["lost_events"]
                .as_u64()
                .context("health.lost_events")?;
            seen.programs = health["programs"].as_array().cloned().unwrap_or_default();
        }
        seen.usage = Some(usage);
        Ok(seen)
    }
}

/// The JSON lines of leaktrace's report file.
fn report_lines(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line {l:?}")))
        .collect()
}

fn last_of_type(path: &Path, kind: &str) -> Result<Option<Value>> {
    Ok(report_lines(path)?
        .into_iter()
        .rev()
        .find(|v| v["type"] == kind))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Runs a started-on-demand workload `w` under `mode` to its end: its line starting with
/// `prefix` and what the tracer saw. `go_binary`: the floor also covers its goroutine probes.
fn traced_run(
    env: &Env,
    mut w: Workload,
    mode: Mode,
    go_binary: Option<&Path>,
    prefix: &str,
) -> Result<(String, Seen)> {
    let tracer = Tracer::attach_with_go(env, mode, &[w.pid], go_binary)?;
    w.start()?;
    let result = w.expect(prefix)?;
    w.finish()?;
    let seen = tracer.map(Tracer::stop).transpose()?.unwrap_or_default();
    Ok((result, seen))
}

/// Median [min–max] per mode, as table cells.
fn median_cells(modes: &[Mode], ns: &BTreeMap<&str, Vec<f64>>) -> Vec<String> {
    modes
        .iter()
        .map(|&m| {
            let (lo, hi) = min_max(&ns[m.name()]);
            format!("{:.0} [{lo:.0}–{hi:.0}]", median(&ns[m.name()]))
        })
        .collect()
}

/// One timed run of `workload` under `mode`: ns per operation and leaktrace's counts.
fn run_workload(env: &Env, workload: &str, ops: u64, mode: Mode) -> Result<(f64, Seen)> {
    let w = Workload::spawn(env, &[workload.into(), "--ops".into(), ops.to_string()])?;
    let (result, seen) = traced_run(env, w, mode, None, "result ")?;
    if matches!(mode, Mode::Pid | Mode::PidFp) {
        ensure!(
            seen.events > 0,
            "leaktrace --pid saw no events of {workload}"
        );
    }
    Ok((field(&result, "ns_per_op")?, seen))
}

fn overhead(env: &Env, rounds: usize, scale: u64) -> Result<Value> {
    let mut out = Vec::new();
    println!("\n## Overhead: ns per operation, median [min–max] of {rounds} alternating rounds\n");
    println!(
        "| workload | {} | pid/untraced | pid-fp/untraced | pid/floor | pid/bpftrace | added: pid/floor | added: pid/bpftrace | lost |",
        MODES.map(Mode::name).join(" | ")
    );
    println!("|---|{}", "---|".repeat(MODES.len() + 7));
    for &(workload, ops) in WORKLOADS {
        let ops = (ops / scale).max(1);
        let mut ns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut lost = 0;
        for round in 0..rounds {
            // Rotate the order each round: no mode always runs first (cold) or last.
            for i in 0..MODES.len() {
                let mode = MODES[(i + round) % MODES.len()];
                let (ns_per_op, seen) = run_workload(env, workload, ops, mode)
                    .with_context(|| format!("{workload} under {}", mode.name()))?;
                lost += seen.lost;
                ns.entry(mode.name()).or_default().push(ns_per_op);
                eprintln!(
                    "bench: {workload} round {} {}: {ns_per_op:.1} ns/op",
                    round + 1,
                    mode.name()
                );
            }
        }
        let med = |m: Mode| median(&ns[m.name()]);
        // Per-round ratios: the rounds pair runs made close together.
        let per_round = |m: Mode| -> Vec<f64> {
            ns[Mode::Pid.name()]
                .iter()
                .zip(&ns[m.name()])
                .map(|(p, o)| p / o)
                .collect()
        };
        let ratio = |m: Mode| {
            let (lo, hi) = min_max(&per_round(m));
            (med(Mode::Pid) / med(m), lo, hi)
        };
        // Frame pointers only, against untraced: what DWARF unwinding's copies add shows as
        // the difference from pid/untraced.
        let fp_over_untraced = med(Mode::PidFp) / med(Mode::Untraced);
        let base = med(Mode::Untraced);
        let added = |m: Mode| med(m) - base;
        let cells = median_cells(&MODES, &ns);
        let ratio_cell = |m: Mode| {
            let (r, lo, hi) = ratio(m);
            format!("{r:.2}× [{lo:.2}–{hi:.2}]")
        };
        println!(
            "| {workload} | {} | {} | {fp_over_untraced:.2}× | {} | {} | {:.2}× | {:.2}× | {lost} |",
            cells.join(" | "),
            ratio_cell(Mode::Untraced),
            ratio_cell(Mode::Floor),
            ratio_cell(Mode::Bpftrace),
            added(Mode::Pid) / added(Mode::Floor),
            added(Mode::Pid) / added(Mode::Bpftrace),
        );
        let modes: serde_json::Map<String, Value> = MODES
            .iter()
            .map(|&m| {
                let (lo, hi) = min_max(&ns[m.name()]);
                (
                    m.name().to_owned(),
                    json!({"median_ns": med(m), "min_ns": lo, "max_ns": hi, "runs_ns": ns[m.name()], "added_ns": added(m)}),
                )
            })
            .collect();
        let ratio_json = |m: Mode| {
            let (r, lo, hi) = ratio(m);
            json!({"median": r, "min": lo, "max": hi})
        };
        out.push(json!({
            "workload": workload,
            "ops": ops,
            "modes": modes,
            "pid_over_untraced": ratio_json(Mode::Untraced),
            "pid_fp_over_untraced": fp_over_untraced,
            "pid_over_floor": ratio_json(Mode::Floor),
            "pid_over_bpftrace": ratio_json(Mode::Bpftrace),
            "added_pid_over_added_floor": added(Mode::Pid) / added(Mode::Floor),
            "added_pid_over_added_bpftrace": added(Mode::Pid) / added(Mode::Bpftrace),
            "leaktrace_lost": lost,
        }));
    }
    Ok(Value::Array(out))
}

/// Goroutines started and joined per run of the Go reproducer's `churn` benchmark (about 60 ms
/// untraced here).
const GO_CHURN: u64 = 200_000;
/// How the churn runs: untraced, the floor (empty programs at the goroutine probe points: what
/// the uprobe hits alone cost), traced alone (probes on its process only), and system-wide
/// (probes on every process running the binary).
const GO_MODES: [Mode; 4] = [Mode::Untraced, Mode::Floor, Mode::Pid, Mode::SystemWide];

/// What the goroutine probes cost: `churn` of the Go reproducer (tests/go/leaky) under each of
/// [`GO_MODES`], alternating within each round, as ns per goroutine started and joined; ratios
/// to untraced and to the floor from the same run. Every goroutine is two uprobe hits (its
/// start, its end).
fn goroutines(env: &Env, program: &Path, rounds: usize, scale: u64) -> Result<Value> {
    let count = (GO_CHURN / scale).max(100);
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    println!(
        "\n## Goroutine churn ({name}): ns per goroutine started and joined, median [min–max] of \
         {rounds} alternating rounds\n"
    );
    println!(
        "| goroutines | {} | floor/untraced | pid/untraced | all/untraced | pid/floor | lost |",
        GO_MODES.map(Mode::name).join(" | ")
    );
    println!("|---|{}", "---|".repeat(GO_MODES.len() + 5));
    let mut ns: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut lost = 0;
    for round in 0..rounds {
        for i in 0..GO_MODES.len() {
            let mode = GO_MODES[(i + round) % GO_MODES.len()];
            let args = ["churn", "--count", &count.to_string(), "--wait-stdin"].map(String::from);
            let w = Workload::spawn_program(env, program, &args)?;
            let (result, seen) = traced_run(env, w, mode, Some(program), "churn ")?;
            if mode == Mode::Pid {
                // Each goroutine's start and end, at least (the runtime's own come on top).
                ensure!(
                    seen.events >= 2 * count,
                    "leaktrace --pid saw {} events of {count} goroutines",
                    seen.events
                );
            }
            lost += seen.lost;
            let per = field::<f64>(&result, "ns_per_goroutine")?;
            eprintln!(
                "bench: goroutine churn round {} {}: {per:.1} ns/goroutine",
                round + 1,
                mode.name()
            );
            ns.entry(mode.name()).or_default().push(per);
        }
    }
    let med = |m: Mode| median(&ns[m.name()]);
    let ratio = |m: Mode| med(m) / med(Mode::Untraced);
    let pid_over_floor = med(Mode::Pid) / med(Mode::Floor);
    let cells = median_cells(&GO_MODES, &ns);
    println!(
        "| {count} | {} | {:.2}× | {:.2}× | {:.2}× | {pid_over_floor:.2}× | {lost} |",
        cells.join(" | "),
        ratio(Mode::Floor),
        ratio(Mode::Pid),
        ratio(Mode::SystemWide)
    );
    let modes: serde_json::Map<String, Value> = GO_MODES
        .iter()
        .map(|&m| {
            (
                m.name().to_owned(),
                json!({"median_ns": med(m), "runs_ns": ns[m.name()]}),
            )
        })
        .collect();
    Ok(json!({
        "binary": name,
        "goroutines": count,
        "modes": modes,
        "floor_over_untraced": ratio(Mode::Floor),
        "pid_over_untraced": ratio(Mode::Pid),
        "all_over_untraced": ratio(Mode::SystemWide),
        "pid_over_floor": pid_over_floor,
        "leaktrace_lost": lost,
    }))
}

/// Where leaktrace's cost goes: each workload once under `leaktrace --pid` with the kernel
/// counting time per program (`kernel.bpf_stats_enabled`, restored after). The rest of the
/// added cost is the tracepoints' own, which the floor measures.
fn profile(env: &Env, scale: u64) -> Result<Value> {
    let _stats = Sysctl::at_least("/proc/sys/kernel/bpf_stats_enabled", 1)?;
    let mut out = Vec::new();
    println!("\n## Profile: kernel time in leaktrace's programs (leaktrace --pid, bpf_stats)\n");
    println!("| workload | ns/op in programs | program: runs/op × ns/run |");
    println!("|---|---|---|");
    for &(workload, ops) in WORKLOADS {
        let ops = (ops / scale).max(1);
        let (_, seen) = run_workload(env, workload, ops, Mode::Pid)?;
        let mut total = 0.0;
        let mut parts = Vec::new();
        for p in &seen.programs {
            let (runs, run_ns) = (
                p["runs"].as_u64().unwrap_or(0),
                p["run_ns"].as_u64().unwrap_or(0),
            );
            // Programs that ran for other processes only (a handful of runs) are noise here.
            if runs < ops / 10 {
                continue;
            }
            total += run_ns as f64 / ops as f64;
            parts.push(format!(
                "{}: {:.2} × {:.0}",
                p["name"].as_str().unwrap_or("?"),
                runs as f64 / ops as f64,
                run_ns as f64 / runs as f64
            ));
        }
        println!("| {workload} | {total:.0} | {} |", parts.join(", "));
        out.push(json!({"workload": workload, "ops": ops, "ns_per_op_in_programs": total, "programs": seen.programs}));
    }
    Ok(Value::Array(out))
}

/// The throughput section's runs: (offered events/s, 0 for as fast as the generator goes;
/// whether leaktrace is stopped (SIGSTOP) for [`STALL`] mid-run). The stalled run overflows the
/// ring on purpose, as a descheduled reader would: the loss must be counted and shown, every
/// generated event either seen or counted lost, and the tracer must carry on.
const THROUGHPUT_RUNS: &[(u64, bool)] = &[
    (100_000, false),
    (250_000, false),
    (500_000, false),
    (750_000, false),
    (1_000_000, false),
    (0, false),
    (0, true),
];
const STALL: Duration = Duration::from_secs(1);

fn throughput(env: &Env, seconds: f64, runs: &[(u64, bool)]) -> Result<Value> {
    let mut out = Vec::new();
    println!(
        "\n## Throughput: fd-rate generator (dup+close) under leaktrace --pid, {seconds} s per rate\n"
    );
    println!("| offered ev/s | reader stalled | generated | achieved ev/s | events seen | lost | leaktrace CPU s / M events | leaktrace peak RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    for &(rate, stall) in runs {
        let mut w = Workload::spawn(
            env,
            &[
                "fd-rate".into(),
                "--rate".into(),
                rate.to_string(),
                "--seconds".into(),
                seconds.to_string(),
            ],
        )?;
        let tracer = Tracer::attach(env, Mode::Pid, &[w.pid])?.context("pid mode traces")?;
        w.start()?;
        if stall {
            std::thread::sleep(Duration::from_millis(300));
            signal(&tracer.child, libc::SIGSTOP);
            std::thread::sleep(STALL);
            signal(&tracer.child, libc::SIGCONT);
        }
        let result = w.expect("result ")?;
        w.finish()?;
        let seen = tracer.stop()?;
        let usage = seen.usage.context("usage")?;
        let achieved: u64 = field(&result, "rate")?;
        let generated: u64 = field(&result, "events")?;
        // Nothing silently lost: every generated event was seen or counted lost.
        ensure!(
            seen.events + seen.lost >= generated,
            "{generated} events generated, {} seen + {} counted lost",
            seen.events,
            seen.lost
        );
        let per_million = usage.cpu_s / (seen.events.max(1) as f64 / 1e6);
        let offered = if rate == 0 {
            "max".to_owned()
        } else {
            rate.to_string()
        };
        println!(
            "| {offered} | {} | {generated} | {achieved} | {} | {} | {per_million:.2} | {:.1} |",
            if stall { "1 s" } else { "no" },
            seen.events,
            seen.lost,
            usage.max_rss_kib as f64 / 1024.0
        );
        out.push(json!({
            "offered_rate": rate,
            "reader_stalled_s": if stall { STALL.as_secs_f64() } else { 0.0 },
            "generated_events": generated,
            "achieved_rate": achieved,
            "events": seen.events,
            "lost": seen.lost,
            "leaktrace_cpu_s": usage.cpu_s,
            "leaktrace_cpu_s_per_million_events": per_million,
            "leaktrace_max_rss_kib": usage.max_rss_kib,
        }));
    }
    Ok(Value::Array(out))
}

/// VmRSS and VmHWM of a live process, KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let get = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    Ok((get("VmRSS:")?, get("VmHWM:")?))
}

/// Threads and fds leaktrace's latest report says it tracks, summed over processes.
fn tracked(report: &Path) -> Result<(u64, u64)> {
    // Read while leaktrace writes it: the last line may be partial.
    let text = std::fs::read_to_string(report).unwrap_or_default();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let Some(seq) = lines
        .iter()
        .filter(|v| v["type"] == "process")
        .filter_map(|v| v["seq"].as_u64())
        .max()
    else {
        return Ok((0, 0));
    };
    let (mut threads, mut fds) = (0, 0);
    for v in lines
        .iter()
        .filter(|v| v["type"] == "process" && v["seq"] == seq)
    {
        threads += v["threads"].as_u64().unwrap_or(0);
        fds += v["fds"]
            .as_object()
            .map_or(0, |kinds| kinds.values().filter_map(Value::as_u64).sum());
    }
    Ok((threads, fds))
}

/// A sysctl set for a while: the old value comes back on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    /// Raises the value at `path` to at least `min`.
    fn at_least(path: &'static str, min: u64) -> Result<Self> {
        let old = std::fs::read_to_string(path)?.trim().to_owned();
        if old.parse::<u64>().is_ok_and(|v| v < min) {
            std::fs::write(path, min.to_string())
                .with_context(|| format!("cannot raise {path}"))?;
        }
        Ok(Self { path, old })
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.old) {
            eprintln!("bench: cannot restore {} to {}: {e}", self.path, self.old);
        }
    }
}

fn memory(env: &Env, points: &[(u64, u64)]) -> Result<Value> {
    let _pid_max = Sysctl::at_least("/proc/sys/kernel/pid_max", MEMORY_PID_MAX)?;
    let mut out = Vec::new();
    println!("\n## Memory: leaktrace RSS against what it tracks (holder processes, real kernel)\n");
    println!("| fds | threads | processes | tracked fds | tracked threads | lost | idle RSS MiB | RSS MiB | peak RSS MiB | bytes/object over idle |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &(fds, threads) in points {
        let holders = fds.div_ceil(FDS_PER_HOLDER);
        let mut ws = Vec::new();
        for i in 0..holders {
            let share = |total: u64| total / holders + u64::from(i < total % holders);
            ws.push(Workload::spawn(
                env,
                &[
                    "hold".into(),
                    "--fds".into(),
                    share(fds).to_string(),
                    "--threads".into(),
                    share(threads).to_string(),
                ],
            )?);
        }
        let pids: Vec<u32> = ws.iter().map(|w| w.pid).collect();
        let tracer = Tracer::attach(env, Mode::Pid, &pids)?.context("pid mode traces")?;
        let (idle_rss, _) = rss_kib(tracer.child.id())?;
        for w in &mut ws {
            w.start()?;
        }
        for w in &mut ws {
            w.expect("holding ")?;
        }
        // Until a report shows them all tracked (the last events drained, or a /proc re-sync
        // found what the ring lost), then RSS.
        let deadline = Instant::now() + START_TIMEOUT;
        let (t_threads, t_fds) = loop {
            std::thread::sleep(Duration::from_secs(1));
            let seen = tracked(&tracer.report)?;
            if seen.0 >= threads && seen.1 >= fds || Instant::now() > deadline {
                break seen;
            }
        };
        let (rss, hwm) = rss_kib(tracer.child.id())?;
        for w in ws {
            w.finish()?;
        }
        let lost = tracer.stop()?.lost;
        let per_object =
            rss.saturating_sub(idle_rss) as f64 * 1024.0 / (t_threads + t_fds).max(1) as f64;
        println!(
            "| {fds} | {threads} | {holders} | {t_fds} | {t_threads} | {lost} | {:.1} | {:.1} | {:.1} | {per_object:.0} |",
            idle_rss as f64 / 1024.0,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        out.push(json!({
            "fds": fds, "threads": threads, "processes": holders,
            "tracked_fds": t_fds, "tracked_threads": t_threads, "lost": lost,
            "idle_rss_kib": idle_rss, "rss_kib": rss, "peak_rss_kib": hwm,
            "bytes_per_object_over_idle": per_object,
        }));
    }
    Ok(Value::Array(out))
}

/// The aggregator alone, fed synthetic events (leaktrace/benches/aggregator_memory.rs).
fn aggregator_memory(quick: bool) -> Result<Value> {
    let mut cmd = crate::cargo();
    cmd.args([
        "bench",
        "--package",
        "leaktrace",
        "--bench",
        "aggregator_memory",
        "--",
        "--json",
    ]);
    if quick {
        cmd.args(["--points", "10000,100000"]);
    }
    let out = crate::output(&mut cmd)?;
    let points: Vec<Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    println!("\n## Memory: the aggregator alone, synthetic events\n");
    println!("| objects | fds | threads | processes | RSS MiB | bytes/object | events/s |");
    println!("|---|---|---|---|---|---|---|");
    for p in &points {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.0} | {:.0} |",
            p["objects"],
            p["fds"],
            p["threads"],
            p["processes"],
            p["rss_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
            p["bytes_per_object"].as_f64().unwrap_or(0.0),
            p["events_per_s"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(Value::Array(points))
}

pub fn bench(args: BenchArgs) -> Result<()> {
    crate::build()?;
    ensure!(
        crate::is_root(),
        "cargo xtask bench loads eBPF programs and needs root (sudo -E cargo xtask bench)"
    );
    ensure_apt_packages(&[("bpftrace", "bpftrace")])?;
    let bin = target_dir();
    let dir = workspace().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("leaktrace.bt");
    std::fs::write(&script, include_str!("bench.bt"))?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let env = Env {
        leaktrace: bin.join("leaktrace"),
        workload: bin.join("leaktrace-workload"),
        script,
        dir: dir.clone(),
        cpus: (cpus > 1).then(|| ((cpus - 1).to_string(), "0".to_owned())),
    };
    let all = args.only.is_empty();
    let runs = |s: Section| all || args.only.contains(&s);
    let (rounds, scale) = if args.quick {
        (1, 10)
    } else {
        (args.rounds, 1)
    };
    let mut results = json!({
        "kernel": crate::output(Command::new("uname").arg("-r"))?.trim(),
        "cpus": cpus,
        "quick": args.quick,
        "rounds": rounds,
    });
    if runs(Section::Overhead) {
        results["overhead"] = overhead(&env, rounds.max(1), scale)?;
    }
    if runs(Section::Goroutines) {
        let go = crate::golang::build_host()?;
        let newest = crate::golang::GO_VERSIONS[crate::golang::GO_VERSIONS.len() - 1];
        let program = go.bins.join(format!("leaky-go{newest}"));
        results["goroutines"] = goroutines(&env, &program, rounds.max(1), scale)?;
    }
    if runs(Section::Profile) {
        results["profile"] = profile(&env, scale)?;
    }
    if runs(Section::Throughput) {
        let (seconds, runs) = if args.quick {
            (1.0, &THROUGHPUT_RUNS[THROUGHPUT_RUNS.len() - 2..])
        } else {
            (3.0, THROUGHPUT_RUNS)
        };
        results["throughput"] = throughput(&env, seconds, runs)?;
    }
    if runs(Section::Memory) {
        let points = if args.quick {
            &MEMORY_POINTS[..1]
        } else {
            MEMORY_POINTS
        };
        results["memory"] = memory(&env, points)?;
        results["aggregator_memory"] = aggregator_memory(args.quick)?;
    }
    let path = dir.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
    eprintln!("bench: results in {}", path.display());
    Ok(())
}
