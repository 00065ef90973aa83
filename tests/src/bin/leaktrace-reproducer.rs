//! leaktrace-reproducer: a deliberately leaky program for leaktrace's integration tests.
//!
//! ```text
//! leaktrace-reproducer <scenario> [--count N] [--interval-ms MS] [--wait-stdin]
//!                      [--hold|--no-hold|--hold-ms MS]
//! leaktrace-reproducer list
//! ```
//!
//! Every leak scenario leaks `--count` objects (fds, or threads for `threads`; default 20), one call
//! of its `leak_*` function every `--interval-ms` (default 50). Scenarios leaking 2 fds per call
//! (`fd-pipe`, `fd-socketpair`) need an even count.
//!
//! `fd-scm-rights` → `leak_received_fd` leaks fds no fd syscall creates: each call opens
//! [`RECEIVED_PATH`], sends it with SCM_RIGHTS over the unix socket pair the scenario made once
//! (before `ready`), closes the original, and keeps the fd recvmsg gave back. Its leaked fds are
//! exactly the fds of `/proc/<pid>/fd` that link to [`RECEIVED_PATH`]. Syscall tracepoints see
//! only the open and the close; the received fds are seen where `fd_install` can be probed.
//!
//! `clean` is the control: `--count` balanced iterations (default 2000, interval 0), each opening and
//! closing a file, a socket, a pipe and an eventfd, and every 10th spawning and joining a thread, all
//! from `churn_*` functions. Nothing outlives its iteration, so the tracer must report nothing.
//!
//! # Held, not leaked
//!
//! Two scenarios hold many objects without leaking any: the tracer must not call them leaks.
//! `leaked` counts what they still hold. Each checks /proc/self/{fd,task} (exact counts against a
//! baseline taken when it starts) after every step, and fails rather than say `leaked` early.
//! - `stable-pool` → `open_connection_pool` and `start_worker_pool` → stable: at once, a
//!   connection pool of `--count` (200) real TCP connections to the fixture's 127.0.0.1 listener,
//!   the client end and the accepted end each held (2 × count sockets), and 16 worker threads (bare
//!   `clone` tasks, as in `threads`) asleep in ppoll for good. Says `leaked <2 × count + 16>` once.
//!   While holding, the main thread keeps busy with balanced churn (`churn_beside_pool`: the
//!   `clean` iteration plus a TCP connection to the listener, accepted and closed, every 2 ms),
//!   so the process is busy but its totals flat.
//! - `burst-release` → `burst_then_release` → released: in one burst, `--count` (500) fds — a
//!   pipe first, then files, sockets and pipes in turn — and 20 threads (bare `clone` tasks too),
//!   each blocked reading that first pipe; says `leaked <count + 20>`, holds them `--interval-ms`
//!   (3000), then closes the pipe's write end (the threads read EOF and exit), waits until /proc
//!   shows every thread gone, closes every fd and says `leaked 0`. It holds nothing from then on.
//!
//! # Waiters
//!
//! The `waiter-*` scenarios leave threads asleep for good in a futex wait, each below one
//! `#[inline(never)]` function named for the scenario; their `leaked` counts those threads. They
//! say `leaked`/`done` only once /proc shows each new waiter asleep in the futex syscall (state
//! `S`; wchan `futex_do_wait` on Linux 6.18). Scenario → blocked function → expected verdict →
//! objects:
//! - `waiter-condvar` → `wait_on_unsignalled_condvar` → growing: a thread every `--interval-ms`
//!   (default 200), `--count` (20) in all, waiting on one shared std `Condvar` never signalled.
//! - `waiter-mpsc` → `recv_from_idle_sender` → growing: likewise, each thread in `recv` on a std
//!   mpsc channel of its own whose `Sender` is kept, unused.
//! - `waiter-pool` → `idle_worker_wait` → stuck: `--count` (8) workers started at once, all
//!   waiting on the one condvar of a job queue that never gets a job.
//! - `waiter-deadlock` → `lock_a_then_b`, `lock_b_then_a` → deadlock: two threads lock two default
//!   glibc mutexes AB-BA; each sleeps in `pthread_mutex_lock` (`__lll_lock_wait`:
//!   FUTEX_WAIT_PRIVATE, value 2) on the mutex the other holds. glibc keeps a mutex's owner tid in
//!   `__data.__owner`, at byte offset 8. Prints `deadlock tids=<t1>,<t2> a=<addr> b=<addr>`
//!   (`t1` runs `lock_a_then_b`; addresses in hex, each also its futex word's) before `done`.
//! - `waiter-deadlock-pi` → `lock_pi_a_then_b`, `lock_pi_b_then_a` → deadlock: the same with
//!   PTHREAD_PRIO_INHERIT mutexes, whose futex word holds the owner's tid (| FUTEX_WAITERS), with
//!   one twist: the kernel refuses to close a PI cycle. `lock_pi_a_then_b` sleeps first, in
//!   FUTEX_LOCK_PI_PRIVATE on B (wchan `rt_mutex_schedule`); then `lock_pi_b_then_a`'s
//!   FUTEX_LOCK_PI_PRIVATE on A fails with EDEADLK, and it parks for good as glibc does: in
//!   FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME, value 0, on a word of its own stack.
//! - `waiter-churn` → `churn_mutexes` → nothing: 4 threads × `--count` (200000) rounds of locking
//!   a std and a glibc mutex of their own and a shared pair, then joined: many short waits, none
//!   lasting (milliseconds at most). Leaks 0, then holds.
//! - `futex-pingpong` → `pingpong_handoffs`, a benchmark: two threads hand a turn back and forth
//!   `--count` (200000) times through a std `Mutex` + `Condvar`, then it prints
//!   `pingpong handoffs=<n> ns_per_handoff=<f>` and `done leaked=0` and exits (no hold unless
//!   `--hold`).
//!
//! # At the limit
//!
//! `fd-limit` → `fill_fd_table`: lowers its soft RLIMIT_NOFILE to `--count` (1024), then opens
//! /dev/null in one burst until open fails with EMFILE, and holds every fd: a process at its fd
//! limit. `leaked` counts the fds it opened (the limit less the fds it already had).
//!
//! `--count` does not apply to the deadlocks, nor `--interval-ms` to any but the growing ones and
//! `burst-release`.
//!
//! # Protocol
//!
//! stdout, one flushed line each: `ready pid=<pid>` (after any scenario fixture — the accept
//! and pool scenarios' listener, the dup scenario's source fd, the scm-rights scenario's socket
//! pair — is set up, so `/proc/<pid>/fd` at that point
//! is the baseline); `leaked <total objects so far>` after each leak call (just once, if anything
//! leaked, in the scenarios that run once: pools, deadlocks, churn, pingpong; `burst-release`
//! says it twice: after its burst, and `leaked 0` once it released it all); a scenario's own line
//! (`deadlock …`, `pingpong …`); `done leaked=<total>`.
//!
//! `--wait-stdin`: after `ready`, wait for one line (or EOF) on stdin before starting, so a test can
//! attach the tracer first.
//!
//! Holding (the default but for `futex-pingpong`; `--no-hold` exits right after `done`): keep
//! everything leaked and create nothing more. The main thread reads stdin to EOF; if stdin is a
//! pipe, socket or tty, EOF means the test hung up and the process exits 0. Any other stdin (e.g.
//! `/dev/null`, which is at EOF at once) cannot signal that, so the process then sleeps until
//! killed. `--hold-ms MS` holds at most MS milliseconds, then exits 0 (sooner if stdin hangs up):
//! a bounded hold for runs that must end on their own, such as `leaktrace -- CMD`. `stable-pool`
//! alone keeps churning while it holds (see above).
//!
//! Exit codes: 0 success, 1 a syscall failed (error on stderr), 2 usage error, 3 the scenario is not
//! supported here (`unsupported: <error>` on stderr: no CAP_SYS_ADMIN for fanotify, ENOSYS).
//! Note the kernel's per-user limits of 128 inotify instances and 128 fanotify groups by default.
//!
//! # Stacks
//!
//! The tracer records user stacks by walking frame pointers (forced on by `.cargo/config.toml`),
//! and each scenario creates what it leaks in exactly one `#[inline(never)]` `leak_*` function, so
//! the recorded stack reads `<libc wrapper> ← leak_xxx ← run_scenario ← main` (a waiter's, taken
//! at futex entry: `<libc wrapper> ← [std frames] ← <its function> ← … ← start_thread`). These
//! facts shape the code (checked with `perf record -g` against Debian 12's glibc 2.36):
//! - Syscall wrappers are frameless leaves, so a frame-pointer walk from inside one skips their
//!   direct caller. Every raw call therefore goes through [`sys`], a frame of its own that is the
//!   one skipped, keeping `leak_xxx` in the stack.
//! - Some glibc functions use `rbp` as a general register, which breaks the walk entirely: `open64`
//!   (so no `File::open` in `leak_file_fd`: it uses `openat`), `pthread_create` (so no
//!   `std::thread::spawn` in `leak_blocked_thread`: it uses a bare `clone`; the waiter threads are
//!   std threads, whose creation stacks are lost) and `pthread_mutex_lock` on a PI mutex (so
//!   `waiter-deadlock-pi` makes its contended FUTEX_LOCK_PI itself, in `lock_pi_contended`).
//! - Rust's std is built with frame pointers, and its futex waits call glibc's `syscall()`, another
//!   frameless wrapper, so the std function calling it is the one skipped: the waiters' functions
//!   call std's waits, never `syscall()` themselves. `pthread_mutex_lock` and `__lll_lock_wait`
//!   keep `rbp` but push no frame, so pthread calls go through [`pthread`], the frame lost there.

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, BufRead, Read};
use std::mem;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use leaktrace_tests::{
    await_sleep_in, close, gettid, lock, new_pipe, raise_fd_limit, say, set_fd_limit, sys,
};
use libc::{c_int, c_void};

