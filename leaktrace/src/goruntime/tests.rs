//! Pure tests of the decoders on hand-made bytes, and tests on real Go binaries built from
//! [`PROGRAM`] with each toolchain of `LEAKTRACE_GO_TOOLCHAINS` (colon-separated `go` executables), for
//! amd64 and arm64, with and without `-ldflags="-s -w"`. Without toolchains those tests say
//! SKIPPED and pass.
//!
//! [`print_tables`] (ignored) prints the source of [`super::table`] from the same binaries.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use object::{Object, ObjectSegment};

use super::buildinfo;
use super::pclntab::{pcvalue, varint};
use super::*;

// ---------------------------------------------------------------------------------------------
// Decoders on hand-made bytes.

#[test]
fn varints() {
    assert_eq!(varint(&[0x00]), Some((0, 1)));
    assert_eq!(varint(&[0x7f, 0xff]), Some((127, 1)));
    assert_eq!(varint(&[0x80, 0x01]), Some((128, 2)));
    assert_eq!(varint(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Some((u32::MAX, 5)));
    assert_eq!(varint(&[0x80]), None, "truncated");
    assert_eq!(varint(&[0x80; 6]), None, "longer than a u32");
    assert_eq!(buildinfo::uvarint(&[0xac, 0x02]), Some((300, 2)));
    assert_eq!(buildinfo::uvarint(&[]), None);
}

#[test]
fn pcvalue_steps_from_minus_one() {
    // +5 (zigzag 10) for 3 quanta, -2 (zigzag 3) for 2 quanta, +300 (zigzag 600) for 1, end.
    let table = [0x0a, 0x03, 0x03, 0x02, 0xd8, 0x04, 0x01, 0x00];
    let entry = 0x1000;
    for (quantum, expected) in [
        (
            1,
            [Some(4), Some(4), Some(4), Some(2), Some(2), Some(302), None],
        ),
        (
            4,
            [Some(4), Some(4), Some(4), Some(2), Some(2), Some(302), None],
        ),
    ] {
        for (step, &value) in expected.iter().enumerate() {
            let pc = entry + step as u64 * u64::from(quantum);
            assert_eq!(
                pcvalue(&table, quantum, entry, pc),
                value,
                "step {step} ×{quantum}"
            );
        }
    }
    assert_eq!(pcvalue(&table[..3], 1, entry, entry + 4), None, "truncated");
    assert_eq!(pcvalue(&[], 1, entry, entry), None);
}

fn buildinfo_header(flags: u8) -> Vec<u8> {
    let mut header = b"\xff Go buildinf:".to_vec();
    header.extend([8, flags]);
    header.resize(32, 0);
    header
}

#[test]
fn buildinfo_inline_strings() {
    let mut header = buildinfo_header(2);
    header.push(8);
    header.extend(b"go1.23.9");
    header.extend([0x05, b'p', b'a', b't', b'h', b'\t']);
    let no_memory = |_, _| None;
    assert_eq!(buildinfo::parse(&header, no_memory).unwrap(), "go1.23.9");
    assert!(
        buildinfo::parse(&header[..36], no_memory).is_err(),
        "string cut"
    );
    assert!(
        buildinfo::parse(&header[..20], no_memory).is_err(),
        "header cut"
    );
}

#[test]
fn buildinfo_pointers_before_go1_18() {
    let mut header = buildinfo_header(0);
    header[16..24].copy_from_slice(&0x5000u64.to_le_bytes());
    let mut string_header = 0x6000u64.to_le_bytes().to_vec();
    string_header.extend(7u64.to_le_bytes());
    let memory = |address: u64, size: u64| -> Option<&[u8]> {
        match (address, size) {
            (0x5000, 16) => Some(&string_header),
            (0x6000, 7) => Some(b"go1.17.5"[..7].as_ref()),
            _ => None,
        }
    };
    assert_eq!(buildinfo::parse(&header, memory).unwrap(), "go1.17.");
    header[16..24].copy_from_slice(&0x7000u64.to_le_bytes());
    assert!(
        buildinfo::parse(&header, memory).is_err(),
        "dangling pointer"
    );
}

#[test]
fn buildinfo_found_only_aligned() {
    let mut data = vec![0u8; 64];
    data.extend(buildinfo_header(2));
    assert_eq!(buildinfo::find(&data).map(|found| found.len()), Some(32));
    let mut unaligned = vec![0u8; 8];
    unaligned.extend(buildinfo_header(2));
    assert_eq!(buildinfo::find(&unaligned), None);
    assert_eq!(buildinfo::find(&data[..80]), None, "header cut");
}

#[test]
fn go_versions() {
    let version = |text| GoVersion::parse(text);
    let v = |major, minor, patch| GoVersion {
        major,
        minor,
        patch,
    };
    assert_eq!(version("go1.23.9"), Some(v(1, 23, 9)));
    assert_eq!(version("go1.24rc1"), Some(v(1, 24, 0)));
    assert_eq!(version("go1.20"), Some(v(1, 20, 0)));
    assert_eq!(version("go1.22.3 X:boringcrypto"), Some(v(1, 22, 3)));
    assert_eq!(
        version("devel go1.25-1234abcd Tue Jan 1"),
        Some(v(1, 25, 0))
    );
    assert_eq!(version("1.23.9"), None);
    assert_eq!(version("go"), None);
    assert_eq!(v(1, 23, 9).to_string(), "go1.23.9");
    assert!(v(1, 20, 14) < OLDEST && OLDEST <= v(1, 21, 0) && v(1, 21, 0) < v(1, 100, 0));
}

#[test]
fn std_functions() {
    for std in [
        "net/http.(*Transport).dialConn",
        "runtime.goexit",
        "os/exec.(*Cmd).Start",
        "os/exec.(*Cmd).Start.func1",
        "sync.(*WaitGroup).Wait",
        "vendor/golang.org/x/net/http2/hpack.(*Decoder).Write",
        "internal/poll.(*FD).Read",
        "sync/atomic.(*Pointer[go.shape.struct { main.x int }]).Load",
    ] {
        assert!(is_std(std), "{std}");
    }
    for user in [
        "main.leakSend",
        "main.main.func1",
        "github.com/x/y.F",
        "example.com/m.F",
        "example.com/m/sub.(*T).M",
        "golang.org/x/sync/errgroup.(*Group).Go.func1",
        "main.F[go.shape.*net/http.Request]",
    ] {
        assert!(!is_std(user), "{user}");
    }
}

#[test]
fn status_names() {
    assert_eq!(status_name(0), "idle");
    assert_eq!(status_name(2), "running");
    assert_eq!(status_name(4), "waiting");
    assert_eq!(status_name(0x1004), "waiting", "_Gscan masked off");
    assert_eq!(status_name(6), "dead");
    assert_eq!(status_name(9), "preempted");
    assert_eq!(status_name(10), "leaked");
    assert_eq!(status_name(0x100b), "deadextra");
    assert_eq!(status_name(5), "unknown", "_Gmoribund_unused");
    assert_eq!(status_name(12), "unknown");
}

#[test]
fn call_sites() {
    // amd64: NOP, CALL +0x10 at 0x1001, the next instruction at 0x1006; target 0x1016.
    let code = [0x90, 0xe8, 0x10, 0x00, 0x00, 0x00, 0x90];
    assert_eq!(call_at(GoArch::Amd64, &code, 0x1000, 0x1016), Some(0x1001));
    assert_eq!(call_at(GoArch::Amd64, &code, 0x1000, 0x1017), None);
    // arm64: NOP, BL -2 instructions (at 0x2004 → 0x1ffc), NOP.
    let mut code = 0xd503_201fu32.to_le_bytes().to_vec();
    code.extend((0x9400_0000u32 | 0x03ff_fffe).to_le_bytes());
    code.extend(0xd503_201fu32.to_le_bytes());
    assert_eq!(call_at(GoArch::Arm64, &code, 0x2000, 0x1ffc), Some(0x2004));
    assert_eq!(call_at(GoArch::Arm64, &code, 0x2000, 0x2000), None);
}

#[test]
fn exit_probes_skip_the_stack_check_to_an_emulated_push() {
    let long = [
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xe3, 0x02, 0, 0, 0x55, 0x48,
    ];
    assert_eq!(frame_setup(GoArch::Amd64, &long, 0x1000), 0x100a);
    let short = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x20, 0x55];
    assert_eq!(frame_setup(GoArch::Amd64, &short, 0x1000), 0x1006);
    assert_eq!(frame_setup(GoArch::Amd64, &[0x55, 0x48], 0x1000), 0x1000);
    // Anything else, and arm64: the entry.
    assert_eq!(frame_setup(GoArch::Amd64, &[0x48, 0x83], 0x1000), 0x1000);
    assert_eq!(frame_setup(GoArch::Arm64, &long, 0x1000), 0x1000);
}

