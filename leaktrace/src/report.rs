//! Reporters: the human-readable table and the JSON lines contract. Both print the same
//! [`Report`]; neither knows where its data came from.

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use crate::{
    cgroup::Placement,
    goprocs::GoStats,
    kubeapi::ApiStatus,
    loader::{FdMode, ProbeCounters, ProgramStats, Skipped},
    model::{
        FdKind, Finding, Frame, GoPlace, GoroutineReport, LeakDetail, Origin, OwnerSource,
        ProcessSummary, Resource, Trend, Verdict, WaiterDetail,
    },
    pods::Placed,
    stacks::StackStats,
    unwind::{Method, UnwindStats},
};

/// How complete the picture is: every loss, failure and disagreement, counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// Events decoded from the ring buffer.
    pub events: u64,
    /// Records the kernel could not write because the ring buffer was full.
    pub lost_events: u64,
    /// Lost records whose process the kernel could not note (every process is then marked
    /// incomplete).
    pub losses_unattributed: u64,
    /// Stack captures that failed (the finding then has no frames).
    pub stack_failures: u64,
    /// Disagreements between tracked state and /proc found by re-syncs.
    pub resync_mismatches: u64,
    pub probes_attached: usize,
    pub probes_skipped: Vec<Skipped>,
    /// How fds are traced: `tracepoints+kprobe` sees every fd a process gets, `tracepoints`
    /// misses those received over SCM_RIGHTS, created by io_uring or installed by other
    /// syscalls (`none`: no fd tracing).
    pub fd_mode: FdMode,
    /// Whether the pathnames of opened files are read (`--no-paths` turns it off).
    pub paths: bool,
    /// Records that failed validation.
    pub decode_errors: u64,
    /// Closes of fds opened before tracing began.
    pub untracked_closes: u64,
    /// Objects, processes and descendants not tracked because a bound was hit.
    pub dropped_objects: u64,
    pub evicted_processes: u64,
    pub targets_full: u64,
    pub pending_full: u64,
    pub path_failures: u64,
    /// Futex waits not tracked because the in-flight wait map was full.
    pub waits_full: u64,
    /// Stack samples lost to a full ring buffer (their records keep a frame-pointer stack).
    pub samples_lost: u64,
    /// Times the kernel's stack map was emptied because an eighth of it was taken.
    pub stack_map_clears: u64,
    /// The Kubernetes API watch that names pods, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes_api: Option<ApiStatus>,
    pub probes: Vec<ProbeCounters>,
    /// Kernel time per program, when `kernel.bpf_stats_enabled` is 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramStats>,
    /// Where stacks came from: samples unwound, paired, lost.
    pub stacks: StackStats,
    /// The unwinder's caches of processes and binaries.
    pub unwind: UnwindStats,
    /// Ends of goroutines that started before tracing (or whose start was lost).
    pub untracked_goroutine_exits: u64,
    /// Go processes and binaries probed, goroutine states read.
    pub go: GoStats,
}

/// A finding with its symbolized stack.
#[derive(Clone, Debug)]
pub struct Located {
    pub finding: Finding,
    pub frames: Vec<Frame>,
    /// How the stack was obtained; None without a stack.
    pub origin: Option<Origin>,
    /// For a deadlock: the frames of each link of the cycle, in order.
    pub cycle_frames: Vec<Vec<Frame>>,
    /// For goroutines: where they came from and what they wait for.
    pub go: Option<GoroutineReport>,
}

/// One report: everything printed at an interval or at the end.
#[derive(Clone, Debug)]
pub struct Report {
    pub seq: u64,
    pub is_final: bool,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    pub min_age_s: f64,
    pub findings: Vec<Located>,
    pub processes: Vec<ProcessSummary>,
    /// Change of each process's counts since the previous report.
    pub growth: BTreeMap<u32, Growth>,
    /// Where each process runs (host, container, pod), when known.
    pub placements: BTreeMap<u32, Placed>,
    /// Findings per verdict, over all findings (not only the `--top` shown).
    pub verdicts: BTreeMap<&'static str, u64>,
    pub health: Health,
}

