//! Integration tests of stack attribution in C and C++ programs: every leak must be pinned on the
//! function that made the call and on its caller, whether the program keeps frame pointers
//! (`leaky-fp`) or not (`leaky-O2`, `leakypp-O2`: only .eh_frame can unwind those, and Debian's
//! glibc wrappers are frameless either way), and in a stripped binary (`leaky-stripped`), where
//! the frame is checked by its file offset against the unstripped twin's symbol table.
//! tests/build.rs builds the programs (tests/c/); their scenarios mirror the tables below.
//!
//! Each finding is judged twice, and a failure lists both verdicts: *attribution* (the frames)
//! and the *JSON contract* of the unwinding (`stack_method`, `stack_truncated`, a frame's
//! `offset`), so attribution can be read off on a tracer that does not have those fields yet.
//! Every case also prints one `unwind-case` line (the finding's first frames) to stderr.
//! Like tracer.rs, these need root and are run by `cargo xtask test` (LEAKTRACE_BIN).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use serde_json::Value;

mod common;

use common::{require_root, Repro};

/// Objects each case leaks (fds, threads or blocked waiters; `pipe2` leaks two fds per call).
const COUNT: u64 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    /// leaky.c, `-O2 -g -fomit-frame-pointer`.
    O2,
    /// leaky.c, `-O2 -g -fno-omit-frame-pointer`.
    Fp,
    /// `O2` after `strip --strip-all`.
    Stripped,
    /// leaky.cpp, `-O2 -g -fomit-frame-pointer`.
    CppO2,
    /// fp-only.c: frame pointers in every frame, down to its own entry point (no libc).
    FpOnly,
}

impl Variant {
    fn file(self) -> &'static str {
        match self {
            Variant::O2 => "leaky-O2",
            Variant::Fp => "leaky-fp",
            Variant::Stripped => "leaky-stripped",
            Variant::CppO2 => "leakypp-O2",
            Variant::FpOnly => "fp-only",
        }
    }

    /// In tests/build.rs's output, or in $LEAKTRACE_C_REPROS where the tests run elsewhere (the
    /// VM tests copy them into the guest).
    fn path(self) -> PathBuf {
        std::env::var_os("LEAKTRACE_C_REPROS")
            .map_or_else(|| PathBuf::from(env!("LEAKTRACE_C_REPROS")), PathBuf::from)
            .join(self.file())
    }

    fn scenarios(self) -> &'static [Scenario] {
        match self {
            Variant::CppO2 => CPP,
            Variant::FpOnly => FP_ONLY,
            _ => C,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// fds of this kind.
    Fd(&'static str),
    /// fds of whatever kind the program's stdout is (`dup(1)`; the test's pipe).
    FdLikeStdout,
    Thread,
    /// Threads blocked in a futex wait.
    Waiter,
}

struct Scenario {
    name: &'static str,
    what: What,
    /// The function that makes the call, and the function that calls it (for a waiter: the
    /// thread's entry).
    leaking: &'static str,
    caller: &'static str,
}

const fn scenario(
    name: &'static str,
    what: What,
    leaking: &'static str,
    caller: &'static str,
) -> Scenario {
    Scenario {
        name,
        what,
        leaking,
        caller,
    }
}

/// leaky.c's scenarios (`leaky list`).
const C: &[Scenario] = &[
    scenario("fopen", What::Fd("file"), "leak_fopen", "loop_fopen"),
    scenario("socket", What::Fd("socket"), "leak_socket", "loop_socket"),
    scenario("pipe2", What::Fd("pipe"), "leak_pipe2", "loop_pipe2"),
    scenario(
        "eventfd",
        What::Fd("eventfd"),
        "leak_eventfd",
        "loop_eventfd",
    ),
    scenario("dup", What::FdLikeStdout, "leak_dup", "loop_dup"),
    scenario("thread", What::Thread, "leak_thread", "loop_thread"),
    scenario(
        "cond_wait",
        What::Waiter,
        "wait_on_cond",
        "cond_waiter_main",
    ),
    scenario(
        "mutex_lock",
        What::Waiter,
        "lock_held_mutex",
        "mutex_waiter_main",
    ),
];

/// leaky.cpp's scenarios (`leakypp list`); frames carry demangled names.
const CPP: &[Scenario] = &[
    scenario("fopen", What::Fd("file"), "Pool::grow", "Pool::fill"),
    scenario("socket", What::Fd("socket"), "Pool::connect", "Pool::dial"),
    scenario("thread", What::Thread, "Workers::spawn", "Workers::start"),
    scenario(
        "cond_wait",
        What::Waiter,
        "Workers::wait_for_job",
        "Workers::run",
    ),
];

/// fp-only.c's one scenario.
const FP_ONLY: &[Scenario] = &[scenario(
    "eventfd",
    What::Fd("eventfd"),
    "leak_eventfd",
    "loop_eventfd",
)];

/// Whether a frame's name is `function`: demanglers may add the parameter list.
fn names(name: &str, function: &str) -> bool {
    name.strip_prefix(function)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('('))
}

