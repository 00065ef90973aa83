//! One traced process: its live threads and fds, each with the group (creating stack) it counts
//! in, and what it takes to keep that true across forks, execs and /proc snapshots.

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use super::{
    group::{GroupKey, Groups, PathId, Paths, Slot},
    Limits, Outbox,
};
use crate::{
    event::{FdPair, Goroutine, Path},
    model::{
        FdKind, Finding, GoroutineDetail, LeakDetail, ProcessSummary, Resource, Snapshot, StackId,
        StackRef, Trend,
    },
};

/// Tombstones one generation holds before it is rotated out early.
const MAX_TOMBSTONES: usize = 65_536;
/// `close_range` calls one generation remembers.
const MAX_RANGE_TOMBSTONES: usize = 64;
/// Recent thread exits a process remembers (see [`RecentExit`]).
const MAX_RECENT_EXITS: usize = 4096;
/// Ancestors' creation stacks a goroutine site keeps (see [`GoSite::lineage`]): the standard
/// library's own goroutines are at most a few generations from the user code (net/http's
/// connection loops: two).
const MAX_LINEAGE: usize = 4;

/// A monotonic ns time in two u32 halves: 4-byte aligned, so a thread or fd entry with its
/// 4-byte key packs into 20 or 28 bytes, where a u64's alignment pads them to 24 and 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ns([u32; 2]);

impl Ns {
    fn new(ns: u64) -> Self {
        Self([(ns >> 32) as u32, ns as u32])
    }

    fn get(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }
}

// Every tracked thread and fd is one of these in a hash map: kept small (see `Ns`, `PathId`).
#[derive(Debug)]
pub(super) struct Thread {
    created: Ns,
    /// None: existed before tracing (seen in /proc only), so never a finding.
    pub group: Option<Slot>,
}

impl Thread {
    fn new(created_ns: u64, group: Option<Slot>) -> Self {
        Self {
            created: Ns::new(created_ns),
            group,
        }
    }

    pub fn created_ns(&self) -> u64 {
        self.created.get()
    }
}

#[derive(Debug)]
pub(super) struct Fd {
    created: Ns,
    /// None: existed before tracing (seen in /proc only), so never a finding.
    pub group: Option<Slot>,
    /// As the creating syscall guessed it until a snapshot says otherwise.
    pub kind: FdKind,
    /// In the process's `paths`, which counts this fd as one of its holders.
    pub path: Option<PathId>,
}

impl Fd {
    fn new(created_ns: u64, group: Option<Slot>, kind: FdKind, path: Option<PathId>) -> Self {
        Self {
            created: Ns::new(created_ns),
            group,
            kind,
            path,
        }
    }

    pub fn created_ns(&self) -> u64 {
        self.created.get()
    }
}

/// A live goroutine, by goid in [`Process::goroutines`].
#[derive(Debug)]
pub(super) struct LiveGoroutine {
    created: Ns,
    pub group: Slot,
    /// Where its `runtime.g` is, for reading its state.
    pub g: u64,
}

/// Where the goroutines of one creation stack come from: the same for every goroutine of the
/// stack (a stack ends in its `go` statement), so kept once per stack, not per goroutine.
#[derive(Debug)]
pub(super) struct GoSite {
    gopc: u64,
    startpc: u64,
    /// The creation stack of the goroutine that ran the `go` statement, then its creator's, …
    /// (as first seen for this stack): a goroutine the standard library starts has no user frame
    /// of its own, but an ancestor has.
    lineage: Box<[StackRef]>,
}

/// A thread's ordinary exit, kept for the aggregator's exit_group window: if the process dies
/// within it, the exit was part of that death and the thread is held at exit after all.
#[derive(Debug)]
struct RecentExit {
    tid: u32,
    created_ns: u64,
    /// The group it was released from, with its key: the slot may have been reused since.
    group: Option<(Slot, GroupKey)>,
    exit_ns: u64,
}

/// How a snapshot is merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Merge {
    /// Add what /proc shows and we do not track: the events already applied stay as they are.
    Seed,
    /// Also remove what /proc no longer shows, and count every disagreement.
    Resync,
}

