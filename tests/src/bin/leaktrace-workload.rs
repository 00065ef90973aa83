//! leaktrace-workload: the workloads `cargo xtask bench` runs under each tracer (none, an empty
//! BPF program, leaktrace, bpftrace) to compare what tracing costs them.
//!
//! ```text
//! leaktrace-workload <timed workload> [--ops N]
//! leaktrace-workload fd-rate --rate EVENTS_PER_S --seconds S [--threads T]
//! leaktrace-workload hold --fds N --threads T
//! leaktrace-workload list
//! ```
//!
//! Options take `--flag value` or `--flag=value`; those without a default are required.
//!
//! # Protocol
//!
//! stdout, one flushed line each: `ready pid=<pid>` once setup is done (helper threads started,
//! source fds opened, limits raised); then the workload waits for one line (or EOF) on stdin, so
//! the harness can attach a tracer first, runs, prints its result line, waits for another line
//! (or EOF) so the harness can read the tracer's state first, and exits 0. Errors: a
//! message on stderr, exit 1. Usage errors: exit 2.
//!
//! # Timed workloads
//!
//! After the start line, an untimed warm-up of `ops / 20` ops (it also warms the tracer's maps),
//! then `--ops` ops timed by one loop shared by all ([`time_ops`]), then
//! `result workload=<name> ops=<N> elapsed_ns=<T> ns_per_op=<T / N, 1 decimal>`. Each op is one
//! call of an `#[inline(never)]` function named for it. Workload → op function: what one op does
//! (default `--ops`, sized for 0.3–1 s untraced on a 2-core Firecracker VM, where a
//! syscall costs more than on bare metal):
//! - `open-close` → [`open_close`]: `open("/dev/null", O_RDONLY | O_CLOEXEC)` (glibc's `open64`,
//!   which makes an `openat`), then `close` (200000).
//! - `socket-close` → [`socket_close`]: `socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)`, then
//!   `close` (100000).
//! - `pipe-close` → [`pipe_close`]: `pipe2(O_CLOEXEC)`, then `close` of both ends (100000).
//! - `thread-spawn-join` → [`thread_spawn_join`]: a std thread with a 64 KiB stack spawned running
//!   an empty closure, then joined (10000).
//! - `futex-pingpong` → [`futex_handoff`]: one hand-off round with a helper thread started at
//!   setup, through a std `Mutex<bool>` (true: the helper's turn) and a `Condvar`: the main
//!   thread hands the turn over and waits until the helper ([`hand_back`]) hands it back. Both
//!   threads wait once every op, each asleep in a futex wait, so an op is two one-way passes (a
//!   round trip; the reproducer's `futex-pingpong` counts each pass as a hand-off). `--ops`
//!   counts rounds (30000).
//! - `mixed` → [`mixed_op`]: op `i` (from 0) does one `open-close`, one `socket-close`, one
//!   `pipe-close` and one `futex-pingpong` round, in that order, with the same functions and
//!   helper thread; and ops with `(i + 1) % 32 == 0` (every 32nd: `N / 32` of `N`, rounded down)
//!   end with a `thread-spawn-join` too (10000).
//!
//! # Generators
//!
//! `fd-rate --rate R --seconds S [--threads T]` (default 1 thread) drives leaktrace's fd path at
//! a paced rate for `S` seconds (fractions allowed, rounded to a millisecond). An event is one
//! traced syscall; events come in pairs, [`dup_close`]: `dup` of a `/dev/null` fd opened at
//! setup, then `close` of the duplicate. The `T` threads (started at setup, released together)
//! share `R` events/s evenly. Each paces its share in 1 ms slices, against absolute deadlines
//! `start + k ms` (so no drift accumulates): it makes the pairs due by the end of its slice (an
//! exact integer share, so fractional pairs per slice add up), then sleeps until the slice's
//! deadline (`clock_nanosleep`, `TIMER_ABSTIME`). Behind (past the deadline already), it does not
//! sleep; behind by whole slices, it skips to the current one and catches up at most one slice's
//! worth of the missed pairs, giving the rest up rather than bursting: the shortfall shows in
//! the achieved rate. `--rate 0`: as fast as it can, for `S` seconds. Result:
//! `result workload=fd-rate target_rate=<R> events=<N> elapsed_ns=<T> rate=<N / T, events/s>`.
//!
//! `hold --fds N --threads T` holds objects for the harness to look at: at setup it opens one
//! `/dev/null` fd and raises the soft RLIMIT_NOFILE to the hard limit, failing at once if
//! `N + 64` is over it. After the start line, [`hold_fds`] makes `N` fds (`dup`s of that one) and
//! [`hold_threads`] starts `T` std threads (64 KiB stacks), each asleep for good in `ppoll` on no
//! fds without a timeout: a blocking syscall, deliberately not a futex wait. Once /proc shows every
//! thread asleep in ppoll it prints `holding fds=<N> threads=<T>`, then waits for EOF or a second
//! line on stdin and exits 0 at once, the threads with it.
//!
//! # Stacks
//!
//! Tracers record user stacks by walking frame pointers (forced on by `.cargo/config.toml`). As
//! in leaktrace-reproducer, every raw libc call goes through [`sys`], a frame of its own: a walk
//! from inside a frameless glibc wrapper skips the wrapper's caller, which is then `sys` rather
//! than the op's function. Two walks break whatever this program does, as the reproducer notes:
//! glibc 2.36's `open64` keeps the path in `rbp` across the syscall (so `open-close`'s openat
//! stacks end at the wrapper), and `pthread_create` (every std spawn) uses `rbp` too.

