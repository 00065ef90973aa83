//! The fd syscalls leaktrace follows, and how each one creates or releases fds. The eBPF side
//! is generic; this table (with this architecture's syscall numbers) tells it what to do.

use leaktrace_common::{FdKind, Shape};

/// One fd syscall.
#[derive(Clone, Copy, Debug)]
pub struct FdSyscall {
    pub name: &'static str,
    pub shape: Shape,
    pub kind: FdKind,
    /// Argument index of the path / fd-array pointer / flags the shape needs.
    pub arg: u8,
}

const fn sc(name: &'static str, shape: Shape, kind: FdKind, arg: u8) -> FdSyscall {
    FdSyscall {
        name,
        shape,
        kind,
        arg,
    }
}

use FdKind as K;
use Shape as S;

/// Every syscall that creates or releases an fd. Those this architecture or kernel lacks are
/// skipped at attach time (aarch64 has no open, creat, pipe, dup2, epoll_create, ...).
pub const FD_SYSCALLS: &[FdSyscall] = &[
    sc("openat", S::RetFdPath, K::File, 1),
    sc("openat2", S::RetFdPath, K::File, 1),
    sc("open", S::RetFdPath, K::File, 0),
    sc("creat", S::RetFdPath, K::File, 0),
    sc("open_by_handle_at", S::RetFd, K::File, 0),
    sc("socket", S::RetFd, K::Socket, 0),
    sc("socketpair", S::FdPair, K::Socket, 3),
    sc("accept", S::RetFd, K::Socket, 0),
    sc("accept4", S::RetFd, K::Socket, 0),
    sc("pipe", S::FdPair, K::Pipe, 0),
    sc("pipe2", S::FdPair, K::Pipe, 0),
    sc("dup", S::Dup, K::Inherit, 0),
    sc("dup2", S::Dup, K::Inherit, 0),
    sc("dup3", S::Dup, K::Inherit, 0),
    sc("fcntl", S::Fcntl, K::Inherit, 0),
    sc("eventfd", S::RetFd, K::EventFd, 0),
    sc("eventfd2", S::RetFd, K::EventFd, 0),
    sc("timerfd_create", S::RetFd, K::TimerFd, 0),
    sc("signalfd", S::SignalFd, K::SignalFd, 0),
    sc("signalfd4", S::SignalFd, K::SignalFd, 0),
    sc("epoll_create", S::RetFd, K::Epoll, 0),
    sc("epoll_create1", S::RetFd, K::Epoll, 0),
    sc("inotify_init", S::RetFd, K::Inotify, 0),
    sc("inotify_init1", S::RetFd, K::Inotify, 0),
    sc("fanotify_init", S::RetFd, K::Fanotify, 0),
    sc("memfd_create", S::RetFd, K::MemFd, 0),
    sc("memfd_secret", S::RetFd, K::MemFd, 0),
    sc("pidfd_open", S::RetFd, K::PidFd, 0),
    sc("pidfd_getfd", S::RetFd, K::Other, 0),
    sc("userfaultfd", S::RetFd, K::Other, 0),
    sc("io_uring_setup", S::RetFd, K::Other, 0),
    sc("perf_event_open", S::RetFd, K::Other, 0),
    sc("bpf", S::RetFd, K::Other, 0),
    sc("open_tree", S::RetFd, K::Other, 0),
    sc("fsopen", S::RetFd, K::Other, 0),
    sc("fsmount", S::RetFd, K::Other, 0),
    sc("fspick", S::RetFd, K::Other, 0),
    // Go's os/exec: clone(CLONE_PIDFD) on every command it starts.
    sc("clone", S::ClonePidfd, K::PidFd, 2),
    sc("clone3", S::Clone3Pidfd, K::PidFd, 0),
    sc("close", S::Close, K::Other, 0),
    sc("close_range", S::CloseRange, K::Other, 2),
];

