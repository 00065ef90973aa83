//! Go binaries: which Go built them, for which architecture, and what a goroutine tracer needs
//! from them: where to put the goroutine create and exit uprobes, where goid, status and wait
//! reason sit in `runtime.g`, the runtime's names of wait reasons, and the function, file and line
//! of a code address.
//!
//! Everything is read from the ELF file. `buildinfo` gives the Go version, `pclntab` the
//! functions (by name for the probes, by pc for frames; the table is there even in stripped
//! binaries), `layout` the `runtime.g` member offsets from DWARF, and `table` the offsets and
//! wait reason names measured per Go version, for binaries built without DWARF or symbols.

mod buildinfo;
mod layout;
mod pclntab;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::File;
use std::path::Path;

use anyhow::{bail, Context};
use object::{
    Architecture, BinaryFormat, Object, ObjectKind, ObjectSection, ObjectSegment, ObjectSymbol,
    ReadCache, ReadRef, SegmentFlags,
};

use pclntab::{Func, Pclntab};

/// The oldest Go whose runtime has what the probes read: `runtime.g.parentGoid` (1.21).
const OLDEST: GoVersion = GoVersion {
    major: 1,
    minor: 21,
    patch: 0,
};

/// The _Gscan bit of `runtime.g.atomicstatus`: set while the GC scans the goroutine's stack.
const G_SCAN: u32 = 0x1000;

/// A Go binary that the goroutine tracer can probe.
pub struct GoBinary {
    pub version: GoVersion,
    pub arch: GoArch,
    pub layout: GLayout,
    pub layout_from: LayoutSource,
    pub probes: ProbePoints,
    /// No ELF symbol table (`-ldflags=-s`): the wait reason names are those measured for the Go
    /// version, not read from the binary.
    pub stripped: bool,
    pie: bool,
    /// The virtual address of file offset 0 (a PIE is linked at 0x400000 like any Go binary,
    /// and loaded elsewhere).
    image_base: u64,
    pclntab: Pclntab,
    wait_reasons: WaitReasons,
}

/// A Go release, as `go version` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoArch {
    Amd64,
    Arm64,
}

/// Byte offsets of the members of `runtime.g` that the probes read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GLayout {
    pub goid: u16,
    pub atomicstatus: u16,
    pub waitreason: u16,
    pub parent_goid: u16,
    pub gopc: u16,
    pub startpc: u16,
}

/// Where [`GLayout`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The offsets measured for its Go version and architecture (binary without DWARF).
    Table,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePoints {
    /// File offset (for a uprobe) of the `CALL runtime.runqput` that follows `CALL
    /// runtime.newproc1` in `runtime.newproc.func1`: there the new g, with goid, gopc, startpc
    /// and parentGoid set, is runqput's second argument under ABIInternal (RBX on amd64, R1 on
    /// arm64). A call, because the kernel emulates it rather than single-stepping it.
    pub create: u64,
    /// arm64 only: file offset of `runtime.newproc`'s `BL runtime.systemstack`, still on the
    /// creating goroutine's stack. arm64's systemstack loads g0's frame pointer before it calls
    /// `newproc.func1`, so the frame-pointer walk at `create` ends on the system stack; the walk
    /// here is the `go` statement's stack. amd64's leaves the frame pointer: `create` walks
    /// through, and no second probe is needed.
    pub spawn: Option<u64>,
    /// File offset of the start of the function that frees a dead goroutine, `runtime.gdestroy`
    /// (Go ≥ 1.22) or `runtime.goexit0` (1.21), past Go's stack check on amd64 (see
    /// `frame_setup`); its first argument (RAX / R0) is the g.
    pub exit: u64,
    pub exit_function: &'static str,
}

/// Where a code address of a Go binary lies in its source. Inlined code is attributed as
/// `go tool addr2line` does: the function it was inlined into, the file and line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
}

/// Names of the runtime's `waitReason` values, indexed by value.
enum WaitReasons {
    /// Read from `runtime.waitReasonStrings` in the binary.
    Binary(Vec<String>),
    /// Measured for the binary's Go version.
    Table(&'static [&'static str]),
}