use std::io::{self, BufRead};
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use leaktrace_tests::{await_sleep_in, close, gettid, lock, new_pipe, raise_fd_limit, say, sys};

/// The stack of every thread this program starts: the threads run almost nothing.
const SMALL_STACK: usize = 64 * 1024;
/// `fd-rate`'s pacing slice.
const SLICE_NS: u64 = 1_000_000;
const SLICES_PER_S: u64 = 1_000_000_000 / SLICE_NS;
/// `hold`: fds kept free beyond `--fds` (stdio, the source fd, /proc reads, std's own).
const FD_HEADROOM: u64 = 64;
/// How long `hold` waits for its threads to fall asleep.
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

struct Workload {
    name: &'static str,
    about: &'static str,
    kind: Kind,
}

enum Kind {
    /// Runs `--ops` (default `ops`) ops of `op`, given the fixture and the op's number; `pingpong`
    /// says whether the fixture starts a [`Pingpong`] helper.
    Timed {
        ops: u64,
        pingpong: bool,
        op: fn(&Fixture, u64) -> io::Result<()>,
    },
    FdRate,
    Hold,
}

impl Kind {
    /// The options this kind takes.
    fn flags(&self) -> &'static [&'static str] {
        match self {
            Kind::Timed { .. } => &["--ops"],
            Kind::FdRate => &["--rate", "--seconds", "--threads"],
            Kind::Hold => &["--fds", "--threads"],
        }
    }
}

const fn timed(
    name: &'static str,
    about: &'static str,
    ops: u64,
    op: fn(&Fixture, u64) -> io::Result<()>,
) -> Workload {
    Workload {
        name,
        about,
        kind: Kind::Timed {
            ops,
            pingpong: false,
            op,
        },
    }
}

const WORKLOADS: &[Workload] = &[
    timed(
        "open-close",
        "open(\"/dev/null\") + close per op",
        200_000,
        |_, _| open_close(),
    ),
    timed(
        "socket-close",
        "socket(AF_UNIX, SOCK_STREAM) + close per op",
        100_000,
        |_, _| socket_close(),
    ),
    timed(
        "pipe-close",
        "pipe2 + close of both ends per op",
        100_000,
        |_, _| pipe_close(),
    ),
    timed(
        "thread-spawn-join",
        "spawn (64 KiB stack) + join of an empty std thread per op",
        10_000,
        |_, _| thread_spawn_join(),
    ),
    Workload {
        name: "futex-pingpong",
        about: "one Mutex+Condvar hand-off round trip with a helper thread per op",
        kind: Kind::Timed {
            ops: 30_000,
            pingpong: true,
            op: |fixture, _| futex_handoff(fixture.court()),
        },
    },
    Workload {
        name: "mixed",
        about: "open-close + socket-close + pipe-close + futex-pingpong per op, \
                + thread-spawn-join every 32nd op",
        kind: Kind::Timed {
            ops: 10_000,
            pingpong: true,
            op: |fixture, i| mixed_op(fixture.court(), i),
        },
    },
    Workload {
        name: "fd-rate",
        about: "dup + close pairs paced at --rate events/s (0: flat out) for --seconds, \
                on --threads threads",
        kind: Kind::FdRate,
    },
    Workload {
        name: "hold",
        about: "holds --fds dup'd fds and --threads threads asleep in ppoll until stdin ends",
        kind: Kind::Hold,
    },
];