#[derive(Debug)]
pub(super) struct Process {
    pub pid: u32,
    pub comm: Arc<str>,
    /// Snapshots started before this are stale for `comm` (an exec renamed the process since).
    comm_ns: u64,
    pub exec_gen: u32,
    /// What existed before tracing is known: seeded from /proc, or forked from a process whose
    /// was. Until then threads and fds may be missing, so an empty thread set proves nothing.
    pub seeded: bool,
    /// Threads plus fds tracked at most (the aggregator's max_objects_per_process).
    max_objects: usize,
    /// The aggregator's rate window.
    rate_window_ns: u64,
    /// Some object went untracked because `max_objects` was hit.
    pub incomplete: bool,
    /// The aggregator's activity count at this process's last event: orders processes for eviction.
    pub last_active: u64,
    /// An exec whose close-on-exec closes no snapshot has shown yet: fds from before it may be
    /// gone without a close.
    pub exec_ns: Option<u64>,
    /// When a thread called exit_group: the exits after it are the process's death.
    pub exit_group_ns: Option<u64>,
    pub threads: HashMap<u32, Thread>,
    pub fds: HashMap<i32, Fd>,
    /// Live goroutines created while traced, by goid.
    pub goroutines: HashMap<u64, LiveGoroutine>,
    /// By creation stack (None: no stack), for the current image; bounded like `stacks`.
    go_sites: HashMap<Option<StackRef>, GoSite>,
    /// The paths `fds` hold: every fd removed releases its path.
    paths: Paths,
    pub groups: Groups,
    /// Stack ids already announced for the current exec generation; ids index the kernel's
    /// stack map, so this stays within its size.
    stacks: HashSet<StackId>,
    pub thread_exits: Tombstones,
    pub fd_closes: Tombstones,
    /// Ordinary thread exits within the last exit_group window, oldest first.
    recent_exits: VecDeque<RecentExit>,
    /// The process died with its main thread's exit (see [`Self::thread_exit`]): whether that
    /// thread was preexisting.
    died_with: Option<bool>,
}

impl Process {
    pub fn new(
        pid: u32,
        comm: Arc<str>,
        exec_gen: u32,
        activity: u64,
        max_objects: usize,
        rate_window_ns: u64,
    ) -> Self {
        Self {
            pid,
            comm,
            comm_ns: 0,
            exec_gen,
            seeded: false,
            max_objects,
            rate_window_ns,
            incomplete: false,
            last_active: activity,
            exec_ns: None,
            exit_group_ns: None,
            threads: HashMap::new(),
            fds: HashMap::new(),
            goroutines: HashMap::new(),
            go_sites: HashMap::new(),
            paths: Paths::default(),
            groups: Groups::new(rate_window_ns),
            stacks: HashSet::new(),
            thread_exits: Tombstones::default(),
            fd_closes: Tombstones::default(),
            recent_exits: VecDeque::new(),
            died_with: None,
        }
    }

    fn is_full(&self) -> bool {
        self.threads.len() + self.fds.len() + self.goroutines.len() >= self.max_objects
    }

    fn drop_object(&mut self, out: &mut Outbox) {
        self.incomplete = true;
        out.counters.dropped_objects += 1;
    }

    /// The stack as captured in this process's current image; announced the first time.
    pub fn stack_ref(&mut self, id: Option<StackId>, out: &mut Outbox) -> Option<StackRef> {
        let id = id?;
        let stack = StackRef {
            pid: self.pid,
            exec_gen: self.exec_gen,
            id,
        };
        if self.stacks.insert(id) {
            out.new_stacks.push(stack);
        }
        Some(stack)
    }

    /// A thread that exists but whose creation was not seen; true when it was added.
    pub fn add_preexisting_thread(&mut self, tid: u32, ts_ns: u64, out: &mut Outbox) -> bool {
        if self.threads.contains_key(&tid) {
            return false;
        }
        if self.is_full() {
            self.drop_object(out);
            return false;
        }
        self.threads.insert(tid, Thread::new(ts_ns, None));
        true
    }

    pub fn add_thread(&mut self, tid: u32, stack: Option<StackRef>, ts_ns: u64, out: &mut Outbox) {
        let full = self.is_full();
        let fresh = |groups: &mut Groups| {
            Thread::new(ts_ns, Some(groups.enter(GroupKey::thread(stack), ts_ns)))
        };
        match self.threads.entry(tid) {
            Entry::Occupied(mut entry) => {
                // A tid from /proc may be this very thread (the snapshot raced its creation);
                // a traced one still here means its exit was missed.
                let old = entry.get();
                if old.group.is_some() {
                    out.counters.resync_mismatches += 1;
                    self.groups.destroy(old.group, old.created_ns(), ts_ns);
                }
                entry.insert(fresh(&mut self.groups));
            }
            Entry::Vacant(_) if full => self.drop_object(out),
            Entry::Vacant(entry) => {
                entry.insert(fresh(&mut self.groups));
            }
        }
    }