/// The kind /proc shows for one of `pid`'s fds, in leaktrace's words.
fn fd_kind(pid: u32, fd: u32) -> String {
    let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("fd link");
    let t = target.to_string_lossy();
    let kind = if t.starts_with("pipe:") {
        "pipe"
    } else if t.starts_with("socket:") {
        "socket"
    } else if t.starts_with('/') {
        "file"
    } else {
        "other"
    };
    kind.to_owned()
}

/// `/proc/PID/maps` while the process lives: turns a frame's address into (module, file offset)
/// independently of the tracer.
struct Maps(Vec<(u64, u64, u64, String)>);

impl Maps {
    fn of(pid: u32) -> Self {
        let text = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
        let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex in maps");
        let maps = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (start, end) = fields.next()?.split_once('-')?;
                let offset = fields.nth(1)?;
                let path = fields.nth(2)?;
                Some((hex(start), hex(end), hex(offset), path.to_owned()))
            })
            .collect();
        Self(maps)
    }

    fn file_offset(&self, addr: u64) -> Option<(&str, u64)> {
        self.0
            .iter()
            .find(|(start, end, _, _)| (*start..*end).contains(&addr))
            .map(|(start, _, offset, path)| (path.as_str(), addr - start + offset))
    }
}

/// The functions of an unstripped binary as file-offset ranges, to name a stripped twin's frames.
struct FileSymbols(Vec<(String, u64, u64)>);

impl FileSymbols {
    /// Symbols from `symbols_from`; vaddrs turned into file offsets with the PT_LOAD segments of
    /// `mapped` (the binary that actually ran; strip keeps its layout, so they agree anyway).
    fn of(symbols_from: &Path, mapped: &Path) -> Self {
        let data = fs::read(symbols_from).expect("read the unstripped twin");
        let twin = object::File::parse(&*data).expect("parse the unstripped twin");
        let mapped_data = fs::read(mapped).expect("read the stripped binary");
        let mapped = object::File::parse(&*mapped_data).expect("parse the stripped binary");
        let to_offset = |vaddr: u64| {
            mapped.segments().find_map(|seg| {
                let (file_start, file_size) = seg.file_range();
                (seg.address()..seg.address() + file_size)
                    .contains(&vaddr)
                    .then(|| vaddr - seg.address() + file_start)
            })
        };
        let functions = twin
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let name = s.name().ok()?.to_owned();
                Some((name, to_offset(s.address())?, s.size()))
            })
            .collect();
        Self(functions)
    }

    fn range(&self, function: &str) -> Option<(u64, u64)> {
        self.0
            .iter()
            .find(|(name, _, _)| name == function)
            .map(|&(_, start, size)| (start, start + size))
    }

    fn name_at(&self, offset: u64) -> Option<&str> {
        self.0
            .iter()
            .find(|&&(_, start, size)| (start..start + size).contains(&offset))
            .map(|(name, _, _)| name.as_str())
    }
}

/// A frame as the test reads it: the tracer's symbol or, in the stripped binary, the name its
/// offset has in the twin.
struct Frame<'a> {
    json: &'a Value,
    /// The tracer's `offset`, else the one /proc/PID/maps gives for `addr`.
    offset: Option<u64>,
    /// What /proc/PID/maps shows at `addr` (for a frame the tracer places nowhere).
    mapped: Option<String>,
    name: Option<String>,
}

