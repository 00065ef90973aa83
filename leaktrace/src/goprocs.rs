//! Go processes among the traced ones: which binary each runs, the goroutine probes attached to
//! that binary, and what a goroutine finding needs from both — names from the binary's
//! `.gopclntab`, and the goroutines' states read from the process's memory.
//!
//! Probes are attached per traced process, or, system-wide, once per binary (by device and
//! inode) for every process running it.

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap, VecDeque},
    fs,
    num::NonZeroU32,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use leaktrace_common::GoFields;

use crate::{
    goruntime::{self, GoBinary, GoFrame},
    loader::{GoLinks, Probes, Skipped},
    model::{Finding, Frame, GoPlace, GoroutineReport, WaitCount},
    procmem,
};

/// Binaries inspected at most (each holds its .gopclntab): the oldest inspected dropped first.
const MAX_BINARIES: usize = 256;
/// Sets of goroutine probes attached at once (two uprobes each). Per-process ones go with their
/// process; system-wide ones stay, one per Go binary ever run (every `go build` makes a new one),
/// so past this bound new binaries are not probed, and that is said.
const MAX_LINKS: usize = 1024;
/// Processes remembered at most, exited ones included (their findings outlive them).
const MAX_PROCESSES: usize = 4096;
/// `go` statements per process whose package is remembered (see [`GoProcesses::is_runtime_own`]).
const MAX_SITES: usize = 4096;

/// `(st_dev, st_ino)` of an executable.
type BinaryId = (u64, u64);

/// What inspecting one executable found.
enum Inspected {
    /// Not a Go binary: nothing to do.
    NotGo,
    Go(Arc<GoBinary>),
    /// A Go binary that cannot be probed (too old, unknown layout): said once, listed with the
    /// skipped probes.
    Unprobeable,
}

/// A traced process running a Go binary.
struct GoProcess {
    binary: Arc<GoBinary>,
    /// What to subtract from a runtime address for the binary's virtual address (PIE only).
    bias: u64,
    /// `go` statements seen, by address: whether they are in package runtime.
    runtime_sites: HashMap<u64, bool>,
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GoStats {
    /// Traced processes running a probed Go binary.
    pub processes: u64,
    /// Distinct Go binaries probed.
    pub binaries: u64,
    /// Goroutine states read for reports, and those that could not be (process gone, g reused).
    pub states_read: u64,
    pub states_unread: u64,
}

/// Whose goroutine probes a set of links is: a process's, or every process's ([`ALL`]).
type LinkKey = (BinaryId, u32);
const ALL: u32 = 0;

pub struct GoProcesses {
    /// Probes on every process running a binary (`--all`: one attach per binary), else on each
    /// traced process alone, so that untraced processes running the same binary do not take
    /// the breakpoints.
    everywhere: bool,
    binaries: HashMap<BinaryId, Inspected>,
    /// Inspection order, for dropping the oldest.
    binary_order: VecDeque<BinaryId>,
    /// Attached probes; None where attaching failed (not retried).
    links: HashMap<LinkKey, Option<GoLinks>>,
    /// The kernel refused a uprobe for want of privilege: no more attempts.
    denied: bool,
    /// [`MAX_LINKS`] was reached (said once).
    full: bool,
    /// Tracing has started: skipped probes are said as they come (before, the start-up message
    /// lists them).
    started: bool,
    processes: HashMap<u32, GoProcess>,
    process_order: VecDeque<u32>,
    stats: GoStats,
}

impl GoProcesses {
    pub fn new(everywhere: bool) -> Self {
        Self {
            everywhere,
            binaries: HashMap::new(),
            binary_order: VecDeque::new(),
            links: HashMap::new(),
            denied: false,
            full: false,
            started: false,
            processes: HashMap::new(),
            process_order: VecDeque::new(),
            stats: GoStats::default(),
        }
    }

    /// Notes what process `pid` runs now (call at start of tracing and after every exec);
    /// attaches the goroutine probes when it runs a Go binary.
    pub fn observe(&mut self, pid: u32, probes: &mut Probes) {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        // The file by its own name where that is still the same file: a short-lived process
        // is often gone before its binary is read and probed, and its /proc link with it.
        let named = fs::read_link(&exe)
            .ok()
            .filter(|path| same_file(path, &exe))
            .unwrap_or_else(|| exe.clone());
        let probed = self
            .binary(&named, probes)
            .filter(|(id, binary)| self.attach(*id, &named, binary, pid, probes));
        let Some((_, binary)) = probed else {
            self.processes.remove(&pid);
            return;
        };
        let bias = if binary.is_pie() {
            mapped_at(pid, &exe).map_or(0, |start| start.wrapping_sub(binary.image_base()))
        } else {
            0
        };
        let process = GoProcess {
            binary,
            bias,
            runtime_sites: HashMap::new(),
        };
        if self.processes.insert(pid, process).is_none() {
            self.stats.processes += 1;
            self.process_order.push_back(pid);
            while self.processes.len() > MAX_PROCESSES {
                let Some(oldest) = self.process_order.pop_front() else {
                    break;
                };
                self.processes.remove(&oldest);
            }
        }
    }