#[test]
fn tables_cover_supported_versions() {
    for minor in OLDEST.minor..=table::NEWEST_MINOR {
        let version = GoVersion {
            major: 1,
            minor,
            patch: 0,
        };
        assert!(table::layout(version).is_some(), "{version}");
        let reasons = table::wait_reasons(version);
        assert_eq!(reasons.first(), Some(&""), "{version}: waitReasonZero");
        for name in [
            "chan send",
            "chan receive",
            "select",
            "sleep",
            "IO wait",
            "semacquire",
        ] {
            assert!(reasons.contains(&name), "{version}: {name}");
        }
    }
    let newer = GoVersion {
        major: 1,
        minor: table::NEWEST_MINOR + 1,
        patch: 0,
    };
    assert_eq!(table::layout(newer), None);
    assert!(!table::wait_reasons(newer).is_empty(), "the newest names");
}

#[test]
fn not_go_binaries() {
    let me = std::env::current_exe().unwrap();
    assert!(
        GoBinary::inspect(&me).unwrap().is_none(),
        "this Rust test binary"
    );
    if Path::new("/bin/true").exists() {
        assert!(GoBinary::inspect(Path::new("/bin/true")).unwrap().is_none());
    }
    let dir = TempDir::new("garbage");
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("text", b"#!/bin/sh\necho hi\n".to_vec()),
        ("elf-magic", b"\x7fELF\x02\x01\x01".to_vec()),
        (
            "noise",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ] {
        let path = dir.path.join(name);
        fs::write(&path, bytes).unwrap();
        assert!(!matches!(GoBinary::inspect(&path), Ok(Some(_))), "{name}");
    }
    assert!(GoBinary::inspect(&dir.path.join("missing")).is_err());
}

