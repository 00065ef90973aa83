//! Goroutine leaks in unmodified Go binaries: leaktrace (uprobes on the Go runtime) traces the Go
//! reproducer, tests/go/leaky, built by `cargo xtask test` (xtask/src/golang.rs) with two Go
//! releases, and once stripped and once as a PIE, found through LEAKTRACE_GO_BINS. Every
//! scenario of the reproducer is run against every build (the table at the end). They need root.
//!
//! What a goroutine `finding` line (`--format json`) must say (the fds' findings are as in
//! tracer.rs):
//!
//! ```text
//! {"type":"finding", "resource":"goroutine", "pid":P, "outstanding":N, "created":M,
//!  "verdict":"leak", ...(the verdict's other fields, flattened, as for fd findings),
//!  "frames":[{"symbol":...}, ...],
//!  "goroutine":{"created_at":{"function":"main.leakBlockedSend","file":".../leaks.go","line":L},
//!               "start":{"function":"main.leakBlockedSend.func1", ...},
//!               "caused_by":{"function":"main.leakExecNoWait", ...} or null,
//!               "waits":[{"reason":"chan send","count":N}], "go":"go1.23.9"}}
//! ```
//!
//! `created_at` is the `go` statement (runtime.newproc's caller); `caused_by`, for goroutines a
//! standard-library function created, is the first function outside the Go distribution up their
//! creators' stacks (the http-body readLoop's creator, dialConnFor, is itself a goroutine the
//! caller created); null when `created_at` is already the program's own.

use serde_json::Value;

mod common;

use common::{go_binary, require_root, symbols, Repro};

/// Leak calls per run, one every [`INTERVAL_MS`]: 3 s of growth, seen by several 1 s reports.
const CALLS: u64 = 30;
const INTERVAL_MS: u64 = 100;

/// The Go release a build says it is (`"go"` of its findings): `leaky-go1.27.3-stripped` →
/// `go1.27.3`.
fn go_version(binary: &str) -> &str {
    let version = binary.strip_prefix("leaky-").expect("leaky-go<version>");
    version
        .split_once('-')
        .map_or(version, |(version, _variant)| version)
}

/// The wait reason of a goroutine in `sync.WaitGroup.Wait`: its own since Go 1.25.
fn waitgroup_reason(go: &str) -> &'static str {
    if go.starts_with("go1.23.") || go.starts_with("go1.24.") {
        "semacquire"
    } else {
        "sync.WaitGroup.Wait"
    }
}

/// One group of leaked goroutines a scenario must produce.
struct Group {
    /// `goroutine.created_at.function`.
    created_at: &'static str,
    /// `goroutine.start.function`, where the compiler's name for it is stable (a closure of the
    /// program's: `.funcN`; the standard library's `go` statements with arguments start in
    /// `.gowrapN` wrappers, numbered per function).
    start: Option<&'static str>,
    /// `goroutine.caused_by.function`; None: null.
    caused_by: Option<&'static str>,
    /// The reason most of them wait for.
    reason: &'static str,
    /// A function of the stack they were created from (`frames`).
    in_frames: &'static str,
    /// How many such groups (http-body: readLoop and writeLoop, two `go` statements).
    groups: usize,
}

/// What a scenario leaks per call and where it must be attributed.
struct Case {
    /// `leaked` per call: every goroutine the call leaves (http-body: 3, the server's included).
    per_call: u64,
    groups: Vec<Group>,
    /// fd findings: (kind, a function in their frames), each `CALLS` outstanding.
    fds: Vec<(&'static str, &'static str)>,
}

/// A group of goroutines the leak function creates itself.
fn direct(function: &'static str, start: &'static str, reason: &'static str) -> Case {
    Case {
        per_call: 1,
        groups: vec![Group {
            created_at: function,
            start: Some(start),
            caused_by: None,
            reason,
            in_frames: function,
            groups: 1,
        }],
        fds: Vec::new(),
    }
}

