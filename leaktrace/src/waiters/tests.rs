//! Synthetic scans of in-flight futex waits through the waiter analysis; no kernel, no root.

use std::{collections::BTreeMap, slice};

use super::{deadlock_cycles, WaiterCounters, WaiterLimits, Waiters};
use crate::model::{
    CycleLink, Finding, Owner, OwnerSource, Resource, StackRef, Verdict, Wait, WaitKind,
    WaiterDetail,
};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const P: u32 = 100;
const Q: u32 = 200;
const A: u64 = 0x7f00_0000_1000;
const B: u64 = 0x7f00_0000_2000;
const C: u64 = 0x7f00_0000_3000;

fn stack(pid: u32, id: u32) -> Option<StackRef> {
    Some(StackRef {
        pid,
        exec_gen: 0,
        id,
    })
}

fn wait(pid: u32, tid: u32, uaddr: u64, since_ns: u64, stack_id: u32) -> Wait {
    Wait {
        pid,
        tid,
        uaddr,
        kind: WaitKind::Futex,
        since_ns,
        stack: stack(pid, stack_id),
        owner: None,
    }
}

fn held_by(wait: Wait, tid: u32, source: OwnerSource) -> Wait {
    Wait {
        owner: Some(Owner { tid, source }),
        ..wait
    }
}

fn link(wait: &Wait) -> CycleLink {
    let owner = wait.owner.expect("a wait with an owner");
    CycleLink {
        tid: wait.tid,
        waits_on: wait.uaddr,
        held_by: owner.tid,
        owner_source: owner.source,
        stack: wait.stack,
    }
}

fn comm(pid: u32) -> String {
    format!("proc{pid}")
}

fn detail(finding: &Finding) -> &WaiterDetail {
    finding.waiter.as_ref().expect("a waiter finding")
}

fn verdicts(findings: &[Finding]) -> Vec<Verdict> {
    findings.iter().map(|f| detail(f).verdict).collect()
}

/// A leak parking a new thread every 200 ms from t=0, all from stack 1, thread i on
/// `uaddr(i)`: the waits in flight at `now_ns`, young ones included.
fn leak(now_ns: u64, uaddr: impl Fn(u32) -> u64) -> Vec<Wait> {
    (0u32..)
        .map(|i| (i, u64::from(i) * 200 * MS))
        .take_while(|&(_, since)| since <= now_ns)
        .map(|(i, since)| wait(P, 1000 + i, uaddr(i), since, 1))
        .collect()
}

/// `count` threads of stack 1 blocked since t=0 on one condvar word, tids from 1.
fn pool(count: u32) -> Vec<Wait> {
    (1..=count).map(|tid| wait(P, tid, A, 0, 1)).collect()
}

/// Scans at 10 s, 11 s, … with the blocked counts given; waiter `tid` became blocked (passed
/// the default 5 s min-wait) at the first scan that counts it.
fn scan_counts(waiters: &mut Waiters, counts: &[u32]) -> u64 {
    let mut now = 10 * SEC;
    let mut since: Vec<u64> = Vec::new();
    for (k, &count) in counts.iter().enumerate() {
        now = (10 + k as u64) * SEC;
        while since.len() < count as usize {
            since.push(now - 5 * SEC);
        }
        let waits: Vec<Wait> = (1..=count)
            .map(|tid| wait(P, tid, A, since[tid as usize - 1], 1))
            .collect();
        waiters.observe(now, &waits);
    }
    now
}

#[test]
fn condvar_leak_adding_five_waiters_a_scan_is_growing() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    for s in 10..=20 {
        waiters.observe(s * SEC, &leak(s * SEC, |_| A));
    }
    let findings = waiters.findings(20 * SEC, &comm);
    // Blocked at 20 s: the threads parked by 15 s, one every 200 ms from 0.
    let expected = Finding {
        pid: P,
        comm: "proc100".to_string(),
        resource: Resource::Waiter,
        kind: None,
        stack: stack(P, 1),
        outstanding: 76,
        created: 76,
        oldest_age_ns: 20 * SEC,
        rate_per_s: 5.0,
        sample_path: None,
        exited: false,
        leak: None,
        goroutine: None,
        waiter: Some(WaiterDetail {
            kind: WaitKind::Futex,
            futex_address: A,
            futex_addresses: 1,
            waiting_tids: (1000..1064).collect(),
            verdict: Verdict::Growing,
            cycle: Vec::new(),
        }),
    };
    assert_eq!(findings, vec![expected]);
}

