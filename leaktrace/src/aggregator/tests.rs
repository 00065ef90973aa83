//! Synthetic event sequences through the aggregator; no kernel, no root.

use std::collections::{BTreeMap, HashMap};

use super::{
    process::{age_percentile, Process},
    Aggregator, AggregatorCounters, Limits,
};
use crate::{
    event::{Event, FdPair, Goroutine, Path, What},
    model::{FdKind, Finding, LeakDetail, Resource, Snapshot, StackRef, Trend},
};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const P: u32 = 100;

fn ev(ts_ns: u64, pid: u32, tid: u32, what: What) -> Event {
    Event {
        ts_ns,
        pid,
        tid,
        what,
    }
}

fn open(ts_ns: u64, pid: u32, fd: i32, kind: FdKind, stack: Option<u32>) -> Event {
    let what = What::FdOpen {
        fds: FdPair::One(fd),
        kind,
        stack,
        path: None,
    };
    ev(ts_ns, pid, pid, what)
}

fn open_path(ts_ns: u64, pid: u32, fd: i32, stack: u32, text: &str, truncated: bool) -> Event {
    let what = What::FdOpen {
        fds: FdPair::One(fd),
        kind: FdKind::File,
        stack: Some(stack),
        path: Some(Path {
            text: text.to_string(),
            truncated,
        }),
    };
    ev(ts_ns, pid, pid, what)
}

fn pipe(ts_ns: u64, pid: u32, read: i32, write: i32, stack: u32) -> Event {
    let what = What::FdOpen {
        fds: FdPair::Two(read, write),
        kind: FdKind::Pipe,
        stack: Some(stack),
        path: None,
    };
    ev(ts_ns, pid, pid, what)
}

fn close(ts_ns: u64, pid: u32, fd: i32) -> Event {
    ev(ts_ns, pid, pid, What::FdClose { fd })
}

fn close_range(ts_ns: u64, pid: u32, first: u32, last: u32) -> Event {
    ev(ts_ns, pid, pid, What::FdCloseRange { first, last })
}

fn dup(ts_ns: u64, pid: u32, fd: i32, source: i32, stack: u32) -> Event {
    let what = What::FdDup {
        fd,
        source,
        stack: Some(stack),
    };
    ev(ts_ns, pid, pid, what)
}

fn spawn_thread(ts_ns: u64, pid: u32, child_tid: u32, stack: u32) -> Event {
    let what = What::TaskNew {
        child_tid,
        thread: true,
        stack: Some(stack),
    };
    ev(ts_ns, pid, pid, what)
}

fn fork(ts_ns: u64, pid: u32, child: u32, stack: u32) -> Event {
    let what = What::TaskNew {
        child_tid: child,
        thread: false,
        stack: Some(stack),
    };
    ev(ts_ns, pid, pid, what)
}

fn exit(ts_ns: u64, pid: u32, tid: u32, group_dead: Option<bool>) -> Event {
    ev(ts_ns, pid, tid, What::ThreadExit { group_dead })
}

fn exec(ts_ns: u64, pid: u32, tid: u32) -> Event {
    ev(ts_ns, pid, tid, What::Exec)
}

fn snap(pid: u32, started_ns: u64, tids: &[u32], fds: &[i32]) -> Snapshot {
    Snapshot {
        pid,
        comm: "app".to_string(),
        started_ns,
        tids: tids.to_vec(),
        fds: fds.iter().map(|&fd| (fd, FdKind::File)).collect(),
    }
}

fn stack(pid: u32, exec_gen: u32, id: u32) -> StackRef {
    StackRef { pid, exec_gen, id }
}

/// An aggregator tracking `P` with one thread and stdin/out/err from before tracing.
fn seeded(limits: Limits) -> Aggregator {
    let mut agg = Aggregator::new(limits);
    agg.seed(&snap(P, 0, &[P], &[0, 1, 2]));
    agg
}

fn run(agg: &mut Aggregator, events: &[Event]) {
    for e in events {
        agg.apply(e);
    }
    check(agg);
}

fn process(agg: &Aggregator, pid: u32) -> &Process {
    &agg.live.processes[&pid]
}

/// The finding of one group, if it is one.
fn finding(
    findings: &[Finding],
    pid: u32,
    kind: Option<FdKind>,
    stack: Option<StackRef>,
) -> Option<Finding> {
    findings
        .iter()
        .find(|f| f.pid == pid && f.kind == kind && f.stack == stack)
        .cloned()
}

/// The verdict every thread and fd finding carries.
fn leak(f: &Finding) -> &LeakDetail {
    f.leak
        .as_ref()
        .expect("thread and fd findings carry a verdict")
}

fn trend(f: &Finding) -> Trend {
    leak(f).trend
}

/// Opens `count` fds numbered from `*fd` at `ts_ns` from stack `stack_id`.
fn open_many(agg: &mut Aggregator, ts_ns: u64, fd: &mut i32, count: usize, stack_id: u32) {
    let opens: Vec<Event> = (0..count)
        .map(|k| open(ts_ns, P, *fd + k as i32, FdKind::File, Some(stack_id)))
        .collect();
    *fd += count as i32;
    run(agg, &opens);
}

/// Every group's outstanding count is exactly the objects that point at it, and no process
/// holds more than its bound.
fn check(agg: &Aggregator) {
    for (pid, p) in &agg.live.processes {
        assert_eq!(*pid, p.pid);
        let objects = p.threads.len() + p.fds.len() + p.goroutines.len();
        assert!(objects <= agg.limits.max_objects_per_process);
        let mut counted: HashMap<u32, u64> = HashMap::new();
        let slots = p.threads.values().map(|t| t.group);
        let slots = slots.chain(p.fds.values().map(|fd| fd.group));
        for slot in slots
            .chain(p.goroutines.values().map(|g| Some(g.group)))
            .flatten()
        {
            *counted.entry(slot).or_default() += 1;
        }
        for (slot, group) in p.groups.iter() {
            let objects = counted.remove(&slot).unwrap_or(0);
            assert_eq!(
                group.outstanding, objects,
                "pid {pid} group {:?}",
                group.key
            );
            assert!(group.created >= group.outstanding, "{:?}", group.key);
            assert!(
                group.created >= group.outstanding + group.destroyed,
                "{:?}",
                group.key
            );
        }
        assert!(counted.is_empty(), "objects in freed groups: {counted:?}");
        for fd in p.fds.values() {
            if let Some(key) = fd.group.and_then(|slot| p.groups.key(slot)) {
                assert_eq!(key.kind, Some(fd.kind));
            }
        }
    }
}

// ---- fds ----

#[test]
fn open_then_close_leaves_no_finding() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[open(SEC, P, 3, FdKind::File, Some(7)), close(2 * SEC, P, 3)],
    );
    assert!(agg.findings(100 * SEC, 0).is_empty());
    assert_eq!(agg.counters(), &AggregatorCounters::default());
}

#[test]
fn unclosed_opens_from_one_stack_form_one_finding() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(7)),
            open(2 * SEC, P, 4, FdKind::File, Some(7)),
            open(3 * SEC, P, 5, FdKind::File, Some(7)),
            close(4 * SEC, P, 4),
        ],
    );
    let findings = agg.findings(10 * SEC, 0);
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!(
        (f.pid, f.comm.as_str(), f.resource, f.kind),
        (P, "app", Resource::Fd, Some(FdKind::File))
    );
    assert_eq!(f.stack, Some(stack(P, 0, 7)));
    assert_eq!((f.outstanding, f.created), (2, 3));
    assert_eq!(f.oldest_age_ns, 9 * SEC);
    assert!(!f.exited);
}

#[test]
fn pipe_counts_both_ends_in_one_group() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[pipe(SEC, P, 3, 4, 9)]);
    let f = agg.findings(2 * SEC, 0);
    assert_eq!((f.len(), f[0].outstanding, f[0].created), (1, 2, 2));
    assert_eq!(f[0].kind, Some(FdKind::Pipe));
    run(&mut agg, &[close(2 * SEC, P, 3)]);
    assert_eq!(agg.findings(3 * SEC, 0)[0].outstanding, 1);
    run(&mut agg, &[close(3 * SEC, P, 4)]);
    // Drained: only reported as released.
    let f = agg.findings(4 * SEC, 0);
    assert_eq!(
        (f.len(), f[0].outstanding, trend(&f[0])),
        (1, 0, Trend::Released)
    );
}

#[test]
fn dup_takes_the_source_kind_and_path_with_its_own_stack() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open_path(SEC, P, 3, 1, "/var/log/app.log", false),
            dup(2 * SEC, P, 10, 3, 2),
        ],
    );
    let findings = agg.findings(3 * SEC, 0);
    let original = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    let copy = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 2))).unwrap();
    assert_eq!((original.outstanding, copy.outstanding), (1, 1));
    assert_eq!(copy.sample_path.as_deref(), Some("/var/log/app.log"));
    assert_eq!(copy.oldest_age_ns, SEC);
}

#[test]
fn dup2_onto_an_open_fd_closes_it_silently() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(SEC, P, 4, FdKind::Socket, Some(2)),
            dup(2 * SEC, P, 4, 3, 3),
        ],
    );
    let findings = agg.findings(3 * SEC, 0);
    assert_eq!(findings.len(), 3);
    let gone = finding(&findings, P, Some(FdKind::Socket), Some(stack(P, 0, 2))).unwrap();
    assert_eq!(
        (gone.outstanding, trend(&gone), leak(&gone).destroyed),
        (0, Trend::Released, 1)
    );
    let onto = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 3))).unwrap();
    assert_eq!(onto.outstanding, 1);
    assert_eq!(process(&agg, P).fds[&4].kind, FdKind::File);
    assert_eq!(agg.counters(), &AggregatorCounters::default());
}

#[test]
fn dup2_of_an_fd_onto_itself_changes_nothing() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::Socket, Some(1)),
            dup(2 * SEC, P, 3, 3, 2),
        ],
    );
    let findings = agg.findings(3 * SEC, 0);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].stack, Some(stack(P, 0, 1)));
    assert_eq!(findings[0].oldest_age_ns, 2 * SEC);
    // The stack of a no-op is not even announced.
    assert_eq!(agg.take_new_stacks(), vec![stack(P, 0, 1)]);
}

#[test]
fn dup_of_an_unknown_source_is_kind_other() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[dup(SEC, P, 10, 50, 2)]);
    let f = agg.findings(2 * SEC, 0);
    assert_eq!(f[0].kind, Some(FdKind::Other));
    assert_eq!(f[0].sample_path, None);
}

