//! The vocabulary shared by the aggregator, symbolizer and reporters.

use std::collections::BTreeMap;

use serde::Serialize;

/// A stack id from the kernel's stack map.
pub type StackId = u32;

/// A user stack as captured: the id only means something together with the address space it
/// was taken in, i.e. the process and which of its images (exec generation) was running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackRef {
    pub pid: u32,
    pub exec_gen: u32,
    pub id: StackId,
}

/// What leaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Thread,
    Fd,
    /// A thread blocked in a futex wait.
    Waiter,
    /// A Go goroutine.
    Goroutine,
}

impl Resource {
    /// As in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Thread => "thread",
            Self::Fd => "fd",
            Self::Waiter => "waiter",
            Self::Goroutine => "goroutine",
        }
    }
}

/// Kind of object behind an fd; for the fds only the `fd_install` kprobe sees, where it came
/// from instead (see [`FdKind::is_origin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FdKind {
    File,
    Socket,
    Pipe,
    EventFd,
    TimerFd,
    Epoll,
    SignalFd,
    Inotify,
    Fanotify,
    MemFd,
    PidFd,
    Other,
    /// Received over a unix socket (SCM_RIGHTS).
    Received,
    /// Created by io_uring.
    #[serde(rename = "io_uring")]
    IoUring,
    /// Installed by a syscall the tracepoints do not follow.
    Installed,
}

impl FdKind {
    pub const ALL: [FdKind; 15] = [
        Self::File,
        Self::Socket,
        Self::Pipe,
        Self::EventFd,
        Self::TimerFd,
        Self::Epoll,
        Self::SignalFd,
        Self::Inotify,
        Self::Fanotify,
        Self::MemFd,
        Self::PidFd,
        Self::Other,
        Self::Received,
        Self::IoUring,
        Self::Installed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Socket => "socket",
            Self::Pipe => "pipe",
            Self::EventFd => "eventfd",
            Self::TimerFd => "timerfd",
            Self::Epoll => "epoll",
            Self::SignalFd => "signalfd",
            Self::Inotify => "inotify",
            Self::Fanotify => "fanotify",
            Self::MemFd => "memfd",
            Self::PidFd => "pidfd",
            Self::Other => "other",
            Self::Received => "received",
            Self::IoUring => "io_uring",
            Self::Installed => "installed",
        }
    }

    /// A kind that says where the fd came from (received, io_uring, installed), not what it
    /// is: /proc, which knows only the latter, neither shows nor corrects it.
    pub fn is_origin(self) -> bool {
        matches!(self, Self::Received | Self::IoUring | Self::Installed)
    }

    /// Classifies an `/proc/PID/fd/N` link target, e.g. `socket:[123]`, `anon_inode:[eventfd]`,
    /// `/memfd:name (deleted)`, `/etc/passwd`.
    pub fn from_link(target: &str) -> Self {
        if target.starts_with("socket:") {
            return Self::Socket;
        }
        if target.starts_with("pipe:") {
            return Self::Pipe;
        }
        if target.starts_with("/memfd:") {
            return Self::MemFd;
        }
        if let Some(anon) = target.strip_prefix("anon_inode:") {
            let name = anon.trim_start_matches('[').trim_end_matches(']');
            return match name {
                "eventfd" => Self::EventFd,
                "timerfd" => Self::TimerFd,
                "eventpoll" => Self::Epoll,
                "signalfd" => Self::SignalFd,
                "inotify" => Self::Inotify,
                "fanotify" => Self::Fanotify,
                "pidfd" => Self::PidFd,
                _ => Self::Other,
            };
        }
        if target.starts_with('/') {
            Self::File
        } else {
            Self::Other
        }
    }
}

/// A process's state as /proc shows it at one moment: used to seed the aggregator at start
/// and to re-sync it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pid: u32,
    pub comm: String,
    /// CLOCK_MONOTONIC ns just before /proc was read: anything the events changed after this
    /// is newer than the snapshot.
    pub started_ns: u64,
    pub tids: Vec<u32>,
    pub fds: Vec<(i32, FdKind)>,
}

/// One group of outstanding resources: same process, resource, kind and creating stack.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub pid: u32,
    pub comm: String,
    pub resource: Resource,
    /// Set for fds.
    pub kind: Option<FdKind>,
    pub stack: Option<StackRef>,
    /// Live now from this stack.
    pub outstanding: u64,
    /// Created from this stack while traced.
    pub created: u64,
    pub oldest_age_ns: u64,
    /// Net growth of `outstanding` per second over the observed window.
    pub rate_per_s: f64,
    /// A path one of the outstanding fds was opened with, if any.
    pub sample_path: Option<String>,
    /// The process has exited; this is what it held at exit.
    pub exited: bool,
    /// Set for blocked waiters.
    pub waiter: Option<WaiterDetail>,
    /// Set for threads, fds and goroutines: the verdict on their trend.
    pub leak: Option<LeakDetail>,
    /// Set for goroutines.
    pub goroutine: Option<GoroutineDetail>,
}

/// What a goroutine finding adds: where the goroutines came from, and which of them to read
/// the state of.
#[derive(Clone, Debug, PartialEq)]
pub struct GoroutineDetail {
    /// The `go` statement (a return address in the process; see `runtime.g.gopc`).
    pub gopc: u64,
    /// The goroutines' function.
    pub startpc: u64,
    /// Creation stacks of the goroutines that started these, nearest first: when the standard
    /// library started them, the user code that asked for it is in one of these.
    pub lineage: Vec<StackRef>,
    /// (goid, address of its `runtime.g`) of the outstanding goroutines, oldest first, at most
    /// [`GoroutineDetail::MAX_SCANNED`]: whose states the report reads.
    pub live: Vec<(u64, u64)>,
}