#[test]
fn leak_of_threads_each_on_its_own_futex_is_one_growing_group() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    let per_thread = |i: u32| B + u64::from(i) * 64;
    for s in 10..=20 {
        waiters.observe(s * SEC, &leak(s * SEC, per_thread));
    }
    let findings = waiters.findings(20 * SEC, &comm);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].outstanding, 76);
    assert_eq!(findings[0].rate_per_s, 5.0);
    let detail = detail(&findings[0]);
    assert_eq!(detail.verdict, Verdict::Growing);
    assert_eq!(detail.futex_addresses, 76);
    // Every word is waited on once: the tie goes to the lowest.
    assert_eq!(detail.futex_address, B);
}

#[test]
fn fixed_idle_pool_is_stuck_and_counted_once() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    for s in 10..=70 {
        waiters.observe(s * SEC, &pool(8));
    }
    let findings = waiters.findings(70 * SEC, &comm);
    assert_eq!(findings.len(), 1);
    assert_eq!(verdicts(&findings), [Verdict::Stuck]);
    assert_eq!(findings[0].outstanding, 8);
    assert_eq!(findings[0].created, 8);
    assert_eq!(findings[0].rate_per_s, 0.0);
    assert_eq!(findings[0].oldest_age_ns, 70 * SEC);
}

#[test]
fn churn_of_short_waits_yields_no_finding_and_keeps_nothing() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    let mut tid = 1;
    for s in 10..=60 {
        let now = s * SEC;
        let mut waits = Vec::new();
        for i in 0..1000u64 {
            // Ages from 0 to just under min_wait, on a few locks and stacks.
            let since = now - (i * 5) * MS - 4;
            waits.push(wait(P, tid, A + (i % 7) * 8, since, (i % 3) as u32));
            tid += 1;
        }
        // Even a cycle among them: it has not lasted, so it is no deadlock.
        waits.push(held_by(
            wait(P, tid, B, now - MS, 9),
            tid + 1,
            OwnerSource::PiFutexWord,
        ));
        waits.push(held_by(
            wait(P, tid + 1, C, now - MS, 9),
            tid,
            OwnerSource::PiFutexWord,
        ));
        tid += 2;
        waiters.observe(now, &waits);
    }
    assert!(waiters.findings(60 * SEC, &comm).is_empty());
    assert!(waiters.blocked_per_process().is_empty());
    assert!(waiters.groups.is_empty());
    assert_eq!(waiters.counters().deadlocks_found, 0);
}

#[test]
fn wait_exactly_min_wait_old_is_blocked() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(
        10 * SEC,
        &[wait(P, 1, A, 5 * SEC, 1), wait(P, 2, A, 5 * SEC + 1, 1)],
    );
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(detail(&findings[0]).waiting_tids, [1]);
}

#[test]
fn ab_ba_is_a_deadlock_with_the_cycle_in_order_and_owner_sources_kept() {
    // t11 holds B and waits on A; t12 holds A and waits on B.
    let t11 = held_by(wait(P, 11, A, 0, 1), 12, OwnerSource::GlibcMutexOwner);
    let t12 = held_by(wait(P, 12, B, 0, 2), 11, OwnerSource::PiFutexWord);
    let waits = [t12.clone(), t11.clone()];
    assert_eq!(deadlock_cycles(&waits), [vec![link(&t11), link(&t12)]]);

    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &waits);
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(verdicts(&findings), [Verdict::Deadlock, Verdict::Deadlock]);
    // Each group's cycle starts at its own waiter.
    assert_eq!(findings[0].stack, stack(P, 1));
    assert_eq!(detail(&findings[0]).cycle, [link(&t11), link(&t12)]);
    assert_eq!(findings[1].stack, stack(P, 2));
    assert_eq!(detail(&findings[1]).cycle, [link(&t12), link(&t11)]);
    assert_eq!(
        detail(&findings[0]).cycle[0].owner_source,
        OwnerSource::GlibcMutexOwner
    );
    assert_eq!(
        detail(&findings[1]).cycle[0].owner_source,
        OwnerSource::PiFutexWord
    );
    assert_eq!(waiters.counters().deadlocks_found, 1);
    // The same deadlock in the next scans is not a new one.
    waiters.observe(11 * SEC, &waits);
    waiters.observe(12 * SEC, &waits);
    assert_eq!(waiters.counters().deadlocks_found, 1);
}