    /// Thread `tid` exited at `ts_ns`. The last thread's exit is the process's: it and what goes
    /// with it are held at exit, not released. Any other exit releases the thread, remembered for
    /// `limits.exit_group_ns` in case it was part of the process's death after all (see
    /// [`Self::freeze`]).
    pub fn thread_exit(&mut self, tid: u32, ts_ns: u64, process_exit: bool, limits: &Limits) {
        if process_exit {
            // Held at exit. The main thread is the process itself, not an object it made: it
            // counts in the summary but is no finding. Any other thread (exit_group's last
            // thread to go is often a worker) stays counted in its group.
            if tid == self.pid {
                if let Some(thread) = self.threads.remove(&tid) {
                    self.groups.forget(thread.group);
                    self.died_with = Some(thread.group.is_none());
                }
            }
            return;
        }
        let window_start = ts_ns.saturating_sub(limits.exit_group_ns);
        while self.recent_exits.front().is_some_and(|e| {
            e.exit_ns < window_start || self.recent_exits.len() >= MAX_RECENT_EXITS
        }) {
            self.recent_exits.pop_front();
        }
        if let Some(thread) = self.threads.remove(&tid) {
            self.groups
                .destroy(thread.group, thread.created_ns(), ts_ns);
            let group = thread
                .group
                .and_then(|slot| Some((slot, self.groups.key(slot)?)));
            self.recent_exits.push_back(RecentExit {
                tid,
                created_ns: thread.created_ns(),
                group,
                exit_ns: ts_ns,
            });
        }
        self.thread_exits.record(tid, ts_ns);
    }

    /// A `go` statement created `goroutine` from `stack`.
    pub fn add_goroutine(
        &mut self,
        goroutine: &Goroutine,
        stack: Option<StackRef>,
        ts_ns: u64,
        out: &mut Outbox,
    ) {
        if !self.go_sites.contains_key(&stack) {
            let parent = self
                .goroutines
                .get(&goroutine.parent_goid)
                .and_then(|parent| self.groups.key(parent.group));
            let lineage = parent
                .map(|key| {
                    let inherited = self.go_sites.get(&key.stack).map(|site| &site.lineage[..]);
                    key.stack
                        .into_iter()
                        .chain(inherited.unwrap_or_default().iter().copied())
                        .take(MAX_LINEAGE)
                        .collect()
                })
                .unwrap_or_default();
            self.go_sites.insert(
                stack,
                GoSite {
                    gopc: goroutine.gopc,
                    startpc: goroutine.startpc,
                    lineage,
                },
            );
        }
        if let Some(old) = self.goroutines.remove(&goroutine.goid) {
            // Goids are never reused in a process: its exit was missed.
            out.counters.resync_mismatches += 1;
            self.groups
                .destroy(Some(old.group), old.created.get(), ts_ns);
        } else if self.is_full() {
            self.drop_object(out);
            return;
        }
        let live = LiveGoroutine {
            created: Ns::new(ts_ns),
            group: self.groups.enter(GroupKey::goroutine(stack), ts_ns),
            g: goroutine.g,
        };
        self.goroutines.insert(goroutine.goid, live);
    }

    /// Goroutine `goid` ended. One created before tracing began was never tracked.
    pub fn goroutine_exit(&mut self, goid: u64, ts_ns: u64, out: &mut Outbox) {
        match self.goroutines.remove(&goid) {
            Some(gone) => self
                .groups
                .destroy(Some(gone.group), gone.created.get(), ts_ns),
            None => out.counters.untracked_goroutine_exits += 1,
        }
    }

    /// Whether an exit of `tid` that does not say `group_dead` is the last thread's.
    pub fn last_thread_is(&self, tid: u32) -> bool {
        self.threads.keys().all(|&t| t == tid) && self.seeded && !self.incomplete
    }

    /// `fd` is new, from `stack`; `path` gives its sample path, acquired for it, once its group
    /// is known (and only if the fd is tracked).
    fn add_fd(
        &mut self,
        fd: i32,
        kind: FdKind,
        stack: Option<StackRef>,
        ts_ns: u64,
        out: &mut Outbox,
        path: impl FnOnce(&mut Groups, &mut Paths, Slot) -> Option<PathId>,
    ) {
        let full = self.is_full();
        let exec_ns = self.exec_ns;
        let fresh = |groups: &mut Groups, paths: &mut Paths| {
            let slot = groups.enter(GroupKey::fd(kind, stack), ts_ns);
            let path = path(groups, paths, slot);
            Fd::new(ts_ns, Some(slot), kind, path)
        };
        match self.fds.entry(fd) {
            Entry::Occupied(mut entry) => {
                // An fd from /proc may be this very one (the snapshot raced the open), and one
                // from before an exec may have been closed by it; otherwise a close was missed.
                let old = entry.get();
                let closed_by_exec = exec_ns.filter(|&exec_ns| old.created_ns() < exec_ns);
                if old.group.is_some() && closed_by_exec.is_none() {
                    out.counters.resync_mismatches += 1;
                }
                let closed_ns = closed_by_exec.unwrap_or(ts_ns);
                self.groups.destroy(old.group, old.created_ns(), closed_ns);
                // The new path is acquired first: the old fd may be the last holder of the same.
                let old = entry.insert(fresh(&mut self.groups, &mut self.paths));
                self.paths.release(old.path);
            }
            Entry::Vacant(_) if full => self.drop_object(out),
            Entry::Vacant(entry) => {
                entry.insert(fresh(&mut self.groups, &mut self.paths));
            }
        }
    }

