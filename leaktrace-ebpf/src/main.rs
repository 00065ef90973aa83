//! leaktrace's kernel side: tracepoint programs that see threads and fds come and go in the
//! traced processes and stream one record per event to userspace, and a kprobe on `fd_install`
//! (where the kernel has kprobes) for the fds no fd syscall tracepoint reports.
//!
//! Small and read-only: the programs never write user memory or change a return value. They
//! filter first (traced tgid, never the tracer), so an untraced process costs one map lookup.
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{pt_regs, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str_bytes,
        generated::{self, bpf_task_pt_regs},
    },
    macros::{kprobe, map, tracepoint, uprobe},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{tracing::StackIdContext, ProbeContext, TracePointContext},
    EbpfContext as _,
};
use leaktrace_common::{
    capacity, futex, Config, Counter, EventHeader, EventKind, ExecEvent, ExitGroupEvent, FdEvent,
    FdKind, FdOp, FdPathEvent, GoFields, GoroutineExitEvent, GoroutineNewEvent, GroupDead,
    InFlightWait, PendingCall, Probe, Shape, StackSample, SyscallSpec, Target, TaskNewEvent,
    ThreadExitEvent, UserRegs, BPF_F_USER_STACK, CLONE_PIDFD, CLONE_THREAD, CLOSE_RANGE_CLOEXEC,
    F_DUPFD, F_DUPFD_CLOEXEC, NO_STACK, PATH_CAP, STACK_COPY_MAX,
};

/// Written by the loader before the programs are loaded (see `Config`).
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    tracer_tgid: 0,
    trace_all: 0,
    newtask_pid_off: 0,
    newtask_flags_off: 0,
    exit_group_dead_off: u32::MAX,
    syscall_nr_off: 0,
    syscall_ret_off: 0,
    syscall_args_off: 0,
    wakeup_bytes: 0,
    stack_copy_bytes: 0,
};

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(capacity::STACKS, 0);

#[map]
static COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(capacity::PROBES * Counter::COUNT, 0);

#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(capacity::TARGETS, 0);

#[map]
static SYSCALLS: Array<SyscallSpec> = Array::with_max_entries(capacity::SYSCALLS, 0);

#[map]
static PENDING: HashMap<u32, PendingCall> = HashMap::with_max_entries(capacity::PENDING, 0);

#[map]
static WAITS: HashMap<u32, InFlightWait> = HashMap::with_max_entries(capacity::WAITS, 0);

/// Frame-pointer stacks (by stack map id) that userspace found complete: an unwind of a sample
/// with this walk added no frame. Their creation events skip the sample, so code built with
/// frame pointers pays for the walk only.
#[map]
static COMPLETE: Array<u8> = Array::with_max_entries(capacity::STACKS, 0);

/// arm64: the stack of each `go` statement in progress, by thread, from [`go_spawn`] to
/// [`go_newproc`] on the same thread microseconds later. LRU: an entry whose `go_newproc`
/// never came (the process stopped being traced between the two) gives way.
#[map]
static GO_SPAWNS: LruHashMap<u32, i32> = LruHashMap::with_max_entries(capacity::GO_SPAWNS, 0);

/// Processes (tgid) that lost a record to a full ring buffer since userspace last emptied the
/// map: it marks them incomplete until the next re-sync with /proc has counted what they hold.
#[map]
static LOSSES: HashMap<u32, u8> = HashMap::with_max_entries(capacity::LOSSES, 0);

#[inline(always)]
fn config() -> Config {
    // SAFETY: a plain read of a global; volatile so the compiler cannot fold the zero default.
    unsafe { read_volatile(&CONFIG) }
}

#[inline(always)]
fn count(probe: u16, counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter.slot(probe)) {
        // SAFETY: per-CPU slot, no other writer while this program runs on this CPU.
        unsafe { *slot += 1 };
    }
}

/// A record of the current process's that did not fit in the ring buffer: counted for its
/// probe and noted for its process. The records are about the current task's process (a fork
/// record's child is seeded from /proc when first seen).
#[inline(always)]
fn lose(probe: u16) {
    count(probe, Counter::RingFull);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if LOSSES.insert(tgid, 1, 0).is_err() {
        count(probe, Counter::LossUnattributed);
    }
}