/// Long-lived helpers a scenario needs, created before `ready` and never counted as leaked.
#[derive(Default)]
struct Fixture {
    listener: Option<TcpListener>,
    dup_source: Option<File>,
    /// `fd-scm-rights`: the connected unix sockets each call sends an fd over and receives it
    /// back from: (sending end, receiving end).
    scm_pair: Option<(UnixStream, UnixStream)>,
    /// `waiter-condvar`: the one gate every leaked waiter waits at.
    gate: Arc<Gate>,
    /// `waiter-mpsc`: each leaked waiter's sender, kept alive and never used.
    idle_senders: Mutex<Vec<mpsc::Sender<()>>>,
}

enum Action {
    /// Each call leaks `per_call` objects.
    Leak {
        per_call: usize,
        leak: fn(&Fixture) -> io::Result<()>,
    },
    /// One balanced iteration (`clean`), given its iteration number.
    Churn(fn(usize) -> io::Result<()>),
    /// Runs once, given `--count`, and returns how many objects it leaked.
    Once(fn(usize) -> io::Result<usize>),
    /// Runs once, given the fixture and the options, and returns how many objects it still holds;
    /// it may say `leaked` lines of its own on the way.
    Staged(fn(&Fixture, &Options) -> io::Result<usize>),
}

struct Scenario {
    name: &'static str,
    setup: fn() -> io::Result<Fixture>,
    action: Action,
    /// Defaults of `--count`, `--interval-ms` and `--hold`/`--no-hold`.
    count: usize,
    interval_ms: u64,
    hold: bool,
    /// What the main thread does while holding, every [`BUSY_PAUSE`], given the round number
    /// (balanced work only: nothing may outlive a round).
    busy: Option<fn(&Fixture, usize) -> io::Result<()>>,
}

const fn leak(
    name: &'static str,
    per_call: usize,
    leak: fn(&Fixture) -> io::Result<()>,
) -> Scenario {
    Scenario {
        name,
        setup: no_fixture,
        action: Action::Leak { per_call, leak },
        count: 20,
        interval_ms: 50,
        hold: true,
        busy: None,
    }
}

/// A growing waiter scenario: each call starts one thread that blocks for good.
const fn waiter(name: &'static str, leak: fn(&Fixture) -> io::Result<()>) -> Scenario {
    Scenario {
        interval_ms: 200,
        ..self::leak(name, 1, leak)
    }
}

const fn once(name: &'static str, count: usize, run: fn(usize) -> io::Result<usize>) -> Scenario {
    Scenario {
        name,
        setup: no_fixture,
        action: Action::Once(run),
        count,
        interval_ms: 0,
        hold: true,
        busy: None,
    }
}

const SCENARIOS: &[Scenario] = &[
    leak("threads", 1, leak_blocked_thread),
    leak("fd-file", 1, leak_file_fd),
    leak("fd-socket", 1, leak_socket_fd),
    leak("fd-pipe", 2, leak_pipe_fds),
    leak("fd-socketpair", 2, leak_socketpair_fds),
    Scenario {
        setup: setup_listener,
        ..leak("fd-accept", 1, leak_accepted_socket)
    },
    leak("fd-eventfd", 1, leak_eventfd),
    leak("fd-timerfd", 1, leak_timerfd),
    leak("fd-epoll", 1, leak_epoll_fd),
    leak("fd-signalfd", 1, leak_signalfd),
    leak("fd-inotify", 1, leak_inotify_fd),
    leak("fd-fanotify", 1, leak_fanotify_fd),
    leak("fd-memfd", 1, leak_memfd),
    leak("fd-pidfd", 1, leak_pidfd),
    Scenario {
        setup: setup_dup_source,
        ..leak("fd-dup", 1, leak_dup_fd)
    },
    Scenario {
        setup: setup_scm_pair,
        ..leak("fd-scm-rights", 1, leak_received_fd)
    },
    Scenario {
        name: "fd-inherit",
        setup: no_fixture,
        action: Action::Staged(leak_inherited_fds),
        count: 20,
        interval_ms: 50,
        hold: true,
        busy: None,
    },
    Scenario {
        name: "clean",
        setup: no_fixture,
        action: Action::Churn(churn_iteration),
        count: 2000,
        interval_ms: 0,
        hold: true,
        busy: None,
    },
    Scenario {
        name: "stable-pool",
        setup: setup_listener,
        action: Action::Staged(stable_pool),
        count: 200,
        interval_ms: 0,
        hold: true,
        busy: Some(churn_beside_pool),
    },
    Scenario {
        name: "burst-release",
        setup: no_fixture,
        action: Action::Staged(burst_then_release),
        count: 500,
        interval_ms: 3000,
        hold: true,
        busy: None,
    },
    waiter("waiter-condvar", leak_condvar_waiter),
    waiter("waiter-mpsc", leak_mpsc_waiter),
    once("waiter-pool", 8, start_idle_pool),
    once("waiter-deadlock", 2, deadlock_plain),
    once("waiter-deadlock-pi", 2, deadlock_pi),
    once("waiter-churn", 200_000, churn_mutexes_in_threads),
    once("fd-limit", 1024, fill_fd_table),
    Scenario {
        hold: false,
        ..once("futex-pingpong", 200_000, pingpong)
    },
];

// ---- syscall helpers ----

fn open_dev_null() -> io::Result<RawFd> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: the path is a NUL-terminated literal.
    sys("openat", || unsafe {
        libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), flags)
    })
}

/// Like [`open_dev_null`], but without O_CLOEXEC: a child inherits it across exec.
#[inline(never)]
fn open_inheritable() -> io::Result<RawFd> {
    // SAFETY: the path is a NUL-terminated literal.
    sys("openat", || unsafe {
        libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), libc::O_RDONLY)
    })
}

