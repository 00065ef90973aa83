//! Loads the eBPF object, fits it to this kernel (tracepoint layouts, syscall numbers), attaches
//! every probe the kernel offers, and lists the ones it could not attach with the reason.
//!
//! Fds are traced with syscall tracepoints, which every kernel leaktrace runs on has; where the
//! kernel also has kprobes, a kprobe on `fd_install` adds the fds no fd syscall reports (received
//! over SCM_RIGHTS, created by io_uring, installed by an ioctl, …): see [`FdMode`].

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        trace_point::TracePointLink,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        KProbe, TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use std::num::NonZeroU32;

use leaktrace_common::{
    names, Config, Counter, GoFields, InFlightWait, Probe, SyscallSpec, Target,
};
use serde::Serialize;

use crate::{
    failure::Failure,
    goruntime::ProbePoints,
    syscalls::{syscall_number, FD_SYSCALLS, INSTALLING_SYSCALLS},
    tracefs::Tracefs,
};

/// The eBPF object built by build.rs, embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leaktrace"));

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_bytes: u32,
    /// Trace every process but leaktrace, not only the targets.
    pub trace_all: bool,
    /// Bytes of user stack copied at creation events (`--stack-copy`).
    pub stack_copy_bytes: u32,
    /// Read the pathnames of opened files (off: `--no-paths`).
    pub paths: bool,
    /// The benchmark floor: the empty program `floor` on every tracepoint instead of the real
    /// ones, so the kernel's cost of running a program there can be measured alone.
    pub floor: bool,
}

/// A probe that is not running, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// How fds are traced: what the report says, so a reader knows which fds it can show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum FdMode {
    /// Syscall tracepoints and the `fd_install` kprobe: every fd the process gets, including
    /// those received over SCM_RIGHTS, created by io_uring or installed by other syscalls.
    #[serde(rename = "tracepoints+kprobe")]
    TracepointsAndKprobe,
    /// Syscall tracepoints only (no kprobes, or the kprobe could not be attached): fds that
    /// arrive without an fd syscall are not seen.
    #[default]
    #[serde(rename = "tracepoints")]
    Tracepoints,
    /// No fd tracing: the syscall tracepoints are unusable.
    #[serde(rename = "none")]
    None,
}

impl FdMode {
    /// As in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TracepointsAndKprobe => "tracepoints+kprobe",
            Self::Tracepoints => "tracepoints",
            Self::None => "none",
        }
    }
}

/// The name the `fd_install` kprobe is listed under, attached or skipped.
pub const FD_INSTALL_PROBE: &str = "kprobe:fd_install";
/// What is missing without it, for the skipped probe's reason.
const WITHOUT_FD_INSTALL: &str =
    "fds received over SCM_RIGHTS, created by io_uring or installed by other syscalls are not seen";

/// Whether this kernel can run a kprobe on `function`: Err says why not. It needs the kprobe PMU
/// (perf's `kprobe` event source, which aya attaches through) and the function among those that
/// can be probed (tracefs's list, or the kernel's symbols when that cannot be read).
fn kprobe_support(function: &str) -> Result<(), String> {
    let pmu = "/sys/bus/event_source/devices/kprobe/type";
    if !std::path::Path::new(pmu).exists() {
        return Err(format!(
            "this kernel has no kprobes (no {pmu}): {WITHOUT_FD_INSTALL}"
        ));
    }
    let listings: [(&str, Lists); 3] = [
        (
            "/sys/kernel/tracing/available_filter_functions",
            lists_filter_function,
        ),
        (
            "/sys/kernel/debug/tracing/available_filter_functions",
            lists_filter_function,
        ),
        ("/proc/kallsyms", lists_kernel_symbol),
    ];
    // The first list that can be read decides; none readable: try, and let attach tell.
    for (path, lists) in listings {
        if let Ok(text) = std::fs::read_to_string(path) {
            return if lists(&text, function) {
                Ok(())
            } else {
                Err(format!(
                    "{function} is not in {path}: this kernel cannot probe it: {WITHOUT_FD_INSTALL}"
                ))
            };
        }
    }
    Ok(())
}

/// Whether a listing of kernel functions (its text) has a function (its name).
type Lists = fn(&str, &str) -> bool;