/// Syscalls the tracepoints do not follow that install fds all the same: the `fd_install` kprobe
/// reports what it sees installed during them with this kind (during any other untraced
/// syscall: [`FdKind::Installed`]).
pub const INSTALLING_SYSCALLS: &[(&str, FdKind)] = &[
    // SCM_RIGHTS: fds another process sent over a unix socket.
    ("recvmsg", K::Received),
    ("recvmmsg", K::Received),
    // Requests that open, accept, … and complete inline, in the submitting thread.
    ("io_uring_enter", K::IoUring),
];

/// This architecture's number for syscall `name` (of either table), if it has one.
pub fn syscall_number(name: &str) -> Option<u32> {
    number(name).and_then(|nr| u32::try_from(nr).ok())
}

impl FdSyscall {
    /// The same syscall with its pathname left unread (`--no-paths`).
    pub fn without_path(self) -> Self {
        match self.shape {
            Shape::RetFdPath => Self {
                shape: Shape::RetFd,
                ..self
            },
            _ => self,
        }
    }

    /// This architecture's number for the syscall, if it has one.
    pub fn number(&self) -> Option<u32> {
        syscall_number(self.name)
    }

    pub fn enter_tracepoint(&self) -> Option<String> {
        (self.shape.needs_entry_args() || matches!(self.shape, Shape::Close))
            .then(|| format!("sys_enter_{}", self.name))
    }

    pub fn exit_tracepoint(&self) -> Option<String> {
        (!matches!(self.shape, Shape::Close)).then(|| format!("sys_exit_{}", self.name))
    }
}

