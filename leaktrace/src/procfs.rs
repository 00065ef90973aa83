//! Reading `/proc`.
//!
//! Everything here is racy: the process may exit (or close an fd, or end a thread) between any
//! two reads, so every function returns an error or skips the vanished entry instead of
//! panicking.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::Path;

use crate::model::{FdKind, Snapshot};

const PROC: &str = "/proc";

/// CLOCK_MONOTONIC in ns: the clock `bpf_ktime_get_ns` reads, so event timestamps and snapshot
/// times compare directly.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        // Cannot happen for CLOCK_MONOTONIC on Linux; 0 sorts before every event.
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Every process now (numeric /proc entries; threads are not listed there).
pub fn pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir(PROC)?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

/// Whether `/proc/PID` exists.
///
/// Existence is all this checks: a zombie (exited, not yet reaped) still has `/proc/PID`, and
/// so does a thread id (`/proc/TID` is reachable though not listed). Use [`is_process`] to tell
/// threads from processes.
pub fn process_exists(pid: u32) -> bool {
    Path::new(PROC).join(pid.to_string()).exists()
}

/// The process's `comm` (kernel-truncated to 15 bytes), without the trailing newline.
pub fn comm(pid: u32) -> io::Result<String> {
    read_comm(&Path::new(PROC).join(pid.to_string()))
}

/// Threads (`/proc/PID/task`) and fds (`/proc/PID/fd`, kind from the link target) of a process.
///
/// `started_ns` is [`monotonic_ns`] taken just before the first read. A missing process is an
/// [`io::ErrorKind::NotFound`] error; an fd closed while it is being scanned is skipped.
pub fn snapshot(pid: u32) -> io::Result<Snapshot> {
    snapshot_at(Path::new(PROC), pid)
}

/// [`snapshot`] with `/proc` at `proc_root` (a host `/proc` mounted elsewhere, or a fake tree).
pub fn snapshot_at(proc_root: &Path, pid: u32) -> io::Result<Snapshot> {
    let dir = proc_root.join(pid.to_string());
    let started_ns = monotonic_ns();
    let comm = read_comm(&dir)?;

    let mut tids: Vec<u32> = fs::read_dir(dir.join("task"))?
        .filter_map(|entry| parse_name(&entry.ok()?.file_name()))
        .collect();
    tids.sort_unstable();

    let fd_dir = dir.join("fd");
    let mut fds = Vec::new();
    for entry in fs::read_dir(&fd_dir)? {
        let name = entry?.file_name();
        let Some(fd) = parse_name::<i32>(&name) else {
            continue;
        };
        // Fails when the fd was closed after the directory was listed: it is not open anymore.
        let Ok(target) = fs::read_link(fd_dir.join(&name)) else {
            continue;
        };
        fds.push((fd, FdKind::from_link(&target.to_string_lossy())));
    }
    fds.sort_unstable();

    Ok(Snapshot {
        pid,
        comm,
        started_ns,
        tids,
        fds,
    })
}

/// The thread-group id from the text of `/proc/PID/status` (`Tgid:\t123`); None if the line is
/// missing or malformed.
pub fn parse_status_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a thread-group leader (a process) rather than a non-leader thread id.
pub fn is_process(pid: u32) -> io::Result<bool> {
    let status = fs::read_to_string(Path::new(PROC).join(pid.to_string()).join("status"))?;
    let tgid = parse_status_tgid(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no Tgid in /proc/{pid}/status"),
        )
    })?;
    Ok(tgid == pid)
}

/// `comm` may hold any bytes but a NUL, so it is read lossily rather than as UTF-8.
fn read_comm(pid_dir: &Path) -> io::Result<String> {
    let raw = fs::read(pid_dir.join("comm"))?;
    let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
    Ok(String::from_utf8_lossy(raw).into_owned())
}

