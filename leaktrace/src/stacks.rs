//! Each event's user stack, from whichever source has it: the kernel's frame-pointer walk (a
//! stack map id in the record), a [`Sample`] of the creating thread's registers and stack top
//! unwound with the binaries' unwind tables ([`unwind`]), or, for a blocked waiter, its frozen
//! stack read at scan time. A sample is unwound once, joined with the kernel's walk beyond the
//! copy, and its stack named by a hash of its addresses ([`userstack::walked_id`]) so that
//! equal stacks still group together whatever their source.

use std::{collections::HashMap, rc::Rc};

use serde::Serialize;

use crate::{
    event::{Event, Sample, What},
    model::StackId,
    procmem,
    unwind::{self, Method, Regs, Unwinder, Unwound},
    userstack,
};

/// Samples waiting for their creation record: one per thread at most, so this bounds threads
/// with a record in flight, far beyond what a ring buffer holds between two drains.
const MAX_SAMPLES: usize = 65536;

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StackStats {
    /// Samples received.
    pub samples: u64,
    /// Stacks unwound with unwind tables (samples paired with their record, blocked waiters).
    pub unwound: u64,
    /// Samples whose creation record never came (lost to a full ring buffer): dropped.
    pub unpaired: u64,
    /// Samples dropped because [`MAX_SAMPLES`] threads had one pending.
    pub dropped: u64,
    /// Unwound stacks cut short: neither the copy nor the frame-pointer walk reached the root.
    pub truncated: u64,
    /// Thread and fd creations left with no stack at all: no sample, and the kernel's
    /// frame-pointer walk failed. (A failed walk that a sample covers is not counted here.)
    pub unattributed: u64,
}

#[derive(Default)]
pub struct Stacks {
    unwinder: Unwinder,
    /// The last sample of each thread, until the record it precedes arrives.
    samples: HashMap<u32, Sample>,
    /// Kernel stacks by id. Until the map is cleared it never hands an id to a different stack
    /// (it fails the capture instead), so each is read once; its capacity bounds this cache.
    kernel: HashMap<StackId, Rc<[u64]>>,
    /// Stacks unwound since the last [`Stacks::settled`], until the symbolizer captures them.
    fresh: HashMap<(u32, StackId), Unwound>,
    /// Kernel stacks a sample showed complete, until the kernel is told ([`Stacks::take_complete`]).
    complete: Vec<StackId>,
    stats: StackStats,
}

impl Stacks {
    pub fn sample(&mut self, sample: Sample) {
        self.stats.samples += 1;
        if self.samples.len() >= MAX_SAMPLES && !self.samples.contains_key(&sample.tid) {
            self.stats.dropped += 1;
            return;
        }
        if self.samples.insert(sample.tid, sample).is_some() {
            self.stats.unpaired += 1;
        }
    }

    /// Gives a creation event the stack unwound from its sample, if one came; keeps what is
    /// cached in step with threads and processes ending. `kernel` reads the kernel stack map.
    pub fn resolve(&mut self, event: &mut Event, kernel: impl FnOnce(StackId) -> Option<Vec<u64>>) {
        let stack = match &mut event.what {
            What::TaskNew { stack, .. }
            | What::FdOpen { stack, .. }
            | What::FdDup { stack, .. }
            | What::GoroutineNew { stack, .. } => stack,
            What::ThreadExit { group_dead } => {
                self.samples.remove(&event.tid);
                // Kernels without `group_dead` end a process when its main thread exits.
                if group_dead.unwrap_or(event.tid == event.pid) {
                    self.unwinder.forget(event.pid);
                }
                return;
            }
            What::Exec => {
                self.unwinder.forget(event.pid);
                return;
            }
            What::FdClose { .. }
            | What::FdCloseRange { .. }
            | What::GoroutineExit { .. }
            | What::ExitGroup => return,
        };
        self.pair(event.pid, event.tid, event.ts_ns, stack, kernel);
        if stack.is_none() {
            self.stats.unattributed += 1;
        }
    }