/// Whether tracefs's `available_filter_functions` (`name` or `name [module]` a line) lists
/// `function`.
fn lists_filter_function(text: &str, function: &str) -> bool {
    text.lines()
        .any(|line| line.split_whitespace().next() == Some(function))
}

/// Whether `/proc/kallsyms` (`address type name [module]` a line) has `function` as code.
fn lists_kernel_symbol(text: &str, function: &str) -> bool {
    text.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        matches!(
            (fields.next(), fields.next()),
            (Some("T" | "t"), Some(name)) if name == function
        )
    })
}

/// Kernel-side counters of one probe, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCounters {
    pub name: String,
    pub emitted: u64,
    pub lost: u64,
    pub stack_failures: u64,
    pub targets_full: u64,
    pub pending_full: u64,
    pub path_failures: u64,
    pub waits_full: u64,
    pub samples: u64,
    pub samples_lost: u64,
    pub losses_unattributed: u64,
}

/// Time the kernel spent in one program, counted only while `kernel.bpf_stats_enabled` is 1
/// (the counting itself costs two clock reads per run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramStats {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
}

/// The loaded and attached probes and the maps userspace talks to.
pub struct Probes {
    /// The programs: kept loaded for as long as the links run them.
    ebpf: Ebpf,
    /// One per attached tracepoint; see the Drop impl.
    links: Vec<TracePointLink>,
    events: Option<RingBuf<MapData>>,
    stacks: StackTraceMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    targets: HashMap<MapData, u32, u8>,
    waits: HashMap<MapData, u32, InFlightWait>,
    complete: Array<MapData, u8>,
    losses: HashMap<MapData, u32, u8>,
    /// Ids marked in `complete` since the stack map was last cleared.
    marked: Vec<u32>,
    /// Tracepoints attached, as `category:name` (and the kprobe, as [`FD_INSTALL_PROBE`]).
    pub attached: Vec<String>,
    pub skipped: Vec<Skipped>,
    /// Whether the `fd_install` kprobe completes the syscall tracepoints.
    pub fd_mode: FdMode,
    /// Whether the pathnames of opened files are read.
    pub paths: bool,
    /// Probe slot → name, for the counters.
    slot_names: Vec<String>,
    /// Loaded as the benchmark floor: empty programs in place of the real ones.
    floor: bool,
}

const TASK_NEWTASK: (&str, &str) = ("task", "task_newtask");
const PROCESS_EXIT: (&str, &str) = ("sched", "sched_process_exit");
const PROCESS_EXEC: (&str, &str) = ("sched", "sched_process_exec");

/// Futex probes: (program, tracepoint, probe slot name).
/// exit_group entry: the threads exiting after it die with their process.
const EXIT_GROUP: (&str, &str) = ("exit_group_enter", "sys_enter_exit_group");

const FUTEX_PROBES: [(&str, &str); 4] = [
    ("futex_enter", "sys_enter_futex"),
    ("futex_exit", "sys_exit_futex"),
    ("futex_waitv_enter", "sys_enter_futex_waitv"),
    ("futex_exit", "sys_exit_futex_waitv"),
];

/// How often the reader drains the ring buffer without being woken: records only wake it once
/// [`wakeup_bytes`] of them wait, since a wakeup per record cost the traced threads more than
/// the records (measured with `cargo xtask bench`).
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// An eighth of the ring (1 MiB of the default 8: ~20k fd records of 48 bytes). A fast stream
/// wakes the reader every ~20k records and leaves seven eighths of the ring to absorb its
/// latency; a slow one is read within [`DRAIN_EVERY`].
fn wakeup_bytes(ring_bytes: u32) -> u32 {
    ring_bytes / 8
}

fn kernel(what: impl std::fmt::Display) -> Failure {
    Failure::Kernel(what.to_string())
}