/// (tgid, tid) of the current task when it is traced.
#[inline(always)]
fn traced_current(cfg: &Config) -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if tgid == cfg.tracer_tgid {
        return None;
    }
    // SAFETY: the value is a u8 copied out at once.
    if cfg.trace_all == 0 && unsafe { TARGETS.get(tgid) }.is_none() {
        return None;
    }
    Some((tgid, pid_tgid as u32))
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// A record header; `ts_ns` also pairs a [`StackSample`] with the record that follows it.
#[inline(always)]
fn header(kind: EventKind, probe: u16, ts_ns: u64, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        ts_ns,
        tgid,
        tid,
        kind: kind as u16,
        probe,
        _pad: 0,
    }
}

/// Submit flags for a record of `size` bytes: wake the reader only when this record takes
/// the unread bytes past `wakeup_bytes`. By default every record that finds the reader caught
/// up wakes it (an irq_work, then an IPI to the reader's CPU), which cost the traced thread more
/// than the record itself; and waking on every record past the mark made each one pay an
/// interrupt while the reader lagged. Whatever no wakeup announces, the reader's timer drains.
#[inline(always)]
fn wakeup(size: usize) -> u64 {
    // Unread bytes include this reserved record and its 8-byte ring header.
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // SAFETY: a plain read of one field of the global; volatile as in `config`. One load: this
    // runs for every record, and the callers' copy of the whole config is not passed down.
    let mark = u64::from(unsafe { read_volatile(&raw const CONFIG.wakeup_bytes) });
    let before = unread.saturating_sub(size as u64 + 8);
    if before < mark && unread >= mark {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Writes `event` to the ring buffer, counting the record either way.
#[inline(always)]
fn emit<T: 'static>(probe: u16, event: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(wakeup(core::mem::size_of::<T>()));
            count(probe, Counter::Emitted);
        }
        None => lose(probe),
    }
}

#[inline(always)]
fn user_stack(ctx: &impl StackIdContext, probe: u16) -> i32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK) {
        Ok(id) => id as i32,
        Err(_) => {
            count(probe, Counter::StackFailed);
            NO_STACK
        }
    }
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    // SAFETY: the offset comes from this kernel's tracepoint format; the helper checks bounds.
    unsafe { ctx.read_at::<T>(offset as usize) }.ok()
}

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = traced_current(&cfg) else {
        return 0;
    };
    let probe = Probe::TASK_NEW;
    let (Some(child), Some(flags)) = (
        read::<i32>(&ctx, cfg.newtask_pid_off),
        read::<u64>(&ctx, cfg.newtask_flags_off),
    ) else {
        return 0;
    };
    let child_tid = child as u32;
    if flags & CLONE_THREAD == 0 && cfg.trace_all == 0 {
        // Follow the new process from its first instruction: it runs only after this returns.
        if TARGETS
            .insert(child_tid, Target::Descendant as u8, 0)
            .is_err()
        {
            count(probe, Counter::TargetsFull);
        }
    }
    let stack_id = user_stack(&ctx, probe);
    let ts = now();
    sample_stack(&cfg, probe, stack_id, ts, tgid, tid);
    emit(
        probe,
        TaskNewEvent {
            header: header(EventKind::TaskNew, probe, ts, tgid, tid),
            child_tid,
            stack_id,
            clone_flags: flags,
        },
    );
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = traced_current(&cfg) else {
        return 0;
    };
    let probe = Probe::THREAD_EXIT;
    let group_dead = if cfg.exit_group_dead_off == u32::MAX {
        GroupDead::Unknown
    } else {
        match read::<u8>(&ctx, cfg.exit_group_dead_off) {
            Some(0) => GroupDead::No,
            Some(_) => GroupDead::Yes,
            None => GroupDead::Unknown,
        }
    };
    // A thread killed while it waits may never pass the futex exit.
    let _ = WAITS.remove(tid);
    if group_dead == GroupDead::Yes {
        // The tgid is free for reuse by an unrelated process: stop tracing it.
        let _ = TARGETS.remove(tgid);
    }
    emit(
        probe,
        ThreadExitEvent {
            header: header(EventKind::ThreadExit, probe, now(), tgid, tid),
            group_dead: group_dead as u8,
            _pad: [0; 7],
        },
    );
    0
}