/// How a process's counts moved since the previous report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Growth {
    pub threads: i64,
    pub fds: BTreeMap<&'static str, i64>,
    pub blocked_waiters: i64,
}

impl Growth {
    /// From `before` to `now`; a process seen for the first time grew from nothing.
    pub fn between(before: Option<&ProcessSummary>, now: &ProcessSummary) -> Self {
        let delta = |a: u64, b: u64| b as i64 - a as i64;
        let old_fd = |k: &FdKind| before.and_then(|b| b.fds.get(k)).copied().unwrap_or(0);
        let kinds = now
            .fds
            .keys()
            .chain(before.iter().flat_map(|b| b.fds.keys()));
        Self {
            threads: delta(before.map_or(0, |b| b.threads), now.threads),
            fds: kinds
                .map(|k| {
                    (
                        k.as_str(),
                        delta(old_fd(k), now.fds.get(k).copied().unwrap_or(0)),
                    )
                })
                .filter(|&(_, d)| d != 0)
                .collect(),
            blocked_waiters: delta(before.map_or(0, |b| b.blocked_waiters), now.blocked_waiters),
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Line<'a> {
    Report {
        seq: u64,
        #[serde(rename = "final")]
        is_final: bool,
        elapsed_s: f64,
        events_per_s: f64,
        min_age_s: f64,
        verdicts: &'a BTreeMap<&'static str, u64>,
    },
    Health {
        seq: u64,
        #[serde(flatten)]
        health: &'a Health,
    },
    Process {
        seq: u64,
        pid: u32,
        comm: &'a str,
        threads: u64,
        fds: BTreeMap<&'static str, u64>,
        preexisting: Preexisting,
        exited: bool,
        incomplete: bool,
        blocked_waiters: u64,
        goroutines: u64,
        growth: Option<&'a Growth>,
        placement: Option<&'a Placed>,
    },
    Finding {
        seq: u64,
        pid: u32,
        comm: &'a str,
        resource: Resource,
        kind: Option<&'static str>,
        outstanding: u64,
        created: u64,
        oldest_age_s: f64,
        rate_per_s: f64,
        stack_id: Option<u32>,
        stack_method: Option<Method>,
        stack_truncated: bool,
        frames: &'a [Frame],
        path: Option<&'a str>,
        exited: bool,
        placement: Option<&'a Placed>,
        #[serde(flatten)]
        waiter: Option<WaiterJson<'a>>,
        #[serde(flatten)]
        leak: Option<LeakJson>,
        #[serde(skip_serializing_if = "Option::is_none")]
        goroutine: Option<&'a GoroutineReport>,
    },
}

/// The fields the verdict engine adds to a thread or fd finding.
#[derive(Serialize)]
struct LeakJson {
    verdict: Trend,
    destroyed: u64,
    age_p50_s: f64,
    age_p90_s: f64,
}

impl From<&LeakDetail> for LeakJson {
    fn from(l: &LeakDetail) -> Self {
        Self {
            verdict: l.trend,
            destroyed: l.destroyed,
            age_p50_s: l.age_p50_ns as f64 / 1e9,
            age_p90_s: l.age_p90_ns as f64 / 1e9,
        }
    }
}

/// The fields a waiter finding adds.
#[derive(Serialize)]
struct WaiterJson<'a> {
    verdict: Verdict,
    futex_address: String,
    futex_addresses: usize,
    waiting_tids: &'a [u32],
    cycle: Vec<CycleLinkJson<'a>>,
}

#[derive(Serialize)]
struct CycleLinkJson<'a> {
    tid: u32,
    waits_on: String,
    held_by: u32,
    owner_source: OwnerSource,
    frames: &'a [Frame],
}

fn hex(addr: u64) -> String {
    format!("{addr:#x}")
}

fn waiter_json<'a>(w: &'a WaiterDetail, cycle_frames: &'a [Vec<Frame>]) -> WaiterJson<'a> {
    WaiterJson {
        verdict: w.verdict,
        futex_address: hex(w.futex_address),
        futex_addresses: w.futex_addresses,
        waiting_tids: &w.waiting_tids,
        cycle: w
            .cycle
            .iter()
            .enumerate()
            .map(|(i, link)| CycleLinkJson {
                tid: link.tid,
                waits_on: hex(link.waits_on),
                held_by: link.held_by,
                owner_source: link.owner_source,
                frames: cycle_frames.get(i).map_or(&[], Vec::as_slice),
            })
            .collect(),
    }
}