#[test]
fn close_range_closes_only_the_tracked_fds_inside_it() {
    let mut agg = seeded(Limits::default());
    let opens: Vec<Event> = (3..=9)
        .map(|fd| open(SEC, P, fd, FdKind::File, Some(1)))
        .collect();
    run(&mut agg, &opens);
    run(&mut agg, &[close_range(2 * SEC, P, 4, 6)]);
    let mut left: Vec<i32> = process(&agg, P).fds.keys().copied().collect();
    left.sort_unstable();
    assert_eq!(left, [0, 1, 2, 3, 7, 8, 9]);
    assert_eq!(agg.findings(3 * SEC, 0)[0].outstanding, 4);
    assert_eq!(agg.counters().untracked_closes, 0);
}

#[test]
fn close_range_to_u32_max_closes_every_fd_from_first() {
    let mut agg = seeded(Limits::default());
    let opens: Vec<Event> = [3, 4, 1000, i32::MAX]
        .iter()
        .map(|&fd| open(SEC, P, fd, FdKind::File, Some(1)))
        .collect();
    run(&mut agg, &opens);
    run(&mut agg, &[close_range(2 * SEC, P, 3, u32::MAX)]);
    let mut left: Vec<i32> = process(&agg, P).fds.keys().copied().collect();
    left.sort_unstable();
    assert_eq!(left, [0, 1, 2]);
    let f = agg.findings(3 * SEC, 0);
    assert_eq!(
        (
            f.len(),
            f[0].outstanding,
            trend(&f[0]),
            leak(&f[0]).destroyed
        ),
        (1, 0, Trend::Released, 4)
    );
}

#[test]
fn close_range_narrower_than_the_fd_table_walks_the_range() {
    let mut agg = seeded(Limits::default());
    let opens: Vec<Event> = (3..200)
        .map(|fd| open(SEC, P, fd, FdKind::File, Some(1)))
        .collect();
    run(&mut agg, &opens);
    run(
        &mut agg,
        &[
            close_range(2 * SEC, P, 50, 50),
            close_range(2 * SEC, P, 198, 199),
        ],
    );
    let fds = &process(&agg, P).fds;
    assert!(!fds.contains_key(&50) && !fds.contains_key(&198));
    assert!(fds.contains_key(&49) && fds.contains_key(&51) && fds.contains_key(&197));
    assert_eq!(agg.findings(3 * SEC, 0)[0].outstanding, 197 - 3);
}

#[test]
fn close_of_an_unknown_fd_is_counted_not_a_mismatch() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[close(SEC, P, 42), close(SEC, P, 43)]);
    assert_eq!(agg.counters().untracked_closes, 2);
    assert_eq!(agg.counters().resync_mismatches, 0);
}

#[test]
fn reopening_a_traced_fd_counts_the_missed_close() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(2 * SEC, P, 3, FdKind::Socket, Some(2)),
        ],
    );
    assert_eq!(agg.counters().resync_mismatches, 1);
    let findings = agg.findings(3 * SEC, 0);
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0].stack, Some(stack(P, 0, 2)));
    assert_eq!(
        (
            findings[1].stack,
            findings[1].outstanding,
            trend(&findings[1])
        ),
        (Some(stack(P, 0, 1)), 0, Trend::Released)
    );
}

#[test]
fn open_of_an_fd_the_seed_snapshot_already_showed_is_no_mismatch() {
    // The runtime adds the target, then reads /proc: an open in between is in both.
    let mut agg = Aggregator::new(Limits::default());
    agg.seed(&snap(P, 5 * SEC, &[P], &[0, 1, 2, 3]));
    run(&mut agg, &[open(4 * SEC, P, 3, FdKind::File, Some(1))]);
    assert_eq!(agg.counters().resync_mismatches, 0);
    assert_eq!(agg.findings(6 * SEC, 0)[0].outstanding, 1);
    assert_eq!(agg.processes()[0].preexisting_fds, 3);
}

#[test]
fn sample_path_comes_from_an_outstanding_fd_and_marks_truncation() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open_path(SEC, P, 3, 1, "/tmp/first", false),
            open_path(2 * SEC, P, 4, 1, "/tmp/second", false),
            open_path(3 * SEC, P, 5, 2, "/very/long/pa", true),
            close(4 * SEC, P, 3),
        ],
    );
    let findings = agg.findings(5 * SEC, 0);
    let one = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!(one.sample_path.as_deref(), Some("/tmp/second"));
    let cut = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 2))).unwrap();
    assert_eq!(cut.sample_path.as_deref(), Some("/very/long/pa…"));
}

#[test]
fn opens_of_the_same_path_share_one_copy() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open_path(SEC, P, 3, 1, "/etc/hosts", false),
            open_path(SEC, P, 4, 1, "/etc/hosts", false),
        ],
    );
    let fds = &process(&agg, P).fds;
    let (a, b) = (
        fds[&3].path.as_ref().unwrap(),
        fds[&4].path.as_ref().unwrap(),
    );
    assert!(a.shares_text_with(b));
}

// ---- threads ----

#[test]
fn threads_created_and_exited_balance() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            spawn_thread(SEC, P, 101, 3),
            spawn_thread(SEC, P, 102, 3),
            exit(2 * SEC, P, 101, Some(false)),
        ],
    );
    let f = agg.findings(3 * SEC, 0);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].resource, f[0].kind), (Resource::Thread, None));
    assert_eq!(f[0].stack, Some(stack(P, 0, 3)));
    assert_eq!((f[0].outstanding, f[0].created), (1, 2));
    run(&mut agg, &[exit(3 * SEC, P, 102, Some(false))]);
    let f = agg.findings(4 * SEC, 0);
    assert_eq!(
        (
            f.len(),
            f[0].outstanding,
            trend(&f[0]),
            leak(&f[0]).destroyed
        ),
        (1, 0, Trend::Released, 2)
    );
    assert!(agg.is_live(P));
    assert_eq!(agg.processes()[0].threads, 1);
}

#[test]
fn thread_created_over_a_traced_tid_counts_the_missed_exit() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            spawn_thread(SEC, P, 101, 3),
            spawn_thread(2 * SEC, P, 101, 4),
        ],
    );
    assert_eq!(agg.counters().resync_mismatches, 1);
    let f = agg.findings(3 * SEC, 0);
    assert_eq!((f.len(), f[0].stack), (2, Some(stack(P, 0, 4))));
    assert_eq!(
        (f[1].stack, f[1].outstanding, trend(&f[1])),
        (Some(stack(P, 0, 3)), 0, Trend::Released)
    );
}

#[test]
fn thread_the_seed_snapshot_already_showed_is_attributed_without_mismatch() {
    let mut agg = Aggregator::new(Limits::default());
    agg.seed(&snap(P, 5 * SEC, &[P, 101], &[0]));
    run(&mut agg, &[spawn_thread(4 * SEC, P, 101, 3)]);
    assert_eq!(agg.counters().resync_mismatches, 0);
    assert_eq!(agg.findings(6 * SEC, 0)[0].stack, Some(stack(P, 0, 3)));
    assert_eq!(agg.processes()[0].preexisting_threads, 1);
}

// ---- processes: fork, exec, exit ----

#[test]
fn fork_copies_fds_attributed_to_the_parents_stacks() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open_path(SEC, P, 3, 1, "/data/db", false),
            fork(2 * SEC, P, 200, 4),
        ],
    );
    assert!(agg.is_live(200));
    let findings = agg.findings(5 * SEC, 0);
    let inherited = finding(&findings, 200, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!(
        inherited.oldest_age_ns,
        4 * SEC,
        "keeps the parent's creation time"
    );
    assert_eq!(inherited.sample_path.as_deref(), Some("/data/db"));
    assert_eq!(inherited.comm, "app");
    let thread = finding(&findings, 200, None, Some(stack(P, 0, 4))).unwrap();
    assert_eq!((thread.resource, thread.outstanding), (Resource::Thread, 1));
    // The parent still has its own.
    assert!(finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).is_some());
    let child = agg.processes().into_iter().find(|s| s.pid == 200).unwrap();
    assert_eq!(
        (
            child.threads,
            child.preexisting_fds,
            child.preexisting_threads
        ),
        (1, 3, 0)
    );
    assert_eq!(process(&agg, 200).exec_gen, 0);
    assert!(
        agg.take_unseen().is_empty(),
        "a fork of a seeded process needs no seeding"
    );
    assert_eq!(agg.counters().unseen_processes, 0);
    // A close in the child is the child's.
    run(&mut agg, &[close(6 * SEC, 200, 3)]);
    let findings = agg.findings(7 * SEC, 0);
    let closed = finding(&findings, 200, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!((closed.outstanding, trend(&closed)), (0, Trend::Released));
    let kept = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!((kept.outstanding, trend(&kept)), (1, Trend::Stable));
}

#[test]
fn fork_does_not_clobber_a_child_whose_events_came_first() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(2 * SEC, 200, 7, FdKind::Socket, Some(5)),
            fork(SEC, P, 200, 4),
        ],
    );
    let child = process(&agg, 200);
    assert!(child.fds.contains_key(&7) && !child.fds.contains_key(&3));
    assert_eq!(agg.take_unseen(), vec![200]);
}

#[test]
fn fork_of_an_unseeded_process_queues_the_child_for_seeding() {
    let mut agg = Aggregator::new(Limits::default());
    run(
        &mut agg,
        &[open(SEC, P, 3, FdKind::File, Some(1)), fork(SEC, P, 200, 2)],
    );
    assert_eq!(agg.take_unseen(), vec![P, 200]);
    assert_eq!(agg.counters().unseen_processes, 1);
}

#[test]
fn exec_bumps_the_generation_and_keeps_one_thread_with_the_pid() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            spawn_thread(SEC, P, 101, 3),
            spawn_thread(SEC, P, 102, 3),
            open(SEC, P, 3, FdKind::File, Some(1)),
            exec(2 * SEC, P, 101),
            open(3 * SEC, P, 4, FdKind::File, Some(1)),
        ],
    );
    let p = process(&agg, P);
    assert_eq!(p.exec_gen, 1);
    assert_eq!(p.threads.keys().copied().collect::<Vec<_>>(), [P]);
    let findings = agg.findings(4 * SEC, 0);
    // The survivor is the thread 101 was: created from stack 3 in the old image.
    let thread = finding(&findings, P, None, Some(stack(P, 0, 3))).unwrap();
    assert_eq!(thread.outstanding, 1);
    assert!(finding(&findings, P, Some(FdKind::File), Some(stack(P, 1, 1))).is_some());
    assert!(finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).is_some());
    assert_eq!(agg.take_execs(), vec![P]);
    assert!(agg.take_execs().is_empty());
}

