//! The aggregator: a pure state machine from events and /proc snapshots to findings.
//!
//! Per traced process it keeps every live thread, fd and goroutine with the user stack that
//! created it, counted in groups (process, resource, fd kind, stack). No I/O and no clock of its own: time
//! comes from the events, the snapshots and the caller. Everything it holds is bounded by
//! [`Limits`]; what a bound turns away is counted in [`AggregatorCounters`].
//!
//! Counts are not answers: every thread and fd finding carries a verdict ([`Trend`]). A group
//! whose outstanding count keeps rising over the rate window is a leak; one that is held but
//! flat (a connection pool) is stable; one that held objects long enough to be a finding and
//! drained is reported as released for one rate window, then dropped. See [`Limits`] for what
//! "keeps rising" takes.

mod group;
mod process;
#[cfg(test)]
mod tests;

use std::{
    cmp::Ordering,
    collections::{hash_map::Entry, HashMap, VecDeque},
    mem,
    sync::Arc,
};

use crate::{
    event::{Event, What},
    model::{Finding, ProcessSummary, Snapshot, StackId, StackRef, Trend},
};
use process::{Exited, Merge, Process};

/// Bounds on what the aggregator keeps, and what it takes for a group to be leaking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_processes: usize,
    /// Threads plus fds tracked per process.
    pub max_objects_per_process: usize,
    /// Exited processes whose findings are kept.
    pub max_exited: usize,
    /// Span of tick samples a group's rate and leak verdict are judged over; also how long a
    /// drained group is still reported as released (default 60 s: a dozen report intervals of
    /// 5 s, long enough for a slow leak to show, short enough that a leak that stopped is soon
    /// judged on what it does now).
    pub rate_window_ns: u64,
    /// Tick samples kept per group.
    pub max_samples: usize,
    /// Tick samples in the window before a group can be a leak, and tick intervals its
    /// outstanding objects must have been created over (default 3). Two points always make a
    /// line; a third shows a trend. Counting creation intervals too keeps a pool opened in one
    /// burst from being a leak when the burst straddles a tick: its counts rise across that tick
    /// (half the pool, then all of it) but it was made in two intervals, where a leak adds
    /// objects interval after interval. The same rule as the waiter analysis's growing groups.
    pub leak_min_samples: usize,
    /// How many more objects the window's latest sample must show than its first before a group
    /// is a leak (default 2). One more is a pool that grew on demand or a worker that just
    /// started; a leak of one object per report interval adds that within three intervals, and a
    /// positive slope alone would call a single late open a leak.
    pub leak_min_increase: u64,
    /// How long before a process's death (its group_dead exit, or its last thread's) a thread's
    /// exit is taken as part of that death (default 50 ms). exit_group makes the kernel run every
    /// thread's exit, each reported as an ordinary one, within microseconds to a few ms on a
    /// loaded machine; threads exiting that close to their process's death are held at exit, not
    /// released. When the exit_group call itself was seen, only the exits after it are: a program
    /// that starts and joins threads by the thousand a second ends hundreds within the window.
    pub exit_group_ns: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_processes: 4096,
            max_objects_per_process: 1_000_000,
            max_exited: 256,
            rate_window_ns: 60_000_000_000,
            max_samples: 120,
            leak_min_samples: 3,
            leak_min_increase: 2,
            exit_group_ns: 50_000_000,
        }
    }
}

#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct AggregatorCounters {
    /// Every disagreement between tracked state and /proc (or events that imply a missed one).
    pub resync_mismatches: u64,
    /// Closes of fds we did not know: normal right after start, counted, not an error.
    pub untracked_closes: u64,
    /// Objects not tracked because a bound was hit.
    pub dropped_objects: u64,
    /// Processes dropped because max_processes was hit, least recently active first.
    pub evicted_processes: u64,
    /// Processes events mentioned that were never seeded nor forked from a traced process.
    pub unseen_processes: u64,
    /// Ends of goroutines we did not see start: those from before tracing began.
    pub untracked_goroutine_exits: u64,
}

/// What processes hand back to the aggregator's caller.
#[derive(Debug, Default)]
struct Outbox {
    counters: AggregatorCounters,
    new_stacks: Vec<StackRef>,
    unseen: Vec<u32>,
    execs: Vec<u32>,
}

/// The live processes.
#[derive(Debug, Default)]
struct Live {
    processes: HashMap<u32, Process>,
    /// The exec generation a process reusing a pid starts at: one past its predecessor's, so a
    /// [`StackRef`] never names two address spaces. Keyed by pid, so bounded by the pid space.
    next_gen: HashMap<u32, u32>,
    /// Advances with every event and every new process; orders processes for eviction.
    activity: u64,
}

