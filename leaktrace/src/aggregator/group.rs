//! Groups: a process's objects counted by what made them (resource, fd kind, creating stack),
//! with the tick history their growth rate comes from.

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroU32,
    sync::Arc,
};

use super::Limits;
use crate::{
    event::Path,
    model::{FdKind, Resource, StackRef, Trend},
};

/// What makes objects one group within a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct GroupKey {
    pub resource: Resource,
    /// Set for fds.
    pub kind: Option<FdKind>,
    pub stack: Option<StackRef>,
}

impl GroupKey {
    pub fn goroutine(stack: Option<StackRef>) -> Self {
        Self {
            resource: Resource::Goroutine,
            kind: None,
            stack,
        }
    }

    pub fn thread(stack: Option<StackRef>) -> Self {
        Self {
            resource: Resource::Thread,
            kind: None,
            stack,
        }
    }

    pub fn fd(kind: FdKind, stack: Option<StackRef>) -> Self {
        Self {
            resource: Resource::Fd,
            kind: Some(kind),
            stack,
        }
    }
}

/// A path an fd was opened with, stored once in its process's [`Paths`]; a forked child's copy
/// shares the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SamplePath {
    text: Arc<str>,
    truncated: bool,
}

impl SamplePath {
    fn new(path: &Path) -> Self {
        Self {
            text: Arc::from(path.text.as_str()),
            truncated: path.truncated,
        }
    }

    fn is(&self, path: &Path) -> bool {
        self.truncated == path.truncated && *self.text == *path.text
    }

    /// As reported: a cut path ends in an ellipsis.
    pub fn display(&self) -> String {
        if self.truncated {
            format!("{}…", self.text)
        } else {
            self.text.to_string()
        }
    }
}

/// Index of a group in its process's [`Groups`]; objects hold it so a close hashes no key.
pub(super) type Slot = u32;

/// A path in its process's [`Paths`]. Fds hold this, not the path: 4 bytes instead of 24 in
/// every fd entry, most of which have no path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PathId(NonZeroU32);

impl PathId {
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }

    /// Both name one stored copy of the text.
    #[cfg(test)]
    pub fn shares_text_with(&self, other: &Self) -> bool {
        self == other
    }

    #[cfg(test)]
    pub fn raw(self) -> u32 {
        self.0.get()
    }
}

#[derive(Clone, Debug)]
struct PathEntry {
    path: SamplePath,
    /// Fds holding it: the entry is freed with the last.
    refs: u32,
}

/// The paths a process's fds were opened with, each counted by the fds holding it. A group
/// remembers its last path's id (without holding it), so a run of opens of one path stores it
/// once.
#[derive(Debug, Default)]
pub(super) struct Paths {
    entries: Vec<Option<PathEntry>>,
    /// Indexes of freed entries, reused first.
    free: Vec<u32>,
}

impl Paths {
    pub fn get(&self, id: PathId) -> Option<&SamplePath> {
        let entry = self.entries.get(id.index())?.as_ref()?;
        Some(&entry.path)
    }

    /// One more fd holds `id`.
    pub fn acquire(&mut self, id: Option<PathId>) {
        let entry = id.and_then(|id| self.entries.get_mut(id.index())?.as_mut());
        if let Some(entry) = entry {
            entry.refs += 1;
        }
    }

