//! The text parsers of what the tracer reads about other processes and the kernel: /proc/PID
//! status, cgroup, maps, task syscall and fd link targets, the kubelet's log names, tracepoint
//! formats and a Go binary's version string. Any text gives an answer or None, never a panic.
#![no_main]

use leaktrace::goruntime::GoVersion;
use leaktrace::model::FdKind;
use leaktrace::tracefs::Format;
use leaktrace::{cgroup, procfs, unwind, waitscan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = procfs::parse_status_tgid(&text);
    let _ = cgroup::parse(&text);
    let format = Format::parse(&text);
    let _ = format.offset_of("fd", 4);
    let _ = format.field_after("__syscall_nr");
    for line in text.lines() {
        let _ = cgroup::parse_pod_log_dir(line);
        let _ = cgroup::parse_container_log(line);
        let _ = waitscan::parse_syscall_line(line);
        let _ = unwind::parse_maps_line(line);
        let _ = FdKind::from_link(line);
        let _ = GoVersion::parse(line);
    }
});
