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
    unwind::{self, Regs, Unwinder, Unwound},
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
}

#[derive(Default)]
pub struct Stacks {
    unwinder: Unwinder,
    /// The last sample of each thread, until the record it precedes arrives.
    samples: HashMap<u32, Sample>,
    /// Kernel stacks by id. The stack map never hands an id to a different stack (it fails the
    /// capture instead), so each is read once; its capacity bounds this cache.
    kernel: HashMap<StackId, Rc<[u64]>>,
    /// Stacks unwound since the last [`Stacks::settled`], until the symbolizer captures them.
    fresh: HashMap<(u32, StackId), Unwound>,
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
            | What::FdDup { stack, .. } => stack,
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
            What::FdClose { .. } | What::FdCloseRange { .. } => return,
        };
        let Some(sample) = self.samples.remove(&event.tid) else {
            return;
        };
        if sample.ts_ns != event.ts_ns {
            // The record this sample preceded was lost.
            self.stats.unpaired += 1;
            return;
        }
        let fp = stack.and_then(|id| self.kernel_stack(id, kernel));
        let walk = self.unwinder.unwind(
            sample.pid,
            sample.regs,
            unwind::copy_reader(sample.regs.sp, &sample.stack),
        );
        *stack = Some(self.keep(
            sample.pid,
            unwind::merge(walk, fp.as_deref().unwrap_or(&[])),
        ));
    }

    /// The stack of a thread of `pid` blocked in a wait with these registers: frozen while it
    /// waits, so it is read from the process now.
    pub fn blocked(&mut self, pid: u32, regs: Regs) -> StackId {
        let fp = userstack::walk_blocked(pid, regs.ip, regs.fp);
        let walk = self.unwinder.unwind(pid, regs, procmem::live_reader(pid));
        self.keep(pid, unwind::merge(walk, &fp))
    }

    /// The addresses of stack `id` of `pid` and how they were obtained, for the symbolizer.
    /// Unwound stacks are handed out once; kernel stacks come from the map (empty when the
    /// kernel no longer has it).
    pub fn take(
        &mut self,
        pid: u32,
        id: StackId,
        kernel: impl FnOnce(StackId) -> Option<Vec<u64>>,
    ) -> Unwound {
        if id & userstack::WALKED != 0 {
            return self.fresh.remove(&(pid, id)).unwrap_or(Unwound {
                ips: Vec::new(),
                method: unwind::Method::Fp,
                truncated: false,
            });
        }
        unwind::fp_only(self.kernel_stack(id, kernel).as_deref().unwrap_or(&[]))
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

    fn keep(&mut self, pid: u32, unwound: Unwound) -> StackId {
        self.stats.unwound += 1;
        self.stats.truncated += u64::from(unwound.truncated);
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
