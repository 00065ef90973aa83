//! Blocked waiters: threads in futex waits that do not end, grouped by the stack they wait from.
//!
//! The kernel keeps every in-flight futex wait; each report interval the runtime scans it and
//! hands the waits to [`Waiters::observe`]. A wait at least [`WaiterLimits::min_wait_ns`] old is
//! a blocked waiter. Waiters are grouped by (process, stack), not by futex word: threads leaked
//! each parked on its own channel wait on as many words as there are threads, from one stack.
//! Each group gets a [`Verdict`]: a deadlock when one of its waiters is in a cycle of the
//! wait-for graph, growing when its count keeps increasing, else stuck.
//!
//! Pure: no I/O and no clock of its own, time comes from the caller. Everything kept is bounded
//! by [`WaiterLimits`]; what a bound turns away is counted in [`WaiterCounters`].

#[cfg(test)]
mod tests;

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
};

use crate::model::{
    CycleLink, Finding, Owner, Resource, StackRef, Verdict, Wait, WaitKind, WaiterDetail,
};

/// What counts as blocked, when a group is growing, and bounds on what is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaiterLimits {
    /// A wait younger than this is a thread doing its job (a contended lock, a pool between
    /// tasks), not a blocked waiter. It also keeps a racy owner read (the lock changing hands
    /// while it was read) from closing a cycle: a deadlock is only one once it lasts.
    pub min_wait_ns: u64,
    /// Span of scans a group's rate and growth are judged over. A group with no blocked waiter
    /// for this long is dropped: its history can no longer move a rate.
    pub window_ns: u64,
    /// Scan samples kept per group.
    pub max_samples: usize,
    pub max_groups: usize,
    /// Tids named per finding.
    pub max_tids_listed: usize,
    /// Samples in the window before a group can be growing: two points always make a line, a
    /// third shows a trend.
    pub growing_min_samples: usize,
    /// How many more waiters the latest scan must show than the window's first before a group
    /// is growing: one more is a pool thread that just went idle; a leak of one waiter every
    /// 200 ms, scanned every second, adds about five per scan.
    pub growing_min_increase: u64,
}

