//! Reporters: the human-readable table and the JSON lines contract. Both print the same
//! [`Report`]; neither knows where its data came from.

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use crate::{
    loader::{ProbeCounters, Skipped},
    model::{Finding, Frame, ProcessSummary, Resource},
};

/// How complete the picture is: every loss, failure and disagreement, counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Health {
    /// Events decoded from the ring buffer.
    pub events: u64,
    /// Records the kernel could not write because the ring buffer was full.
    pub lost_events: u64,
    /// Stack captures that failed (the finding then has no frames).
    pub stack_failures: u64,
    /// Disagreements between tracked state and /proc found by re-syncs.
    pub resync_mismatches: u64,
    pub probes_attached: usize,
    pub probes_skipped: Vec<Skipped>,
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
    pub probes: Vec<ProbeCounters>,
}

/// A finding with its symbolized stack.
#[derive(Clone, Debug)]
pub struct Located {
    pub finding: Finding,
    pub frames: Vec<Frame>,
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
    pub health: Health,
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
        frames: &'a [Frame],
        path: Option<&'a str>,
        exited: bool,
    },
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
        })?;
    }
    for Located { finding: f, frames } in &r.findings {
        line(&Line::Finding {
            seq,
            pid: f.pid,
            comm: &f.comm,
            resource: f.resource,
            kind: f.kind.map(|k| k.as_str()),
            outstanding: f.outstanding,
            created: f.created,
            oldest_age_s: f.oldest_age_ns as f64 / 1e9,
            rate_per_s: f.rate_per_s,
            stack_id: f.stack.map(|s| s.id),
            frames,
            path: f.sample_path.as_deref(),
            exited: f.exited,
        })?;
    }
    out.flush()
}

/// Frames shown per finding in the table.
const TABLE_FRAMES: usize = 8;

/// The table stops at the program's `main`: what runs before it is the language runtime.
fn is_main(frame: &Frame) -> bool {
    frame
        .symbol
        .as_deref()
        .is_some_and(|s| s == "main" || s.ends_with("::main"))
}

fn describe(f: &Finding) -> String {
    let what = match (f.resource, f.kind) {
        (Resource::Thread, _) => "threads".to_owned(),
        (Resource::Fd, Some(kind)) => format!("{} fds", kind.as_str()),
        (Resource::Fd, None) => "fds".to_owned(),
    };
    let state = if f.exited { " at exit" } else { "" };
    format!(
        "pid {} ({}): {} {what} outstanding{state}, {} created, oldest {:.1}s, {:+.1}/s",
        f.pid,
        f.comm,
        f.outstanding,
        f.created,
        f.oldest_age_ns as f64 / 1e9,
        f.rate_per_s
    )
}

fn frame_line(frame: &Frame) -> String {
    let name = match (&frame.symbol, &frame.module) {
        (Some(sym), _) => sym.clone(),
        (None, Some(module)) => format!("{module}+{:#x}", frame.addr),
        (None, None) => format!("{:#x}", frame.addr),
    };
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => format!("{name} ({file}:{line})"),
        _ => name,
    }
}

/// Writes a report for people.
pub fn write_table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    let h = &r.health;
    let title = if r.is_final { "final report" } else { "report" };
    writeln!(
        out,
        "== leaktrace {title} #{} at {:.1}s: {} events ({:.0}/s), lost {}, stack failures {}, \
         resync mismatches {}, probes {} attached / {} skipped",
        r.seq,
        r.elapsed_s,
        h.events,
        r.events_per_s,
        h.lost_events,
        h.stack_failures,
        h.resync_mismatches,
        h.probes_attached,
        h.probes_skipped.len()
    )?;
    for p in &r.processes {
        let fds: Vec<_> = p
            .fds
            .iter()
            .map(|(k, n)| format!("{} {n}", k.as_str()))
            .collect();
        writeln!(
            out,
            "  pid {:<7} {:<16} threads {:<5} fds {:<5} [{}]{}",
            p.pid,
            p.comm,
            p.threads,
            p.fds.values().sum::<u64>(),
            fds.join(", "),
            if p.exited { " (exited)" } else { "" }
        )?;
    }
    if r.findings.is_empty() {
        writeln!(
            out,
            "  no findings: nothing created while traced is outstanding for {:.1}s or longer",
            r.min_age_s
        )?;
    }
    for (i, Located { finding, frames }) in r.findings.iter().enumerate() {
        writeln!(out, "  #{} {}", i + 1, describe(finding))?;
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
    }
    for s in &h.probes_skipped {
        if r.is_final {
            writeln!(out, "  skipped probe {}: {}", s.name, s.reason)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FdKind, StackRef};

    fn report() -> Report {
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
                },
                frames: vec![Frame {
                    addr: 0x1234,
                    symbol: Some("server::leak_socket".into()),
                    module: Some("/bin/server".into()),
                    file: Some("src/main.rs".into()),
                    line: Some(10),
                }],
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
            }],
            health: Health {
                events: 99,
                probes_attached: 5,
                ..Health::default()
            },
        }
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
        assert_eq!(lines[2]["fds"]["socket"], 40);
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
    }

    #[test]
    fn table_names_the_leak_and_its_frames() {
        let mut out = Vec::new();
        write_table(&mut out, &report()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("final report #3"), "{text}");
        assert!(text.contains("40 socket fds outstanding"), "{text}");
        assert!(
            text.contains("at server::leak_socket (src/main.rs:10)"),
            "{text}"
        );
        assert!(text.contains("socket 40"), "{text}");
    }
}
