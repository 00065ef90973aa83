//! The one ABI between leaktrace's eBPF programs and its userspace.
//!
//! Every record the kernel side writes into the ring buffer starts with an [`EventHeader`]; the
//! header's `kind` says which `#[repr(C)]` record follows, and the userspace decoder checks the
//! record's length against that type's size before it trusts a byte of it. All types here are
//! plain old data with explicit padding so both sides agree on every offset.
#![no_std]

/// Names of the maps and global variables in the eBPF object, shared so a rename breaks the build
/// rather than the loader.
pub mod names {
    pub const EVENTS: &str = "EVENTS";
    pub const STACKS: &str = "STACKS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const TARGETS: &str = "TARGETS";
    pub const SYSCALLS: &str = "SYSCALLS";
    pub const PENDING: &str = "PENDING";
    pub const CONFIG: &str = "CONFIG";
    pub const WAITS: &str = "WAITS";
    pub const COMPLETE: &str = "COMPLETE";
    pub const LOSSES: &str = "LOSSES";
}

/// Capacity of the in-kernel maps (userspace may shrink or grow some at load time).
pub mod capacity {
    /// Default ring buffer size in bytes (a power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 8 << 20;
    /// Distinct user stacks the kernel can hold; the stack map is a hash of this many buckets.
    pub const STACKS: u32 = 16384;
    /// Processes traced at once (targets plus the descendants they fork).
    pub const TARGETS: u32 = 8192;
    /// Threads that can be inside an fd syscall at the same moment.
    pub const PENDING: u32 = 16384;
    /// Syscall numbers the dispatch table covers (x86_64 and aarch64 are both below 512).
    pub const SYSCALLS: u32 = 512;
    /// Probe slots in the counter array.
    pub const PROBES: u32 = 64;
    /// Threads that can be inside a futex wait at the same moment.
    pub const WAITS: u32 = 65536;
    /// Threads that can be between `runtime.newproc`'s two probes (arm64) at the same moment.
    pub const GO_SPAWNS: u32 = 4096;
    /// Processes that can have lost records between two reports (userspace empties the map at
    /// each one); losses past it are counted in [`Counter::LossUnattributed`].
    pub const LOSSES: u32 = 4096;
}

/// Bytes of user stack a [`StackSample`] can carry (`--stack-copy` is at most this).
pub const STACK_COPY_MAX: usize = 16384;

/// Bytes of a pathname captured at open; longer paths are cut and marked truncated.
pub const PATH_CAP: usize = 256;

/// `bpf_get_stackid` flag: walk the user stack.
pub const BPF_F_USER_STACK: u64 = 1 << 8;

/// The clone flag that makes a new task a thread of its creator's process.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// The clone flag that gives the parent a pidfd of the child, written to user memory rather
/// than returned (Go's os/exec asks for one on every command it starts).
pub const CLONE_PIDFD: u64 = 0x0000_1000;

/// `close_range` flag that only marks fds close-on-exec instead of closing them.
pub const CLOSE_RANGE_CLOEXEC: u64 = 1 << 2;

/// `fcntl` commands that duplicate an fd.
pub const F_DUPFD: u64 = 0;
pub const F_DUPFD_CLOEXEC: u64 = 1030;

/// Marks "no stack" in a record's `stack_id` (closes carry none; a failed capture also lands
/// here, and is counted in [`Counter::StackFailed`]).
pub const NO_STACK: i32 = -1;

/// What follows the header in a ring-buffer record.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A task was created by clone/fork: [`TaskNewEvent`].
    TaskNew = 1,
    /// A thread exited: [`ThreadExitEvent`].
    ThreadExit = 2,
    /// A process replaced its image: [`ExecEvent`].
    Exec = 3,
    /// An fd operation without a path: [`FdEvent`].
    Fd = 4,
    /// An open that carries the path it opened: [`FdPathEvent`].
    FdPath = 5,
    /// The user registers and a copy of the user stack of the creation record that follows
    /// (same `tid` and `ts_ns`): [`StackSample`].
    StackSample = 6,
    /// A goroutine was created: [`GoroutineNewEvent`].
    GoroutineNew = 7,
    /// A goroutine ended: [`GoroutineExitEvent`].
    GoroutineExit = 8,
    /// A thread called exit_group: [`ExitGroupEvent`].
    ExitGroup = 9,
}

