//! One vocabulary over the two verdict engines (threads/fds: leak, stable, released; waiters:
//! deadlock, growing, stuck): how severe a finding is, what to call it, and what trips the
//! `--fail-on` gate.

use std::collections::BTreeMap;

use crate::{
    cli::FailOn,
    model::{Finding, Trend, Verdict},
};

/// The verdict's name as the JSON contract and the table spell it.
pub fn label(f: &Finding) -> Option<&'static str> {
    if let Some(w) = &f.waiter {
        return Some(match w.verdict {
            Verdict::Deadlock => "deadlock",
            Verdict::Growing => "growing",
            Verdict::Stuck => "stuck",
        });
    }
    f.leak.as_ref().map(|l| match l.trend {
        Trend::Leak => "leak",
        Trend::Stable => "stable",
        Trend::Released => "released",
    })
}

/// Lower is more severe: deadlocks, then leaks (growing waiters are leaks), then what is held
/// but not growing, then what was released.
pub fn severity(f: &Finding) -> u8 {
    match label(f) {
        Some("deadlock") => 0,
        Some("leak" | "growing") => 1,
        Some("stuck" | "stable") => 2,
        Some("released") => 3,
        _ => 4,
    }
}

/// How many findings carry each verdict.
pub fn counts(findings: &[Finding]) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for label in findings.iter().filter_map(label) {
        *counts.entry(label).or_default() += 1;
    }
    counts
}

/// Whether `f` is what `fail_on` asks to fail on.
pub fn trips(f: &Finding, fail_on: &[FailOn]) -> bool {
    fail_on.iter().any(|what| match what {
        FailOn::Leak => severity(f) == 1,
        FailOn::Deadlock => severity(f) == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LeakDetail, Resource, WaitKind, WaiterDetail};

    fn finding(leak: Option<Trend>, waiter: Option<Verdict>) -> Finding {
        Finding {
            pid: 1,
            comm: "x".into(),
            resource: if waiter.is_some() {
                Resource::Waiter
            } else {
                Resource::Fd
            },
            kind: None,
            stack: None,
            outstanding: 3,
            created: 3,
            oldest_age_ns: 0,
            rate_per_s: 0.0,
            sample_path: None,
            exited: false,
            goroutine: None,
            waiter: waiter.map(|verdict| WaiterDetail {
                kind: WaitKind::Futex,
                futex_address: 0,
                futex_addresses: 1,
                waiting_tids: vec![],
                verdict,
                cycle: vec![],
            }),
            leak: leak.map(|trend| LeakDetail {
                trend,
                destroyed: 0,
                age_p50_ns: 0,
                age_p90_ns: 0,
            }),
        }
    }

    #[test]
    fn growing_waiters_and_leaks_trip_the_leak_gate_deadlocks_the_deadlock_gate() {
        let leak = finding(Some(Trend::Leak), None);
        let growing = finding(None, Some(Verdict::Growing));
        let deadlock = finding(None, Some(Verdict::Deadlock));
        for held in [
            finding(Some(Trend::Stable), None),
            finding(Some(Trend::Released), None),
            finding(None, Some(Verdict::Stuck)),
        ] {
            assert!(!trips(&held, &[FailOn::Leak, FailOn::Deadlock]));
        }
        assert!(trips(&leak, &[FailOn::Leak]));
        assert!(trips(&growing, &[FailOn::Leak]));
        assert!(!trips(&deadlock, &[FailOn::Leak]));
        assert!(trips(&deadlock, &[FailOn::Deadlock]));
        assert!(!trips(&leak, &[]));
    }

    #[test]
    fn severity_orders_deadlock_leak_held_released() {
        let order = [
            finding(None, Some(Verdict::Deadlock)),
            finding(Some(Trend::Leak), None),
            finding(None, Some(Verdict::Stuck)),
            finding(Some(Trend::Released), None),
        ];
        let ranks: Vec<u8> = order.iter().map(severity).collect();
        assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{ranks:?}");
        let c = counts(&order);
        assert_eq!(c.get("deadlock"), Some(&1));
        assert_eq!(c.get("released"), Some(&1));
    }
}