impl Frame<'_> {
    fn module(&self) -> &str {
        self.json["module"].as_str().unwrap_or("")
    }

    fn in_stripped(&self) -> bool {
        self.module().ends_with(Variant::Stripped.file())
    }

    fn describe(&self) -> String {
        match (self.json["symbol"].as_str(), &self.name, self.offset) {
            (Some(symbol), _, _) => symbol.to_owned(),
            (None, name, Some(offset)) => {
                let module = match self.module() {
                    "" => self.mapped.as_deref().unwrap_or("?"),
                    module => module,
                };
                let module = module.rsplit('/').next().unwrap_or(module);
                let name = name.as_deref().map_or(String::new(), |n| format!(" [{n}]"));
                format!("{module}+{offset:#x}{name}")
            }
            (None, _, None) => format!("?{:#x}", self.json["addr"].as_u64().unwrap_or(0)),
        }
    }
}

/// A number, or a hex string as `futex_address` is.
fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        let s = v.as_str()?;
        u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
    })
}

fn frames<'a>(finding: &'a Value, maps: &Maps, twin: Option<&FileSymbols>) -> Vec<Frame<'a>> {
    let Some(frames) = finding["frames"].as_array() else {
        return Vec::new();
    };
    frames
        .iter()
        .map(|json| {
            let mapped = json["addr"].as_u64().and_then(|a| maps.file_offset(a));
            let offset = as_u64(&json["offset"]).or(mapped.map(|(_, o)| o));
            let mut frame = Frame {
                json,
                offset,
                mapped: mapped.map(|(path, _)| path.to_owned()),
                name: json["symbol"].as_str().map(str::to_owned),
            };
            if frame.name.is_none() && frame.in_stripped() {
                frame.name = twin
                    .zip(offset)
                    .and_then(|(twin, offset)| twin.name_at(offset))
                    .map(str::to_owned);
            }
            frame
        })
        .collect()
}

/// Where `leaking` is in `frames` with `caller` deeper down: the index of `leaking`.
fn attributed(frames: &[Frame], scenario: &Scenario) -> Option<usize> {
    let named = |f: &Frame, function| f.name.as_deref().is_some_and(|n| names(n, function));
    let at = frames.iter().position(|f| named(f, scenario.leaking))?;
    frames[at + 1..]
        .iter()
        .any(|f| named(f, scenario.caller))
        .then_some(at)
}

/// The findings of `pid` in the final report, its process line (if any) and the health line.
fn final_report(stdout: &[String], pid: u32) -> (Vec<Value>, Value, Value) {
    let mut report = common::final_report(stdout);
    let health = report
        .remove("health")
        .and_then(|mut h| h.pop())
        .expect("a health line");
    let of_pid = |lines: Option<Vec<Value>>| {
        lines
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l["pid"] == pid)
    };
    let findings = of_pid(report.remove("finding")).collect();
    let process = of_pid(report.remove("process")).next().unwrap_or_default();
    (findings, process, health)
}

/// What a traced run left: the program's findings in the final report, what /proc showed.
struct Observed {
    findings: Vec<Value>,
    maps: Maps,
    leaked: u64,
    resource: &'static str,
    /// The `kind` the finding must have (null for threads).
    kind: Value,
    /// Stack samples the kernel sent (the run traced this program only).
    samples: u64,
    /// The final report's process and health lines, shown when the judgement fails: they tell
    /// a leak the kernel never reported from one that was lost or dropped.
    process: Value,
    health: Value,
}

/// Traces `scenario` of `variant` under `--pid` and judges the finding of what it leaked.
fn check(variant: Variant, scenario: &str) {
    require_root();
    let scenario = variant
        .scenarios()
        .iter()
        .find(|s| s.name == scenario)
        .expect("a scenario of the table");
    let observed = trace(variant, scenario);
    let (summary, judged) = judge(variant, scenario, &observed);
    eprintln!("{summary}");
    if let Err(failure) = judged {
        panic!(
            "{failure}\nprocess: {}\nhealth: {}",
            observed.process, observed.health
        );
    }
}