#[test]
fn resync_after_exec_removes_close_on_exec_fds_without_mismatch() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(SEC, P, 4, FdKind::File, Some(1)),
            exec(2 * SEC, P, P),
            open(3 * SEC, P, 5, FdKind::File, Some(2)),
        ],
    );
    assert_eq!(agg.take_execs(), vec![P]);
    // fd 3 was close-on-exec, fd 4 was not.
    assert_eq!(agg.resync(&snap(P, 4 * SEC, &[P], &[0, 1, 2, 4, 5])), 0);
    check(&agg);
    let fds = &process(&agg, P).fds;
    assert!(!fds.contains_key(&3) && fds.contains_key(&4) && fds.contains_key(&5));
    assert_eq!(agg.counters().resync_mismatches, 0);
    // Once shown, the exec explains nothing more.
    assert_eq!(agg.resync(&snap(P, 5 * SEC, &[P], &[0, 1, 2, 5])), 1);
}

#[test]
fn resync_from_before_the_exec_does_not_treat_missing_fds_as_close_on_exec() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[open(SEC, P, 3, FdKind::File, Some(1)), exec(3 * SEC, P, P)],
    );
    assert_eq!(agg.resync(&snap(P, 2 * SEC, &[P], &[0, 1, 2])), 1);
    assert_eq!(
        agg.take_execs(),
        vec![P],
        "still waiting for a snapshot after the exec"
    );
}

#[test]
fn reopening_an_fd_number_freed_by_exec_is_no_mismatch() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            exec(2 * SEC, P, P),
            open(3 * SEC, P, 3, FdKind::Socket, Some(2)),
        ],
    );
    assert_eq!(agg.counters().resync_mismatches, 0);
    assert_eq!(agg.findings(4 * SEC, 0)[0].stack, Some(stack(P, 1, 2)));
}

#[test]
fn snapshot_from_before_an_exec_applied_after_its_resync_brings_nothing_back() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            spawn_thread(SEC, P, 101, 2),
        ],
    );
    let mut before = snap(P, 1500 * MS, &[P, 101], &[0, 1, 2, 3]);
    before.comm = "sh".to_string();
    run(&mut agg, &[exec(2 * SEC, P, 101)]);
    let mut after = snap(P, 3 * SEC, &[P], &[0, 1, 2]);
    after.comm = "app".to_string();
    // The runtime's order: the exec-triggered resync, then the older periodic one.
    assert_eq!(agg.resync(&after), 0);
    assert_eq!(agg.resync(&before), 0);
    check(&agg);
    let p = process(&agg, P);
    assert!(!p.fds.contains_key(&3));
    assert_eq!(p.threads.keys().copied().collect::<Vec<_>>(), [P]);
    assert_eq!(
        &*p.comm, "app",
        "a stale snapshot does not rename the process"
    );
}

#[test]
fn exec_from_a_thread_never_seen_created_leaves_one_thread_of_unknown_origin() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[fork(SEC, P, 200, 4), exec(2 * SEC, 200, 250)]);
    let child = process(&agg, 200);
    assert_eq!(child.threads.keys().copied().collect::<Vec<_>>(), [200]);
    assert_eq!(child.threads[&200].group, None);
    // The fork's thread is gone (released by the exec), not carried by the survivor.
    let forked = finding(&agg.findings(3 * SEC, 0), 200, None, Some(stack(P, 0, 4))).unwrap();
    assert_eq!((forked.outstanding, trend(&forked)), (0, Trend::Released));
}

#[test]
fn exec_of_a_non_leader_thread_leaves_its_old_tid_behind() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[spawn_thread(SEC, P, 101, 2), exec(2 * SEC, P, 101)],
    );
    // A snapshot from before the exec still lists 101.
    assert_eq!(agg.resync(&snap(P, 1500 * MS, &[P, 101], &[0, 1, 2])), 0);
    assert_eq!(process(&agg, P).threads.len(), 1);
}

#[test]
fn group_dead_freezes_what_the_process_held_as_exited_findings() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(2 * SEC, P, 4, FdKind::File, Some(1)),
            spawn_thread(SEC, P, 101, 2),
            spawn_thread(SEC, P, 102, 2),
            exit(3 * SEC, P, 101, Some(false)),
            exit(5 * SEC, P, P, Some(true)),
        ],
    );
    assert!(!agg.is_live(P));
    assert!(agg.live_pids().is_empty());
    let findings = agg.findings(100 * SEC, 0);
    let fds = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert!(fds.exited);
    assert_eq!((fds.outstanding, fds.created), (2, 2));
    assert_eq!(fds.oldest_age_ns, 4 * SEC, "age at exit, not now");
    // 102's exit was still in flight when the group died.
    let threads = finding(&findings, P, None, Some(stack(P, 0, 2))).unwrap();
    assert_eq!((threads.outstanding, threads.exited), (1, true));
    let summary = agg.processes();
    assert_eq!(summary.len(), 1);
    assert!(summary[0].exited);
    assert_eq!(summary[0].fds[&FdKind::File], 5);
    assert_eq!(summary[0].preexisting_fds, 3);
}

/// `P` seeded with its main thread, five threads from stack 7 made one per second with a tick
/// after each (a leak), and one more from stack 8 at 1 s.
fn leaking_threads() -> Aggregator {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[spawn_thread(SEC, P, 200, 8)]);
    for k in 1..=5u32 {
        let ts = u64::from(k) * SEC;
        run(&mut agg, &[spawn_thread(ts, P, 100 + k, 7)]);
        agg.tick(ts + SEC / 2);
    }
    agg
}

/// exit_group: threads 101..=105 exit 1 ms apart, then `P` with `group_dead`, 10 s in; thread
/// 200 exited 1 s before.
fn exit_group(agg: &mut Aggregator, group_dead: Option<bool>) {
    let mut events = vec![exit(9 * SEC, P, 200, group_dead.map(|_| false))];
    for k in 1..=5u32 {
        let ts = 10 * SEC - u64::from(6 - k) * MS;
        events.push(exit(ts, P, 100 + k, group_dead.map(|_| false)));
    }
    events.push(exit(10 * SEC, P, P, group_dead));
    run(agg, &events);
}

fn assert_threads_held_at_exit(agg: &Aggregator) {
    assert!(!agg.is_live(P));
    let findings = agg.findings(11 * SEC, 0);
    let held = finding(&findings, P, None, Some(stack(P, 0, 7))).unwrap();
    assert_eq!(
        (held.exited, held.outstanding, held.created),
        (true, 5, 5),
        "{held:?}"
    );
    assert_eq!((trend(&held), leak(&held).destroyed), (Trend::Leak, 0));
    assert_eq!(held.oldest_age_ns, 9 * SEC, "age at exit");
    // Exited a second before the process: released, not held.
    let gone = finding(&findings, P, None, Some(stack(P, 0, 8))).unwrap();
    assert_eq!(
        (gone.outstanding, trend(&gone), leak(&gone).destroyed),
        (0, Trend::Released, 1)
    );
    let summary = agg.processes();
    assert_eq!(
        (
            summary.len(),
            summary[0].threads,
            summary[0].preexisting_threads
        ),
        (1, 6, 1),
        "the five and the main thread"
    );
}

#[test]
fn threads_ended_by_exit_group_are_held_at_exit() {
    let mut agg = leaking_threads();
    exit_group(&mut agg, Some(true));
    assert_threads_held_at_exit(&agg);
}

#[test]
fn threads_ended_with_the_last_thread_without_group_dead_are_held_at_exit() {
    let mut agg = leaking_threads();
    exit_group(&mut agg, None);
    assert_threads_held_at_exit(&agg);
}

#[test]
fn with_exit_group_seen_only_the_threads_exiting_after_it_are_held() {
    let mut agg = leaking_threads();
    // 101 and 102 end on their own (joined), 103..=105 are killed by exit_group, all within the
    // window before the process's death.
    let mut events: Vec<Event> = (1..=5u32)
        .map(|k| exit(10 * SEC - u64::from(6 - k) * MS, P, 100 + k, Some(false)))
        .collect();
    events.insert(2, ev(10 * SEC - 3 * MS - MS / 2, P, P, What::ExitGroup));
    events.push(exit(10 * SEC, P, P, Some(true)));
    run(&mut agg, &events);
    let findings = agg.findings(11 * SEC, 0);
    let held = finding(&findings, P, None, Some(stack(P, 0, 7))).unwrap();
    assert_eq!(
        (held.exited, held.outstanding, leak(&held).destroyed),
        (true, 3, 2),
        "{held:?}"
    );
    assert_eq!(
        agg.processes()[0].threads,
        5,
        "the three, 200 (never exited) and the main thread"
    );
}

#[test]
fn a_leaked_thread_the_process_dies_with_is_held_at_exit() {
    let mut agg = leaking_threads();
    let mut events: Vec<Event> = (1..=4u32)
        .map(|k| exit(10 * SEC - u64::from(5 - k) * MS, P, 100 + k, Some(false)))
        .collect();
    events.insert(0, exit(10 * SEC - 10 * MS, P, P, Some(false)));
    events.push(exit(10 * SEC, P, 105, Some(true)));
    run(&mut agg, &events);
    let findings = agg.findings(11 * SEC, 0);
    let held = finding(&findings, P, None, Some(stack(P, 0, 7))).unwrap();
    assert_eq!(
        (held.outstanding, trend(&held), leak(&held).destroyed),
        (5, Trend::Leak, 0)
    );
    assert_eq!(
        (
            agg.processes()[0].threads,
            agg.processes()[0].preexisting_threads
        ),
        (7, 1)
    );
}

#[test]
fn thread_exits_long_before_the_process_dies_stay_released() {
    let mut agg = leaking_threads();
    let events: Vec<Event> = (1..=5u32)
        .map(|k| exit(6 * SEC + u64::from(k) * MS, P, 100 + k, Some(false)))
        .collect();
    run(&mut agg, &events);
    run(&mut agg, &[exit(10 * SEC, P, P, Some(true))]);
    let findings = agg.findings(11 * SEC, 0);
    let released = finding(&findings, P, None, Some(stack(P, 0, 7))).unwrap();
    assert_eq!(
        (
            released.outstanding,
            trend(&released),
            leak(&released).destroyed
        ),
        (0, Trend::Released, 5)
    );
    // 200 is still held; the main thread is no finding.
    let held = finding(&findings, P, None, Some(stack(P, 0, 8))).unwrap();
    assert_eq!((held.outstanding, leak(&held).destroyed), (1, 0));
    assert_eq!(agg.processes()[0].threads, 2);
}

#[test]
fn thread_exits_before_an_exec_are_not_held_at_the_new_image_s_exit() {
    let mut agg = leaking_threads();
    run(
        &mut agg,
        &[
            exit(10 * SEC - 2 * MS, P, 101, Some(false)),
            exec(10 * SEC - MS, P, P),
            exit(10 * SEC, P, P, Some(true)),
        ],
    );
    let findings = agg.findings(11 * SEC, 0);
    let f = finding(&findings, P, None, Some(stack(P, 0, 7))).unwrap();
    assert_eq!((f.outstanding, leak(&f).destroyed), (0, 5));
}

