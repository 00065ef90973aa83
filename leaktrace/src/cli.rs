//! Command line.

use std::{ffi::OsString, time::Duration};

use clap::{Parser, ValueEnum};

/// What makes `--fail-on` fail the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// A thread or fd leak verdict, or growing blocked waiters.
    Leak,
    /// A deadlock between threads.
    Deadlock,
}

/// Exit status when `--fail-on` found what it was told to fail on.
pub const EXIT_FOUND: i32 = 10;
/// Exit status when `--fail-on` found nothing but the traced command itself failed.
pub const EXIT_COMMAND_FAILED: i32 = 11;

/// Whether pods and containers are named from the Kubernetes API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KubeApi {
    /// When running in a pod with a service account (in-cluster config present).
    Auto,
    /// Always; fail if the in-cluster config is missing.
    On,
    /// Never: names come from the node's kubelet log directories only.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable report.
    Table,
    /// JSON lines: one object per line with a "type" (see README, "JSON lines contract").
    Json,
}

/// Finds thread and file-descriptor leaks in running programs with eBPF.
#[derive(Debug, Parser)]
#[command(
    name = "leaktrace",
    version,
    // The last of a repeated flag wins: a DaemonSet's args can be extended with overrides.
    args_override_self = true,
    after_help = "Examples:\n  sudo leaktrace --pid 4242\n  sudo leaktrace --all --format json\n  leaktrace --all --listen 0.0.0.0:9464 --format json   # the daemon (see deploy/)\n  sudo leaktrace --format json -- ./server --port 8080\n\n\
Exit codes: 0 success, 1 unexpected error, 2 bad usage or unknown pid, 3 missing privileges\n\
(CAP_BPF and CAP_PERFMON, or root), 4 the kernel lacks what leaktrace needs (tracefs, eBPF),\n\
10 --fail-on found a leak or deadlock, 11 --fail-on found nothing but the command failed."
)]
pub struct Cli {
    /// Trace this process and the processes it forks from now on (repeatable).
    #[arg(short, long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace every process on the system except leaktrace itself; each is picked up (with the
    /// threads and fds /proc shows) at its first traced event.
    #[arg(short, long, conflicts_with_all = ["pids", "command"])]
    pub all: bool,

    /// Time between reports (e.g. 5, 5s, 500ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop after this long (default: until Ctrl-C or every target has exited).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Report a group of outstanding threads/fds only once its oldest member is this old:
    /// short-lived objects of a busy but healthy program are not findings.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub min_age: Duration,

    /// A futex wait this long is a blocked waiter. Most waits end in microseconds; 5 s is far
    /// beyond lock hand-offs and request latencies, yet shows a stuck thread quickly.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub min_wait: Duration,

    /// Findings shown per report.
    #[arg(long, default_value_t = 10)]
    pub top: usize,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Exit with status 10 when the final report has a leak verdict (or a deadlock): the CI
    /// gate. Without it, a failing traced command makes leaktrace exit 11. Comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "WHAT")]
    pub fail_on: Vec<FailOn>,

    /// At the end, write the outstanding resources as folded stacks (flamegraph.pl, inferno).
    #[arg(long, value_name = "FILE")]
    pub folded: Option<std::path::PathBuf>,

    /// At the end, write a flame graph (SVG) of the outstanding resources per kind.
    #[arg(long, value_name = "FILE.svg")]
    pub flamegraph: Option<std::path::PathBuf>,

    /// Write reports to this file instead of standard output (which a traced command shares).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Kernel ring buffer size in bytes (power of two, at least 4096). Records that do not fit
    /// are lost, counted and shown.
    #[arg(long, default_value_t = leaktrace_common::capacity::EVENTS_BYTES, value_parser = parse_ring_bytes)]
    pub ring_buffer_bytes: u32,

    /// Bytes of user stack copied at each thread or fd creation, unwound with the binaries'
    /// unwind tables (.eh_frame): stacks through code without frame pointers, like Debian's
    /// glibc, then name the function that made the call. 0 keeps frame-pointer walks only,
    /// the cheapest (see BENCHMARKS.md). A multiple of 8, at most 16384.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_COPY, value_parser = parse_stack_copy)]
    pub stack_copy: u32,