impl GoBinary {
    /// Ok(None): not a Go binary. Err: a Go binary this tracer cannot probe (the message says
    /// why: version older than 1.21, architecture, missing runtime function, call site not
    /// found…).
    pub fn inspect(path: &Path) -> anyhow::Result<Option<GoBinary>> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        // Reads only the parts used (headers, .gopclntab, runtime.g's DWARF), not the whole file.
        let cache = ReadCache::new(file);
        let Ok(elf) = object::File::parse(&cache) else {
            return Ok(None);
        };
        if elf.format() != BinaryFormat::Elf {
            return Ok(None);
        }
        inspect_elf(&elf).with_context(|| format!("Go binary {}", path.display()))
    }

    /// Function, file and line of a code address (an ELF virtual address of this binary; the
    /// caller removes any load bias) from .gopclntab — works on stripped binaries. For a return
    /// address the caller passes pc-1.
    pub fn frame(&self, pc: u64) -> Option<GoFrame> {
        self.pclntab.frame(pc)
    }

    /// The runtime's text for a waitReason value of this binary's Go version ("chan send",
    /// "chan receive", "select", "sync.WaitGroup.Wait", "sleep", "IO wait", "semacquire", ...).
    /// None for waitReasonZero (no reason) and for values the version does not have.
    pub fn wait_reason(&self, code: u8) -> Option<&str> {
        let code = usize::from(code);
        let name = match &self.wait_reasons {
            WaitReasons::Binary(names) => names.get(code).map(String::as_str),
            WaitReasons::Table(names) => names.get(code).copied(),
        };
        name.filter(|name| !name.is_empty())
    }

    /// Whether the binary is position independent (ET_DYN): then runtime addresses = vaddr + bias.
    pub fn is_pie(&self) -> bool {
        self.pie
    }

    /// The virtual address of file offset 0: a PIE's bias is where the kernel mapped offset 0
    /// minus this.
    pub fn image_base(&self) -> u64 {
        self.image_base
    }
}

impl fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoBinary")
            .field("version", &self.version)
            .field("arch", &self.arch)
            .field("layout", &self.layout)
            .field("layout_from", &self.layout_from)
            .field("probes", &self.probes)
            .field("stripped", &self.stripped)
            .field("pie", &self.pie)
            .finish_non_exhaustive()
    }
}