/// A record that is its header alone, for the current task when it is traced.
#[inline(always)]
fn emit_mark<T: 'static>(
    probe: u16,
    kind: EventKind,
    record: impl FnOnce(EventHeader) -> T,
) -> u32 {
    let cfg = config();
    if let Some((tgid, tid)) = traced_current(&cfg) {
        emit(probe, record(header(kind, probe, now(), tgid, tid)));
    }
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    emit_mark(Probe::EXEC, EventKind::Exec, |header| ExecEvent { header })
}

/// exit_group(2) entry: tells the threads the process's death kills from those that ended
/// before it (counted with the thread exits).
#[tracepoint]
pub fn exit_group_enter(_ctx: TracePointContext) -> u32 {
    emit_mark(Probe::THREAD_EXIT, EventKind::ExitGroup, |header| {
        ExitGroupEvent { header }
    })
}

/// The traced task and the table entry for the syscall behind this tracepoint.
#[inline(always)]
fn syscall_of(ctx: &TracePointContext, cfg: &Config) -> Option<(u32, u32, u32, SyscallSpec)> {
    let (tgid, tid) = traced_current(cfg)?;
    let nr = read::<i32>(ctx, cfg.syscall_nr_off)? as u32;
    let spec = *SYSCALLS.get(nr)?;
    Some((tgid, tid, nr, spec))
}

#[inline(always)]
fn fd_event(op: FdOp, kind: u8, probe: u16, tgid: u32, tid: u32, fd: i32, aux: i32) -> FdEvent {
    FdEvent {
        header: header(EventKind::Fd, probe, now(), tgid, tid),
        op: op as u8,
        kind,
        _pad: 0,
        fd,
        aux,
        stack_id: NO_STACK,
    }
}

/// Entry of an fd syscall: closes are reported here; calls whose exit needs an argument
/// save it keyed by thread.
#[tracepoint]
pub fn fd_syscall_enter(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid, nr, spec)) = syscall_of(&ctx, &cfg) else {
        return 0;
    };
    let Some(shape) = Shape::from_u8(spec.shape) else {
        return 0;
    };
    let arg = |i: u32| read::<u64>(&ctx, cfg.syscall_args_off + i * 8).unwrap_or(0);
    match shape {
        Shape::Close => {
            let fd = arg(0) as i32;
            emit(
                spec.probe,
                fd_event(
                    FdOp::Close,
                    FdKind::Other as u8,
                    spec.probe,
                    tgid,
                    tid,
                    fd,
                    fd,
                ),
            );
        }
        Shape::Fcntl if !matches!(arg(1), F_DUPFD | F_DUPFD_CLOEXEC) => {}
        // Most clones make threads or plain children: only a pidfd's pointer is worth keeping.
        Shape::ClonePidfd if arg(0) & CLONE_PIDFD == 0 => {}
        Shape::Clone3Pidfd => {
            // SAFETY: reads the caller's clone_args; the helper checks the address.
            let Ok([flags, pidfd]) = (unsafe { bpf_probe_read_user(arg(0) as *const [u64; 2]) })
            else {
                return 0;
            };
            if flags & CLONE_PIDFD != 0 {
                pend(spec.probe, tid, nr, [flags, 0, pidfd]);
            }
        }
        shape if shape.needs_entry_args() => {
            // Arguments past the sixth do not exist; clamp so the read stays inside the record.
            let args = [arg(0), arg(1), arg(u32::from(spec.arg).min(5))];
            pend(spec.probe, tid, nr, args);
        }
        _ => {}
    }
    0
}

