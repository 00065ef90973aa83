//! What the programs the tests and benchmarks trace share: libc calls made in frames of their
//! own, the stdout protocol's lines, the fd limit.

use std::{
    fs,
    io::{self, Write},
    os::fd::RawFd,
    sync::{Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use libc::c_int;

/// Makes one libc call in a frame of its own and turns -1 into an error that names the call and
/// keeps the errno's `ErrorKind`. A frame-pointer walk from a frameless glibc wrapper loses the
/// wrapper's direct caller: this frame is that caller, so the function that made the call stays
/// in the stack. Checking the result after the call also keeps it from being a tail call.
#[inline(never)]
pub fn sys(what: &str, call: impl FnOnce() -> c_int) -> io::Result<c_int> {
    let ret = call();
    if ret == -1 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(ret)
}

pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: closes an fd this process created and owns exclusively.
    sys("close", || unsafe { libc::close(fd) }).map(drop)
}

/// A close-on-exec pipe: [read end, write end].
pub fn new_pipe() -> io::Result<[RawFd; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    sys("pipe2", || unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
    })?;
    Ok(fds)
}

/// The kernel tid of the calling thread.
pub fn gettid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() }
}

/// Locks a std mutex, ignoring poison (no thread here panics while holding one).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One line on stdout, flushed. Write errors are ignored: the reader may stop reading once it
/// has what it needs, and that must not change what the program does.
pub fn say(line: std::fmt::Arguments) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Raises the soft limit on open fds to `needed`, or as far as the hard limit allows; returns
/// the soft limit now.
pub fn raise_fd_limit(needed: u64) -> io::Result<u64> {
    set_fd_limit(|soft| soft.max(needed as libc::rlim_t))
}

/// Sets the soft limit on open fds to what `soft` makes of the current one, at most the hard
/// limit; returns the soft limit now.
pub fn set_fd_limit(soft: impl FnOnce(libc::rlim_t) -> libc::rlim_t) -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes `limit`.
    sys("getrlimit", || unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit)
    })?;
    let wanted = soft(limit.rlim_cur).min(limit.rlim_max);
    if wanted != limit.rlim_cur {
        limit.rlim_cur = wanted;
        // SAFETY: `limit` is initialised.
        sys("setrlimit", || unsafe {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit)
        })?;
    }
    Ok(limit.rlim_cur)
}

/// Whether thread `tid` of this process sleeps in syscall `nr`: /proc's `syscall` file names
/// that syscall (it says `running` for a running thread) and its `stat` state is `S`.
pub fn sleeps_in(tid: libc::pid_t, nr: libc::c_long) -> io::Result<bool> {
    let gone = |err: io::Error| io::Error::new(err.kind(), format!("thread {tid} is gone: {err}"));
    let syscall = fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).map_err(gone)?;
    if syscall.split_whitespace().next() != Some(nr.to_string().as_str()) {
        return Ok(false);
    }
    let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).map_err(gone)?;
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    Ok(state == Some("S"))
}

/// Waits until every thread in `tids` sleeps in syscall `nr` (named `name` in the error), at
/// most `timeout` in all. Polled, so the caller makes no futex wait of its own.
pub fn await_sleep_in(
    tids: &[libc::pid_t],
    nr: libc::c_long,
    name: &str,
    timeout: Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    for &tid in tids {
        while !sleeps_in(tid, nr)? {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("thread {tid} did not fall asleep in {name}"),
                ));
            }
            thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}
