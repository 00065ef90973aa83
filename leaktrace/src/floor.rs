//! `leaktrace __floor [GO_BINARY…]`: the benchmark floor. Attaches the empty eBPF program `floor`
//! to every tracepoint leaktrace uses (and `go_floor` at the goroutine probe points of each Go
//! binary named) and holds them until standard input closes, so `cargo xtask bench` can measure
//! what the kernel alone charges for a program there.

use std::io::Read as _;

use crate::{
    failure::Failure,
    goruntime::GoBinary,
    loader::{LoadOptions, Probes},
    preflight,
    tracefs::Tracefs,
};

/// The hidden first argument that runs [`main`].
pub const FLOOR_ARG: &str = "__floor";

/// Prints `attached <n>` on stdout once every tracepoint (and the goroutine probe points of the
/// Go binaries in `go_binaries`) runs the empty program.
pub fn main(go_binaries: &[std::ffi::OsString]) -> anyhow::Result<i32> {
    preflight::check_privileges()?;
    let tracefs = Tracefs::find_or_mount().map_err(Failure::Kernel)?;
    let mut probes = Probes::load(
        &tracefs,
        &LoadOptions {
            ring_bytes: leaktrace_common::capacity::EVENTS_BYTES,
            trace_all: false,
            stack_copy_bytes: 0,
            paths: true,
            floor: true,
        },
    )?;
    for path in go_binaries.iter().map(std::path::Path::new) {
        let binary = GoBinary::inspect(path)?
            .ok_or_else(|| Failure::Usage(format!("{} is not a Go binary", path.display())))?;
        let fields = leaktrace_common::GoFields::default();
        let shown = path.display().to_string();
        probes
            .attach_go(path, &shown, &binary.probes, fields, None)
            .map_err(|e| Failure::Kernel(e.message))?;
    }
    for s in &probes.skipped {
        eprintln!("leaktrace: floor: skipped {}: {}", s.name, s.reason);
    }
    println!("attached {}", probes.attached.len());
    std::io::stdin().read_to_end(&mut Vec::new())?;
    Ok(0)
}