/// Keeps syscall `nr`'s arguments for its exit on thread `tid`.
#[inline(always)]
fn pend(probe: u16, tid: u32, nr: u32, args: [u64; 3]) {
    let pending = PendingCall { nr, _pad: 0, args };
    if PENDING.insert(tid, pending, 0).is_err() {
        count(probe, Counter::PendingFull);
    }
}

/// Exit of an fd syscall: on success, report the fds it created (or the range it closed).
#[tracepoint]
pub fn fd_syscall_exit(ctx: TracePointContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid, nr, spec)) = syscall_of(&ctx, &cfg) else {
        return 0;
    };
    let Some(shape) = Shape::from_u8(spec.shape) else {
        return 0;
    };
    let pending = if shape.needs_entry_args() {
        // SAFETY: copied out before the entry is removed.
        let saved = unsafe { PENDING.get(tid) }.copied();
        let _ = PENDING.remove(tid);
        match saved {
            Some(p) if p.nr == nr => p,
            // Entry not seen (tracing began mid-call, or the pending map was full).
            _ => return 0,
        }
    } else {
        PendingCall::default()
    };
    let Some(ret) = read::<i64>(&ctx, cfg.syscall_ret_off) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let probe = spec.probe;
    let [arg0, arg1, arg_n] = pending.args;
    match shape {
        Shape::RetFd => emit_created(&ctx, &cfg, FdOp::Open, spec.kind, probe, tgid, tid, ret, -1),
        Shape::RetFdPath => emit_path(&ctx, &cfg, spec.kind, probe, tgid, tid, ret as i32, arg_n),
        Shape::FdPair => {
            // SAFETY: reads the int[2] the kernel just filled in the caller's memory.
            let Ok(fds) = (unsafe { bpf_probe_read_user(arg_n as *const [i32; 2]) }) else {
                count(probe, Counter::PathFailed);
                return 0;
            };
            emit_created(
                &ctx,
                &cfg,
                FdOp::OpenPair,
                spec.kind,
                probe,
                tgid,
                tid,
                fds[0] as i64,
                fds[1],
            );
        }
        Shape::Dup | Shape::Fcntl => emit_created(
            &ctx,
            &cfg,
            FdOp::Dup,
            spec.kind,
            probe,
            tgid,
            tid,
            ret,
            arg0 as i32,
        ),
        Shape::SignalFd if arg0 as i32 == -1 => {
            emit_created(&ctx, &cfg, FdOp::Open, spec.kind, probe, tgid, tid, ret, -1)
        }
        Shape::CloseRange if arg_n & CLOSE_RANGE_CLOEXEC == 0 => emit(
            probe,
            fd_event(
                FdOp::CloseRange,
                FdKind::Other as u8,
                probe,
                tgid,
                tid,
                arg0 as i32,
                arg1 as i32,
            ),
        ),
        // The parent's return is the child's pid; the child's (0) has no pidfd.
        Shape::ClonePidfd | Shape::Clone3Pidfd if ret > 0 => {
            // SAFETY: reads the int the kernel wrote in the caller's memory.
            let Ok(fd) = (unsafe { bpf_probe_read_user(arg_n as *const i32) }) else {
                count(probe, Counter::PathFailed);
                return 0;
            };
            emit_created(
                &ctx,
                &cfg,
                FdOp::Open,
                spec.kind,
                probe,
                tgid,
                tid,
                fd.into(),
                -1,
            );
        }
        Shape::SignalFd
        | Shape::CloseRange
        | Shape::Close
        | Shape::ClonePidfd
        | Shape::Clone3Pidfd => {}
    }
    0
}