// ---------------------------------------------------------------------------------------------
// Real Go binaries.

/// The program the samples are built from: goroutines started by closures, in main.main and in
/// a function of its own, blocked in a channel send, a select, a WaitGroup and a sleep.
const PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

//go:noinline
func leakSend() {
	ch := make(chan int)
	go func() { ch <- 1 }()
}

func main() {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { wg.Wait() }()
	go func() {
		select {
		case <-make(chan int):
		case <-time.After(time.Hour):
		}
	}()
	for i := 0; i < 3; i++ {
		leakSend()
	}
	fmt.Fprintln(os.Stderr, "started")
	if len(os.Args) > 1 {
		time.Sleep(time.Hour)
	}
}
"#;

struct Toolchain {
    go: PathBuf,
    /// `go env GOVERSION`: "go1.23.9".
    version: String,
}

struct Sample {
    toolchain: usize,
    arch: GoArch,
    stripped: bool,
    /// Built with -buildmode=pie (by Go's own linker, as without cgo).
    pie: bool,
    path: PathBuf,
}

struct Samples {
    toolchains: Vec<Toolchain>,
    samples: Vec<Sample>,
    _dir: TempDir,
}

impl Samples {
    fn go(&self, sample: &Sample) -> &Toolchain {
        &self.toolchains[sample.toolchain]
    }

    /// The sample of the same toolchain, arch and build mode, stripped or not.
    fn sibling(&self, of: &Sample, stripped: bool) -> &Sample {
        self.samples
            .iter()
            .find(|sample| {
                sample.stripped == stripped
                    && sample.pie == of.pie
                    && sample.toolchain == of.toolchain
                    && sample.arch == of.arch
            })
            .unwrap()
    }
}

/// The samples, built once per test process; None (after saying SKIPPED) without toolchains.
fn samples() -> Option<&'static Samples> {
    static SAMPLES: OnceLock<Option<Samples>> = OnceLock::new();
    let samples = SAMPLES.get_or_init(|| {
        let roots = std::env::var("LEAKTRACE_GO_TOOLCHAINS").unwrap_or_default();
        let gos: Vec<PathBuf> = roots
            .split(':')
            .filter(|go| !go.is_empty())
            .map(PathBuf::from)
            .collect();
        (!gos.is_empty()).then(|| build_samples(gos))
    });
    if samples.is_none() {
        eprintln!("SKIPPED: no Go toolchain (set LEAKTRACE_GO_TOOLCHAINS)");
    }
    samples.as_ref()
}

