//! Folded stacks and flame graphs of what is outstanding.
//!
//! One folded line per distinct stack, in Brendan Gregg's format that `flamegraph.pl` and
//! inferno read: `root;outermost;...;innermost weight`. The weight is how many resources are
//! outstanding from that stack, and the root frame names what they are (`thread`, `fd:socket`,
//! `fd:pipe`, `waiter:futex`, ...), so one graph shows each kind side by side.
//!
//! The format has two separators: `;` between frames, and the last space before the weight.
//! Frame names are sanitized so that neither can be misread: `;` becomes `:` (as
//! `stackcollapse-perf.pl` does; `[u8; 8]` reads `[u8: 8]`), control characters such as newlines
//! become spaces, and names are trimmed. Spaces inside a name (`<T as Trait>::f`) are kept:
//! inferno takes the weight from the last space of the line. The one exception is a name whose
//! last word is a number (`f 2`): in the innermost frame the parser would take that word for a
//! second, differential count, so its last space becomes `_` (`f_2`).

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use anyhow::Context;
use inferno::flamegraph::{
    self,
    color::{BasicPalette, Palette},
    Options,
};

use crate::{
    model::{Finding, Frame, Resource},
    report::Located,
};

/// The only frame below the root of a finding whose stack is unknown.
pub const NO_STACK: &str = "[no stack]";

/// What the flame graph says when nothing is outstanding.
pub const NOTHING_OUTSTANDING: &str = "no outstanding resources";

/// Writes folded stacks (Brendan Gregg's format, readable by flamegraph.pl and inferno): one
/// line per distinct stack, `root;outer_frame;...;innermost_frame weight`, weighted by
/// `outstanding`, outermost first. The root frame names what is outstanding (`fd:socket`,
/// `thread`, `waiter:futex`, ...). Findings with nothing outstanding are left out, findings with
/// the same root and frames are merged (their weights summed), and lines are sorted, so the
/// output does not depend on the order of `findings`. No findings: no lines.
pub fn write_folded(out: &mut impl Write, findings: &[Located]) -> io::Result<()> {
    for (stack, weight) in fold(findings) {
        writeln!(out, "{stack} {weight}")?;
    }
    out.flush()
}

/// Writes an SVG flame graph (inferno's) of the lines [`write_folded`] writes, titled `title`,
/// the widths counting outstanding resources.
///
/// With nothing outstanding inferno has no graph to draw (it fails with "No stack counts
/// found"); a clean program still gets a file: a small SVG with the title and
/// [`NOTHING_OUTSTANDING`], and `Ok`.
pub fn write_flamegraph(out: impl Write, findings: &[Located], title: &str) -> anyhow::Result<()> {
    let mut out = out;
    let stacks = fold(findings);
    if stacks.is_empty() {
        write_empty_svg(&mut out, title).context("writing the flame graph")?;
        return Ok(());
    }
    let total = stacks
        .values()
        .fold(0u64, |sum, weight| sum.saturating_add(*weight));
    let lines: Vec<String> = stacks
        .iter()
        .map(|(stack, weight)| format!("{stack} {weight}"))
        .collect();
    let mut opt = Options::default();
    opt.title = title.to_owned();
    let plural = if stacks.len() == 1 { "" } else { "s" };
    opt.subtitle = Some(format!(
        "{total} outstanding from {} stack{plural}",
        stacks.len()
    ));
    opt.count_name = "outstanding".to_owned();
    // Green-blue, as flamegraph.pl's memory graphs; the same name always gets the same color.
    opt.colors = Palette::Basic(BasicPalette::Mem);
    opt.deterministic = true;
    flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), &mut out)
        .context("writing the flame graph")?;
    out.flush().context("writing the flame graph")?;
    Ok(())
}