#[test]
fn late_exit_of_a_dead_process_is_ignored() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            spawn_thread(SEC, P, 101, 2),
            exit(2 * SEC, P, P, Some(true)),
            exit(2 * SEC, P, 101, Some(false)),
        ],
    );
    assert!(!agg.is_live(P));
    assert!(agg.take_unseen().is_empty());
    assert_eq!(agg.counters().unseen_processes, 0);
}

#[test]
fn last_thread_exit_without_group_dead_ends_a_seeded_process() {
    let mut agg = Aggregator::new(Limits::default());
    agg.seed(&snap(P, 0, &[P, 101], &[0]));
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            exit(2 * SEC, P, 101, None),
        ],
    );
    assert!(agg.is_live(P));
    run(&mut agg, &[exit(3 * SEC, P, P, None)]);
    assert!(!agg.is_live(P));
    let f = agg.findings(10 * SEC, 0);
    assert_eq!(
        (f.len(), f[0].exited, f[0].oldest_age_ns),
        (1, true, 2 * SEC)
    );
}

#[test]
fn last_known_thread_exit_without_group_dead_does_not_end_an_unseeded_process() {
    let mut agg = Aggregator::new(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            exit(2 * SEC, P, P, None),
        ],
    );
    assert!(agg.is_live(P), "threads we never saw may remain");
    agg.process_gone(P, 3 * SEC);
    assert!(!agg.is_live(P));
    let f = agg.findings(10 * SEC, 0);
    assert_eq!((f[0].exited, f[0].oldest_age_ns), (true, 2 * SEC));
}

#[test]
fn group_dead_false_keeps_the_process_even_with_no_known_thread() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[exit(SEC, P, P, Some(false))]);
    assert!(agg.is_live(P));
}

#[test]
fn process_gone_ends_the_process_at_the_given_time() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[open(SEC, P, 3, FdKind::File, Some(1))]);
    agg.process_gone(P, 4 * SEC);
    agg.process_gone(P, 9 * SEC);
    let f = agg.findings(50 * SEC, 0);
    assert_eq!(
        (f.len(), f[0].exited, f[0].oldest_age_ns),
        (1, true, 3 * SEC)
    );
    assert_eq!(agg.processes().len(), 1);
}

#[test]
fn exit_before_the_exec_is_resynced_drops_fds_the_exec_may_have_closed() {
    // posix_spawn: the child inherits the parent's fds, execs (closing the close-on-exec ones
    // without a trace) and exits before any snapshot.
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::Socket, Some(1)),
            open(SEC, P, 7, FdKind::Socket, Some(1)),
            fork(2 * SEC, P, 200, 4),
            exec(3 * SEC, 200, 200),
            open(4 * SEC, 200, 3, FdKind::File, Some(9)),
            open(4 * SEC, 200, 5, FdKind::File, Some(9)),
            exit(5 * SEC, 200, 200, Some(true)),
        ],
    );
    let exited: Vec<Finding> = agg
        .findings(10 * SEC, 0)
        .into_iter()
        .filter(|f| f.exited)
        .collect();
    assert_eq!(exited.len(), 1, "{exited:?}");
    assert_eq!(exited[0].stack, Some(stack(200, 1, 9)));
    assert_eq!(exited[0].outstanding, 2);
    assert_eq!(agg.counters().resync_mismatches, 0);
}

#[test]
fn fork_after_an_unresynced_exec_queues_the_child_for_resync() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            exec(2 * SEC, P, P),
            fork(3 * SEC, P, 200, 4),
        ],
    );
    assert_eq!(agg.take_execs(), vec![P, 200]);
    assert_eq!(agg.resync(&snap(200, 4 * SEC, &[200], &[0, 1, 2])), 0);
    assert!(!process(&agg, 200).fds.contains_key(&3));
}

#[test]
fn pid_reuse_starts_past_the_previous_generation() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[exec(SEC, P, P), exit(2 * SEC, P, P, Some(true))],
    );
    agg.seed(&snap(P, 3 * SEC, &[P], &[]));
    agg.take_new_stacks();
    run(&mut agg, &[open(4 * SEC, P, 3, FdKind::File, Some(1))]);
    assert_eq!(agg.take_new_stacks(), vec![stack(P, 2, 1)]);
    // A pid never seen starts at 0.
    run(
        &mut agg,
        &[
            fork(5 * SEC, P, 300, 1),
            open(5 * SEC, 300, 4, FdKind::File, Some(1)),
        ],
    );
    assert_eq!(agg.take_new_stacks(), vec![stack(300, 0, 1)]);
}

// ---- findings ----

#[test]
fn min_age_filters_young_groups_live_and_exited() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(9 * SEC, P, 4, FdKind::File, Some(2)),
            // The group's oldest object decides, not its newest.
            open(9 * SEC, P, 5, FdKind::File, Some(1)),
        ],
    );
    let f = agg.findings(10 * SEC, 5 * SEC);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].stack, f[0].outstanding), (Some(stack(P, 0, 1)), 2));
    assert_eq!(agg.findings(10 * SEC, 0).len(), 2);
    agg.process_gone(P, 10 * SEC);
    let f = agg.findings(1000 * SEC, 5 * SEC);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].oldest_age_ns, f[0].exited), (9 * SEC, true));
}

#[test]
fn preexisting_objects_are_never_findings() {
    let mut agg = Aggregator::new(Limits::default());
    agg.seed(&snap(P, 0, &[P, 101, 102], &[0, 1, 2, 3, 4, 5]));
    run(&mut agg, &[fork(SEC, P, 200, 1)]);
    let f = agg.findings(1000 * SEC, 0);
    assert_eq!(f.len(), 1, "only the forked child's thread: {f:?}");
    assert_eq!((f[0].pid, f[0].resource), (200, Resource::Thread));
    agg.process_gone(P, 2 * SEC);
    assert_eq!(agg.findings(1000 * SEC, 0).len(), 1);
    let summary = &agg.processes()[0];
    assert_eq!(
        (summary.preexisting_threads, summary.preexisting_fds),
        (3, 6)
    );
}

#[test]
fn failed_stack_capture_forms_a_stackless_group() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::EventFd, None),
            open(SEC, P, 4, FdKind::EventFd, None),
        ],
    );
    let f = agg.findings(2 * SEC, 0);
    assert_eq!((f.len(), f[0].stack, f[0].outstanding), (1, None, 2));
    assert!(agg.take_new_stacks().is_empty());
}

#[test]
fn findings_list_live_before_exited_by_outstanding_then_age() {
    let mut agg = seeded(Limits::default());
    agg.seed(&snap(200, 0, &[200], &[]));
    run(
        &mut agg,
        &[
            open(SEC, 200, 3, FdKind::File, Some(1)),
            open(SEC, 200, 4, FdKind::File, Some(1)),
            open(SEC, 200, 5, FdKind::File, Some(1)),
            exit(2 * SEC, 200, 200, Some(true)),
            open(3 * SEC, P, 3, FdKind::File, Some(1)),
            open(SEC, P, 4, FdKind::File, Some(2)),
            open(2 * SEC, P, 5, FdKind::Socket, Some(3)),
            open(2 * SEC, P, 6, FdKind::Socket, Some(3)),
        ],
    );
    let order: Vec<(u32, Option<u32>, u64, bool)> = agg
        .findings(10 * SEC, 0)
        .iter()
        .map(|f| (f.pid, f.stack.map(|s| s.id), f.outstanding, f.exited))
        .collect();
    assert_eq!(
        order,
        [
            (P, Some(3), 2, false),
            (P, Some(2), 1, false),
            (P, Some(1), 1, false),
            (200, Some(1), 3, true),
        ]
    );
}

// ---- rate ----

fn rate_after(agg: &Aggregator, now_ns: u64) -> f64 {
    agg.findings(now_ns, 0)[0].rate_per_s
}

#[test]
fn rate_of_a_steadily_growing_group_is_its_slope() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    for second in 1..=20 {
        for _ in 0..10 {
            run(
                &mut agg,
                &[open(second * SEC, P, fd, FdKind::File, Some(1))],
            );
            fd += 1;
        }
        agg.tick(second * SEC);
    }
    let rate = rate_after(&agg, 20 * SEC);
    assert!((rate - 10.0).abs() < 1e-9, "{rate}");
}

#[test]
fn rate_of_a_flat_group_is_zero() {
    let mut agg = seeded(Limits::default());
    let opens: Vec<Event> = (3..8)
        .map(|fd| open(SEC, P, fd, FdKind::File, Some(1)))
        .collect();
    run(&mut agg, &opens);
    for second in 2..=12 {
        agg.tick(second * SEC);
    }
    assert_eq!(rate_after(&agg, 12 * SEC), 0.0);
}

#[test]
fn rate_needs_two_samples() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[open(SEC, P, 3, FdKind::File, Some(1))]);
    assert_eq!(rate_after(&agg, 2 * SEC), 0.0);
    agg.tick(2 * SEC);
    assert_eq!(rate_after(&agg, 2 * SEC), 0.0);
    run(&mut agg, &[open(3 * SEC, P, 4, FdKind::File, Some(1))]);
    agg.tick(4 * SEC);
    assert!((rate_after(&agg, 4 * SEC) - 0.5).abs() < 1e-9);
}

#[test]
fn rate_of_samples_taken_at_one_instant_is_zero_not_nan() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[open(SEC, P, 3, FdKind::File, Some(1))]);
    agg.tick(2 * SEC);
    run(&mut agg, &[open(SEC, P, 4, FdKind::File, Some(1))]);
    agg.tick(2 * SEC);
    assert_eq!(rate_after(&agg, 2 * SEC), 0.0);
}

#[test]
fn rate_fits_only_the_samples_inside_the_window() {
    let limits = Limits {
        rate_window_ns: 10 * SEC,
        max_samples: 1000,
        ..Limits::default()
    };
    let mut agg = seeded(limits);
    let mut fd = 3;
    for second in 1..=40 {
        if second <= 20 {
            for _ in 0..5 {
                run(
                    &mut agg,
                    &[open(second * SEC, P, fd, FdKind::File, Some(1))],
                );
                fd += 1;
            }
        }
        agg.tick(second * SEC);
    }
    assert_eq!(rate_after(&agg, 40 * SEC), 0.0);
    let p = process(&agg, P);
    let (_, group) = p.groups.iter().find(|(_, g)| g.outstanding > 0).unwrap();
    assert_eq!(group.sample_count(), 11, "samples from 30 s to 40 s");
}

