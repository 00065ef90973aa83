//! Wires the steps together: probes → reader → decoder → aggregator → symbolizer → reporters,
//! with /proc seeding and re-sync, report intervals and the ways a run ends.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, IsTerminal as _, Write},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use leaktrace_common::capacity;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    aggregator::{Aggregator, Limits},
    cli::{self, Cli, Format, EXIT_COMMAND_FAILED, EXIT_FOUND},
    decoder::{self, DecodeError},
    event::{Record, What},
    failure::Failure,
    folded,
    goprocs::GoProcesses,
    kubeapi::{self, ApiStatus},
    loader::{self, LoadOptions, Probes},
    metrics,
    model::{Finding, Frame, Origin, ProcessSummary, Snapshot, StackRef},
    pods::{NodeLogs, Pods},
    preflight, procfs,
    reader::Reader,
    report::{self, Growth, Health, Located, Report},
    serve::{self, Exposition, Shared},
    stacks::Stacks,
    symbolizer::Symbolizer,
    target,
    tracefs::Tracefs,
    verdicts,
    waiters::{WaiterLimits, Waiters},
    waitscan::WaitScanner,
};

/// Record bytes decoded per wake-up at most, so a flood cannot starve reports and signals, and
/// a batch of decoded stack samples stays a few MiB (65536 records at most held 113 MiB of them).
const MAX_BATCH_BYTES: usize = 2 << 20;

/// Checks `--pid` values before anything is loaded: each must be a live process (not a thread).
fn validate_pids(pids: &[u32]) -> Result<(), Failure> {
    for &pid in pids {
        match procfs::is_process(pid) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Failure::Usage(format!(
                    "{pid} is a thread id, not a process id; pass the process (tgid) it belongs to"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::Usage(format!("no process with pid {pid}")))
            }
            Err(e) => return Err(Failure::Usage(format!("cannot inspect pid {pid}: {e}"))),
        }
    }
    Ok(())
}

/// Everything between the ring buffer and the reporters.
struct Session {
    probes: Probes,
    aggregator: Aggregator,
    waiters: Waiters,
    wait_scanner: WaitScanner,
    symbolizer: Symbolizer,
    stacks: Stacks,
    go: GoProcesses,
    pods: Pods,
    events: u64,
    decode_errors: u64,
    stack_map_clears: u64,
    /// Lost records the kernel could not attribute to a process, as of the last report.
    losses_unattributed: u64,
    /// How the Kubernetes API watch fares, when there is one.
    kube_status: Option<Arc<Mutex<ApiStatus>>>,
}

impl Session {
    fn seed(&mut self, pid: u32) {
        // A process that is already gone has nothing to seed.
        self.pods.note(pid);
        if let Ok(snap) = procfs::snapshot(pid) {
            self.aggregator.seed(&snap);
            self.wait_scanner.seed(pid, &snap.tids, snap.started_ns);
        }
        self.go.observe(pid, &mut self.probes);
    }

    /// Marks the processes that lost records since the last report incomplete; a loss the
    /// kernel could not attribute (its map of them was full) marks every one.
    fn note_losses(&mut self) {
        let unattributed = self
            .probes
            .counters()
            .iter()
            .map(|p| p.losses_unattributed)
            .sum();
        let mut pids = self.probes.take_losses();
        if unattributed > self.losses_unattributed {
            self.losses_unattributed = unattributed;
            pids = self.aggregator.live_pids();
        }
        for pid in pids {
            self.aggregator.records_lost(pid);
        }
    }

    fn apply(&mut self, batch: &mut Vec<Result<Record, DecodeError>>) {
        for decoded in batch.drain(..) {
            match decoded {
                Ok(Record::Event(mut event)) => {
                    self.events += 1;
                    self.stacks.resolve(&mut event, |id| self.probes.stack(id));
                    match &event.what {
                        // At once, not when the batch settles: the new image's first goroutines
                        // may be in this same batch.
                        What::Exec => self.go.observe(event.pid, &mut self.probes),
                        What::GoroutineNew { goroutine, .. }
                            if self.go.is_runtime_own(event.pid, goroutine.gopc) =>
                        {
                            continue;
                        }
                        _ => {}
                    }
                    self.aggregator.apply(&event);
                }
                Ok(Record::Sample(sample)) => self.stacks.sample(sample),
                Err(_) => self.decode_errors += 1,
            }
        }
        self.settle();
    }