fn trace(variant: Variant, scenario: &Scenario) -> Observed {
    let count = COUNT.to_string();
    let mut repro = Repro::start_program(&variant.path(), scenario.name, &["--count", &count]);
    let pid = repro.pid.to_string();
    // tracer.rs's settings: findings half a second after the leak, waiters after a second.
    let mut tracer = common::Tracer::start(&[
        "--format",
        "json",
        "--interval",
        "1s",
        "--min-age",
        "500ms",
        "--min-wait",
        "1s",
        "--pid",
        &pid,
    ]);
    let leaked = repro.go_and_wait();
    // Past --min-age (--min-wait and a scan, for waiters).
    tracer.wait_reports(if scenario.what == What::Waiter { 3 } else { 2 });
    let maps = Maps::of(repro.pid);
    let (resource, kind) = match scenario.what {
        What::Fd(kind) => ("fd", Value::from(kind)),
        What::FdLikeStdout => ("fd", Value::from(fd_kind(repro.pid, 1))),
        What::Thread => ("thread", Value::Null),
        What::Waiter => ("waiter", Value::from("futex")),
    };
    let run = tracer.stop();
    let (findings, process, health) = final_report(&run.stdout, repro.pid);
    let samples = health["probes"]
        .as_array()
        .expect("per-probe counters")
        .iter()
        .filter_map(|p| p["samples"].as_u64())
        .sum();
    Observed {
        findings,
        maps,
        leaked,
        resource,
        kind,
        samples,
        process,
        health,
    }
}

/// Checks the finding of what the scenario leaked; also returns an `unwind-case` line that
/// sums it up (its first frames).
fn judge(
    variant: Variant,
    scenario: &Scenario,
    observed: &Observed,
) -> (String, Result<(), String>) {
    let Observed {
        findings,
        maps,
        leaked,
        resource,
        kind,
        samples,
        ..
    } = observed;
    let twin = (variant == Variant::Stripped)
        .then(|| FileSymbols::of(&Variant::O2.path(), &Variant::Stripped.path()));
    let candidates: Vec<(&Value, Vec<Frame>)> = findings
        .iter()
        .filter(|f| f["resource"] == *resource && f["kind"] == *kind)
        .map(|f| (f, frames(f, maps, twin.as_ref())))
        .collect();
    let outstanding = |f: &Value| f["outstanding"].as_u64().unwrap_or(0);
    // The finding naming the leak, else the biggest of its resource (what a user would read).
    let found = candidates
        .iter()
        .find(|(_, frames)| attributed(frames, scenario).is_some())
        .or_else(|| candidates.iter().max_by_key(|(f, _)| outstanding(f)));
    let top: Vec<String> = found.map_or_else(Vec::new, |(_, frames)| {
        frames.iter().take(5).map(Frame::describe).collect()
    });
    let summary = format!(
        "unwind-case {} {}: outstanding {} of {leaked}, {samples} samples, stack_method {}, stack_truncated {}, \
         {} {resource} findings, top frames {top:?}",
        variant.file(),
        scenario.name,
        found.map_or(0, |(f, _)| outstanding(f)),
        found.map_or(Value::Null, |(f, _)| f["stack_method"].clone()),
        found.map_or(Value::Null, |(f, _)| f["stack_truncated"].clone()),
        candidates.len(),
    );
    let Some((finding, frames)) = found else {
        let failure = format!(
            "{} {}: no {resource} finding of kind {kind}; findings: {findings:#?}",
            variant.file(),
            scenario.name
        );
        return (summary, Err(failure));
    };

    let mut attribution = Vec::new();
    let mut contract = Vec::new();
    match attributed(frames, scenario) {
        None => attribution.push(format!(
            "no frame {} with {} deeper in {} frames {:?}",
            scenario.leaking,
            scenario.caller,
            frames.len(),
            frames
                .iter()
                .take(16)
                .map(Frame::describe)
                .collect::<Vec<_>>()
        )),
        Some(at) if variant == Variant::Stripped => {
            // The innermost frames are libc's; the first in the program must be the leaking one.
            if frames.iter().position(Frame::in_stripped) != Some(at) {
                attribution.push(format!(
                    "{} is not the first frame in {}",
                    scenario.leaking,
                    variant.file()
                ));
            }
            stripped_frame(
                &frames[at],
                scenario,
                twin.as_ref(),
                &mut attribution,
                &mut contract,
            );
        }
        Some(_) => {}
    }
    if outstanding(finding) < *leaked {
        attribution.push(format!(
            "outstanding {} < leaked {leaked}",
            outstanding(finding)
        ));
    }

    let method = finding["stack_method"].as_str();
    if !matches!(method, Some("fp" | "dwarf" | "mixed")) {
        contract.push(format!(
            "stack_method {} not fp, dwarf or mixed",
            finding["stack_method"]
        ));
    }
    // A frame-pointer walk cannot see through the frameless wrapper into code without frame
    // pointers: a complete stack of these must have used .eh_frame.
    let fd = matches!(scenario.what, What::Fd(_) | What::FdLikeStdout);
    if fd && !matches!(variant, Variant::Fp | Variant::FpOnly) && method == Some("fp") {
        contract.push("stack_method fp for code without frame pointers".into());
    }
    // Frame pointers all the way: the first samples show the kernel's walk complete, and the
    // rest of the leak (one every 50 ms) goes without copies.
    if variant == Variant::FpOnly {
        if method != Some("fp") {
            contract.push(format!("stack_method {method:?} (want fp)"));
        }
        if *samples == 0 || *samples * 2 > *leaked {
            contract.push(format!(
                "{samples} stack samples for {leaked} fds: want a few, then none"
            ));
        }
    }
    if finding["stack_truncated"] != false {
        contract.push(format!(
            "stack_truncated {} (want false)",
            finding["stack_truncated"]
        ));
    }
    if attribution.is_empty() && contract.is_empty() {
        return (summary, Ok(()));
    }
    let failure = format!(
        "{} {}:\n  attribution: {attribution:?}\n  JSON contract: {contract:?}\n  finding: {finding}",
        variant.file(),
        scenario.name,
    );
    (summary, Err(failure))
}