/// A signal set initialised by `init`: `libc::sigemptyset` or `libc::sigfillset`.
fn sigset(init: unsafe extern "C" fn(*mut libc::sigset_t) -> c_int) -> io::Result<libc::sigset_t> {
    let mut set = MaybeUninit::uninit();
    // SAFETY: `init` writes the whole set.
    sys("sigset", || unsafe { init(set.as_mut_ptr()) })?;
    // SAFETY: initialised just above.
    Ok(unsafe { set.assume_init() })
}

// ---- fixtures ----

fn no_fixture() -> io::Result<Fixture> {
    Ok(Fixture::default())
}

fn setup_listener() -> io::Result<Fixture> {
    Ok(Fixture {
        listener: Some(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?),
        ..Fixture::default()
    })
}

fn setup_dup_source() -> io::Result<Fixture> {
    Ok(Fixture {
        dup_source: Some(File::open("/dev/null")?),
        ..Fixture::default()
    })
}

fn setup_scm_pair() -> io::Result<Fixture> {
    Ok(Fixture {
        scm_pair: Some(UnixStream::pair()?),
        ..Fixture::default()
    })
}

// ---- leaks: one `#[inline(never)]` frame each; `black_box` of the result after the call keeps
// the call from being a tail call (which would drop this frame from the stack) ----

/// A thread's stack; the leaked thread needs a few hundred bytes of it.
const THREAD_STACK: usize = 64 * 1024;

/// The body of a leaked thread. The thread is a bare kernel task glibc knows nothing about (no TLS
/// of its own), so it only ever sits in a raw syscall: ppoll on nothing without a timeout sleeps
/// until a signal, and the thread starts with all of them blocked.
extern "C" fn sleep_forever(_: *mut c_void) -> c_int {
    loop {
        // SAFETY: no fds, no timeout, no mask: only sleeps.
        unsafe {
            libc::syscall(
                libc::SYS_ppoll,
                ptr::null::<libc::pollfd>(),
                0usize,
                ptr::null::<libc::timespec>(),
                ptr::null::<libc::sigset_t>(),
                0usize,
            );
        }
    }
}

#[inline(never)]
fn leak_blocked_thread(_: &Fixture) -> io::Result<()> {
    black_box(clone_sleeper()?);
    Ok(())
}

/// Starts a bare kernel task running [`sleep_forever`] on a leaked stack; returns its tid. Always
/// inlined, as is [`clone_task`], so the `clone` call is made from the caller's own frame
/// (`leak_blocked_thread`, `start_worker_pool`).
#[inline(always)]
fn clone_sleeper() -> io::Result<libc::pid_t> {
    let stack = vec![0u8; THREAD_STACK].leak().as_mut_ptr_range().end;
    // SAFETY: the stack is leaked, so it outlives the task.
    unsafe { clone_task(sleep_forever, ptr::null_mut(), stack) }
}

/// Starts a bare kernel task (a thread glibc knows nothing about: no TLS of its own) running
/// `body(arg)` with every signal blocked; returns its tid. The task exits when `body` returns.
///
/// # Safety
///
/// `stack_top` is the end of a stack used by nothing else, which must stay allocated until the
/// task has exited; `body` must only make raw syscalls.
#[inline(always)]
unsafe fn clone_task(
    body: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
    stack_top: *mut u8,
) -> io::Result<libc::pid_t> {
    // The flags pthread_create uses, minus its TLS and tid bookkeeping.
    const FLAGS: c_int = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM;
    // A new thread inherits the signal mask: block everything around clone so that no handler
    // ever runs on the new thread and its syscalls are never interrupted.
    let all = sigset(libc::sigfillset)?;
    let mut saved = MaybeUninit::uninit();
    // SAFETY: `all` is initialised; sigprocmask writes `saved`.
    sys("sigprocmask", || unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &all, saved.as_mut_ptr())
    })?;
    // SAFETY: the child runs only `body`, on its own stack (the caller's promise).
    let tid = sys("clone", || unsafe {
        libc::clone(body, stack_top.cast(), FLAGS, arg)
    });
    // SAFETY: restores the mask sigprocmask saved above.
    sys("sigprocmask", || unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, saved.as_ptr(), ptr::null_mut())
    })?;
    tid
}

/// Opens /dev/null until the fd table is full at a soft RLIMIT_NOFILE of `limit`; returns how
/// many it opened. The last open fails with EMFILE, which is the end, not an error.
#[inline(never)]
fn fill_fd_table(limit: usize) -> io::Result<usize> {
    set_fd_limit(|_| limit as libc::rlim_t)?;
    let mut opened = 0;
    loop {
        // SAFETY: the path is a NUL-terminated literal.
        let fd = unsafe {
            libc::openat(
                libc::AT_FDCWD,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            opened += 1;
            continue;
        }
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EMFILE) => Ok(opened),
            _ => Err(err),
        };
    }
}

#[inline(never)]
fn leak_file_fd(_: &Fixture) -> io::Result<()> {
    black_box(open_dev_null()?);
    Ok(())
}

#[inline(never)]
fn leak_socket_fd(_: &Fixture) -> io::Result<()> {
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall, no pointers.
    let fd = sys("socket", || unsafe { libc::socket(libc::AF_INET, kind, 0) })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_pipe_fds(_: &Fixture) -> io::Result<()> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    sys("pipe2", || unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
    })?;
    black_box(fds);
    Ok(())
}

#[inline(never)]
fn leak_socketpair_fds(_: &Fixture) -> io::Result<()> {
    let mut fds = [-1; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: `fds` has room for the two fds socketpair writes.
    sys("socketpair", || unsafe {
        libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr())
    })?;
    black_box(fds);
    Ok(())
}

#[inline(never)]
fn leak_accepted_socket(fixture: &Fixture) -> io::Result<()> {
    let listener = fixture
        .listener
        .as_ref()
        .expect("fd-accept sets up a listener");
    // The client end is closed at once; only the accepted end is leaked.
    drop(TcpStream::connect(listener.local_addr()?)?);
    let fd = listener.as_raw_fd();
    // SAFETY: a null address and length are allowed when the peer address is not wanted.
    let accepted = sys("accept4", || unsafe {
        libc::accept4(fd, ptr::null_mut(), ptr::null_mut(), libc::SOCK_CLOEXEC)
    })?;
    black_box(accepted);
    Ok(())
}