    /// Work the events asked for that needs the processes alive: capture new stacks, seed
    /// processes seen for the first time, re-sync after exec.
    fn settle(&mut self) {
        for stack in self.aggregator.take_new_stacks() {
            // Remembered when its event was resolved, in this same batch.
            let unwound = self.stacks.take(stack.pid, stack.id);
            let origin = Origin {
                method: unwound.method,
                truncated: unwound.truncated,
            };
            self.symbolizer.capture(stack, &unwound.ips, origin);
        }
        self.stacks.settled();
        for id in self.stacks.take_complete() {
            self.probes.mark_complete(id);
        }
        for pid in self.aggregator.take_unseen() {
            self.seed(pid);
        }
        for pid in self.aggregator.take_execs() {
            if let Ok(snap) = procfs::snapshot(pid) {
                self.aggregator.resync(&snap);
            }
        }
    }

    /// Clears the kernel's stack map once an eighth of it is taken: a new stack lands in a
    /// taken bucket (and fails) as often as the map is full, so this keeps failures to a few
    /// percent. Call right after a drain: only records written since then can name a slot that
    /// is cleared under them.
    fn clear_stacks_when_full(&mut self) {
        if self.stacks.kernel_stacks() >= (capacity::STACKS / 8) as usize {
            self.probes.clear_stacks();
            self.stacks.forget_kernel();
            self.stack_map_clears += 1;
        }
    }

    /// One scan of blocked waiters (waits past `min_wait_ns`); registers their stacks.
    fn scan_waits(&mut self, min_wait_ns: u64) {
        let now = procfs::monotonic_ns();
        let waits = self.wait_scanner.scan(
            self.probes.waits(),
            &mut self.aggregator,
            &mut self.stacks,
            now,
            min_wait_ns,
        );
        self.waiters.observe(now, &waits);
        self.settle();
    }

    /// Thread/fd findings and waiter findings together, most severe first, then by count.
    fn findings(&self, now: u64, min_age_ns: u64) -> Vec<Finding> {
        let comm = |pid: u32| self.aggregator.comm(pid).unwrap_or_default().to_owned();
        let mut all = self.waiters.findings(now, &comm);
        all.extend(self.aggregator.findings(now, min_age_ns));
        all.sort_by(|a, b| {
            verdicts::severity(a)
                .cmp(&verdicts::severity(b))
                .then(b.outstanding.cmp(&a.outstanding))
        });
        all
    }

    /// A finding with its stack (and its deadlock cycle's stacks) symbolized.
    fn locate(&mut self, finding: Finding) -> Located {
        let mut frames_of = |stack: Option<StackRef>| {
            stack
                .map(|s| self.symbolizer.frames(s).to_vec())
                .unwrap_or_default()
        };
        let cycle_frames = finding
            .waiter
            .iter()
            .flat_map(|w| &w.cycle)
            .map(|link| frames_of(link.stack))
            .collect();
        let mut lineage: Vec<Vec<Frame>> = finding
            .goroutine
            .iter()
            .flat_map(|g| &g.lineage)
            .map(|&stack| frames_of(Some(stack)))
            .collect();
        let mut frames = frames_of(finding.stack);
        for stack in std::iter::once(&mut frames).chain(&mut lineage) {
            self.go.name_frames(finding.pid, stack);
        }
        if finding.goroutine.is_some() {
            GoProcesses::trim_creation(&mut frames);
        }
        Located {
            go: self.go.describe(&finding, &frames, &lineage),
            frames,
            origin: finding.stack.and_then(|s| self.symbolizer.origin(s)),
            cycle_frames,
            finding,
        }
    }

