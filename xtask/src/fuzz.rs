//! `cargo xtask fuzz`: the cargo-fuzz targets of leaktrace/fuzz, the parsers of what other
//! processes and the kernel hand the tracer, each run for a fixed time with no crash allowed.
//!
//! libFuzzer with coverage instrumentation but no sanitizer (`-s none`): the one toolchain
//! here is stable, and AddressSanitizer needs nightly's -Zsanitizer. The fuzzed code is safe
//! Rust but for its ABI reads, so a crash is a panic, which libFuzzer catches either way.
//! Each target starts from a corpus seeded with real inputs (this machine's /proc files and
//! tracepoint formats, /bin/true, the Go reproducers) and kept in target/fuzz/corpus between
//! runs; a crash leaves its input in target/fuzz/artifacts and fails the task.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::{bootstrap, golang, reports_version, run, target_root, workspace};

/// cargo-fuzz release installed when missing (builds with rustc 1.95).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The targets (leaktrace/fuzz/fuzz_targets/*.rs) and their largest input, in bytes: the Go
/// and ELF targets take whole binaries (the Go reproducers are 6-10 MB).
const TARGETS: &[(&str, usize)] = &[
    ("records", 64 << 10),
    ("proc_text", 64 << 10),
    ("go_binary", 12 << 20),
    ("unwind_elf", 4 << 20),
];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Run only these targets (repeatable); all by default.
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    // leaktrace's build script builds the eBPF programs, under cargo fuzz as anywhere.
    bootstrap()?;
    ensure_cargo_fuzz()?;
    for name in &args.targets {
        if !TARGETS.iter().any(|(target, _)| target == name) {
            bail!("no fuzz target {name}");
        }
    }
    let go = golang::build_host()?;
    let dir = target_root().join("fuzz");
    run(&mut cargo_fuzz("build", &dir))?;
    let mut summary = Vec::new();
    for &(target, max_len) in TARGETS {
        if !args.targets.is_empty() && !args.targets.iter().any(|t| t == target) {
            continue;
        }
        let corpus = dir.join("corpus").join(target);
        let artifacts = dir.join("artifacts").join(target);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        seed(target, &corpus, &go.binaries)?;
        let log = dir.join(format!("{target}.log"));
        let status = cargo_fuzz("run", &dir)
            .arg(target)
            .arg(&corpus)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-max_len={max_len}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .args(["-timeout=20", "-rss_limit_mb=4096", "-print_final_stats=1"])
            .stderr(fs::File::create(&log)?)
            .status()
            .context("cannot run cargo fuzz")?;
        let text = fs::read_to_string(&log)?;
        if !status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({status}); its input is in {}:\n{}",
                artifacts.display(),
                tail.join("\n")
            );
        }
        let stat = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map_or("?", str::trim)
                .to_owned()
        };
        summary.push(format!(
            "  {target:<11} {:>10} runs in {} s, {} corpus inputs, no crash",
            stat("stat::number_of_executed_units:"),
            args.seconds,
            fs::read_dir(&corpus)?.count(),
        ));
    }
    eprintln!("xtask: fuzz:\n{}", summary.join("\n"));
    Ok(())
}

/// `cargo fuzz <task> -s none -O --target-dir <target_dir>`: without a sanitizer (see the module
/// docs), optimized, builds kept under target/.
fn cargo_fuzz(task: &str, target_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace().join("leaktrace"))
        .args(["fuzz", task, "-s", "none", "-O", "--target-dir"])
        .arg(target_dir);
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    if reports_version(
        Command::new("cargo").args(["fuzz", "--version"]),
        CARGO_FUZZ_VERSION,
    ) {
        eprintln!("xtask: cargo-fuzz {CARGO_FUZZ_VERSION} present");
        return Ok(());
    }
    run(Command::new("cargo").args([
        "install",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
        "--locked",
    ]))
}

/// Puts real inputs of the target's kind into its corpus (overwriting earlier seeds).
fn seed(target: &str, corpus: &Path, go_binaries: &[PathBuf]) -> Result<()> {
    let copy = |from: &Path, name: &str| -> Result<()> {
        let bytes = fs::read(from).with_context(|| format!("seed {}", from.display()))?;
        fs::write(corpus.join(name), bytes)?;
        Ok(())
    };
    match target {
        "proc_text" => {
            for file in ["status", "cgroup", "maps", "syscall"] {
                copy(&Path::new("/proc/self").join(file), &format!("seed-{file}"))?;
            }
            let tracing = Path::new("/sys/kernel/tracing/events");
            for event in ["syscalls/sys_enter_openat", "task/task_newtask"] {
                let format = tracing.join(event).join("format");
                if format.exists() {
                    copy(&format, &format!("seed-{}", event.replace('/', "-")))?;
                }
            }
            let link = fs::read_link("/proc/self/fd/0").unwrap_or_default();
            fs::write(
                corpus.join("seed-fd-link"),
                link.as_os_str().as_encoded_bytes(),
            )?;
        }
        "go_binary" => {
            let go = go_binaries
                .iter()
                .min_by_key(|bin| fs::metadata(bin).map_or(u64::MAX, |m| m.len()))
                .context("no Go reproducer built")?;
            copy(go, "seed-go")?;
        }
        "unwind_elf" => {
            // Registers 0 (ip at the binary's start), no stack bytes, then the binary.
            let mut input = vec![0u8; 34];
            input.extend(fs::read("/bin/true")?);
            fs::write(corpus.join("seed-true"), input)?;
        }
        _ => {}
    }
    Ok(())
}