impl EventKind {
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::TaskNew,
            2 => Self::ThreadExit,
            3 => Self::Exec,
            4 => Self::Fd,
            5 => Self::FdPath,
            6 => Self::StackSample,
            7 => Self::GoroutineNew,
            8 => Self::GoroutineExit,
            9 => Self::ExitGroup,
            _ => return None,
        })
    }
}

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, comparable with userspace's monotonic clock.
    pub ts_ns: u64,
    /// Process (thread group) id of the task the event happened in.
    pub tgid: u32,
    /// Thread id of that task.
    pub tid: u32,
    /// An [`EventKind`].
    pub kind: u16,
    /// Probe that produced the record: a [`Probe`] slot.
    pub probe: u16,
    pub _pad: u32,
}

/// clone/fork/pthread_create: `task:task_newtask`, seen from the creating task.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskNewEvent {
    pub header: EventHeader,
    /// Thread id of the new task (equal to its tgid unless `CLONE_THREAD` is set).
    pub child_tid: u32,
    /// User stack of the creator, or [`NO_STACK`].
    pub stack_id: i32,
    pub clone_flags: u64,
}

/// `sched:sched_process_exit`, seen from the exiting thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadExitEvent {
    pub header: EventHeader,
    /// A [`GroupDead`] value.
    pub group_dead: u8,
    pub _pad: [u8; 7],
}

/// Whether an exiting thread was the last of its process.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupDead {
    No = 0,
    Yes = 1,
    /// This kernel's tracepoint has no `group_dead` field.
    Unknown = 2,
}

/// `sched:sched_process_exec`, seen from the task after the exec.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
}

/// `syscalls:sys_enter_exit_group`: the process is ending; every thread that exits from now on
/// is killed with it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitGroupEvent {
    pub header: EventHeader,
}

/// What an fd syscall did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdOp {
    /// `fd` is new.
    Open = 1,
    /// `fd` and `aux` are both new (pipe, socketpair).
    OpenPair = 2,
    /// `fd` is a duplicate of `aux`, silently closing whatever `fd` was before (dup2/dup3).
    Dup = 3,
    /// `fd` was closed.
    Close = 4,
    /// Every fd in `fd..=aux` was closed (`aux` is `u32::MAX as i32` for "to the end").
    CloseRange = 5,
}

impl FdOp {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Open,
            2 => Self::OpenPair,
            3 => Self::Dup,
            4 => Self::Close,
            5 => Self::CloseRange,
            _ => return None,
        })
    }
}

/// Kind of object behind an fd, as far as the creating syscall tells; for an fd seen only by the
/// `fd_install` kprobe (no fd syscall tracepoint reports it), where it came from instead:
/// [`FdKind::Received`], [`FdKind::IoUring`] or [`FdKind::Installed`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FdKind {
    File = 1,
    Socket = 2,
    Pipe = 3,
    EventFd = 4,
    TimerFd = 5,
    Epoll = 6,
    SignalFd = 7,
    Inotify = 8,
    Fanotify = 9,
    MemFd = 10,
    PidFd = 11,
    Other = 12,
    /// A duplicate: the kind is that of the source fd, which only userspace knows.
    Inherit = 13,
    /// Received from another process over a unix socket (SCM_RIGHTS): installed during recvmsg
    /// or recvmmsg.
    Received = 14,
    /// Created by io_uring: installed during io_uring_enter, or by one of the process's io_uring
    /// kernel threads (`iou-wrk-*`, `iou-sqp-*`).
    IoUring = 15,
    /// Installed during a syscall the tracepoints do not follow (an ioctl, seccomp, mq_open, …).
    Installed = 16,
}

impl FdKind {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::File,
            2 => Self::Socket,
            3 => Self::Pipe,
            4 => Self::EventFd,
            5 => Self::TimerFd,
            6 => Self::Epoll,
            7 => Self::SignalFd,
            8 => Self::Inotify,
            9 => Self::Fanotify,
            10 => Self::MemFd,
            11 => Self::PidFd,
            12 => Self::Other,
            13 => Self::Inherit,
            14 => Self::Received,
            15 => Self::IoUring,
            16 => Self::Installed,
            _ => return None,
        })
    }
}

/// An fd created, duplicated or closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdEvent {
    pub header: EventHeader,
    /// An [`FdOp`].
    pub op: u8,
    /// An [`FdKind`].
    pub kind: u8,
    pub _pad: u16,
    pub fd: i32,
    /// Second fd: the pair's other end, the dup source, or the close_range end.
    pub aux: i32,
    /// User stack of the creating call, or [`NO_STACK`].
    pub stack_id: i32,
}