/// In the stripped binary the leaking frame has no name of its own, and its file offset falls in
/// the leaking function of the unstripped twin.
fn stripped_frame(
    frame: &Frame,
    scenario: &Scenario,
    twin: Option<&FileSymbols>,
    attribution: &mut Vec<String>,
    contract: &mut Vec<String>,
) {
    let symbol = &frame.json["symbol"];
    // No name, or a `module+0xoffset` stand-in for one.
    if !(symbol.is_null() || symbol.as_str().is_some_and(|s| s.contains("+0x"))) {
        attribution.push(format!("the stripped binary's frame has symbol {symbol}"));
    }
    let range = twin
        .and_then(|t| t.range(scenario.leaking))
        .expect("the leaking function in the unstripped twin");
    match as_u64(&frame.json["offset"]) {
        Some(offset) if (range.0..range.1).contains(&offset) => {}
        Some(offset) => contract.push(format!(
            "offset {offset:#x} outside {}'s file range {:#x}..{:#x}",
            scenario.leaking, range.0, range.1
        )),
        None => contract.push(format!("no offset in {}", frame.json)),
    }
}

/// One #[test] per (variant, scenario), in a module per variant: `leaky_o2::fopen`.
macro_rules! unwind_tests {
    ($($module:ident: $variant:ident [$($scenario:ident),* $(,)?];)*) => {
        $(
            mod $module {
                $(
                    #[test]
                    fn $scenario() {
                        super::check(super::Variant::$variant, stringify!($scenario));
                    }
                )*
            }
        )*
    };
}

unwind_tests! {
    leaky_o2: O2 [fopen, socket, pipe2, eventfd, dup, thread, cond_wait, mutex_lock];
    leaky_fp: Fp [fopen, socket, pipe2, eventfd, dup, thread, cond_wait, mutex_lock];
    leaky_stripped: Stripped [fopen, socket, pipe2, eventfd, dup, thread, cond_wait, mutex_lock];
    leakypp_o2: CppO2 [fopen, socket, thread, cond_wait];
    fp_only: FpOnly [eventfd];
}

/// The tables above are the programs' own (`list`), and every scenario has its test.
#[test]
fn scenario_tables_match_the_programs() {
    for (variant, tested) in [(Variant::O2, 8), (Variant::CppO2, 4), (Variant::FpOnly, 1)] {
        let out = Command::new(variant.path())
            .arg("list")
            .output()
            .expect("run list");
        assert!(out.status.success(), "{variant:?} list: {out:?}");
        let listed = String::from_utf8(out.stdout).expect("UTF-8");
        let table: Vec<String> = variant
            .scenarios()
            .iter()
            .map(|s| format!("{} {} {}", s.name, s.leaking, s.caller))
            .collect();
        assert_eq!(listed.lines().collect::<Vec<_>>(), table);
        assert_eq!(table.len(), tested);
    }
}