    /// An fd holding `id` is gone; the path goes with the last one.
    pub fn release(&mut self, id: Option<PathId>) {
        let Some(id) = id else { return };
        let Some(slot) = self.entries.get_mut(id.index()) else {
            return;
        };
        if let Some(entry) = slot {
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                *slot = None;
                self.free.push(id.index() as u32);
            }
        }
    }

    /// `path` for a new fd: `last` again when it is the same path (and still stored), else a new
    /// entry.
    fn intern(&mut self, last: Option<PathId>, path: &Path) -> PathId {
        if let Some(last) = last {
            if let Some(entry) = self.entries.get_mut(last.index()).and_then(Option::as_mut) {
                if entry.path.is(path) {
                    entry.refs += 1;
                    return last;
                }
            }
        }
        let entry = Some(PathEntry {
            path: SamplePath::new(path),
            refs: 1,
        });
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = entry;
                index as usize
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        let id = u32::try_from(index + 1)
            .ok()
            .and_then(NonZeroU32::new)
            .expect("fewer paths than fds, and fds are far fewer than 2^32");
        PathId(id)
    }

    /// A forked child's copy: the same ids and texts, held by none of its fds yet. The child
    /// acquires what its fds hold, then [`Self::drop_unheld`].
    pub fn for_child(&self) -> Self {
        let entries = self.entries.iter().map(|entry| {
            entry.as_ref().map(|entry| PathEntry {
                path: entry.path.clone(),
                refs: 0,
            })
        });
        Self {
            entries: entries.collect(),
            free: self.free.clone(),
        }
    }

    /// Frees the entries no fd holds.
    pub fn drop_unheld(&mut self) {
        for (index, slot) in self.entries.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|entry| entry.refs == 0) {
                *slot = None;
                self.free.push(index as u32);
            }
        }
    }

    /// Each stored path's holders, by id: for checking the counts against the fds.
    #[cfg(test)]
    pub fn refs(&self) -> HashMap<u32, u32> {
        let held = self.entries.iter().enumerate();
        held.filter_map(|(index, slot)| Some((index as u32 + 1, slot.as_ref()?.refs)))
            .collect()
    }
}

/// A group draining to zero outstanding by its objects being released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Release {
    pub at_ns: u64,
    /// How old the oldest object released while the group was non-empty got before its
    /// release: how old the group was as a finding when it drained.
    pub held_ns: u64,
}

#[derive(Debug)]
pub(super) struct Group {
    pub key: GroupKey,
    pub outstanding: u64,
    /// Objects that entered the group: created while traced, or inherited at fork.
    pub created: u64,
    /// Objects of the group released while traced (closed, exited, removed by exec or a
    /// re-sync); not those that went with their process's exit.
    pub destroyed: u64,
    last_created_ns: u64,
    /// Longest lifetime of an object released since the group was last empty.
    held_ns: u64,
    /// The drain a released finding reports; kept for a rate window.
    pub release: Option<Release>,
    /// Outstanding at the latest ticks inside the rate window, oldest first; the tick times are
    /// the last of [`Groups::ticks`], shared by all groups. u32: a group never holds 4G objects.
    samples: VecDeque<u32>,
    /// The path of the group's last open with one, for [`Paths::intern`]. Not held: the entry
    /// may be gone or reused, which interning checks.
    last_path: Option<PathId>,
}

impl Group {
    fn new(key: GroupKey) -> Self {
        Self {
            key,
            outstanding: 0,
            created: 0,
            destroyed: 0,
            last_created_ns: 0,
            held_ns: 0,
            release: None,
            samples: VecDeque::new(),
            last_path: None,
        }
    }

    /// `(tick time, outstanding)` of the kept samples, oldest first; `ticks` are its
    /// [`Groups::ticks`].
    fn samples<'a>(&'a self, ticks: &'a VecDeque<u64>) -> impl Iterator<Item = (u64, u64)> + 'a {
        let first = ticks.len().saturating_sub(self.samples.len());
        let times = ticks.range(first..).copied();
        times.zip(self.samples.iter().map(|&count| u64::from(count)))
    }

    /// Least-squares slope of outstanding over the kept samples, per second.
    pub fn rate_per_s(&self, ticks: &VecDeque<u64>) -> f64 {
        let samples: Vec<(u64, u64)> = self.samples(ticks).collect();
        crate::trend::slope_per_s(samples.iter())
    }