    /// Replaces a creation's kernel stack id with the id of its stack: unwound from its
    /// sample if one came, else the kernel's frame-pointer walk. Either way the id names the
    /// addresses, not a slot of the kernel's map, which [`Stacks::forget_kernel`] lets be
    /// cleared.
    fn pair(
        &mut self,
        pid: u32,
        tid: u32,
        ts_ns: u64,
        stack: &mut Option<StackId>,
        kernel: impl FnOnce(StackId) -> Option<Vec<u64>>,
    ) {
        let kernel_id = *stack;
        let fp = kernel_id.and_then(|id| self.kernel_stack(id, kernel));
        let sample = match self.samples.remove(&tid) {
            Some(sample) if sample.ts_ns == ts_ns => Some(sample),
            Some(_) => {
                // The record this sample preceded was lost.
                self.stats.unpaired += 1;
                None
            }
            None => None,
        };
        let Some(sample) = sample else {
            *stack = fp.map(|ips| self.remember(pid, unwind::fp_only(&ips)));
            return;
        };
        let walk = self.unwinder.unwind(
            sample.pid,
            sample.regs,
            unwind::copy_reader(sample.regs.sp, &sample.stack),
        );
        let verified = walk.complete && walk.mapped;
        let unwound = unwind::merge(walk, fp.as_deref().unwrap_or(&[]));
        if let (Some(id), Method::Fp, true) = (kernel_id, unwound.method, verified) {
            // An unwind to the root over the process's own code added nothing to the kernel's
            // walk: that walk is the stack, now and for every later event with the same walk
            // (the same return addresses from the same instruction on). Both get the same id:
            // it is the addresses'.
            self.complete.push(id);
        }
        *stack = Some(self.keep(sample.pid, unwound));
    }

    /// The stack of a thread of `pid` blocked in a wait with these registers: frozen while it
    /// waits, so it is read from the process now.
    pub fn blocked(&mut self, pid: u32, regs: Regs) -> StackId {
        // One reader for both walks: they read the same few pages.
        let mut read = procmem::live_reader(pid);
        let fp = userstack::walk_words(regs.ip, regs.fp, &mut read);
        let walk = self.unwinder.unwind(pid, regs, &mut read);
        self.keep(pid, unwind::merge(walk, &fp))
    }

    /// The addresses of stack `id` of `pid` and how they were obtained, for the symbolizer:
    /// handed out once, at the settle after the event that named the stack (empty if none did).
    pub fn take(&mut self, pid: u32, id: StackId) -> Unwound {
        self.fresh.remove(&(pid, id)).unwrap_or(Unwound {
            ips: Vec::new(),
            method: Method::Fp,
            truncated: false,
        })
    }

    /// Kernel stacks read since the kernel's map was last cleared: how full it is.
    pub fn kernel_stacks(&self) -> usize {
        self.kernel.len()
    }

    /// The kernel's stack map was cleared: its ids name nothing now.
    pub fn forget_kernel(&mut self) {
        self.kernel.clear();
        self.complete.clear();
    }

    /// Kernel stacks found complete since the last call.
    pub fn take_complete(&mut self) -> Vec<StackId> {
        std::mem::take(&mut self.complete)
    }

    /// The symbolizer has what it needs: unwound stacks it did not ask for were already known.
    pub fn settled(&mut self) {
        self.fresh.clear();
    }

    pub fn stats(&self) -> StackStats {
        self.stats
    }

    pub fn unwind_stats(&self) -> unwind::UnwindStats {
        self.unwinder.stats()
    }

    /// Remembers a stack unwound with unwind tables.
    fn keep(&mut self, pid: u32, unwound: Unwound) -> StackId {
        self.stats.unwound += 1;
        self.stats.truncated += u64::from(unwound.truncated);
        self.remember(pid, unwound)
    }