#[inline(never)]
fn leak_eventfd(_: &Fixture) -> io::Result<()> {
    // SAFETY: plain syscall, no pointers.
    let fd = sys("eventfd", || unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_timerfd(_: &Fixture) -> io::Result<()> {
    // SAFETY: plain syscall, no pointers.
    let fd = sys("timerfd_create", || unsafe {
        libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC)
    })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_epoll_fd(_: &Fixture) -> io::Result<()> {
    // SAFETY: plain syscall, no pointers.
    let fd = sys("epoll_create1", || unsafe {
        libc::epoll_create1(libc::EPOLL_CLOEXEC)
    })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_signalfd(_: &Fixture) -> io::Result<()> {
    // An empty mask: the fd is what matters, not which signals it would read.
    let mask = sigset(libc::sigemptyset)?;
    // SAFETY: `mask` is an initialised sigset.
    let fd = sys("signalfd", || unsafe { libc::signalfd(-1, &mask, 0) })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_inotify_fd(_: &Fixture) -> io::Result<()> {
    // SAFETY: plain syscall, no pointers.
    let fd = sys("inotify_init1", || unsafe {
        libc::inotify_init1(libc::IN_CLOEXEC)
    })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_fanotify_fd(_: &Fixture) -> io::Result<()> {
    let (class, event_flags) = (libc::FAN_CLASS_NOTIF, libc::O_RDONLY as u32);
    // SAFETY: plain syscall, no pointers.
    let fd = sys("fanotify_init", || unsafe {
        libc::fanotify_init(class, event_flags)
    })
    .map_err(|err| match err.kind() {
        // No CAP_SYS_ADMIN (ENOSYS already maps to Unsupported): nothing a test can fix.
        io::ErrorKind::PermissionDenied => io::Error::new(io::ErrorKind::Unsupported, err),
        _ => err,
    })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_memfd(_: &Fixture) -> io::Result<()> {
    // SAFETY: the name is a NUL-terminated literal.
    let fd = sys("memfd_create", || unsafe {
        libc::memfd_create(c"leaktrace-reproducer".as_ptr(), libc::MFD_CLOEXEC)
    })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_pidfd(_: &Fixture) -> io::Result<()> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers. Its result (an fd or -1) fits a c_int.
    let fd = sys("pidfd_open", || unsafe {
        libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0u32) as c_int
    })?;
    black_box(fd);
    Ok(())
}

#[inline(never)]
fn leak_dup_fd(fixture: &Fixture) -> io::Result<()> {
    let source = fixture
        .dup_source
        .as_ref()
        .expect("fd-dup sets up a source fd");
    let source = source.as_raw_fd();
    // SAFETY: dups an fd the fixture keeps open.
    let fd = sys("dup", || unsafe { libc::dup(source) })?;
    black_box(fd);
    Ok(())
}

/// The file `fd-scm-rights` opens and passes: one nothing else in the process has open, so
/// `/proc/<pid>/fd` tells the received fds apart.
const RECEIVED_PATH: &std::ffi::CStr = c"/dev/zero";

/// Room for a control message carrying one fd, aligned as a `cmsghdr`.
#[repr(C)]
union OneFdControl {
    header: libc::cmsghdr,
    bytes: [u8; 64],
}

/// A one-byte message whose control buffer is `control`; `byte` and `control` must outlive it.
fn one_fd_message(byte: &mut [u8; 1], control: &mut OneFdControl) -> (libc::msghdr, libc::iovec) {
    let iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty message.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_control = (&raw mut *control).cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<c_int>() as u32) } as _;
    (msg, iov)
}

/// Sends `fd` over the unix socket `socket` (SCM_RIGHTS, with one byte of data).
fn send_fd(socket: RawFd, fd: RawFd) -> io::Result<()> {
    let (mut byte, mut control) = ([0u8; 1], OneFdControl { bytes: [0; 64] });
    let (mut msg, mut iov) = one_fd_message(&mut byte, &mut control);
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the control buffer has room for one header and one int (CMSG_SPACE above), and
    // the message's buffers live until sendmsg returns.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<c_int>() as u32) as _;
        ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>(), fd);
    }
    // SAFETY: as above; a one-byte send cannot exceed a c_int.
    sys("sendmsg", || unsafe {
        libc::sendmsg(socket, &msg, 0) as c_int
    })?;
    Ok(())
}

/// Receives the one fd [`send_fd`] sent over `socket`.
#[inline(always)]
fn recv_fd(socket: RawFd) -> io::Result<RawFd> {
    let (mut byte, mut control) = ([0u8; 1], OneFdControl { bytes: [0; 64] });
    let (mut msg, mut iov) = one_fd_message(&mut byte, &mut control);
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the message's buffers live until recvmsg returns; a one-byte read fits a c_int.
    sys("recvmsg", || unsafe {
        libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) as c_int
    })?;
    // SAFETY: the kernel filled the control buffer and set msg_controllen; the header is read
    // only when it says SCM_RIGHTS at SOL_SOCKET, whose data is the int sent.
    let fd = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if msg.msg_flags & libc::MSG_CTRUNC != 0
            || cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            None
        } else {
            Some(ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<c_int>()))
        }
    };
    fd.ok_or_else(|| io::Error::other("recvmsg: no fd in the message"))
}

/// Opens [`RECEIVED_PATH`], passes it to itself over the fixture's socket pair, closes the
/// original and leaks the copy received: an fd made by recvmsg, which no fd syscall reports.
#[inline(never)]
fn leak_received_fd(fixture: &Fixture) -> io::Result<()> {
    let (tx, rx) = fixture
        .scm_pair
        .as_ref()
        .expect("fd-scm-rights sets up a socket pair");
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: the path is a NUL-terminated literal.
    let original = sys("openat", || unsafe {
        libc::openat(libc::AT_FDCWD, RECEIVED_PATH.as_ptr(), flags)
    })?;
    send_fd(tx.as_raw_fd(), original)?;
    close(original)?;
    let received = recv_fd(rx.as_raw_fd())?;
    black_box(received);
    Ok(())
}

// ---- waiters: threads that block in a futex wait that never ends ----
//
// Each blocked thread is a std thread (a bare `clone` task, as in `threads`, cannot run std code)
// whose futex wait happens below one `#[inline(never)]` function named for the scenario. The wait
// itself is always a frame or more further down (std's, or [`pthread`]'s), so that function is
// never the frame a walk from a frameless syscall wrapper skips (see "Stacks").

/// How long a scenario waits for a thread it started to fall asleep in its futex wait.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// [`sys`] for pthread calls, which return an errno instead of setting `errno`: a frame of its
/// own between the caller and glibc, checked after the call.
#[inline(never)]
fn pthread(what: &str, call: impl FnOnce() -> c_int) -> io::Result<()> {
    match call() {
        0 => Ok(()),
        errno => {
            let err = io::Error::from_raw_os_error(errno);
            Err(io::Error::new(err.kind(), format!("{what}: {err}")))
        }
    }
}

/// Starts a std thread named `name` running `body`; returns its kernel tid once it runs.
fn spawn_thread(name: &str, body: impl FnOnce() + Send + 'static) -> io::Result<libc::pid_t> {
    // Polled rather than waited for: the main thread makes no futex wait of its own.
    let tid = Arc::new(AtomicI32::new(0));
    let slot = Arc::clone(&tid);
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            slot.store(gettid(), Ordering::Release);
            drop(slot);
            body();
        })?;
    let deadline = Instant::now() + BLOCK_TIMEOUT;
    loop {
        match tid.load(Ordering::Acquire) {
            0 if Instant::now() > deadline => {
                return Err(io::Error::other(format!("thread {name} did not start")))
            }
            0 => thread::yield_now(),
            tid => return Ok(tid),
        }
    }
}

/// Runs `body` and reports an error on stderr: a waiter thread's error shows as the thread
/// being gone when [`await_futex_sleep`] looks for it.
fn report_errors(name: &str, body: impl FnOnce() -> io::Result<()>) {
    if let Err(err) = body() {
        eprintln!("leaktrace-reproducer: {name}: {err}");
    }
}

/// Waits until every thread in `tids` sleeps in a futex wait, so that once a scenario says
/// `leaked`/`done`, /proc already shows its waiters.
fn await_futex_sleep(tids: &[libc::pid_t]) -> io::Result<()> {
    await_sleep_in(tids, libc::SYS_futex, "futex", BLOCK_TIMEOUT)
}

/// A condition that never comes true: waiters wait on `cv` while `open` is false.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

/// `waiter-condvar`'s blocked frame: waits on the one shared condvar, which nobody signals, for a
/// flag nobody sets (the loop absorbs spurious wakeups).
#[inline(never)]
fn wait_on_unsignalled_condvar(gate: &Gate) {
    let mut open = lock(&gate.open);
    while !*open {
        open = gate.cv.wait(open).unwrap_or_else(PoisonError::into_inner);
    }
    drop(open);
}

fn leak_condvar_waiter(fixture: &Fixture) -> io::Result<()> {
    let gate = Arc::clone(&fixture.gate);
    let tid = spawn_thread("condvar-waiter", move || wait_on_unsignalled_condvar(&gate))?;
    await_futex_sleep(&[tid])
}

