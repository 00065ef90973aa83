//! Typed events: what the decoder makes of ring-buffer records, and all the aggregator consumes.

use crate::{
    model::{FdKind, StackId},
    unwind::Regs,
};

/// A ring-buffer record: an event, or the stack sample of the creation event that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Event(Event),
    Sample(Sample),
}

/// Registers and the top of the user stack of thread `tid` at the creation event with the
/// same `ts_ns`, which comes next from that thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub regs: Regs,
    /// Bytes copied from `regs.sp` upwards.
    pub stack: Vec<u8>,
}

/// One thing that happened in a traced process, in kernel order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Process the event happened in.
    pub pid: u32,
    /// Thread the event happened in.
    pub tid: u32,
    pub what: What,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// `tid` created task `child_tid`: a thread of `pid` when `thread`, else a new process
    /// (`child_tid` is then its pid) that starts with a copy of `pid`'s fds.
    TaskNew {
        child_tid: u32,
        thread: bool,
        stack: Option<StackId>,
    },
    /// Thread `tid` exited; `group_dead` says whether it was the process's last (None: this
    /// kernel does not say).
    ThreadExit {
        group_dead: Option<bool>,
    },
    /// A thread of the process called exit_group: threads exiting from now on die with it.
    ExitGroup,
    /// The process replaced its image: every other thread is gone, the execing thread now has
    /// tid == pid, close-on-exec fds are closed.
    Exec,
    /// New fds of one kind from one call (two for pipe/socketpair).
    FdOpen {
        fds: FdPair,
        kind: FdKind,
        stack: Option<StackId>,
        /// Path asked for by an open; `truncated` when cut at the capture limit.
        path: Option<Path>,
    },
    /// `fd` now refers to what `source` refers to; whatever `fd` was before is closed.
    FdDup {
        fd: i32,
        source: i32,
        stack: Option<StackId>,
    },
    FdClose {
        fd: i32,
    },
    /// Every fd in `first..=last` closed.
    FdCloseRange {
        first: u32,
        last: u32,
    },
    /// A Go `go` statement created goroutine `goroutine`.
    GoroutineNew {
        goroutine: Goroutine,
        stack: Option<StackId>,
    },
    /// Goroutine `goid` ended.
    GoroutineExit {
        goid: u64,
    },
}

/// What the creation probe reads from a new goroutine's `runtime.g`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Goroutine {
    pub goid: u64,
    /// The goroutine that ran the `go` statement.
    pub parent_goid: u64,
    /// Address of its `runtime.g`, where its state can be read while it lives.
    pub g: u64,
    /// Return address of the `go` statement's call into the runtime: the creation site.
    pub gopc: u64,
    /// Its function.
    pub startpc: u64,
}

/// One or two fds created together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdPair {
    One(i32),
    Two(i32, i32),
}

impl FdPair {
    pub fn iter(self) -> impl Iterator<Item = i32> {
        let (a, b) = match self {
            Self::One(a) => (a, None),
            Self::Two(a, b) => (a, Some(b)),
        };
        std::iter::once(a).chain(b)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub text: String,
    pub truncated: bool,
}