/// An open, with the path the program asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdPathEvent {
    pub fd: FdEvent,
    /// Bytes of `path` in use, without the terminating NUL.
    pub path_len: u16,
    /// 1 when the path was longer than [`PATH_CAP`] - 1 bytes and was cut.
    pub truncated: u8,
    pub _pad: [u8; 5],
    pub path: [u8; PATH_CAP],
}

/// A thread's user registers as saved at syscall entry: what unwinding starts from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer.
    pub sp: u64,
    /// Frame pointer (rbp, x29).
    pub fp: u64,
    /// Link register (aarch64 x30: the return address of a leaf that has not saved it); 0 on
    /// x86_64.
    pub lr: u64,
}

/// Registers and the top of the user stack at a creation event, for unwinding with the
/// binaries' unwind tables (code without frame pointers). Written just before the creation
/// record it belongs to, with the same header `tid` and `ts_ns`; only the first `len` bytes
/// of `stack` are sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSample {
    pub header: EventHeader,
    pub regs: UserRegs,
    /// Bytes of `stack` in use: copied from `regs.sp` upwards.
    pub len: u32,
    pub _pad: u32,
    pub stack: [u8; STACK_COPY_MAX],
}

impl StackSample {
    /// Bytes before `stack`: a record is this plus `len`.
    pub const HEAD: usize = core::mem::offset_of!(StackSample, stack);
}

/// A `go` statement ran: the uprobe just after `runtime.newproc1` returned the new g, whose
/// fields are copied out here.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineNewEvent {
    pub header: EventHeader,
    /// `g.goid`: unique within the process for its lifetime.
    pub goid: u64,
    /// `g.parentGoid`: the goroutine that ran the `go` statement.
    pub parent_goid: u64,
    /// Address of the `runtime.g`: userspace reads the goroutine's state there later.
    pub g: u64,
    /// `g.gopc`: return address of the `go` statement's call into the runtime.
    pub gopc: u64,
    /// `g.startpc`: the goroutine's function.
    pub startpc: u64,
    /// User stack of the creating goroutine (frame pointers: Go always keeps them), or
    /// [`NO_STACK`].
    pub stack_id: i32,
    pub _pad: u32,
}

/// A goroutine ended (`runtime.gdestroy`, or `goexit0` before Go 1.22).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineExitEvent {
    pub header: EventHeader,
    pub goid: u64,
}

/// Where `runtime.g` keeps the fields the Go probes read, for the binary a probe is attached
/// to: packed into the probe's attach cookie (16 bits each), so one program serves every Go
/// version and no map lookup is needed per hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoFields {
    pub goid: u16,
    pub parent_goid: u16,
    pub gopc: u16,
    pub startpc: u16,
}

impl GoFields {
    pub const fn cookie(self) -> u64 {
        self.goid as u64
            | (self.parent_goid as u64) << 16
            | (self.gopc as u64) << 32
            | (self.startpc as u64) << 48
    }

    pub const fn from_cookie(cookie: u64) -> Self {
        Self {
            goid: cookie as u16,
            parent_goid: (cookie >> 16) as u16,
            gopc: (cookie >> 32) as u16,
            startpc: (cookie >> 48) as u16,
        }
    }
}

/// How the generic syscall programs treat one syscall number; userspace fills the table from
/// the architecture's syscall numbers, so the eBPF object is the same on x86_64 and aarch64.
///
/// The `fd_install` kprobe reads the same table for the syscall the current thread is in: an
/// entry with a shape is reported by the tracepoints, so the kprobe leaves its fds alone; an
/// entry without one gives the kind of the fds installed during that syscall
/// ([`FdKind::Received`] for recvmsg, …), and no entry at all means [`FdKind::Installed`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallSpec {
    /// A [`Shape`]; 0 means the syscall programs do not trace the syscall.
    pub shape: u8,
    /// The [`FdKind`] the syscall creates (with a shape), or that fds `fd_install` installs
    /// during it are reported as (without one); 0: none.
    pub kind: u8,
    /// Which syscall argument (0-5) holds the path / fd-array pointer / source fd.
    pub arg: u8,
    pub _pad: u8,
    /// Probe slot for the counters, [`Probe::syscall`].
    pub probe: u16,
    pub _pad2: u16,
}