    pub fn open(
        &mut self,
        fds: FdPair,
        kind: FdKind,
        stack: Option<StackId>,
        path: Option<&Path>,
        ts_ns: u64,
        out: &mut Outbox,
    ) {
        let stack = self.stack_ref(stack, out);
        for fd in fds.iter() {
            self.add_fd(fd, kind, stack, ts_ns, out, |groups, paths, slot| {
                path.and_then(|path| groups.intern_path(slot, path, paths))
            });
        }
    }

    pub fn dup(
        &mut self,
        fd: i32,
        source: i32,
        stack: Option<StackId>,
        ts_ns: u64,
        out: &mut Outbox,
    ) {
        if fd == source {
            return;
        }
        let stack = self.stack_ref(stack, out);
        let (kind, path) = self
            .fds
            .get(&source)
            .map_or((FdKind::Other, None), |source| (source.kind, source.path));
        // dup2/dup3 close whatever `fd` was, without a close call. `source` still holds `path`.
        if let Some(old) = self.fds.remove(&fd) {
            self.groups.destroy(old.group, old.created_ns(), ts_ns);
            self.paths.release(old.path);
        }
        self.add_fd(fd, kind, stack, ts_ns, out, |_, paths, _| {
            paths.acquire(path);
            path
        });
    }

    pub fn close(&mut self, fd: i32, ts_ns: u64, out: &mut Outbox) {
        match self.fds.remove(&fd) {
            Some(old) => {
                self.groups.destroy(old.group, old.created_ns(), ts_ns);
                self.paths.release(old.path);
            }
            None => out.counters.untracked_closes += 1,
        }
        if let Ok(fd) = u32::try_from(fd) {
            self.fd_closes.record(fd, ts_ns);
        }
    }

    pub fn close_range(&mut self, first: u32, last: u32, ts_ns: u64) {
        if first > last {
            return;
        }
        self.fd_closes.record_range(first, last, ts_ns);
        // Whichever is smaller: the range (close_range(5, 5)) or the tracked fds (up to ~0U).
        if u64::from(last - first) < self.fds.len() as u64 {
            for fd in first..=last {
                let Ok(fd) = i32::try_from(fd) else { break };
                if let Some(old) = self.fds.remove(&fd) {
                    self.groups.destroy(old.group, old.created_ns(), ts_ns);
                    self.paths.release(old.path);
                }
            }
        } else {
            let (groups, paths) = (&mut self.groups, &mut self.paths);
            self.fds.retain(|&fd, old| {
                let closed = u32::try_from(fd).is_ok_and(|fd| (first..=last).contains(&fd));
                if closed {
                    groups.destroy(old.group, old.created_ns(), ts_ns);
                    paths.release(old.path);
                }
                !closed
            });
        }
    }

    /// The image is replaced by thread `tid`: every other thread is gone and the survivor takes
    /// the pid as its tid. Close-on-exec fds go too, but only /proc can say which (see `merge`).
    pub fn exec(&mut self, tid: u32, ts_ns: u64, out: &mut Outbox) {
        // An execing thread we never saw creating survives as one of unknown origin.
        let survivor = self.threads.remove(&tid);
        for (gone, thread) in self.threads.drain() {
            self.groups
                .destroy(thread.group, thread.created_ns(), ts_ns);
            self.thread_exits.record(gone, ts_ns);
        }
        // The survivor's old tid is gone too (the pid lives on in it).
        if tid != self.pid {
            self.thread_exits.record(tid, ts_ns);
        }
        match survivor {
            Some(thread) => {
                self.threads.insert(self.pid, thread);
            }
            None => {
                self.add_preexisting_thread(self.pid, ts_ns, out);
            }
        }
        // The old image's goroutines went with it.
        for (_, gone) in self.goroutines.drain() {
            self.groups
                .destroy(Some(gone.group), gone.created.get(), ts_ns);
        }
        self.go_sites.clear();
        // Threads gone before the exec were not the new image's: not held if it dies soon after.
        self.recent_exits.clear();
        self.exec_gen = self.exec_gen.saturating_add(1);
        self.stacks.clear();
        self.exec_ns = Some(ts_ns);
        self.comm_ns = self.comm_ns.max(ts_ns);
    }