/// `waiter-mpsc`'s blocked frame: receives from a channel whose sender lives on, unused.
#[inline(never)]
fn recv_from_idle_sender(rx: &mpsc::Receiver<()>) {
    while rx.recv().is_ok() {}
    black_box(rx);
}

fn leak_mpsc_waiter(fixture: &Fixture) -> io::Result<()> {
    let (tx, rx) = mpsc::channel();
    lock(&fixture.idle_senders).push(tx);
    let tid = spawn_thread("mpsc-waiter", move || recv_from_idle_sender(&rx))?;
    await_futex_sleep(&[tid])
}

type Job = Box<dyn FnOnce() + Send>;

/// `waiter-pool`'s job queue, which never gets a job.
#[derive(Default)]
struct JobQueue {
    jobs: Mutex<VecDeque<Job>>,
    available: Condvar,
}

/// `waiter-pool`'s blocked frame: a worker's loop, waiting for the next job.
#[inline(never)]
fn idle_worker_wait(queue: &JobQueue) {
    loop {
        let mut jobs = lock(&queue.jobs);
        let job = loop {
            match jobs.pop_front() {
                Some(job) => break job,
                None => {
                    jobs = queue
                        .available
                        .wait(jobs)
                        .unwrap_or_else(PoisonError::into_inner)
                }
            }
        };
        drop(jobs);
        job();
    }
}

/// `waiter-pool`: `count` workers at once, all idle for good.
fn start_idle_pool(count: usize) -> io::Result<usize> {
    let queue = Arc::new(JobQueue::default());
    let mut tids = Vec::with_capacity(count);
    for worker in 0..count {
        let queue = Arc::clone(&queue);
        tids.push(spawn_thread(&format!("pool-worker-{worker}"), move || {
            idle_worker_wait(&queue)
        })?);
    }
    await_futex_sleep(&tids)?;
    Ok(count)
}

/// A glibc mutex that threads share in place.
struct PthreadMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be shared between threads; only glibc touches its inside.
unsafe impl Sync for PthreadMutex {}

impl PthreadMutex {
    /// A default mutex (`PTHREAD_MUTEX_INITIALIZER`): normal type, no protocol.
    const fn new() -> Self {
        Self(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER))
    }

    /// A mutex for good, at a fixed address; with the priority-inheritance protocol if `pi`.
    fn leak(pi: bool) -> io::Result<&'static Self> {
        let mutex = Box::leak(Box::new(Self::new()));
        if pi {
            let mut attr = MaybeUninit::uninit();
            // SAFETY: init writes `attr`; the mutex is not shared yet, so may be (re)initialised.
            unsafe {
                pthread("pthread_mutexattr_init", || {
                    libc::pthread_mutexattr_init(attr.as_mut_ptr())
                })?;
                let set = pthread("pthread_mutexattr_setprotocol", || {
                    libc::pthread_mutexattr_setprotocol(
                        attr.as_mut_ptr(),
                        libc::PTHREAD_PRIO_INHERIT,
                    )
                })
                .and_then(|()| {
                    pthread("pthread_mutex_init", || {
                        libc::pthread_mutex_init(mutex.0.get(), attr.as_ptr())
                    })
                });
                libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
                set?;
            }
        }
        Ok(mutex)
    }

    /// Its address, which is also that of its futex word (`__data.__lock`, the first field).
    fn addr(&self) -> usize {
        self.0.get() as usize
    }

    fn lock(&self) -> io::Result<()> {
        // SAFETY: the mutex is initialised and lives at this address while shared.
        pthread("pthread_mutex_lock", || unsafe {
            libc::pthread_mutex_lock(self.0.get())
        })
    }

    /// Takes a PI mutex the way glibc's `pthread_mutex_lock` does (a compare-and-swap of the
    /// futex word, then FUTEX_LOCK_PI), but from frames a stack walk can cross: glibc's
    /// `__pthread_mutex_lock_full` keeps the mutex kind in `rbp` around that syscall, so a stack
    /// captured inside it has one frame. If the kernel refuses the lock for a deadlock (EDEADLK),
    /// waits forever, as glibc does for a mutex type that does not report deadlocks.
    fn lock_pi_contended(&self) -> io::Result<()> {
        // SAFETY: as for `lock`.
        match pthread("pthread_mutex_trylock", || unsafe {
            libc::pthread_mutex_trylock(self.0.get())
        }) {
            Err(err) if err.kind() == io::ErrorKind::ResourceBusy => {}
            done => return done,
        }
        let op = libc::FUTEX_LOCK_PI | libc::FUTEX_PRIVATE_FLAG;
        // SAFETY: the futex word is the mutex's first field (`__data.__lock`); no timeout.
        let locked = sys("futex(FUTEX_LOCK_PI)", || unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.0.get(),
                op,
                0,
                ptr::null::<libc::timespec>(),
            ) as c_int
        });
        match locked {
            // Glibc's bookkeeping (`__owner`) stays unset: a deadlock thread never gets here.
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Deadlock => park_forever(),
            Err(err) => Err(err),
        }
    }

    fn unlock(&self) -> io::Result<()> {
        // SAFETY: as for `lock`; called only by the thread that locked it.
        pthread("pthread_mutex_unlock", || unsafe {
            libc::pthread_mutex_unlock(self.0.get())
        })
    }
}

/// What glibc does when the kernel refuses a PI lock for a deadlock: waits, with no timeout, on a
/// futex word of its own stack that nobody wakes (FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME,
/// value 0).
fn park_forever() -> io::Result<()> {
    let word = AtomicU32::new(0);
    let op = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME;
    loop {
        // SAFETY: waits on a live word of this frame; no timeout.
        let woke = sys("futex(FUTEX_WAIT_BITSET)", || unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                op,
                0,
                ptr::null::<libc::timespec>(),
                ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY as u32 as libc::c_ulong,
            ) as c_int
        });
        match woke {
            Err(err) if err.kind() != io::ErrorKind::Interrupted => return Err(err),
            _ => {}
        }
    }
}

/// Two mutexes and who holds what, for an AB-BA deadlock.
struct Deadlock {
    a: &'static PthreadMutex,
    b: &'static PthreadMutex,
    a_held: AtomicBool,
    b_held: AtomicBool,
    /// The tid of the thread that locks A first, set before `a_held`.
    a_then_b: AtomicI32,
}

/// Locks `first`, says so and waits (spinning, not in a futex) until the other thread holds
/// `second`.
fn lock_first(
    (first, first_held): (&PthreadMutex, &AtomicBool),
    second_held: &AtomicBool,
) -> io::Result<()> {
    first.lock()?;
    first_held.store(true, Ordering::Release);
    while !second_held.load(Ordering::Acquire) {
        thread::yield_now();
    }
    Ok(())
}

/// The error of a deadlock thread that got both mutexes.
fn no_deadlock() -> io::Error {
    io::Error::other("got both mutexes: no deadlock")
}

/// `waiter-deadlock`'s first blocked frame: holds A, blocks in `pthread_mutex_lock(B)`.
#[inline(never)]
fn lock_a_then_b(d: &Deadlock) -> io::Result<()> {
    lock_first((d.a, &d.a_held), &d.b_held)?;
    d.b.lock()?;
    Err(no_deadlock())
}

/// `waiter-deadlock`'s second blocked frame: holds B, blocks in `pthread_mutex_lock(A)`.
#[inline(never)]
fn lock_b_then_a(d: &Deadlock) -> io::Result<()> {
    lock_first((d.b, &d.b_held), &d.a_held)?;
    d.a.lock()?;
    Err(no_deadlock())
}