impl GoVersion {
    /// The version from a `go version` string: "go1.23.9", "go1.24rc1" (patch 0),
    /// "devel go1.25-abcdef Tue…", "go1.22.3 X:boringcrypto".
    pub fn parse(text: &str) -> Option<GoVersion> {
        let text = text.strip_prefix("devel ").unwrap_or(text);
        let digits = text.strip_prefix("go")?;
        let number = |part: &str| -> Option<u32> {
            let end = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            part[..end].parse().ok()
        };
        let mut parts = digits.split('.');
        let major = number(parts.next()?)?;
        let minor = number(parts.next()?)?;
        let patch = parts.next().and_then(number).unwrap_or(0);
        Some(GoVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "go{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Name of a runtime.g atomicstatus value with the _Gscan bit (0x1000) masked off, as in
/// runtime2.go; "leaked" and "deadextra" exist since Go 1.26. Else "unknown".
pub fn status_name(status: u32) -> &'static str {
    match status & !G_SCAN {
        0 => "idle",
        1 => "runnable",
        2 => "running",
        3 => "syscall",
        4 => "waiting",
        6 => "dead",
        8 => "copystack",
        9 => "preempted",
        10 => "leaked",
        11 => "deadextra",
        _ => "unknown",
    }
}

/// Whether `function` (a Go function name) belongs to the Go standard library or runtime: its
/// package path's first segment has no dot ("net/http.(*Transport).dialConn", "runtime.goexit",
/// vendored "vendor/golang.org/x/net/…") and it is not package main. Finds the user code that
/// caused a goroutine the standard library created.
pub fn is_std(function: &str) -> bool {
    let package = package_path(function);
    let first = package.split('/').next().unwrap_or(package);
    package != "main" && !first.contains('.')
}

/// The package path of a Go function name, found as the runtime's funcpkgpath does: the last
/// '/' then the first '.' after it. Type parameters ("F[go.shape.*net/http.Request]") are cut
/// first: their own slashes and dots are not the function's.
fn package_path(function: &str) -> &str {
    let name = function.split('[').next().unwrap_or(function);
    let segment = name.rfind('/').map_or(0, |slash| slash + 1);
    let end = name[segment..]
        .find('.')
        .map_or(name.len(), |dot| segment + dot);
    &name[..end]
}

fn inspect_elf<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> anyhow::Result<Option<GoBinary>> {
    let image = Image { elf };
    let Some(version_text) = buildinfo::version(&image)? else {
        if pclntab_section(elf).is_some() {
            bail!("no .go.buildinfo: built before go1.13, older than {OLDEST}");
        }
        return Ok(None);
    };
    let version = GoVersion::parse(&version_text)
        .with_context(|| format!("unrecognised Go version {version_text:?}"))?;
    if version < OLDEST {
        bail!("{version} is older than {OLDEST}, the oldest Go whose goroutines can be traced");
    }
    let arch = match (elf.architecture(), elf.is_64()) {
        (Architecture::X86_64, true) => GoArch::Amd64,
        (Architecture::Aarch64, true) => GoArch::Arm64,
        (other, _) => bail!("{version} binary for {other:?}: only amd64 and arm64 are traced"),
    };
    let symbols = Symbols::read(elf);
    let pclntab = read_pclntab(&image, &symbols)?;

    let newproc1 = runtime_function(&pclntab, "runtime.newproc1")?;
    let runqput = runtime_function(&pclntab, "runtime.runqput")?;
    let spawner = runtime_function(&pclntab, "runtime.newproc.func1")?;
    let exit_function = if version.minor >= 22 {
        "runtime.gdestroy"
    } else {
        "runtime.goexit0"
    };
    let exit = runtime_function(&pclntab, exit_function)?;
    let code = image
        .read(spawner.entry, spawner.end - spawner.entry)
        .context("runtime.newproc.func1 lies outside the file's load segments")?;
    let made = call_at(arch, code, spawner.entry, newproc1.entry)
        .context("no call to runtime.newproc1 in runtime.newproc.func1")?;
    let skip = (made - spawner.entry) as usize;
    let queued = call_at(arch, &code[skip..], made, runqput.entry)
        .context("no call to runtime.runqput after newproc1 in runtime.newproc.func1")?;
    let exit_code = image
        .read(exit.entry, (exit.end - exit.entry).min(32))
        .with_context(|| format!("{exit_function} lies outside the file's load segments"))?;
    let spawn = match arch {
        GoArch::Amd64 => None,
        GoArch::Arm64 => {
            let newproc = runtime_function(&pclntab, "runtime.newproc")?;
            let systemstack = runtime_function(&pclntab, "runtime.systemstack")?;
            let code = image
                .read(newproc.entry, newproc.end - newproc.entry)
                .context("runtime.newproc lies outside the file's load segments")?;
            let switch = call_at(arch, code, newproc.entry, systemstack.entry)
                .context("no call to runtime.systemstack in runtime.newproc")?;
            Some(image.file_offset(switch)?)
        }
    };
    let probes = ProbePoints {
        create: image.file_offset(queued)?,
        spawn,
        exit: image.file_offset(frame_setup(arch, exit_code, exit.entry))?,
        exit_function,
    };

    let (layout, layout_from) = match (layout::from_dwarf(elf), table::layout(version)) {
        (Ok(Some(layout)), _) => (layout, LayoutSource::Dwarf),
        // Unreadable DWARF is no worse than none when the version's offsets are measured.
        (_, Some(layout)) => (layout, LayoutSource::Table),
        (Ok(None), None) => bail!(
            "{version} is newer than the offset table (go1.{}); build with DWARF or update",
            table::NEWEST_MINOR
        ),
        (Err(err), None) => return Err(err.context("runtime.g from DWARF")),
    };

    let wait_reasons = symbols
        .wait_reason_strings
        .and_then(|(address, size)| wait_reasons_from_binary(&image, address, size))
        .map_or_else(
            || WaitReasons::Table(table::wait_reasons(version)),
            WaitReasons::Binary,
        );

    Ok(Some(GoBinary {
        version,
        arch,
        layout,
        layout_from,
        probes,
        stripped: elf.symbol_table().is_none(),
        pie: elf.kind() == ObjectKind::Dynamic,
        image_base: elf
            .segments()
            .filter_map(|segment| segment.address().checked_sub(segment.file_range().0))
            .min()
            .unwrap_or(0),
        pclntab,
        wait_reasons,
    }))
}

fn runtime_function(pclntab: &Pclntab, name: &str) -> anyhow::Result<Func> {
    pclntab
        .find(name)
        .with_context(|| format!("no function {name} in .gopclntab"))
}

/// The ELF symbols the inspection uses, when the binary has a symbol table.
#[derive(Default)]
struct Symbols {
    /// `runtime.text`: the base of .gopclntab's function offsets.
    text: Option<u64>,
    /// `runtime.pclntab`..`runtime.epclntab`, for binaries whose sections were renamed or lost.
    pclntab: Option<u64>,
    epclntab: Option<u64>,
    /// Address and size of `runtime.waitReasonStrings`.
    wait_reason_strings: Option<(u64, u64)>,
}

impl Symbols {
    fn read<'data, R: ReadRef<'data>>(elf: &object::File<'data, R>) -> Symbols {
        let mut symbols = Symbols::default();
        for symbol in elf.symbols() {
            match symbol.name_bytes() {
                Ok(b"runtime.text") => symbols.text = Some(symbol.address()),
                Ok(b"runtime.pclntab") => symbols.pclntab = Some(symbol.address()),
                Ok(b"runtime.epclntab") => symbols.epclntab = Some(symbol.address()),
                Ok(b"runtime.waitReasonStrings") => {
                    symbols.wait_reason_strings = Some((symbol.address(), symbol.size()));
                }
                _ => {}
            }
        }
        symbols
    }
}

/// Virtual addresses of an ELF file, read through its load segments.
struct Image<'a, 'data, R: ReadRef<'data>> {
    elf: &'a object::File<'data, R>,
}

impl<'data, R: ReadRef<'data>> Image<'_, 'data, R> {
    /// The file's bytes at `address`..`address + size`, when a load segment holds them all.
    fn read(&self, address: u64, size: u64) -> Option<&'data [u8]> {
        self.elf
            .segments()
            .find_map(|segment| segment.data_range(address, size).ok().flatten())
    }