    fn health(&self) -> Health {
        let probes = self.probes.counters();
        let sum = |f: fn(&crate::loader::ProbeCounters) -> u64| probes.iter().map(f).sum();
        let agg = self.aggregator.counters();
        Health {
            events: self.events,
            lost_events: sum(|p| p.lost),
            losses_unattributed: sum(|p| p.losses_unattributed),
            stack_failures: sum(|p| p.stack_failures),
            resync_mismatches: agg.resync_mismatches,
            probes_attached: self.probes.attached.len(),
            probes_skipped: self.probes.skipped.clone(),
            fd_mode: self.probes.fd_mode,
            paths: self.probes.paths,
            decode_errors: self.decode_errors,
            untracked_closes: agg.untracked_closes,
            dropped_objects: agg.dropped_objects,
            evicted_processes: agg.evicted_processes,
            targets_full: sum(|p| p.targets_full),
            pending_full: sum(|p| p.pending_full),
            path_failures: sum(|p| p.path_failures),
            waits_full: sum(|p| p.waits_full),
            samples_lost: sum(|p| p.samples_lost),
            stack_map_clears: self.stack_map_clears,
            kubernetes_api: self
                .kube_status
                .as_ref()
                .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            probes,
            programs: self.probes.program_stats(),
            stacks: self.stacks.stats(),
            unwind: self.stacks.unwind_stats(),
            untracked_goroutine_exits: agg.untracked_goroutine_exits,
            go: self.go.stats(),
        }
    }
}

/// The Kubernetes API watch `--kube-api` asks for, started; None when off or not in a cluster
/// (auto).
async fn watch_pods(cli: &Cli) -> Result<Option<kubeapi::KubeApi>, Failure> {
    let wanted = match cli.kube_api {
        cli::KubeApi::Off => false,
        cli::KubeApi::Auto => kubeapi::in_cluster(),
        cli::KubeApi::On => true,
    };
    if !wanted {
        return Ok(None);
    }
    match kubeapi::client().await {
        Ok(client) => Ok(Some(kubeapi::spawn_watch(client, cli.node_name.clone()))),
        Err(e) if cli.kube_api == cli::KubeApi::On => Err(Failure::Usage(format!(
            "--kube-api on: {e:#} (run in a pod with a service account)"
        ))),
        Err(e) => {
            eprintln!("leaktrace: naming pods from the node only: {e:#}");
            Ok(None)
        }
    }
}

/// Where reports go.
struct Output {
    format: Format,
    out: Box<dyn Write>,
    /// A terminal: tables refresh in place.
    live: bool,
    /// What `--listen`'s endpoints serve.
    exposition: Option<Shared>,
}

impl Output {
    fn open(format: Format, path: Option<&PathBuf>) -> anyhow::Result<Self> {
        let (out, live): (Box<dyn Write>, bool) = match path {
            Some(p) => (Box::new(io::BufWriter::new(create(p)?)), false),
            None => (Box::new(io::stdout()), io::stdout().is_terminal()),
        };
        Ok(Self {
            format,
            out,
            live,
            exposition: None,
        })
    }

    /// Writes the report, and renders it for the endpoints; `all` is every finding.
    fn write(&mut self, r: &Report, all: &[Finding]) -> io::Result<()> {
        if let Some(shared) = &self.exposition {
            let metrics = metrics::render(r, all).into();
            let findings = report::findings_json(r).into();
            let mut exposition = shared.lock().unwrap_or_else(|e| e.into_inner());
            *exposition = Exposition {
                metrics,
                findings,
                ready: true,
            };
        }
        match self.format {
            Format::Table => report::write_table(&mut self.out, r, self.live),
            Format::Json => report::write_json(&mut self.out, r),
        }
    }
}

/// Creates (or truncates) an output file; one that cannot be written is the user's to fix.
fn create(path: &std::path::Path) -> Result<File, Failure> {
    File::create(path).map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))
}