fn go_command(go: &Path) -> Command {
    let mut command = Command::new(go);
    command.envs([
        ("GOTOOLCHAIN", "local"),
        ("GOPROXY", "off"),
        ("GOFLAGS", "-mod=mod"),
        ("CGO_ENABLED", "0"),
    ]);
    if std::env::var_os("GOCACHE").is_none() && std::env::var_os("HOME").is_none() {
        command.env("GOCACHE", std::env::temp_dir().join("leaktrace-go-cache"));
    }
    command
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn build_samples(gos: Vec<PathBuf>) -> Samples {
    // The samples live as long as the test process, and statics are not dropped: remove those
    // of earlier processes.
    let prefix = "leaktrace-goruntime-samples-";
    for entry in fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|name| name.strip_prefix(prefix)?.split('-').next());
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let dir = TempDir::new("samples");
    let source = dir.path.join("src");
    fs::create_dir(&source).unwrap();
    fs::write(source.join("main.go"), PROGRAM).unwrap();
    fs::write(source.join("go.mod"), "module leaktest\n\ngo 1.21\n").unwrap();
    let toolchains: Vec<Toolchain> = gos
        .into_iter()
        .map(|go| {
            let version = run(go_command(&go).args(["env", "GOVERSION"]));
            Toolchain {
                version: version.trim().to_owned(),
                go,
            }
        })
        .collect();
    let mut samples = Vec::new();
    for (toolchain, go) in toolchains.iter().enumerate() {
        for arch in [GoArch::Amd64, GoArch::Arm64] {
            for (stripped, pie) in [(false, false), (true, false), (false, true), (true, true)] {
                let name = format!(
                    "{}-{arch:?}{}{}",
                    go.version,
                    if stripped { "-stripped" } else { "" },
                    if pie { "-pie" } else { "" }
                );
                samples.push(Sample {
                    toolchain,
                    arch,
                    stripped,
                    pie,
                    path: dir.path.join(name),
                });
            }
        }
    }
    std::thread::scope(|scope| {
        for sample in &samples {
            let go = &toolchains[sample.toolchain].go;
            let source = &source;
            scope.spawn(move || {
                let mut command = go_command(go);
                command
                    .current_dir(source)
                    .arg("build")
                    .arg("-o")
                    .arg(&sample.path);
                command.env(
                    "GOARCH",
                    match sample.arch {
                        GoArch::Amd64 => "amd64",
                        GoArch::Arm64 => "arm64",
                    },
                );
                if sample.stripped {
                    command.arg("-ldflags=-s -w");
                }
                if sample.pie {
                    command.arg("-buildmode=pie");
                }
                run(command.arg("."));
            });
        }
    });
    Samples {
        toolchains,
        samples,
        _dir: dir,
    }
}

fn inspect(path: &Path) -> GoBinary {
    GoBinary::inspect(path)
        .unwrap_or_else(|err| panic!("{}: {err:#}", path.display()))
        .unwrap_or_else(|| panic!("{}: not recognised as Go", path.display()))
}

#[test]
fn version_arch_and_layout_source() {
    let Some(samples) = samples() else { return };
    for sample in &samples.samples {
        let binary = inspect(&sample.path);
        let name = sample.path.display();
        assert_eq!(
            binary.version.to_string(),
            samples.go(sample).version,
            "{name}"
        );
        assert_eq!(binary.arch, sample.arch, "{name}");
        assert_eq!(binary.stripped, sample.stripped, "{name}");
        let source = if sample.stripped {
            LayoutSource::Table
        } else {
            LayoutSource::Dwarf
        };
        assert_eq!(binary.layout_from, source, "{name}");
        assert_eq!(binary.is_pie(), sample.pie, "{name}");
        let exit = if binary.version.minor >= 22 {
            "runtime.gdestroy"
        } else {
            "runtime.goexit0"
        };
        assert_eq!(binary.probes.exit_function, exit, "{name}");
    }
}

/// What keeps the table honest: each toolchain's DWARF says what the table says.
#[test]
fn dwarf_layout_equals_table() {
    let Some(samples) = samples() else { return };
    for sample in samples.samples.iter().filter(|sample| !sample.stripped) {
        let binary = inspect(&sample.path);
        assert_eq!(
            Some(binary.layout),
            table::layout(binary.version),
            "{}",
            sample.path.display()
        );
    }
}