    /// Attaches the probes for process `pid` to `program` before the process execs it
    /// (`leaktrace -- CMD`), so that not even its first goroutines are missed.
    pub fn prepare(&mut self, program: &Path, pid: u32, probes: &mut Probes) {
        if let Some((id, binary)) = self.binary(program, probes) {
            self.attach(id, program, &binary, pid, probes);
        }
    }

    /// Detaches the probes of processes that are gone (`is_live` false): their links would
    /// only accumulate.
    pub fn prune(&mut self, is_live: impl Fn(u32) -> bool, probes: &mut Probes) {
        let gone: Vec<LinkKey> = self
            .links
            .keys()
            .filter(|&&(_, pid)| pid != ALL && !is_live(pid))
            .copied()
            .collect();
        for key in gone {
            if let Some(Some(links)) = self.links.remove(&key) {
                probes.detach_go(links);
            }
        }
    }

    /// The Go binary at `path`, inspected on first sight.
    fn binary(&mut self, path: &Path, probes: &mut Probes) -> Option<(BinaryId, Arc<GoBinary>)> {
        let meta = fs::metadata(path).ok()?;
        let id = (meta.dev(), meta.ino());
        if let Entry::Vacant(entry) = self.binaries.entry(id) {
            let inspected = match GoBinary::inspect(path) {
                Ok(None) => Inspected::NotGo,
                Ok(Some(binary)) => Inspected::Go(Arc::new(binary)),
                Err(e) => {
                    let name = format!("go:{}", path.display());
                    skip(self.started, probes, name, format!("{e:#}"));
                    Inspected::Unprobeable
                }
            };
            entry.insert(inspected);
            self.binary_order.push_back(id);
            while self.binaries.len() > MAX_BINARIES {
                let Some(oldest) = self.binary_order.pop_front() else {
                    break;
                };
                // Only the parse is dropped: processes running it keep theirs.
                self.binaries.remove(&oldest);
            }
        }
        match self.binaries.get(&id)? {
            Inspected::Go(binary) => Some((id, Arc::clone(binary))),
            Inspected::NotGo | Inspected::Unprobeable => None,
        }
    }

    /// Whether the goroutine probes are on `binary` for process `pid` (attached now if not yet).
    fn attach(
        &mut self,
        id: BinaryId,
        path: &Path,
        binary: &GoBinary,
        pid: u32,
        probes: &mut Probes,
    ) -> bool {
        let key = (id, if self.everywhere { ALL } else { pid });
        if let Some(links) = self.links.get(&key) {
            return links.is_some();
        }
        if self.denied {
            return false;
        }
        if self.links.len() >= MAX_LINKS {
            if !self.full {
                self.full = true;
                let reason = format!(
                    "{MAX_LINKS} Go binaries or processes probed already (the bound): {} and \
                     those after it are traced for threads and fds only",
                    path.display()
                );
                skip(self.started, probes, "go".into(), reason);
            }
            return false;
        }
        let shown = path.display().to_string();
        let layout = binary.layout;
        let fields = GoFields {
            goid: layout.goid,
            parent_goid: layout.parent_goid,
            gopc: layout.gopc,
            startpc: layout.startpc,
        };
        let scope = NonZeroU32::new(key.1);
        let links = match probes.attach_go(path, &shown, &binary.probes, fields, scope) {
            Ok(links) => {
                if !self.links.keys().any(|&(other, _)| other == id) {
                    self.stats.binaries += 1;
                    eprintln!(
                        "leaktrace: goroutine probes on {shown} ({}, runtime.g layout from {})",
                        binary.version,
                        match binary.layout_from {
                            goruntime::LayoutSource::Dwarf => "DWARF",
                            goruntime::LayoutSource::Table => "the table of known versions",
                        }
                    );
                }
                Some(links)
            }
            Err(e) if e.denied => {
                // Said once for all Go binaries, not once for each.
                self.denied = true;
                let reason = format!(
                    "goroutine probes need CAP_SYS_ADMIN (uprobes); Go processes are traced for \
                     threads and fds only ({})",
                    e.message
                );
                skip(self.started, probes, "go".into(), reason);
                None
            }
            Err(e) => {
                skip(self.started, probes, format!("go:{shown}"), e.message);
                None
            }
        };
        let attached = links.is_some();
        self.links.insert(key, links);
        attached
    }