#[test]
fn samples_are_bounded_by_max_samples() {
    let limits = Limits {
        max_samples: 4,
        ..Limits::default()
    };
    let mut agg = seeded(limits);
    let mut fd = 3;
    for second in 1..=10 {
        // Growth only in the last 4 samples' span would show 1/s; earlier growth is 3/s.
        let opens = if second <= 6 { 3 } else { 1 };
        for _ in 0..opens {
            run(
                &mut agg,
                &[open(second * SEC, P, fd, FdKind::File, Some(1))],
            );
            fd += 1;
        }
        agg.tick(second * SEC);
    }
    let p = process(&agg, P);
    let (_, group) = p.groups.iter().next().unwrap();
    assert_eq!(group.sample_count(), 4);
    assert!((rate_after(&agg, 10 * SEC) - 1.0).abs() < 1e-9);
}

#[test]
fn idle_empty_groups_are_dropped_after_a_window() {
    let limits = Limits {
        rate_window_ns: 10 * SEC,
        ..Limits::default()
    };
    let mut agg = seeded(limits);
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            close(SEC, P, 3),
            open(SEC, P, 4, FdKind::File, Some(2)),
        ],
    );
    agg.tick(5 * SEC);
    assert_eq!(process(&agg, P).groups.len(), 2);
    agg.tick(11 * SEC);
    assert_eq!(process(&agg, P).groups.len(), 1, "the leaking group stays");
    // The freed slot is reused by the next new group.
    run(&mut agg, &[open(12 * SEC, P, 5, FdKind::File, Some(3))]);
    assert_eq!(process(&agg, P).groups.slot_count(), 2);
    assert_eq!(agg.findings(13 * SEC, 0).len(), 2);
}

// ---- resync ----

#[test]
fn resync_keeps_objects_created_after_the_snapshot_began() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(6 * SEC, P, 3, FdKind::File, Some(1)),
            spawn_thread(6 * SEC, P, 101, 2),
        ],
    );
    assert_eq!(agg.resync(&snap(P, 5 * SEC, &[P], &[0, 1, 2])), 0);
    assert_eq!(agg.findings(7 * SEC, 0).len(), 2);
}

#[test]
fn resync_does_not_re_add_what_closed_after_the_snapshot_began() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            spawn_thread(SEC, P, 101, 2),
            close(6 * SEC, P, 3),
            exit(6 * SEC, P, 101, Some(false)),
            open(SEC, P, 20, FdKind::File, Some(1)),
            close_range(6 * SEC, P, 10, 30),
        ],
    );
    let s = snap(P, 5 * SEC, &[P, 101], &[0, 1, 2, 3, 20]);
    assert_eq!(agg.resync(&s), 0);
    let p = process(&agg, P);
    assert_eq!((p.fds.len(), p.threads.len()), (3, 1));
}

#[test]
fn resync_counts_real_disagreements() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            spawn_thread(SEC, P, 101, 2),
            open(SEC, P, 8, FdKind::File, Some(1)),
            close(2 * SEC, P, 8),
        ],
    );
    // fd 3 and thread 101 gone unseen; fd 9 and thread 150 appeared unseen; fd 8 closed before
    // the snapshot began yet is shown.
    let s = snap(P, 5 * SEC, &[P, 150], &[0, 1, 2, 8, 9]);
    assert_eq!(agg.resync(&s), 5);
    assert_eq!(agg.counters().resync_mismatches, 5);
    check(&agg);
    // What /proc adds has no stack: the only findings are the traced groups it drained.
    let released: Vec<(Option<FdKind>, u64, Trend)> = agg
        .findings(10 * SEC, 0)
        .iter()
        .map(|f| (f.kind, f.outstanding, trend(f)))
        .collect();
    assert_eq!(
        released,
        [
            (None, 0, Trend::Released),
            (Some(FdKind::File), 0, Trend::Released)
        ]
    );
    let summary = &agg.processes()[0];
    assert_eq!((summary.threads, summary.preexisting_threads), (2, 2));
    assert_eq!(summary.preexisting_fds, 5);
}

#[test]
fn resync_corrects_the_kind_and_keeps_the_stack_without_mismatch() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(SEC, P, 4, FdKind::File, Some(1)),
        ],
    );
    let mut s = snap(P, 5 * SEC, &[P], &[0, 1, 2, 4]);
    s.fds.push((3, FdKind::Pipe));
    assert_eq!(agg.resync(&s), 0);
    check(&agg);
    let findings = agg.findings(6 * SEC, 0);
    let pipe = finding(&findings, P, Some(FdKind::Pipe), Some(stack(P, 0, 1))).unwrap();
    assert_eq!(
        (pipe.outstanding, pipe.created, pipe.oldest_age_ns),
        (1, 1, 5 * SEC)
    );
    let file = finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!((file.outstanding, file.created), (1, 1));
}

#[test]
fn resync_keeps_a_kind_that_says_where_the_fd_came_from() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::Received, Some(1)),
            open(SEC, P, 4, FdKind::IoUring, Some(2)),
            open(SEC, P, 5, FdKind::Installed, Some(3)),
        ],
    );
    // /proc shows what they are (a file, a socket, …), which does not say how they came.
    assert_eq!(agg.resync(&snap(P, 5 * SEC, &[P], &[0, 1, 2, 3, 4, 5])), 0);
    check(&agg);
    let findings = agg.findings(6 * SEC, 0);
    for (kind, id) in [
        (FdKind::Received, 1),
        (FdKind::IoUring, 2),
        (FdKind::Installed, 3),
    ] {
        let f = finding(&findings, P, Some(kind), Some(stack(P, 0, id))).unwrap();
        assert_eq!((f.outstanding, f.created), (1, 1), "{kind:?}");
    }
    assert!(finding(&findings, P, Some(FdKind::File), Some(stack(P, 0, 1))).is_none());
    assert_eq!(agg.processes()[0].fds[&FdKind::Received], 1);
}

#[test]
fn resync_keeps_the_kind_of_an_fd_newer_than_the_snapshot() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[open(6 * SEC, P, 3, FdKind::Socket, Some(1))]);
    let mut s = snap(P, 5 * SEC, &[P], &[0, 1, 2]);
    s.fds.push((3, FdKind::Pipe));
    agg.resync(&s);
    assert_eq!(process(&agg, P).fds[&3].kind, FdKind::Socket);
}

#[test]
fn resync_updates_comm() {
    let mut agg = seeded(Limits::default());
    let mut s = snap(P, 5 * SEC, &[P], &[0, 1, 2]);
    s.comm = "renamed".to_string();
    agg.resync(&s);
    assert_eq!(agg.processes()[0].comm, "renamed");
}

#[test]
fn resync_of_an_untracked_pid_seeds_it() {
    let mut agg = Aggregator::new(Limits::default());
    assert_eq!(agg.resync(&snap(P, SEC, &[P, 101], &[0, 1])), 0);
    assert!(agg.is_live(P));
    let summary = &agg.processes()[0];
    assert_eq!(
        (summary.preexisting_threads, summary.preexisting_fds),
        (2, 2)
    );
    assert_eq!(agg.counters(), &AggregatorCounters::default());
}

#[test]
fn snapshot_from_before_an_exit_does_not_resurrect_the_process() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[exit(5 * SEC, P, P, Some(true))]);
    assert_eq!(agg.resync(&snap(P, 4 * SEC, &[P], &[0])), 0);
    agg.seed(&snap(P, 4 * SEC, &[P], &[0]));
    assert!(!agg.is_live(P));
    // A later snapshot is a new process with the same pid.
    agg.seed(&snap(P, 6 * SEC, &[P], &[0]));
    assert!(agg.is_live(P));
    assert_eq!(agg.processes().len(), 2);
}

// ---- unseen processes and seeding ----

#[test]
fn events_for_an_unseen_pid_create_it_and_queue_it_once() {
    let mut agg = Aggregator::new(Limits::default());
    run(
        &mut agg,
        &[
            ev(
                SEC,
                300,
                301,
                What::FdOpen {
                    fds: FdPair::One(3),
                    kind: FdKind::File,
                    stack: Some(1),
                    path: None,
                },
            ),
            close(2 * SEC, 300, 9),
        ],
    );
    assert!(agg.is_live(300));
    assert_eq!(agg.counters().unseen_processes, 1);
    assert_eq!(agg.take_unseen(), vec![300]);
    assert!(agg.take_unseen().is_empty());
    run(&mut agg, &[open(3 * SEC, 300, 4, FdKind::File, Some(1))]);
    assert!(agg.take_unseen().is_empty());
    let summary = &agg.processes()[0];
    assert_eq!(
        (summary.threads, summary.preexisting_threads),
        (1, 1),
        "the event's thread"
    );
    assert_eq!(agg.findings(4 * SEC, 0)[0].outstanding, 2);
}

#[test]
fn seed_after_events_merges_instead_of_wiping() {
    let mut agg = Aggregator::new(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, 300, 3, FdKind::File, Some(1)),
            close(2 * SEC, 300, 5),
            close_range(2 * SEC, 300, 10, u32::MAX),
        ],
    );
    let s = snap(300, 1500 * MS, &[300, 301], &[0, 1, 2, 3, 5, 10, 11]);
    agg.seed(&s);
    check(&agg);
    let p = process(&agg, 300);
    let mut fds: Vec<i32> = p.fds.keys().copied().collect();
    fds.sort_unstable();
    assert_eq!(
        fds,
        [0, 1, 2, 3],
        "fds closed after the snapshot began stay closed"
    );
    assert_eq!(p.threads.len(), 2);
    assert_eq!(agg.findings(3 * SEC, 0)[0].stack, Some(stack(300, 0, 1)));
    assert_eq!(agg.counters().resync_mismatches, 0);
    assert!(
        agg.take_unseen().is_empty(),
        "seeded before the runtime asked"
    );
    // Later resyncs of it count disagreements again.
    assert_eq!(
        agg.resync(&snap(300, 3 * SEC, &[300, 301], &[0, 1, 2, 3, 7])),
        1
    );
}

#[test]
fn first_resync_of_an_unseen_process_counts_only_what_went_missing() {
    let mut agg = Aggregator::new(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, 300, 3, FdKind::File, Some(1)),
            open(SEC, 300, 4, FdKind::File, Some(1)),
        ],
    );
    // What existed before we saw the process is expected; fd 4 vanishing is not.
    let s = snap(300, 2 * SEC, &[300, 301], &[0, 1, 2, 3]);
    assert_eq!(agg.resync(&s), 1);
}

// ---- bounds ----