/// Reads this kernel's tracepoint layouts into the programs' configuration. A layout that is
/// missing disables the probes that need it (listed in `skipped`) rather than failing.
fn config(tracefs: &Tracefs, opts: &LoadOptions, skipped: &mut Vec<Skipped>) -> Config {
    let mut cfg = Config {
        tracer_tgid: std::process::id(),
        trace_all: u32::from(opts.trace_all),
        wakeup_bytes: wakeup_bytes(opts.ring_bytes),
        stack_copy_bytes: opts.stack_copy_bytes,
        exit_group_dead_off: u32::MAX,
        ..Config::default()
    };
    let mut skip = |name: String, reason: String| skipped.push(Skipped { name, reason });
    let (cat, name) = TASK_NEWTASK;
    match tracefs
        .format(cat, name)
        .map_err(|e| e.to_string())
        .and_then(|f| Ok((f.offset_of("pid", 4)?, f.offset_of("clone_flags", 8)?)))
    {
        Ok((pid, flags)) => (cfg.newtask_pid_off, cfg.newtask_flags_off) = (pid, flags),
        Err(e) => skip(
            format!("{cat}:{name}"),
            format!("unusable record layout: {e}"),
        ),
    }
    let (cat, name) = PROCESS_EXIT;
    if let Ok(off) = tracefs
        .format(cat, name)
        .map_err(|e| e.to_string())
        .and_then(|f| f.offset_of("group_dead", 1))
    {
        cfg.exit_group_dead_off = off;
    }
    // Every syscall tracepoint shares one layout: nr, then ret (exit) or args[6] (entry).
    let layout = tracefs
        .format("syscalls", "sys_exit_close")
        .and_then(|exit| Ok((exit, tracefs.format("syscalls", "sys_enter_close")?)))
        .map_err(|e| e.to_string())
        .and_then(|(exit, enter)| {
            let args = enter
                .field_after("__syscall_nr")
                .ok_or("sys_enter_close has no arguments")?;
            Ok((
                exit.offset_of("__syscall_nr", 4)?,
                exit.offset_of("ret", 8)?,
                args.offset,
            ))
        });
    match layout {
        Ok((nr, ret, args)) => {
            (
                cfg.syscall_nr_off,
                cfg.syscall_ret_off,
                cfg.syscall_args_off,
            ) = (nr, ret, args)
        }
        Err(e) => skip(
            "syscalls:*".into(),
            format!("syscall tracepoints unusable ({e}): no fd tracking"),
        ),
    }
    cfg
}

fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, Failure> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| kernel(format!("eBPF object has no map {name}")))?;
    T::try_from(map).map_err(|e| kernel(format!("map {name}: {e}")))
}

/// Why [`Probes::attach_go`] failed.
#[derive(Debug)]
pub struct GoAttachError {
    pub message: String,
    /// The kernel refused for want of privilege (uprobes need CAP_SYS_ADMIN): no Go binary
    /// will do better.
    pub denied: bool,
}

/// The goroutine probes attached to one Go binary (for one process, or for all).
pub struct GoLinks {
    /// As listed with the attached probes.
    name: String,
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// The goroutine probes' programs: (program, probe slot name).
const GO_PROBES: [(&str, &str); 2] = [("go_newproc", "go:newproc"), ("go_gdestroy", "go:gdestroy")];
/// arm64's extra goroutine creation probe ([`ProbePoints::spawn`]); counted with go:newproc.
const GO_SPAWN: &str = "go_spawn";
/// The empty program the benchmark floor attaches at every goroutine probe point instead.
const GO_FLOOR: &str = "go_floor";

/// The program `name` of the object, as the type its section says it is.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, Failure>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| kernel(format!("eBPF object has no program {name}")))?
        .try_into()
        .map_err(|e| kernel(format!("program {name}: {e}")))
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, Failure> {
    program(ebpf, name)
}

fn tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut TracePoint, Failure> {
    program(ebpf, name)
}

fn kprobe<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut KProbe, Failure> {
    program(ebpf, name)
}

/// Loads the `fd_install` kprobe (its floor in the benchmark) and attaches it where the kernel
/// can run it. Loaded even where it cannot be attached, so every kernel's verifier checks it.
/// Never fatal: a probe that does not run is an Err with the reason.
fn attach_fd_install(
    ebpf: &mut Ebpf,
    floor: bool,
    syscalls: &mut Array<MapData, SyscallSpec>,
) -> Result<(), String> {
    let name = if floor {
        "fd_install_floor"
    } else {
        "fd_install"
    };
    let prog = kprobe(ebpf, name).map_err(|e| e.to_string())?;
    prog.load()
        .map_err(|e| format!("the kernel rejected program {name}: {e}: {WITHOUT_FD_INSTALL}"))?;
    kprobe_support("fd_install")?;
    // Where the fds installed in the untraced syscalls come from, before the probe sees any.
    for &(syscall, kind) in INSTALLING_SYSCALLS {
        let Some(nr) = syscall_number(syscall) else {
            continue;
        };
        let spec = SyscallSpec {
            kind: kind as u8,
            probe: Probe::FD_INSTALL,
            ..SyscallSpec::default()
        };
        syscalls
            .set(nr, spec, 0)
            .map_err(|e| format!("syscall table: {e}"))?;
    }
    // The link stays with the program, which detaches it when the object is dropped.
    prog.attach("fd_install", 0)
        .map(drop)
        .map_err(|e| format!("attach failed: {e}: {WITHOUT_FD_INSTALL}"))
}

impl Probes {
    pub fn load(tracefs: &Tracefs, opts: &LoadOptions) -> Result<Self, Failure> {
        let mut skipped = Vec::new();
        let cfg = config(tracefs, opts, &mut skipped);
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &cfg, true)
            .map_max_entries(names::EVENTS, opts.ring_bytes)
            .load(OBJECT)
            .map_err(|e| {
                let btf = if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
                    ""
                } else {
                    " (this kernel has no BTF at /sys/kernel/btf/vmlinux)"
                };
                kernel(format!("loading the eBPF programs failed{btf}: {e}"))
            })?;