/// A creation record with the creator's user stack, and before it the stack sample: shared by the
/// syscall exits and the `fd_install` kprobe.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_created(
    ctx: &impl StackIdContext,
    cfg: &Config,
    op: FdOp,
    kind: u8,
    probe: u16,
    tgid: u32,
    tid: u32,
    fd: i64,
    aux: i32,
) {
    let mut event = fd_event(op, kind, probe, tgid, tid, fd as i32, aux);
    event.stack_id = user_stack(ctx, probe);
    sample_stack(cfg, probe, event.stack_id, event.header.ts_ns, tgid, tid);
    emit(probe, event);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_path(
    ctx: &TracePointContext,
    cfg: &Config,
    kind: u8,
    probe: u16,
    tgid: u32,
    tid: u32,
    fd: i32,
    path_ptr: u64,
) {
    let stack_id = user_stack(ctx, probe);
    let ts = now();
    sample_stack(cfg, probe, stack_id, ts, tgid, tid);
    let Some(mut entry) = EVENTS.reserve::<FdPathEvent>(0) else {
        lose(probe);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, exclusively owned record; every field is written
    // before submit. The path is read straight into the record to keep 256 bytes off the stack.
    unsafe {
        let mut base = fd_event(FdOp::Open, kind, probe, tgid, tid, fd, -1);
        base.header.kind = EventKind::FdPath as u16;
        base.header.ts_ns = ts;
        base.stack_id = stack_id;
        (*event).fd = base;
        (*event)._pad = [0; 5];
        let path = &mut (*event).path;
        let (len, truncated) = match bpf_probe_read_user_str_bytes(path_ptr as *const u8, path) {
            Ok(bytes) => (bytes.len(), bytes.len() >= PATH_CAP - 1),
            Err(_) => {
                count(probe, Counter::PathFailed);
                (0, false)
            }
        };
        (*event).path_len = len as u16;
        (*event).truncated = truncated as u8;
    }
    entry.submit(wakeup(core::mem::size_of::<FdPathEvent>()));
    count(probe, Counter::Emitted);
}

/// The current thread's user registers, saved at syscall entry.
#[inline(always)]
fn user_regs() -> Option<UserRegs> {
    // SAFETY: helpers without preconditions; the task is the current one, whose saved user
    // registers stay put while it is in a syscall. The read is checked by the helper.
    let regs = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        bpf_probe_read_kernel(regs).ok()?
    };
    #[cfg(bpf_target_arch = "x86_64")]
    return Some(UserRegs {
        ip: regs.rip,
        sp: regs.rsp,
        fp: regs.rbp,
        lr: 0,
    });
    #[cfg(bpf_target_arch = "aarch64")]
    return Some(UserRegs {
        ip: regs.pc,
        sp: regs.sp,
        fp: regs.regs[29],
        lr: regs.regs[30],
    });
}

/// Lengths a stack copy tries: `want`, then a sixteenth shorter each time.
const STACK_COPY_STEPS: usize = 16;

/// Before a creation record: its thread's registers and the top `stack_copy_bytes` of its user
/// stack, so userspace can unwind code without frame pointers (the frame-pointer walk in the
/// record itself misses the caller of a frameless libc wrapper). A copy that would run past the
/// end of the stack's mapping fails as a whole, so it is retried shorter, down to a sixteenth
/// (the record keeps its size; `len` says what was copied). Not taken when the record's
/// frame-pointer walk `stack_id` is known to be complete.
#[inline(always)]
fn sample_stack(cfg: &Config, probe: u16, stack_id: i32, ts: u64, tgid: u32, tid: u32) {
    if cfg.stack_copy_bytes == 0 {
        return;
    }
    if stack_id >= 0 && COMPLETE.get(stack_id as u32).is_some_and(|&done| done != 0) {
        return;
    }
    let Some(regs) = user_regs() else {
        count(probe, Counter::StackFailed);
        return;
    };
    // A constant to the verifier (the configuration is read-only once loaded), so the record is
    // reserved at its full size and the stack read straight into it: one copy, not two.
    let want = (cfg.stack_copy_bytes as usize).min(STACK_COPY_MAX);
    let Some(mut entry) = EVENTS.reserve_bytes(StackSample::HEAD + want, 0) else {
        count(probe, Counter::SamplesLost);
        return;
    };
    let record = entry.as_mut_ptr().cast::<StackSample>();
    let mut len = want;
    let mut copied = 0;
    // SAFETY: `record` is the reserved entry, exclusively ours until submitted: its head fields
    // are written in place (never the whole struct, which is longer than the entry), and each
    // read stays within the `want` bytes reserved after the head.
    unsafe {
        let stack = (&raw mut (*record).stack).cast::<c_void>();
        // Shorter by a sixteenth each time: a copy ends at most that short of the stack's top,
        // which holds the environment, argv and auxv, not frames (a shallow stack: a small
        // environment, a thread's first calls). Halving lost the outermost frames. Each length
        // is a constant to the verifier, which older kernels need.
        let step = want / STACK_COPY_STEPS;
        for _ in 0..STACK_COPY_STEPS {
            let src = regs.sp as *const c_void;
            if generated::bpf_probe_read_user(stack, len as u32, src) == 0 {
                copied = len;
                break;
            }
            len -= step;
        }
        (&raw mut (*record).header).write(header(EventKind::StackSample, probe, ts, tgid, tid));
        (&raw mut (*record).regs).write(regs);
        (&raw mut (*record).len).write(copied as u32);
        (&raw mut (*record)._pad).write(0);
    }
    if copied == 0 {
        entry.discard(0);
        count(probe, Counter::StackFailed);
        return;
    }
    entry.submit(wakeup(StackSample::HEAD + want));
    count(probe, Counter::SamplesSent);
}
#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!("leaktrace reads user registers on x86_64 and aarch64 only");

/// The syscall the current thread is in, from the user registers saved at its entry; None when
/// it is in none (-1) or they cannot be read.
#[inline(always)]
fn current_syscall() -> Option<u32> {
    // SAFETY: as in `user_regs`; one field is read, checked by the helper.
    let nr: i64 = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        #[cfg(bpf_target_arch = "x86_64")]
        let nr = bpf_probe_read_kernel(
            regs.add(core::mem::offset_of!(pt_regs, orig_rax))
                .cast::<i64>(),
        )
        .ok()?;
        // The kernel's arm64 `struct pt_regs` is { u64 regs[31], sp, pc, pstate; u64 orig_x0;
        // s32 syscallno; … }: syscallno at 34 * 8 + 8 = 280. aya's aarch64 `pt_regs` binding is
        // the user-visible `user_pt_regs`, which stops at pstate, so it is read at its offset.
        #[cfg(bpf_target_arch = "aarch64")]
        let nr = i64::from(bpf_probe_read_kernel(regs.add(280).cast::<i32>()).ok()?);
        nr
    };
    u32::try_from(nr).ok()
}