// ---- syscall helpers ----

/// `/dev/null` through glibc's `open` (`open64`, an `openat` syscall), as a program would.
fn open_dev_null() -> io::Result<RawFd> {
    let flags = libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: the path is a NUL-terminated literal.
    sys("open", || unsafe {
        libc::open(c"/dev/null".as_ptr(), flags)
    })
}

fn dup(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: plain syscall on an fd this process owns.
    sys("dup", || unsafe { libc::dup(fd) })
}

/// CLOCK_MONOTONIC in nanoseconds: `fd-rate`'s clock, the one its sleeps' deadlines are in.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes `ts`; CLOCK_MONOTONIC always exists, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline_ns`: an absolute deadline, so time spent
/// between reading the clock and sleeping does not add up.
fn sleep_until(deadline_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; an absolute sleep writes no remainder, so it may be
        // null.
        let err = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                ptr::null_mut(),
            )
        };
        match err {
            0 => return Ok(()),
            libc::EINTR => continue,
            err => {
                let err = io::Error::from_raw_os_error(err);
                return Err(io::Error::new(
                    err.kind(),
                    format!("clock_nanosleep: {err}"),
                ));
            }
        }
    }
}

fn joined<T>(handle: JoinHandle<T>, what: &str) -> io::Result<T> {
    handle
        .join()
        .map_err(|_| io::Error::other(format!("{what} panicked")))
}

// ---- timed ops: one `#[inline(never)]` function each ----

#[inline(never)]
fn open_close() -> io::Result<()> {
    close(open_dev_null()?)?;
    Ok(())
}

#[inline(never)]
fn socket_close() -> io::Result<()> {
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: plain syscall, no pointers.
    let fd = sys("socket", || unsafe { libc::socket(libc::AF_UNIX, kind, 0) })?;
    close(fd)?;
    Ok(())
}

#[inline(never)]
fn pipe_close() -> io::Result<()> {
    let fds = new_pipe()?;
    close(fds[0])?;
    close(fds[1])?;
    Ok(())
}

#[inline(never)]
fn thread_spawn_join() -> io::Result<()> {
    let empty = thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(|| {})?;
    joined(empty, "an empty thread")
}

/// The turn `futex-pingpong` and `mixed` pass between the main thread and a helper.
#[derive(Default)]
struct Court {
    /// Whose turn it is: the helper's (true) or the main thread's.
    helpers_turn: Mutex<bool>,
    cv: Condvar,
    /// Makes the helper return instead of handing the turn back. Set before the last hand-over,
    /// which orders it for the helper (through the mutex).
    stop: AtomicBool,
}

/// The helper thread a [`Court`] is played with; stopped and joined when dropped.
struct Pingpong {
    court: Arc<Court>,
    helper: Option<JoinHandle<()>>,
}

impl Pingpong {
    fn start() -> io::Result<Self> {
        let court = Arc::new(Court::default());
        let helper = {
            let court = Arc::clone(&court);
            thread::Builder::new()
                .name("pingpong".to_owned())
                .stack_size(SMALL_STACK)
                .spawn(move || hand_back(&court))?
        };
        Ok(Self {
            court,
            helper: Some(helper),
        })
    }
}

impl Drop for Pingpong {
    fn drop(&mut self) {
        self.court.stop.store(true, Ordering::Relaxed);
        *lock(&self.court.helpers_turn) = true;
        self.court.cv.notify_one();
        if let Some(helper) = self.helper.take() {
            let _ = helper.join();
        }
    }
}

/// One `futex-pingpong` op, the main thread's side: hands the turn to the helper and waits
/// until it comes back.
#[inline(never)]
fn futex_handoff(court: &Court) -> io::Result<()> {
    let mut helpers_turn = lock(&court.helpers_turn);
    *helpers_turn = true;
    court.cv.notify_one();
    while *helpers_turn {
        helpers_turn = court
            .cv
            .wait(helpers_turn)
            .unwrap_or_else(PoisonError::into_inner);
    }
    Ok(())
}