#[test]
fn object_bound_drops_and_marks_the_process_incomplete() {
    let limits = Limits {
        max_objects_per_process: 5,
        ..Limits::default()
    };
    let mut agg = seeded(limits);
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(SEC, P, 4, FdKind::File, Some(1)),
            spawn_thread(SEC, P, 101, 2),
            close(2 * SEC, P, 4),
        ],
    );
    assert_eq!(agg.counters().dropped_objects, 2);
    assert_eq!(agg.counters().untracked_closes, 1);
    assert!(agg.processes()[0].incomplete);
    // A fork copies an incomplete table.
    run(&mut agg, &[fork(3 * SEC, P, 200, 3)]);
    let child = agg.processes().into_iter().find(|s| s.pid == 200).unwrap();
    assert!(child.incomplete);
    // An incomplete process's empty thread set proves nothing.
    run(&mut agg, &[exit(4 * SEC, P, P, None)]);
    assert!(agg.is_live(P));
}

#[test]
fn lost_records_mark_the_process_incomplete_and_a_resync_restores_its_counts() {
    let mut agg = seeded(Limits::default());
    // fd 4's open and fd 3's close were lost; the kernel noted the process.
    run(&mut agg, &[open(SEC, P, 3, FdKind::File, Some(1))]);
    agg.records_lost(P);
    // An untracked process is seeded when first seen: nothing to mark, nothing created.
    agg.records_lost(999);
    assert!(!agg.is_live(999));
    let summary = &agg.processes()[0];
    assert!(summary.incomplete);
    assert_eq!(agg.findings(2 * SEC, 0)[0].outstanding, 1);

    assert_eq!(agg.resync(&snap(P, 2 * SEC, &[P], &[0, 1, 2, 4])), 2);
    check(&agg);
    let fds: Vec<i32> = {
        let mut fds: Vec<i32> = process(&agg, P).fds.keys().copied().collect();
        fds.sort_unstable();
        fds
    };
    assert_eq!(fds, [0, 1, 2, 4]);
    // Counts are right again; the process stays marked (fd 4 has no stack).
    assert!(agg.processes()[0].incomplete);
    assert_eq!(agg.findings(3 * SEC, 0)[0].outstanding, 0);
}

#[test]
fn process_bound_evicts_the_least_recently_active() {
    let limits = Limits {
        max_processes: 2,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    agg.seed(&snap(1, 0, &[1], &[]));
    agg.seed(&snap(2, 0, &[2], &[]));
    run(&mut agg, &[open(SEC, 1, 3, FdKind::File, Some(1))]);
    agg.seed(&snap(3, 0, &[3], &[]));
    assert_eq!(agg.live_pids(), [1, 3]);
    assert_eq!(agg.counters().evicted_processes, 1);
    // An event for an untracked pid evicts too: 3 was seeded after 1's last event.
    run(&mut agg, &[open(2 * SEC, 4, 3, FdKind::File, Some(1))]);
    assert_eq!(agg.live_pids(), [3, 4]);
    assert_eq!(agg.counters().evicted_processes, 2);
    // A fork makes room by evicting the least recently active process, not its parent.
    run(&mut agg, &[fork(3 * SEC, 3, 5, 1)]);
    assert_eq!(agg.live_pids(), [3, 5]);
    assert_eq!(agg.counters().evicted_processes, 3);
}

#[test]
fn exited_list_keeps_only_the_newest() {
    let limits = Limits {
        max_exited: 2,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    for pid in 1..=3 {
        agg.seed(&snap(pid, 0, &[pid], &[]));
        run(
            &mut agg,
            &[
                open(SEC, pid, 3, FdKind::File, Some(1)),
                exit(u64::from(pid) * SEC, pid, pid, Some(true)),
            ],
        );
    }
    let pids: Vec<u32> = agg.processes().iter().map(|s| s.pid).collect();
    assert_eq!(pids, [2, 3]);
    assert_eq!(agg.findings(10 * SEC, 0).len(), 2);
}

#[test]
fn tombstones_are_bounded_and_expire_after_two_ticks() {
    let mut agg = seeded(Limits::default());
    let closes: Vec<Event> = (0..200_000).map(|fd| close(SEC, P, fd)).collect();
    run(&mut agg, &closes);
    assert!(process(&agg, P).fd_closes.len() <= 2 * 65_536);
    agg.tick(2 * SEC);
    agg.tick(3 * SEC);
    assert_eq!(process(&agg, P).fd_closes.len(), 0);
    let ranges: Vec<Event> = (0..1000)
        .map(|fd| close_range(4 * SEC, P, fd, fd + 1))
        .collect();
    run(&mut agg, &ranges);
    assert!(process(&agg, P).fd_closes.len() <= 2 * 64);
}

#[test]
fn process_at_its_bound_does_not_even_track_the_thread_an_event_reveals() {
    let limits = Limits {
        max_objects_per_process: 0,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    run(&mut agg, &[open(SEC, P, 3, FdKind::File, Some(1))]);
    assert_eq!(agg.counters().dropped_objects, 2);
    assert!(agg.processes()[0].incomplete);
}

#[test]
fn seed_over_the_bound_drops_what_does_not_fit() {
    let limits = Limits {
        max_objects_per_process: 3,
        ..Limits::default()
    };
    let mut agg = Aggregator::new(limits);
    agg.seed(&snap(P, 0, &[P, 101], &[0, 1, 2]));
    assert_eq!(agg.counters().dropped_objects, 2);
    let summary = &agg.processes()[0];
    assert_eq!(summary.threads + summary.fds.values().sum::<u64>(), 3);
    assert!(summary.incomplete);
}

// ---- queues ----

#[test]
fn take_new_stacks_returns_each_stack_once() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::File, Some(1)),
            open(SEC, P, 4, FdKind::File, Some(1)),
            spawn_thread(SEC, P, 101, 2),
        ],
    );
    assert_eq!(agg.take_new_stacks(), vec![stack(P, 0, 1), stack(P, 0, 2)]);
    run(&mut agg, &[open(SEC, P, 5, FdKind::File, Some(1))]);
    assert!(agg.take_new_stacks().is_empty());
    // After an exec the same id is another image's stack.
    run(
        &mut agg,
        &[
            exec(2 * SEC, P, P),
            open(3 * SEC, P, 6, FdKind::File, Some(1)),
        ],
    );
    assert_eq!(agg.take_new_stacks(), vec![stack(P, 1, 1)]);
}

#[test]
fn take_execs_returns_each_pid_once_until_it_execs_again() {
    let mut agg = seeded(Limits::default());
    run(&mut agg, &[exec(SEC, P, P), exec(2 * SEC, P, P)]);
    assert_eq!(agg.take_execs(), vec![P]);
    assert!(agg.take_execs().is_empty());
    run(&mut agg, &[exec(3 * SEC, P, P)]);
    assert_eq!(agg.take_execs(), vec![P]);
    // Resynced before the runtime asked: nothing left to do.
    run(&mut agg, &[exec(4 * SEC, P, P)]);
    agg.resync(&snap(P, 5 * SEC, &[P], &[0, 1, 2]));
    assert!(agg.take_execs().is_empty());
}

#[test]
fn processes_summarize_threads_and_fds_by_kind() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            pipe(SEC, P, 3, 4, 1),
            open(SEC, P, 5, FdKind::Socket, Some(2)),
            spawn_thread(SEC, P, 101, 3),
        ],
    );
    let s = &agg.processes()[0];
    let fds: Vec<(FdKind, u64)> = s.fds.iter().map(|(k, n)| (*k, *n)).collect();
    assert_eq!(
        fds,
        [(FdKind::File, 3), (FdKind::Socket, 1), (FdKind::Pipe, 2)]
    );
    assert_eq!(
        (s.threads, s.preexisting_threads, s.preexisting_fds),
        (2, 1, 3)
    );
    assert!(!s.exited && !s.incomplete);
}

// ---- against a reference model ----

/// Random opens, dups, closes and close_ranges on one process, checked against a plain map of
/// fd → (kind, stack) after every event.
#[test]
fn random_fd_traffic_matches_a_reference_model() {
    let mut agg = seeded(Limits::default());
    let mut model: BTreeMap<i32, (FdKind, Option<u32>)> =
        (0..3).map(|fd| (fd, (FdKind::File, None))).collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let kinds = [FdKind::File, FdKind::Socket, FdKind::Pipe];
    for step in 0..20_000u64 {
        let ts = SEC + step;
        let fd = next(64) as i32;
        let stack_id = next(4) as u32;
        let e = match next(10) {
            0..=3 => {
                let kind = kinds[next(3) as usize];
                model.insert(fd, (kind, Some(stack_id)));
                open(ts, P, fd, kind, Some(stack_id))
            }
            4 => {
                let source = next(64) as i32;
                if source != fd {
                    let kind = model.get(&source).map_or(FdKind::Other, |&(kind, _)| kind);
                    model.insert(fd, (kind, Some(stack_id)));
                }
                dup(ts, P, fd, source, stack_id)
            }
            5..=8 => {
                model.remove(&fd);
                close(ts, P, fd)
            }
            _ => {
                let last = if next(2) == 0 {
                    u32::MAX
                } else {
                    fd as u32 + next(8) as u32
                };
                model.retain(|&n, _| !(fd as u32..=last).contains(&(n as u32)));
                close_range(ts, P, fd as u32, last)
            }
        };
        agg.apply(&e);
        if step % 97 == 0 {
            check(&agg);
        }
    }
    check(&agg);
    let p = process(&agg, P);
    let tracked: BTreeMap<i32, (FdKind, Option<u32>)> = p
        .fds
        .iter()
        .map(|(&fd, state)| {
            let stack = state
                .group
                .and_then(|slot| p.groups.key(slot))
                .and_then(|k| k.stack);
            (fd, (state.kind, stack.map(|s| s.id)))
        })
        .collect();
    assert_eq!(tracked, model);
    let mut expected: BTreeMap<(FdKind, u32), u64> = BTreeMap::new();
    for (kind, stack) in model.values() {
        if let Some(stack) = stack {
            *expected.entry((*kind, *stack)).or_default() += 1;
        }
    }
    let found: BTreeMap<(FdKind, u32), u64> = agg
        .findings(100 * SEC, 0)
        .iter()
        .filter(|f| f.resource == Resource::Fd)
        .map(|f| ((f.kind.unwrap(), f.stack.unwrap().id), f.outstanding))
        .collect();
    assert_eq!(found, expected);
}

// ---- verdicts ----

#[test]
fn steady_growth_over_ticks_is_a_leak() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    for second in 1..=5 {
        // Three opened, one of them closed again: net two more every interval.
        open_many(&mut agg, second * SEC - 500 * MS, &mut fd, 3, 1);
        run(&mut agg, &[close(second * SEC - 400 * MS, P, fd - 1)]);
        agg.tick(second * SEC);
    }
    let f = agg.findings(5 * SEC, SEC);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].outstanding, f[0].created), (10, 15));
    assert!((f[0].rate_per_s - 2.0).abs() < 1e-9);
    assert_eq!(trend(&f[0]), Trend::Leak);
    assert_eq!(leak(&f[0]).destroyed, 5);
}