/// `waiter-deadlock-pi`'s first blocked frame: holds A, blocks in FUTEX_LOCK_PI on B.
#[inline(never)]
fn lock_pi_a_then_b(d: &Deadlock) -> io::Result<()> {
    d.a_then_b.store(gettid(), Ordering::Relaxed);
    lock_first((d.a, &d.a_held), &d.b_held)?;
    d.b.lock_pi_contended()?;
    Err(no_deadlock())
}

/// `waiter-deadlock-pi`'s second blocked frame: holds B; once the other thread sleeps on B, its
/// FUTEX_LOCK_PI on A closes the cycle, which the kernel refuses (EDEADLK), so it parks for good
/// the way glibc does.
#[inline(never)]
fn lock_pi_b_then_a(d: &Deadlock) -> io::Result<()> {
    lock_first((d.b, &d.b_held), &d.a_held)?;
    await_futex_sleep(&[d.a_then_b.load(Ordering::Relaxed)])?;
    d.a.lock_pi_contended()?;
    Err(no_deadlock())
}

/// Two threads, two mutexes, AB-BA; prints `deadlock tids=<t1>,<t2> a=<addr> b=<addr>` once
/// both sleep. `--count` does not apply: a deadlock takes two.
fn deadlock(pi: bool, [first, second]: [fn(&Deadlock) -> io::Result<()>; 2]) -> io::Result<usize> {
    let d: &'static Deadlock = Box::leak(Box::new(Deadlock {
        a: PthreadMutex::leak(pi)?,
        b: PthreadMutex::leak(pi)?,
        a_held: AtomicBool::new(false),
        b_held: AtomicBool::new(false),
        a_then_b: AtomicI32::new(0),
    }));
    let names = if pi {
        ["lock-pi-a-b", "lock-pi-b-a"]
    } else {
        ["lock-a-then-b", "lock-b-then-a"]
    };
    let t1 = spawn_thread(names[0], move || report_errors(names[0], || first(d)))?;
    let t2 = spawn_thread(names[1], move || report_errors(names[1], || second(d)))?;
    await_futex_sleep(&[t1, t2])?;
    say(format_args!(
        "deadlock tids={t1},{t2} a={:#x} b={:#x}",
        d.a.addr(),
        d.b.addr()
    ));
    Ok(2)
}

fn deadlock_plain(_count: usize) -> io::Result<usize> {
    deadlock(false, [lock_a_then_b, lock_b_then_a])
}

fn deadlock_pi(_count: usize) -> io::Result<usize> {
    deadlock(true, [lock_pi_a_then_b, lock_pi_b_then_a])
}

/// The threads `waiter-churn` runs.
const CHURN_THREADS: usize = 4;

/// What `waiter-churn`'s threads share: a std mutex and a glibc one, each guarding a count.
struct ChurnLocks {
    std: Mutex<u64>,
    pthread: PthreadMutex,
    /// Only changed with `pthread` held: the atomic just spares an `UnsafeCell`.
    pthread_count: AtomicU64,
}

/// `waiter-churn`'s frame: `iterations` rounds of locking a std and a glibc mutex of this thread's
/// own (never contended), then the shared ones (contended), each held for a moment.
#[inline(never)]
fn churn_mutexes(locks: &ChurnLocks, iterations: usize) -> io::Result<()> {
    let own_std = Mutex::new(0u64);
    let own_pthread = PthreadMutex::new();
    for _ in 0..iterations {
        *lock(&own_std) += 1;
        own_pthread.lock()?;
        own_pthread.unlock()?;
        *lock(&locks.std) += 1;
        locks.pthread.lock()?;
        let count = locks.pthread_count.load(Ordering::Relaxed);
        locks.pthread_count.store(count + 1, Ordering::Relaxed);
        locks.pthread.unlock()?;
    }
    Ok(())
}

/// `waiter-churn`: [`CHURN_THREADS`] threads × `iterations` of locking, then joined.
/// Leaks nothing, and no wait lasts: even the main thread polls for the workers to finish rather
/// than sitting in a join for the whole run.
fn churn_mutexes_in_threads(iterations: usize) -> io::Result<usize> {
    let locks = Arc::new(ChurnLocks {
        std: Mutex::new(0),
        pthread: PthreadMutex::new(),
        pthread_count: AtomicU64::new(0),
    });
    let finished = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::with_capacity(CHURN_THREADS);
    for worker in 0..CHURN_THREADS {
        let (locks, finished) = (Arc::clone(&locks), Arc::clone(&finished));
        workers.push(
            thread::Builder::new()
                .name(format!("churn-{worker}"))
                .spawn(move || {
                    let churned = churn_mutexes(&locks, iterations);
                    finished.fetch_add(1, Ordering::Release);
                    churned
                })?,
        );
    }
    while finished.load(Ordering::Acquire) < CHURN_THREADS {
        thread::sleep(Duration::from_millis(5));
    }
    for worker in workers {
        worker
            .join()
            .map_err(|_| io::Error::other("churn thread panicked"))??;
    }
    let expected = (CHURN_THREADS * iterations) as u64;
    let counts = (
        *lock(&locks.std),
        locks.pthread_count.load(Ordering::Relaxed),
    );
    if counts != (expected, expected) {
        return Err(io::Error::other(format!(
            "churn counted {counts:?}, expected {expected} each"
        )));
    }
    Ok(0)
}

/// Whose turn it is in `futex-pingpong`: player 0 or 1.
#[derive(Default)]
struct Table {
    turn: Mutex<usize>,
    cv: Condvar,
}

/// One `futex-pingpong` player: makes `handoffs` handoffs, each waiting for its turn, passing
/// the turn and waking the other player.
#[inline(never)]
fn pingpong_handoffs(table: &Table, me: usize, handoffs: usize) {
    let mut turn = lock(&table.turn);
    for _ in 0..handoffs {
        while *turn != me {
            turn = table.cv.wait(turn).unwrap_or_else(PoisonError::into_inner);
        }
        *turn = 1 - me;
        table.cv.notify_one();
    }
}

/// `futex-pingpong`, a benchmark: two threads hand a turn back and forth `count` times through a
/// mutex and a condvar; prints `pingpong handoffs=<n> ns_per_handoff=<f>`.
fn pingpong(count: usize) -> io::Result<usize> {
    let table = Arc::new(Table::default());
    let start_line = Arc::new(Barrier::new(2));
    let partner = {
        let (table, start_line) = (Arc::clone(&table), Arc::clone(&start_line));
        // Player 0 starts, so it makes the odd handoff of an odd count.
        thread::Builder::new()
            .name("pingpong".to_owned())
            .spawn(move || {
                start_line.wait();
                pingpong_handoffs(&table, 1, count / 2);
            })?
    };
    start_line.wait();
    let start = Instant::now();
    pingpong_handoffs(&table, 0, count - count / 2);
    partner
        .join()
        .map_err(|_| io::Error::other("pingpong partner panicked"))?;
    let elapsed = start.elapsed().as_nanos() as f64;
    let per_handoff = if count == 0 {
        0.0
    } else {
        elapsed / count as f64
    };
    say(format_args!(
        "pingpong handoffs={count} ns_per_handoff={per_handoff:.1}"
    ));
    Ok(0)
}

// ---- clean: balanced churn, nothing survives an iteration ----

#[inline(never)]
fn churn_iteration(iteration: usize) -> io::Result<()> {
    churn_file()?;
    churn_socket()?;
    churn_pipe()?;
    churn_eventfd()?;
    if iteration.is_multiple_of(10) {
        churn_thread()?;
    }
    Ok(())
}

#[inline(never)]
fn churn_file() -> io::Result<()> {
    close(open_dev_null()?)
}

#[inline(never)]
fn churn_socket() -> io::Result<()> {
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall, no pointers.
    close(sys("socket", || unsafe {
        libc::socket(libc::AF_INET, kind, 0)
    })?)
}

#[inline(never)]
fn churn_pipe() -> io::Result<()> {
    let fds = new_pipe()?;
    close(fds[0])?;
    close(fds[1])
}