/// Writes `path` with `write`, saying which file failed.
fn write_file(
    path: &std::path::Path,
    write: impl FnOnce(io::BufWriter<File>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    write(io::BufWriter::new(create(path)?)).with_context(|| format!("writing {}", path.display()))
}

/// Why tracing stopped.
enum Ending {
    Signal,
    Duration,
    TargetsExited,
    CommandExited(std::process::ExitStatus),
}

struct Clock {
    start: Instant,
    last_report: Instant,
    last_events: u64,
    seq: u64,
    /// Each process as the previous report showed it, for growth.
    last_processes: HashMap<u32, ProcessSummary>,
}

impl Clock {
    /// The report of this moment, and every finding (the report shows only `--top`).
    fn report(
        &mut self,
        session: &mut Session,
        cli: &Cli,
        is_final: bool,
    ) -> (Report, Vec<Finding>) {
        session.note_losses();
        let now = procfs::monotonic_ns();
        let all = session.findings(now, cli.min_age.as_nanos() as u64);
        let findings = all
            .iter()
            .take(cli.top)
            .map(|f| session.locate(f.clone()))
            .collect();
        let aggregator = &session.aggregator;
        session
            .go
            .prune(|pid| aggregator.is_live(pid), &mut session.probes);
        let blocked = session.waiters.blocked_per_process();
        let mut processes = session.aggregator.processes();
        for p in &mut processes {
            p.blocked_waiters = blocked.get(&p.pid).copied().unwrap_or(0);
        }
        let growth = processes
            .iter()
            .map(|p| (p.pid, Growth::between(self.last_processes.get(&p.pid), p)))
            .collect();
        self.last_processes = processes.iter().map(|p| (p.pid, p.clone())).collect();
        session
            .pods
            .retain(|pid| self.last_processes.contains_key(&pid));
        let placements = processes
            .iter()
            .filter_map(|p| Some((p.pid, session.pods.of(p.pid)?.clone())))
            .collect();
        let since = self.last_report.elapsed().as_secs_f64().max(1e-9);
        let events_per_s = (session.events - self.last_events) as f64 / since;
        self.last_report = Instant::now();
        self.last_events = session.events;
        self.seq += 1;
        let report = Report {
            seq: self.seq,
            is_final,
            elapsed_s: self.start.elapsed().as_secs_f64(),
            events_per_s,
            min_age_s: cli.min_age.as_secs_f64(),
            findings,
            processes,
            growth,
            placements,
            verdicts: verdicts::counts(&all),
            health: session.health(),
        };
        (report, all)
    }
}

/// Drains what the ring buffer holds right now into the session; then the stack map may be
/// cleared.
fn drain_now(
    reader: &mut Reader,
    session: &mut Session,
    batch: &mut Vec<Result<Record, DecodeError>>,
) {
    loop {
        let (n, more) = reader.drain(MAX_BATCH_BYTES, |rec| batch.push(decoder::decode(rec)));
        session.apply(batch);
        if n == 0 || !more {
            break;
        }
    }
    session.clear_stacks_when_full();
}

/// Re-syncs every live process with /proc: snapshots first, then the events that happened
/// while they were read, then the comparison (the aggregator uses each snapshot's start time
/// to tell real disagreements from changes that raced the read).
fn resync(
    reader: &mut Reader,
    session: &mut Session,
    batch: &mut Vec<Result<Record, DecodeError>>,
) {
    let mut snaps: Vec<Snapshot> = Vec::new();
    for pid in session.aggregator.live_pids() {
        match procfs::snapshot(pid) {
            Ok(snap) => snaps.push(snap),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                session.aggregator.process_gone(pid, procfs::monotonic_ns())
            }
            // Permission or a race with exit: try again next interval.
            Err(_) => {}
        }
    }
    drain_now(reader, session, batch);
    for snap in &snaps {
        session.aggregator.resync(snap);
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    if cli.pids.is_empty() && cli.command.is_empty() && !cli.all {
        return Err(Failure::Usage(
            "nothing to trace: give --pid PID (repeatable), --all or -- COMMAND [ARGS]".into(),
        )
        .into());
    }
    validate_pids(&cli.pids)?;
    // A command that is not there fails now, not once the probes are loaded and its exec fails.
    if let Some(program) = cli.command.first() {
        if !target::program_path(program).is_some_and(|path| target::is_executable(&path)) {
            return Err(Failure::Usage(format!(
                "cannot run {}: no such executable file{}",
                program.to_string_lossy(),
                if program.to_string_lossy().contains('/') {
                    ""
                } else {
                    " on PATH"
                },
            ))
            .into());
        }
    }
    // Before anything is loaded: a taken port fails the run at once.
    let listener = match cli.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::Usage(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    // Output files too: one that cannot be written fails the run before tracing, not after it.
    let mut output = Output::open(cli.format, cli.output.as_ref())?;
    for path in [&cli.folded, &cli.flamegraph].into_iter().flatten() {
        create(path)?;
    }
    preflight::check_privileges()?;
    let kube = watch_pods(&cli).await?;
    let tracefs = Tracefs::find_or_mount().map_err(Failure::Kernel)?;
    let mut probes = Probes::load(
        &tracefs,
        &LoadOptions {
            ring_bytes: cli.ring_buffer_bytes,
            trace_all: cli.all,
            stack_copy_bytes: cli.stack_copy,
            paths: !cli.no_paths,
            floor: false,
        },
    )?;
    let mut reader = Reader::new(probes.take_events().context("ring buffer taken twice")?)
        .context("cannot watch the ring buffer")?;
    let mut session = Session {
        probes,
        aggregator: Aggregator::new(Limits {
            max_processes: cli.max_processes as usize,
            ..Limits::default()
        }),
        waiters: Waiters::new(WaiterLimits {
            min_wait_ns: cli.min_wait.as_nanos() as u64,
            ..WaiterLimits::default()
        }),
        wait_scanner: WaitScanner::default(),
        symbolizer: Symbolizer::new(),
        stacks: Stacks::default(),
        go: GoProcesses::new(cli.all),
        pods: Pods::new(
            NodeLogs::default(),
            kube.as_ref().map(|k| Arc::clone(&k.directory)),
        ),
        events: 0,
        decode_errors: 0,
        stack_map_clears: 0,
        losses_unattributed: 0,
        kube_status: kube.map(|k| k.status),
    };

    let mut spawned = None;
    if !cli.command.is_empty() {
        let mut child = target::spawn(&cli.command).context("cannot start the command")?;
        if let Some(program) = target::program_path(&cli.command[0]) {
            session.go.prepare(&program, child.pid, &mut session.probes);
        }
        session.probes.add_target(child.pid)?;
        session.seed(child.pid);
        child.release().context("cannot start the command")?;
        spawned = Some(child);
    }
    if cli.all {
        // Go processes that already run: their goroutines make no event until probed. (Other
        // processes are seeded when their first event comes.)
        for pid in procfs::pids().context("cannot list /proc")? {
            if pid != std::process::id() {
                session.go.observe(pid, &mut session.probes);
            }
        }
    }
    for &pid in &cli.pids {
        // Target first, then /proc: whatever happens in between is seen by both and merged.
        session.probes.add_target(pid)?;
        session.seed(pid);
    }
    // The command's process still runs the gate here: name the command instead.
    let command = cli
        .command
        .first()
        .map(|c| c.to_string_lossy().into_owned());
    let traced: Vec<String> = session
        .aggregator
        .processes()
        .iter()
        .map(|p| match (&spawned, &command) {
            (Some(s), Some(cmd)) if s.pid == p.pid => format!("{} ({cmd})", p.pid),
            _ => format!("{} ({})", p.pid, p.comm),
        })
        .collect();
    // Before the announcement: a SIGINT sent as soon as it appears must end the run with a
    // final report, not kill the process by default action.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    eprintln!(
        "leaktrace: tracing {} with {} probes attached, {} skipped; reports every {:?}, findings after {:?}",
        if cli.all {
            "every process (system-wide)".to_owned()
        } else {
            traced.join(", ")
        },
        session.probes.attached.len(),
        session.probes.skipped.len(),
        cli.interval,
        cli.min_age,
    );
    for s in &session.probes.skipped {
        eprintln!("leaktrace: skipped {}: {}", s.name, s.reason);
    }
    session.go.started();
    if let Some(listener) = listener {
        let shared = Arc::new(Mutex::new(Exposition::default()));
        eprintln!(
            "leaktrace: serving /metrics, /findings, /healthz, /readyz on http://{}",
            listener.local_addr()?
        );
        serve::spawn(listener, Arc::clone(&shared));
        output.exposition = Some(shared);
    }

    let mut batch = Vec::new();
    let min_wait_ns = cli.min_wait.as_nanos() as u64;
    let mut clock = Clock {
        start: Instant::now(),
        last_report: Instant::now(),
        last_events: 0,
        seq: 0,
        last_processes: HashMap::new(),
    };
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + cli.interval, cli.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_ticker = tokio::time::interval(loader::DRAIN_EVERY);
    drain_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = tokio::time::sleep(cli.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);

    let ending = loop {
        tokio::select! {
            drained = reader.wait_and_drain(MAX_BATCH_BYTES, |rec| batch.push(decoder::decode(rec))) => {
                drained.context("reading the ring buffer")?;
                session.apply(&mut batch);
            }
            _ = drain_ticker.tick() => drain_now(&mut reader, &mut session, &mut batch),
            _ = ticker.tick() => {
                resync(&mut reader, &mut session, &mut batch);
                session.scan_waits(min_wait_ns);
                session.aggregator.tick(procfs::monotonic_ns());
                let (r, all) = clock.report(&mut session, &cli, false);
                output.write(&r, &all)?;
            }
            _ = sigint.recv() => break Ending::Signal,
            _ = sigterm.recv() => break Ending::Signal,
            () = &mut deadline, if cli.duration.is_some() => break Ending::Duration,
            status = async { spawned.as_mut().map(|s| s.child.wait()).expect("guarded").await },
                if spawned.is_some() => break Ending::CommandExited(status?),
        }
        if !cli.all && spawned.is_none() && session.aggregator.live_pids().is_empty() {
            break Ending::TargetsExited;
        }
    };

    // Everything the kernel wrote before we stopped belongs in the final report.
    drain_now(&mut reader, &mut session, &mut batch);
    if !matches!(ending, Ending::CommandExited(_) | Ending::TargetsExited) {
        resync(&mut reader, &mut session, &mut batch);
        session.scan_waits(min_wait_ns);
    }
    session.aggregator.tick(procfs::monotonic_ns());
    let (r, all) = clock.report(&mut session, &cli, true);
    output.write(&r, &all)?;
    let command_failed = match ending {
        Ending::CommandExited(status) => {
            eprintln!("leaktrace: command exited: {status}");
            !status.success()
        }
        Ending::TargetsExited => {
            eprintln!("leaktrace: every traced process has exited");
            false
        }
        Ending::Duration | Ending::Signal => false,
    };
    if let Some(mut child) = spawned {
        child.stop(Duration::from_secs(2)).await;
    }
    if cli.folded.is_some() || cli.flamegraph.is_some() {
        let located: Vec<Located> = all.iter().map(|f| session.locate(f.clone())).collect();
        if let Some(path) = &cli.folded {
            write_file(path, |mut out| {
                Ok(folded::write_folded(&mut out, &located)?)
            })?;
        }
        if let Some(path) = &cli.flamegraph {
            write_file(path, |out| {
                folded::write_flamegraph(
                    out,
                    &located,
                    "leaktrace: outstanding threads, fds and waiters",
                )
            })?;
        }
    }
    let tripped: Vec<&Finding> = all
        .iter()
        .filter(|f| verdicts::trips(f, &cli.fail_on))
        .collect();
    Ok(if !tripped.is_empty() {
        for f in &tripped {
            eprintln!(
                "leaktrace: --fail-on: {} in pid {} ({}): {} outstanding",
                verdicts::label(f).unwrap_or("finding"),
                f.pid,
                f.comm,
                f.outstanding
            );
        }
        EXIT_FOUND
    } else if command_failed {
        EXIT_COMMAND_FAILED
    } else {
        0
    })
}