impl GoroutineDetail {
    /// Goroutines per finding whose state a report reads: bounds the memory reads per report.
    pub const MAX_SCANNED: usize = 256;
}

/// Where a group of outstanding threads or fds is heading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trend {
    /// Outstanding keeps growing over the window and the oldest are older than --min-age.
    Leak,
    /// High but flat: a pool that is held, not leaking.
    Stable,
    /// It was outstanding and has drained.
    Released,
}

/// What the verdict engine adds to a thread or fd finding.
#[derive(Clone, Debug, PartialEq)]
pub struct LeakDetail {
    pub trend: Trend,
    /// Released from this stack while traced (closed, exited).
    pub destroyed: u64,
    /// Age of the outstanding objects: median and 90th percentile.
    pub age_p50_ns: u64,
    pub age_p90_ns: u64,
}

/// Per-process totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    pub threads: u64,
    pub fds: BTreeMap<FdKind, u64>,
    /// Of those, how many existed before tracing began (no stack known).
    pub preexisting_threads: u64,
    pub preexisting_fds: u64,
    pub exited: bool,
    /// Some objects were not tracked because a bound was hit: counts are a lower bound.
    pub incomplete: bool,
    /// Threads blocked in futex waits at the last scan (the waiter scan fills this in).
    pub blocked_waiters: u64,
    /// Live goroutines created while traced (Go processes; those from before are unseen).
    pub goroutines: u64,
}

/// How a stack was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub method: crate::unwind::Method,
    /// Neither the unwind nor the frame-pointer walk reached the outermost frame.
    pub truncated: bool,
}

/// One symbolized frame of a user stack; unknown fields are None.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Frame {
    /// The address as captured (a return address for every frame but the innermost).
    pub addr: u64,
    /// Demangled function name.
    pub symbol: Option<String>,
    /// Path of the binary or library the address falls in.
    pub module: Option<String>,
    /// The address's offset in that file: with `module`, names the code when symbols do not.
    pub offset: Option<u64>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The wait syscall a waiter is blocked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitKind {
    Futex,
    FutexWaitv,
}

impl WaitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Futex => "futex",
            Self::FutexWaitv => "futex_waitv",
        }
    }
}

/// How the owner of a lock was determined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    /// A PI futex word holds its owner's tid (FUTEX_TID_MASK).
    PiFutexWord,
    /// glibc's `pthread_mutex_t.__data.__owner`, next to the futex word of a locked mutex.
    GlibcMutexOwner,
}

/// The thread holding the lock a waiter waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub tid: u32,
    pub source: OwnerSource,
}

/// A thread in a futex wait, as one scan of the kernel's in-flight wait map showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    pub pid: u32,
    pub tid: u32,
    /// The futex word waited on (futex_waitv: the first one).
    pub uaddr: u64,
    pub kind: WaitKind,
    /// Monotonic ns when the wait began.
    pub since_ns: u64,
    pub stack: Option<StackRef>,
    /// Who holds the lock, when that can be read from the process's memory.
    pub owner: Option<Owner>,
}

/// What a group of blocked waiters amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Waiters from this stack keep increasing: a leak.
    Growing,
    /// A fixed set blocked for long: shown, not a leak (an idle pool looks like this).
    Stuck,
    /// Part of a cycle of threads each waiting for a lock the next one holds.
    Deadlock,
}

/// One step of a deadlock cycle: `tid` waits on `waits_on`, held by `held_by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleLink {
    pub tid: u32,
    pub waits_on: u64,
    pub held_by: u32,
    pub owner_source: OwnerSource,
    pub stack: Option<StackRef>,
}

/// What a waiter finding adds to a finding.
#[derive(Clone, Debug, PartialEq)]
pub struct WaiterDetail {
    pub kind: WaitKind,
    /// The futex word most of the group waits on.
    pub futex_address: u64,
    /// How many distinct futex words the group waits on.
    pub futex_addresses: usize,
    pub waiting_tids: Vec<u32>,
    pub verdict: Verdict,
    /// For a deadlock: the cycle, starting at one of this group's waiters.
    pub cycle: Vec<CycleLink>,
}

/// A place in Go code, named from the binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoPlace {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// How many of a finding's goroutines were in one state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WaitCount {
    /// The Go runtime's wait reason ("chan send", "select", …) or, for a goroutine not waiting,
    /// its status ("runnable", "running", "syscall").
    pub reason: String,
    pub count: u64,
}

/// A goroutine finding as the report shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoroutineReport {
    /// The binary's Go version.
    pub go: String,
    /// The `go` statement.
    pub created_at: Option<GoPlace>,
    /// The goroutines' function.
    pub start: Option<GoPlace>,
    /// For goroutines the standard library started: the nearest user code among the creation
    /// stacks of their ancestors (the line to fix).
    pub caused_by: Option<GoPlace>,
    /// States of the outstanding goroutines read at this report, most common first.
    pub waits: Vec<WaitCount>,
    /// Outstanding goroutines whose state was not read (past the per-finding bound, ended
    /// since, or the process has exited).
    pub unread: u64,
}