    /// The child a fork/vfork/clone without CLONE_THREAD made: a copy of this fd table, each fd
    /// still attributed to the stack that created it here, and one thread from `stack`.
    pub fn fork(
        &self,
        child_pid: u32,
        stack: Option<StackRef>,
        ts_ns: u64,
        exec_gen: u32,
        activity: u64,
        out: &mut Outbox,
    ) -> Process {
        let mut child = Process::new(
            child_pid,
            self.comm.clone(),
            exec_gen,
            activity,
            self.max_objects,
            self.rate_window_ns,
        );
        child.comm_ns = self.comm_ns;
        child.seeded = self.seeded;
        child.incomplete = self.incomplete;
        // Fds this process may have lost at an exec not yet re-synced are the child's doubt too.
        child.exec_ns = self.exec_ns;
        child.add_thread(child_pid, stack, ts_ns, out);
        child.fds.reserve(self.fds.len().min(self.max_objects));
        // Same ids as here, so the copies keep their paths; each is held by the child's fds.
        child.paths = self.paths.for_child();
        for (&fd, inherited) in &self.fds {
            if child.is_full() {
                child.drop_object(out);
                continue;
            }
            let group = inherited
                .group
                .and_then(|slot| self.groups.key(slot))
                .map(|key| child.groups.enter(key, ts_ns));
            let copy = Fd::new(
                inherited.created_ns(),
                group,
                inherited.kind,
                inherited.path,
            );
            child.paths.acquire(copy.path);
            child.fds.insert(fd, copy);
        }
        child.paths.drop_unheld();
        child
    }

    /// Brings the process in line with a /proc snapshot, honouring what happened after the
    /// snapshot began; returns the disagreements (counted for `Merge::Resync` only).
    pub fn merge(&mut self, snap: &Snapshot, how: Merge, out: &mut Outbox) -> u64 {
        let started = snap.started_ns;
        let resync = how == Merge::Resync;
        // Before seeding, whatever /proc adds existed before tracing: expected, not a mismatch.
        let count_added = resync && self.seeded;
        let mut mismatches = 0;
        if started >= self.comm_ns {
            if *self.comm != *snap.comm {
                self.comm = Arc::from(snap.comm.as_str());
            }
            self.comm_ns = started;
        }

        if resync {
            let listed: HashSet<i32> = snap.fds.iter().map(|&(fd, _)| fd).collect();
            let exec_shown = self.exec_ns.filter(|&exec_ns| exec_ns <= started);
            let (groups, paths, fd_closes) =
                (&mut self.groups, &mut self.paths, &mut self.fd_closes);
            self.fds.retain(|&fd, tracked| {
                if listed.contains(&fd) || tracked.created_ns() > started {
                    return true;
                }
                // When it went: at the exec, or at some point before the snapshot began.
                let gone_ns = match exec_shown.filter(|&exec_ns| tracked.created_ns() < exec_ns) {
                    // Close-on-exec. The tombstone keeps a snapshot from before the exec, applied
                    // later, from bringing it back.
                    Some(exec_ns) => {
                        if let Ok(fd) = u32::try_from(fd) {
                            fd_closes.record(fd, exec_ns);
                        }
                        exec_ns
                    }
                    None => {
                        mismatches += 1;
                        started
                    }
                };
                groups.destroy(tracked.group, tracked.created_ns(), gone_ns);
                paths.release(tracked.path);
                false
            });
            if exec_shown.is_some() {
                self.exec_ns = None;
            }

            let listed: HashSet<u32> = snap.tids.iter().copied().collect();
            let groups = &mut self.groups;
            self.threads.retain(|tid, tracked| {
                if listed.contains(tid) || tracked.created_ns() > started {
                    return true;
                }
                mismatches += 1;
                groups.destroy(tracked.group, tracked.created_ns(), started);
                false
            });
        }

        for &(fd, kind) in &snap.fds {
            match self.fds.get_mut(&fd) {
                // The syscall only guessed the kind (open() of a FIFO is a pipe); /proc knows.
                // An fd newer than the snapshot may be another object with the same number. A
                // kind that tells where the fd came from (received, …) is not a guess /proc knows
                // better: it stays.
                Some(tracked)
                    if tracked.kind != kind
                        && !tracked.kind.is_origin()
                        && tracked.created_ns() <= started =>
                {
                    tracked.kind = kind;
                    if let Some(slot) = tracked.group {
                        tracked.group = Some(self.groups.rekind(slot, kind, tracked.created_ns()));
                    }
                }
                Some(_) => {}
                None => {
                    if u32::try_from(fd).is_ok_and(|fd| self.fd_closes.closed_after(fd, started)) {
                        continue;
                    }
                    if self.is_full() {
                        self.drop_object(out);
                        continue;
                    }
                    self.fds.insert(fd, Fd::new(started, None, kind, None));
                    if count_added {
                        mismatches += 1;
                    }
                }
            }
        }
        for &tid in &snap.tids {
            if self.thread_exits.closed_after(tid, started) {
                continue;
            }
            if self.add_preexisting_thread(tid, started, out) && count_added {
                mismatches += 1;
            }
        }

        self.seeded = true;
        out.counters.resync_mismatches += mismatches;
        mismatches
    }