impl Live {
    fn first_gen(&self, pid: u32) -> u32 {
        self.next_gen.get(&pid).copied().unwrap_or(0)
    }

    /// Makes room for one more process.
    fn make_room(&mut self, limits: &Limits, out: &mut Outbox) {
        while self.processes.len() >= limits.max_processes.max(1) {
            let Some(lru) = self
                .processes
                .values()
                .min_by_key(|p| (p.last_active, p.pid))
                .map(|p| p.pid)
            else {
                return;
            };
            self.remove(lru);
            out.counters.evicted_processes += 1;
        }
    }

    fn insert(&mut self, process: Process, limits: &Limits, out: &mut Outbox) {
        self.make_room(limits, out);
        self.processes.insert(process.pid, process);
    }

    fn remove(&mut self, pid: u32) -> Option<Process> {
        let process = self.processes.remove(&pid)?;
        self.next_gen
            .insert(pid, process.exec_gen.saturating_add(1));
        Some(process)
    }

    /// The process `ev` happened in, made on the spot (and queued for seeding) if untracked.
    fn for_event(&mut self, ev: &Event, limits: &Limits, out: &mut Outbox) -> &mut Process {
        let full = self.processes.len() >= limits.max_processes.max(1);
        if full && !self.processes.contains_key(&ev.pid) {
            self.make_room(limits, out);
        }
        let activity = self.activity;
        let process = match self.processes.entry(ev.pid) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                out.counters.unseen_processes += 1;
                out.unseen.push(ev.pid);
                let first_gen = self.next_gen.get(&ev.pid).copied().unwrap_or(0);
                let max_objects = limits.max_objects_per_process;
                let process = Process::new(
                    ev.pid,
                    Arc::from(""),
                    first_gen,
                    activity,
                    max_objects,
                    limits.rate_window_ns,
                );
                let process = entry.insert(process);
                // The event's thread exists, though not where it came from.
                process.add_preexisting_thread(ev.tid, ev.ts_ns, out);
                process
            }
        };
        process.last_active = activity;
        process
    }
}

/// Live threads, fds and goroutines of every traced process, by creating stack; see the module
/// docs.
pub struct Aggregator {
    limits: Limits,
    live: Live,
    /// Oldest first.
    exited: VecDeque<Exited>,
    out: Outbox,
}