    #[cfg(test)]
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Whether the group, holding objects created at `created_ns` (oldest first, not empty), is
    /// leaking or stable. Leaking takes a trend over the window, not one sample: enough samples,
    /// a rising fit, a real increase from the window's first sample to its latest, and objects
    /// created over as many tick intervals. Old enough to be a finding at all is the caller's.
    pub fn trend(&self, ticks: &VecDeque<u64>, created_ns: &[u64], limits: &Limits) -> Trend {
        let (Some(&first), Some(&last)) = (self.samples.front(), self.samples.back()) else {
            return Trend::Stable;
        };
        let leaking = self.samples.len() >= limits.leak_min_samples
            && self.rate_per_s(ticks) > 0.0
            && u64::from(last) >= u64::from(first).saturating_add(limits.leak_min_increase)
            && self.creation_intervals(ticks, created_ns) >= limits.leak_min_samples;
        if leaking {
            Trend::Leak
        } else {
            Trend::Stable
        }
    }

    /// Over how many tick intervals the objects created at `created_ns` (oldest first) were
    /// made: each is counted in the first sample at or after its creation (all before the
    /// window in the first, all after the latest tick in one more). A pool opened in one burst
    /// that straddles a tick counts two; a leak adds objects interval after interval.
    fn creation_intervals(&self, ticks: &VecDeque<u64>, created_ns: &[u64]) -> usize {
        let mut times = self.samples(ticks).map(|(t, _)| t).peekable();
        let mut intervals = 0;
        let mut last = None;
        let mut first_sample = 0;
        for &created in created_ns {
            while times.next_if(|&t| t < created).is_some() {
                first_sample += 1;
            }
            if last != Some(first_sample) {
                intervals += 1;
                last = Some(first_sample);
            }
        }
        intervals
    }

    /// One object fewer, however it went; an empty group starts a new holding period.
    fn decrement(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
        if self.outstanding == 0 {
            self.held_ns = 0;
        }
    }
}

/// A slab of groups with an index by key; freed slots are reused.
#[derive(Debug)]
pub(super) struct Groups {
    slots: Vec<Option<Group>>,
    free: Vec<Slot>,
    index: HashMap<GroupKey, Slot>,
    /// The aggregator's rate window: how long a release is remembered.
    rate_window_ns: u64,
    /// Times of the latest ticks (at most max_samples), oldest first. Every tick samples every
    /// group, so a group's samples are at the last of these: kept once here, not per group.
    ticks: VecDeque<u64>,
}

