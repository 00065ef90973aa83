//! The I/O half of blocked-waiter tracking: each interval, the kernel's in-flight wait map
//! becomes a list of [`Wait`]s for the pure [`crate::waiters`] analysis, with stacks registered
//! and lock owners read from the waiting process.
//!
//! The kernel map only holds waits that began after leaktrace attached. A thread that was
//! already stuck — the deadlock you attach to after the fact — is found from
//! `/proc/PID/task/TID/syscall` when its process is seeded, and followed until it leaves that
//! call. Its wait began before tracing did, so its age is a lower bound and it has no stack.
//!
//! A wait's stack is unwound from userspace ([`Stacks::blocked`]) the first time a scan finds it
//! long, from the registers the probe saved; the thread has not run since, so it is the stack at
//! entry.

use std::{
    collections::{HashMap, HashSet},
    fs,
};

use leaktrace_common::{futex, InFlightWait, UserRegs};

use crate::{
    aggregator::Aggregator,
    lockowner,
    model::{StackId, Wait, WaitKind},
    stacks::Stacks,
};

/// A thread inside a syscall, from `/proc/PID/task/TID/syscall`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InSyscall {
    pub nr: u64,
    pub args: [u64; 6],
}

/// Parses `/proc/PID/task/TID/syscall`: `nr arg0 … arg5 sp pc` while in a syscall; `running`,
/// or `-1 sp pc` when not.
pub fn parse_syscall_line(line: &str) -> Option<InSyscall> {
    let mut fields = line.split_whitespace();
    let nr = fields.next()?.parse::<u64>().ok()?;
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    Some(InSyscall { nr, args })
}

/// The futex wait a thread is in, as recorded by the kernel probes: (op, uaddr, val).
fn as_wait(call: &InSyscall) -> Option<(u32, u64, u32)> {
    let nr = i64::try_from(call.nr).ok()?;
    if nr == libc::SYS_futex {
        let cmd = call.args[1] as u32 & futex::CMD_MASK;
        return futex::is_wait(cmd).then_some((cmd, call.args[0], call.args[2] as u32));
    }
    // futex_waitv's first argument is the waiter array, not a futex word: keep the array
    // address, which still tells waits apart.
    (nr == libc::SYS_futex_waitv).then_some((futex::WAITV, call.args[0], 0))
}

fn read_syscall(pid: u32, tid: u32) -> Option<InSyscall> {
    parse_syscall_line(&fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?)
}

/// A wait that began before tracing.
#[derive(Clone, Copy, Debug)]
struct Preexisting {
    tid: u32,
    call: InSyscall,
    wait: InFlightWait,
}

#[derive(Default)]
pub struct WaitScanner {
    preexisting: Vec<Preexisting>,
    /// Stack id of each long wait of the last scan, by (tid, start): unwound once per wait.
    stack_ids: HashMap<(u32, u64), StackId>,
}

/// Bound on waits remembered from before tracing (each is re-read every scan).
const MAX_PREEXISTING: usize = 4096;

impl WaitScanner {
    /// Notes the threads of `pid` already blocked in a futex wait; `since_ns` is when tracing
    /// of the process began, the most we know about when they started waiting.
    pub fn seed(&mut self, pid: u32, tids: &[u32], since_ns: u64) {
        for &tid in tids {
            if self.preexisting.len() >= MAX_PREEXISTING {
                return;
            }
            let Some(call) = read_syscall(pid, tid) else {
                continue;
            };
            let Some((op, uaddr, val)) = as_wait(&call) else {
                continue;
            };
            self.preexisting.push(Preexisting {
                tid,
                call,
                wait: InFlightWait {
                    start_ns: since_ns,
                    uaddr,
                    // Registers unknown: no stack.
                    regs: UserRegs::default(),
                    tgid: pid,
                    op,
                    val,
                    _pad: 0,
                },
            });
        }
    }

    /// Every blocked waiter now: the kernel's in-flight waits and the pre-existing ones still
    /// in the same call, those at least `min_wait_ns` old.
    pub fn scan(
        &mut self,
        in_flight: Vec<(u32, InFlightWait)>,
        aggregator: &mut Aggregator,
        stacks: &mut Stacks,
        now_ns: u64,
        min_wait_ns: u64,
    ) -> Vec<Wait> {
        let seen: HashSet<u32> = in_flight.iter().map(|(tid, _)| *tid).collect();
        // A thread that left its wait (or re-entered one the probes saw) is followed by the
        // kernel map from then on.
        self.preexisting
            .retain(|p| !seen.contains(&p.tid) && read_syscall(p.wait.tgid, p.tid) == Some(p.call));
        let old: Vec<(u32, InFlightWait)> =
            self.preexisting.iter().map(|p| (p.tid, p.wait)).collect();
        let mut stack_ids = HashMap::new();
        let waits = in_flight
            .into_iter()
            .chain(old)
            .filter(|(_, w)| now_ns.saturating_sub(w.start_ns) >= min_wait_ns)
            .map(|(tid, w)| {
                let stack = (w.regs.ip != 0).then(|| {
                    let key = (tid, w.start_ns);
                    let id = self
                        .stack_ids
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| stacks.blocked(w.tgid, w.regs));
                    stack_ids.insert(key, id);
                    id
                });
                Wait {
                    pid: w.tgid,
                    tid,
                    uaddr: w.uaddr,
                    kind: if w.op == futex::WAITV {
                        WaitKind::FutexWaitv
                    } else {
                        WaitKind::Futex
                    },
                    since_ns: w.start_ns,
                    stack: aggregator.stack_in(w.tgid, stack),
                    owner: lockowner::resolve(w.tgid, w.uaddr, w.op, w.val),
                }
            })
            .collect();
        self.stack_ids = stack_ids;
        waits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_thread_in_a_futex_wait() {
        let line = "202 0x7fec9c000ba0 0x189 0x0 0x0 0x0 0xffffffff 0x7feca3651950 0x7feca3ca3f16";
        let call = parse_syscall_line(line).unwrap();
        assert_eq!(call.nr, 202);
        assert_eq!(call.args[0], 0x7fec_9c00_0ba0);
        assert_eq!(call.args[5], 0xffff_ffff);
    }

    #[test]
    fn threads_not_in_a_syscall_parse_to_nothing() {
        assert_eq!(parse_syscall_line("running"), None);
        assert_eq!(parse_syscall_line("-1 0x7ffd059180b0 0x7feca3d162ec"), None);
        assert_eq!(parse_syscall_line(""), None);
        assert_eq!(parse_syscall_line("202 0x1 zz"), None);
    }

    #[test]
    fn only_futex_waits_count() {
        let wait = |nr: i64, op: u64| InSyscall {
            nr: nr as u64,
            args: [0x1000, op, 2, 0, 0, 0],
        };
        // FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME
        assert_eq!(
            as_wait(&wait(libc::SYS_futex, 0x189)),
            Some((futex::WAIT_BITSET, 0x1000, 2))
        );
        assert_eq!(
            as_wait(&wait(libc::SYS_futex, 0x80 | 6)),
            Some((futex::LOCK_PI, 0x1000, 2))
        );
        // FUTEX_WAKE is not a wait.
        assert_eq!(as_wait(&wait(libc::SYS_futex, 0x81)), None);
        assert_eq!(as_wait(&wait(libc::SYS_read, 0)), None);
        assert_eq!(
            as_wait(&wait(libc::SYS_futex_waitv, 0)).map(|w| w.0),
            Some(futex::WAITV)
        );
    }
}