impl Aggregator {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            live: Live::default(),
            exited: VecDeque::new(),
            out: Outbox::default(),
        }
    }

    /// Starts tracking a process from a /proc snapshot: its threads and fds existed before
    /// tracing, have no stack and are marked preexisting. A process already tracked (events came
    /// first) keeps what the events made and gains what only the snapshot shows.
    pub fn seed(&mut self, snap: &Snapshot) {
        self.merge(snap, Merge::Seed);
    }

    pub fn apply(&mut self, ev: &Event) {
        self.live.activity += 1;
        let (limits, out) = (&self.limits, &mut self.out);
        match ev.what {
            What::ThreadExit { group_dead } => self.thread_exit(ev, group_dead),
            What::TaskNew {
                child_tid,
                thread: false,
                stack,
            } => self.fork(ev, child_tid, stack),
            What::TaskNew {
                child_tid,
                thread: true,
                stack,
            } => {
                let process = self.live.for_event(ev, limits, out);
                let stack = process.stack_ref(stack, out);
                process.add_thread(child_tid, stack, ev.ts_ns, out);
            }
            What::ExitGroup => {
                let process = self.live.for_event(ev, limits, out);
                process.exit_group_ns.get_or_insert(ev.ts_ns);
            }
            What::Exec => {
                let process = self.live.for_event(ev, limits, out);
                process.exec(ev.tid, ev.ts_ns, out);
                out.execs.push(ev.pid);
            }
            What::FdOpen {
                fds,
                kind,
                stack,
                ref path,
            } => {
                let process = self.live.for_event(ev, limits, out);
                process.open(fds, kind, stack, path.as_ref(), ev.ts_ns, out);
            }
            What::FdDup { fd, source, stack } => {
                let process = self.live.for_event(ev, limits, out);
                process.dup(fd, source, stack, ev.ts_ns, out);
            }
            What::FdClose { fd } => {
                let process = self.live.for_event(ev, limits, out);
                process.close(fd, ev.ts_ns, out);
            }
            What::FdCloseRange { first, last } => {
                let process = self.live.for_event(ev, limits, out);
                process.close_range(first, last, ev.ts_ns);
            }
            What::GoroutineNew {
                ref goroutine,
                stack,
            } => {
                let process = self.live.for_event(ev, limits, out);
                let stack = process.stack_ref(stack, out);
                process.add_goroutine(goroutine, stack, ev.ts_ns, out);
            }
            What::GoroutineExit { goid } => {
                let process = self.live.for_event(ev, limits, out);
                process.goroutine_exit(goid, ev.ts_ns, out);
            }
        }
    }

    /// Reconciles a tracked process with /proc; returns the mismatches found (also added to the
    /// counters). An untracked process is seeded.
    pub fn resync(&mut self, snap: &Snapshot) -> u64 {
        self.merge(snap, Merge::Resync)
    }

    /// The runtime saw the process vanish from /proc (e.g. a kernel without group_dead): it
    /// exited at `ts_ns`.
    pub fn process_gone(&mut self, pid: u32, ts_ns: u64) {
        self.exit(pid, ts_ns);
    }

    /// The kernel lost records of `pid` to a full ring buffer: marked incomplete for good (the
    /// next re-sync puts its counts right, but what the lost records created has no stack). A
    /// process not tracked yet is seeded from /proc when first seen: nothing to mark.
    pub fn records_lost(&mut self, pid: u32) {
        if let Some(process) = self.live.processes.get_mut(&pid) {
            process.incomplete = true;
        }
    }

    /// Records one sample of every group's outstanding count at `now_ns` (once per report
    /// interval): what rate_per_s is fitted to.
    pub fn tick(&mut self, now_ns: u64) {
        for process in self.live.processes.values_mut() {
            process.tick(now_ns, &self.limits);
        }
    }

    /// Groups with outstanding objects whose oldest live object is at least `min_age_ns` old,
    /// each leaking or stable, and groups that drained within the last rate window after holding
    /// an object that long, released (outstanding 0, aged as old as their oldest got). Live
    /// processes first, then exited ones (as they were at exit, verdicts included); within each,
    /// leaks, then stable, then released, each by outstanding descending, oldest first on ties.
    /// Preexisting objects are never findings. Called once per report interval: ages and
    /// verdicts are worked out here.
    pub fn findings(&self, now_ns: u64, min_age_ns: u64) -> Vec<Finding> {
        let mut live = Vec::new();
        for process in self.live.processes.values() {
            process.findings(now_ns, min_age_ns, &self.limits, &mut live);
        }
        live.sort_by(rank);
        let window_ns = self.limits.rate_window_ns;
        let mut exited: Vec<Finding> = self
            .exited
            .iter()
            .flat_map(|e| &e.findings)
            .filter(|frozen| {
                frozen
                    .drained_ns
                    .is_none_or(|drained_ns| now_ns.saturating_sub(drained_ns) <= window_ns)
            })
            .map(|frozen| &frozen.finding)
            .filter(|f| f.oldest_age_ns >= min_age_ns)
            .cloned()
            .collect();
        exited.sort_by(rank);
        live.append(&mut exited);
        live
    }

    /// Live and kept exited processes, by pid (an exited one before a live one reusing its pid).
    pub fn processes(&self) -> Vec<ProcessSummary> {
        let mut all: Vec<ProcessSummary> = self.exited.iter().map(|e| e.summary.clone()).collect();
        all.extend(self.live.processes.values().map(|p| p.summary(false)));
        all.sort_by_key(|s| s.pid);
        all
    }

    /// The [`StackRef`] of a stack captured in live process `pid` outside the event stream (a
    /// blocked waiter's), announced through [`Self::take_new_stacks`] like any other. None when
    /// the process is not tracked or there is no stack.
    pub fn stack_in(&mut self, pid: u32, id: Option<StackId>) -> Option<StackRef> {
        let process = self.live.processes.get_mut(&pid)?;
        process.stack_ref(id, &mut self.out)
    }

    /// Stacks seen for the first time since the last call, each once, so the runtime can capture
    /// their addresses while the process is alive.
    pub fn take_new_stacks(&mut self) -> Vec<StackRef> {
        mem::take(&mut self.out.new_stacks)
    }

    /// Pids events mentioned that were never seeded nor forked from a seeded process, each once:
    /// the runtime seeds them from /proc.
    pub fn take_unseen(&mut self) -> Vec<u32> {
        let mut pids = mem::take(&mut self.out.unseen);
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|pid| self.live.processes.get(pid).is_some_and(|p| !p.seeded));
        pids
    }

    /// Pids with an exec since the last call (or a fork of one) whose close-on-exec fds only a
    /// re-sync from /proc can remove.
    pub fn take_execs(&mut self) -> Vec<u32> {
        let mut pids = mem::take(&mut self.out.execs);
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|pid| {
            self.live
                .processes
                .get(pid)
                .is_some_and(|p| p.exec_ns.is_some())
        });
        pids
    }

    /// The name of a live process.
    pub fn comm(&self, pid: u32) -> Option<&str> {
        self.live.processes.get(&pid).map(|p| &*p.comm)
    }

    pub fn is_live(&self, pid: u32) -> bool {
        self.live.processes.contains_key(&pid)
    }

    pub fn live_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.live.processes.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    pub fn counters(&self) -> &AggregatorCounters {
        &self.out.counters
    }

    fn merge(&mut self, snap: &Snapshot, how: Merge) -> u64 {
        if let Some(process) = self.live.processes.get_mut(&snap.pid) {
            return process.merge(snap, how, &mut self.out);
        }
        // A snapshot taken before an exit we applied since is stale, not a new process.
        let exited_since = self
            .exited
            .iter()
            .any(|e| e.summary.pid == snap.pid && e.exit_ns > snap.started_ns);
        if exited_since {
            return 0;
        }
        let comm = Arc::from(snap.comm.as_str());
        let first_gen = self.live.first_gen(snap.pid);
        let max_objects = self.limits.max_objects_per_process;
        // A new process counts as active: it is not the next one evicted.
        self.live.activity += 1;
        let mut process = Process::new(
            snap.pid,
            comm,
            first_gen,
            self.live.activity,
            max_objects,
            self.limits.rate_window_ns,
        );
        process.merge(snap, Merge::Seed, &mut self.out);
        self.live.insert(process, &self.limits, &mut self.out);
        0
    }

    fn thread_exit(&mut self, ev: &Event, group_dead: Option<bool>) {
        // An exit of an untracked process (or a late one of a process that already died) has
        // nothing left to track.
        let Some(process) = self.live.processes.get_mut(&ev.pid) else {
            return;
        };
        process.last_active = self.live.activity;
        let process_exit = group_dead.unwrap_or_else(|| process.last_thread_is(ev.tid));
        process.thread_exit(ev.tid, ev.ts_ns, process_exit, &self.limits);
        if process_exit {
            self.exit(ev.pid, ev.ts_ns);
        }
    }

    fn fork(&mut self, ev: &Event, child_pid: u32, stack: Option<StackId>) {
        let (limits, out) = (&self.limits, &mut self.out);
        // The child's own events came first: it is tracked (and queued for seeding) already.
        let child_known = self.live.processes.contains_key(&child_pid);
        let first_gen = self.live.first_gen(child_pid);
        let activity = self.live.activity + 1;
        let parent = self.live.for_event(ev, limits, out);
        let stack = parent.stack_ref(stack, out);
        if child_known {
            return;
        }
        let child = parent.fork(child_pid, stack, ev.ts_ns, first_gen, activity, out);
        self.live.activity = activity;
        if !child.seeded {
            out.unseen.push(child_pid);
        }
        if child.exec_ns.is_some() {
            out.execs.push(child_pid);
        }
        self.live.insert(child, limits, out);
    }

    /// The kernel closed everything the process held without close calls: keep what it held,
    /// as it was at `ts_ns`, and drop its live state.
    fn exit(&mut self, pid: u32, ts_ns: u64) {
        let Some(process) = self.live.remove(pid) else {
            return;
        };
        self.exited.push_back(process.freeze(ts_ns, &self.limits));
        while self.exited.len() > self.limits.max_exited {
            self.exited.pop_front();
        }
    }
}

/// Order within the live findings and within the exited ones: leaks, stable, released; then
/// outstanding descending, oldest first, then by identity so equal findings keep their places
/// from report to report.
fn rank(a: &Finding, b: &Finding) -> Ordering {
    let trend = |f: &Finding| match f.leak.as_ref().map(|leak| leak.trend) {
        Some(Trend::Leak) => 0,
        Some(Trend::Stable) => 1,
        Some(Trend::Released) => 2,
        None => 3,
    };
    trend(a)
        .cmp(&trend(b))
        .then(b.outstanding.cmp(&a.outstanding))
        .then(b.oldest_age_ns.cmp(&a.oldest_age_ns))
        .then(a.pid.cmp(&b.pid))
        .then(a.resource.cmp(&b.resource))
        .then(a.kind.cmp(&b.kind))
        .then(a.stack.cmp(&b.stack))
}