    /// The file offset of the byte at `address`, which a uprobe is attached by.
    fn file_offset(&self, address: u64) -> anyhow::Result<u64> {
        self.elf
            .segments()
            .find_map(|segment| {
                let (offset, size) = segment.file_range();
                let within = address.checked_sub(segment.address())?;
                (within < size).then_some(offset + within)
            })
            .with_context(|| format!("address {address:#x} is in no load segment of the file"))
    }

    /// The file-backed bytes of the writable load segments, where Go keeps .go.buildinfo and
    /// runtime.firstmoduledata.
    fn writable_data(&self) -> impl Iterator<Item = &'data [u8]> + '_ {
        self.elf.segments().filter_map(|segment| {
            let writable = matches!(segment.flags(),
                SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_W != 0);
            writable.then(|| segment.data().ok()).flatten()
        })
    }
}

/// The .gopclntab section: named so by Go's internal linker, .data.rel.ro.gopclntab in PIE
/// binaries the external linker made.
fn pclntab_section<'data, 'file, R: ReadRef<'data>>(
    elf: &'file object::File<'data, R>,
) -> Option<object::Section<'data, 'file, R>> {
    elf.section_by_name(".gopclntab")
        .or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))
}

fn read_pclntab<'data, R: ReadRef<'data>>(
    image: &Image<'_, 'data, R>,
    symbols: &Symbols,
) -> anyhow::Result<Pclntab> {
    let (address, data) = if let Some(section) = pclntab_section(image.elf) {
        (section.address(), section.data()?)
    } else if let (Some(start), Some(end)) = (symbols.pclntab, symbols.epclntab) {
        let data = end
            .checked_sub(start)
            .and_then(|size| image.read(start, size))
            .context("runtime.pclntab lies outside the load segments")?;
        (start, data)
    } else {
        search_pclntab(image)
            .context("no .gopclntab section, runtime.pclntab symbol or pclntab header")?
    };
    let mut pclntab = Pclntab::parse(data.to_vec())?;
    // Function entries are offsets from runtime.text. Go 1.26 stopped storing it in the table's
    // header; the module data has it, and .text starts with it unless an external linker put C
    // code first.
    let text = symbols
        .text
        .or_else(|| moduledata_text(image, address, address + pclntab.funcnametab_offset()))
        .or_else(|| pclntab.header_text_start())
        .or_else(|| {
            image
                .elf
                .section_by_name(".text")
                .map(|text| text.address())
        })
        .context("cannot tell where the Go text starts: no runtime.text, module data or .text")?;
    pclntab.set_text_start(text);
    Ok(pclntab)
}