/// Whether the current thread is one of io_uring's kernel threads, which belong to the process
/// whose ring they serve: `iou-wrk-<tid>` (io-wq workers, which run blocking requests) and
/// `iou-sqp-<tid>` (the SQPOLL thread, which submits). Their saved user registers are not a
/// syscall of theirs, so the name is what tells.
#[inline(always)]
fn io_uring_thread() -> bool {
    let Ok([a, b, c, d, e, f, g, ..]) = bpf_get_current_comm() else {
        return false;
    };
    // The first seven bytes as one integer: two compares, no byte loop (nor a memcmp, which
    // eBPF does not have).
    let head = u64::from_le_bytes([a, b, c, d, e, f, g, 0]);
    head == u64::from_le_bytes(*b"iou-wrk\0") || head == u64::from_le_bytes(*b"iou-sqp\0")
}

/// `fd_install(fd, file)`: every fd the kernel gives a process passes here once. The syscall
/// tracepoints already report the fd syscalls in `SYSCALLS`; the rest are fds received over a
/// unix socket (SCM_RIGHTS, in recvmsg/recvmmsg), created by io_uring, or installed by any other
/// syscall (an ioctl, …): reported here as opened, with the kind saying which. A kprobe, so it
/// is attached only where the kernel has kprobes; on every hit it costs one target lookup, and
/// in a traced process one more lookup in the syscall table.
#[kprobe]
pub fn fd_install(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = traced_current(&cfg) else {
        return 0;
    };
    let probe = Probe::FD_INSTALL;
    let Some(fd) = ctx.arg::<u32>(0) else {
        return 0;
    };
    let kind = if io_uring_thread() {
        FdKind::IoUring as u8
    } else {
        match current_syscall().and_then(|nr| SYSCALLS.get(nr)) {
            // A tracepoint reports it.
            Some(spec) if spec.shape != 0 => return 0,
            Some(spec) if spec.kind != 0 => spec.kind,
            _ => FdKind::Installed as u8,
        }
    };
    emit_created(
        &ctx,
        &cfg,
        FdOp::Open,
        kind,
        probe,
        tgid,
        tid,
        i64::from(fd),
        -1,
    );
    0
}

