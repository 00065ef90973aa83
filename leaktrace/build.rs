//! Builds the eBPF object with aya-build on the stable toolchain and embeds it in the binary.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    // build-std=core on stable: allowed for the eBPF sub-build only (aya-build reads this).
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let metadata = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&metadata).join("../leaktrace-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "leaktrace-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom("stable"),
    )
}