#[inline(never)]
fn churn_eventfd() -> io::Result<()> {
    // SAFETY: plain syscall, no pointers.
    close(sys("eventfd", || unsafe {
        libc::eventfd(0, libc::EFD_CLOEXEC)
    })?)
}

/// A real pthread, spawned and joined. Its creation stack is unwalkable (pthread_create, see
/// "Stacks"), which does not matter here: its exit balances it.
#[inline(never)]
fn churn_thread() -> io::Result<()> {
    let handle = thread::Builder::new().spawn(|| black_box(0))?;
    handle
        .join()
        .map_err(|_| io::Error::other("churn thread panicked"))?;
    Ok(())
}

// ---- held, not leaked: a stable pool and a released burst ----

/// `stable-pool`'s worker threads.
const POOL_WORKERS: usize = 16;

/// `burst-release`'s threads.
const BURST_THREADS: usize = 20;

/// How often a busy scenario's main thread works while holding.
const BUSY_PAUSE: Duration = Duration::from_millis(2);

/// How many entries a /proc directory has (`/proc/self/fd` lists the fd reading it too, the same
/// every time).
fn proc_entries(dir: &str) -> io::Result<usize> {
    Ok(fs::read_dir(dir)?.count())
}

/// Waits until /proc directory `dir` has `want` entries: at once for fds (close is synchronous),
/// shortly for threads (a task that exits leaves /proc/self/task once it is reaped).
fn await_proc_entries(dir: &str, want: usize) -> io::Result<()> {
    let deadline = Instant::now() + BLOCK_TIMEOUT;
    loop {
        let got = proc_entries(dir)?;
        if got == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{dir} has {got} entries, expected {want}"
            )));
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// What /proc shows this process holds: a baseline to check a scenario's steps against.
struct ProcCounts {
    fds: usize,
    threads: usize,
}

impl ProcCounts {
    fn now() -> io::Result<Self> {
        Ok(Self {
            fds: proc_entries("/proc/self/fd")?,
            threads: proc_entries("/proc/self/task")?,
        })
    }

    /// Waits until /proc shows exactly `fds` fds and `threads` threads more than this baseline.
    fn await_more(&self, fds: usize, threads: usize) -> io::Result<()> {
        await_proc_entries("/proc/self/fd", self.fds + fds)?;
        await_proc_entries("/proc/self/task", self.threads + threads)
    }
}

/// The listener's address as a `sockaddr_in`.
fn ipv4_address(listener: &TcpListener) -> io::Result<libc::sockaddr_in> {
    let SocketAddr::V4(addr) = listener.local_addr()? else {
        return Err(io::Error::other("the listener is not IPv4"));
    };
    Ok(libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    })
}

fn new_socket() -> io::Result<RawFd> {
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall, no pointers.
    sys("socket", || unsafe { libc::socket(libc::AF_INET, kind, 0) })
}

/// `stable-pool`'s connections: `count` TCP connections to `listener`, the client end and the
/// accepted end of each kept open. Returns their fds.
#[inline(never)]
fn open_connection_pool(listener: &TcpListener, count: usize) -> io::Result<Vec<RawFd>> {
    let addr = ipv4_address(listener)?;
    let len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let listener = listener.as_raw_fd();
    let mut held = Vec::with_capacity(2 * count);
    for _ in 0..count {
        let client = new_socket()?;
        held.push(client);
        // SAFETY: `addr` is a sockaddr_in of `len` bytes.
        sys("connect", || unsafe {
            libc::connect(client, ptr::from_ref(&addr).cast(), len)
        })?;
        // SAFETY: a null address and length are allowed when the peer address is not wanted.
        held.push(sys("accept4", || unsafe {
            libc::accept4(
                listener,
                ptr::null_mut(),
                ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        })?);
    }
    Ok(black_box(held))
}

/// `stable-pool`'s workers: `count` bare threads, each asleep in ppoll for good. Returns their
/// tids.
#[inline(never)]
fn start_worker_pool(count: usize) -> io::Result<Vec<libc::pid_t>> {
    let mut tids = Vec::with_capacity(count);
    for _ in 0..count {
        tids.push(clone_sleeper()?);
    }
    Ok(black_box(tids))
}

/// `stable-pool`: the connection pool and the workers, all at once, held for good (see
/// [`churn_beside_pool`] for what the main thread does meanwhile).
fn stable_pool(fixture: &Fixture, opts: &Options) -> io::Result<usize> {
    let listener = fixture
        .listener
        .as_ref()
        .expect("stable-pool sets up a listener");
    raise_fd_limit(2 * opts.count as u64 + 64)?;
    let before = ProcCounts::now()?;
    let sockets = open_connection_pool(listener, opts.count)?;
    let workers = start_worker_pool(POOL_WORKERS)?;
    await_sleep_in(&workers, libc::SYS_ppoll, "ppoll", BLOCK_TIMEOUT)?;
    before.await_more(sockets.len(), workers.len())?;
    Ok(sockets.len() + workers.len())
}

/// `stable-pool`'s work while holding, one round: the `clean` iteration, and a connection to the
/// pool's listener, accepted and closed. Balanced: nothing outlives the round.
#[inline(never)]
fn churn_beside_pool(fixture: &Fixture, round: usize) -> io::Result<()> {
    churn_iteration(round)?;
    let listener = fixture
        .listener
        .as_ref()
        .expect("stable-pool sets up a listener");
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    drop((client, accepted));
    Ok(())
}

/// A `burst-release` thread (a bare task, see [`clone_task`]): reads the fd `arg` (the read end
/// of the burst's first pipe) until the write end is closed, then exits.
extern "C" fn wait_for_release(arg: *mut c_void) -> c_int {
    let fd = arg as usize as c_int;
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into `byte`. A raw syscall: this task has no TLS, so no
        // errno, and with every signal blocked the read only ends for data or EOF.
        let n = unsafe { libc::syscall(libc::SYS_read, fd, ptr::from_mut(&mut byte), 1usize) };
        if n <= 0 {
            return 0;
        }
    }
}

/// `burst-release`: `--count` fds (a pipe first, then files, sockets and pipes in turn) and
/// [`BURST_THREADS`] threads (bare tasks, so their creation stacks walk, as in `threads`) blocked
/// `fd-inherit`: `--count` fds, one every `--interval-ms`, alternately inheritable and
/// close-on-exec; then a child process, this program holding (`clean --count 0`, as long as this
/// one holds, or 2 s), that inherits the first kind across fork and exec. Says `child pid=N`.
#[inline(never)]
fn leak_inherited_fds(_: &Fixture, opts: &Options) -> io::Result<usize> {
    for n in 1..=opts.count {
        black_box(if n % 2 == 1 {
            open_inheritable()?
        } else {
            open_dev_null()?
        });
        say(format_args!("leaked {n}"));
        if n < opts.count {
            thread::sleep(opts.interval);
        }
    }
    let hold_ms = opts.hold_for.map_or(2000, |d| d.as_millis());
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["clean", "--count", "0", "--hold-ms", &hold_ms.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()?;
    say(format_args!("child pid={}", child.id()));
    Ok(opts.count)
}

/// reading that pipe, in one burst; held for `--interval-ms`, then every thread released and
/// joined (gone from /proc) and every fd closed.
#[inline(never)]
fn burst_then_release(_: &Fixture, opts: &Options) -> io::Result<usize> {
    if opts.count < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--count must be at least 2: the threads wait on the burst's first pipe",
        ));
    }
    raise_fd_limit(opts.count as u64 + 64)?;
    let before = ProcCounts::now()?;
    let [release, release_write] = new_pipe()?;
    let mut fds = vec![release, release_write];
    for turn in 0.. {
        let left = opts.count - fds.len();
        if left == 0 {
            break;
        }
        match turn % 3 {
            0 => fds.push(open_dev_null()?),
            1 => fds.push(new_socket()?),
            _ if left >= 2 => fds.extend(new_pipe()?),
            _ => fds.push(open_dev_null()?),
        }
    }
    let mut stacks: Vec<Box<[u8]>> = Vec::with_capacity(BURST_THREADS);
    let mut tids = Vec::with_capacity(BURST_THREADS);
    for _ in 0..BURST_THREADS {
        let mut stack = vec![0u8; THREAD_STACK].into_boxed_slice();
        let top = stack.as_mut_ptr_range().end;
        stacks.push(stack);
        // SAFETY: the stack is kept (its heap block never moves) until /proc shows every task
        // gone, below; `wait_for_release` makes raw syscalls only.
        tids.push(unsafe { clone_task(wait_for_release, release as usize as *mut c_void, top) }?);
    }
    await_sleep_in(&tids, libc::SYS_read, "read", BLOCK_TIMEOUT)?;
    before.await_more(fds.len(), tids.len())?;
    say(format_args!("leaked {}", fds.len() + tids.len()));

    thread::sleep(opts.interval);
    // EOF for every thread's read: each returns, and its task exits.
    close(release_write)?;
    before.await_more(fds.len() - 1, 0)?;
    drop(stacks);
    for fd in fds.into_iter().filter(|&fd| fd != release_write) {
        close(fd)?;
    }
    before.await_more(0, 0)?;
    say(format_args!("leaked 0"));
    Ok(0)
}