/// The helper's side, for as long as the [`Pingpong`] lives: waits for its turn and hands it
/// straight back.
#[inline(never)]
fn hand_back(court: &Court) {
    let mut helpers_turn = lock(&court.helpers_turn);
    loop {
        while !*helpers_turn {
            helpers_turn = court
                .cv
                .wait(helpers_turn)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if court.stop.load(Ordering::Relaxed) {
            return;
        }
        *helpers_turn = false;
        court.cv.notify_one();
    }
}

/// One `mixed` op, op number `i`: see the module doc.
#[inline(never)]
fn mixed_op(court: &Court, i: u64) -> io::Result<()> {
    open_close()?;
    socket_close()?;
    pipe_close()?;
    futex_handoff(court)?;
    if (i + 1).is_multiple_of(32) {
        thread_spawn_join()?;
    }
    Ok(())
}

/// What a timed workload's ops share, set up before `ready`.
struct Fixture {
    pingpong: Option<Pingpong>,
}

impl Fixture {
    fn court(&self) -> &Court {
        &self
            .pingpong
            .as_ref()
            .expect("pingpong workloads start a helper")
            .court
    }
}

/// The one timing loop: an untimed warm-up of `ops / 20` ops, then `ops` ops timed. `op` is given
/// each op's number (from 0 in either run).
#[inline(never)]
fn time_ops(ops: u64, mut op: impl FnMut(u64) -> io::Result<()>) -> io::Result<Duration> {
    for i in 0..ops / 20 {
        op(i)?;
    }
    let start = Instant::now();
    for i in 0..ops {
        op(i)?;
    }
    Ok(start.elapsed())
}

fn run_timed(
    workload: &Workload,
    ops: u64,
    pingpong: bool,
    op: fn(&Fixture, u64) -> io::Result<()>,
) -> io::Result<()> {
    let fixture = Fixture {
        pingpong: if pingpong {
            Some(Pingpong::start()?)
        } else {
            None
        },
    };
    ready_then_wait();
    let elapsed = time_ops(ops, |i| op(&fixture, i))?;
    let elapsed_ns = elapsed.as_nanos();
    say(format_args!(
        "result workload={} ops={ops} elapsed_ns={elapsed_ns} ns_per_op={:.1}",
        workload.name,
        elapsed_ns as f64 / ops as f64
    ));
    drop(fixture);
    Ok(())
}

// ---- fd-rate ----

/// One `fd-rate` event pair: a `dup` of `fd` and a `close` of the duplicate.
#[inline(never)]
fn dup_close(fd: RawFd) -> io::Result<()> {
    close(dup(fd)?)?;
    Ok(())
}

/// One `fd-rate` thread's share at `rate` events/s (`rate / 2` pairs/s), paced in `slices`
/// slices of [`SLICE_NS`] from `start_ns` (see the module doc). Returns the pairs it made.
#[inline(never)]
fn paced_pairs(fd: RawFd, rate: u64, start_ns: u64, slices: u64) -> io::Result<u64> {
    // Pairs due by the end of slice `k - 1`, i.e. `k` slices in: exact, so no rounding drift.
    let due = |k: u64| (u128::from(k) * u128::from(rate) / u128::from(2 * SLICES_PER_S)) as u64;
    // The most missed pairs a late thread makes up for.
    let catch_up = rate.div_ceil(2 * SLICES_PER_S);
    // Pairs made, and pairs due but given up on (missed beyond `catch_up`).
    let (mut done, mut given_up) = (0, 0);
    // The slice this thread is in.
    let mut slice = 0;
    while slice < slices {
        while done < due(slice + 1) - given_up {
            dup_close(fd)?;
            done += 1;
        }
        slice += 1;
        let deadline = start_ns + slice * SLICE_NS;
        let now = monotonic_ns();
        if now < deadline {
            sleep_until(deadline)?;
            continue;
        }
        let current = ((now - start_ns) / SLICE_NS).min(slices);
        if current > slice {
            // Whole slices missed: skip to the current one, keeping `catch_up` of their pairs.
            given_up += (due(current) - due(slice)).saturating_sub(catch_up);
            slice = current;
        }
    }
    Ok(done)
}

/// `fd-rate --rate 0`: pairs as fast as this thread can make them until `end_ns`. Returns the
/// pairs it made.
#[inline(never)]
fn flat_out_pairs(fd: RawFd, end_ns: u64) -> io::Result<u64> {
    // Pairs between clock reads: a few tens of µs untraced, so the run overshoots little.
    const BATCH: u64 = 64;
    let mut done = 0;
    while monotonic_ns() < end_ns {
        for _ in 0..BATCH {
            dup_close(fd)?;
        }
        done += BATCH;
    }
    Ok(done)
}

fn run_fd_rate(rate: u64, slices: u64, threads: u64) -> io::Result<()> {
    let source = open_dev_null()?;
    // Released together once the start line came; `start_ns` is set before the release.
    let start_line = Arc::new(Barrier::new(threads as usize + 1));
    let start_ns = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(threads as usize);
    for n in 0..threads {
        // An even split, the first `rate % threads` threads taking one event/s more.
        let share = rate / threads + u64::from(n < rate % threads);
        let (start_line, start_ns) = (Arc::clone(&start_line), Arc::clone(&start_ns));
        workers.push(
            thread::Builder::new()
                .name(format!("fd-rate-{n}"))
                .stack_size(SMALL_STACK)
                .spawn(move || {
                    start_line.wait();
                    let start_ns = start_ns.load(Ordering::Relaxed);
                    if rate == 0 {
                        flat_out_pairs(source, start_ns + slices * SLICE_NS)
                    } else {
                        paced_pairs(source, share, start_ns, slices)
                    }
                })?,
        );
    }
    ready_then_wait();
    let start = monotonic_ns();
    // The barrier orders this store before every worker's load.
    start_ns.store(start, Ordering::Relaxed);
    start_line.wait();
    let mut pairs = 0;
    for worker in workers {
        pairs += joined(worker, "an fd-rate thread")??;
    }
    let elapsed_ns = monotonic_ns() - start;
    let events = 2 * pairs;
    let achieved = u128::from(events) * 1_000_000_000 / u128::from(elapsed_ns.max(1));
    say(format_args!(
        "result workload=fd-rate target_rate={rate} events={events} elapsed_ns={elapsed_ns} \
         rate={achieved}"
    ));
    close(source)
}

// ---- hold ----

/// `hold`'s fds: `count` duplicates of `source`.
#[inline(never)]
fn hold_fds(source: RawFd, count: u64) -> io::Result<Vec<RawFd>> {
    (0..count).map(|_| dup(source)).collect()
}

/// `hold`'s threads: `count` std threads, each asleep in ppoll for good once it has published
/// its tid in its slot (0 until then).
#[inline(never)]
fn hold_threads(count: u64) -> io::Result<Arc<[AtomicI32]>> {
    let tids: Arc<[AtomicI32]> = (0..count).map(|_| AtomicI32::new(0)).collect();
    for n in 0..count as usize {
        let tids = Arc::clone(&tids);
        thread::Builder::new()
            .name(format!("hold-{n}"))
            .stack_size(SMALL_STACK)
            .spawn(move || {
                tids[n].store(gettid(), Ordering::Release);
                drop(tids);
                loop {
                    // SAFETY: no fds, no timeout, no signal mask: nothing to read or write.
                    unsafe { libc::ppoll(ptr::null_mut(), 0, ptr::null(), ptr::null()) };
                }
            })
            .map_err(|err| {
                io::Error::new(err.kind(), format!("starting thread {n} of {count}: {err}"))
            })?;
    }
    Ok(tids)
}

/// Waits until every `hold` thread has published its tid and sleeps in ppoll.
fn await_parked(tids: &[AtomicI32]) -> io::Result<()> {
    let deadline = Instant::now() + PARK_TIMEOUT;
    let mut published = Vec::with_capacity(tids.len());
    for (n, tid) in tids.iter().enumerate() {
        loop {
            match tid.load(Ordering::Acquire) {
                0 if Instant::now() > deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("thread {n} did not start"),
                    ))
                }
                0 => thread::sleep(Duration::from_millis(1)),
                tid => break published.push(tid),
            }
        }
    }
    let left = deadline.saturating_duration_since(Instant::now());
    await_sleep_in(&published, libc::SYS_ppoll, "ppoll", left)
}