fn parse_name<T: std::str::FromStr>(name: &OsStr) -> Option<T> {
    name.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Above PID_MAX_LIMIT (4M), so it can never exist.
    const NO_SUCH_PID: u32 = u32::MAX / 4;

    /// A temporary directory removed on drop, also when the test fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "leaktrace-procfs-{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                monotonic_ns()
            ));
            fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn gettid() -> u32 {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        u32::try_from(tid).expect("tid is positive")
    }

    #[test]
    fn monotonic_is_monotonic_and_nonzero() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a, "{a} then {b}");
    }

    #[test]
    fn snapshot_of_self() {
        let mut pipe = [0; 2];
        // SAFETY: `pipe` has room for the two fds.
        assert_eq!(
            unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
            0
        );
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
        // SAFETY: plain syscall wrapper.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        // SAFETY: eventfd succeeded, so `efd` is open and owned by nobody else.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };

        let pid = std::process::id();
        let before = monotonic_ns();
        let snap = snapshot(pid).expect("snapshot of self");
        assert_eq!(snap.pid, pid);
        assert!(!snap.comm.is_empty() && !snap.comm.ends_with('\n'));
        assert_eq!(comm(pid).expect("comm"), snap.comm);
        assert!(snap.started_ns >= before);
        assert!(snap.tids.contains(&pid), "{:?}", snap.tids);
        assert!(snap.tids.contains(&gettid()), "{:?}", snap.tids);
        let kind = |fd: &OwnedFd| {
            snap.fds
                .iter()
                .find(|(n, _)| *n == fd.as_raw_fd())
                .map(|(_, kind)| *kind)
        };
        assert_eq!(kind(&rd), Some(FdKind::Pipe));
        assert_eq!(kind(&wr), Some(FdKind::Pipe));
        assert_eq!(kind(&efd), Some(FdKind::EventFd));
        assert!(process_exists(pid));
        assert!(is_process(pid).expect("status of self"));
    }

    #[test]
    fn a_thread_is_not_a_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            tx.send(gettid()).expect("send tid");
            let _ = done_rx.recv();
        });
        let tid = rx.recv().expect("tid");
        let result = is_process(tid);
        drop(done_tx);
        handle.join().expect("thread");
        assert!(!result.expect("status of thread"));
    }

    #[test]
    fn snapshot_of_fake_tree() {
        let root = TempDir::new();
        let pid_dir = root.0.join("42");
        fs::create_dir_all(pid_dir.join("task/42")).expect("task/42");
        fs::create_dir_all(pid_dir.join("task/57")).expect("task/57");
        fs::create_dir_all(pid_dir.join("fd")).expect("fd");
        fs::write(pid_dir.join("comm"), b"fake \xffd\n").expect("comm");
        for (fd, target) in [
            ("0", "/dev/null"),
            ("3", "socket:[123]"),
            ("4", "pipe:[456]"),
            ("5", "anon_inode:[eventfd]"),
            ("6", "anon_inode:[eventpoll]"),
            ("7", "/memfd:buf (deleted)"),
            ("8", "anon_inode:bpf-map"),
            ("junk", "socket:[1]"),
        ] {
            symlink(target, pid_dir.join("fd").join(fd)).expect("fd link");
        }
        // Not a link: readlink fails like it does for an fd closed mid-scan.
        fs::write(pid_dir.join("fd/9"), b"").expect("fd 9");

        let snap = snapshot_at(&root.0, 42).expect("snapshot of fake tree");
        assert_eq!(snap.pid, 42);
        assert_eq!(snap.comm, "fake \u{fffd}d");
        assert_eq!(snap.tids, [42, 57]);
        assert_eq!(
            snap.fds,
            [
                (0, FdKind::File),
                (3, FdKind::Socket),
                (4, FdKind::Pipe),
                (5, FdKind::EventFd),
                (6, FdKind::Epoll),
                (7, FdKind::MemFd),
                (8, FdKind::Other),
            ]
        );

        let err = snapshot_at(&root.0, 43).expect_err("no such pid in the fake tree");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn parses_tgid() {
        let status =
            "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t1234\nNgid:\t0\nPid:\t1235\n";
        assert_eq!(parse_status_tgid(status), Some(1234));
        assert_eq!(parse_status_tgid("Tgid: 7"), Some(7));
        assert_eq!(parse_status_tgid(""), None);
        assert_eq!(parse_status_tgid("Pid:\t12\n"), None);
        assert_eq!(parse_status_tgid("Tgid:\n"), None);
        assert_eq!(parse_status_tgid("Tgid:\t-1\n"), None);
        assert_eq!(parse_status_tgid("Tgid:\t12x\n"), None);
        assert_eq!(parse_status_tgid("Tgid:\t99999999999\n"), None);
    }

    #[test]
    fn missing_process_is_not_found() {
        assert!(!process_exists(NO_SUCH_PID));
        assert!(!process_exists(0));
        for err in [
            snapshot(NO_SUCH_PID).expect_err("snapshot"),
            comm(NO_SUCH_PID).expect_err("comm"),
            is_process(NO_SUCH_PID).expect_err("is_process"),
        ] {
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        }
    }
}