        let mut attached = Vec::new();
        let mut links = Vec::new();
        let mut attach = |ebpf: &mut Ebpf, program: &str, cat: &str, name: &str| {
            let full = format!("{cat}:{name}");
            if !tracefs.has_event(cat, name) {
                return Err(format!("tracepoint {full} does not exist on this kernel"));
            }
            let program = if opts.floor { "floor" } else { program };
            let prog = tracepoint(ebpf, program).map_err(|e| e.to_string())?;
            let id = prog
                .attach(cat, name)
                .map_err(|e| format!("attach failed: {e}"))?;
            links.push(prog.take_link(id).map_err(|e| e.to_string())?);
            attached.push(full);
            Ok(())
        };
        let programs: &[&str] = if opts.floor {
            &["floor"]
        } else {
            &[
                "task_newtask",
                "sched_process_exit",
                "sched_process_exec",
                "fd_syscall_enter",
                "fd_syscall_exit",
                "futex_enter",
                "futex_waitv_enter",
                "futex_exit",
                EXIT_GROUP.0,
            ]
        };
        for &program in programs {
            tracepoint(&mut ebpf, program)?
                .load()
                .map_err(|e| kernel(format!("the kernel rejected program {program}: {e}")))?;
        }
        // Loaded now, attached per Go binary as they are found ([`Probes::attach_go`]).
        let [newproc, gdestroy] = GO_PROBES.map(|(program, _)| program);
        let real = [newproc, gdestroy, GO_SPAWN];
        let go_programs: &[&str] = if opts.floor { &[GO_FLOOR] } else { &real };
        for &program in go_programs {
            uprobe(&mut ebpf, program)?
                .load()
                .map_err(|e| kernel(format!("the kernel rejected program {program}: {e}")))?;
        }
        let already_skipped =
            |skipped: &[Skipped], name: &str| skipped.iter().any(|s| s.name == name);
        for (program, (cat, name)) in [
            ("task_newtask", TASK_NEWTASK),
            ("sched_process_exit", PROCESS_EXIT),
            ("sched_process_exec", PROCESS_EXEC),
        ] {
            if already_skipped(&skipped, &format!("{cat}:{name}")) {
                continue;
            }
            if let Err(reason) = attach(&mut ebpf, program, cat, name) {
                skipped.push(Skipped {
                    name: format!("{cat}:{name}"),
                    reason,
                });
            }
        }