    /// Whether a new goroutine of `pid` created at `gopc` is one of the Go runtime's own (its
    /// `go` statement is in package runtime: the main goroutine, the GC's and the finalizers'
    /// workers). Those are not the program's to leak and are not tracked.
    pub fn is_runtime_own(&mut self, pid: u32, gopc: u64) -> bool {
        let Some(process) = self.processes.get_mut(&pid) else {
            return false;
        };
        if let Some(&own) = process.runtime_sites.get(&gopc) {
            return own;
        }
        let own = gopc
            .checked_sub(process.bias + 1)
            .and_then(|pc| process.binary.frame(pc))
            .is_some_and(|site| site.function.starts_with("runtime."));
        if process.runtime_sites.len() < MAX_SITES {
            process.runtime_sites.insert(gopc, own);
        }
        own
    }

    /// A goroutine finding's stack from the `go` statement's function on: the frames above it
    /// are the runtime's own (`newproc` and the switch to the system stack).
    pub fn trim_creation(frames: &mut Vec<Frame>) {
        let runtime = frames
            .iter()
            .take_while(|f| {
                f.symbol
                    .as_deref()
                    .is_some_and(|s| s.starts_with("runtime."))
            })
            .count();
        if runtime < frames.len() {
            frames.drain(..runtime);
        }
    }

    /// From now on skipped probes are said when they happen.
    pub fn started(&mut self) {
        self.started = true;
    }

    pub fn stats(&self) -> GoStats {
        self.stats.clone()
    }

    /// What a goroutine finding shows: where its goroutines were created and what started
    /// them, named from the binary, and what they are waiting for now, read from the process.
    /// `frames` is the goroutines' creation stack, `lineage` the creation stacks of their
    /// ancestors, nearest first, all symbolized. None for a process not known to run Go.
    pub fn describe(
        &mut self,
        finding: &Finding,
        frames: &[Frame],
        lineage: &[Vec<Frame>],
    ) -> Option<GoroutineReport> {
        let detail = finding.goroutine.as_ref()?;
        let process = self.processes.get(&finding.pid)?;
        let binary = &process.binary;
        let place = |pc: u64| -> Option<GoPlace> {
            binary
                .frame(pc.checked_sub(process.bias)?)
                .map(GoPlace::from)
        };
        // gopc is a return address: the call is the instruction before it.
        let created_at = detail.gopc.checked_sub(1).and_then(place);
        let start = place(detail.startpc);
        let caused_by = caused_by(created_at.as_ref(), frames, lineage);
        let mut waits: BTreeMap<String, u64> = BTreeMap::new();
        let mut read = 0;
        if !finding.exited {
            for &(goid, g) in &detail.live {
                if let Some(state) = state(finding.pid, binary, goid, g) {
                    *waits.entry(state).or_default() += 1;
                    read += 1;
                }
            }
        }
        self.stats.states_read += read;
        self.stats.states_unread += detail.live.len() as u64 - read;
        let mut waits: Vec<WaitCount> = waits
            .into_iter()
            .map(|(reason, count)| WaitCount { reason, count })
            .collect();
        waits.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        Some(GoroutineReport {
            go: binary.version.to_string(),
            created_at,
            start,
            caused_by,
            waits,
            unread: finding.outstanding.saturating_sub(read),
        })
    }

