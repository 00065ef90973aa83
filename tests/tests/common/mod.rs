//! The harness the integration test files share: the binaries, the reproducer, a running
//! tracer. Each test file uses part of it, hence the allow.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

pub fn binary(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/release")
            .join(name)
    })
}

pub fn leaktrace() -> Command {
    Command::new(binary("LEAKTRACE_BIN", "leaktrace"))
}

pub fn reproducer_path() -> PathBuf {
    binary("LEAKTRACE_REPRODUCER", "leaktrace-reproducer")
}

pub fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "NOT RUN: integration tests load eBPF programs and need root; run `sudo -E cargo xtask test`"
    );
}

/// Lines of a child's stream, collected by a thread so the child never blocks on a full pipe.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(stream: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line, which must arrive before `deadline`.
    pub fn next(&mut self, what: &str, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(_) => panic!(
                "timed out waiting for {what}; saw:\n{}",
                self.seen.join("\n")
            ),
        }
    }

    /// Takes in every line that has already arrived.
    pub fn catch_up(&mut self) {
        while let Ok(line) = self.rx.try_recv() {
            self.seen.push(line);
        }
    }

    /// Waits for a line matching `pred` (possibly one already seen), returning it.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        if let Some(line) = self.seen.iter().find(|l| pred(l)) {
            return line.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.next(what, deadline);
            if pred(&line) {
                return line;
            }
        }
    }

    /// Everything until the stream closes.
    pub fn rest(mut self) -> Vec<String> {
        self.seen.extend(self.rx.iter());
        self.seen
    }
}

/// The reproducer, started with --wait-stdin so the tracer can attach before it leaks.
pub struct Repro {
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: Lines,
    pub pid: u32,
}

impl Repro {
    pub fn start(scenario: &str, args: &[&str]) -> Self {
        Self::start_program(&reproducer_path(), scenario, args)
    }

    /// Any program that speaks the reproducer's protocol (tests/c/'s leaky programs do).
    pub fn start_program(program: &Path, scenario: &str, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .arg(scenario)
            .args(args)
            .arg("--wait-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the reproducer");
        let stdin = child.stdin.take();
        let mut stdout = Lines::new(child.stdout.take().expect("stdout"));
        let ready = stdout.wait_for("ready", Duration::from_secs(10), |l| l.starts_with("ready"));
        let pid = ready
            .strip_prefix("ready pid=")
            .and_then(|p| p.parse().ok())
            .expect("ready pid=N");
        Self {
            child,
            stdin,
            stdout,
            pid,
        }
    }

    /// Starts the leaking.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(b"go\n").expect("release the reproducer");
        stdin.flush().expect("flush");
    }

    /// Starts the leaking and waits until it is done; returns how many objects it leaked.
    pub fn go_and_wait(&mut self) -> u64 {
        self.go();
        let done = self
            .stdout
            .wait_for("done", Duration::from_secs(60), |l| l.starts_with("done"));
        done.strip_prefix("done leaked=")
            .and_then(|n| n.parse().ok())
            .expect("done leaked=N")
    }
}

impl Drop for Repro {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `leaktrace` whose output is collected.
pub struct Tracer {
    child: Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

/// What a finished tracer printed.
pub struct Run {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Tracer {
    /// Starts `leaktrace ARGS` and waits until it has attached.
    pub fn start(args: &[impl AsRef<OsStr>]) -> Self {
        let mut child = leaktrace()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start leaktrace");
        let stdout = Lines::new(child.stdout.take().expect("stdout"));
        let mut stderr = Lines::new(child.stderr.take().expect("stderr"));
        stderr.wait_for("attach", Duration::from_secs(60), |l| {
            l.starts_with("leaktrace: tracing") || l.contains("error")
        });
        assert!(
            stderr
                .seen
                .iter()
                .any(|l| l.starts_with("leaktrace: tracing")),
            "leaktrace did not start: {:?}",
            stderr.seen
        );
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `n` more periodic JSON reports have been printed, so what happened so far
    /// is in the tracer's state.
    pub fn wait_reports(&mut self, n: usize) {
        let is_report = |l: &str| l.contains(r#""type":"report""#);
        self.stdout.catch_up();
        let target = self.stdout.seen.iter().filter(|l| is_report(l)).count() + n;
        let deadline = Instant::now() + Duration::from_secs(10 * n as u64);
        while self.stdout.seen.iter().filter(|l| is_report(l)).count() < target {
            self.stdout.next("a report", deadline);
        }
    }

    /// SIGINT, then everything it printed.
    pub fn stop(self) -> Run {
        self.signal(libc::SIGINT)
    }

    /// `signal`, then everything it printed; it must exit successfully.
    pub fn signal(self, signal: i32) -> Run {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.finish()
    }

    /// Waits for it to end by itself; it must succeed.
    pub fn finish(mut self) -> Run {
        let status = self.child.wait().expect("wait for leaktrace");
        let stderr = self.stderr.rest();
        assert!(
            status.success(),
            "leaktrace failed: {status}\n{}",
            stderr.join("\n")
        );
        Run {
            stdout: self.stdout.rest(),
            stderr,
        }
    }
}

/// The lines of the last final report in leaktrace's JSON output (`--format json`), by `type`.
pub fn final_report(lines: &[String]) -> BTreeMap<String, Vec<serde_json::Value>> {
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let final_seq = values
        .iter()
        .rfind(|v| v["type"] == "report" && v["final"] == true)
        .map(|v| v["seq"].clone())
        .expect("a final report");
    let mut by_type: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for v in values.into_iter().filter(|v| v["seq"] == final_seq) {
        let kind = v["type"].as_str().unwrap_or_default().to_owned();
        by_type.entry(kind).or_default().push(v);
    }
    by_type
}

/// A build of the Go reproducer (tests/go/leaky): `leaky-go<version>[-stripped]`, from
/// LEAKTRACE_GO_BINS (set by `cargo xtask test`; `cargo xtask go` builds them and prints it),
/// else target/go/bin/.
pub fn go_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("LEAKTRACE_GO_BINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/go/bin"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "no Go reproducer {}: build it with `cargo xtask go`",
        path.display()
    );
    path
}

/// The symbols of a finding's frames, innermost first ("?" where unknown).
pub fn symbols(finding: &serde_json::Value) -> Vec<String> {
    finding["frames"]
        .as_array()
        .map(|frames| {
            frames
                .iter()
                .map(|f| f["symbol"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}