/// Records an in-flight wait. The futex path is hot: untraced processes leave at the first
/// lookup, and a traced wait costs a copy of four registers and one map update: no stack walk
/// (userspace walks the frozen stack of the waits that last) and no ring-buffer record.
#[inline(always)]
fn record_wait(ctx: &TracePointContext, probe: u16, op: u32, uaddr_of: impl Fn(&Config) -> u64) {
    let cfg = config();
    let Some((tgid, tid)) = traced_current(&cfg) else {
        return;
    };
    let arg = |i: u32| read::<u64>(ctx, cfg.syscall_args_off + i * 8).unwrap_or(0);
    let (op, val) = if op == futex::WAITV {
        (op, 0)
    } else {
        let cmd = arg(1) as u32 & futex::CMD_MASK;
        if !futex::is_wait(cmd) {
            return;
        }
        (cmd, arg(2) as u32)
    };
    let wait = InFlightWait {
        start_ns: now(),
        uaddr: uaddr_of(&cfg),
        regs: user_regs().unwrap_or_default(),
        tgid,
        op,
        val,
        _pad: 0,
    };
    if WAITS.insert(tid, wait, 0).is_err() {
        count(probe, Counter::WaitsFull);
    }
}

#[tracepoint]
pub fn futex_enter(ctx: TracePointContext) -> u32 {
    record_wait(&ctx, Probe::FUTEX, 0, |cfg| {
        read::<u64>(&ctx, cfg.syscall_args_off).unwrap_or(0)
    });
    0
}

#[tracepoint]
pub fn futex_waitv_enter(ctx: TracePointContext) -> u32 {
    record_wait(&ctx, Probe::FUTEX_WAITV, futex::WAITV, |cfg| {
        // struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 __reserved; } waiters[]
        let waiters = read::<u64>(&ctx, cfg.syscall_args_off).unwrap_or(0);
        // SAFETY: a read of the caller's array; a fault just yields 0.
        unsafe { bpf_probe_read_user((waiters + 8) as *const u64) }.unwrap_or(0)
    });
    0
}

/// Exit of futex / futex_waitv: the wait, if any, is over. Only traced threads have entries,
/// so one delete by tid replaces the target lookup on this hot path.
#[tracepoint]
pub fn futex_exit(_ctx: TracePointContext) -> u32 {
    let _ = WAITS.remove(bpf_get_current_pid_tgid() as u32);
    0
}

/// Integer argument `n` (0 or 1) under Go's register ABI (ABIInternal): RAX, RBX on amd64;
/// R0, R1 on arm64. Go does not follow the C calling convention `ProbeContext::arg` assumes.
#[inline(always)]
fn go_argument(ctx: &ProbeContext, n: usize) -> u64 {
    // SAFETY: a uprobe's context is the user registers saved at the probe, readable in place.
    #[cfg(bpf_target_arch = "x86_64")]
    return unsafe {
        if n == 0 {
            (*ctx.regs).rax
        } else {
            (*ctx.regs).rbx
        }
    };
    #[cfg(bpf_target_arch = "aarch64")]
    return unsafe { (*ctx.regs).regs[n & 1] };
}

/// A u64 field of a goroutine's `runtime.g`; 0 when it cannot be read.
#[inline(always)]
fn g_field(g: u64, offset: u16) -> u64 {
    // SAFETY: the helper checks the read; a bad address yields an error, not a fault.
    unsafe { bpf_probe_read_user((g + u64::from(offset)) as *const u64) }.unwrap_or(0)
}