#[test]
fn a_leak_needs_enough_samples_and_a_real_increase() {
    let mut agg = seeded(Limits::default());
    // Two samples rising: a line, not yet a trend.
    run(&mut agg, &[open(500 * MS, P, 3, FdKind::File, Some(1))]);
    run(&mut agg, &[open(600 * MS, P, 4, FdKind::File, Some(1))]);
    agg.tick(SEC);
    run(&mut agg, &[open(1500 * MS, P, 5, FdKind::File, Some(1))]);
    run(&mut agg, &[close(1600 * MS, P, 4)]);
    agg.tick(2 * SEC);
    assert_eq!(trend(&agg.findings(2 * SEC, 0)[0]), Trend::Stable);
    // Samples 2, 2, 3: rising, from three intervals, but one more is not growth.
    run(&mut agg, &[open(2500 * MS, P, 6, FdKind::File, Some(1))]);
    agg.tick(3 * SEC);
    let f = agg.findings(3 * SEC, 0);
    assert!(f[0].rate_per_s > 0.0);
    assert_eq!(trend(&f[0]), Trend::Stable);
    // 2, 2, 3, 4: two more than the window's first.
    run(&mut agg, &[open(3500 * MS, P, 7, FdKind::File, Some(1))]);
    agg.tick(4 * SEC);
    assert_eq!(trend(&agg.findings(4 * SEC, 0)[0]), Trend::Leak);
}

#[test]
fn growth_younger_than_min_age_is_no_finding_at_all() {
    let mut agg = seeded(Limits::default());
    for k in 0..4 {
        let opened = 10 * SEC + k * 100 * MS + 50 * MS;
        run(
            &mut agg,
            &[open(opened, P, 3 + k as i32, FdKind::File, Some(1))],
        );
        agg.tick(opened + 50 * MS);
    }
    let now = 10 * SEC + 400 * MS;
    assert!(agg.findings(now, 5 * SEC).is_empty());
    // The counts alone would make it one.
    assert_eq!(trend(&agg.findings(now, 0)[0]), Trend::Leak);
}

#[test]
fn a_big_pool_opened_at_once_then_held_is_stable() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, SEC, &mut fd, 50, 1);
    for second in 2..=30 {
        agg.tick(second * SEC);
    }
    let f = agg.findings(30 * SEC, 5 * SEC);
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].outstanding, f[0].rate_per_s), (50, 0.0));
    assert_eq!(
        leak(&f[0]),
        &LeakDetail {
            trend: Trend::Stable,
            destroyed: 0,
            age_p50_ns: 29 * SEC,
            age_p90_ns: 29 * SEC,
        }
    );
}

#[test]
fn a_pool_opened_across_one_tick_then_held_is_stable_not_a_leak() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, 1900 * MS, &mut fd, 25, 1);
    agg.tick(2 * SEC);
    open_many(&mut agg, 2100 * MS, &mut fd, 25, 1);
    for second in 3..=6 {
        agg.tick(second * SEC);
    }
    let f = agg.findings(6 * SEC, SEC);
    assert_eq!(f[0].outstanding, 50);
    // Samples 25, 50, 50, 50, 50: by the counts it grew, by more than enough, over enough.
    assert!(f[0].rate_per_s > 0.0);
    assert_eq!(trend(&f[0]), Trend::Stable);
}

#[test]
fn a_pool_grown_once_on_demand_is_stable() {
    // One connection, then the rest of the pool in one burst a tick later.
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, 500 * MS, &mut fd, 1, 1);
    agg.tick(SEC);
    agg.tick(2 * SEC);
    open_many(&mut agg, 2500 * MS, &mut fd, 9, 1);
    for second in 3..=5 {
        agg.tick(second * SEC);
    }
    assert_eq!(trend(&agg.findings(5 * SEC, 0)[0]), Trend::Stable);
}

#[test]
fn a_leak_that_stopped_turns_stable_once_the_window_passes() {
    let limits = Limits {
        rate_window_ns: 10 * SEC,
        ..Limits::default()
    };
    let mut agg = seeded(limits);
    let mut fd = 3;
    for second in 1..=20 {
        if second <= 5 {
            open_many(&mut agg, second * SEC - 500 * MS, &mut fd, 2, 1);
        }
        agg.tick(second * SEC);
        if second == 5 {
            assert_eq!(trend(&agg.findings(5 * SEC, 0)[0]), Trend::Leak);
        }
    }
    let f = agg.findings(20 * SEC, 0);
    assert_eq!((f[0].outstanding, trend(&f[0])), (10, Trend::Stable));
}

#[test]
fn a_burst_released_is_reported_released_for_one_window_then_gone() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, SEC, &mut fd, 10, 1);
    for second in 2..=5 {
        agg.tick(second * SEC);
    }
    assert_eq!(trend(&agg.findings(5 * SEC, 2 * SEC)[0]), Trend::Stable);
    run(&mut agg, &[close_range(5500 * MS, P, 3, 12)]);
    let f = agg.findings(6 * SEC, 2 * SEC);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].outstanding, f[0].created, f[0].oldest_age_ns),
        (0, 10, 4500 * MS),
        "as old as its oldest got"
    );
    assert_eq!((f[0].sample_path.as_deref(), f[0].exited), (None, false));
    assert_eq!(
        leak(&f[0]),
        &LeakDetail {
            trend: Trend::Released,
            destroyed: 10,
            age_p50_ns: 0,
            age_p90_ns: 0,
        }
    );
    // Never old enough to be a finding at a larger min age: nothing was released.
    assert!(agg.findings(6 * SEC, 5 * SEC).is_empty());
    for second in 6..=65 {
        agg.tick(second * SEC);
    }
    assert_eq!(agg.findings(65500 * MS, 2 * SEC).len(), 1, "one window");
    assert!(agg.findings(65500 * MS + 1, 2 * SEC).is_empty());
    assert_eq!(process(&agg, P).groups.len(), 1);
    agg.tick(66 * SEC);
    assert_eq!(process(&agg, P).groups.len(), 0, "dropped: bounded");
}

#[test]
fn short_lived_objects_are_never_released_findings() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            open(SEC, P, 3, FdKind::Socket, Some(1)),
            close(SEC + 10 * MS, P, 3),
        ],
    );
    assert!(agg.findings(2 * SEC, SEC).is_empty());
}

#[test]
fn a_brief_reopen_after_a_release_keeps_the_release_reported() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, SEC, &mut fd, 10, 1);
    run(&mut agg, &[close_range(11 * SEC, P, 3, 12)]);
    run(
        &mut agg,
        &[
            open(12 * SEC, P, 3, FdKind::File, Some(1)),
            close(12 * SEC + 10 * MS, P, 3),
        ],
    );
    let f = agg.findings(13 * SEC, 5 * SEC);
    assert_eq!((f.len(), f[0].oldest_age_ns), (1, 10 * SEC));
    assert_eq!((trend(&f[0]), leak(&f[0]).destroyed), (Trend::Released, 11));
    // Once reopened it is live again, not released.
    run(&mut agg, &[open(14 * SEC, P, 3, FdKind::File, Some(1))]);
    let f = agg.findings(20 * SEC, 5 * SEC);
    assert_eq!((f[0].outstanding, trend(&f[0])), (1, Trend::Stable));
    assert_eq!(agg.findings(72 * SEC, 0)[0].outstanding, 1);
}

#[test]
fn destroyed_counts_every_release_while_traced() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, SEC, &mut fd, 6, 1); // 3..=8
    run(
        &mut agg,
        &[
            open(SEC, P, 9, FdKind::File, Some(2)),
            spawn_thread(SEC, P, 101, 3),
            spawn_thread(SEC, P, 102, 3),
            spawn_thread(SEC, P, 103, 3),
            close(2 * SEC, P, 3),
            // dup2 over fd 4 closes it.
            dup(2 * SEC, P, 4, 9, 4),
            close_range(2 * SEC, P, 5, 6),
            exit(2 * SEC, P, 101, Some(false)),
        ],
    );
    let f = agg.findings(3 * SEC, 0);
    let fds = finding(&f, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!((fds.outstanding, leak(&fds).destroyed), (2, 4));
    let threads = finding(&f, P, None, Some(stack(P, 0, 3))).unwrap();
    assert_eq!((threads.outstanding, leak(&threads).destroyed), (2, 1));
    let copy = finding(&f, P, Some(FdKind::File), Some(stack(P, 0, 4))).unwrap();
    assert_eq!(leak(&copy).destroyed, 0);

    // An exec ends every thread but the one execing, and closes the close-on-exec fds (7).
    run(&mut agg, &[exec(4 * SEC, P, 102)]);
    assert_eq!(agg.resync(&snap(P, 5 * SEC, &[P], &[0, 1, 2, 4, 8, 9])), 0);
    // A resync finds fd 8 gone.
    assert_eq!(agg.resync(&snap(P, 6 * SEC, &[P], &[0, 1, 2, 4, 9])), 1);
    check(&agg);
    let f = agg.findings(6 * SEC, 0);
    let fds = finding(&f, P, Some(FdKind::File), Some(stack(P, 0, 1))).unwrap();
    assert_eq!((fds.outstanding, trend(&fds)), (0, Trend::Released));
    assert_eq!((leak(&fds).destroyed, fds.oldest_age_ns), (6, 5 * SEC));
    let threads = finding(&f, P, None, Some(stack(P, 0, 3))).unwrap();
    assert_eq!((threads.outstanding, leak(&threads).destroyed), (1, 2));

    // What goes with the process is held at exit, not destroyed.
    agg.process_gone(P, 7 * SEC);
    let f = agg.findings(8 * SEC, 0);
    let threads = finding(&f, P, None, Some(stack(P, 0, 3))).unwrap();
    assert!(threads.exited);
    assert_eq!((threads.outstanding, leak(&threads).destroyed), (1, 2));
    let copy = finding(&f, P, Some(FdKind::File), Some(stack(P, 0, 4))).unwrap();
    assert_eq!((copy.outstanding, leak(&copy).destroyed), (1, 0));
}

#[test]
fn the_last_threads_exit_is_the_processes_not_a_release() {
    let mut agg = seeded(Limits::default());
    run(
        &mut agg,
        &[
            fork(SEC, P, 200, 4),
            spawn_thread(SEC, 200, 201, 5),
            open(SEC, 200, 3, FdKind::File, Some(6)),
            exit(2 * SEC, 200, 201, None),
        ],
    );
    assert!(agg.is_live(200));
    // No group_dead: the last known thread of a seeded process ends it.
    run(&mut agg, &[exit(3 * SEC, 200, 200, None)]);
    assert!(!agg.is_live(200));
    let f: Vec<Finding> = agg
        .findings(4 * SEC, 0)
        .into_iter()
        .filter(|f| f.pid == 200)
        .collect();
    assert_eq!(f.len(), 2, "{f:?}");
    let fd = finding(&f, 200, Some(FdKind::File), Some(stack(200, 0, 6))).unwrap();
    assert_eq!(
        (fd.outstanding, trend(&fd), leak(&fd).destroyed),
        (1, Trend::Stable, 0)
    );
    let exited = finding(&f, 200, None, Some(stack(200, 0, 5))).unwrap();
    assert_eq!(
        (trend(&exited), leak(&exited).destroyed),
        (Trend::Released, 1)
    );
    // The thread the process ended with neither leaks nor was released.
    assert!(finding(&f, 200, None, Some(stack(P, 0, 4))).is_none());
}