    /// Once per report interval: sample the groups and age the tombstones.
    pub fn tick(&mut self, now_ns: u64, limits: &Limits) {
        #[cfg(test)]
        self.check_paths();
        self.groups.tick(now_ns, limits);
        // A site outlives its goroutines only until their group is dropped. (Most processes
        // run no Go: nothing to look at.)
        if !self.go_sites.is_empty() {
            let held: HashSet<Option<StackRef>> = self
                .groups
                .iter()
                .filter(|(_, group)| group.key.resource == Resource::Goroutine)
                .map(|(_, group)| group.key.stack)
                .collect();
            self.go_sites.retain(|stack, _| held.contains(stack));
        }
        self.thread_exits.rotate();
        self.fd_closes.rotate();
    }

    /// What the process held when it exited at `ts_ns`, with each group's verdict as the samples
    /// up to the exit give it. Threads whose exits came within `limits.exit_group_ns` before it
    /// went with the process (exit_group ends every thread, each as an ordinary exit): they are
    /// held at exit, not released.
    pub fn freeze(mut self, ts_ns: u64, limits: &Limits) -> Exited {
        let window_start = ts_ns
            .saturating_sub(limits.exit_group_ns)
            .max(self.exit_group_ns.unwrap_or(0));
        for gone in std::mem::take(&mut self.recent_exits) {
            if gone.exit_ns < window_start || self.threads.contains_key(&gone.tid) {
                continue;
            }
            let group = match gone.group {
                Some((slot, key)) if self.groups.key(slot) == Some(key) => {
                    self.groups.undestroy(slot);
                    Some(slot)
                }
                // Its group is gone: its release stands.
                Some(_) => continue,
                None => None,
            };
            self.threads
                .insert(gone.tid, Thread::new(gone.created_ns, group));
        }
        let mut summary = self.summary(true);
        if let Some(preexisting) = self.died_with {
            summary.threads += 1;
            summary.preexisting_threads += u64::from(preexisting);
        }
        // Fds from before an exec that /proc never confirmed may have been close-on-exec: without
        // that confirmation they are no evidence (a spawned child would "hold" its parent's fds).
        // Nor were they seen released: they are forgotten, not destroyed.
        if let Some(exec_ns) = self.exec_ns {
            let (groups, paths) = (&mut self.groups, &mut self.paths);
            self.fds.retain(|_, fd| {
                let doubtful = fd.created_ns() < exec_ns;
                if doubtful {
                    groups.forget(fd.group);
                    paths.release(fd.path);
                }
                !doubtful
            });
        }
        let mut findings = Vec::new();
        self.each_finding(ts_ns, 0, true, limits, |finding, drained_ns| {
            findings.push(Frozen {
                finding,
                drained_ns,
            });
        });
        Exited {
            exit_ns: ts_ns,
            summary,
            findings,
        }
    }

    /// Every stored path is held by exactly the fds that name it.
    #[cfg(test)]
    fn check_paths(&self) {
        let mut held: HashMap<u32, u32> = HashMap::new();
        for path in self.fds.values().filter_map(|fd| fd.path) {
            *held.entry(path.raw()).or_default() += 1;
        }
        assert_eq!(held, self.paths.refs(), "pid {} path holders", self.pid);
    }

    /// The live process's findings at `now_ns`: see [`Self::each_finding`].
    pub fn findings(&self, now_ns: u64, min_age_ns: u64, limits: &Limits, out: &mut Vec<Finding>) {
        #[cfg(test)]
        self.check_paths();
        self.each_finding(now_ns, min_age_ns, false, limits, |finding, _| {
            out.push(finding);
        });
    }