/// The shapes of fd syscalls: where the new fd comes from and what must be kept from entry.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The return value is the new fd.
    RetFd = 1,
    /// The return value is the new fd; argument `arg` is the path opened.
    RetFdPath = 2,
    /// Success writes two fds to the `int[2]` at argument `arg` (pipe, pipe2, socketpair).
    FdPair = 3,
    /// The return value duplicates the fd in argument 0 (dup, dup2, dup3).
    Dup = 4,
    /// fcntl: only F_DUPFD / F_DUPFD_CLOEXEC create an fd (a duplicate of argument 0).
    Fcntl = 5,
    /// signalfd/signalfd4: creates only when argument 0 is -1, else updates that fd.
    SignalFd = 6,
    /// close: the fd in argument 0 is released whatever close returns (except EBADF, which
    /// means there was nothing to release), so it is reported at entry.
    Close = 7,
    /// close_range(first, last, flags): on success closes the range unless CLOSE_RANGE_CLOEXEC.
    CloseRange = 8,
    /// clone(flags, …): with [`CLONE_PIDFD`] in argument 0, the parent's new pidfd is the int
    /// the kernel wrote at the pointer in argument `arg` (parent_tid).
    ClonePidfd = 9,
    /// clone3(args, size): likewise, with flags and the pidfd pointer in the `clone_args` at
    /// argument 0 (fields `flags` and `pidfd`, its first two u64s).
    Clone3Pidfd = 10,
}

impl Shape {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::RetFd,
            2 => Self::RetFdPath,
            3 => Self::FdPair,
            4 => Self::Dup,
            5 => Self::Fcntl,
            6 => Self::SignalFd,
            7 => Self::Close,
            8 => Self::CloseRange,
            9 => Self::ClonePidfd,
            10 => Self::Clone3Pidfd,
            _ => return None,
        })
    }

    /// Whether the exit program needs arguments saved at entry.
    pub const fn needs_entry_args(self) -> bool {
        !matches!(self, Self::RetFd | Self::Close)
    }
}

/// Syscall arguments saved at entry for the matching exit, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCall {
    /// Syscall number, checked at exit so a missed exit never pairs with the wrong call.
    pub nr: u32,
    pub _pad: u32,
    pub args: [u64; 3],
}

/// Probe slots. The fixed programs come first; fd syscalls take the slots from
/// [`Probe::FIRST_SYSCALL`] on, in the order of userspace's syscall table.
pub struct Probe;

impl Probe {
    pub const TASK_NEW: u16 = 0;
    pub const THREAD_EXIT: u16 = 1;
    pub const EXEC: u16 = 2;
    pub const FUTEX: u16 = 3;
    pub const FUTEX_WAITV: u16 = 4;
    pub const GOROUTINE_NEW: u16 = 5;
    pub const GOROUTINE_EXIT: u16 = 6;
    /// The `fd_install` kprobe: fds no fd syscall tracepoint reports.
    pub const FD_INSTALL: u16 = 7;
    pub const FIRST_SYSCALL: u16 = 8;

    pub const fn syscall(index: u16) -> u16 {
        Self::FIRST_SYSCALL + index
    }
}

/// Per-probe counters kept in a per-CPU array at `probe * Counter::COUNT + counter`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Records written to the ring buffer.
    Emitted = 0,
    /// Records lost because the ring buffer was full.
    RingFull = 1,
    /// `bpf_get_stackid` failures (stack map bucket taken, or no user stack), and user stacks
    /// that could not be copied for a [`StackSample`].
    StackFailed = 2,
    /// Descendants not followed because the target map was full.
    TargetsFull = 3,
    /// Syscalls not tracked because the pending-call map was full.
    PendingFull = 4,
    /// Paths that could not be read from user memory.
    PathFailed = 5,
    /// Futex waits not tracked because the in-flight wait map was full.
    WaitsFull = 6,
    /// [`StackSample`]s written. Kept apart from `Emitted`: they are not events.
    SamplesSent = 7,
    /// [`StackSample`]s lost because the ring buffer was full: their record then has only its
    /// frame-pointer stack.
    SamplesLost = 8,
    /// Lost records whose process could not be noted because the loss map was full: every
    /// traced process is then marked incomplete.
    LossUnattributed = 9,
}

impl Counter {
    pub const COUNT: u32 = 10;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Self::Emitted,
        Self::RingFull,
        Self::StackFailed,
        Self::TargetsFull,
        Self::PendingFull,
        Self::PathFailed,
        Self::WaitsFull,
        Self::SamplesSent,
        Self::SamplesLost,
        Self::LossUnattributed,
    ];

    pub const fn slot(self, probe: u16) -> u32 {
        probe as u32 * Self::COUNT + self as u32
    }
}

