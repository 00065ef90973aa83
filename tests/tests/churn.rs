//! Churn: the tracer under the rates a busy machine produces, on the real kernel. After each run
//! the counts agree with what the processes really held, nothing was lost or dropped, and the
//! tracer's resident memory stayed under a stated bound (sampled from /proc while it ran).
//! Host only (`cargo xtask vm-test` leaves this file out): the rates are not reachable under
//! emulation.

use std::{
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

mod common;

use common::{binary, final_report, leaktrace, require_root};

/// The tracer's resident memory may not pass this in these runs (measured: ~30 MiB).
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Samples the resident memory of `pid` every 100 ms until stopped; the peak, in KiB.
struct RssWatch {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<u64>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                    break;
                };
                let rss = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    .unwrap_or(0);
                peak = peak.max(rss);
                thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Self { stop, handle }
    }

    fn peak_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("rss watcher")
    }
}

fn health_of(report: &std::collections::BTreeMap<String, Vec<Value>>) -> &Value {
    report["health"].first().expect("a health line")
}

fn assert_nothing_lost(h: &Value) {
    for field in [
        "lost_events",
        "decode_errors",
        "dropped_objects",
        "evicted_processes",
        "targets_full",
        "pending_full",
    ] {
        assert_eq!(h[field], 0, "{field} in {h}");
    }
}

#[test]
fn thread_churn_above_10k_per_second_for_30_seconds() {
    require_root();
    // 14.8k-19.8k spawn+join a second traced, by machine (measured on two of this image): 840k
    // take 42-57 s, so the rate is held for the 30 s asked on either.
    const THREADS: u64 = 840_000;
    let out = std::env::temp_dir().join(format!("leaktrace-churn-{}.jsonl", std::process::id()));
    let workload = binary("LEAKTRACE_WORKLOAD", "leaktrace-workload");
    let tracer = leaktrace()
        .args(["--format", "json", "--interval", "2s", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&workload)
        .args(["thread-spawn-join", "--ops", &THREADS.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start leaktrace");
    let rss = RssWatch::start(tracer.id());
    let run = tracer.wait_with_output().expect("leaktrace");
    let peak = rss.peak_kib();
    assert!(run.status.success(), "leaktrace: {}", run.status);

    // The workload's own line: `result … elapsed_ns=N ns_per_op=F`.
    let stdout = String::from_utf8_lossy(&run.stdout);
    let result = stdout
        .lines()
        .find(|l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("no result line in {stdout}"));
    let elapsed_ns: f64 = result
        .split_whitespace()
        .find_map(|f| f.strip_prefix("elapsed_ns="))
        .and_then(|v| v.parse().ok())
        .expect("elapsed_ns");
    let rate = THREADS as f64 / (elapsed_ns / 1e9);
    let secs = elapsed_ns / 1e9;
    eprintln!("thread churn: {rate:.0} threads/s for {secs:.1} s, tracer peak RSS {peak} KiB");
    assert!(rate >= 10_000.0, "only {rate:.0} threads/s");
    assert!(secs >= 30.0, "ran only {secs:.1} s");

    let lines: Vec<String> = std::fs::read_to_string(&out)
        .expect("report file")
        .lines()
        .map(String::from)
        .collect();
    let _ = std::fs::remove_file(&out);
    let report = final_report(&lines);
    let h = health_of(&report);
    assert_nothing_lost(h);
    let created: u64 = h["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .filter(|p| p["name"] == "task:task_newtask")
        .map(|p| p["emitted"].as_u64().unwrap())
        .sum();
    assert!(created >= THREADS, "{created} thread creations seen");
    // Every thread was joined: at exit the process held its main thread only, and no thread
    // is outstanding anywhere.
    let processes = &report["process"];
    assert_eq!(processes.len(), 1, "{processes:?}");
    let p = &processes[0];
    assert_eq!(
        (&p["exited"], &p["threads"]),
        (&true.into(), &1.into()),
        "{p}"
    );
    let findings = report.get("finding").cloned().unwrap_or_default();
    for f in findings.iter().filter(|f| f["resource"] == "thread") {
        assert_eq!(f["outstanding"], 0, "{f}");
    }
    assert!(
        peak > 0 && peak < RSS_LIMIT_KIB,
        "tracer peak RSS {peak} KiB"
    );
}

#[test]
fn thousands_of_short_lived_processes_system_wide() {
    require_root();
    const PROCESSES: usize = 3000;
    let mut tracer = common::Tracer::start(&["--all", "--format", "json", "--interval", "1s"]);
    let rss = RssWatch::start(tracer.pid());
    let started = Instant::now();
    let mut pids = Vec::with_capacity(PROCESSES);
    for _ in 0..PROCESSES {
        let mut child = Command::new("/bin/true").spawn().expect("spawn /bin/true");
        pids.push(child.id());
        child.wait().expect("wait");
    }
    let secs = started.elapsed().as_secs_f64();
    tracer.wait_reports(2);
    let run = tracer.stop();
    let peak = rss.peak_kib();
    eprintln!(
        "{PROCESSES} processes in {secs:.1} s ({:.0}/s), tracer peak RSS {peak} KiB",
        PROCESSES as f64 / secs
    );

    let report = final_report(&run.stdout);
    let h = health_of(&report);
    assert_nothing_lost(h);
    // None of them is alive in the report; what is kept of exited processes is bounded.
    let processes = &report["process"];
    let ours = |p: &&Value| pids.iter().any(|&pid| p["pid"] == pid);
    for p in processes.iter().filter(ours) {
        assert_eq!(p["exited"], true, "{p}");
    }
    let exited = processes.iter().filter(|p| p["exited"] == true).count();
    assert!(exited <= 256, "{exited} exited processes kept");
    assert!(
        peak > 0 && peak < RSS_LIMIT_KIB,
        "tracer peak RSS {peak} KiB"
    );
}
