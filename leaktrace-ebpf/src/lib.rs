#![no_std]
//! Empty library so `leaktrace` can name this crate as a build dependency and be rebuilt when
//! the eBPF programs change; the programs themselves are the `leaktrace` binary target.