fn kind_name(f: &Finding) -> Option<&'static str> {
    f.kind
        .map(|k| k.as_str())
        .or_else(|| f.waiter.as_ref().map(|w| w.kind.as_str()))
}

#[derive(Serialize)]
struct Preexisting {
    threads: u64,
    fds: u64,
}

/// Writes a report as JSON lines: a `report` header, `health`, one `process` per process and
/// one `finding` per finding.
pub fn write_json(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let seq = r.seq;
    let mut line = |l: &Line<'_>| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, l)?;
        out.write_all(b"\n")
    };
    line(&Line::Report {
        seq,
        is_final: r.is_final,
        elapsed_s: r.elapsed_s,
        events_per_s: r.events_per_s,
        min_age_s: r.min_age_s,
        verdicts: &r.verdicts,
    })?;
    line(&Line::Health {
        seq,
        health: &r.health,
    })?;
    for p in &r.processes {
        line(&Line::Process {
            seq,
            pid: p.pid,
            comm: &p.comm,
            threads: p.threads,
            fds: p.fds.iter().map(|(k, n)| (k.as_str(), *n)).collect(),
            preexisting: Preexisting {
                threads: p.preexisting_threads,
                fds: p.preexisting_fds,
            },
            exited: p.exited,
            incomplete: p.incomplete,
            blocked_waiters: p.blocked_waiters,
            goroutines: p.goroutines,
            growth: r.growth.get(&p.pid),
            placement: r.placements.get(&p.pid),
        })?;
    }
    for located in &r.findings {
        line(&finding_line(r, located))?;
    }
    out.flush()
}

/// The `finding` line of one located finding.
fn finding_line<'a>(r: &'a Report, located: &'a Located) -> Line<'a> {
    let Located {
        finding: f,
        frames,
        origin,
        cycle_frames,
        go,
    } = located;
    Line::Finding {
        seq: r.seq,
        pid: f.pid,
        comm: &f.comm,
        resource: f.resource,
        kind: kind_name(f),
        outstanding: f.outstanding,
        created: f.created,
        oldest_age_s: f.oldest_age_ns as f64 / 1e9,
        rate_per_s: f.rate_per_s,
        stack_id: f.stack.map(|s| s.id),
        stack_method: origin.map(|o| o.method),
        stack_truncated: origin.is_some_and(|o| o.truncated),
        frames,
        path: f.sample_path.as_deref(),
        exited: f.exited,
        placement: r.placements.get(&f.pid),
        waiter: f.waiter.as_ref().map(|w| waiter_json(w, cycle_frames)),
        leak: f.leak.as_ref().map(LeakJson::from),
        goroutine: go.as_ref(),
    }
}

/// The findings of a report as one JSON document (the daemon's `/findings`): the report's
/// `seq` and `elapsed_s`, and its findings as the `finding` lines of the JSON lines contract.
pub fn findings_json(r: &Report) -> Vec<u8> {
    #[derive(Serialize)]
    struct Findings<'a> {
        seq: u64,
        elapsed_s: f64,
        findings: Vec<Line<'a>>,
    }
    let doc = Findings {
        seq: r.seq,
        elapsed_s: r.elapsed_s,
        findings: r.findings.iter().map(|l| finding_line(r, l)).collect(),
    };
    serde_json::to_vec(&doc).expect("findings serialize")
}

/// Frames shown per finding in the table.
const TABLE_FRAMES: usize = 8;

/// The table stops at the program's `main`: what runs before it is the language runtime.
fn is_main(frame: &Frame) -> bool {
    frame
        .symbol
        .as_deref()
        .is_some_and(|s| s == "main" || s.ends_with("::main") || s == "main.main")
}

fn go_place(place: &GoPlace) -> String {
    match (&place.file, place.line) {
        (Some(file), Some(line)) => format!("{} ({file}:{line})", place.function),
        _ => place.function.clone(),
    }
}

