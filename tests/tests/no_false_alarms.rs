//! No false alarms: what holds a lot without leaking must never get a leak verdict. A pool held
//! at a fixed size is `stable`, a burst that is released is `released` (or no finding), and a
//! real server under sustained load (redis-server, from Debian's packages) is no leak.
//!
//! A false alarm is a finding with verdict `leak` (a thread or fd group), or `growing` (blocked
//! waiters): what `leaktrace --fail-on leak` fails on. These tests look for one in every report
//! of the run, not only in the final one.
//!
//! Like tests/tracer.rs they need root and the binaries' paths in LEAKTRACE_BIN and
//! LEAKTRACE_REPRODUCER, which `cargo xtask test` passes; it also installs redis-server and
//! redis-tools with apt-get.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

mod common;

use common::{require_root, Lines, Repro};

/// `leaktrace --format json --top 100 ARGS`, every report of which these tests read.
struct Tracer(common::Tracer);

impl Tracer {
    fn start(args: &[&str]) -> Self {
        let mut all = vec!["--format", "json", "--top", "100"];
        all.extend_from_slice(args);
        Self(common::Tracer::start(&all))
    }

    /// Waits until `n` more reports have begun.
    fn wait_reports(&mut self, n: usize) {
        self.0.wait_reports(n);
    }

    /// SIGINT, then every report of the run.
    fn stop(self) -> Reports {
        Reports::parse(&self.0.stop().stdout)
    }
}

/// One report: the lines sharing a `seq`.
struct Report {
    seq: u64,
    is_final: bool,
    findings: Vec<Value>,
    health: Value,
}

impl Report {
    fn findings_of(&self, pid: u32) -> impl Iterator<Item = &Value> {
        self.findings.iter().filter(move |f| f["pid"] == pid)
    }
}

/// Every report of a run, the final one last.
struct Reports(Vec<Report>);

impl Reports {
    fn parse(lines: &[String]) -> Self {
        let mut reports: Vec<Report> = Vec::new();
        for line in lines {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let seq = v["seq"].as_u64().unwrap_or_else(|| panic!("no seq: {v}"));
            if v["type"] == "report" {
                reports.push(Report {
                    seq,
                    is_final: v["final"] == true,
                    findings: Vec::new(),
                    health: Value::Null,
                });
                continue;
            }
            let report = reports
                .last_mut()
                .filter(|r| r.seq == seq)
                .unwrap_or_else(|| panic!("a line outside its report: {line}"));
            match v["type"].as_str() {
                Some("finding") => report.findings.push(v),
                Some("health") => report.health = v,
                _ => {}
            }
        }
        assert!(
            reports.last().is_some_and(|r| r.is_final),
            "the run did not end with a final report"
        );
        Self(reports)
    }

    fn last(&self) -> &Report {
        self.0.last().expect("a final report")
    }

    /// Asserts no report ever judged a finding of `pid` a leak, and that every thread and fd
    /// finding carries one of the verdicts of the contract.
    fn assert_no_false_alarm(&self, pid: u32) {
        for report in &self.0 {
            for f in report.findings_of(pid) {
                let verdict = f["verdict"].as_str();
                assert!(
                    !matches!(verdict, Some("leak" | "growing")),
                    "false alarm in report {}: {f}",
                    report.seq
                );
                if f["resource"] == "thread" || f["resource"] == "fd" {
                    assert!(
                        matches!(verdict, Some("stable" | "released")),
                        "a thread/fd finding with no verdict of the contract in report {}: {f}",
                        report.seq
                    );
                }
            }
        }
    }

    fn assert_nothing_lost(&self) {
        let h = &self.last().health;
        for field in ["lost_events", "decode_errors", "dropped_objects"] {
            assert_eq!(h[field], 0, "{field} in {h}");
        }
    }

    fn events(&self) -> u64 {
        self.last().health["events"]
            .as_u64()
            .expect("health.events")
    }
}

/// Whether any frame of `finding` is `function`.
fn has_frame(finding: &Value, function: &str) -> bool {
    finding["frames"].as_array().is_some_and(|frames| {
        frames
            .iter()
            .any(|f| f["symbol"].as_str().is_some_and(|s| s.contains(function)))
    })
}