#[test]
fn three_cycle_starts_at_its_smallest_tid_and_spares_a_thread_queued_behind_it() {
    // 5 → 3 → 9 → 5, all from one stack; 20 waits on a lock 3 holds but holds nothing.
    let t5 = held_by(wait(P, 5, A, 0, 1), 3, OwnerSource::GlibcMutexOwner);
    let t3 = held_by(wait(P, 3, B, 0, 1), 9, OwnerSource::GlibcMutexOwner);
    let t9 = held_by(wait(P, 9, C, 0, 1), 5, OwnerSource::GlibcMutexOwner);
    let t20 = held_by(wait(P, 20, B, 0, 2), 3, OwnerSource::GlibcMutexOwner);
    let waits = [t20, t5.clone(), t9.clone(), t3.clone()];
    let cycle = vec![link(&t3), link(&t9), link(&t5)];
    assert_eq!(deadlock_cycles(&waits), slice::from_ref(&cycle));

    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &waits);
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(verdicts(&findings), [Verdict::Deadlock, Verdict::Stuck]);
    assert_eq!(findings[0].outstanding, 3);
    assert_eq!(detail(&findings[0]).cycle, cycle);
    assert_eq!(detail(&findings[0]).futex_addresses, 3);
    assert_eq!(detail(&findings[1]).waiting_tids, [20]);
    assert!(detail(&findings[1]).cycle.is_empty());
}

#[test]
fn chain_that_does_not_close_is_no_deadlock() {
    let source = OwnerSource::GlibcMutexOwner;
    // 1 → 2, and 2 is not waiting.
    assert!(deadlock_cycles(&[held_by(wait(P, 1, A, 0, 1), 2, source)]).is_empty());
    // 1 → 2 → 3, and 3 waits on a word with no known owner (a condvar).
    let chain = [
        held_by(wait(P, 1, A, 0, 1), 2, source),
        held_by(wait(P, 2, B, 0, 1), 3, source),
        wait(P, 3, C, 0, 1),
    ];
    assert!(deadlock_cycles(&chain).is_empty());
    // 1 → 2 → 1, but 2 only just began waiting: not a blocked waiter, so not yet a deadlock.
    let young = [
        held_by(wait(P, 1, A, 0, 1), 2, source),
        held_by(wait(P, 2, B, 10 * SEC - MS, 2), 1, source),
    ];
    assert_eq!(deadlock_cycles(&young).len(), 1);
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &young);
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(verdicts(&findings), [Verdict::Stuck]);
    assert_eq!(waiters.counters().deadlocks_found, 0);
}

#[test]
fn owner_in_another_process_closes_no_cycle() {
    let source = OwnerSource::PiFutexWord;
    // Tids 1 and 2 each "own" the other's lock, but live in different processes.
    let waits = [
        held_by(wait(P, 1, A, 0, 1), 2, source),
        held_by(wait(Q, 2, B, 0, 1), 1, source),
    ];
    assert!(deadlock_cycles(&waits).is_empty());
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &waits);
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(verdicts(&findings), [Verdict::Stuck, Verdict::Stuck]);
}

#[test]
fn relock_of_own_mutex_is_a_deadlock_of_one() {
    let t7 = held_by(wait(P, 7, A, 0, 4), 7, OwnerSource::GlibcMutexOwner);
    assert_eq!(deadlock_cycles(slice::from_ref(&t7)), [vec![link(&t7)]]);
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, slice::from_ref(&t7));
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(verdicts(&findings), [Verdict::Deadlock]);
    assert_eq!(detail(&findings[0]).cycle, [link(&t7)]);
    assert_eq!(waiters.counters().deadlocks_found, 1);
}

