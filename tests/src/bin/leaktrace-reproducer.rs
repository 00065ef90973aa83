//! leaktrace-reproducer: a deliberately leaky program for leaktrace's integration tests.
//!
//! ```text
//! leaktrace-reproducer <scenario> [--count N] [--interval-ms MS] [--wait-stdin] [--hold|--no-hold]
//! leaktrace-reproducer list
//! ```
//!
//! Every leak scenario leaks `--count` objects (fds, or threads for `threads`; default 20), one call
//! of its `leak_*` function every `--interval-ms` (default 50). Scenarios leaking 2 fds per call
//! (`fd-pipe`, `fd-socketpair`) need an even count.
//!
//! `clean` is the control: `--count` balanced iterations (default 2000, interval 0), each opening and
//! closing a file, a socket, a pipe and an eventfd, and every 10th spawning and joining a thread, all
//! from `churn_*` functions. Nothing outlives its iteration, so the tracer must report nothing.
//!
//! stdout, one flushed line each: `ready pid=<pid>` (after any scenario fixture — the accept
//! scenario's listener, the dup scenario's source fd — is set up, so `/proc/<pid>/fd` at that point
//! is the baseline); `leaked <total objects so far>` after each leak call; `done leaked=<total>`.
//!
//! `--wait-stdin`: after `ready`, wait for one line (or EOF) on stdin before starting, so a test can
//! attach the tracer first.
//!
//! Holding (the default; `--no-hold` exits right after `done`): keep everything leaked and create
//! nothing more. The main thread reads stdin to EOF; if stdin is a pipe, socket or tty, EOF means
//! the test hung up and the process exits 0. Any other stdin (e.g. `/dev/null`, which is at EOF at
//! once) cannot signal that, so the process then sleeps until killed.
//!
//! Exit codes: 0 success, 1 a syscall failed (error on stderr), 2 usage error, 3 the scenario is not
//! supported here (`unsupported: <error>` on stderr: no CAP_SYS_ADMIN for fanotify, ENOSYS).
//! Note the kernel's per-user limits of 128 inotify instances and 128 fanotify groups by default.
//!
//! # Stacks
//!
//! The tracer records user stacks by walking frame pointers (forced on by `.cargo/config.toml`),
//! and each scenario creates what it leaks in exactly one `#[inline(never)]` `leak_*` function, so
//! the recorded stack reads `<libc wrapper> ← leak_xxx ← run_scenario ← main`. Two glibc facts
//! shape the code (checked with `perf record -g` against Debian 12's glibc 2.36):
//! - Syscall wrappers are frameless leaves, so a frame-pointer walk from inside one skips their
//!   direct caller. Every raw call therefore goes through [`sys`], a frame of its own that is the
//!   one skipped, keeping `leak_xxx` in the stack.
//! - Some glibc functions use `rbp` as a general register, which breaks the walk entirely: `open64`
//!   (so no `File::open` in `leak_file_fd`: it uses `openat`) and `pthread_create` (so no
//!   `std::thread::spawn` in `leak_blocked_thread`: it uses a bare `clone`).

use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufRead, Write};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::process::ExitCode;
use std::ptr;
use std::thread;
use std::time::Duration;

use libc::{c_int, c_void};

/// Long-lived helpers a scenario needs, created before `ready` and never counted as leaked.
#[derive(Default)]
struct Fixture {
    listener: Option<TcpListener>,
    dup_source: Option<File>,
}

enum Action {
    /// Each call leaks `per_call` objects.
    Leak {
        per_call: usize,
        leak: fn(&Fixture) -> io::Result<()>,
    },
    /// One balanced iteration (`clean`), given its iteration number.
    Churn(fn(usize) -> io::Result<()>),
}

struct Scenario {
    name: &'static str,
    setup: fn() -> io::Result<Fixture>,
    action: Action,
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
        name: "clean",
        setup: no_fixture,
        action: Action::Churn(churn_iteration),
    },
];

// ---- syscall helpers ----