fn outstanding(findings: &[&Value]) -> u64 {
    findings
        .iter()
        .map(|f| f["outstanding"].as_u64().expect("outstanding"))
        .sum()
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_pool_held_at_a_fixed_size_is_stable() {
    require_root();
    let mut repro = Repro::start("stable-pool", &["--count", "200"]);
    let pid = repro.pid.to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--interval", "1s", "--min-age", "1s"]);
    // 200 connections (both ends) and 16 workers, held; the main thread churns meanwhile.
    assert_eq!(repro.go_and_wait(), 2 * 200 + 16);
    tracer.wait_reports(8);
    let reports = tracer.stop();

    reports.assert_no_false_alarm(repro.pid);
    let last = reports.last();
    let pool: Vec<&Value> = last
        .findings_of(repro.pid)
        .filter(|f| f["kind"] == "socket" && has_frame(f, "open_connection_pool"))
        .collect();
    assert!(
        !pool.is_empty(),
        "no finding for the pool's sockets: {:?}",
        last.findings
    );
    for f in &pool {
        assert_eq!(f["verdict"], "stable", "{f}");
    }
    assert_eq!(outstanding(&pool), 2 * 200, "{pool:?}");
    let workers: Vec<&Value> = last
        .findings_of(repro.pid)
        .filter(|f| f["resource"] == "thread" && has_frame(f, "start_worker_pool"))
        .collect();
    assert_eq!(outstanding(&workers), 16, "{workers:?}");
    for f in &workers {
        assert_eq!(f["verdict"], "stable", "{f}");
    }
    // The churn was seen: ~14 events a round, a round every 2 ms.
    let events = reports.events();
    assert!(events > 10_000, "only {events} events: was the pool busy?");
    reports.assert_nothing_lost();
}

#[test]
fn a_burst_that_is_released_is_no_leak() {
    require_root();
    // 500 fds and 20 threads at once, held 3 s, then all released.
    let mut repro = Repro::start(
        "burst-release",
        &["--count", "500", "--interval-ms", "3000"],
    );
    let pid = repro.pid.to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--interval", "1s", "--min-age", "1s"]);
    assert_eq!(repro.go_and_wait(), 0);
    assert!(
        repro.stdout.seen.iter().any(|l| l == "leaked 520"),
        "{:?}",
        repro.stdout.seen
    );
    tracer.wait_reports(3);
    let reports = tracer.stop();

    reports.assert_no_false_alarm(repro.pid);
    // While it was held, the burst was found (so the verdicts above judged it).
    let burst = |report: &Report, resource: &str| -> u64 {
        let found: Vec<&Value> = report
            .findings_of(repro.pid)
            .filter(|f| f["resource"] == resource && has_frame(f, "burst_then_release"))
            .collect();
        outstanding(&found)
    };
    let seen_fds = reports.0.iter().map(|r| burst(r, "fd")).max();
    assert_eq!(seen_fds, Some(500), "the burst's fds at their most");
    let seen_threads = reports.0.iter().map(|r| burst(r, "thread")).max();
    assert_eq!(seen_threads, Some(20), "the burst's threads at their most");
    // Once released, nothing is held: whatever is still a finding has drained.
    let last = reports.last();
    for f in last
        .findings_of(repro.pid)
        .filter(|f| f["resource"] != "waiter")
    {
        assert_eq!(f["verdict"], "released", "{f}");
    }
    reports.assert_nothing_lost();
}

// ---- a real server: redis-server under redis-benchmark ----

/// How long redis-benchmark keeps redis busy.
const LOAD: Duration = Duration::from_secs(30);

/// A command's path, or a failure naming how to install it.
fn installed(command: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(command))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{command} is not installed: run `cargo xtask test`, which installs it \
                 (apt-get install redis-server redis-tools)"
            )
        })
}

