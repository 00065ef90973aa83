//! The Prometheus exposition of a report: what each pod and container holds, its findings by
//! verdict, and the tracer's health.
//!
//! Label cardinality is bounded by the node's containers: series are keyed by where a process
//! runs (namespace, pod, container, container id; all empty for host processes, which are summed
//! into one set), never by pid, stack, path or function — those are in `/findings`. Per set there
//! are at most one series per fd kind, and per resource and verdict. The processes behind them
//! are bounded by `--max-processes`.

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{cgroup::Placement, model::Finding, pods::Placed, report::Report, verdicts};

/// Where processes run, as labels.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Where {
    namespace: String,
    pod: String,
    container: String,
    container_id: String,
}

impl Where {
    fn of(placed: Option<&Placed>) -> Self {
        let Some(placed) = placed else {
            return Self::default();
        };
        let name = |s: &Option<String>| s.clone().unwrap_or_default();
        match &placed.placement {
            Placement::Host => Self::default(),
            Placement::Container { id, .. } => Self {
                namespace: name(&placed.namespace),
                pod: name(&placed.pod),
                container: name(&placed.container),
                container_id: id.clone(),
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FdLabels {
    namespace: String,
    pod: String,
    container: String,
    container_id: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    namespace: String,
    pod: String,
    container: String,
    container_id: String,
    resource: &'static str,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    probe: String,
}

fn family<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let gauge = Gauge::<i64>::default();
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, gauge);
}

/// A total kept by the tracer since it started (exposed as `<name>_total`).
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let counter = Counter::<u64>::default();
    counter.inc_by(value);
    registry.register(name, help, counter);
}

fn add(gauge: &Gauge, n: u64) {
    gauge.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
}

/// OpenMetrics text of `report`; `all` is every finding, not only the `--top` the report shows.
/// Exited processes hold nothing: they are left out.
pub fn render(report: &Report, all: &[Finding]) -> String {
    let mut registry = Registry::with_prefix("leaktrace");
    let processes = family::<Where>(
        &mut registry,
        "processes",
        "Traced processes that are alive",
    );
    let threads = family::<Where>(&mut registry, "threads", "Live threads");
    let fds = family::<FdLabels>(&mut registry, "fds", "Open file descriptors by kind");
    let waiters = family::<Where>(
        &mut registry,
        "blocked_waiters",
        "Threads blocked in a futex wait longer than --min-wait at the last scan",
    );
    let goroutines = family::<Where>(
        &mut registry,
        "goroutines",
        "Live goroutines of Go processes, those created while traced",
    );
    let findings = family::<VerdictLabels>(
        &mut registry,
        "findings",
        "Findings (groups of threads, fds, waiters or goroutines by creating stack) by verdict",
    );
    let outstanding = family::<VerdictLabels>(
        &mut registry,
        "outstanding",
        "Threads, fds, waiters or goroutines outstanding in findings, by verdict",
    );
    let place = |pid: u32| Where::of(report.placements.get(&pid));
    for p in report.processes.iter().filter(|p| !p.exited) {
        let at = place(p.pid);
        add(&processes.get_or_create(&at), 1);
        add(&threads.get_or_create(&at), p.threads);
        add(&waiters.get_or_create(&at), p.blocked_waiters);
        add(&goroutines.get_or_create(&at), p.goroutines);
        for (kind, &n) in &p.fds {
            let labels = FdLabels {
                namespace: at.namespace.clone(),
                pod: at.pod.clone(),
                container: at.container.clone(),
                container_id: at.container_id.clone(),
                kind: kind.as_str(),
            };
            add(&fds.get_or_create(&labels), n);
        }
    }
    for f in all.iter().filter(|f| !f.exited) {
        let Some(verdict) = verdicts::label(f) else {
            continue;
        };
        let at = place(f.pid);
        let labels = VerdictLabels {
            namespace: at.namespace,
            pod: at.pod,
            container: at.container,
            container_id: at.container_id,
            resource: f.resource.as_str(),
            verdict,
        };
        add(&findings.get_or_create(&labels), 1);
        add(&outstanding.get_or_create(&labels), f.outstanding);
    }

    let h = &report.health;
    let totals = [
        ("events", "Events decoded from the ring buffer", h.events),
        (
            "lost_events",
            "Records lost to a full ring buffer",
            h.lost_events,
        ),
        (
            "losses_unattributed",
            "Lost records whose process the kernel could not note (all were marked incomplete)",
            h.losses_unattributed,
        ),
        (
            "samples_lost",
            "Stack samples lost to a full ring buffer",
            h.samples_lost,
        ),
        (
            "stack_failures",
            "Frame-pointer stack captures that failed in the kernel",
            h.stack_failures,
        ),
        (
            "stack_map_clears",
            "Times the kernel's stack map was emptied because an eighth of it was taken",
            h.stack_map_clears,
        ),
        (
            "unattributed_creations",
            "Thread and fd creations left with no stack: no sample and no frame-pointer walk",
            h.stacks.unattributed,
        ),
        (
            "decode_errors",
            "Ring buffer records that failed validation",
            h.decode_errors,
        ),
        (
            "resync_mismatches",
            "Disagreements between tracked state and /proc",
            h.resync_mismatches,
        ),
        (
            "dropped_objects",
            "Threads, fds and goroutines not tracked because a bound was hit",
            h.dropped_objects,
        ),
        (
            "evicted_processes",
            "Processes evicted, least recently active first, to stay within --max-processes",
            h.evicted_processes,
        ),
        (
            "waits_full",
            "Futex waits not tracked because the in-flight wait map was full",
            h.waits_full,
        ),
        (
            "untracked_closes",
            "Closes of fds opened before tracing began",
            h.untracked_closes,
        ),
        (
            "unwinder_evictions",
            "Processes and binaries dropped from the unwinder's caches to stay within bounds",
            h.unwind.processes_evicted + h.unwind.binaries_evicted,
        ),
        (
            "untracked_goroutine_exits",
            "Ends of goroutines that started before tracing began",
            h.untracked_goroutine_exits,
        ),
        (
            "goroutine_states_unread",
            "Goroutine states a report could not read (ended since, or the process gone)",
            h.go.states_unread,
        ),
    ];
    for (name, help, value) in totals {
        counter(&mut registry, name, help, value);
    }
    let probe_events = Family::<ProbeLabels, Counter>::default();
    registry.register(
        "probe_events",
        "Records each probe wrote to the ring buffer",
        probe_events.clone(),
    );
    let probe_lost = Family::<ProbeLabels, Counter>::default();
    registry.register(
        "probe_lost",
        "Records each probe lost to a full ring buffer",
        probe_lost.clone(),
    );
    for p in &h.probes {
        let labels = ProbeLabels {
            probe: p.name.clone(),
        };
        probe_events.get_or_create(&labels).inc_by(p.emitted);
        probe_lost.get_or_create(&labels).inc_by(p.lost);
    }
    gauge(
        &mut registry,
        "probes_attached",
        "Probes attached",
        h.probes_attached as u64,
    );
    gauge(
        &mut registry,
        "probes_skipped",
        "Probes this kernel lacks",
        h.probes_skipped.len() as u64,
    );
    registry.register(
        "fd_mode",
        "How fds are traced: tracepoints+kprobe sees them all, tracepoints misses those \
         received over SCM_RIGHTS, created by io_uring or installed by other syscalls",
        Info::new([("mode", h.fd_mode.as_str())]),
    );
    if let Some(api) = &h.kubernetes_api {
        gauge(
            &mut registry,
            "kubernetes_api_connected",
            "1 while the Kubernetes API watch that names pods last heard data, not an error",
            u64::from(api.connected),
        );
        gauge(
            &mut registry,
            "kubernetes_api_pods",
            "Pods the Kubernetes API watch knows",
            api.pods as u64,
        );
        counter(
            &mut registry,
            "kubernetes_api_errors",
            "Errors of the Kubernetes API watch",
            api.errors,
        );
    }
    gauge(
        &mut registry,
        "report_seq",
        "Sequence number of the report these values come from",
        report.seq,
    );
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        loader::ProbeCounters,
        model::{FdKind, ProcessSummary},
        report::tests::report,
    };

