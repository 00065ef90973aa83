//! Ring-buffer records → decoder → aggregator. Each step of the input is an operation: a record
//! of a kind the input picks (its fields from the input, its pid and tid from a handful, so
//! records meet the same processes and threads), a report tick, a report, a loss mark or a
//! process leaving. Records in any order and with any field values must neither panic nor let
//! the aggregator outgrow its bounds. Undecodable raw bytes go through the decoder alone.
#![no_main]

use std::mem::size_of;

use leaktrace::aggregator::{Aggregator, Limits};
use leaktrace::decoder;
use leaktrace::event::Record;
use leaktrace_common as abi;
use libfuzzer_sys::fuzz_target;

/// Small bounds, so the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_processes: 3,
    max_objects_per_process: 8,
    max_exited: 2,
    rate_window_ns: 1_000,
    max_samples: 4,
    leak_min_samples: 2,
    leak_min_increase: 1,
    exit_group_ns: 50,
};

/// Stack bytes in a fuzzed stack sample.
const SAMPLE_STACK: usize = 64;

/// A record's size in the ring buffer (padded to 8 bytes), by kind.
fn record_size(kind: abi::EventKind) -> usize {
    let size = match kind {
        abi::EventKind::TaskNew => size_of::<abi::TaskNewEvent>(),
        abi::EventKind::ThreadExit => size_of::<abi::ThreadExitEvent>(),
        abi::EventKind::Exec => size_of::<abi::ExecEvent>(),
        abi::EventKind::ExitGroup => size_of::<abi::ExitGroupEvent>(),
        abi::EventKind::Fd => size_of::<abi::FdEvent>(),
        abi::EventKind::FdPath => size_of::<abi::FdPathEvent>(),
        abi::EventKind::StackSample => abi::StackSample::HEAD + SAMPLE_STACK,
        abi::EventKind::GoroutineNew => size_of::<abi::GoroutineNewEvent>(),
        abi::EventKind::GoroutineExit => size_of::<abi::GoroutineExitEvent>(),
    };
    size.next_multiple_of(8)
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = data.split_at(n.min(data.len()));
    *data = rest;
    head
}

fuzz_target!(|input: &[u8]| {
    let _ = decoder::probe_of(input);
    let _ = decoder::decode(input);

    let mut data = input;
    let mut aggregator = Aggregator::new(LIMITS);
    let mut now_ns = 0u64;
    while let [op, pid, ..] = *take(&mut data, 2) {
        let pid = 100 + u32::from(pid % 4);
        match op {
            0..=199 => {
                let Some(kind) = abi::EventKind::from_u16(u16::from(op % 9 + 1)) else {
                    continue;
                };
                let mut record = vec![0u8; record_size(kind)];
                let fields = take(&mut data, record.len());
                record[..fields.len()].copy_from_slice(fields);
                let header = abi::EventHeader {
                    ts_ns: now_ns + u64::from(record[0]),
                    tgid: pid,
                    tid: pid + u32::from(record[1] % 3),
                    kind: kind as u16,
                    probe: u16::from(record[2]),
                    _pad: 0,
                };
                write_header(&mut record, &header);
                if kind == abi::EventKind::StackSample {
                    let len_at = std::mem::offset_of!(abi::StackSample, len);
                    record[len_at..len_at + 4].copy_from_slice(&(SAMPLE_STACK as u32).to_ne_bytes());
                }
                if let Ok(Record::Event(event)) = decoder::decode(&record) {
                    now_ns = now_ns.max(event.ts_ns);
                    aggregator.apply(&event);
                }
            }
            200..=219 => aggregator.tick(now_ns),
            220..=234 => {
                let _ = aggregator.findings(now_ns, u64::from(op - 220));
                assert!(aggregator.processes().len() <= LIMITS.max_processes + LIMITS.max_exited);
            }
            235..=244 => aggregator.records_lost(pid),
            _ => aggregator.process_gone(pid, now_ns),
        }
        let _ = aggregator.take_new_stacks();
        let _ = aggregator.take_unseen();
        let _ = aggregator.take_execs();
    }
});

fn write_header(record: &mut [u8], header: &abi::EventHeader) {
    // SAFETY: every record is at least a header long, and EventHeader is plain old data.
    unsafe { record.as_mut_ptr().cast::<abi::EventHeader>().write_unaligned(*header) }
}