impl Groups {
    pub fn new(rate_window_ns: u64) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            rate_window_ns,
            ticks: VecDeque::new(),
        }
    }

    /// What [`Group::rate_per_s`] and [`Group::trend`] take.
    pub fn ticks(&self) -> &VecDeque<u64> {
        &self.ticks
    }

    /// Counts one more object into `key`'s group (made if new); `created_ns` keeps it from being
    /// dropped as idle for a rate window.
    pub fn enter(&mut self, key: GroupKey, created_ns: u64) -> Slot {
        let slot = match self.index.get(&key) {
            Some(&slot) => slot,
            None => {
                let group = Some(Group::new(key));
                let slot = match self.free.pop() {
                    Some(slot) => {
                        self.slots[slot as usize] = group;
                        slot
                    }
                    None => {
                        self.slots.push(group);
                        (self.slots.len() - 1) as Slot
                    }
                };
                self.index.insert(key, slot);
                slot
            }
        };
        if let Some(group) = self.get_mut(slot) {
            group.outstanding += 1;
            group.created += 1;
            group.last_created_ns = group.last_created_ns.max(created_ns);
        }
        slot
    }

    /// One object of the group, created at `created_ns`, was released at `ts_ns` (closed,
    /// exited, removed by exec or a re-sync). The drain of the group's last object is kept as its
    /// release, unless a drain within the rate window held an older object: a pool held for
    /// minutes then released stays reported even if the stack briefly opens one more after.
    pub fn destroy(&mut self, slot: Option<Slot>, created_ns: u64, ts_ns: u64) {
        let rate_window_ns = self.rate_window_ns;
        let Some(group) = slot.and_then(|slot| self.get_mut(slot)) else {
            return;
        };
        group.destroyed += 1;
        group.held_ns = group.held_ns.max(ts_ns.saturating_sub(created_ns));
        if group.outstanding == 1 {
            let drained = Release {
                at_ns: ts_ns,
                held_ns: group.held_ns,
            };
            let keep_previous = group.release.is_some_and(|previous| {
                previous.held_ns > drained.held_ns
                    && ts_ns.saturating_sub(previous.at_ns) <= rate_window_ns
            });
            if !keep_previous {
                group.release = Some(drained);
            }
        }
        group.decrement();
    }

    /// One object of the group is no longer counted, without having been released: its
    /// process exited with it, or it was never known to be gone.
    pub fn forget(&mut self, slot: Option<Slot>) {
        if let Some(group) = slot.and_then(|slot| self.get_mut(slot)) {
            group.decrement();
        }
    }

    /// Takes back one [`Self::destroy`] of the group: the object was not released after all
    /// (its thread went with its process). Only for a frozen process: the group's release is
    /// left as it was, as it is no finding while the group holds objects.
    pub fn undestroy(&mut self, slot: Slot) {
        if let Some(group) = self.get_mut(slot) {
            group.outstanding += 1;
            group.destroyed = group.destroyed.saturating_sub(1);
        }
    }

    /// Moves an object whose fd kind turned out different to the group of its real kind, creation
    /// included: it never belonged to the guessed one.
    pub fn rekind(&mut self, slot: Slot, kind: FdKind, created_ns: u64) -> Slot {
        let Some(old) = self.get_mut(slot) else {
            return slot;
        };
        old.decrement();
        old.created = old.created.saturating_sub(1);
        let key = GroupKey::fd(kind, old.key.stack);
        self.enter(key, created_ns)
    }

    /// `path` for a new fd of the group, held by it: the group's last path again when it is the
    /// same, else a new copy.
    pub fn intern_path(&mut self, slot: Slot, path: &Path, paths: &mut Paths) -> Option<PathId> {
        let group = self.get_mut(slot)?;
        let id = paths.intern(group.last_path, path);
        group.last_path = Some(id);
        Some(id)
    }

    pub fn get(&self, slot: Slot) -> Option<&Group> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, slot: Slot) -> Option<&mut Group> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    pub fn key(&self, slot: Slot) -> Option<GroupKey> {
        self.get(slot).map(|group| group.key)
    }

    /// Upper bound of the slots in use, for tables indexed by slot.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Group)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, group)| Some((slot as Slot, group.as_ref()?)))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Samples every group's outstanding count at `now_ns`, and drops groups that hold nothing and
    /// neither created nor drained for a whole rate window: their history can no longer move a
    /// rate, and their release is no longer reported.
    pub fn tick(&mut self, now_ns: u64, limits: &Limits) {
        let window_start = now_ns.saturating_sub(limits.rate_window_ns);
        // As many as any group can keep; each group trims its own by time below.
        self.ticks.push_back(now_ns);
        while self.ticks.len() > limits.max_samples {
            self.ticks.pop_front();
        }
        let ticks = &self.ticks;
        // A group's oldest sample is at the tick as many back as it has samples.
        let oldest = |samples: &VecDeque<u32>| ticks.len().checked_sub(samples.len());
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(group) = entry else { continue };
            let drained_ns = group.release.map_or(0, |release| release.at_ns);
            if group.outstanding == 0 && group.last_created_ns.max(drained_ns) <= window_start {
                self.index.remove(&group.key);
                self.free.push(slot as Slot);
                *entry = None;
                continue;
            }
            group
                .samples
                .push_back(u32::try_from(group.outstanding).unwrap_or(u32::MAX));
            while group.samples.len() > limits.max_samples
                || oldest(&group.samples).is_some_and(|i| ticks[i] < window_start)
            {
                group.samples.pop_front();
            }
        }
    }
}
