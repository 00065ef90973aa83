//! Memory and throughput of the aggregator at scale: how many bytes each tracked thread or fd
//! costs, and how fast events are applied.
//!
//! `cargo bench -p leaktrace --bench aggregator_memory [-- --json]`
//!
//! Each point runs in a fresh copy of this binary (re-exec with `--point OBJECTS`), so its RSS
//! growth is measured from a clean heap, not on top of the previous point's freed memory. A point
//! builds what a traced workload would: a launcher seeded from a /proc snapshot (as the runtime
//! seeds `leaktrace -- CMD`) forks the processes (TaskNew from a traced parent, so they are known
//! and seeded), which then open fds and start threads from a fixed set of stacks until they hold
//! the point's objects, 10 fds to a thread, nothing closed. Events are 1 µs apart by default,
//! applied in batches as the runtime drains the ring buffer (with its settle step after each),
//! with a tick every simulated 5 s. After the last event the clock runs on for one rate window of
//! ticks, so every group holds the sample history a long-running trace has.
//!
//! Per point: RSS growth (VmRSS before the aggregator is made, and after), live heap bytes (a
//! counting allocator: what the aggregator holds, without allocator slack), bytes per object,
//! and apply() throughput (time in apply() only; 1e6 / events_per_s is the CPU seconds per
//! million events). The report the runtime makes at each tick (findings, process summaries) is
//! measured apart, once, on the finished state: its result is transient (one `Finding` per
//! group), and what malloc keeps of it would make the state's RSS noisy. Its cost is the VmHWM
//! growth over the state's RSS (VmHWM reset first through /proc/self/clear_refs) and the live
//! heap's peak.
//!
//! Options (after `--`): `--json` (one JSON object per point on stdout), `--points A,B,..`
//! (objects per point; default 10000,100000,1100000), `--processes N` (50), `--stacks N`
//! (1000), `--gap-ns N` (1000: time between events).

