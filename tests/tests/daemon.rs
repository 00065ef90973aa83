//! Daemon mode against the real kernel: `--all --listen` serves the live state of every process
//! over HTTP while it traces, and SIGTERM ends it cleanly with a final report.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{leaktrace, require_root, Repro, Tracer};

/// A GET over plain HTTP/1.0: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to leaktrace");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: leaktrace\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

/// The value of the series `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (head, value) = line.rsplit_once(' ')?;
        let (series, set) = head.split_once('{').unwrap_or((head, ""));
        let pairs: Vec<(&str, &str)> = set
            .trim_end_matches('}')
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        (series == name && labels.iter().all(|l| pairs.contains(l)))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// The reproducer's socket leak in one `/findings` document, if it is there as a leak.
fn leak_of(findings: &serde_json::Value, pid: u32) -> Option<serde_json::Value> {
    findings["findings"]
        .as_array()?
        .iter()
        .find(|f| f["pid"] == pid && f["kind"] == "socket" && f["verdict"] == "leak")
        .cloned()
}

#[test]
fn the_daemon_serves_a_growing_leak_and_stops_cleanly_on_sigterm() {
    require_root();
    // 300 sockets over 30 s: leaking for the whole test.
    let mut repro = Repro::start("fd-socket", &["--count", "300", "--interval-ms", "100"]);
    let mut tracer = Tracer::start(&[
        "--all",
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "2s",
        "--min-age",
        "1s",
        "--format",
        "json",
    ]);
    let serving = tracer
        .stderr
        .wait_for("serving", Duration::from_secs(10), |l| {
            l.starts_with("leaktrace: serving")
        });
    let addr: SocketAddr = serving
        .rsplit_once("http://")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {serving:?}"));
    assert_eq!(get(addr, "/healthz").0, 200);
    // The first report is 2 s away.
    assert_eq!(get(addr, "/readyz").0, 503, "ready before any report");
    assert_eq!(get(addr, "/metrics").0, 503);
    assert_eq!(get(addr, "/nowhere").0, 404);
    repro.go();

    // Each report's findings and metrics, until the leak has been seen growing twice.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen: Vec<(u64, u64)> = Vec::new();
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no growing leak of pid {} served; seen {seen:?}, last /findings {}",
            repro.pid,
            get(addr, "/findings").1
        );
        std::thread::sleep(Duration::from_millis(500));
        let (status, body) = get(addr, "/findings");
        if status != 200 {
            continue;
        }
        let findings: serde_json::Value = serde_json::from_str(&body).expect("/findings is JSON");
        let seq = findings["seq"].as_u64().expect("seq");
        let (status, metrics) = get(addr, "/metrics");
        assert_eq!(status, 200);
        // Both from the same report, or try again.
        if metric(&metrics, "leaktrace_report_seq", &[]) != Some(seq as f64) {
            continue;
        }
        let Some(leak) = leak_of(&findings, repro.pid) else {
            continue;
        };
        if seen.last().is_some_and(|&(s, _)| s == seq) {
            continue;
        }
        let frames = leak["frames"].as_array().expect("frames");
        assert!(
            frames.iter().any(|f| f["symbol"]
                .as_str()
                .is_some_and(|s| s.contains("leak_socket_fd"))),
            "the leak's stack does not name leak_socket_fd: {leak}"
        );
        assert_eq!(leak["placement"]["kind"], "host");
        let outstanding = leak["outstanding"].as_u64().expect("outstanding");
        // The reproducer runs on the host: its leak is in the host's series, with the
        // leaks of any other host process.
        let host_leaks = metric(
            &metrics,
            "leaktrace_outstanding",
            &[
                ("container_id", ""),
                ("resource", "fd"),
                ("verdict", "leak"),
            ],
        )
        .expect("a host fd leak series");
        assert!(
            host_leaks >= outstanding as f64,
            "{host_leaks} < {outstanding}"
        );
        assert!(metric(&metrics, "leaktrace_events_total", &[]).is_some_and(|n| n > 0.0));
        assert!(metric(&metrics, "leaktrace_lost_events_total", &[]).is_some());
        seen.push((seq, outstanding));
    }
    assert!(
        seen.windows(2).all(|w| w[1].1 > w[0].1),
        "the leak did not grow from report to report: {seen:?}"
    );

    let run = tracer.signal(libc::SIGTERM);
    let last_report = run
        .stdout
        .iter()
        .rev()
        .find(|l| l.contains(r#""type":"report""#))
        .expect("a report");
    assert!(
        last_report.contains(r#""final":true"#),
        "SIGTERM did not end with a final report: {last_report}"
    );
}

#[test]
fn a_taken_address_is_a_usage_error_before_anything_loads() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = leaktrace()
        .args(["--all", "--listen", &addr, "--duration", "1s"])
        .output()
        .expect("run leaktrace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

#[test]
fn an_api_watch_demanded_outside_a_cluster_is_a_usage_error() {
    require_root();
    let out = leaktrace()
        .args(["--all", "--kube-api", "on", "--duration", "1s"])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run leaktrace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kube-api on"), "{stderr}");
}