/// The stripped binary names none of its functions; its twin names them all, in the code the
/// stripped one maps.
#[test]
fn the_stripped_binary_needs_its_twin_for_names() {
    let stripped = fs::read(Variant::Stripped.path()).expect("read");
    let stripped = object::File::parse(&*stripped).expect("parse");
    assert!(
        stripped.symbols().all(|s| s.name() != Ok("leak_fopen")),
        "leak_fopen survived strip"
    );
    let twin = FileSymbols::of(&Variant::O2.path(), &Variant::Stripped.path());
    for s in C {
        for function in [s.leaking, s.caller] {
            let (start, end) = twin
                .range(function)
                .unwrap_or_else(|| panic!("{function} not in the twin"));
            assert_eq!(twin.name_at(start), Some(function));
            assert!(start < end);
        }
    }
}

/// The judge itself, on findings made up from the twin's symbols (no tracer, no root): a
/// complete stack of the stripped binary passes; one missing the caller, or walked by frame
/// pointers, or without the new fields, fails on the right count.
#[test]
fn the_judge_accepts_a_complete_stack_and_nothing_less() {
    const BASE: u64 = 0x5555_0000_0000;
    let stripped = Variant::Stripped.path().to_string_lossy().into_owned();
    let twin = FileSymbols::of(&Variant::O2.path(), &Variant::Stripped.path());
    let scenario = &C[0];
    let frame = |function: &str, offset: bool| {
        let (start, _) = twin.range(function).expect("in the twin");
        let mut frame = serde_json::json!({
            "addr": BASE + start + 4, "symbol": null, "module": stripped,
        });
        if offset {
            frame["offset"] = Value::from(start + 4);
        }
        frame
    };
    let finding = |functions: &[&str], method: &str, offset: bool| {
        let mut frames = vec![serde_json::json!({
            "addr": 0x7f00_0000_1000_u64, "symbol": "open64", "module": "/usr/lib/libc.so.6",
        })];
        frames.extend(functions.iter().map(|f| frame(f, offset)));
        serde_json::json!({
            "resource": "fd", "kind": "file", "outstanding": COUNT, "frames": frames,
            "stack_method": method, "stack_truncated": false,
        })
    };
    let observe = |finding: Value| Observed {
        findings: vec![finding],
        maps: Maps(vec![(BASE, BASE + (1 << 20), 0, stripped.clone())]),
        leaked: COUNT,
        resource: "fd",
        kind: Value::from("file"),
        samples: COUNT,
        process: Value::Null,
        health: Value::Null,
    };
    let full = ["leak_fopen", "loop_fopen", "run_scenario", "main"];
    let judged = |functions: &[&str], method: &str, offset: bool| {
        judge(
            Variant::Stripped,
            scenario,
            &observe(finding(functions, method, offset)),
        )
        .1
    };

    assert_eq!(judged(&full, "dwarf", true), Ok(()));
    let no_caller = judged(&["leak_fopen", "run_scenario", "main"], "dwarf", true);
    assert!(
        no_caller
            .as_ref()
            .is_err_and(|e| e.contains("no frame leak_fopen with loop_fopen")),
        "{no_caller:?}"
    );
    let fp = judged(&full, "fp", true);
    assert!(
        fp.as_ref().is_err_and(|e| e.contains("stack_method fp")),
        "{fp:?}"
    );
    // Without the tracer's offset the frames are still named (through /proc/PID/maps), so only
    // the contract fails.
    let no_offset = judged(&full, "dwarf", false).expect_err("no offset field");
    assert!(
        no_offset.contains("attribution: []") && no_offset.contains("no offset in"),
        "{no_offset}"
    );
}

#[test]
fn demangled_names_may_carry_their_parameters() {
    assert!(names("Pool::grow()", "Pool::grow"));
    assert!(names("Pool::dial(long)", "Pool::dial"));
    assert!(names("leak_fopen", "leak_fopen"));
    assert!(!names("Pool::grower()", "Pool::grow"));
    assert!(!names("leak_fopen_loop", "leak_fopen"));
}