fn number(name: &str) -> Option<libc::c_long> {
    use libc::*;
    Some(match name {
        "openat" => SYS_openat,
        "openat2" => SYS_openat2,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "socket" => SYS_socket,
        "socketpair" => SYS_socketpair,
        "accept4" => SYS_accept4,
        "accept" => SYS_accept,
        "pipe2" => SYS_pipe2,
        "dup" => SYS_dup,
        "dup3" => SYS_dup3,
        "fcntl" => SYS_fcntl,
        "eventfd2" => SYS_eventfd2,
        "timerfd_create" => SYS_timerfd_create,
        "signalfd4" => SYS_signalfd4,
        "epoll_create1" => SYS_epoll_create1,
        "inotify_init1" => SYS_inotify_init1,
        "fanotify_init" => SYS_fanotify_init,
        "memfd_create" => SYS_memfd_create,
        "memfd_secret" => SYS_memfd_secret,
        "pidfd_open" => SYS_pidfd_open,
        "pidfd_getfd" => SYS_pidfd_getfd,
        "userfaultfd" => SYS_userfaultfd,
        "io_uring_setup" => SYS_io_uring_setup,
        "perf_event_open" => SYS_perf_event_open,
        "bpf" => SYS_bpf,
        "open_tree" => SYS_open_tree,
        "fsopen" => SYS_fsopen,
        "fsmount" => SYS_fsmount,
        "fspick" => SYS_fspick,
        "clone" => SYS_clone,
        "clone3" => SYS_clone3,
        "close" => SYS_close,
        "close_range" => SYS_close_range,
        "recvmsg" => SYS_recvmsg,
        "recvmmsg" => SYS_recvmmsg,
        "io_uring_enter" => SYS_io_uring_enter,
        #[cfg(target_arch = "x86_64")]
        "open" => SYS_open,
        #[cfg(target_arch = "x86_64")]
        "creat" => SYS_creat,
        #[cfg(target_arch = "x86_64")]
        "pipe" => SYS_pipe,
        #[cfg(target_arch = "x86_64")]
        "dup2" => SYS_dup2,
        #[cfg(target_arch = "x86_64")]
        "eventfd" => SYS_eventfd,
        #[cfg(target_arch = "x86_64")]
        "signalfd" => SYS_signalfd,
        #[cfg(target_arch = "x86_64")]
        "epoll_create" => SYS_epoll_create,
        #[cfg(target_arch = "x86_64")]
        "inotify_init" => SYS_inotify_init,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_paths_no_open_reads_its_pathname_or_needs_its_entry() {
        let opens: Vec<FdSyscall> = FD_SYSCALLS
            .iter()
            .filter(|s| s.shape == Shape::RetFdPath)
            .copied()
            .collect();
        assert_eq!(opens.len(), 4);
        for s in opens {
            let without = s.without_path();
            assert_eq!((without.shape, without.kind), (Shape::RetFd, s.kind));
            assert_eq!(without.enter_tracepoint(), None);
            assert_eq!(without.exit_tracepoint(), s.exit_tracepoint());
        }
        for s in FD_SYSCALLS.iter().filter(|s| s.shape != Shape::RetFdPath) {
            assert_eq!(s.without_path().shape, s.shape);
        }
    }

    #[test]
    fn every_syscall_has_a_unique_name_and_a_number_where_the_architecture_has_it() {
        let mut names: Vec<_> = FD_SYSCALLS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FD_SYSCALLS.len());
        for s in FD_SYSCALLS {
            let legacy = matches!(
                s.name,
                "open"
                    | "creat"
                    | "pipe"
                    | "dup2"
                    | "eventfd"
                    | "signalfd"
                    | "epoll_create"
                    | "inotify_init"
            );
            assert_eq!(
                s.number().is_some(),
                cfg!(target_arch = "x86_64") || !legacy,
                "{}",
                s.name
            );
        }
    }

    #[test]
    fn numbers_fit_the_dispatch_table_and_do_not_collide() {
        let mut numbers: Vec<_> = FD_SYSCALLS.iter().filter_map(FdSyscall::number).collect();
        assert!(numbers
            .iter()
            .all(|&nr| nr < leaktrace_common::capacity::SYSCALLS));
        numbers.sort_unstable();
        let n = numbers.len();
        numbers.dedup();
        assert_eq!(numbers.len(), n);
    }

    #[test]
    fn installing_syscalls_have_numbers_apart_from_the_traced_ones_and_say_where_fds_came_from() {
        let traced: Vec<u32> = FD_SYSCALLS.iter().filter_map(FdSyscall::number).collect();
        for &(name, kind) in INSTALLING_SYSCALLS {
            assert!(FD_SYSCALLS.iter().all(|s| s.name != name), "{name}");
            // Every architecture leaktrace runs on has all three.
            let nr = syscall_number(name).unwrap_or_else(|| panic!("no number for {name}"));
            assert!(nr < leaktrace_common::capacity::SYSCALLS, "{name}");
            assert!(
                !traced.contains(&nr),
                "{name} collides with a traced syscall"
            );
            // Only the origin kinds: a shape-less entry with a kind the kprobe reports as is.
            assert!(
                matches!(kind, K::Received | K::IoUring | K::Installed),
                "{name}"
            );
        }
        let kind_of = |name| {
            INSTALLING_SYSCALLS
                .iter()
                .find(|&&(n, _)| n == name)
                .map(|&(_, kind)| kind)
        };
        assert_eq!(kind_of("recvmsg"), Some(K::Received));
        assert_eq!(kind_of("recvmmsg"), Some(K::Received));
        assert_eq!(kind_of("io_uring_enter"), Some(K::IoUring));
        assert_eq!(
            syscall_number("recvmsg"),
            u32::try_from(libc::SYS_recvmsg).ok()
        );
    }

    #[test]
    fn probe_slots_fit_the_counter_array() {
        let slots = u32::from(leaktrace_common::Probe::syscall(FD_SYSCALLS.len() as u16));
        assert!(slots <= leaktrace_common::capacity::PROBES);
    }

    #[test]
    fn close_is_seen_at_entry_and_creations_at_exit() {
        let close = FD_SYSCALLS.iter().find(|s| s.name == "close").unwrap();
        assert_eq!(close.enter_tracepoint().as_deref(), Some("sys_enter_close"));
        assert_eq!(close.exit_tracepoint(), None);
        let socket = FD_SYSCALLS.iter().find(|s| s.name == "socket").unwrap();
        assert_eq!(socket.enter_tracepoint(), None);
        assert_eq!(socket.exit_tracepoint().as_deref(), Some("sys_exit_socket"));
        let openat = FD_SYSCALLS.iter().find(|s| s.name == "openat").unwrap();
        assert!(openat.enter_tracepoint().is_some() && openat.exit_tracepoint().is_some());
    }
}