#[test]
fn stripped_binary_probes_like_unstripped() {
    let Some(samples) = samples() else { return };
    for stripped in samples.samples.iter().filter(|sample| sample.stripped) {
        let unstripped = samples.sibling(stripped, false);
        let (stripped, unstripped) = (inspect(&stripped.path), inspect(&unstripped.path));
        assert_eq!(stripped.probes, unstripped.probes, "{stripped:?}");
        assert_eq!(stripped.layout, unstripped.layout, "{stripped:?}");
    }
}

#[test]
fn wait_reasons_of_binary_equal_table() {
    let Some(samples) = samples() else { return };
    for sample in samples.samples.iter().filter(|sample| !sample.stripped) {
        let binary = inspect(&sample.path);
        let WaitReasons::Binary(names) = &binary.wait_reasons else {
            panic!("{}: no runtime.waitReasonStrings", sample.path.display());
        };
        let table = table::wait_reasons(binary.version);
        assert_eq!(names, table, "{}", sample.path.display());
        let stripped = inspect(&samples.sibling(sample, true).path);
        assert!(matches!(stripped.wait_reasons, WaitReasons::Table(names) if names == table));
        for code in 0..=u8::MAX {
            let expected = table.get(usize::from(code)).filter(|name| !name.is_empty());
            assert_eq!(binary.wait_reason(code), expected.copied(), "{code}");
        }
        assert_eq!(binary.wait_reason(0), None, "waitReasonZero");
    }
}

/// Reads the probe points' instructions from the file by file offset, and decodes them
/// independently of [`call_at`].
#[test]
fn probes_point_at_the_run_queue_call_and_past_the_exit_stack_check() {
    let Some(samples) = samples() else { return };
    for sample in &samples.samples {
        let binary = inspect(&sample.path);
        let name = sample.path.display();
        let bytes = fs::read(&sample.path).unwrap();
        let elf = object::File::parse(&*bytes).unwrap();
        let vaddr = |offset: u64| {
            elf.segments()
                .find_map(|segment| {
                    let (start, size) = segment.file_range();
                    (start..start + size)
                        .contains(&offset)
                        .then(|| segment.address() + offset - start)
                })
                .unwrap()
        };
        // The target of the call instruction at file offset `at`.
        let callee = |at: u64| {
            let (call, at) = (vaddr(at), at as usize);
            match sample.arch {
                GoArch::Amd64 => {
                    assert_eq!(bytes[at], 0xe8, "{name}: CALL rel32");
                    let rel = i32::from_le_bytes(bytes[at + 1..at + 5].try_into().unwrap());
                    (call + 5).wrapping_add_signed(i64::from(rel))
                }
                GoArch::Arm64 => {
                    let word = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
                    assert_eq!(word >> 26, 0b100101, "{name}: BL");
                    let imm26 = i64::from(word & 0x03ff_ffff);
                    let offset = (imm26 - if imm26 >= 1 << 25 { 1 << 26 } else { 0 }) * 4;
                    call.wrapping_add_signed(offset)
                }
            }
        };
        let call = vaddr(binary.probes.create);
        let target = callee(binary.probes.create);
        let function = |pc: u64| binary.frame(pc).map(|frame| frame.function);
        assert_eq!(
            function(target).as_deref(),
            Some("runtime.runqput"),
            "{name}"
        );
        assert_eq!(
            function(call).as_deref(),
            Some("runtime.newproc.func1"),
            "{name}"
        );
        match (sample.arch, binary.probes.spawn) {
            (GoArch::Amd64, None) => {}
            (GoArch::Arm64, Some(spawn)) => {
                assert_eq!(
                    function(callee(spawn)).as_deref(),
                    Some("runtime.systemstack"),
                    "{name}"
                );
                assert_eq!(
                    function(vaddr(spawn)).as_deref(),
                    Some("runtime.newproc"),
                    "{name}"
                );
            }
            (arch, spawn) => panic!("{name}: {arch:?} with spawn probe {spawn:?}"),
        }
        let exit = binary.probes.exit;
        assert_eq!(
            function(vaddr(exit)).as_deref(),
            Some(binary.probes.exit_function),
            "{name}"
        );
        if sample.arch == GoArch::Amd64 {
            assert_eq!(bytes[exit as usize], 0x55, "{name}: push %rbp");
        }
    }
}