    /// Series of `text` as (name, labels, value), the way a scraper reads them.
    fn series(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (head, value) = l.rsplit_once(' ').unwrap();
                let (name, labels) = head.split_once('{').unwrap_or((head, "}"));
                let labels = labels
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap();
                        (k.to_owned(), v.trim_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels, value.parse().unwrap())
            })
            .collect()
    }

    fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series(text)
            .into_iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
            })
            .map(|(_, _, v)| v)
    }

    fn host_process(pid: u32, threads: u64, sockets: u64) -> ProcessSummary {
        ProcessSummary {
            pid,
            comm: "host".into(),
            threads,
            fds: [(FdKind::Socket, sockets)].into_iter().collect(),
            preexisting_threads: 0,
            preexisting_fds: 0,
            exited: false,
            incomplete: false,
            blocked_waiters: 1,
            goroutines: 3,
        }
    }

    #[test]
    fn containers_and_the_host_are_labelled_and_summed() {
        let mut r = report();
        // Two host processes (no placement known for one) sum into the empty label set.
        r.processes.push(host_process(7, 3, 1));
        r.processes.push(host_process(8, 4, 2));
        r.placements.insert(
            7,
            Placed {
                placement: Placement::Host,
                namespace: None,
                pod: None,
                container: None,
            },
        );
        // An exited process holds nothing.
        let mut gone = host_process(9, 50, 50);
        gone.exited = true;
        r.processes.push(gone);
        let all: Vec<Finding> = r.findings.iter().map(|l| l.finding.clone()).collect();
        let text = render(&r, &all);
        assert!(text.ends_with("# EOF\n"), "{text}");
        let id = "0123456789ab".repeat(5) + "cdef";
        let app = [
            ("namespace", "shop"),
            ("pod", "cart-7d9f"),
            ("container", "app"),
            ("container_id", id.as_str()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut labels = app.to_vec();
            labels.extend_from_slice(extra);
            labels
        };
        assert_eq!(value(&text, "leaktrace_threads", &app), Some(2.0));
        assert_eq!(
            value(&text, "leaktrace_fds", &with(&[("kind", "socket")])),
            Some(40.0)
        );
        assert_eq!(
            value(&text, "leaktrace_fds", &with(&[("kind", "file")])),
            Some(3.0)
        );
        let leak = with(&[("resource", "fd"), ("verdict", "leak")]);
        assert_eq!(value(&text, "leaktrace_outstanding", &leak), Some(40.0));
        assert_eq!(value(&text, "leaktrace_findings", &leak), Some(1.0));
        let host = [
            ("namespace", ""),
            ("pod", ""),
            ("container", ""),
            ("container_id", ""),
        ];
        assert_eq!(value(&text, "leaktrace_threads", &host), Some(7.0));
        assert_eq!(value(&text, "leaktrace_processes", &host), Some(2.0));
        assert_eq!(value(&text, "leaktrace_blocked_waiters", &host), Some(2.0));
        assert_eq!(value(&text, "leaktrace_goroutines", &host), Some(6.0));
        assert_eq!(value(&text, "leaktrace_events_total", &[]), Some(99.0));
        assert_eq!(value(&text, "leaktrace_probes_attached", &[]), Some(5.0));
        assert_eq!(value(&text, "leaktrace_report_seq", &[]), Some(3.0));
        assert_eq!(
            value(
                &text,
                "leaktrace_fd_mode_info",
                &[("mode", "tracepoints+kprobe")]
            ),
            Some(1.0)
        );
        assert_eq!(
            series(&text)
                .iter()
                .filter(|(n, ..)| n == "leaktrace_fd_mode_info")
                .count(),
            1
        );
        // No per-pid, per-stack or per-function labels.
        assert!(series(&text).iter().all(|(_, l, _)| l
            .keys()
            .all(|k| !matches!(k.as_str(), "pid" | "stack" | "function" | "path"))));
    }

    #[test]
    fn losses_are_exported_per_probe() {
        let mut r = report();
        r.health.lost_events = 5;
        r.health.probes = vec![ProbeCounters {
            name: "fd_syscall_exit".into(),
            emitted: 10,
            lost: 5,
            ..ProbeCounters::default()
        }];
        let text = render(&r, &[]);
        assert_eq!(value(&text, "leaktrace_lost_events_total", &[]), Some(5.0));
        let probe = [("probe", "fd_syscall_exit")];
        assert_eq!(
            value(&text, "leaktrace_probe_lost_total", &probe),
            Some(5.0)
        );
        assert_eq!(
            value(&text, "leaktrace_probe_events_total", &probe),
            Some(10.0)
        );
        // Without findings, no finding series; without an API watch, no API series.
        assert_eq!(value(&text, "leaktrace_findings", &[]), None);
        assert_eq!(
            value(&text, "leaktrace_kubernetes_api_connected", &[]),
            None
        );
        r.health.kubernetes_api = Some(crate::kubeapi::ApiStatus {
            connected: true,
            pods: 12,
            errors: 3,
            ..Default::default()
        });
        let text = render(&r, &[]);
        assert_eq!(
            value(&text, "leaktrace_kubernetes_api_connected", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "leaktrace_kubernetes_api_pods", &[]),
            Some(12.0)
        );
        assert_eq!(
            value(&text, "leaktrace_kubernetes_api_errors_total", &[]),
            Some(3.0)
        );
    }
}