/// The pclntab of a binary that names it neither by section nor by symbol (an external linker
/// merged .data.rel.ro.gopclntab into .data.rel.ro, and the symbols were stripped): its header,
/// found by magic at an 8-byte-aligned address outside the code, checked by looking up a function.
fn search_pclntab<'data, R: ReadRef<'data>>(
    image: &Image<'_, 'data, R>,
) -> Option<(u64, &'data [u8])> {
    image.elf.segments().find_map(|segment| {
        let code = matches!(segment.flags(),
            SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
        let data = segment.data().ok().filter(|_| !code)?;
        (0..data.len())
            .step_by(8)
            .map(|at| (segment.address() + at as u64, &data[at..]))
            .find(|(_, table)| {
                Pclntab::looks_like_header(table)
                    && Pclntab::parse(table.to_vec())
                        .is_ok_and(|pclntab| pclntab.find("runtime.main").is_some())
            })
    })
}

/// `runtime.firstmoduledata.text`, found by the module data's first two fields: pointers to the
/// pclntab header and to its function name table (runtime/symtab.go, unchanged 1.18 … 1.27).
fn moduledata_text<'data, R: ReadRef<'data>>(
    image: &Image<'_, 'data, R>,
    pclntab: u64,
    funcnametab: u64,
) -> Option<u64> {
    // pcHeader, 6 slices (funcnametab … ftab), findfunctab, minpc, maxpc, then text.
    const TEXT: usize = 8 + 6 * 24 + 3 * 8;
    let word =
        |data: &[u8], at: usize| Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?));
    image.writable_data().find_map(|data| {
        (0..data.len().saturating_sub(TEXT + 8))
            .step_by(8)
            .find(|&at| word(data, at) == Some(pclntab) && word(data, at + 8) == Some(funcnametab))
            .and_then(|at| word(data, at + TEXT))
    })
}

/// The address of the first call in `code` (at `address`) to `target`: amd64 `E8 rel32`,
/// arm64 `BL imm26`.
fn call_at(arch: GoArch, code: &[u8], address: u64, target: u64) -> Option<u64> {
    match arch {
        GoArch::Amd64 => code.windows(5).enumerate().find_map(|(at, call)| {
            let rel = i32::from_le_bytes(call[1..].try_into().ok()?);
            let call_at = address + at as u64;
            (call[0] == 0xe8 && (call_at + 5).wrapping_add_signed(i64::from(rel)) == target)
                .then_some(call_at)
        }),
        GoArch::Arm64 => code.chunks_exact(4).enumerate().find_map(|(at, word)| {
            let word = u32::from_le_bytes(word.try_into().ok()?);
            // imm26 is a signed count of 4-byte instructions.
            let offset = i64::from(((word << 6) as i32) >> 6) * 4;
            let call = address + at as u64 * 4;
            (word & 0xfc00_0000 == 0x9400_0000 && call.wrapping_add_signed(offset) == target)
                .then_some(call)
        }),
    }
}

/// Where to probe a function's entry cheaply: on amd64 the `push %rbp` right after Go's stack
/// check (`cmp 0x10(%r14),%rsp; jbe`), which the kernel emulates, where the stack check itself
/// must be single-stepped out of line (measured with bpftrace on this VM: 7 µs a hit at the
/// check, under 1 µs at a push). The argument registers are untouched by the check. Elsewhere,
/// and when the prologue is not the usual one, the entry.
fn frame_setup(arch: GoArch, code: &[u8], entry: u64) -> u64 {
    const PUSH_RBP: u8 = 0x55;
    if arch != GoArch::Amd64 {
        return entry;
    }
    let after_check = match code {
        // cmp 0x10(%r14),%rsp; jbe rel32 | jbe rel8
        [0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, _, _, _, _, PUSH_RBP, ..] => 10,
        [0x49, 0x3b, 0x66, 0x10, 0x76, _, PUSH_RBP, ..] => 6,
        [PUSH_RBP, ..] => 0,
        _ => return entry,
    };
    entry + after_check
}

/// `runtime.waitReasonStrings`, a `[N]string`: (pointer, length) pairs into .rodata.
fn wait_reasons_from_binary<'data, R: ReadRef<'data>>(
    image: &Image<'_, 'data, R>,
    address: u64,
    size: u64,
) -> Option<Vec<String>> {
    image
        .read(address, size)?
        .chunks_exact(16)
        .map(|string| {
            let pointer = u64::from_le_bytes(string[..8].try_into().ok()?);
            let len = u64::from_le_bytes(string[8..].try_into().ok()?);
            if len == 0 {
                return Some(String::new());
            }
            let text = image.read(pointer, len)?;
            Some(String::from_utf8_lossy(text).into_owned())
        })
        .collect()
}
