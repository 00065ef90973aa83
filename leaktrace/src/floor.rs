//! `leaktrace __floor`: the benchmark floor. Attaches the empty eBPF program `floor` to every
//! tracepoint leaktrace uses and holds it until standard input closes, so `cargo xtask bench`
//! can measure what the kernel alone charges for a program on those tracepoints.

use std::io::Read as _;

use crate::{
    failure::Failure,
    loader::{LoadOptions, Probes},
    preflight,
    tracefs::Tracefs,
};

/// The hidden first argument that runs [`main`].
pub const FLOOR_ARG: &str = "__floor";

/// Prints `attached <n>` on stdout once every tracepoint runs the empty program.
pub fn main() -> anyhow::Result<i32> {
    preflight::check_privileges()?;
    let tracefs = Tracefs::find_or_mount().map_err(Failure::Kernel)?;
    let probes = Probes::load(
        &tracefs,
        &LoadOptions {
            ring_bytes: leaktrace_common::capacity::EVENTS_BYTES,
            trace_all: false,
            stack_copy_bytes: 0,
            floor: true,
        },
    )?;
    for s in &probes.skipped {
        eprintln!("leaktrace: floor: skipped {}: {}", s.name, s.reason);
    }
    println!("attached {}", probes.attached.len());
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(0)
}
