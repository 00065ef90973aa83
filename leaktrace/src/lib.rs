//! leaktrace userspace: probes → decoder → aggregator → symbolizer → reporters.
//!
//! Data flows one way. [`loader`] loads and attaches the eBPF programs, [`reader`] drains the
//! ring buffer, [`decoder`] turns records into [`event::Event`]s, [`aggregator`] (pure: no I/O,
//! no clock) keeps what is outstanding and makes [`model::Finding`]s, [`symbolizer`] turns
//! stacks into frames, and [`report`] prints them. Blocked waiters take a side road: [`waitscan`]
//! reads the kernel's in-flight futex waits (lock owners via [`lockowner`], stacks walked from
//! userspace by [`userstack`], both reading memory through [`procmem`]) and [`waiters`] (pure)
//! judges them. [`unwind`] completes user stacks of code without frame pointers from DWARF call
//! frame information. [`metrics`] and
//! [`serve`] export reports to Prometheus and HTTP clients in daemon mode; [`cgroup`] and [`pods`]
//! say which container and pod each process runs in. [`goruntime`] reads Go binaries and
//! [`goprocs`] attaches goroutine probes to them and names what goroutine findings show.
//! [`runtime`] wires the steps together.

pub mod aggregator;
pub mod cgroup;
pub mod cli;
pub mod decoder;
pub mod event;
pub mod failure;
pub mod floor;
pub mod folded;
pub mod goprocs;
pub mod goruntime;
pub mod kubeapi;
pub mod loader;
pub mod lockowner;
pub mod metrics;
pub mod model;
pub mod pods;
pub mod preflight;
pub mod procfs;
pub mod procmem;
pub mod reader;
pub mod report;
pub mod runtime;
pub mod serve;
pub mod stacks;
pub mod symbolizer;
pub mod syscalls;
pub mod target;
pub mod tracefs;
pub mod trend;
pub mod unwind;
pub mod userstack;
pub mod verdicts;
pub mod waiters;
pub mod waitscan;