/// `frame` against `go tool addr2line` of the same toolchain: every main.* function (entry and
/// middle), a spread of others, and a pc in no function.
#[test]
fn frames_equal_addr2line() {
    let Some(samples) = samples() else { return };
    for sample in &samples.samples {
        let binary = inspect(&sample.path);
        let name = sample.path.display();
        let functions: Vec<_> = binary.pclntab.functions().collect();
        let quantum = match sample.arch {
            GoArch::Amd64 => 1,
            GoArch::Arm64 => 4,
        };
        let middle =
            |func: &pclntab::Func| func.entry + (func.end - func.entry) / 2 / quantum * quantum;
        let mut pcs = vec![0x10];
        for (func, function) in &functions {
            if function.starts_with("main.") {
                pcs.extend([func.entry, middle(func)]);
            }
        }
        assert!(functions.iter().any(|(_, f)| *f == "main.main"), "{name}");
        assert!(
            functions.iter().any(|(_, f)| *f == "main.leakSend.func1"),
            "{name}"
        );
        let step = functions.len() / 30;
        pcs.extend(
            functions
                .iter()
                .step_by(step.max(1))
                .map(|(func, _)| middle(func)),
        );
        assert!(pcs.len() >= 20, "{name}");

        let mut addr2line = go_command(&samples.go(sample).go)
            .args(["tool", "addr2line"])
            .arg(&sample.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
        addr2line
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = addr2line.wait_with_output().unwrap();
        let output = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), 2 * pcs.len(), "{name}: {output}");
        let mut closures = 0;
        for (pc, answer) in pcs.iter().zip(lines.chunks(2)) {
            // Past a function's tables (its alignment padding) addr2line says ":-1"; frame "?", 0.
            let (file, line) = match answer[1].rsplit_once(':').unwrap() {
                ("", "-1") => ("?", "0"),
                position => position,
            };
            let expected = (answer[0] != "?").then(|| GoFrame {
                function: answer[0].to_owned(),
                file: file.to_owned(),
                line: line.parse().unwrap(),
            });
            assert_eq!(binary.frame(*pc), expected, "{name}: pc {pc:#x}");
            closures += usize::from(answer[0].starts_with("main.") && answer[0].contains(".func"));
        }
        assert!(closures >= 2, "{name}: closures compared");
    }
}

/// runtime.text, which the function table's offsets start from, is found without symbols in
/// the module data, also in PIEs, where Go's linker writes the addresses before relocating them;
/// and the table itself by its header, for binaries whose linker did not keep its section.
#[test]
fn text_start_and_pclntab_without_symbols() {
    let Some(samples) = samples() else { return };
    for sample in samples.samples.iter().filter(|sample| sample.stripped) {
        let unstripped = fs::read(&samples.sibling(sample, false).path).unwrap();
        let unstripped = object::File::parse(&*unstripped).unwrap();
        let text = Symbols::read(&unstripped).text.unwrap();
        let bytes = fs::read(&sample.path).unwrap();
        let elf = object::File::parse(&*bytes).unwrap();
        let section = pclntab_section(&elf).unwrap();
        let pclntab = Pclntab::parse(section.data().unwrap().to_vec()).unwrap();
        let funcnametab = section.address() + pclntab.funcnametab_offset();
        let image = Image { elf: &elf };
        let found = search_pclntab(&image).map(|(address, _)| address);
        assert_eq!(found, Some(section.address()), "{}", sample.path.display());
        assert_eq!(
            moduledata_text(&image, section.address(), funcnametab),
            Some(text),
            "{}",
            sample.path.display()
        );
    }
}