        let mut syscalls: Array<MapData, SyscallSpec> = take_map(&mut ebpf, names::SYSCALLS)?;
        let syscalls_usable = !already_skipped(&skipped, "syscalls:*");
        if syscalls_usable {
            for (program, tp) in FUTEX_PROBES.into_iter().chain([EXIT_GROUP]) {
                if let Err(reason) = attach(&mut ebpf, program, "syscalls", tp) {
                    skipped.push(Skipped {
                        name: format!("syscalls:{tp}"),
                        reason,
                    });
                }
            }
        }
        let mut slot_names = vec![
            format!("{}:{}", TASK_NEWTASK.0, TASK_NEWTASK.1),
            format!("{}:{}", PROCESS_EXIT.0, PROCESS_EXIT.1),
            format!("{}:{}", PROCESS_EXEC.0, PROCESS_EXEC.1),
            "futex".to_owned(),
            "futex_waitv".to_owned(),
        ];
        slot_names.extend(GO_PROBES.map(|(_, name)| name.to_owned()));
        slot_names.push(FD_INSTALL_PROBE.to_owned());
        debug_assert_eq!(slot_names.len(), usize::from(Probe::FIRST_SYSCALL));
        let fd_syscalls = FD_SYSCALLS.iter().map(|&syscall| match opts.paths {
            true => syscall,
            false => syscall.without_path(),
        });
        for (index, syscall) in fd_syscalls.enumerate() {
            let probe = Probe::syscall(index as u16);
            slot_names.push(syscall.name.to_owned());
            if !syscalls_usable {
                continue;
            }
            let Some(nr) = syscall.number() else {
                skipped.push(Skipped {
                    name: syscall.name.into(),
                    reason: format!("no such syscall on {}", std::env::consts::ARCH),
                });
                continue;
            };
            // Enable the table entry before attaching so no call is seen half-configured.
            let spec = SyscallSpec {
                shape: syscall.shape as u8,
                kind: syscall.kind as u8,
                arg: syscall.arg,
                probe,
                ..SyscallSpec::default()
            };
            syscalls
                .set(nr, spec, 0)
                .map_err(|e| kernel(format!("syscall table: {e}")))?;
            let sides = [
                ("fd_syscall_enter", syscall.enter_tracepoint()),
                ("fd_syscall_exit", syscall.exit_tracepoint()),
            ];
            let mut whole = true;
            for (program, tp) in sides {
                let Some(tp) = tp else { continue };
                if let Err(reason) = attach(&mut ebpf, program, "syscalls", &tp) {
                    whole = false;
                    skipped.push(Skipped {
                        name: format!("syscalls:{tp}"),
                        reason,
                    });
                }
            }
            if !whole {
                // Half a syscall reports nothing: leave its fds to the fd_install kprobe (as
                // installed), which skips the syscalls in the table.
                syscalls
                    .set(nr, SyscallSpec::default(), 0)
                    .map_err(|e| kernel(format!("syscall table: {e}")))?;
            }
        }

        // Fds no syscall tracepoint reports: only to complete them, so not without them.
        let fd_mode = if !syscalls_usable {
            skipped.push(Skipped {
                name: FD_INSTALL_PROBE.into(),
                reason: "the syscall tracepoints are unusable: no fd tracking".into(),
            });
            FdMode::None
        } else {
            match attach_fd_install(&mut ebpf, opts.floor, &mut syscalls) {
                Ok(()) => {
                    attached.push(FD_INSTALL_PROBE.into());
                    FdMode::TracepointsAndKprobe
                }
                Err(reason) => {
                    skipped.push(Skipped {
                        name: FD_INSTALL_PROBE.into(),
                        reason,
                    });
                    FdMode::Tracepoints
                }
            }
        };