/// Raises the soft RLIMIT_NOFILE, failing if the hard limit leaves no room for `fds` fds and
/// [`FD_HEADROOM`].
fn ensure_fd_room(fds: u64) -> io::Result<()> {
    let needed = fds + FD_HEADROOM;
    let limit = raise_fd_limit(needed)?;
    if limit < needed {
        return Err(io::Error::other(format!(
            "--fds {fds} needs {needed} fds ({FD_HEADROOM} spare), but RLIMIT_NOFILE's hard \
             limit is {limit} (raise it: ulimit -Hn, or limits.conf)"
        )));
    }
    Ok(())
}

fn run_hold(fds: u64, threads: u64) -> io::Result<()> {
    ensure_fd_room(fds)?;
    let source = open_dev_null()?;
    ready_then_wait();
    let held = hold_fds(source, fds)?;
    let tids = hold_threads(threads)?;
    await_parked(&tids)?;
    say(format_args!("holding fds={} threads={threads}", held.len()));
    wait_for_line();
    // The parked threads never return: exit the process rather than wait for them.
    std::process::exit(0)
}

// ---- driver ----

/// Waits for one line, or EOF, on stdin.
fn wait_for_line() {
    let _ = io::stdin().lock().read_line(&mut String::new());
}

/// Says `ready`, then waits for the start line (or EOF): the harness attaches its tracer
/// in between.
fn ready_then_wait() {
    say(format_args!("ready pid={}", std::process::id()));
    wait_for_line();
}