// ---- driver ----

struct Options {
    scenario: &'static Scenario,
    count: usize,
    interval: Duration,
    wait_stdin: bool,
    hold: bool,
    /// `--hold-ms`: hold at most this long.
    hold_for: Option<Duration>,
}

fn usage() -> String {
    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    format!(
        "usage: leaktrace-reproducer <scenario> [--count N] [--interval-ms MS] [--wait-stdin] \
         [--hold|--no-hold|--hold-ms MS]\n       leaktrace-reproducer list\nscenarios: {}",
        names.join(" ")
    )
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let name = args.next().ok_or("missing scenario")?;
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("unknown scenario {name:?}"))?;
    let (mut count, mut interval_ms, mut wait_stdin, mut hold) = (None, None, false, None);
    let mut hold_ms: Option<u64> = None;
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--count" => count = Some(value()?.parse().map_err(|e| format!("--count: {e}"))?),
            "--interval-ms" => {
                interval_ms = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--interval-ms: {e}"))?,
                )
            }
            "--wait-stdin" => wait_stdin = true,
            "--hold" => hold = Some(true),
            "--no-hold" => hold = Some(false),
            "--hold-ms" => hold_ms = Some(value()?.parse().map_err(|e| format!("--hold-ms: {e}"))?),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if hold_ms.is_some() {
        if hold == Some(false) {
            return Err("--hold-ms holds: it does not go with --no-hold".into());
        }
        hold = Some(true);
    }
    let count = count.unwrap_or(scenario.count);
    if let Action::Leak { per_call, .. } = scenario.action {
        if !count.is_multiple_of(per_call) {
            return Err(format!(
                "{name} leaks {per_call} fds per call: --count must be a multiple of {per_call}"
            ));
        }
    }
    Ok(Options {
        scenario,
        count,
        interval: Duration::from_millis(interval_ms.unwrap_or(scenario.interval_ms)),
        wait_stdin,
        hold: hold.unwrap_or(scenario.hold),
        hold_for: hold_ms.map(Duration::from_millis),
    })
}

/// Runs the scenario's loop and returns how many objects it leaked. Not inlined: it is the
/// frame between every `leak_*`/`churn_*` function and `main`.
#[inline(never)]
fn run_scenario(opts: &Options) -> io::Result<usize> {
    let fixture = (opts.scenario.setup)()?;
    say(format_args!("ready pid={}", std::process::id()));
    if opts.wait_stdin {
        // A line or EOF: either way the test is done setting up.
        let _ = io::stdin().lock().read_line(&mut String::new());
    }
    let calls = match opts.scenario.action {
        Action::Leak { per_call, .. } => opts.count / per_call,
        Action::Churn(_) => opts.count,
        Action::Once(_) | Action::Staged(_) => 1,
    };
    let mut leaked = 0;
    for call in 0..calls {
        match opts.scenario.action {
            Action::Leak { per_call, leak } => {
                leak(&fixture)?;
                leaked += per_call;
                say(format_args!("leaked {leaked}"));
            }
            Action::Churn(churn) => churn(call)?,
            Action::Once(run) => {
                leaked = run(opts.count)?;
                if leaked > 0 {
                    say(format_args!("leaked {leaked}"));
                }
            }
            Action::Staged(run) => {
                leaked = run(&fixture, opts)?;
                if leaked > 0 {
                    say(format_args!("leaked {leaked}"));
                }
            }
        }
        if call + 1 < calls && !opts.interval.is_zero() {
            thread::sleep(opts.interval);
        }
    }
    say(format_args!("done leaked={leaked}"));
    // The fixture stays open while holding so the fd baseline does not move.
    if opts.hold {
        hold(opts, &fixture)?;
    }
    drop(fixture);
    Ok(leaked)
}

/// Keeps the process (and all it leaked) alive without creating anything — but what a busy
/// scenario's balanced rounds create and close again, one every [`BUSY_PAUSE`]: until stdin's EOF
/// if stdin can hang up (pipe, socket, tty), else until killed; for at most `--hold-ms`.
fn hold(opts: &Options, fixture: &Fixture) -> io::Result<()> {
    // SAFETY: fstat writes into a zeroed, properly sized stat buffer.
    let can_hang_up = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::isatty(0) == 1
            || (libc::fstat(0, &mut st) == 0
                && matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK))
    };
    let deadline = opts.hold_for.map(|d| Instant::now() + d);
    let busy = opts.scenario.busy;
    for round in 0.. {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero()) {
            break;
        }
        // How long to wait (None: for ever) before the next round of work, if any.
        let pause = match busy {
            Some(_) => Some(left.map_or(BUSY_PAUSE, |left| left.min(BUSY_PAUSE))),
            None => left,
        };
        if can_hang_up {
            if stdin_hung_up(pause) {
                break;
            }
        } else if let Some(pause) = pause {
            thread::sleep(pause);
        } else {
            loop {
                thread::sleep(Duration::from_secs(3600));
            }
        }
        if let Some(work) = busy {
            work(fixture, round)?;
        }
    }
    Ok(())
}

/// Waits up to `timeout` (None: for ever) for stdin to be readable and reads what is there;
/// returns whether it hung up (EOF or an error).
fn stdin_hung_up(timeout: Option<Duration>) -> bool {
    let mut pollfd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.map_or(-1, |t| {
        c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX)
    });
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
    if ready <= 0 {
        // Timed out, or interrupted.
        return false;
    }
    match io::stdin().lock().read(&mut [0; 4096]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != io::ErrorKind::Interrupted,
    }
}

/// Not inlined, so `main` is a real frame under `run_scenario`.
#[inline(never)]
fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("list") => {
            for scenario in SCENARIOS {
                say(format_args!("{}", scenario.name));
            }
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help") => {
            say(format_args!("{}", usage()));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let opts = match parse_args(args) {
        Ok(opts) => opts,
        Err(err) => {
            eprintln!("leaktrace-reproducer: {err}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run_scenario(&opts) {
        Ok(leaked) => {
            black_box(leaked);
            ExitCode::SUCCESS
        }
        Err(err) if err.kind() == io::ErrorKind::Unsupported => {
            eprintln!("unsupported: {err}");
            ExitCode::from(3)
        }
        Err(err) => {
            eprintln!("leaktrace-reproducer: {}: {err}", opts.scenario.name);
            ExitCode::from(1)
        }
    }
}