use std::{
    alloc::{GlobalAlloc, Layout, System},
    hint::black_box,
    process::{Command, ExitCode},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use leaktrace::{
    aggregator::{Aggregator, Limits},
    event::{Event, FdPair, Path, What},
    model::{FdKind, Snapshot},
};
use serde_json::{json, Value};

/// Counts live heap bytes; allocation itself is the system allocator's, as in leaktrace.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Highest `LIVE` since it was last reset.
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_alloc(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count_alloc(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            count_alloc(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SEC: u64 = 1_000_000_000;
/// The runtime's report interval.
const TICK_NS: u64 = 5 * SEC;
/// Events applied between settles; the runtime drains up to 65536 records per wake-up, fewer
/// here so the batch buffer is noise in the RSS.
const BATCH: usize = 4096;
/// The launcher, and the first pid of the processes it forks.
const LAUNCHER: u32 = 2000;
/// Thread ids are handed out from here: past every pid.
const FIRST_TID: u32 = 100_000;
/// Start of the clock (monotonic ns: some time after boot).
const T0: u64 = 1_000 * SEC;
/// Of the stacks, one in this many starts threads; the others open fds.
const THREAD_STACK_EVERY: usize = 10;
/// Objects per thread: 10 fds to a thread.
const OBJECTS_PER_THREAD: usize = 11;

struct Config {
    objects: usize,
    processes: usize,
    stacks: usize,
    gap_ns: u64,
}

impl Config {
    fn threads(&self) -> usize {
        self.objects / OBJECTS_PER_THREAD
    }

    fn fds(&self) -> usize {
        self.objects - self.threads()
    }
}

/// What an fd stack opens: mixed kinds, as call sites in a real program are. Files come with a
/// path, either the same one at every call (a config file) or a new one each time (a spool).
#[derive(Clone, Copy)]
enum Opens {
    SamePath,
    NewPath,
    Kind(FdKind),
}

const OPENS: [Opens; 9] = [
    Opens::SamePath,
    Opens::SamePath,
    Opens::NewPath,
    Opens::Kind(FdKind::Socket),
    Opens::Kind(FdKind::Socket),
    Opens::Kind(FdKind::Socket),
    Opens::Kind(FdKind::Pipe),
    Opens::Kind(FdKind::EventFd),
    Opens::Kind(FdKind::Epoll),
];

/// xorshift64*: deterministic, so every run feeds the same events.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// A worker process and what it has left to make.
struct Workload {
    pid: u32,
    fds_left: usize,
    threads_left: usize,
    /// The kernel hands out the lowest free fd: nothing is closed, so the next one up.
    next_fd: i32,
}

/// One point's state and clock.
struct Run {
    agg: Aggregator,
    now: u64,
    next_tick: u64,
    events: u64,
    apply_time: Duration,
    tick_time: Duration,
    ticks: u64,
}

/// One report's cost.
struct ReportCost {
    time: Duration,
    /// VmHWM growth over the RSS before it; None when the peak could not be reset.
    peak_rss: Option<u64>,
    peak_heap: usize,
}

impl Run {
    fn apply(&mut self, batch: &mut Vec<Event>) {
        let start = Instant::now();
        for event in batch.iter() {
            self.agg.apply(event);
        }
        self.apply_time += start.elapsed();
        self.events += batch.len() as u64;
        batch.clear();
        // The runtime's settle: new stacks are symbolized, unseen processes seeded.
        black_box(self.agg.take_new_stacks());
        black_box(self.agg.take_unseen());
        black_box(self.agg.take_execs());
    }

    /// The tick of the runtime's report interval (its report is [`Self::report`]).
    fn tick(&mut self) {
        let start = Instant::now();
        self.agg.tick(self.now);
        self.tick_time += start.elapsed();
        self.ticks += 1;
        self.next_tick += TICK_NS;
    }

    /// The next event's time, after what is pending and any ticks due before it.
    fn advance(&mut self, gap_ns: u64, batch: &mut Vec<Event>) -> u64 {
        self.now += gap_ns;
        if self.now >= self.next_tick {
            self.apply(batch);
        }
        while self.now >= self.next_tick {
            self.tick();
        }
        self.now
    }

    /// What the runtime asks for a report: every finding, every process's summary.
    fn report(&mut self) -> ReportCost {
        let rss_before = rss_bytes();
        let heap_before = LIVE.load(Ordering::Relaxed);
        // "5" resets VmHWM to the current RSS (Linux 4.0+).
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        PEAK.store(heap_before, Ordering::Relaxed);
        let start = Instant::now();
        let findings = self.agg.findings(self.now, 0);
        let processes = self.agg.processes();
        let time = start.elapsed();
        let peak_rss = reset.then(|| status_bytes("VmHWM:").saturating_sub(rss_before));
        let peak_heap = PEAK.load(Ordering::Relaxed).saturating_sub(heap_before);
        black_box((findings, processes));
        ReportCost {
            time,
            peak_rss,
            peak_heap,
        }
    }
}

/// A `kB` field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb * 1024
}

fn rss_bytes() -> u64 {
    status_bytes("VmRSS:")
}

fn event(ts_ns: u64, pid: u32, what: What) -> Event {
    Event {
        ts_ns,
        pid,
        tid: pid,
        what,
    }
}

/// Builds one point and measures it; the JSON object the parent prints.
fn point(cfg: &Config) -> Value {
    let processes = cfg.processes.max(1);
    let (fds, threads) = (cfg.fds(), cfg.threads());
    let mut batch: Vec<Event> = Vec::with_capacity(BATCH);
    let rss_before = rss_bytes();
    let heap_before = LIVE.load(Ordering::Relaxed);

    let mut run = Run {
        agg: Aggregator::new(Limits::default()),
        now: T0,
        next_tick: T0 + TICK_NS,
        events: 0,
        apply_time: Duration::ZERO,
        tick_time: Duration::ZERO,
        ticks: 0,
    };
    // `leaktrace -- launcher`: the runtime seeds the command's process from /proc.
    run.agg.seed(&Snapshot {
        pid: LAUNCHER,
        comm: "launcher".to_string(),
        started_ns: T0,
        tids: vec![LAUNCHER],
        fds: vec![(0, FdKind::Other), (1, FdKind::Other), (2, FdKind::Other)],
    });
    // It forks the workers: known from their parent, seeded with its fds.
    let mut work: Vec<Workload> = Vec::with_capacity(processes);
    for k in 0..processes {
        let pid = LAUNCHER + 1 + k as u32;
        let ts = run.advance(cfg.gap_ns, &mut batch);
        let what = What::TaskNew {
            child_tid: pid,
            thread: false,
            stack: Some(0),
        };
        batch.push(event(ts, LAUNCHER, what));
        work.push(Workload {
            pid,
            fds_left: fds / processes + usize::from(k < fds % processes),
            threads_left: threads / processes + usize::from(k < threads % processes),
            next_fd: 3,
        });
    }

    // The workers, in turn, each make their next object from a random stack: the stacks' ids
    // are the same in every worker (one binary), their groups are per process.
    let fd_stacks: Vec<usize> = (0..cfg.stacks)
        .filter(|s| s % THREAD_STACK_EVERY != 0)
        .collect();
    let thread_stacks: Vec<usize> = (0..cfg.stacks)
        .filter(|s| s % THREAD_STACK_EVERY == 0)
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_tid = FIRST_TID;
    let mut busy = work.len();
    while busy > 0 {
        busy = 0;
        for w in work.iter_mut() {
            let left = w.fds_left + w.threads_left;
            if left == 0 {
                continue;
            }
            busy += 1;
            let ts = run.advance(cfg.gap_ns, &mut batch);
            let thread = rng.below(left) < w.threads_left;
            let what = if thread || fd_stacks.is_empty() {
                w.threads_left -= 1;
                next_tid += 1;
                let stack = thread_stacks[rng.below(thread_stacks.len())];
                What::TaskNew {
                    child_tid: next_tid,
                    thread: true,
                    stack: Some(1 + stack as u32),
                }
            } else {
                let stack = fd_stacks[rng.below(fd_stacks.len())];
                let fd = w.next_fd;
                let (fds, kind, path) = match OPENS[stack % OPENS.len()] {
                    Opens::Kind(FdKind::Pipe) if w.fds_left >= 2 => {
                        (FdPair::Two(fd, fd + 1), FdKind::Pipe, None)
                    }
                    Opens::Kind(kind) => (FdPair::One(fd), kind, None),
                    Opens::SamePath => {
                        let text = format!("/etc/bench/conf.d/{stack:04}.conf");
                        (FdPair::One(fd), FdKind::File, Some(text))
                    }
                    Opens::NewPath => {
                        let text = format!("/var/spool/bench/{}/{fd:08}.tmp", w.pid);
                        (FdPair::One(fd), FdKind::File, Some(text))
                    }
                };
                let opened = fds.iter().count();
                w.next_fd += opened as i32;
                w.fds_left -= opened;
                What::FdOpen {
                    fds,
                    kind,
                    stack: Some(1 + stack as u32),
                    path: path.map(|text| Path {
                        text,
                        truncated: false,
                    }),
                }
            };
            batch.push(event(ts, w.pid, what));
            if batch.len() >= BATCH {
                run.apply(&mut batch);
            }
        }
    }
    run.apply(&mut batch);
    drop(batch);
    // One rate window more: every group's sample history as a long trace has it.
    let window_end = run.now + Limits::default().rate_window_ns;
    while run.next_tick <= window_end {
        run.now = run.next_tick;
        run.tick();
    }

    let rss = rss_bytes().saturating_sub(rss_before);
    let heap = LIVE.load(Ordering::Relaxed).saturating_sub(heap_before);
    let report = run.report();
    let counters = run.agg.counters();
    assert_eq!(counters.dropped_objects, 0, "a bound was hit");
    assert_eq!(counters.unseen_processes, 0, "every worker is known");
    let objects = (fds + threads) as u64;
    let events_per_s = run.events as f64 / run.apply_time.as_secs_f64().max(1e-9);
    let result = json!({
        "objects": objects,
        "fds": fds,
        "threads": threads,
        "processes": processes,
        "stacks": cfg.stacks,
        "rss_bytes": rss,
        "bytes_per_object": rss as f64 / objects as f64,
        "heap_bytes": heap,
        "heap_bytes_per_object": heap as f64 / objects as f64,
        "events": run.events,
        "events_per_s": events_per_s,
        "cpu_s_per_million_events": 1e6 / events_per_s,
        "ticks": run.ticks,
        "ms_per_tick": run.tick_time.as_secs_f64() * 1e3 / run.ticks.max(1) as f64,
        "report_ms": report.time.as_secs_f64() * 1e3,
        "report_peak_rss_bytes": report.peak_rss,
        "report_peak_heap_bytes": report.peak_heap,
    });
    black_box(run);
    result
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "aggregator_memory: {msg}\nusage: aggregator_memory [--json] [--points A,B,..] \
         [--processes N] [--stacks N] [--gap-ns N]"
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let mut json_out = false;
    let mut point_objects = None;
    let mut points = vec![10_000, 100_000, 1_100_000];
    let mut cfg = Config {
        objects: 0,
        processes: 50,
        stacks: 1000,
        gap_ns: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, ExitCode> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| usage(&format!("{name} takes a number")))
        };
        let parsed = match arg.as_str() {
            "--json" => {
                json_out = true;
                Ok(())
            }
            // cargo bench passes this to every bench binary.
            "--bench" => Ok(()),
            "--point" => number("--point").map(|n| point_objects = Some(n as usize)),
            "--processes" => number("--processes").map(|n| cfg.processes = n as usize),
            "--stacks" => number("--stacks").map(|n| cfg.stacks = n as usize),
            "--gap-ns" => number("--gap-ns").map(|n| cfg.gap_ns = n.max(1)),
            "--points" => {
                let list: Option<Vec<usize>> = args
                    .next()
                    .and_then(|v| v.split(',').map(|n| n.trim().parse().ok()).collect());
                match list {
                    Some(list) if !list.is_empty() => {
                        points = list;
                        Ok(())
                    }
                    _ => Err(usage("--points takes numbers, comma-separated")),
                }
            }
            other => Err(usage(&format!("unknown argument {other}"))),
        };
        if let Err(code) = parsed {
            return code;
        }
    }

    // A child: one point, one JSON line.
    if let Some(objects) = point_objects {
        cfg.objects = objects;
        println!("{}", point(&cfg));
        return ExitCode::SUCCESS;
    }

    let exe = std::env::current_exe().expect("own executable");
    let mut results = Vec::new();
    for &objects in &points {
        let output = Command::new(&exe)
            .args(["--point", &objects.to_string()])
            .args(["--processes", &cfg.processes.to_string()])
            .args(["--stacks", &cfg.stacks.to_string()])
            .args(["--gap-ns", &cfg.gap_ns.to_string()])
            .output()
            .expect("re-exec for a point");
        if !output.status.success() {
            eprintln!("{}", String::from_utf8_lossy(&output.stderr));
            return usage(&format!("point {objects} failed: {}", output.status));
        }
        let line = String::from_utf8_lossy(&output.stdout);
        let value: Value = serde_json::from_str(line.trim()).expect("a point's JSON");
        if json_out {
            println!("{value}");
        }
        results.push(value);
    }
    if !json_out {
        print_table(&results);
    }
    ExitCode::SUCCESS
}

fn print_table(results: &[Value]) {
    let int = |v: &Value| v.as_u64().unwrap_or(0);
    let num = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mib = |v: &Value| num(v) / (1024.0 * 1024.0);
    println!(
        "{:>9} {:>9} {:>7} {:>5} | {:>8} {:>7} {:>8} {:>8} | {:>10} {:>8} {:>7} | {:>6} {:>8} {:>9}",
        "objects",
        "fds",
        "threads",
        "procs",
        "RSS MiB",
        "B/obj",
        "heap MiB",
        "heap B/o",
        "events/s",
        "s/1M ev",
        "ms/tick",
        "rep ms",
        "rep +RSS",
        "rep +heap",
    );
    for r in results {
        let report_rss = match r["report_peak_rss_bytes"].as_f64() {
            Some(_) => format!("{:.1}", mib(&r["report_peak_rss_bytes"])),
            None => "-".to_string(),
        };
        println!(
            "{:>9} {:>9} {:>7} {:>5} | {:>8.1} {:>7.1} {:>8.1} {:>8.1} | {:>10.0} {:>8.3} {:>7.2} | {:>6.1} {:>8} {:>9.1}",
            int(&r["objects"]),
            int(&r["fds"]),
            int(&r["threads"]),
            int(&r["processes"]),
            mib(&r["rss_bytes"]),
            num(&r["bytes_per_object"]),
            mib(&r["heap_bytes"]),
            num(&r["heap_bytes_per_object"]),
            num(&r["events_per_s"]),
            num(&r["cpu_s_per_million_events"]),
            num(&r["ms_per_tick"]),
            num(&r["report_ms"]),
            report_rss,
            mib(&r["report_peak_heap_bytes"]),
        );
    }
    println!(
        "RSS and heap: growth with the aggregator built (MiB; B/obj per tracked object). rep: one \
         report (findings + processes) on that state: its time, and its peak over it (MiB)."
    );
}