/// Makes one libc call in a frame of its own (see "Stacks" above: this is the frame a walk from a
/// frameless glibc wrapper loses) and turns -1 into an error that names the call and keeps the
/// errno's `ErrorKind`. Checking the result after the call also keeps it from being a tail call.
#[inline(never)]
fn sys(what: &str, call: impl FnOnce() -> c_int) -> io::Result<c_int> {
    let ret = call();
    if ret == -1 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("{what}: {err}")));
    }
    Ok(ret)
}

fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: closes an fd this process created and owns exclusively.
    sys("close", || unsafe { libc::close(fd) }).map(drop)
}

fn open_dev_null() -> io::Result<RawFd> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: the path is a NUL-terminated literal.
    sys("openat", || unsafe {
        libc::openat(libc::AT_FDCWD, c"/dev/null".as_ptr(), flags)
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
    // The flags pthread_create uses, minus its TLS and tid bookkeeping.
    const FLAGS: c_int = libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM;
    let stack = vec![0u8; THREAD_STACK].leak().as_mut_ptr_range().end;
    // A new thread inherits the signal mask: block everything around clone so that no handler
    // ever runs on the leaked thread and its sleep is never interrupted.
    let all = sigset(libc::sigfillset)?;
    let mut saved = MaybeUninit::uninit();
    // SAFETY: `all` is initialised; sigprocmask writes `saved`.
    sys("sigprocmask", || unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &all, saved.as_mut_ptr())
    })?;
    // SAFETY: the child runs only `sleep_forever` on its own leaked stack.
    let tid = sys("clone", || unsafe {
        libc::clone(sleep_forever, stack.cast(), FLAGS, ptr::null_mut())
    });
    // SAFETY: restores the mask sigprocmask saved above.
    sys("sigprocmask", || unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, saved.as_ptr(), ptr::null_mut())
    })?;
    black_box(tid?);
    Ok(())
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
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    sys("pipe2", || unsafe {
        libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC)
    })?;
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

// ---- driver ----

struct Options {
    scenario: &'static Scenario,
    count: usize,
    interval: Duration,
    wait_stdin: bool,
    hold: bool,
}

/// One line on stdout, flushed. Write errors are ignored: a test may stop reading once it has
/// what it needs, and that must not change what the scenario leaks.
fn say(line: std::fmt::Arguments) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn usage() -> String {
    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    format!(
        "usage: leaktrace-reproducer <scenario> [--count N] [--interval-ms MS] [--wait-stdin] \
         [--hold|--no-hold]\n       leaktrace-reproducer list\nscenarios: {}",
        names.join(" ")
    )
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let name = args.next().ok_or("missing scenario")?;
    let scenario = SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| format!("unknown scenario {name:?}"))?;
    let (mut count, mut interval_ms, mut wait_stdin, mut hold) = (None, None, false, true);
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
            "--hold" => hold = true,
            "--no-hold" => hold = false,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    // Leaks default to a few objects at a watchable pace; the control to heavy, fast churn.
    let (default_count, default_interval_ms): (usize, u64) = match scenario.action {
        Action::Leak { .. } => (20, 50),
        Action::Churn(_) => (2000, 0),
    };
    let count = count.unwrap_or(default_count);
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
        interval: Duration::from_millis(interval_ms.unwrap_or(default_interval_ms)),
        wait_stdin,
        hold,
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
        }
        if call + 1 < calls && !opts.interval.is_zero() {
            thread::sleep(opts.interval);
        }
    }
    say(format_args!("done leaked={leaked}"));
    // The fixture stays open while holding so the fd baseline does not move.
    if opts.hold {
        hold();
    }
    drop(fixture);
    Ok(leaked)
}

/// Keeps the process (and all it leaked) alive without creating anything: until stdin's EOF if
/// stdin can hang up (pipe, socket, tty), else until killed.
fn hold() {
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    // SAFETY: fstat writes into a zeroed, properly sized stat buffer.
    let can_hang_up = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::isatty(0) == 1
            || (libc::fstat(0, &mut st) == 0
                && matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK))
    };
    if can_hang_up {
        return;
    }
    loop {
        thread::sleep(Duration::from_secs(3600));
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