impl Default for WaiterLimits {
    fn default() -> Self {
        Self {
            min_wait_ns: 5_000_000_000,
            window_ns: 60_000_000_000,
            max_samples: 120,
            max_groups: 16384,
            max_tids_listed: 64,
            growing_min_samples: 3,
            growing_min_increase: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaiterCounters {
    pub scans: u64,
    /// New groups turned away because max_groups was hit, counted in every scan that turns one
    /// away.
    pub dropped_groups: u64,
    /// Blocked waiters of the latest scan whose group was turned away: the findings miss them.
    pub untracked_waiters: u64,
    /// Distinct deadlock cycles, each counted in the first scan that shows it.
    pub deadlocks_found: u64,
}

/// What makes blocked waiters one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    pid: u32,
    stack: Option<StackRef>,
}

/// A group's blocked waiters as the latest scan showed them; never empty.
#[derive(Debug)]
struct Latest {
    /// `(tid, since_ns)`: a wait is the same one from scan to scan while both are.
    waits: HashSet<(u32, u64)>,
    oldest_since_ns: u64,
    futex_address: u64,
    futex_addresses: usize,
    kind: WaitKind,
    /// Sorted, at most max_tids_listed.
    waiting_tids: Vec<u32>,
    /// Empty unless a waiter is in a deadlock: then its cycle, starting at that waiter.
    cycle: Vec<CycleLink>,
}

impl Latest {
    /// `waiters` sorted by tid.
    fn of(waiters: &[&Wait], cycle: Vec<CycleLink>, max_tids: usize) -> Option<Self> {
        let oldest_since_ns = waiters.iter().map(|w| w.since_ns).min()?;
        let addresses = tally(waiters.iter().map(|w| w.uaddr));
        Some(Self {
            waits: waiters.iter().map(|w| (w.tid, w.since_ns)).collect(),
            oldest_since_ns,
            futex_address: most_common(&addresses)?,
            futex_addresses: addresses.len(),
            kind: most_common(&tally(waiters.iter().map(|w| w.kind)))?,
            waiting_tids: waiters.iter().take(max_tids).map(|w| w.tid).collect(),
            cycle,
        })
    }
}

#[derive(Debug, Default)]
struct Group {
    /// None when the latest scan showed no blocked waiter here.
    latest: Option<Latest>,
    /// Waits that became blocked here while observed.
    created: u64,
    last_blocked_ns: u64,
    /// `(scan time, blocked waiters)` inside the window, oldest first.
    samples: VecDeque<(u64, u64)>,
}

impl Group {
    fn outstanding(&self) -> u64 {
        self.latest.as_ref().map_or(0, |l| l.waits.len() as u64)
    }

    /// One scan's waiters of this group (sorted by tid, maybe none).
    fn record(
        &mut self,
        now_ns: u64,
        waiters: &[&Wait],
        cycle: Vec<CycleLink>,
        limits: &WaiterLimits,
    ) {
        let latest = Latest::of(waiters, cycle, limits.max_tids_listed);
        let (now, before) = (latest.as_ref(), self.latest.as_ref());
        let new_waits = now.map_or(0, |now| match before {
            Some(before) => now.waits.difference(&before.waits).count(),
            None => now.waits.len(),
        });
        self.created += new_waits as u64;
        if latest.is_some() {
            self.last_blocked_ns = now_ns;
        }
        self.latest = latest;
        self.samples.push_back((now_ns, self.outstanding()));
        let window_start = now_ns.saturating_sub(limits.window_ns);
        while self.samples.len() > limits.max_samples
            || self.samples.front().is_some_and(|&(t, _)| t < window_start)
        {
            self.samples.pop_front();
        }
    }

    /// Least-squares slope of the blocked count over the kept samples, per second.
    fn rate_per_s(&self) -> f64 {
        crate::trend::slope_per_s(self.samples.iter())
    }

    /// Over how many scans the current waiters became blocked. A pool that went idle at once
    /// can straddle one scan (half its waiters past min-wait, half not) and look like growth
    /// in the counts; a leak adds waiters scan after scan.
    fn blocking_scans(&self, latest: &Latest, limits: &WaiterLimits) -> usize {
        let scans: Vec<u64> = self.samples.iter().map(|&(t, _)| t).collect();
        let mut first_counted: Vec<usize> = latest
            .waits
            .iter()
            .map(|&(_, since)| {
                scans.partition_point(|&t| t < since.saturating_add(limits.min_wait_ns))
            })
            .collect();
        first_counted.sort_unstable();
        first_counted.dedup();
        first_counted.len()
    }

    fn verdict(&self, latest: &Latest, limits: &WaiterLimits) -> Verdict {
        if !latest.cycle.is_empty() {
            return Verdict::Deadlock;
        }
        let (Some(&(_, first)), Some(&(_, last))) = (self.samples.front(), self.samples.back())
        else {
            return Verdict::Stuck;
        };
        let growing = self.samples.len() >= limits.growing_min_samples
            && self.rate_per_s() > 0.0
            && last >= first.saturating_add(limits.growing_min_increase)
            && self.blocking_scans(latest, limits) >= limits.growing_min_samples;
        if growing {
            Verdict::Growing
        } else {
            Verdict::Stuck
        }
    }
}

/// Blocked waiters of every process, by (process, stack); see the module docs.
pub struct Waiters {
    limits: WaiterLimits,
    groups: HashMap<GroupKey, Group>,
    /// Blocked waiters per process in the latest scan, tracked group or not.
    per_process: BTreeMap<u32, u64>,
    /// The latest scan's cycles as (pid, tids from the smallest): a cycle shown again is not
    /// a new deadlock.
    deadlocks: HashSet<(u32, Vec<u32>)>,
    counters: WaiterCounters,
}

impl Waiters {
    pub fn new(limits: WaiterLimits) -> Self {
        Self {
            limits,
            groups: HashMap::new(),
            per_process: BTreeMap::new(),
            deadlocks: HashSet::new(),
            counters: WaiterCounters::default(),
        }
    }

    /// One scan: every in-flight wait at `now_ns` (all processes). Waits younger than
    /// min_wait_ns are not blocked waiters and are ignored. Records one sample per group.
    pub fn observe(&mut self, now_ns: u64, waits: &[Wait]) {
        self.counters.scans += 1;
        let min_wait_ns = self.limits.min_wait_ns;
        let mut blocked: Vec<&Wait> = waits
            .iter()
            .filter(|w| now_ns.saturating_sub(w.since_ns) >= min_wait_ns)
            .collect();
        // By tid within a process: groups list their tids sorted, and a tid listed twice is one
        // waiter (a thread waits on one futex at a time).
        blocked.sort_by_key(|w| (w.pid, w.tid));
        blocked.dedup_by_key(|w| (w.pid, w.tid));

        let cycles = cycles_of(&blocked);
        self.note_deadlocks(&cycles);
        let in_cycle: HashMap<(u32, u32), (usize, usize)> = cycles
            .iter()
            .enumerate()
            .flat_map(|(c, (pid, links))| {
                let at = links.iter().enumerate();
                at.map(move |(position, link)| ((*pid, link.tid), (c, position)))
            })
            .collect();
        // The cycle through the group's first waiter that is in one, starting at that waiter.
        let cycle_through = |waiters: &[&Wait]| -> Vec<CycleLink> {
            let found = waiters
                .iter()
                .find_map(|w| in_cycle.get(&(w.pid, w.tid)))
                .and_then(|&(c, position)| Some((cycles.get(c)?, position)));
            let Some(((_, links), position)) = found else {
                return Vec::new();
            };
            let mut cycle = links.clone();
            cycle.rotate_left(position);
            cycle
        };

        self.per_process.clear();
        let mut scan: BTreeMap<GroupKey, Vec<&Wait>> = BTreeMap::new();
        for wait in blocked {
            *self.per_process.entry(wait.pid).or_default() += 1;
            let key = GroupKey {
                pid: wait.pid,
                stack: wait.stack,
            };
            scan.entry(key).or_default().push(wait);
        }

        // Every tracked group gets a sample, an empty one when none of its waiters is blocked.
        for (key, group) in &mut self.groups {
            let waiters = scan.remove(key).unwrap_or_default();
            group.record(now_ns, &waiters, cycle_through(&waiters), &self.limits);
        }
        // Expired groups first: the room they leave goes to this scan's new ones.
        let window_ns = self.limits.window_ns;
        self.groups.retain(|_, group| {
            group.latest.is_some() || now_ns.saturating_sub(group.last_blocked_ns) < window_ns
        });
        self.counters.untracked_waiters = 0;
        for (key, waiters) in scan {
            if self.groups.len() >= self.limits.max_groups {
                self.counters.dropped_groups += 1;
                self.counters.untracked_waiters += waiters.len() as u64;
                continue;
            }
            let mut group = Group::default();
            group.record(now_ns, &waiters, cycle_through(&waiters), &self.limits);
            self.groups.insert(key, group);
        }
    }

    /// Findings from the latest scan: one per group with blocked waiters, deadlocks first, then
    /// growing, then stuck; within a verdict by outstanding descending, oldest first. `comm`
    /// names a process. Rates and verdicts are over the samples the latest scan kept;
    /// `now_ns` only ages the waiters.
    pub fn findings(&self, now_ns: u64, comm: &dyn Fn(u32) -> String) -> Vec<Finding> {
        // Asked once per process: a process often has many groups.
        let mut names: HashMap<u32, String> = HashMap::new();
        let mut findings: Vec<Finding> = self
            .groups
            .iter()
            .filter_map(|(key, group)| {
                let latest = group.latest.as_ref()?;
                Some(Finding {
                    pid: key.pid,
                    comm: names
                        .entry(key.pid)
                        .or_insert_with(|| comm(key.pid))
                        .clone(),
                    resource: Resource::Waiter,
                    kind: None,
                    stack: key.stack,
                    outstanding: group.outstanding(),
                    created: group.created,
                    oldest_age_ns: now_ns.saturating_sub(latest.oldest_since_ns),
                    rate_per_s: group.rate_per_s(),
                    sample_path: None,
                    exited: false,
                    leak: None,
                    goroutine: None,
                    waiter: Some(WaiterDetail {
                        kind: latest.kind,
                        futex_address: latest.futex_address,
                        futex_addresses: latest.futex_addresses,
                        waiting_tids: latest.waiting_tids.clone(),
                        verdict: group.verdict(latest, &self.limits),
                        cycle: latest.cycle.clone(),
                    }),
                })
            })
            .collect();
        findings.sort_by(rank);
        findings
    }

    /// Blocked waiters per process in the latest scan (for the per-process summary), counting
    /// those of groups a bound turned away.
    pub fn blocked_per_process(&self) -> BTreeMap<u32, u64> {
        self.per_process.clone()
    }

    /// The process exited: its waiters are gone with it.
    pub fn forget_process(&mut self, pid: u32) {
        self.groups.retain(|key, _| key.pid != pid);
        self.per_process.remove(&pid);
        self.deadlocks.retain(|(p, _)| *p != pid);
    }

    pub fn counters(&self) -> WaiterCounters {
        self.counters
    }

    /// Counts the cycles the previous scan did not show.
    fn note_deadlocks(&mut self, cycles: &[(u32, Vec<CycleLink>)]) {
        let now: HashSet<(u32, Vec<u32>)> = cycles
            .iter()
            .map(|(pid, links)| (*pid, links.iter().map(|l| l.tid).collect()))
            .collect();
        self.counters.deadlocks_found += now.difference(&self.deadlocks).count() as u64;
        self.deadlocks = now;
    }
}

/// Cycles in the wait-for graph: a thread → the owner of the lock it waits on. Only edges with
/// a known owner count, and a cycle closes only through owners that are themselves waiting in
/// the same process. Each cycle once, starting at its smallest tid, in order of (pid, that tid).
/// A thread waiting on a lock it owns (a relock of a non-recursive mutex) is a cycle of one.
/// [`Waiters::observe`] passes only blocked waiters, so a cycle must last min_wait_ns.
pub fn deadlock_cycles(waits: &[Wait]) -> Vec<Vec<CycleLink>> {
    let waits: Vec<&Wait> = waits.iter().collect();
    cycles_of(&waits)
        .into_iter()
        .map(|(_, links)| links)
        .collect()
}

/// [`deadlock_cycles`], each with its pid.
fn cycles_of(waits: &[&Wait]) -> Vec<(u32, Vec<CycleLink>)> {
    let mut index: HashMap<(u32, u32), usize> = HashMap::with_capacity(waits.len());
    for (i, w) in waits.iter().enumerate() {
        // A tid listed twice: its first wait is the one edges lead to.
        index.entry((w.pid, w.tid)).or_insert(i);
    }
    let edge = |i: usize| -> Option<(&Wait, Owner, usize)> {
        let wait = *waits.get(i)?;
        let owner = wait.owner?;
        Some((wait, owner, *index.get(&(wait.pid, owner.tid))?))
    };

    // A thread waits on one futex at a time, so each has at most one edge: a walk from any
    // thread ends at a thread with no edge, at one an earlier walk went through, or in a cycle
    // it closes itself. `walk_of[i]` is the walk that reached thread i first (0: none yet).
    let mut walk_of = vec![0usize; waits.len()];
    let mut cycles = Vec::new();
    for start in 0..waits.len() {
        let walk = start + 1;
        let mut at = start;
        loop {
            if walk_of[at] != 0 {
                if walk_of[at] == walk {
                    cycles.push((waits[at].pid, cycle_from(at, &edge)));
                }
                break;
            }
            walk_of[at] = walk;
            match edge(at) {
                Some((_, _, next)) => at = next,
                None => break,
            }
        }
    }
    cycles.sort_by_key(|(pid, links)| (*pid, links.first().map(|l| l.tid)));
    cycles
}

/// The cycle through thread `start`, rotated to begin at its smallest tid.
fn cycle_from<'w>(
    start: usize,
    edge: &dyn Fn(usize) -> Option<(&'w Wait, Owner, usize)>,
) -> Vec<CycleLink> {
    let mut links = Vec::new();
    let mut at = start;
    while let Some((wait, owner, next)) = edge(at) {
        links.push(CycleLink {
            tid: wait.tid,
            waits_on: wait.uaddr,
            held_by: owner.tid,
            owner_source: owner.source,
            stack: wait.stack,
        });
        if next == start {
            break;
        }
        at = next;
    }
    let smallest = links
        .iter()
        .enumerate()
        .min_by_key(|(_, link)| link.tid)
        .map_or(0, |(position, _)| position);
    links.rotate_left(smallest);
    links
}

fn tally<T: Ord>(values: impl Iterator<Item = T>) -> BTreeMap<T, usize> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value).or_insert(0) += 1;
    }
    counts
}

/// The value counted most; ties go to the lowest, so the choice holds from scan to scan.
fn most_common<T: Copy>(counts: &BTreeMap<T, usize>) -> Option<T> {
    // max_by_key keeps the last of equal maxima: walked backwards, that is the lowest value.
    counts
        .iter()
        .rev()
        .max_by_key(|&(_, &count)| count)
        .map(|(&value, _)| value)
}

/// Deadlocks, then growing, then stuck; more waiters first, then older; then by identity so
/// findings keep their places from report to report.
fn rank(a: &Finding, b: &Finding) -> Ordering {
    let verdict = |f: &Finding| match f.waiter.as_ref().map(|w| w.verdict) {
        Some(Verdict::Deadlock) => 0,
        Some(Verdict::Growing) => 1,
        Some(Verdict::Stuck) | None => 2,
    };
    verdict(a)
        .cmp(&verdict(b))
        .then(b.outstanding.cmp(&a.outstanding))
        .then(b.oldest_age_ns.cmp(&a.oldest_age_ns))
        .then(a.pid.cmp(&b.pid))
        .then(a.stack.cmp(&b.stack))
}