#[test]
fn age_percentiles_are_nearest_rank_over_the_outstanding_objects() {
    let mut agg = seeded(Limits::default());
    let opens: Vec<Event> = (1..=10)
        .map(|k| open(k * SEC, P, 2 + k as i32, FdKind::File, Some(1)))
        .collect();
    run(&mut agg, &opens);
    let f = agg.findings(11 * SEC, 0);
    // Ages 1 s ..= 10 s: the 5th and the 9th youngest.
    assert_eq!(f[0].oldest_age_ns, 10 * SEC);
    assert_eq!(
        (leak(&f[0]).age_p50_ns, leak(&f[0]).age_p90_ns),
        (5 * SEC, 9 * SEC)
    );
    // Closed ones no longer count.
    run(&mut agg, &[close_range(11 * SEC, P, 3, 7)]);
    let f = agg.findings(11 * SEC, 0);
    assert_eq!(
        (leak(&f[0]).age_p50_ns, leak(&f[0]).age_p90_ns),
        (3 * SEC, 5 * SEC)
    );

    // Creation times oldest first, at now = 100.
    assert_eq!(age_percentile(&[40], 50, 100), 60);
    assert_eq!(age_percentile(&[40], 90, 100), 60);
    // Ages 10, 20, 30, 40: ranks ceil(2) and ceil(3.6).
    let four = [60, 70, 80, 90];
    assert_eq!(age_percentile(&four, 50, 100), 20);
    assert_eq!(age_percentile(&four, 90, 100), 40);
    // Ages 5, 5, 5, 50, 50: ranks 3 and 5.
    let ties = [50, 50, 95, 95, 95];
    assert_eq!(age_percentile(&ties, 50, 100), 5);
    assert_eq!(age_percentile(&ties, 90, 100), 50);
    assert_eq!(age_percentile(&[], 50, 100), 0);
}

#[test]
fn findings_rank_leaks_then_stable_then_released() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, 500 * MS, &mut fd, 20, 2);
    open_many(&mut agg, 500 * MS, &mut fd, 30, 3);
    for second in 1..=3 {
        open_many(&mut agg, second * SEC - 100 * MS, &mut fd, 1, 1);
        agg.tick(second * SEC);
    }
    run(&mut agg, &[close_range(3500 * MS, P, 23, 52)]);
    let order: Vec<(Option<u32>, u64, Trend)> = agg
        .findings(4 * SEC, 0)
        .iter()
        .map(|f| (f.stack.map(|s| s.id), f.outstanding, trend(f)))
        .collect();
    assert_eq!(
        order,
        [
            (Some(1), 3, Trend::Leak),
            (Some(2), 20, Trend::Stable),
            (Some(3), 0, Trend::Released),
        ]
    );
}

#[test]
fn an_exited_process_keeps_its_verdicts_as_they_were_at_exit() {
    let mut agg = seeded(Limits::default());
    let mut fd = 3;
    open_many(&mut agg, 500 * MS, &mut fd, 20, 2);
    open_many(&mut agg, 500 * MS, &mut fd, 5, 3);
    for second in 1..=5 {
        open_many(&mut agg, second * SEC - 500 * MS, &mut fd, 2, 1);
        agg.tick(second * SEC);
    }
    run(
        &mut agg,
        &[
            close_range(5 * SEC, P, 23, 27),
            exit(5500 * MS, P, P, Some(true)),
        ],
    );
    let f = agg.findings(20 * SEC, SEC);
    let order: Vec<(Option<u32>, u64, Trend, bool)> = f
        .iter()
        .map(|f| (f.stack.map(|s| s.id), f.outstanding, trend(f), f.exited))
        .collect();
    assert_eq!(
        order,
        [
            (Some(1), 10, Trend::Leak, true),
            (Some(2), 20, Trend::Stable, true),
            (Some(3), 0, Trend::Released, true),
        ]
    );
    // Ages at exit: 1, 1, 2, 2, 3, 3, 4, 4, 5, 5 s.
    assert_eq!(
        (leak(&f[0]).age_p50_ns, leak(&f[0]).age_p90_ns),
        (3 * SEC, 5 * SEC)
    );
    assert_eq!(leak(&f[0]).destroyed, 0, "held at exit, not released");
    // Long after, the leak and the pool are still what it held; the release has aged out.
    let f = agg.findings(1000 * SEC, SEC);
    let trends: Vec<Trend> = f.iter().map(trend).collect();
    assert_eq!(trends, [Trend::Leak, Trend::Stable]);
}

// ---- goroutines ----

/// Goroutine `goid` created by goroutine `parent` at `ts_ns`, from stack `stack_id`; its g
/// lives at `0xc000 << 16 | goid` and the `go` statement is at `0x4000 + stack_id`.
fn go(ts_ns: u64, goid: u64, parent: u64, stack_id: Option<u32>) -> Event {
    let goroutine = Goroutine {
        goid,
        parent_goid: parent,
        g: 0xc000 << 16 | goid,
        gopc: 0x4000 + u64::from(stack_id.unwrap_or(0)),
        startpc: 0x5000,
    };
    ev(
        ts_ns,
        P,
        P,
        What::GoroutineNew {
            goroutine,
            stack: stack_id,
        },
    )
}

fn go_exit(ts_ns: u64, goid: u64) -> Event {
    ev(ts_ns, P, P, What::GoroutineExit { goid })
}

fn goroutine_findings(agg: &Aggregator, now_ns: u64) -> Vec<Finding> {
    agg.findings(now_ns, 0)
        .into_iter()
        .filter(|f| f.resource == Resource::Goroutine)
        .collect()
}

#[test]
fn goroutines_that_never_end_are_a_leak_of_their_creation_stack() {
    let mut agg = seeded(Limits::default());
    let mut goid = 10;
    for second in 1..=5 {
        // Each interval: two leak from stack 1, three come and go from stack 2.
        let mut events = Vec::new();
        for _ in 0..2 {
            goid += 1;
            events.push(go(second * SEC - 500 * MS, goid, 1, Some(1)));
        }
        for _ in 0..3 {
            goid += 1;
            events.push(go(second * SEC - 400 * MS, goid, 1, Some(2)));
            events.push(go_exit(second * SEC - 300 * MS, goid));
        }
        run(&mut agg, &events);
        agg.tick(second * SEC);
    }
    let f = goroutine_findings(&agg, 5 * SEC);
    let leaked = finding(&f, P, None, Some(stack(P, 0, 1))).expect("the leaking stack");
    assert_eq!((leaked.outstanding, leaked.created), (10, 10));
    assert_eq!(trend(&leaked), Trend::Leak);
    let detail = leaked.goroutine.as_ref().expect("goroutine detail");
    assert_eq!((detail.gopc, detail.startpc), (0x4001, 0x5000));
    // The oldest first, each with the address of its g.
    assert_eq!(detail.live.len(), 10);
    assert_eq!(detail.live[0], (11, 0xc000 << 16 | 11));
    let churned = finding(&f, P, None, Some(stack(P, 0, 2))).expect("the churning stack");
    assert_eq!((churned.outstanding, churned.created), (0, 15));
    assert_eq!(trend(&churned), Trend::Released);
    assert_eq!(agg.processes()[0].goroutines, 10);
}

#[test]
fn a_goroutine_the_library_starts_keeps_its_ancestors_stacks() {
    let mut agg = seeded(Limits::default());
    // User code (stack 1) starts a dialer (goroutine 2); the dialer (stack 2, library only)
    // starts a read loop (goroutine 3, stack 3) and ends.
    run(
        &mut agg,
        &[
            go(SEC, 2, 1, Some(1)),
            go(2 * SEC, 3, 2, Some(3)),
            go_exit(3 * SEC, 2),
        ],
    );
    let f = goroutine_findings(&agg, 4 * SEC);
    let read_loop = finding(&f, P, None, Some(stack(P, 0, 3))).expect("read loop");
    let lineage = &read_loop.goroutine.as_ref().unwrap().lineage;
    // Its parent's creation stack; the parent's parent (goroutine 1) was never seen start.
    assert_eq!(lineage, &vec![stack(P, 0, 1)]);
    // A third generation carries both.
    run(&mut agg, &[go(4 * SEC, 4, 3, Some(4))]);
    let f = goroutine_findings(&agg, 5 * SEC);
    let grandchild = finding(&f, P, None, Some(stack(P, 0, 4))).expect("grandchild");
    assert_eq!(
        grandchild.goroutine.as_ref().unwrap().lineage,
        vec![stack(P, 0, 3), stack(P, 0, 1)]
    );
}

#[test]
fn goroutine_ends_unseen_and_repeated_goids_are_counted() {
    let mut agg = seeded(Limits::default());
    // Goroutine 7 started before tracing: its end is counted, not an error.
    run(&mut agg, &[go_exit(SEC, 7)]);
    assert_eq!(agg.counters().untracked_goroutine_exits, 1);
    // A goid seen start twice: the first end was missed.
    run(
        &mut agg,
        &[go(SEC, 8, 1, Some(1)), go(2 * SEC, 8, 1, Some(1))],
    );
    assert_eq!(agg.counters().resync_mismatches, 1);
    assert_eq!(agg.processes()[0].goroutines, 1);
}

#[test]
fn an_exec_ends_every_goroutine_and_a_bound_turns_goroutines_away() {
    let mut agg = seeded(Limits {
        max_objects_per_process: 6,
        ..Limits::default()
    });
    // One thread and three fds from the seed: room for two goroutines.
    run(
        &mut agg,
        &[
            go(SEC, 1, 0, Some(1)),
            go(SEC, 2, 1, Some(1)),
            go(SEC, 3, 1, Some(1)),
        ],
    );
    assert_eq!(agg.processes()[0].goroutines, 2);
    assert_eq!(agg.counters().dropped_objects, 1);
    assert!(agg.processes()[0].incomplete);
    run(&mut agg, &[exec(2 * SEC, P, P)]);
    assert_eq!(agg.processes()[0].goroutines, 0);
    let f = goroutine_findings(&agg, 3 * SEC);
    assert!(f.iter().all(|f| f.outstanding == 0), "{f:?}");
}