#[test]
fn separate_cycles_are_each_found_once_by_process_then_smallest_tid() {
    let source = OwnerSource::PiFutexWord;
    let p40 = held_by(wait(P, 40, A, 0, 1), 41, source);
    let p41 = held_by(wait(P, 41, B, 0, 1), 40, source);
    let p30 = held_by(wait(P, 30, C, 0, 2), 30, source);
    let q1 = held_by(wait(Q, 1, A, 0, 1), 2, source);
    let q2 = held_by(wait(Q, 2, A + 8, 0, 1), 1, source);
    let waits = [
        q2.clone(),
        p41.clone(),
        q1.clone(),
        p40.clone(),
        p30.clone(),
    ];
    let expected = [
        vec![link(&p30)],
        vec![link(&p40), link(&p41)],
        vec![link(&q1), link(&q2)],
    ];
    assert_eq!(deadlock_cycles(&waits), expected);
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &waits);
    assert_eq!(waiters.counters().deadlocks_found, 3);
}

#[test]
fn woken_waiters_leave_the_next_findings_and_an_idle_group_expires_after_a_window() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &pool(3));
    waiters.observe(11 * SEC, &[wait(P, 2, A, 0, 1)]);
    let findings = waiters.findings(11 * SEC, &comm);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].outstanding, 1);
    assert_eq!(findings[0].created, 3);
    assert_eq!(detail(&findings[0]).waiting_tids, [2]);

    waiters.observe(12 * SEC, &[]);
    assert!(waiters.findings(12 * SEC, &comm).is_empty());
    assert!(waiters.blocked_per_process().is_empty());
    // Kept while its history can still move a rate: a whole window after its last waiter.
    waiters.observe(70 * SEC, &[]);
    assert_eq!(waiters.groups.len(), 1);
    waiters.observe(71 * SEC, &[]);
    assert!(waiters.groups.is_empty());
    // Back again: a new group, counted from scratch.
    waiters.observe(80 * SEC, &[wait(P, 9, A, 70 * SEC, 1)]);
    let findings = waiters.findings(80 * SEC, &comm);
    assert_eq!(findings[0].created, 1);
    assert_eq!(findings[0].rate_per_s, 0.0);
}

#[test]
fn thread_that_waits_again_is_created_again_but_a_long_wait_once() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &[wait(P, 1, A, 0, 1)]);
    waiters.observe(11 * SEC, &[wait(P, 1, A, 0, 1)]);
    waiters.observe(20 * SEC, &[wait(P, 1, A, 12 * SEC, 1)]);
    let findings = waiters.findings(20 * SEC, &comm);
    assert_eq!(findings[0].outstanding, 1);
    assert_eq!(findings[0].created, 2);
    assert_eq!(findings[0].oldest_age_ns, 8 * SEC);
}

#[test]
fn rate_and_growth_are_judged_over_the_window_only() {
    let limits = WaiterLimits {
        window_ns: 10 * SEC,
        ..WaiterLimits::default()
    };
    // +2 a scan for ten scans, then flat at 21 for twenty.
    let counts: Vec<u32> = (0..=30).map(|k| 2 * k.min(10) + 1).collect();

    let mut waiters = Waiters::new(limits.clone());
    let now = scan_counts(&mut waiters, &counts[..=10]);
    let findings = waiters.findings(now, &comm);
    assert_eq!(findings[0].rate_per_s, 2.0);
    assert_eq!(verdicts(&findings), [Verdict::Growing]);

    let mut waiters = Waiters::new(limits);
    let now = scan_counts(&mut waiters, &counts);
    let findings = waiters.findings(now, &comm);
    // The growth is older than the window: the samples left are 11 flat ones.
    assert_eq!(
        waiters.groups.values().next().map(|g| g.samples.len()),
        Some(11)
    );
    assert_eq!(findings[0].rate_per_s, 0.0);
    assert_eq!(findings[0].created, 21);
    assert_eq!(verdicts(&findings), [Verdict::Stuck]);
}

#[test]
fn growing_needs_three_samples_a_rising_slope_and_two_more_waiters() {
    let verdict_after = |counts: &[u32]| {
        let mut waiters = Waiters::new(WaiterLimits::default());
        let now = scan_counts(&mut waiters, counts);
        verdicts(&waiters.findings(now, &comm))
    };
    assert_eq!(verdict_after(&[3, 8, 13]), [Verdict::Growing]);
    assert_eq!(verdict_after(&[7, 8, 9]), [Verdict::Growing]);
    // Two samples always make a line.
    assert_eq!(verdict_after(&[3, 8]), [Verdict::Stuck]);
    // One more: a pool thread that just went idle.
    assert_eq!(verdict_after(&[7, 8, 8]), [Verdict::Stuck]);
    // A pool that drained and refilled: up by two overall, but trending down.
    assert_eq!(verdict_after(&[10, 12, 2, 2, 12]), [Verdict::Stuck]);
    assert_eq!(verdict_after(&[9, 8, 7]), [Verdict::Stuck]);
    // A scan with none of them blocked still counts as a sample.
    assert_eq!(verdict_after(&[1, 0, 2, 3]), [Verdict::Growing]);
}