/// redis-server on 127.0.0.1 at a free port, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Redis {
    fn start() -> Self {
        let server = installed("redis-server");
        // A port the kernel just handed out is free; another process could take it before redis
        // binds it, so try a few.
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let dir = TempDir::new("redis");
            let child = Command::new(&server)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--loglevel", "warning", "--dir"])
                .arg(&dir.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let mut redis = Self {
                child,
                port,
                _dir: dir,
            };
            if redis.await_pong() {
                return redis;
            }
        }
        panic!("redis-server did not answer PING on three ports");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether redis answers PING within 10 s (false if it exited: its port was taken).
    fn await_pong(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().expect("redis status").is_some() {
                return false;
            }
            if self.ping() {
                return true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut conn) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(SECOND));
        let mut reply = [0; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// One redis-benchmark run of 50 clients; fails the test if it fails or hangs.
    fn benchmark(&self, args: &[&str]) {
        let mut child = Command::new(installed("redis-benchmark"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "50", "-q"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start redis-benchmark");
        let stderr = Lines::new(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().expect("redis-benchmark status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("redis-benchmark {args:?} hung");
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "redis-benchmark {args:?}: {status}\n{}",
            stderr.rest().join("\n")
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("leaktrace-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What each redis-benchmark round runs, in turn, 50 clients each. Each test of a round opens 50
/// connections and holds them while it runs (unless `-k 0`).
const ROUNDS: &[&[&str]] = &[
    // ~10 s on the same 50 connections: they outlive --min-age 5s, so they are a finding, which
    // must be judged stable (then released), not a leak.
    &["-n", "800000", "-t", "get"],
    // A mix of writes and reads, 50 new connections for each of the 5 tests.
    &["-n", "50000", "-t", "set,get,incr,lpush,rpop"],
    // A new connection for every request: thousands of sockets accepted and closed a second.
    &["-n", "20000", "-k", "0", "-t", "set,get"],
];

/// redis under at least 30 s of load from 50 clients, [`ROUNDS`] in turn. Nothing redis holds
/// grows, so no report may call anything a leak.
#[test]
fn redis_under_sustained_load_is_no_leak() {
    require_root();
    // Both first: a missing one fails the test before anything starts.
    installed("redis-server");
    installed("redis-benchmark");
    let redis = Redis::start();
    let pid = redis.pid().to_string();
    let mut tracer = Tracer::start(&["--pid", &pid, "--interval", "2s", "--min-age", "5s"]);

    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < LOAD {
        let round = Instant::now();
        redis.benchmark(ROUNDS[rounds % ROUNDS.len()]);
        eprintln!(
            "redis-benchmark {:?}: {:.1?}",
            ROUNDS[rounds % ROUNDS.len()],
            round.elapsed()
        );
        rounds += 1;
    }
    let load = start.elapsed();
    assert!(redis.ping(), "redis stopped answering");
    // A report past the load, so the final one is not the only one after it.
    tracer.wait_reports(1);
    let reports = tracer.stop();

    let events = reports.events();
    // (resource/kind, verdict) → (reports it was in, most outstanding).
    let mut judged: BTreeMap<(String, String), (usize, u64)> = BTreeMap::new();
    for f in reports.0.iter().flat_map(|r| r.findings_of(redis.pid())) {
        let what = format!(
            "{}/{}",
            f["resource"].as_str().unwrap_or("?"),
            f["kind"].as_str().unwrap_or("-")
        );
        let verdict = f["verdict"].as_str().unwrap_or("none").to_owned();
        let seen = judged.entry((what, verdict)).or_default();
        seen.0 += 1;
        seen.1 = seen.1.max(f["outstanding"].as_u64().unwrap_or(0));
    }
    eprintln!(
        "redis pid {pid}: {rounds} redis-benchmark rounds in {load:.1?}; leaktrace: {} reports, \
         {events} events; findings ((resource/kind, verdict) → (reports, most outstanding)): \
         {judged:?}",
        reports.0.len(),
    );
    reports.assert_no_false_alarm(redis.pid());
    // The verdicts above judged something: the connections held past --min-age.
    assert!(
        reports.0.iter().any(|r| r
            .findings_of(redis.pid())
            .any(|f| f["kind"] == "socket" && f["outstanding"].as_u64() >= Some(50))),
        "no report found redis's 50 long-lived connections"
    );
    assert!(events > 10_000, "only {events} events under load");
    assert_eq!(reports.last().health["lost_events"], 0);
    reports.assert_nothing_lost();
}