    /// Never read the pathnames files are opened with (they can be sensitive: user names, tokens
    /// in paths): the kernel side then does not touch that user memory, and findings have no
    /// sample path.
    #[arg(long)]
    pub no_paths: bool,

    /// Serve HTTP on this address: /metrics (Prometheus), /findings (JSON), /healthz and
    /// /readyz. With --all, this is the daemon mode of deploy/daemonset.yaml.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// Name pods and containers from the Kubernetes API (watching the pods of --node-name),
    /// as well as from the kubelet's log directories.
    #[arg(long, value_enum, default_value_t = KubeApi::Auto)]
    pub kube_api: KubeApi,

    /// The node whose pods the Kubernetes API watch lists (the DaemonSet passes
    /// spec.nodeName); without it, every pod of the cluster is listed.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Processes tracked at most; past it the least recently active is evicted (counted in
    /// health as evicted_processes).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_processes: u32,

    /// Command to run and trace from its first instruction; it is stopped when tracing ends.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Seconds as a plain number, or a humantime duration ("500ms", "2m").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("{s}: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s}: {e}"))
}

/// Enough for the frames between a syscall and the code that made it in C and C++ programs,
/// where frame pointers are missing; beyond it the frame-pointer walk takes over.
pub const DEFAULT_STACK_COPY: u32 = 4096;

fn parse_stack_copy(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if !n.is_multiple_of(8) || n as usize > leaktrace_common::STACK_COPY_MAX {
        return Err(format!(
            "{n} is not a multiple of 8 of at most {}",
            leaktrace_common::STACK_COPY_MAX
        ));
    }
    Ok(n)
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two of at least 4096"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_seconds_and_units() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn ring_sizes_must_be_powers_of_two() {
        assert_eq!(parse_ring_bytes("65536"), Ok(65536));
        assert!(parse_ring_bytes("1000").is_err());
        assert!(parse_ring_bytes("2048").is_err());
    }

    #[test]
    fn stack_copies_are_words_within_the_record() {
        assert_eq!(parse_stack_copy("0"), Ok(0));
        assert_eq!(parse_stack_copy("16384"), Ok(16384));
        assert!(parse_stack_copy("16392").is_err());
        assert!(parse_stack_copy("100").is_err());
        assert!(parse_stack_copy("-8").is_err());
    }

    #[test]
    fn pids_and_a_command_parse() {
        let cli = Cli::parse_from(["leaktrace", "-p", "1", "--pid", "2", "--format", "json"]);
        assert_eq!(cli.pids, vec![1, 2]);
        assert_eq!(cli.format, Format::Json);
        let cli = Cli::parse_from(["leaktrace", "--", "sleep", "--pid", "3"]);
        assert!(cli.pids.is_empty());
        assert_eq!(cli.command, vec!["sleep", "--pid", "3"]);
        let cli = Cli::parse_from(["leaktrace", "--fail-on", "leak,deadlock", "--", "true"]);
        assert_eq!(cli.fail_on, vec![FailOn::Leak, FailOn::Deadlock]);
        assert!(Cli::parse_from(["leaktrace", "--all"]).all);
        assert!(Cli::try_parse_from(["leaktrace", "--all", "--pid", "1"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "--all", "--", "true"]).is_err());
    }

    #[test]
    fn daemon_flags_parse_and_later_ones_win() {
        let cli = Cli::parse_from([
            "leaktrace",
            "--all",
            "--listen",
            "0.0.0.0:9464",
            "--interval",
            "15s",
            "--interval",
            "2s",
        ]);
        assert_eq!(cli.listen, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(cli.interval, Duration::from_secs(2));
        assert_eq!(cli.max_processes, 4096);
        assert!(Cli::try_parse_from(["leaktrace", "--all", "--listen", "9464"]).is_err());
        assert!(Cli::try_parse_from(["leaktrace", "--all", "--max-processes", "0"]).is_err());
        assert_eq!(cli.kube_api, KubeApi::Auto);
        let cli = Cli::parse_from([
            "leaktrace",
            "--all",
            "--kube-api",
            "on",
            "--node-name",
            "n1",
        ]);
        assert_eq!(cli.kube_api, KubeApi::On);
        assert_eq!(cli.node_name.as_deref(), Some("n1"));
    }
}