#[test]
fn a_pool_idling_across_one_scan_is_not_growth() {
    // Six workers went idle within a few ms of each other, straddling the 11 s scan's min-wait
    // cut-off: the counts read 3, 6, 6, 6 though nothing grows.
    let mut waiters = Waiters::new(WaiterLimits::default());
    let since = |tid: u32| {
        if tid <= 3 {
            5 * SEC + 990 * MS
        } else {
            6 * SEC + 10 * MS
        }
    };
    for (s, count) in [(11u64, 3u32), (12, 6), (13, 6), (14, 6)] {
        let waits: Vec<Wait> = (1..=count)
            .map(|tid| wait(P, tid, A, since(tid), 1))
            .collect();
        waiters.observe(s * SEC, &waits);
    }
    assert_eq!(
        verdicts(&waiters.findings(14 * SEC, &comm)),
        [Verdict::Stuck]
    );
}

#[test]
fn findings_rank_deadlock_then_growing_then_stuck_then_count() {
    let source = OwnerSource::GlibcMutexOwner;
    let mut waiters = Waiters::new(WaiterLimits::default());
    for s in 10..=12u32 {
        let now = u64::from(s) * SEC;
        let mut waits = Vec::new();
        // Stack 1: a pool of 10; stack 2: a pool of 20; stack 3: 3, 5, 7 (growing).
        waits.extend((1..=10).map(|tid| wait(P, tid, A, 0, 1)));
        waits.extend((101..=120).map(|tid| wait(P, tid, A, 0, 2)));
        let first_scan = |tid: u32| match tid {
            ..=203 => 10,
            204..=205 => 11,
            _ => 12,
        };
        waits.extend(
            (201..=200 + 2 * s - 17).map(|tid| wait(P, tid, B, (first_scan(tid) - 5) * SEC, 3)),
        );
        // Stack 4: an AB-BA pair.
        waits.push(held_by(wait(P, 301, A + 8, 0, 4), 302, source));
        waits.push(held_by(wait(P, 302, B + 8, 0, 4), 301, source));
        waiters.observe(now, &waits);
    }
    let findings = waiters.findings(12 * SEC, &comm);
    let order: Vec<_> = findings
        .iter()
        .map(|f| (detail(f).verdict, f.outstanding))
        .collect();
    assert_eq!(
        order,
        [
            (Verdict::Deadlock, 2),
            (Verdict::Growing, 7),
            (Verdict::Stuck, 20),
            (Verdict::Stuck, 10),
        ]
    );
}

#[test]
fn most_common_address_and_kind_win_ties_to_the_lowest() {
    let waitv = |w: Wait| Wait {
        kind: WaitKind::FutexWaitv,
        ..w
    };
    let mut waiters = Waiters::new(WaiterLimits::default());
    let waits = [
        waitv(wait(P, 1, B, 0, 1)),
        waitv(wait(P, 2, B, 0, 1)),
        wait(P, 3, A, 0, 1),
        wait(P, 4, A, 0, 2),
        waitv(wait(P, 5, B, 0, 2)),
    ];
    waiters.observe(10 * SEC, &waits);
    let findings = waiters.findings(10 * SEC, &comm);
    let majority = detail(&findings[0]);
    assert_eq!(findings[0].stack, stack(P, 1));
    assert_eq!((majority.futex_address, majority.futex_addresses), (B, 2));
    assert_eq!(majority.kind, WaitKind::FutexWaitv);
    let tie = detail(&findings[1]);
    assert_eq!((tie.futex_address, tie.futex_addresses), (A, 2));
    assert_eq!(tie.kind, WaitKind::Futex);
}

#[test]
fn waiters_without_a_stack_are_grouped_per_process() {
    let stackless = |pid, tid| Wait {
        stack: None,
        ..wait(pid, tid, A, 0, 0)
    };
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(
        10 * SEC,
        &[stackless(P, 1), stackless(P, 2), stackless(Q, 3)],
    );
    let findings = waiters.findings(10 * SEC, &comm);
    let groups: Vec<_> = findings
        .iter()
        .map(|f| (f.pid, f.comm.as_str(), f.stack, f.outstanding))
        .collect();
    assert_eq!(groups, [(P, "proc100", None, 2), (Q, "proc200", None, 1)]);
}