        Ok(Self {
            events: Some(take_map(&mut ebpf, names::EVENTS)?),
            stacks: take_map(&mut ebpf, names::STACKS)?,
            counters: take_map(&mut ebpf, names::COUNTERS)?,
            targets: take_map(&mut ebpf, names::TARGETS)?,
            waits: take_map(&mut ebpf, names::WAITS)?,
            complete: take_map(&mut ebpf, names::COMPLETE)?,
            losses: take_map(&mut ebpf, names::LOSSES)?,
            marked: Vec::new(),
            ebpf,
            links,
            attached,
            skipped,
            fd_mode,
            paths: opts.paths,
            slot_names,
            floor: opts.floor,
        })
    }

    /// Starts tracing `pid` (and, through the kernel, the processes it forks from now on).
    pub fn add_target(&mut self, pid: u32) -> anyhow::Result<()> {
        self.targets
            .insert(pid, Target::Root as u8, 0)
            .map_err(|e| anyhow::anyhow!("cannot trace pid {pid}: target map: {e}"))
    }

    /// Attaches the goroutine probes to the Go binary at `path` (`shown` in messages): for
    /// process `pid` only, or for every process that runs it (the programs then filter on traced
    /// processes themselves, but every process running the binary pays for the breakpoints).
    /// `fields` travel in the attach cookie. On failure nothing stays attached.
    pub fn attach_go(
        &mut self,
        path: &std::path::Path,
        shown: &str,
        points: &ProbePoints,
        fields: GoFields,
        pid: Option<NonZeroU32>,
    ) -> Result<GoLinks, GoAttachError> {
        let scope = pid.map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let name = match pid {
            Some(pid) => format!("go:{shown} (pid {pid})"),
            None => format!("go:{shown}"),
        };
        let mut links = GoLinks {
            name,
            links: Vec::new(),
        };
        let [newproc, gdestroy] = GO_PROBES.map(|(program, _)| program);
        let sites = [(newproc, points.create), (gdestroy, points.exit)]
            .into_iter()
            .chain(points.spawn.map(|offset| (GO_SPAWN, offset)));
        for (program, offset) in sites {
            let program = if self.floor { GO_FLOOR } else { program };
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(fields.cookie()),
            };
            let result = uprobe(&mut self.ebpf, program)
                .map_err(|e| GoAttachError {
                    message: e.to_string(),
                    denied: false,
                })
                .and_then(|prog| {
                    prog.attach(point, path, scope).map_err(|e| {
                        let e = anyhow::Error::from(e);
                        let denied = e.chain().any(|cause| {
                            cause
                                .downcast_ref::<std::io::Error>()
                                .and_then(std::io::Error::raw_os_error)
                                .is_some_and(|errno| matches!(errno, libc::EPERM | libc::EACCES))
                        });
                        GoAttachError {
                            message: format!("uprobe {program} at {offset:#x} of {shown}: {e:#}"),
                            denied,
                        }
                    })
                });
            match result {
                Ok(link) => links.links.push((program, link)),
                Err(e) => {
                    self.detach_links(links.links);
                    return Err(e);
                }
            }
        }
        self.attached.push(links.name.clone());
        Ok(links)
    }

    /// Detaches what [`Self::attach_go`] attached.
    pub fn detach_go(&mut self, links: GoLinks) {
        self.detach_links(links.links);
        if let Some(at) = self.attached.iter().position(|name| *name == links.name) {
            self.attached.swap_remove(at);
        }
    }

    fn detach_links(&mut self, links: Vec<(&'static str, UProbeLinkId)>) {
        for (program, link) in links {
            if let Ok(prog) = uprobe(&mut self.ebpf, program) {
                // Already gone is as good.
                let _ = prog.detach(link);
            }
        }
    }

    /// The ring buffer, handed to the reader once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// The user addresses of a stack, innermost first; None when the kernel no longer has it.
    pub fn stack(&self, id: u32) -> Option<Vec<u64>> {
        let trace = self.stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// Marks a kernel stack complete: frame pointers alone gave all its frames, so its creation
    /// events need no stack sample from now on.
    pub fn mark_complete(&mut self, id: u32) {
        // An id beyond the map is not the kernel's; the samples then simply go on.
        if self.complete.set(id, 1, 0).is_ok() {
            self.marked.push(id);
        }
    }

    /// Empties the kernel's stack map, and the marks on its ids: a bucket of the map holds one
    /// stack for good, so a map that fills up (garbage frame-pointer walks through code without
    /// frame pointers fill it within minutes system-wide) fails every new stack that lands in
    /// a taken bucket. Userspace keeps no kernel id past the event that carried it.
    pub fn clear_stacks(&mut self) {
        let ids: Vec<u32> = self.stacks.stack_ids().map_while(Result::ok).collect();
        for id in ids {
            // Gone already is as good.
            let _ = self.stacks.remove(&id);
        }
        for id in self.marked.drain(..) {
            let _ = self.complete.set(id, 0, 0);
        }
    }

    /// The processes that lost records since the last call, and the map emptied of them. One
    /// that loses another record after its key is read is simply noted again.
    pub fn take_losses(&mut self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.losses.keys().map_while(Result::ok).collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in &pids {
            let _ = self.losses.remove(pid);
        }
        pids
    }

    /// Every futex wait in progress in a traced process, by thread id.
    pub fn waits(&self) -> Vec<(u32, InFlightWait)> {
        // The map changes while it is walked: a key deleted under the walk restarts it in the
        // kernel (hence the dedup by tid), and an error ends it; the next scan sees the rest.
        let by_tid: std::collections::BTreeMap<u32, InFlightWait> =
            self.waits.iter().map_while(Result::ok).collect();
        by_tid.into_iter().collect()
    }

    /// Run counts and times of the programs that ran; empty unless the kernel counts them
    /// (`sysctl kernel.bpf_stats_enabled=1`).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        self.ebpf
            .programs()
            .filter_map(|(name, program)| {
                let info = program.info().ok()?;
                (info.run_count() > 0).then(|| ProgramStats {
                    name: name.to_owned(),
                    runs: info.run_count(),
                    run_ns: info.run_time().as_nanos() as u64,
                })
            })
            .collect()
    }

    /// Per-probe kernel counters.
    pub fn counters(&self) -> Vec<ProbeCounters> {
        let read = |slot: u32| -> u64 {
            self.counters
                .get(&slot, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        self.slot_names
            .iter()
            .enumerate()
            .map(|(probe, name)| {
                let c = |counter: Counter| read(counter.slot(probe as u16));
                ProbeCounters {
                    name: name.clone(),
                    emitted: c(Counter::Emitted),
                    lost: c(Counter::RingFull),
                    stack_failures: c(Counter::StackFailed),
                    targets_full: c(Counter::TargetsFull),
                    pending_full: c(Counter::PendingFull),
                    path_failures: c(Counter::PathFailed),
                    waits_full: c(Counter::WaitsFull),
                    samples: c(Counter::SamplesSent),
                    samples_lost: c(Counter::SamplesLost),
                    losses_unattributed: c(Counter::LossUnattributed),
                }
            })
            .collect()
    }
}

impl Drop for Probes {
    /// Detaching a tracepoint waits for an RCU grace period (~80 ms here), so dropping ~60 links
    /// one after another kept leaktrace alive for 4-5 s after the end of tracing. Detached from
    /// threads of their own the waits overlap.
    fn drop(&mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probeable_functions_are_found_by_exact_name_in_either_listing() {
        let filter = "do_sys_open\nfd_install\nreceive_fd [some_module]\n";
        assert!(lists_filter_function(filter, "fd_install"));
        assert!(lists_filter_function(filter, "receive_fd"));
        assert!(!lists_filter_function(filter, "fd_install_x"));
        assert!(!lists_filter_function(
            "__fd_install\nfd_install.cold\n",
            "fd_install"
        ));
        let kallsyms = "ffffffff8170bb50 T fd_install\n\
                        ffffffff8170bc00 t fd_install.cold\n\
                        ffffffff82000000 D fd_installed_count\n\
                        ffffffffc0000000 t helper\t[kvm]\n";
        assert!(lists_kernel_symbol(kallsyms, "fd_install"));
        assert!(lists_kernel_symbol(kallsyms, "helper"));
        // Data is no function; a near name is another.
        assert!(!lists_kernel_symbol(kallsyms, "fd_installed_count"));
        assert!(!lists_kernel_symbol(
            "ffffffff8170bb50 T __fd_install\n",
            "fd_install"
        ));
    }

    #[test]
    fn without_the_kprobe_pmu_the_reason_names_what_is_missed() {
        let reason = kprobe_support("fd_install");
        let has_pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
        if has_pmu {
            // The function may still be missing or unlisted; never the PMU.
            assert!(!reason.is_err_and(|r| r.contains("no kprobes")));
        } else {
            let reason = reason.unwrap_err();
            assert!(reason.contains("this kernel has no kprobes"), "{reason}");
            assert!(reason.contains("SCM_RIGHTS"), "{reason}");
            assert!(reason.contains("io_uring"), "{reason}");
        }
    }
}