/// The expectations of a scenario (tests/go/leaky/main.go's doc comment) for Go release `go`.
fn case(scenario: &str, go: &str) -> Case {
    match scenario {
        "chan-send" => direct(
            "main.leakBlockedSend",
            "main.leakBlockedSend.func1",
            "chan send",
        ),
        "ticker" => direct("main.leakTicker", "main.leakTicker.func1", "chan receive"),
        "context" => direct("main.leakContext", "main.leakContext.func1", "chan receive"),
        "waitgroup" => direct(
            "main.leakWaitGroup",
            "main.leakWaitGroup.func1",
            waitgroup_reason(go),
        ),
        // os/exec's stdout copier, reading the pipe; the pipe's read end and the child's pidfd
        // (clone with CLONE_PIDFD) are made on the caller's goroutine.
        "exec" => Case {
            per_call: 1,
            groups: vec![Group {
                created_at: "os/exec.(*Cmd).Start",
                start: None,
                caused_by: Some("main.leakExecNoWait"),
                reason: "IO wait",
                in_frames: "main.leakExecNoWait",
                groups: 1,
            }],
            fds: vec![
                ("pipe", "main.leakExecNoWait"),
                ("pidfd", "main.leakExecNoWait"),
            ],
        },
        // The transport's readLoop and writeLoop, created in the dialConnFor goroutine (so their
        // creating stack is net/http's alone: dialConn ← dialConnFor); the server's goroutine for
        // the connection (created by net/http.(*Server).Serve in a goroutine started before
        // tracing) is not checked. The client socket too is made in the dialConnFor goroutine:
        // its stack holds net/http's dial, not main.leakHTTPBody (unless leaktrace extends fd
        // stacks with the goroutine's creators: then check main.leakHTTPBody there).
        "http-body" => Case {
            per_call: 3,
            groups: vec![Group {
                created_at: "net/http.(*Transport).dialConn",
                start: None,
                caused_by: Some("main.leakHTTPBody"),
                reason: "select",
                in_frames: "net/http.(*Transport).dialConnFor",
                groups: 2,
            }],
            fds: vec![("socket", "net/http.(*Transport).dial")],
        },
        other => panic!("no expectations for scenario {other}"),
    }
}

/// The line of the first `go` statement in `function` (e.g. `main.leakBlockedSend`) of
/// tests/go/leaky/leaks.go (compiled in: the VM tests run without the source tree).
fn go_statement_line(function: &str) -> u64 {
    let source = include_str!("../go/leaky/leaks.go");
    let name = function.strip_prefix("main.").expect("a main function");
    let header = format!("func {name}(");
    let lines: Vec<&str> = source.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&header))
        .unwrap_or_else(|| panic!("no {header} in tests/go/leaky/leaks.go"));
    let offset = lines[start..]
        .iter()
        .position(|l| l.trim_start().starts_with("go "))
        .unwrap_or_else(|| panic!("no go statement in {function}"));
    (start + offset + 1) as u64
}

fn function_of(site: &Value) -> Option<&str> {
    site["function"].as_str()
}

/// The reason with the largest count in a goroutine finding's `waits`.
fn main_reason(finding: &Value) -> Option<&str> {
    finding["goroutine"]["waits"]
        .as_array()?
        .iter()
        .max_by_key(|w| w["count"].as_u64().unwrap_or(0))
        .and_then(|w| w["reason"].as_str())
}

/// Runs `scenario` of the Go reproducer `binary` under `leaktrace --pid` until it is done and a
/// few reports have passed; returns the final report's findings for it, its `leaked` count and
/// the final `health` line.
fn trace(binary: &str, scenario: &str, args: &[&str]) -> (Vec<Value>, u64, Value) {
    require_root();
    let mut repro = Repro::start_program(&go_binary(binary), scenario, args);
    let pid = repro.pid.to_string();
    let mut tracer = common::Tracer::start(&[
        "--pid",
        &pid,
        "--format",
        "json",
        "--interval",
        "1s",
        "--min-age",
        "1s",
    ]);
    let leaked = repro.go_and_wait();
    // Past --min-age, then enough reports for a slope.
    tracer.wait_reports(4);
    let run = tracer.stop();
    let mut report = common::final_report(&run.stdout);
    let findings = report
        .remove("finding")
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["pid"] == repro.pid)
        .collect();
    let health = report
        .remove("health")
        .and_then(|mut h| h.pop())
        .expect("a final health line");
    (findings, leaked, health)
}