    /// One finding per group whose oldest outstanding object is at least `min_age_ns` old at
    /// `now_ns` (leaking or stable), and per group that drained within the last rate window after
    /// holding an object at least that long (released, with when it drained). Runs once per
    /// report interval: the per-object work (ages, percentiles, creation intervals) is done here,
    /// never when events are applied.
    fn each_finding(
        &self,
        now_ns: u64,
        min_age_ns: u64,
        exited: bool,
        limits: &Limits,
        mut emit: impl FnMut(Finding, Option<u64>),
    ) {
        // Every counted object as (group, creation time), by group then age: each group's
        // objects are one run, oldest first.
        let counted = self.threads.values().map(|t| (t.group, t.created_ns()));
        let counted = counted.chain(self.fds.values().map(|fd| (fd.group, fd.created_ns())));
        let counted = counted.chain(
            self.goroutines
                .values()
                .map(|g| (Some(g.group), g.created.get())),
        );
        let mut objects: Vec<(Slot, u64)> = counted
            .filter_map(|(group, created_ns)| Some((group?, created_ns)))
            .collect();
        objects.sort_unstable();
        let created: Vec<u64> = objects.iter().map(|&(_, created_ns)| created_ns).collect();
        let mut goroutines = self.goroutine_samples();
        // The oldest fd with a path per group (by creation, then number, so reports do not flip
        // between equals).
        let mut paths: Vec<Option<((u64, i32), PathId)>> = vec![None; self.groups.slot_count()];
        for (&number, fd) in &self.fds {
            let (Some(slot), Some(path)) = (fd.group, fd.path) else {
                continue;
            };
            let Some(best) = paths.get_mut(slot as usize) else {
                continue;
            };
            let at = (fd.created_ns(), number);
            if best.is_none_or(|(best, _)| at < best) {
                *best = Some((at, path));
            }
        }

        for (slot, group) in self.groups.iter() {
            let first = objects.partition_point(|&(s, _)| s < slot);
            let end = objects.partition_point(|&(s, _)| s <= slot);
            let held = &created[first..end];
            let finding = |outstanding, oldest_age_ns, sample_path, leak| Finding {
                pid: self.pid,
                comm: self.comm.to_string(),
                resource: group.key.resource,
                kind: group.key.kind,
                stack: group.key.stack,
                outstanding,
                created: group.created,
                oldest_age_ns,
                rate_per_s: group.rate_per_s(self.groups.ticks()),
                sample_path,
                exited,
                waiter: None,
                leak: Some(leak),
                goroutine: self.go_sites.get(&group.key.stack).and_then(|site| {
                    (group.key.resource == Resource::Goroutine).then(|| GoroutineDetail {
                        gopc: site.gopc,
                        startpc: site.startpc,
                        lineage: site.lineage.to_vec(),
                        live: Vec::new(),
                    })
                }),
            };
            let Some(&oldest_ns) = held.first() else {
                // Drained: reported as released for a rate window, as old as it got.
                let Some(release) = group.release else {
                    continue;
                };
                let recent = now_ns.saturating_sub(release.at_ns) <= limits.rate_window_ns;
                if group.outstanding > 0 || !recent || release.held_ns < min_age_ns {
                    continue;
                }
                let leak = LeakDetail {
                    trend: Trend::Released,
                    destroyed: group.destroyed,
                    age_p50_ns: 0,
                    age_p90_ns: 0,
                };
                emit(finding(0, release.held_ns, None, leak), Some(release.at_ns));
                continue;
            };
            let oldest_age_ns = now_ns.saturating_sub(oldest_ns);
            if oldest_age_ns < min_age_ns {
                continue;
            }
            let leak = LeakDetail {
                trend: group.trend(self.groups.ticks(), held, limits),
                destroyed: group.destroyed,
                age_p50_ns: age_percentile(held, 50, now_ns),
                age_p90_ns: age_percentile(held, 90, now_ns),
            };
            let path = paths.get(slot as usize).copied().flatten();
            let sample_path = path
                .and_then(|(_, id)| self.paths.get(id))
                .map(|path| path.display());
            let mut finding = finding(group.outstanding, oldest_age_ns, sample_path, leak);
            if let Some(detail) = &mut finding.goroutine {
                detail.live = goroutines.remove(&slot).unwrap_or_default();
            }
            emit(finding, None);
        }
    }