/// Where this probe's binary keeps the g fields (see [`GoFields`]).
#[inline(always)]
fn go_fields(ctx: &ProbeContext) -> GoFields {
    // SAFETY: helper without preconditions on a probe context.
    GoFields::from_cookie(unsafe { generated::bpf_get_attach_cookie(ctx.as_ptr()) })
}

/// At `runqput(pp, newg, true)` in `runtime.newproc.func1`, right after `runtime.newproc1`
/// made the goroutine: every `go` statement passes here once, with the new g (goid, parent,
/// creation site and function set) as the second argument. On amd64 the frame-pointer walk
/// from here crosses `systemstack` into the creating goroutine's stack (systemstack leaves its
/// frame pointer in place), so the stack is the `go` statement's; on arm64 it is
/// [`go_spawn`]'s. A plain uprobe, never a
/// uretprobe: those rewrite return addresses on the stack, which Go's stack copying and
/// tracebacks do not survive.
#[uprobe]
pub fn go_newproc(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = traced_current(&cfg) else {
        return 0;
    };
    let probe = Probe::GOROUTINE_NEW;
    let fields = go_fields(&ctx);
    let g = go_argument(&ctx, 1);
    #[cfg(bpf_target_arch = "aarch64")]
    // SAFETY: the value is copied out before the entry is removed.
    let stack_id = match unsafe { GO_SPAWNS.get(tid) }.copied() {
        Some(id) => {
            let _ = GO_SPAWNS.remove(tid);
            id
        }
        None => user_stack(&ctx, probe),
    };
    #[cfg(not(bpf_target_arch = "aarch64"))]
    let stack_id = user_stack(&ctx, probe);
    emit(
        probe,
        GoroutineNewEvent {
            header: header(EventKind::GoroutineNew, probe, now(), tgid, tid),
            goid: g_field(g, fields.goid),
            parent_goid: g_field(g, fields.parent_goid),
            g,
            gopc: g_field(g, fields.gopc),
            startpc: g_field(g, fields.startpc),
            stack_id,
            _pad: 0,
        },
    );
    0
}

/// arm64 only: at `runtime.newproc`'s call of `runtime.systemstack`, still on the creating
/// goroutine's stack. arm64's systemstack loads g0's frame pointer before it calls
/// `newproc.func1`, so [`go_newproc`]'s walk would end on the system stack: this walk is the
/// `go` statement's stack, kept for it by thread.
#[uprobe]
pub fn go_spawn(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((_, tid)) = traced_current(&cfg) else {
        return 0;
    };
    let stack_id = user_stack(&ctx, Probe::GOROUTINE_NEW);
    let _ = GO_SPAWNS.insert(tid, stack_id, 0);
    0
}

/// Start of `runtime.gdestroy` (`goexit0` before Go 1.22): a goroutine ended; its g (first
/// argument) still holds its goid.
#[uprobe]
pub fn go_gdestroy(ctx: ProbeContext) -> u32 {
    let cfg = config();
    let Some((tgid, tid)) = traced_current(&cfg) else {
        return 0;
    };
    let probe = Probe::GOROUTINE_EXIT;
    let goid = g_field(go_argument(&ctx, 0), go_fields(&ctx).goid);
    emit(
        probe,
        GoroutineExitEvent {
            header: header(EventKind::GoroutineExit, probe, now(), tgid, tid),
            goid,
        },
    );
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

/// The benchmark floor (`leaktrace __floor`, used by `cargo xtask bench`): attached in place of
/// every program above, it measures what the kernel charges for running any program there.
#[tracepoint]
pub fn floor(_ctx: TracePointContext) -> u32 {
    0
}

/// The goroutine probes' floor (`leaktrace __floor GO_BINARY…`): at the goroutine probe points,
/// what the kernel charges for a uprobe hit and running any program there.
#[uprobe]
pub fn go_floor(_ctx: ProbeContext) -> u32 {
    0
}

/// The `fd_install` kprobe's floor: what the kernel charges for a kprobe hit there.
#[kprobe]
pub fn fd_install_floor(_ctx: ProbeContext) -> u32 {
    0
}