/// Runs a leak scenario of a build under `--pid` and checks its goroutine and fd findings.
fn leak_scenario(scenario: &str, binary: &str) {
    let go = go_version(binary);
    let case = case(scenario, go);
    let calls = CALLS.to_string();
    let interval = INTERVAL_MS.to_string();
    let (findings, leaked, _) = trace(
        binary,
        scenario,
        &["--count", &calls, "--interval-ms", &interval],
    );
    assert_eq!(leaked, CALLS * case.per_call, "the reproducer's own count");
    let goroutines: Vec<&Value> = findings
        .iter()
        .filter(|f| f["resource"] == "goroutine")
        .collect();
    for group in &case.groups {
        let matching: Vec<&&Value> = goroutines
            .iter()
            .filter(|f| function_of(&f["goroutine"]["created_at"]) == Some(group.created_at))
            .collect();
        assert_eq!(
            matching.len(),
            group.groups,
            "{binary} {scenario}: goroutine findings created at {}: {goroutines:#?}",
            group.created_at
        );
        for f in matching {
            let g = &f["goroutine"];
            assert_eq!(f["verdict"], "leak", "{f}");
            let outstanding = f["outstanding"].as_u64().expect("outstanding");
            assert!(
                outstanding >= CALLS,
                "outstanding {outstanding} < {CALLS}: {f}"
            );
            let created = f["created"].as_u64().expect("created");
            assert!(created >= outstanding, "{f}");
            assert_eq!(g["go"], go, "{f}");
            assert_eq!(function_of(&g["caused_by"]), group.caused_by, "{f}");
            if let Some(start) = group.start {
                assert_eq!(function_of(&g["start"]), Some(start), "{f}");
            }
            if group.caused_by.is_none() {
                // The program's own `go` statement, to the line, stripped or not.
                let site = &g["created_at"];
                let file = site["file"].as_str().expect("created_at.file");
                assert!(file.ends_with("/leaks.go"), "{f}");
                assert_eq!(site["line"], go_statement_line(group.created_at), "{f}");
            }
            assert_eq!(main_reason(f), Some(group.reason), "{f}");
            let frames = symbols(f);
            assert!(
                frames.iter().any(|s| s.contains(group.in_frames)),
                "{} not in {frames:?}",
                group.in_frames
            );
        }
    }
    for (kind, function) in &case.fds {
        let f = findings
            .iter()
            .find(|f| f["resource"] == "fd" && f["kind"] == *kind)
            .unwrap_or_else(|| panic!("{binary} {scenario}: no {kind} finding: {findings:#?}"));
        assert_eq!(f["verdict"], "leak", "{f}");
        let outstanding = f["outstanding"].as_u64().expect("outstanding");
        assert!(outstanding >= CALLS, "outstanding {outstanding}: {f}");
        let frames = symbols(f);
        assert!(
            frames.iter().any(|s| s.contains(function)),
            "{function} not in the {kind} finding's frames {frames:?}"
        );
    }
}

/// The `clean` control: heavy, balanced goroutine churn must not be called a leak.
fn clean_control(binary: &str) {
    let rounds = 1000;
    let (findings, leaked, health) = trace(binary, "clean", &["--count", &rounds.to_string()]);
    assert_eq!(leaked, 0);
    // The churn was seen: 50 goroutines a round started, each of them ended.
    let emitted = |probe: &str| {
        health["probes"]
            .as_array()
            .and_then(|probes| probes.iter().find(|p| p["name"] == probe))
            .and_then(|p| p["emitted"].as_u64())
            .unwrap_or(0)
    };
    assert!(emitted("go:newproc") >= rounds * 50, "{health}");
    assert!(emitted("go:gdestroy") >= rounds * 50, "{health}");
    assert_eq!(health["lost_events"], 0, "{health}");
    let leaks: Vec<&Value> = findings
        .iter()
        .filter(|f| f["resource"] == "goroutine" && f["verdict"] == "leak")
        .collect();
    assert!(
        leaks.is_empty(),
        "{binary}: clean churn called a leak: {leaks:#?}"
    );
}

/// Every scenario against every build: a module per build.
macro_rules! builds {
    ($($build:ident: $binary:literal;)*) => {$(
        mod $build {
            use super::{clean_control, leak_scenario};

            #[test]
            fn chan_send() {
                leak_scenario("chan-send", $binary);
            }

            #[test]
            fn ticker() {
                leak_scenario("ticker", $binary);
            }

            #[test]
            fn context() {
                leak_scenario("context", $binary);
            }

            #[test]
            fn waitgroup() {
                leak_scenario("waitgroup", $binary);
            }

            #[test]
            fn exec_without_wait() {
                leak_scenario("exec", $binary);
            }

            #[test]
            fn http_body_not_closed() {
                leak_scenario("http-body", $binary);
            }

            #[test]
            fn clean_churn_is_not_a_leak() {
                clean_control($binary);
            }
        }
    )*};
}

builds! {
    go1_23_9: "leaky-go1.23.9";
    go1_27_3: "leaky-go1.27.3";
    // No symbol table, no DWARF: the same creation sites, from the pclntab.
    go1_27_3_stripped: "leaky-go1.27.3-stripped";
    // Position independent: every address found where the kernel loaded it.
    go1_27_3_pie: "leaky-go1.27.3-pie";
}

#[test]
fn go_statement_lines_are_found() {
    for function in [
        "main.leakBlockedSend",
        "main.leakTicker",
        "main.leakContext",
        "main.leakWaitGroup",
    ] {
        assert!(go_statement_line(function) > 1, "{function}");
    }
}