    /// Remembers a stack until the symbolizer takes it; its id is its addresses' hash.
    fn remember(&mut self, pid: u32, unwound: Unwound) -> StackId {
        let id = userstack::walked_id(&unwound.ips);
        self.fresh.insert((pid, id), unwound);
        id
    }

    fn kernel_stack(
        &mut self,
        id: StackId,
        kernel: impl FnOnce(StackId) -> Option<Vec<u64>>,
    ) -> Option<Rc<[u64]>> {
        if let Some(ips) = self.kernel.get(&id) {
            return Some(Rc::clone(ips));
        }
        let ips: Rc<[u64]> = kernel(id)?.into();
        self.kernel.insert(id, Rc::clone(&ips));
        Some(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::FdPair, model::FdKind};

    const PID: u32 = 100;

    fn sample(tid: u32, ts_ns: u64, stack: Vec<u8>) -> Sample {
        Sample {
            ts_ns,
            pid: PID,
            tid,
            regs: Regs {
                // Nowhere mapped: no unwind tables can vouch for this walk.
                ip: 0x10,
                sp: stack.as_ptr() as u64,
                fp: 0,
                lr: 0,
            },
            stack,
        }
    }

    fn open(tid: u32, ts_ns: u64, stack: Option<StackId>) -> Event {
        Event {
            ts_ns,
            pid: PID,
            tid,
            what: What::FdOpen {
                fds: FdPair::One(3),
                kind: FdKind::File,
                stack,
                path: None,
            },
        }
    }

    fn stack_of(event: &Event) -> Option<StackId> {
        match event.what {
            What::FdOpen { stack, .. } => stack,
            _ => panic!("not an open"),
        }
    }

    #[test]
    fn without_a_sample_the_kernel_walk_is_the_stack_named_by_its_addresses() {
        let mut stacks = Stacks::default();
        let mut event = open(7, 5, Some(3));
        stacks.resolve(&mut event, |id| (id == 3).then(|| vec![0xa, 0xb, 0]));
        let id = stack_of(&event).expect("a stack");
        assert_eq!(id, userstack::walked_id(&[0xa, 0xb]));
        let unwound = stacks.take(PID, id);
        assert_eq!(unwound.ips, [0xa, 0xb]);
        assert_eq!(unwound.method, Method::Fp);
        // A frame-pointer walk is not an unwind.
        assert_eq!(stacks.stats().unwound, 0);
        // Read once while the map holds it.
        let mut again = open(7, 6, Some(3));
        stacks.resolve(&mut again, |_| panic!("cached"));
        assert_eq!(stack_of(&again), Some(id));
        assert_eq!(stacks.kernel_stacks(), 1);
    }

    #[test]
    fn a_cleared_map_is_read_again() {
        let mut stacks = Stacks::default();
        let mut event = open(7, 5, Some(3));
        stacks.resolve(&mut event, |_| Some(vec![0xa]));
        stacks.forget_kernel();
        assert_eq!(stacks.kernel_stacks(), 0);
        // After the clear, slot 3 holds another stack.
        let mut event = open(7, 6, Some(3));
        stacks.resolve(&mut event, |_| Some(vec![0xb]));
        assert_eq!(stack_of(&event), Some(userstack::walked_id(&[0xb])));
        // A slot emptied under an event in flight leaves it without a stack, counted.
        let mut event = open(7, 7, Some(4));
        stacks.resolve(&mut event, |_| None);
        assert_eq!(stack_of(&event), None);
        assert_eq!(stacks.stats().unattributed, 1);
    }

    #[test]
    fn a_sample_pairs_only_with_its_own_record() {
        let mut stacks = Stacks::default();
        // The record this sample preceded was lost; the next record of the thread is another.
        stacks.sample(sample(7, 5, vec![0; 64]));
        let mut event = open(7, 6, Some(3));
        stacks.resolve(&mut event, |_| Some(vec![0x10]));
        assert_eq!(stack_of(&event), Some(userstack::walked_id(&[0x10])));
        assert_eq!(stacks.stats().unpaired, 1);
        assert_eq!(stacks.stats().unwound, 0);
        // A second sample of the same thread also means the first one's record was lost.
        stacks.sample(sample(7, 8, vec![0; 64]));
        stacks.sample(sample(7, 9, vec![0; 64]));
        assert_eq!(stacks.stats().unpaired, 2);
        assert_eq!(stacks.stats().samples, 3);
    }

    #[test]
    fn a_paired_sample_gives_the_record_an_unwound_stack() {
        let mut stacks = Stacks::default();
        let pid = std::process::id();
        let mut s = sample(7, 5, vec![0; 64]);
        s.pid = pid;
        stacks.sample(s);
        let mut event = open(7, 5, Some(3));
        event.pid = pid;
        // With no frame pointer the kernel's walk is the instruction pointer alone.
        stacks.resolve(&mut event, |id| (id == 3).then(|| vec![0x10]));
        let id = stack_of(&event).expect("a stack");
        // The unwind agrees, but outside any mapping nothing vouches for it: the record gets the
        // unwound stack and the kernel's walk is not marked complete.
        assert_ne!(id & userstack::WALKED, 0, "{id:#x}");
        assert!(stacks.take_complete().is_empty());
        let unwound = stacks.take(pid, id);
        assert_eq!(unwound.ips, [0x10]);
        assert_eq!(unwound.method, Method::Fp);
        assert_eq!(stacks.stats().unwound, 1);
        // Handed out once, then forgotten at the end of the settle.
        stacks.settled();
        assert!(stacks.take(pid, id).ips.is_empty());
    }

    #[test]
    fn only_creations_left_with_no_stack_are_unattributed() {
        let mut stacks = Stacks::default();
        let pid = std::process::id();
        // The kernel's walk failed, but a sample covers it.
        let mut s = sample(7, 5, vec![0; 64]);
        s.pid = pid;
        stacks.sample(s);
        let mut covered = open(7, 5, None);
        covered.pid = pid;
        stacks.resolve(&mut covered, |_| panic!("no kernel stack to read"));
        assert!(stack_of(&covered).is_some());
        assert_eq!(stacks.stats().unattributed, 0);
        // Neither a sample nor a walk.
        let mut bare = open(8, 6, None);
        stacks.resolve(&mut bare, |_| None);
        assert_eq!(stack_of(&bare), None);
        // A walk without a sample is a stack.
        let mut walked = open(8, 7, Some(3));
        stacks.resolve(&mut walked, |_| Some(vec![0x30]));
        assert!(stack_of(&walked).is_some());
        assert_eq!(stacks.stats().unattributed, 1);
    }

    #[test]
    fn a_thread_exit_drops_its_sample() {
        let mut stacks = Stacks::default();
        stacks.sample(sample(7, 5, vec![0; 8]));
        let mut exit = Event {
            ts_ns: 6,
            pid: PID,
            tid: 7,
            what: What::ThreadExit { group_dead: None },
        };
        stacks.resolve(&mut exit, |_| None);
        let mut event = open(7, 5, Some(3));
        stacks.resolve(&mut event, |_| Some(vec![0x20]));
        // The kernel's walk, not the dropped sample's unwind.
        assert_eq!(stack_of(&event), Some(userstack::walked_id(&[0x20])));
        assert_eq!(stacks.stats().unwound, 0);
    }

    #[test]
    fn samples_beyond_the_bound_are_dropped_and_counted() {
        let mut stacks = Stacks::default();
        for tid in 0..=MAX_SAMPLES as u32 {
            stacks.sample(sample(tid, 1, Vec::new()));
        }
        assert_eq!(stacks.stats().dropped, 1);
        assert_eq!(stacks.samples.len(), MAX_SAMPLES);
    }
}