/// A workload with its options resolved.
enum Run {
    Timed {
        ops: u64,
        pingpong: bool,
        op: fn(&Fixture, u64) -> io::Result<()>,
    },
    FdRate {
        rate: u64,
        slices: u64,
        threads: u64,
    },
    Hold {
        fds: u64,
        threads: u64,
    },
}

fn usage() -> String {
    let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name).collect();
    format!(
        "usage: leaktrace-workload <timed workload> [--ops N]\n       \
         leaktrace-workload fd-rate --rate EVENTS_PER_S --seconds S [--threads T]\n       \
         leaktrace-workload hold --fds N --threads T\n       \
         leaktrace-workload list\nworkloads: {}",
        names.join(" ")
    )
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(&'static Workload, Run), String> {
    let name = args.next().ok_or("missing workload")?;
    let workload = WORKLOADS
        .iter()
        .find(|w| w.name == name)
        .ok_or_else(|| format!("unknown workload {name:?}"))?;
    let (mut ops, mut rate, mut seconds, mut threads, mut fds) = (None, None, None, None, None);
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let flags = workload.kind.flags();
        if !flags.contains(&flag.as_str()) {
            return Err(format!("{name} takes {}, not {flag:?}", flags.join(", ")));
        }
        let value = value
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ops" => ops = Some(number()?),
            "--rate" => rate = Some(number()?),
            "--threads" => threads = Some(number()?),
            "--fds" => fds = Some(number()?),
            "--seconds" => {
                let s: f64 = value.parse().map_err(|e| format!("{flag}: {e}"))?;
                // Whole slices: milliseconds.
                let ms = (s * 1000.0).round();
                if !(1.0..1e12).contains(&ms) {
                    return Err(format!("--seconds must be at least 0.001, not {value}"));
                }
                seconds = Some(ms as u64);
            }
            _ => unreachable!("{flag} is one of {flags:?}"),
        }
    }
    let required =
        |value: Option<u64>, flag: &str| value.ok_or_else(|| format!("{name} needs {flag}"));
    let run = match workload.kind {
        Kind::Timed {
            ops: default,
            pingpong,
            op,
        } => {
            let ops = ops.unwrap_or(default);
            if ops == 0 {
                return Err("--ops must be at least 1".into());
            }
            Run::Timed { ops, pingpong, op }
        }
        Kind::FdRate => {
            let threads = threads.unwrap_or(1);
            if threads == 0 {
                return Err("--threads must be at least 1".into());
            }
            Run::FdRate {
                rate: required(rate, "--rate")?,
                slices: required(seconds, "--seconds")?,
                threads,
            }
        }
        Kind::Hold => Run::Hold {
            fds: required(fds, "--fds")?,
            threads: required(threads, "--threads")?,
        },
    };
    Ok((workload, run))
}

fn run(workload: &Workload, run: Run) -> io::Result<()> {
    match run {
        Run::Timed { ops, pingpong, op } => run_timed(workload, ops, pingpong, op)?,
        Run::FdRate {
            rate,
            slices,
            threads,
        } => run_fd_rate(rate, slices, threads)?,
        Run::Hold { fds, threads } => return run_hold(fds, threads),
    }
    // Still traced while the harness reads the tracer's state; it then closes stdin.
    wait_for_line();
    Ok(())
}

#[inline(never)]
fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    match args.peek().map(String::as_str) {
        Some("list") => {
            let width = WORKLOADS.iter().map(|w| w.name.len()).max().unwrap_or(0);
            for w in WORKLOADS {
                match w.kind {
                    Kind::Timed { ops, .. } => say(format_args!(
                        "{:width$}  {} (default --ops {ops})",
                        w.name, w.about
                    )),
                    _ => say(format_args!("{:width$}  {}", w.name, w.about)),
                }
            }
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help") => {
            say(format_args!("{}", usage()));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let (workload, options) = match parse_args(args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("leaktrace-workload: {err}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run(workload, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("leaktrace-workload: {}: {err}", workload.name);
            ExitCode::from(1)
        }
    }
}