/// The folded stacks of the findings with something outstanding, merged and sorted, each with
/// its summed weight.
fn fold(findings: &[Located]) -> BTreeMap<String, u64> {
    let mut stacks = BTreeMap::new();
    for Located {
        finding, frames, ..
    } in findings
    {
        if finding.outstanding == 0 {
            continue;
        }
        let mut stack = root(finding);
        if frames.is_empty() {
            stack.push(';');
            stack.push_str(NO_STACK);
        }
        // Frames are innermost first; folded stacks are outermost first.
        for frame in frames.iter().rev() {
            stack.push(';');
            stack.push_str(&frame_name(frame));
        }
        let weight: &mut u64 = stacks.entry(stack).or_default();
        *weight = weight.saturating_add(finding.outstanding);
    }
    stacks
}

/// The root frame: what is outstanding.
fn root(f: &Finding) -> String {
    match f.resource {
        Resource::Thread => "thread".to_owned(),
        Resource::Fd => match f.kind {
            Some(kind) => format!("fd:{}", kind.as_str()),
            None => "fd".to_owned(),
        },
        Resource::Waiter => match &f.waiter {
            Some(w) => format!("waiter:{}", w.kind.as_str()),
            None => "waiter".to_owned(),
        },
        Resource::Goroutine => "goroutine".to_owned(),
    }
}

/// The symbol, else `module+0xoffset`, else the address; sanitized for the folded format.
fn frame_name(frame: &Frame) -> String {
    let named = |name: String| Some(sanitize(&name)).filter(|n| !n.is_empty());
    frame
        .symbol
        .clone()
        .and_then(named)
        .or_else(|| {
            frame
                .module
                .as_ref()
                .and_then(|module| named(format!("{module}+{:#x}", frame.addr)))
        })
        .unwrap_or_else(|| format!("{:#x}", frame.addr))
}

/// Makes a name safe as one frame of a folded line (see the module documentation).
fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let mut cleaned = cleaned.trim().to_owned();
    // inferno splits counts off at ASCII spaces only.
    if let Some(space) = cleaned.rfind(' ') {
        if cleaned[space + 1..]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        {
            cleaned.replace_range(space..=space, "_");
        }
    }
    cleaned
}