/// A copy of `path` with the build info's version string replaced by one of the same length.
fn with_version(path: &Path, dir: &TempDir, version: &str) -> PathBuf {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes
        .windows(14)
        .position(|window| window == b"\xff Go buildinf:")
        .unwrap();
    let len = usize::from(bytes[at + 32]);
    assert_eq!(len, version.len(), "same length as the original");
    bytes[at + 33..at + 33 + len].copy_from_slice(version.as_bytes());
    let copy = dir.path.join(format!(
        "{}-{version}",
        path.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&copy, bytes).unwrap();
    copy
}

#[test]
fn versions_outside_the_supported_range() {
    let Some(samples) = samples() else { return };
    let dir = TempDir::new("versions");
    for sample in &samples.samples {
        let version = &samples.go(sample).version;
        // The exit probe's function is chosen by version: gdestroy since 1.22.
        if version.starts_with("go1.21.") {
            continue;
        }
        // Same length: go1.23.9 → go1.20.9, go1.21.13 → go1.20.13.
        let old = version.replacen(&version[..6], "go1.20", 1);
        let err = GoBinary::inspect(&with_version(&sample.path, &dir, &old)).unwrap_err();
        assert!(
            format!("{err:#}").contains("older than go1.21.0"),
            "{err:#}"
        );

        let newer = version.replacen(
            &version[..6],
            &format!("go1.{}", table::NEWEST_MINOR + 1),
            1,
        );
        let newer = GoBinary::inspect(&with_version(&sample.path, &dir, &newer));
        if sample.stripped {
            let err = newer.unwrap_err();
            assert!(
                format!("{err:#}").contains("newer than the offset table"),
                "{err:#}"
            );
        } else {
            let binary = newer.unwrap().unwrap();
            assert_eq!(binary.layout_from, LayoutSource::Dwarf);
            assert_eq!(binary.layout, inspect(&sample.path).layout);
        }
    }
}

#[test]
fn truncated_go_binaries_do_not_panic() {
    let Some(samples) = samples() else { return };
    let dir = TempDir::new("truncated");
    for sample in samples
        .samples
        .iter()
        .filter(|sample| sample.arch == GoArch::Amd64)
    {
        let bytes = fs::read(&sample.path).unwrap();
        for len in [
            0,
            64,
            4096,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 1,
        ] {
            let path = dir.path.join("cut");
            fs::write(&path, &bytes[..len]).unwrap();
            let _ = GoBinary::inspect(&path);
        }
        // Noise over the function table.
        let mut noisy = bytes.clone();
        let elf = object::File::parse(&*bytes).unwrap();
        let (start, size) = pclntab_section(&elf).unwrap().file_range().unwrap();
        for (i, byte) in noisy[start as usize + 8..(start + size) as usize]
            .iter_mut()
            .enumerate()
        {
            *byte ^= (i as u8).wrapping_mul(151);
        }
        let path = dir.path.join("noisy");
        fs::write(&path, &noisy).unwrap();
        if let Ok(Some(binary)) = GoBinary::inspect(&path) {
            for pc in (0x400000..0x500000).step_by(0x777) {
                let _ = binary.frame(pc);
            }
        }
    }
}

/// Prints the tables of table.rs from the samples' DWARF and runtime.waitReasonStrings (one
/// toolchain per minor release): `LEAKTRACE_GO_TOOLCHAINS=… cargo test -p leaktrace --lib
/// goruntime::tests::print_tables -- --ignored --nocapture`. Fails if amd64 and arm64 differ: the
/// table would need the architecture in its key.
#[test]
#[ignore = "generator of table.rs"]
fn print_tables() {
    let Some(samples) = samples() else { return };
    let mut layouts = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    for sample in samples.samples.iter().filter(|sample| !sample.stripped) {
        let binary = inspect(&sample.path);
        let minor = binary.version.minor;
        let layout = *layouts.entry(minor).or_insert(binary.layout);
        assert_eq!(layout, binary.layout, "go1.{minor}: amd64 and arm64 differ");
        if let WaitReasons::Binary(names) = binary.wait_reasons {
            reasons.insert(minor, names);
        }
    }
    for (minor, l) in &layouts {
        println!(
            "({minor}, [{}, {}, {}, {}, {}, {}]),",
            l.goid, l.atomicstatus, l.waitreason, l.parent_goid, l.gopc, l.startpc
        );
    }
    let mut previous: Option<&Vec<String>> = None;
    for (minor, names) in &reasons {
        if previous == Some(names) {
            println!("// go1.{minor}: as before");
            continue;
        }
        println!("const WAIT_REASONS_1_{minor}: &[&str] = &[");
        for name in names {
            println!("    {name:?},");
        }
        println!("];");
        previous = Some(names);
    }
}

/// A directory removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(what: &str) -> TempDir {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "leaktrace-goruntime-{what}-{}-{count}",
            std::process::id()
        ));
        fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