/// Load-time configuration, written by userspace into the one-element `CONFIG` array before
/// attaching, so the programs never hard-code one kernel's tracepoint layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// tgid of leaktrace itself, never traced.
    pub tracer_tgid: u32,
    /// 1: trace every process (except the tracer); 0: only tgids in `TARGETS`.
    pub trace_all: u32,
    /// Offset of `pid` in `task:task_newtask`.
    pub newtask_pid_off: u32,
    /// Offset of `clone_flags` (u64) in `task:task_newtask`.
    pub newtask_flags_off: u32,
    /// Offset of `group_dead` in `sched:sched_process_exit`, or `u32::MAX` when absent.
    pub exit_group_dead_off: u32,
    /// Offset of `__syscall_nr` in syscall tracepoints.
    pub syscall_nr_off: u32,
    /// Offset of `ret` in `sys_exit_*`.
    pub syscall_ret_off: u32,
    /// Offset of `args[0]` in `sys_enter_*` (each argument is 8 bytes).
    pub syscall_args_off: u32,
    /// Records wake the reader only once this many bytes wait in the ring buffer; the reader
    /// also drains on a short timer (see `wakeup_bytes` in the loader).
    pub wakeup_bytes: u32,
    /// Bytes of user stack copied at each creation event ([`StackSample`]); 0: none, stacks
    /// are frame-pointer walks only. A multiple of 8, at most [`STACK_COPY_MAX`].
    pub stack_copy_bytes: u32,
}

/// `futex(2)` commands that put the caller to sleep (the command is `op & FUTEX_CMD_MASK`).
pub mod futex {
    pub const CMD_MASK: u32 = !(128 | 256); // ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
    pub const WAIT: u32 = 0;
    pub const LOCK_PI: u32 = 6;
    pub const WAIT_BITSET: u32 = 9;
    pub const WAIT_REQUEUE_PI: u32 = 11;
    pub const LOCK_PI2: u32 = 13;
    /// Marks a `futex_waitv` wait in [`super::InFlightWait::op`] (not a futex(2) command).
    pub const WAITV: u32 = u32::MAX;

    pub const fn is_wait(cmd: u32) -> bool {
        matches!(
            cmd,
            WAIT | LOCK_PI | WAIT_BITSET | WAIT_REQUEUE_PI | LOCK_PI2
        )
    }
}

/// A futex wait in progress, in `WAITS` keyed by thread id: written at syscall entry, removed
/// at exit or when the thread exits. Userspace scans the map; a waiter that never wakes is
/// exactly one whose entry stays.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlightWait {
    /// `bpf_ktime_get_ns()` at entry.
    pub start_ns: u64,
    /// The futex word (for futex_waitv: the first waiter's).
    pub uaddr: u64,
    /// The waiting thread's user registers at entry. Its user stack is frozen while it waits,
    /// so userspace unwinds it from these when the wait has lasted, instead of every wait
    /// paying a stack walk in the kernel.
    pub regs: UserRegs,
    pub tgid: u32,
    /// The futex command ([`futex`]), or [`futex::WAITV`].
    pub op: u32,
    /// The value the caller expected in the futex word (glibc's mutex waits pass 2).
    pub val: u32,
    pub _pad: u32,
}

/// Value in `TARGETS`: why a tgid is traced.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Named by the user (`--pid`, or the spawned command).
    Root = 1,
    /// Forked by a traced process.
    Descendant = 2,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] plain old data with explicit padding.
    unsafe impl aya::Pod for super::SyscallSpec {}
    unsafe impl aya::Pod for super::PendingCall {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::InFlightWait {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fd_kind_round_trips_and_no_other_value_decodes() {
        let mut kinds = 0;
        for v in 0..=u8::MAX {
            if let Some(kind) = FdKind::from_u8(v) {
                assert_eq!(kind as u8, v);
                kinds += 1;
            }
        }
        assert_eq!(kinds, 16);
        assert_eq!(FdKind::from_u8(14), Some(FdKind::Received));
        assert_eq!(FdKind::from_u8(15), Some(FdKind::IoUring));
        assert_eq!(FdKind::from_u8(16), Some(FdKind::Installed));
        assert_eq!(FdKind::from_u8(0), None);
        assert_eq!(FdKind::from_u8(17), None);
    }
}