#[test]
fn tid_listed_twice_in_a_scan_is_one_waiter() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(10 * SEC, &[wait(P, 1, A, 0, 1), wait(P, 1, A, 0, 1)]);
    assert_eq!(waiters.findings(10 * SEC, &comm)[0].outstanding, 1);
    assert_eq!(waiters.blocked_per_process(), BTreeMap::from([(P, 1)]));
}

#[test]
fn group_bound_turns_new_groups_away_and_counts_them() {
    let limits = WaiterLimits {
        max_groups: 2,
        ..WaiterLimits::default()
    };
    let mut waiters = Waiters::new(limits);
    let waits = [
        wait(P, 1, A, 0, 1),
        wait(P, 2, A, 0, 2),
        wait(P, 3, A, 0, 3),
        wait(P, 4, A, 0, 3),
    ];
    waiters.observe(10 * SEC, &waits);
    waiters.observe(11 * SEC, &waits);
    let stacks: Vec<_> = waiters
        .findings(11 * SEC, &comm)
        .iter()
        .map(|f| f.stack)
        .collect();
    assert_eq!(stacks, [stack(P, 1), stack(P, 2)]);
    let expected = WaiterCounters {
        scans: 2,
        dropped_groups: 2,
        untracked_waiters: 2,
        deadlocks_found: 0,
    };
    assert_eq!(waiters.counters(), expected);
    // The per-process count still sees every blocked waiter.
    assert_eq!(waiters.blocked_per_process(), BTreeMap::from([(P, 4)]));

    // Once stack 1's group expires, stack 3 gets its place.
    waiters.observe(12 * SEC, &waits[1..]);
    waiters.observe(72 * SEC, &waits[1..]);
    assert_eq!(waiters.groups.len(), 2);
    assert_eq!(waiters.counters().untracked_waiters, 0);
    let stacks: Vec<_> = waiters
        .findings(72 * SEC, &comm)
        .iter()
        .map(|f| f.stack)
        .collect();
    assert_eq!(stacks, [stack(P, 3), stack(P, 2)]);
}

#[test]
fn listed_tids_and_kept_samples_are_capped() {
    let limits = WaiterLimits {
        max_tids_listed: 3,
        max_samples: 4,
        ..WaiterLimits::default()
    };
    let mut waiters = Waiters::new(limits);
    for s in 10..20 {
        waiters.observe(s * SEC, &pool(5));
    }
    let findings = waiters.findings(19 * SEC, &comm);
    assert_eq!(findings[0].outstanding, 5);
    assert_eq!(detail(&findings[0]).waiting_tids, [1, 2, 3]);
    assert_eq!(
        waiters.groups.values().next().map(|g| g.samples.len()),
        Some(4)
    );
}

#[test]
fn forgotten_process_leaves_findings_and_per_process_counts() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    let t1 = held_by(wait(P, 1, A, 0, 1), 1, OwnerSource::PiFutexWord);
    waiters.observe(10 * SEC, &[t1, wait(Q, 2, A, 0, 1)]);
    waiters.forget_process(P);
    let findings = waiters.findings(10 * SEC, &comm);
    assert_eq!(findings.iter().map(|f| f.pid).collect::<Vec<_>>(), [Q]);
    assert_eq!(waiters.blocked_per_process(), BTreeMap::from([(Q, 1)]));
    assert_eq!(waiters.groups.len(), 1);
    assert!(waiters.deadlocks.is_empty());
    waiters.observe(11 * SEC, &[wait(Q, 2, A, 0, 1)]);
    assert_eq!(waiters.findings(11 * SEC, &comm).len(), 1);
}

#[test]
fn oldest_age_is_taken_at_the_findings_time() {
    let mut waiters = Waiters::new(WaiterLimits::default());
    waiters.observe(
        10 * SEC,
        &[wait(P, 1, A, 2 * SEC, 1), wait(P, 2, A, 3 * SEC, 1)],
    );
    assert_eq!(waiters.findings(15 * SEC, &comm)[0].oldest_age_ns, 13 * SEC);
}