/// A goroutine finding's lines: the `go` statement, the user code behind it, their states.
fn write_goroutines(out: &mut impl Write, go: &GoroutineReport) -> std::io::Result<()> {
    let place = |p: &Option<GoPlace>| p.as_ref().map_or_else(|| "?".to_owned(), go_place);
    writeln!(
        out,
        "      go statement in {}, running {} [{}]",
        place(&go.created_at),
        go.start.as_ref().map_or("?", |s| s.function.as_str()),
        go.go
    )?;
    if let Some(cause) = &go.caused_by {
        writeln!(out, "      started for {}", go_place(cause))?;
    }
    let mut states: Vec<String> = go
        .waits
        .iter()
        .map(|w| format!("{} {}", w.reason, w.count))
        .collect();
    if go.unread > 0 {
        states.push(format!("not read {}", go.unread));
    }
    writeln!(out, "      states: {}", states.join(", "))
}

fn describe(f: &Finding) -> String {
    if let Some(w) = &f.waiter {
        let verdict = match w.verdict {
            Verdict::Growing => "GROWING",
            Verdict::Stuck => "stuck",
            Verdict::Deadlock => "DEADLOCK",
        };
        let on = if w.futex_addresses == 1 {
            format!("futex {}", hex(w.futex_address))
        } else {
            format!("{} futexes", w.futex_addresses)
        };
        return format!(
            "pid {} ({}): {} threads blocked in {} on {on}, {verdict}, oldest {:.1}s, {:+.1}/s, tids {:?}",
            f.pid,
            f.comm,
            f.outstanding,
            w.kind.as_str(),
            f.oldest_age_ns as f64 / 1e9,
            f.rate_per_s,
            w.waiting_tids
        );
    }
    let what = match (f.resource, f.kind) {
        (Resource::Thread, _) => "threads".to_owned(),
        (Resource::Fd, Some(kind)) => format!("{} fds", kind.as_str()),
        (Resource::Fd | Resource::Waiter, None) => "fds".to_owned(),
        (Resource::Waiter, Some(_)) => "waiters".to_owned(),
        (Resource::Goroutine, _) => "goroutines".to_owned(),
    };
    let state = if f.exited { " at exit" } else { "" };
    let (verdict, ages) = match &f.leak {
        Some(l) => (
            match l.trend {
                Trend::Leak => "LEAK, ",
                Trend::Stable => "stable, ",
                Trend::Released => "released, ",
            },
            format!(
                ", ages p50 {:.1}s p90 {:.1}s, {} released",
                l.age_p50_ns as f64 / 1e9,
                l.age_p90_ns as f64 / 1e9,
                l.destroyed
            ),
        ),
        None => ("", String::new()),
    };
    format!(
        "pid {} ({}): {verdict}{} {what} outstanding{state}, {} created, oldest {:.1}s{ages}, {:+.1}/s",
        f.pid,
        f.comm,
        f.outstanding,
        f.created,
        f.oldest_age_ns as f64 / 1e9,
        f.rate_per_s
    )
}

fn frame_line(frame: &Frame) -> String {
    let name = match (&frame.symbol, &frame.module, frame.offset) {
        (Some(sym), _, _) => sym.clone(),
        (None, Some(module), Some(offset)) => format!("{module}+{offset:#x}"),
        (None, Some(module), None) => format!("{module} {:#x}", frame.addr),
        (None, None, _) => format!("{:#x}", frame.addr),
    };
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("{name} ({file}:{line})"),
        _ => name,
    }
}

/// " pod NS/NAME[/CONTAINER]" or " container RUNTIME:ID12" for a containerised process; nothing
/// on the host.
fn where_placed(placed: &Placed) -> String {
    match (&placed.placement, &placed.namespace, &placed.pod) {
        (_, Some(ns), Some(pod)) => match &placed.container {
            Some(container) => format!(" pod {ns}/{pod}/{container}"),
            None => format!(" pod {ns}/{pod}"),
        },
        (Placement::Container { runtime, id, .. }, _, _) => {
            format!(
                " container {}:{}",
                runtime.as_str(),
                &id[..id.len().min(12)]
            )
        }
        (Placement::Host, _, _) => String::new(),
    }
}

