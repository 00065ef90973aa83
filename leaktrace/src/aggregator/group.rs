//! Groups: a process's objects counted by what made them (resource, fd kind, creating stack),
//! with the tick history their growth rate comes from.

use std::{
    collections::{HashMap, VecDeque},
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

/// A path an fd was opened with, shared between fds so an open of the same path as the last one
/// allocates nothing.
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

    #[cfg(test)]
    pub fn shares_text_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
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
    /// `(tick time, outstanding)` inside the rate window, oldest first.
    samples: VecDeque<(u64, u64)>,
    last_path: Option<SamplePath>,
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

    /// Least-squares slope of outstanding over the kept samples, per second.
    pub fn rate_per_s(&self) -> f64 {
        crate::trend::slope_per_s(self.samples.iter())
    }

    #[cfg(test)]
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Whether the group, holding objects created at `created_ns` (oldest first, not empty), is
    /// leaking or stable. Leaking takes a trend over the window, not one sample: enough samples,
    /// a rising fit, a real increase from the window's first sample to its latest, and objects
    /// created over as many tick intervals. Old enough to be a finding at all is the caller's.
    pub fn trend(&self, created_ns: &[u64], limits: &Limits) -> Trend {
        let (Some(&(_, first)), Some(&(_, last))) = (self.samples.front(), self.samples.back())
        else {
            return Trend::Stable;
        };
        let leaking = self.samples.len() >= limits.leak_min_samples
            && self.rate_per_s() > 0.0
            && last >= first.saturating_add(limits.leak_min_increase)
            && self.creation_intervals(created_ns) >= limits.leak_min_samples;
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
    fn creation_intervals(&self, created_ns: &[u64]) -> usize {
        let mut intervals = 0;
        let mut last = None;
        let mut first_sample = 0;
        for &created in created_ns {
            while self
                .samples
                .get(first_sample)
                .is_some_and(|&(t, _)| t < created)
            {
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
}

impl Groups {
    pub fn new(rate_window_ns: u64) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            rate_window_ns,
        }
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

    /// The group's copy of `path`, made only when it differs from the group's last one.
    pub fn intern_path(&mut self, slot: Slot, path: &Path) -> Option<SamplePath> {
        let group = self.get_mut(slot)?;
        match &group.last_path {
            Some(last) if last.is(path) => Some(last.clone()),
            _ => {
                let fresh = SamplePath::new(path);
                group.last_path = Some(fresh.clone());
                Some(fresh)
            }
        }
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
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            let Some(group) = entry else { continue };
            let drained_ns = group.release.map_or(0, |release| release.at_ns);
            if group.outstanding == 0 && group.last_created_ns.max(drained_ns) <= window_start {
                self.index.remove(&group.key);
                self.free.push(slot as Slot);
                *entry = None;
                continue;
            }
            group.samples.push_back((now_ns, group.outstanding));
            while group.samples.len() > limits.max_samples
                || group
                    .samples
                    .front()
                    .is_some_and(|&(t, _)| t < window_start)
            {
                group.samples.pop_front();
            }
        }
    }
}