    /// Names the frames of a Go binary that the symbolizer could not name (a stripped binary
    /// has no symbol table, but always its .gopclntab).
    pub fn name_frames(&self, pid: u32, frames: &mut [Frame]) {
        let Some(process) = self.processes.get(&pid) else {
            return;
        };
        for (i, frame) in frames.iter_mut().enumerate() {
            if frame.symbol.is_some() {
                continue;
            }
            // Every frame but the innermost is a return address.
            let pc = frame.addr.saturating_sub(u64::from(i > 0));
            let Some(found) = pc
                .checked_sub(process.bias)
                .and_then(|pc| process.binary.frame(pc))
            else {
                continue;
            };
            frame.symbol = Some(found.function);
            frame.file = Some(found.file);
            frame.line = Some(found.line);
        }
    }
}

/// Goroutine probes that cannot go on: listed with the skipped probes, and said now once tracing
/// has `started` (the start-up message lists those before).
fn skip(started: bool, probes: &mut Probes, name: String, reason: String) {
    if started {
        eprintln!("leaktrace: skipped {name}: {reason}");
    }
    probes.skipped.push(Skipped { name, reason });
}

impl From<GoFrame> for GoPlace {
    fn from(frame: GoFrame) -> Self {
        Self {
            function: frame.function,
            file: Some(frame.file),
            line: Some(frame.line),
        }
    }
}

/// For goroutines whose `go` statement (`created_at`) is the standard library's, the user code
/// that called into it: the first frame outside the standard library on their creation stack
/// (`frames`: os/exec's copiers), else on an ancestor's (`lineage`: net/http's connection loops,
/// started by a dialer goroutine the request started). None when the program's own code ran the
/// `go` statement, or no user frame is known.
fn caused_by(
    created_at: Option<&GoPlace>,
    frames: &[Frame],
    lineage: &[Vec<Frame>],
) -> Option<GoPlace> {
    if created_at.is_some_and(|site| !goruntime::is_std(&site.function)) {
        return None;
    }
    let stacks = std::iter::once(frames).chain(lineage.iter().map(Vec::as_slice));
    stacks.flatten().find_map(|frame| {
        let symbol = frame.symbol.as_deref()?;
        (!goruntime::is_std(symbol)).then(|| GoPlace {
            function: symbol.to_owned(),
            file: frame.file.clone(),
            line: frame.line,
        })
    })
}

/// What goroutine `goid` at `g` is doing: its wait reason while it waits, else its status.
/// None when its g cannot be read or holds another goroutine now (it ended since the report's
/// snapshot, and the runtime reused the g).
fn state(pid: u32, binary: &GoBinary, goid: u64, g: u64) -> Option<String> {
    let layout = binary.layout;
    let end = [
        layout.goid + 8,
        layout.atomicstatus + 4,
        layout.waitreason + 1,
    ]
    .into_iter()
    .max()
    .unwrap_or(0);
    let mut buf = vec![0u8; usize::from(end)];
    procmem::read(pid, g, &mut buf).ok()?;
    let at = |offset: u16, len: usize| &buf[usize::from(offset)..usize::from(offset) + len];
    let read_goid = u64::from_ne_bytes(at(layout.goid, 8).try_into().ok()?);
    if read_goid != goid {
        return None;
    }
    let status = u32::from_ne_bytes(at(layout.atomicstatus, 4).try_into().ok()?);
    let name = goruntime::status_name(status);
    if name != "waiting" {
        return Some(name.to_owned());
    }
    let reason = at(layout.waitreason, 1)[0];
    Some(
        binary
            .wait_reason(reason)
            .map_or_else(|| format!("waiting ({reason})"), str::to_owned),
    )
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Where process `pid` mapped offset 0 of its executable.
fn mapped_at(pid: u32, exe: &Path) -> Option<u64> {
    let target = fs::read_link(exe).ok()?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
        let path = fields.nth(2)?;
        (Path::new(path) == target && offset == 0)
            .then(|| u64::from_str_radix(range.split('-').next()?, 16).ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: &str) -> Frame {
        Frame {
            symbol: Some(symbol.to_owned()),
            file: Some("x.go".to_owned()),
            line: Some(7),
            ..Frame::default()
        }
    }

    fn place(function: &str) -> GoPlace {
        GoPlace {
            function: function.to_owned(),
            file: Some("x.go".to_owned()),
            line: Some(7),
        }
    }

    #[test]
    fn the_library_s_goroutines_are_blamed_on_the_nearest_user_frame() {
        // os/exec: the user frame is on the goroutines' own creation stack.
        let exec = [frame("os/exec.(*Cmd).Start"), frame("main.leakExecNoWait")];
        let site = place("os/exec.(*Cmd).Start");
        assert_eq!(
            caused_by(Some(&site), &exec, &[]).map(|p| p.function),
            Some("main.leakExecNoWait".to_owned())
        );
        // net/http: only the library's frames on their own stack and their parent's; the
        // grandparent's has the request.
        let own = [frame("net/http.(*Transport).dialConn")];
        let lineage = vec![
            vec![frame("net/http.(*Transport).queueForDial")],
            vec![frame("net/http.(*Client).Get"), frame("main.leakHTTPBody")],
        ];
        let site = place("net/http.(*Transport).dialConn");
        assert_eq!(
            caused_by(Some(&site), &own, &lineage).map(|p| p.function),
            Some("main.leakHTTPBody".to_owned())
        );
        // The program's own go statement needs no cause; nor is one made up.
        assert_eq!(caused_by(Some(&place("main.leak")), &exec, &lineage), None);
        assert_eq!(caused_by(Some(&site), &own, &[]), None);
    }

    #[test]
    fn creation_stacks_start_at_the_go_statement() {
        let mut frames = vec![
            frame("runtime.newproc.func1"),
            frame("runtime.systemstack.abi0"),
            frame("main.leak"),
            frame("runtime.goexit.abi0"),
        ];
        GoProcesses::trim_creation(&mut frames);
        let names: Vec<_> = frames.iter().filter_map(|f| f.symbol.as_deref()).collect();
        assert_eq!(names, ["main.leak", "runtime.goexit.abi0"]);
        // All the runtime's (its own goroutines): kept whole.
        let mut runtime = vec![frame("runtime.newproc"), frame("runtime.main")];
        GoProcesses::trim_creation(&mut runtime);
        assert_eq!(runtime.len(), 2);
    }
}