/// A valid SVG that shows the title and says nothing is outstanding.
fn write_empty_svg(out: &mut impl Write, title: &str) -> io::Result<()> {
    const FONT: &str = r#"font-family="Verdana" text-anchor="middle""#;
    writeln!(out, r#"<?xml version="1.0" standalone="no"?>"#)?;
    writeln!(
        out,
        r#"<svg version="1.1" width="1200" height="90" viewBox="0 0 1200 90" xmlns="http://www.w3.org/2000/svg">"#
    )?;
    writeln!(
        out,
        r#"<rect x="0" y="0" width="100%" height="100%" fill="rgb(238,238,238)"/>"#
    )?;
    writeln!(
        out,
        r#"<text x="600" y="24" font-size="17" {FONT}>{}</text>"#,
        xml_escape(title)
    )?;
    writeln!(
        out,
        r#"<text x="600" y="60" font-size="12" {FONT}>{NOTHING_OUTSTANDING}</text>"#
    )?;
    writeln!(out, "</svg>")?;
    out.flush()
}

fn xml_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FdKind, Verdict, WaitKind, WaiterDetail};

    const TITLE: &str = "leaktrace: outstanding threads, fds and waiters";

    fn sym(name: &str) -> Frame {
        Frame {
            addr: 0x1000,
            symbol: Some(name.into()),
            module: Some("/bin/server".into()),
            ..Frame::default()
        }
    }

    /// `frames` innermost first, as the symbolizer gives them.
    fn located(
        resource: Resource,
        kind: Option<FdKind>,
        outstanding: u64,
        frames: &[Frame],
    ) -> Located {
        Located {
            finding: Finding {
                pid: 42,
                comm: "server".into(),
                resource,
                kind,
                stack: None,
                outstanding,
                created: outstanding,
                oldest_age_ns: 0,
                rate_per_s: 0.0,
                sample_path: None,
                exited: false,
                waiter: None,
                leak: None,
                goroutine: None,
            },
            frames: frames.to_vec(),
            origin: None,
            cycle_frames: Vec::new(),
            go: None,
        }
    }

    fn waiter(outstanding: u64, frames: &[Frame]) -> Located {
        let mut l = located(Resource::Waiter, None, outstanding, frames);
        l.finding.waiter = Some(WaiterDetail {
            kind: WaitKind::Futex,
            futex_address: 0x7f00_0000_1000,
            futex_addresses: 1,
            waiting_tids: vec![43, 44],
            verdict: Verdict::Growing,
            cycle: Vec::new(),
        });
        l
    }

    fn sample() -> Vec<Located> {
        vec![
            located(
                Resource::Fd,
                Some(FdKind::Socket),
                40,
                &[sym("server::leak_socket"), sym("server::main"), sym("main")],
            ),
            located(
                Resource::Thread,
                None,
                7,
                &[
                    sym("std::thread::spawn"),
                    sym("server::spawn_worker"),
                    sym("main"),
                ],
            ),
            waiter(
                2,
                &[
                    sym("__lll_lock_wait"),
                    sym("server::lock_forever"),
                    sym("main"),
                ],
            ),
            located(Resource::Fd, Some(FdKind::Pipe), 3, &[]),
        ]
    }

    fn folded(findings: &[Located]) -> String {
        let mut out = Vec::new();
        write_folded(&mut out, findings).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn flamegraph(findings: &[Located]) -> String {
        let mut out = Vec::new();
        write_flamegraph(&mut out, findings, TITLE).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Parses folded lines the way inferno does: the weight after the last space.
    fn weights(folded: &str) -> Vec<(&str, u64)> {
        folded
            .lines()
            .map(|line| {
                let (stack, weight) = line.rsplit_once(' ').unwrap();
                (stack, weight.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn lines_are_rooted_by_kind_and_outermost_first() {
        assert_eq!(
            folded(&sample()),
            "fd:pipe;[no stack] 3\n\
             fd:socket;main;server::main;server::leak_socket 40\n\
             thread;main;server::spawn_worker;std::thread::spawn 7\n\
             waiter:futex;main;server::lock_forever;__lll_lock_wait 2\n"
        );
    }

    #[test]
    fn folded_text_round_trips_through_inferno() {
        let text = folded(&sample());
        let mut opt = Options::default();
        let mut svg = Vec::new();
        flamegraph::from_lines(&mut opt, text.lines(), &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        // inferno counted every line, with the weight written: nothing was ignored or misread.
        assert!(svg.contains("all (52 samples, 100%)"), "{svg}");
        assert!(svg.contains("fd:socket (40 samples, 76.92%)"), "{svg}");
        assert!(svg.contains("server::leak_socket (40 samples"), "{svg}");
        assert!(svg.contains("[no stack] (3 samples"), "{svg}");
    }

    #[test]
    fn flame_graph_names_the_leak_and_its_kind() {
        let svg = flamegraph(&sample());
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains(TITLE), "{svg}");
        assert!(svg.contains("52 outstanding from 4 stacks"), "{svg}");
        assert!(svg.contains("server::leak_socket (40 outstanding"), "{svg}");
        assert!(svg.contains("fd:socket (40 outstanding"), "{svg}");
        assert!(svg.contains("thread (7 outstanding"), "{svg}");
        assert!(svg.contains("waiter:futex (2 outstanding"), "{svg}");
        assert!(svg.contains("all (52 outstanding, 100%)"), "{svg}");
    }

    #[test]
    fn weights_sum_to_outstanding() {
        let findings = sample();
        let text = folded(&findings);
        let total: u64 = weights(&text).iter().map(|(_, w)| w).sum();
        let outstanding: u64 = findings.iter().map(|l| l.finding.outstanding).sum();
        assert_eq!(total, outstanding);
    }

    #[test]
    fn identical_stacks_merge_and_nothing_outstanding_is_left_out() {
        let leak = [sym("server::leak_socket"), sym("main")];
        let mut other_process = located(Resource::Fd, Some(FdKind::Socket), 5, &leak);
        other_process.finding.pid = 99;
        let findings = [
            located(Resource::Fd, Some(FdKind::Socket), 40, &leak),
            other_process,
            // Same frames, other kind: its own line.
            located(Resource::Fd, Some(FdKind::Pipe), 2, &leak),
            // Drained: not in the graph.
            located(Resource::Thread, None, 0, &leak),
        ];
        assert_eq!(
            folded(&findings),
            "fd:pipe;main;server::leak_socket 2\n\
             fd:socket;main;server::leak_socket 45\n"
        );
    }

    #[test]
    fn order_of_findings_does_not_matter() {
        let mut reversed = sample();
        reversed.reverse();
        assert_eq!(folded(&sample()), folded(&reversed));
        assert_eq!(flamegraph(&sample()), flamegraph(&reversed));
    }

    #[test]
    fn frames_without_symbols_are_named_by_module_or_address() {
        let frames = [
            Frame {
                addr: 0xdead,
                ..Frame::default()
            },
            Frame {
                addr: 0x4a0,
                module: Some("/usr/lib/libc.so.6".into()),
                ..Frame::default()
            },
            Frame {
                addr: 0x10,
                symbol: Some(" \n".into()),
                module: Some("/bin/server".into()),
                ..Frame::default()
            },
        ];
        assert_eq!(
            folded(&[located(Resource::Thread, None, 1, &frames)]),
            "thread;/bin/server+0x10;/usr/lib/libc.so.6+0x4a0;0xdead 1\n"
        );
    }

    #[test]
    fn separators_are_sanitized_out_of_names() {
        assert_eq!(sanitize("f<[u8; 8]>"), "f<[u8: 8]>");
        assert_eq!(sanitize("a\nb\r\tc  \n"), "a b  c");
        assert_eq!(sanitize("<T as Trait>::f"), "<T as Trait>::f");
        assert_eq!(sanitize("f 2"), "f_2");
        assert_eq!(sanitize("f 1.5"), "f_1.5");
        assert_eq!(sanitize("f 2x"), "f 2x");
        assert_eq!(sanitize("42"), "42");

        let frames = [
            // Innermost: a last word that is a number must not read as a second count.
            sym("operator 7"),
            sym("<Vec<[u8; 8]> as Drop>::drop\nextra"),
            sym("main"),
        ];
        let text = folded(&[located(Resource::Fd, Some(FdKind::File), 3, &frames)]);
        assert_eq!(
            text,
            "fd:file;main;<Vec<[u8: 8]> as Drop>::drop extra;operator_7 3\n"
        );
        assert_eq!(text.lines().count(), 1);
        assert_eq!(weights(&text)[0].0.split(';').count(), 4);

        let svg = flamegraph(&[located(Resource::Fd, Some(FdKind::File), 3, &frames)]);
        // Escaped by inferno, counted once, and not read as a differential graph.
        assert!(
            svg.contains("&lt;Vec&lt;[u8: 8]&gt; as Drop&gt;::drop extra (3 outstanding"),
            "{svg}"
        );
        assert!(svg.contains("operator_7 (3 outstanding, 100.00%)"), "{svg}");
        assert!(!svg.contains("ERROR"), "{svg}");

        // Why: unsanitized, inferno reads the `7` as a first count and the name as `operator`.
        let mut opt = Options::default();
        let mut raw = Vec::new();
        flamegraph::from_lines(&mut opt, ["fd:file;operator 7 3"], &mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        assert!(raw.contains("<title>operator (3 samples"), "{raw}");
    }

    #[test]
    fn nothing_outstanding_still_makes_an_svg() {
        // inferno itself refuses empty input; write_flamegraph must not.
        let mut opt = Options::default();
        assert!(flamegraph::from_lines(&mut opt, [], io::sink()).is_err());

        assert_eq!(folded(&[]), "");
        let drained = [located(Resource::Thread, None, 0, &[sym("main")])];
        assert_eq!(folded(&drained), "");
        for findings in [&[][..], &drained[..]] {
            let mut out = Vec::new();
            write_flamegraph(&mut out, findings, "leaks <&> \"here\"").unwrap();
            let svg = String::from_utf8(out).unwrap();
            assert!(svg.starts_with("<?xml"), "{svg}");
            assert!(svg.contains("<svg "), "{svg}");
            assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
            assert!(svg.contains(NOTHING_OUTSTANDING), "{svg}");
            assert!(
                svg.contains("leaks &lt;&amp;&gt; &quot;here&quot;"),
                "{svg}"
            );
        }
    }
}