    /// Per goroutine group, its oldest outstanding goroutines (goid, g), at most
    /// [`GoroutineDetail::MAX_SCANNED`]: the ones a report reads the state of.
    fn goroutine_samples(&self) -> HashMap<Slot, Vec<(u64, u64)>> {
        let mut live: Vec<(Slot, u64, u64, u64)> = self
            .goroutines
            .iter()
            .map(|(&goid, g)| (g.group, g.created.get(), goid, g.g))
            .collect();
        live.sort_unstable();
        let mut samples: HashMap<Slot, Vec<(u64, u64)>> = HashMap::new();
        for (slot, _, goid, g) in live {
            let sample = samples.entry(slot).or_default();
            if sample.len() < GoroutineDetail::MAX_SCANNED {
                sample.push((goid, g));
            }
        }
        samples
    }

    pub fn summary(&self, exited: bool) -> ProcessSummary {
        let mut fds = BTreeMap::new();
        for fd in self.fds.values() {
            *fds.entry(fd.kind).or_insert(0) += 1;
        }
        let preexisting_threads = self.threads.values().filter(|t| t.group.is_none()).count();
        let preexisting_fds = self.fds.values().filter(|fd| fd.group.is_none()).count();
        ProcessSummary {
            pid: self.pid,
            comm: self.comm.to_string(),
            threads: self.threads.len() as u64,
            fds,
            preexisting_threads: preexisting_threads as u64,
            preexisting_fds: preexisting_fds as u64,
            blocked_waiters: 0,
            goroutines: self.goroutines.len() as u64,
            exited,
            incomplete: self.incomplete,
        }
    }
}

/// A process that exited, as it was at exit.
#[derive(Debug)]
pub(super) struct Exited {
    pub exit_ns: u64,
    pub summary: ProcessSummary,
    pub findings: Vec<Frozen>,
}

/// A finding of an exited process, as it stood at exit.
#[derive(Debug)]
pub(super) struct Frozen {
    pub finding: Finding,
    /// For a released group: when it drained, which bounds how long it is reported.
    pub drained_ns: Option<u64>,
}

/// The nearest-rank `percent`th percentile of the ages at `now_ns` of objects created at
/// `created_ns` (oldest first, not empty): the smallest age at least `percent`% of the objects
/// are no older than.
pub(super) fn age_percentile(created_ns: &[u64], percent: u64, now_ns: u64) -> u64 {
    let n = created_ns.len() as u64;
    // 1-based rank among the ages youngest first, i.e. among creation times newest first.
    let rank = (percent * n).div_ceil(100).clamp(1, n.max(1));
    let index = created_ns.len().saturating_sub(rank as usize);
    created_ns
        .get(index)
        .map_or(0, |&created| now_ns.saturating_sub(created))
}

/// Recent closes (or thread exits) by number, so a snapshot can tell "gone after it began" from
/// a disagreement. Two generations, rotated at every tick and early when one fills: a tombstone
/// lives at least one report interval, longer than the runtime holds a snapshot before applying
/// it. Pruning at each resync would not do: the runtime applies an older periodic snapshot after
/// a newer exec-triggered one.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    current: Generation,
    previous: Generation,
}

#[derive(Debug, Default)]
struct Generation {
    /// `Ns`, not u64: 12-byte entries, not 16 (a churning process fills 65536 per generation).
    at: HashMap<u32, Ns>,
    /// `(first, last, ts)` of close_range calls.
    ranges: Vec<(u32, u32, u64)>,
}

impl Generation {
    fn latest(&self, id: u32) -> Option<u64> {
        let ranges = self
            .ranges
            .iter()
            .filter(|&&(first, last, _)| (first..=last).contains(&id))
            .map(|&(_, _, ts)| ts);
        let at = self.at.get(&id).map(|&ts| ts.get());
        at.into_iter().chain(ranges).max()
    }
}

impl Tombstones {
    pub fn record(&mut self, id: u32, ts_ns: u64) {
        if self.current.at.len() >= MAX_TOMBSTONES && !self.current.at.contains_key(&id) {
            self.rotate();
        }
        self.current.at.insert(id, Ns::new(ts_ns));
    }

    fn record_range(&mut self, first: u32, last: u32, ts_ns: u64) {
        if self.current.ranges.len() >= MAX_RANGE_TOMBSTONES {
            self.rotate();
        }
        self.current.ranges.push((first, last, ts_ns));
    }

    /// Whether `id` was closed (or exited) after `started_ns`.
    pub fn closed_after(&self, id: u32, started_ns: u64) -> bool {
        let latest = self.current.latest(id).max(self.previous.latest(id));
        latest.is_some_and(|ts| ts > started_ns)
    }

    pub fn rotate(&mut self) {
        // Reuse the older generation's allocation for the new one.
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.at.clear();
        self.current.ranges.clear();
    }

    /// Tombstones held, ranges included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let generation = |g: &Generation| g.at.len() + g.ranges.len();
        generation(&self.current) + generation(&self.previous)
    }
}