fn describe_origin(origin: Origin) -> String {
    let how = match origin.method {
        Method::Fp => "stack from frame pointers",
        Method::Dwarf => "stack unwound with .eh_frame",
        Method::Mixed => "stack unwound with .eh_frame, then frame pointers",
    };
    if origin.truncated {
        format!("{how}; truncated: the outermost frames are missing")
    } else {
        how.to_owned()
    }
}

/// Writes a report for people. `live`: stdout is a terminal, so each report replaces the last
/// on screen, like top.
/// Process lines a table shows at most: system-wide there are hundreds, and the ones holding
/// the most come first.
const TABLE_PROCESSES: usize = 20;

pub fn write_table(out: &mut impl Write, r: &Report, live: bool) -> std::io::Result<()> {
    if live {
        // Cursor home, clear screen.
        out.write_all(b"\x1b[H\x1b[2J")?;
    }
    let h = &r.health;
    let title = if r.is_final { "final report" } else { "report" };
    writeln!(
        out,
        "== leaktrace {title} #{} at {:.1}s: {} events ({:.0}/s), lost {}, stack failures {}, \
         resync mismatches {}, probes {} attached / {} skipped, fd mode {}",
        r.seq,
        r.elapsed_s,
        h.events,
        r.events_per_s,
        h.lost_events,
        h.stack_failures,
        h.resync_mismatches,
        h.probes_attached,
        h.probes_skipped.len(),
        h.fd_mode.as_str()
    )?;
    if !h.paths {
        writeln!(out, "  pathnames of opened files not read (--no-paths)")?;
    }
    if h.lost_events + h.dropped_objects > 0 {
        writeln!(
            out,
            "  records lost {}, objects dropped at a bound {}: those processes are marked \
             (incomplete); re-syncs with /proc keep their counts right, not the stacks",
            h.lost_events, h.dropped_objects
        )?;
    }
    if h.samples_lost + h.stacks.unpaired + h.stacks.dropped > 0 {
        writeln!(
            out,
            "  stack samples lost {}, unpaired {}, dropped {}: those stacks are frame-pointer walks",
            h.samples_lost, h.stacks.unpaired, h.stacks.dropped
        )?;
    }
    if !r.verdicts.is_empty() {
        let summary: Vec<String> = r.verdicts.iter().map(|(v, n)| format!("{n} {v}")).collect();
        writeln!(out, "  verdicts: {}", summary.join(", "))?;
    }
    let mut processes: Vec<&ProcessSummary> = r.processes.iter().collect();
    let hidden = processes.len().saturating_sub(TABLE_PROCESSES);
    if hidden > 0 {
        processes.sort_by_key(|p| std::cmp::Reverse(p.threads + p.fds.values().sum::<u64>()));
        processes.truncate(TABLE_PROCESSES);
    }
    for p in processes {
        let fds: Vec<_> = p
            .fds
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        let growth = r.growth.get(&p.pid).map_or(String::new(), |g| {
            let fds: i64 = g.fds.values().sum();
            format!(
                " (since last: threads {:+}, fds {fds:+}, waiters {:+})",
                g.threads, g.blocked_waiters
            )
        });
        let placed = r.placements.get(&p.pid).map_or(String::new(), where_placed);
        writeln!(
            out,
            "  pid {:<7} {:<16} threads {:<5} fds {:<5} [{}] waiters {}{}{}{placed}{growth}",
            p.pid,
            p.comm,
            p.threads,
            p.fds.values().sum::<u64>(),
            fds.join(", "),
            p.blocked_waiters,
            if p.exited { " (exited)" } else { "" },
            if p.incomplete { " (incomplete)" } else { "" }
        )?;
    }
    if hidden > 0 {
        writeln!(
            out,
            "  … and {hidden} more processes holding fewer threads and fds (--format json lists all)"
        )?;
    }
    if r.findings.is_empty() {
        writeln!(
            out,
            "  no findings: nothing created while traced is outstanding for {:.1}s or longer",
            r.min_age_s
        )?;
    }
    for (
        i,
        Located {
            finding,
            frames,
            origin,
            cycle_frames,
            go,
        },
    ) in r.findings.iter().enumerate()
    {
        writeln!(out, "  #{} {}", i + 1, describe(finding))?;
        if let Some(go) = go {
            write_goroutines(out, go)?;
        }
        let cycle = finding.waiter.iter().flat_map(|w| &w.cycle);
        for (link, frames) in cycle.zip(cycle_frames) {
            let how = match link.owner_source {
                OwnerSource::PiFutexWord => "owner from the PI futex word",
                OwnerSource::GlibcMutexOwner => "owner from glibc pthread_mutex_t.__owner",
            };
            // The lock call inside the C library says little: name the caller in the program.
            let in_system_library = |f: &&Frame| {
                f.module
                    .as_deref()
                    .is_some_and(|m| m.starts_with("/usr/lib") || m.starts_with("/lib"))
            };
            let symbolized = || frames.iter().filter(|f| f.symbol.is_some());
            let at = symbolized()
                .find(|f| !in_system_library(f))
                .or_else(|| symbolized().next())
                .map(frame_line)
                .unwrap_or_else(|| "(no stack)".into());
            writeln!(
                out,
                "      tid {} waits on {} held by tid {} ({how}) at {at}",
                link.tid,
                hex(link.waits_on),
                link.held_by
            )?;
        }
        if let Some(path) = &finding.sample_path {
            writeln!(out, "      e.g. {path}")?;
        }
        if frames.is_empty() {
            writeln!(out, "      (no stack)")?;
        }
        let shown = frames
            .iter()
            .position(is_main)
            .map_or(frames.len(), |main| main + 1)
            .min(TABLE_FRAMES);
        for (j, frame) in frames[..shown].iter().enumerate() {
            let arrow = if j == 0 { "at" } else { "<-" };
            writeln!(out, "      {arrow} {}", frame_line(frame))?;
        }
        if frames.len() > shown {
            writeln!(out, "      ... {} more frames", frames.len() - shown)?;
        }
        if let Some(origin) = origin {
            writeln!(out, "      ({})", describe_origin(*origin))?;
        }
    }
    for s in &h.probes_skipped {
        if r.is_final {
            writeln!(out, "  skipped probe {}: {}", s.name, s.reason)?;
        }
    }
    out.flush()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cgroup::Runtime;
    use crate::model::{FdKind, StackRef};

    /// A final report of one containerised process leaking sockets.
    pub(crate) fn report() -> Report {
        Report {
            seq: 3,
            is_final: true,
            elapsed_s: 12.5,
            events_per_s: 100.0,
            min_age_s: 1.0,
            findings: vec![Located {
                finding: Finding {
                    pid: 42,
                    comm: "server".into(),
                    resource: Resource::Fd,
                    kind: Some(FdKind::Socket),
                    stack: Some(StackRef {
                        pid: 42,
                        exec_gen: 0,
                        id: 7,
                    }),
                    outstanding: 40,
                    created: 41,
                    oldest_age_ns: 3_500_000_000,
                    rate_per_s: 12.0,
                    sample_path: None,
                    exited: false,
                    waiter: None,
                    goroutine: None,
                    leak: Some(LeakDetail {
                        trend: Trend::Leak,
                        destroyed: 1,
                        age_p50_ns: 2_000_000_000,
                        age_p90_ns: 3_000_000_000,
                    }),
                },
                frames: vec![Frame {
                    addr: 0x1234,
                    symbol: Some("server::leak_socket".into()),
                    module: Some("/bin/server".into()),
                    offset: Some(0x234),
                    file: Some("src/main.rs".into()),
                    line: Some(10),
                }],
                origin: Some(Origin {
                    method: Method::Dwarf,
                    truncated: false,
                }),
                cycle_frames: Vec::new(),
                go: None,
            }],
            processes: vec![ProcessSummary {
                pid: 42,
                comm: "server".into(),
                threads: 2,
                fds: [(FdKind::Socket, 40), (FdKind::File, 3)]
                    .into_iter()
                    .collect(),
                preexisting_threads: 1,
                preexisting_fds: 3,
                exited: false,
                incomplete: false,
                blocked_waiters: 0,
                goroutines: 0,
            }],
            growth: BTreeMap::new(),
            placements: [(
                42,
                Placed {
                    placement: Placement::Container {
                        runtime: Runtime::Containerd,
                        id: "0123456789ab".repeat(5) + "cdef",
                        pod_uid: Some("1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b".into()),
                    },
                    namespace: Some("shop".into()),
                    pod: Some("cart-7d9f".into()),
                    container: Some("app".into()),
                },
            )]
            .into_iter()
            .collect(),
            verdicts: [("leak", 1)].into_iter().collect(),
            health: Health {
                events: 99,
                probes_attached: 5,
                fd_mode: FdMode::TracepointsAndKprobe,
                paths: true,
                ..Health::default()
            },
        }
    }

    #[test]
    fn findings_are_one_document_of_finding_lines() {
        let r = report();
        let doc: serde_json::Value = serde_json::from_slice(&findings_json(&r)).unwrap();
        assert_eq!(doc["seq"], 3);
        assert_eq!(doc["elapsed_s"], 12.5);
        let findings = doc["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 1);
        // The same object a `finding` JSON line carries.
        let mut line = Vec::new();
        write_json(&mut line, &r).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(std::str::from_utf8(&line).unwrap().lines().last().unwrap())
                .unwrap();
        assert_eq!(findings[0], last);
        assert_eq!(findings[0]["frames"][0]["symbol"], "server::leak_socket");
        assert_eq!(findings[0]["placement"]["container"], "app");
    }

    #[test]
    fn json_lines_follow_the_contract() {
        let mut out = Vec::new();
        write_json(&mut out, &report()).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let types: Vec<_> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["report", "health", "process", "finding"]);
        assert_eq!(lines[0]["final"], true);
        assert_eq!(lines[1]["events"], 99);
        assert_eq!(lines[1]["lost_events"], 0);
        assert!(lines[1]["probes_skipped"].as_array().unwrap().is_empty());
        assert_eq!(lines[1]["fd_mode"], "tracepoints+kprobe");
        assert_eq!(lines[2]["fds"]["socket"], 40);
        let placement = &lines[2]["placement"];
        assert_eq!(placement["kind"], "container");
        assert_eq!(placement["runtime"], "containerd");
        assert_eq!(placement["pod_uid"], "1f3e2a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b");
        assert_eq!(placement["namespace"], "shop");
        assert_eq!(lines[3]["placement"]["pod"], "cart-7d9f");
        assert_eq!(lines[3]["placement"]["container"], "app");
        assert_eq!(lines[2]["preexisting"]["fds"], 3);
        let f = &lines[3];
        assert_eq!(f["resource"], "fd");
        assert_eq!(f["kind"], "socket");
        assert_eq!(f["outstanding"], 40);
        assert_eq!(f["oldest_age_s"], 3.5);
        assert_eq!(f["stack_id"], 7);
        assert_eq!(f["frames"][0]["symbol"], "server::leak_socket");
        assert_eq!(f["frames"][0]["line"], 10);
        assert_eq!(f["frames"][0]["addr"], 0x1234);
        assert_eq!(f["frames"][0]["offset"], 0x234);
        assert_eq!(f["stack_method"], "dwarf");
        assert_eq!(f["stack_truncated"], false);
        assert_eq!(f["verdict"], "leak");
        assert_eq!(f["destroyed"], 1);
        assert_eq!(f["age_p90_s"], 3.0);
        assert_eq!(lines[0]["verdicts"]["leak"], 1);
    }

    #[test]
    fn table_names_the_leak_and_its_frames() {
        let mut out = Vec::new();
        write_table(&mut out, &report(), false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("final report #3"), "{text}");
        assert!(text.contains("LEAK, 40 socket fds outstanding"), "{text}");
        assert!(text.contains("verdicts: 1 leak"), "{text}");
        assert!(
            text.contains("at server::leak_socket (src/main.rs:10)"),
            "{text}"
        );
        assert!(text.contains("socket 40"), "{text}");
        assert!(text.contains("waiters 0 pod shop/cart-7d9f/app"), "{text}");
        assert!(text.contains("(stack unwound with .eh_frame)"), "{text}");
        // The fd mode, once, in the header.
        assert_eq!(text.matches("fd mode ").count(), 1, "{text}");
        assert!(
            text.lines()
                .next()
                .unwrap()
                .ends_with("probes 5 attached / 0 skipped, fd mode tracepoints+kprobe"),
            "{text}"
        );
    }

    #[test]
    fn table_says_what_is_missing_lost_records_and_paths() {
        let mut r = report();
        let mut out = Vec::new();
        write_table(&mut out, &r, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("incomplete"), "{text}");
        assert!(!text.contains("not read"), "{text}");

        r.health.lost_events = 7;
        r.processes[0].incomplete = true;
        let mut out = Vec::new();
        write_table(&mut out, &r, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("lost 7,"), "{text}");
        assert!(
            text.contains("records lost 7, objects dropped at a bound 0"),
            "{text}"
        );
        let pid_line = text.lines().find(|l| l.contains("pid 42")).unwrap();
        assert!(pid_line.contains("(incomplete)"), "{pid_line}");

        r.health.paths = false;
        let mut out = Vec::new();
        write_table(&mut out, &r, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("pathnames of opened files not read"),
            "{text}"
        );
    }

    #[test]
    fn fd_modes_are_named_alike_in_json_and_the_table() {
        for (mode, name) in [
            (FdMode::TracepointsAndKprobe, "tracepoints+kprobe"),
            (FdMode::Tracepoints, "tracepoints"),
            (FdMode::None, "none"),
        ] {
            assert_eq!(mode.as_str(), name);
            assert_eq!(serde_json::to_value(mode).unwrap(), name);
        }
        assert_eq!(FdMode::default(), FdMode::Tracepoints);
    }

    #[test]
    fn fds_by_origin_are_named_in_findings_and_process_lines() {
        let mut r = report();
        r.findings[0].finding.kind = Some(FdKind::Received);
        r.processes[0].fds = [(FdKind::Received, 40), (FdKind::IoUring, 2)]
            .into_iter()
            .collect();
        let mut table = Vec::new();
        write_table(&mut table, &r, false).unwrap();
        let text = String::from_utf8(table).unwrap();
        assert!(text.contains("LEAK, 40 received fds outstanding"), "{text}");
        assert!(text.contains("[received 40, io_uring 2]"), "{text}");
        let mut out = Vec::new();
        write_json(&mut out, &r).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[2]["fds"]["received"], 40);
        assert_eq!(lines[2]["fds"]["io_uring"], 2);
        assert_eq!(lines[3]["kind"], "received");
    }

    #[test]
    fn frames_without_symbols_are_named_by_module_and_offset() {
        let mut frame = Frame {
            addr: 0x5555_0000_1234,
            module: Some("/bin/stripped".into()),
            offset: Some(0x1234),
            ..Frame::default()
        };
        assert_eq!(frame_line(&frame), "/bin/stripped+0x1234");
        frame.offset = None;
        assert_eq!(frame_line(&frame), "/bin/stripped 0x555500001234");
    }

    #[test]
    fn origins_say_how_and_whether_cut() {
        let origin = |method, truncated| describe_origin(Origin { method, truncated });
        assert_eq!(origin(Method::Fp, false), "stack from frame pointers");
        assert!(origin(Method::Mixed, false).contains("then frame pointers"));
        assert!(origin(Method::Dwarf, true).contains("truncated"));
    }

    #[test]
    fn a_system_wide_table_shows_the_busiest_processes() {
        let mut r = report();
        let template = r.processes[0].clone();
        r.processes = (0..TABLE_PROCESSES as u32 + 5)
            .map(|i| ProcessSummary {
                pid: 1000 + i,
                threads: u64::from(i) + 1,
                ..template.clone()
            })
            .collect();
        let mut out = Vec::new();
        write_table(&mut out, &r, false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let shown: Vec<&str> = text.lines().filter(|l| l.contains("  pid ")).collect();
        assert_eq!(shown.len(), TABLE_PROCESSES, "{text}");
        // The busiest (most threads here) first; the five idlest are summarised.
        assert!(shown[0].contains("pid 1024"), "{text}");
        assert!(!text.contains("pid 1004 "), "{text}");
        assert!(text.contains("… and 5 more processes"), "{text}");
    }
}
