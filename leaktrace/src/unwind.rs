//! User stacks unwound with DWARF call frame information (framehop), for code built without
//! frame pointers: Debian's glibc syscall wrappers are frameless leaves, so a frame-pointer walk
//! from a syscall skips the function that called fopen, socket or pthread_create.
//!
//! The input is a thread's registers at the event and a way to read its stack: the bytes eBPF
//! copied from sp ([`copy_reader`]) or the frozen stack of a blocked thread
//! ([`crate::procmem::live_reader`]). [`merge`] joins the result with the kernel's frame-pointer
//! walk of the same event, which goes on where a short stack copy ends.
//!
//! Unwind tables come from the binaries the process maps: per process, a framehop module for each
//! file-backed executable mapping of `/proc/PID/maps`; per binary (build id, else device and
//! inode), its sections, mmapped and parsed once. Both caches are bounded.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::ops::{Deref, Range};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};
use memmap2::Mmap;
use object::read::elf::ElfFile64;
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};
use serde::Serialize;

use crate::userstack::MAX_FRAMES;

#[cfg(target_arch = "x86_64")]
type ArchUnwinder = framehop::x86_64::UnwinderX86_64<Section>;
#[cfg(target_arch = "x86_64")]
type ArchCache = framehop::x86_64::CacheX86_64;
#[cfg(target_arch = "aarch64")]
type ArchUnwinder = framehop::aarch64::UnwinderAarch64<Section>;
#[cfg(target_arch = "aarch64")]
type ArchCache = framehop::aarch64::CacheAarch64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("user stacks are unwound on x86_64 and aarch64 only");

/// Processes whose unwinders are kept, least recently used evicted first.
const MAX_PROCESSES: usize = 1024;
/// Binaries whose unwind data is kept, least recently used evicted first.
const MAX_BINARIES: usize = 256;
/// Uncovered code addresses remembered per process (see [`Process::unknown`]).
const MAX_UNKNOWN: usize = 256;

/// User registers at the event, as the probes save them.
pub use leaktrace_common::UserRegs as Regs;

/// How a stack was obtained (serialized lowercase: "fp", "dwarf", "mixed").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Frame pointers alone: the kernel's walk, which DWARF confirmed or could not improve.
    Fp,
    /// DWARF unwinding alone.
    Dwarf,
    /// DWARF for the innermost frames, then the kernel's frame-pointer walk.
    Mixed,
}

/// A user stack, innermost first (ips[0] = instruction pointer, then return addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwound {
    pub ips: Vec<u64>,
    pub method: Method,
    pub truncated: bool,
}

/// Result of a DWARF unwind: `complete` when framehop reached the root (Ok(None)); false when it
/// stopped because memory could not be read (outside the copy) or any other error, or at
/// [`MAX_FRAMES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    pub ips: Vec<u64>,
    pub complete: bool,
    /// Every frame lies in a mapping read from the process's maps: the walk used what the
    /// process has (unwind tables, or frame pointers for code without), not a blind guess as
    /// for a process already gone.
    pub mapped: bool,
}

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UnwindStats {
    /// Calls of [`Unwinder::unwind`].
    pub unwinds: u64,
    /// Binaries whose unwind tables were read (again after an eviction).
    pub binaries_loaded: u64,
    /// Binaries that could not be opened or parsed: their code is walked by frame pointers.
    pub binaries_failed: u64,
    /// Re-reads of a process's maps because a walk met code outside every mapping known (a
    /// library dlopen'd since).
    pub module_refreshes: u64,
    /// Processes' unwinders dropped, least recently used first, to stay within the bound.
    pub processes_evicted: u64,
    /// Binaries' unwind data dropped, least recently used first, to stay within the bound.
    pub binaries_evicted: u64,
}

/// Reads u64s from a stack copy: `bytes` were copied from address `sp` on. None outside it.
pub fn copy_reader(sp: u64, bytes: &[u8]) -> impl FnMut(u64) -> Option<u64> + '_ {
    move |addr| {
        let at = usize::try_from(addr.checked_sub(sp)?).ok()?;
        let word = bytes.get(at..at.checked_add(8)?)?;
        Some(u64::from_ne_bytes(word.try_into().ok()?))
    }
}

/// Joins a DWARF walk with the frame-pointer stack of the same event (`fp_ips`, innermost
/// first, from the kernel's walk; trailing zeros, the kernel's fill, are ignored).
///
/// A complete DWARF walk is the stack. An incomplete one (the copy was too short, or the walk
/// failed) is spliced onto the frame-pointer walk at the first return address both share: the
/// frames after it are the same whichever way they were found.
pub fn merge(dwarf: Walk, fp_ips: &[u64]) -> Unwound {
    let fp = without_fill(fp_ips);
    if dwarf.complete {
        let method = if dwarf.ips == fp {
            Method::Fp
        } else {
            Method::Dwarf
        };
        return Unwound {
            ips: dwarf.ips,
            method,
            truncated: false,
        };
    }
    let splice = dwarf.ips.iter().enumerate().skip(1).find_map(|(i, ip)| {
        let j = fp.iter().skip(1).position(|fp_ip| fp_ip == ip)? + 1;
        Some((i, j))
    });
    match splice {
        Some((i, j)) => {
            let method = if dwarf.ips[..i] == fp[..j] {
                Method::Fp
            } else {
                Method::Mixed
            };
            let mut ips = dwarf.ips;
            ips.truncate(i);
            ips.extend_from_slice(&fp[j..]);
            let truncated = fp.len() >= MAX_FRAMES || ips.len() > MAX_FRAMES;
            ips.truncate(MAX_FRAMES);
            Unwound {
                ips,
                method,
                truncated,
            }
        }
        // Nothing in common: the longer story, known to be cut short.
        None if dwarf.ips.len() >= 2 => Unwound {
            ips: dwarf.ips,
            method: Method::Dwarf,
            truncated: true,
        },
        None => fp_only(fp),
    }
}

/// The frame-pointer stack of an event that has no DWARF walk.
pub fn fp_only(fp_ips: &[u64]) -> Unwound {
    let fp = without_fill(fp_ips);
    Unwound {
        ips: fp[..fp.len().min(MAX_FRAMES)].to_vec(),
        method: Method::Fp,
        truncated: fp.len() >= MAX_FRAMES,
    }
}

fn without_fill(ips: &[u64]) -> &[u64] {
    let len = ips
        .iter()
        .rposition(|&ip| ip != 0)
        .map_or(0, |last| last + 1);
    &ips[..len]
}

/// DWARF unwinders for the processes traced, and the unwind data of the binaries they map.
pub struct Unwinder {
    processes: HashMap<u32, Process>,
    binaries: HashMap<BinaryKey, Binary>,
    /// Which binary each file (as the maps show it) turned out to be.
    files: HashMap<FileId, BinaryKey>,
    /// Unwind rules by code address, shared by every process: framehop tags each rule with the
    /// generation of the module list it came from, which changes whenever a list does. (A u16:
    /// 65536 module changes later a stale rule may match again, and give a wrong frame.)
    cache: ArchCache,
    max_processes: usize,
    max_binaries: usize,
    page: u64,
    clock: u64,
    stats: UnwindStats,
}

struct Process {
    unwinder: ArchUnwinder,
    /// The executable mappings at the last read of the maps, by start, each flagged when a
    /// module of `unwinder` covers it.
    mappings: BTreeMap<u64, (Mapping, bool)>,
    /// Code addresses of walks that no mapping covered right after a read of the maps: where
    /// a walk went astray, not new code, so not worth another read. Cleared with each read.
    unknown: HashSet<u64>,
    last_used: u64,
}

/// An executable mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    end: u64,
    /// File offset of the start.
    offset: u64,
    /// File-backed: its id and path. Anonymous code (JIT, the vDSO) has no unwind data here.
    file: Option<(FileId, String)>,
}

/// (device, inode) of a mapped file as the maps show it. The binary cache holds the file mapped,
/// so the inode cannot be freed and its number reused while cached.
type FileId = (u64, u64);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum BinaryKey {
    /// Copies of one binary (containers) share their unwind data.
    BuildId(Box<[u8]>),
    File(FileId),
}

struct Binary {
    /// None when the file could not be parsed: remembered, so it is not tried on every event.
    elf: Option<Elf>,
    /// The files that are this binary, for dropping their entries with it.
    files: Vec<FileId>,
    last_used: u64,
}

/// What framehop needs of an ELF file.
struct Elf {
    sections: ExplicitModuleSectionInfo<Section>,
    loads: Vec<Load>,
}

/// A PT_LOAD segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
    executable: bool,
}

/// Bytes of a mapped binary: framehop reads unwind tables in place, from the page cache, instead
/// of copies on the heap.
#[derive(Clone)]
struct Section {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for Section {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl Unwinder {
    pub fn new() -> Self {
        Self::with_limits(MAX_PROCESSES, MAX_BINARIES)
    }

    fn with_limits(max_processes: usize, max_binaries: usize) -> Self {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Self {
            processes: HashMap::new(),
            binaries: HashMap::new(),
            files: HashMap::new(),
            cache: ArchCache::new(),
            max_processes: max_processes.max(1),
            max_binaries: max_binaries.max(1),
            page: u64::try_from(page)
                .ok()
                .filter(|page| page.is_power_of_two())
                .unwrap_or(4096),
            clock: 0,
            stats: UnwindStats::default(),
        }
    }

    /// DWARF-unwinds the thread of process `pid` whose registers are `regs`; `read` returns the
    /// u64 at an address, or None when it is not available.
    pub fn unwind(
        &mut self,
        pid: u32,
        regs: Regs,
        mut read: impl FnMut(u64) -> Option<u64>,
    ) -> Walk {
        self.stats.unwinds += 1;
        self.clock += 1;
        // The maps are read on a process's first unwind, and again (once per call) when a walk
        // meets code outside every mapping known: a library dlopen'd since.
        let mut fresh = false;
        if !self.processes.contains_key(&pid) {
            while self.processes.len() >= self.max_processes {
                self.evict_process();
            }
            self.processes.insert(pid, Process::new());
            self.refresh(pid);
            fresh = true;
        }
        let mut walk = self.walk(pid, regs, &mut read);
        if !fresh
            && self
                .processes
                .get(&pid)
                .is_some_and(|p| p.misses(&walk.ips))
        {
            self.stats.module_refreshes += 1;
            self.refresh(pid);
            fresh = true;
            walk = self.walk(pid, regs, &mut read);
        }
        if let Some(process) = self.processes.get_mut(&pid) {
            process.last_used = self.clock;
            if fresh {
                process.remember_unknown(&walk.ips);
            }
        }
        walk
    }

    /// Drops what is cached for a process (it exited or exec'd).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    pub fn stats(&self) -> UnwindStats {
        self.stats
    }

    fn walk(&mut self, pid: u32, regs: Regs, read: &mut impl FnMut(u64) -> Option<u64>) -> Walk {
        let Some(process) = self.processes.get(&pid) else {
            return Walk {
                ips: vec![regs.ip],
                complete: false,
                mapped: false,
            };
        };
        let (ips, complete) = frames(&process.unwinder, &mut self.cache, regs, read);
        let mapped = complete && Process::lookups(&ips).all(|addr| process.covers(addr));
        Walk {
            ips,
            complete,
            mapped,
        }
    }

    /// Brings the process's modules in line with its maps: changed or gone mappings lose their
    /// module, new ones get one. A process whose maps cannot be read keeps what it had.
    fn refresh(&mut self, pid: u32) {
        let Some(mut process) = self.processes.remove(&pid) else {
            return;
        };
        if let Some(now) = read_exec_mappings(pid) {
            let mut before = std::mem::take(&mut process.mappings);
            for (start, mapping) in now {
                if let Some(kept) = before.remove(&start).filter(|(old, _)| *old == mapping) {
                    process.mappings.insert(start, kept);
                    continue;
                }
                let module = self.module(pid, start, &mapping);
                let has_module = module.is_some();
                if let Some(module) = module {
                    process.unwinder.add_module(module);
                }
                process.mappings.insert(start, (mapping, has_module));
            }
            for (start, (_, has_module)) in before {
                if has_module {
                    process.unwinder.remove_module(start);
                }
            }
            process.unknown.clear();
        }
        self.processes.insert(pid, process);
    }

    fn module(&mut self, pid: u32, start: u64, mapping: &Mapping) -> Option<Module<Section>> {
        let (file, path) = mapping.file.as_ref()?;
        let page = self.page;
        let elf = self.binary(pid, start..mapping.end, *file, path)?;
        let base_avma = base_avma(&elf.loads, start, mapping.offset, page)?;
        Some(Module::new(
            path.clone(),
            start..mapping.end,
            base_avma,
            elf.sections.clone(),
        ))
    }

    /// The unwind data of the file mapped at `range`, read on first use.
    fn binary(&mut self, pid: u32, range: Range<u64>, file: FileId, path: &str) -> Option<&Elf> {
        self.clock += 1;
        let key = match self.files.get(&file) {
            Some(key) => key.clone(),
            None => {
                // A file that cannot be opened may only mean that this process is gone: only
                // its own mapping stays without a module, other processes will try again.
                let Some(opened) = open_mapped(pid, &range, file, path) else {
                    self.stats.binaries_failed += 1;
                    return None;
                };
                let (key, elf) = match parse_elf(&opened) {
                    Some((Some(build_id), elf)) => (BinaryKey::BuildId(build_id), Some(elf)),
                    Some((None, elf)) => (BinaryKey::File(file), Some(elf)),
                    None => {
                        self.stats.binaries_failed += 1;
                        (BinaryKey::File(file), None)
                    }
                };
                if !self.binaries.contains_key(&key) {
                    while self.binaries.len() >= self.max_binaries {
                        self.evict_binary();
                    }
                    if elf.is_some() {
                        self.stats.binaries_loaded += 1;
                    }
                }
                match self.binaries.entry(key.clone()) {
                    // Another copy of a binary already known: this parse is dropped.
                    Entry::Occupied(mut known) => known.get_mut().files.push(file),
                    Entry::Vacant(new) => {
                        new.insert(Binary {
                            elf,
                            files: vec![file],
                            last_used: 0,
                        });
                    }
                }
                self.files.insert(file, key.clone());
                key
            }
        };
        let binary = self.binaries.get_mut(&key)?;
        binary.last_used = self.clock;
        binary.elf.as_ref()
    }

    fn evict_process(&mut self) {
        let lru = self
            .processes
            .iter()
            .min_by_key(|(_, p)| p.last_used)
            .map(|(&pid, _)| pid);
        if let Some(pid) = lru {
            self.processes.remove(&pid);
            self.stats.processes_evicted += 1;
        }
    }

    /// Processes' modules keep the binary's mapped file alive as long as they need it.
    fn evict_binary(&mut self) {
        let lru = self
            .binaries
            .iter()
            .min_by_key(|(_, b)| b.last_used)
            .map(|(key, _)| key.clone());
        if let Some(binary) = lru.and_then(|key| self.binaries.remove(&key)) {
            for file in binary.files {
                self.files.remove(&file);
            }
            self.stats.binaries_evicted += 1;
        }
    }
}

/// framehop's walk from `regs`, at most [`MAX_FRAMES`]: the frames, and whether it reached the
/// root.
fn frames(
    unwinder: &ArchUnwinder,
    cache: &mut ArchCache,
    regs: Regs,
    read: &mut impl FnMut(u64) -> Option<u64>,
) -> (Vec<u64>, bool) {
    // A frame pointer of 0 ends the chain (entry points clear it). framehop's x86_64 rule
    // stops there; its aarch64 rule reads the frame record at 0 first, the return address
    // at fp + 8, and fails: that failure is the same end.
    const NULL_FRAME_RECORD: u64 = 8;
    let mut read_stack = |addr| read(addr).ok_or(());
    let mut frames =
        unwinder.iter_frames(regs.ip, arch_regs(regs, unwinder), cache, &mut read_stack);
    let mut ips = Vec::new();
    while ips.len() < MAX_FRAMES {
        match frames.next() {
            Ok(Some(frame)) => ips.push(frame.address()),
            Ok(None) | Err(framehop::Error::CouldNotReadStack(NULL_FRAME_RECORD)) => {
                return (ips, true)
            }
            Err(_) => break,
        }
    }
    (ips, false)
}

/// The walk [`Unwinder::unwind`] makes, in a binary given as a file whose first executable
/// segment is mapped at `mapped_at`: for fuzzing the ELF and call frame information of target
/// binaries, which any process on the machine can craft.
#[cfg(fuzzing)]
pub fn unwind_image(
    file: &File,
    mapped_at: u64,
    regs: Regs,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Vec<u64> {
    const PAGE: u64 = 4096;
    let Some((_, elf)) = parse_elf(file) else {
        return Vec::new();
    };
    let mut unwinder = ArchUnwinder::new();
    if let Some(load) = elf.loads.iter().find(|load| load.executable) {
        let offset = load.offset & !(PAGE - 1);
        let start = mapped_at.wrapping_add(offset);
        if let Some(base) = base_avma(&elf.loads, start, offset, PAGE) {
            let end = start
                .saturating_add(load.filesz)
                .max(start.saturating_add(1));
            unwinder.add_module(Module::new(String::new(), start..end, base, elf.sections));
        }
    }
    frames(&unwinder, &mut ArchCache::new(), regs, &mut read).0
}

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Process {
    fn new() -> Self {
        Self {
            unwinder: ArchUnwinder::new(),
            mappings: BTreeMap::new(),
            unknown: HashSet::new(),
            last_used: 0,
        }
    }

    /// Where framehop looks each frame up: the instruction pointer, and for a return address
    /// the call before it (the return address may be the next function's first byte).
    fn lookups(ips: &[u64]) -> impl Iterator<Item = u64> + '_ {
        ips.iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip.wrapping_sub(1) })
    }

    fn covers(&self, addr: u64) -> bool {
        self.mappings
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, (mapping, _))| addr < mapping.end)
    }

    /// Whether a walk met code in no mapping known, for the first time.
    fn misses(&self, ips: &[u64]) -> bool {
        Self::lookups(ips).any(|addr| !self.covers(addr) && !self.unknown.contains(&addr))
    }

    fn remember_unknown(&mut self, ips: &[u64]) {
        for addr in Self::lookups(ips) {
            if !self.covers(addr) {
                if self.unknown.len() >= MAX_UNKNOWN {
                    self.unknown.clear();
                }
                self.unknown.insert(addr);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn arch_regs(regs: Regs, _: &ArchUnwinder) -> framehop::x86_64::UnwindRegsX86_64 {
    framehop::x86_64::UnwindRegsX86_64::new(regs.ip, regs.sp, regs.fp)
}

#[cfg(target_arch = "aarch64")]
fn arch_regs(regs: Regs, unwinder: &ArchUnwinder) -> framehop::aarch64::UnwindRegsAarch64 {
    use framehop::aarch64::{PtrAuthMask, UnwindRegsAarch64};
    // Return addresses signed by pointer authentication (-mbranch-protection) carry the
    // signature above the highest code address: stripped, as the kernel's walk strips them.
    match unwinder.max_known_code_address() {
        0 => UnwindRegsAarch64::new(regs.lr, regs.sp, regs.fp),
        max => UnwindRegsAarch64::new_with_ptr_auth_mask(
            PtrAuthMask::from_max_known_address(max),
            regs.lr,
            regs.sp,
            regs.fp,
        ),
    }
}

/// The executable mappings of a process by start; None if its maps cannot be read.
fn read_exec_mappings(pid: u32) -> Option<BTreeMap<u64, Mapping>> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(maps.lines().filter_map(parse_maps_line).collect())
}

/// `start-end perms offset major:minor inode path` → (start, mapping), for executable mappings.
pub fn parse_maps_line(line: &str) -> Option<(u64, Mapping)> {
    let mut fields = line.splitn(6, ' ');
    let (range, perms, offset, dev, inode) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    let inode: u64 = inode.parse().ok()?;
    let path = fields.next().unwrap_or("").trim_start();
    let file = if inode != 0 && path.starts_with('/') {
        Some(((hex(major)? << 32 | hex(minor)?, inode), path.to_string()))
    } else {
        None
    };
    Some((
        hex(start)?,
        Mapping {
            end: hex(end)?,
            offset: hex(offset)?,
            file,
        },
    ))
}

/// The file mapped at `range` of process `pid`. `/proc/PID/map_files` names the mapped file
/// itself, even deleted or in another mount namespace (opening it needs CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE); otherwise the path as the process sees it, if it is still that file.
fn open_mapped(pid: u32, range: &Range<u64>, (_, inode): FileId, path: &str) -> Option<File> {
    let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", range.start, range.end);
    File::open(map_file).ok().or_else(|| {
        let relative = path.strip_prefix('/')?;
        let file = File::open(Path::new(&format!("/proc/{pid}/root")).join(relative)).ok()?;
        (file.metadata().ok()?.ino() == inode).then_some(file)
    })
}

/// The build id (if any) and unwind data of an ELF file.
fn parse_elf(file: &File) -> Option<(Option<Box<[u8]>>, Elf)> {
    // SAFETY: mapped read-only. A file truncated while mapped would make reads of the cut part
    // fault; binaries are replaced (renamed over) rather than truncated, and blazesym maps the
    // same files for symbols.
    let map = Arc::new(unsafe { Mmap::map(file) }.ok()?);
    let elf = ElfFile64::<object::Endianness>::parse(&map[..]).ok()?;
    let section = |name: &str| -> Option<(Range<u64>, Section)> {
        let section = elf.section_by_name(name)?;
        // Compressed (a .debug_frame with SHF_COMPRESSED) would need a copy: left out.
        let stored = section.compressed_file_range().ok()?;
        if stored.format != object::CompressionFormat::None {
            return None;
        }
        let start = usize::try_from(stored.offset).ok()?;
        let end = start.checked_add(usize::try_from(stored.compressed_size).ok()?)?;
        if end > map.len() {
            return None;
        }
        let svma = section.address()..section.address().checked_add(section.size())?;
        Some((
            svma,
            Section {
                map: Arc::clone(&map),
                range: start..end,
            },
        ))
    };
    let (text_svma, text) = section(".text").unzip();
    let (eh_frame_svma, eh_frame) = section(".eh_frame").unzip();
    let (eh_frame_hdr_svma, eh_frame_hdr) = section(".eh_frame_hdr").unzip();
    let sections = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma,
        text,
        got_svma: section(".got").map(|(svma, _)| svma),
        eh_frame_svma,
        eh_frame,
        eh_frame_hdr_svma,
        eh_frame_hdr,
        debug_frame: section(".debug_frame").map(|(_, data)| data),
        // Mach-O only.
        stubs_svma: None,
        stub_helper_svma: None,
        unwind_info: None,
        text_segment_svma: None,
        text_segment: None,
    };
    let loads = elf
        .segments()
        .map(|segment| {
            let (offset, filesz) = segment.file_range();
            Load {
                vaddr: segment.address(),
                offset,
                filesz,
                executable: matches!(segment.flags(),
                    SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0),
            }
        })
        .collect();
    let build_id = elf.build_id().ok().flatten().map(Box::from);
    Some((build_id, Elf { sections, loads }))
}

/// Where the ELF's address 0 lies in the process, given an executable mapping at `start` of
/// file offset `offset`: the load segment holding that offset tells how far its addresses are
/// from its file offsets. The mapping's offset is its segment's offset rounded down to a page.
fn base_avma(loads: &[Load], start: u64, offset: u64, page: u64) -> Option<u64> {
    let load = loads
        .iter()
        .filter(|load| {
            load.offset & !(page - 1) <= offset && offset < load.offset.saturating_add(load.filesz)
        })
        .max_by_key(|load| load.executable)?;
    Some(
        start
            .wrapping_sub(offset)
            .wrapping_sub(load.vaddr.wrapping_sub(load.offset)),
    )
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::ffi::{c_int, c_void};
    use std::hint::black_box;
    use std::time::Instant;

    use super::*;
    use crate::{procmem, userstack};

    fn walk(ips: &[u64], complete: bool) -> Walk {
        Walk {
            ips: ips.to_vec(),
            complete,
            mapped: complete,
        }
    }

    fn unwound(ips: &[u64], method: Method, truncated: bool) -> Unwound {
        Unwound {
            ips: ips.to_vec(),
            method,
            truncated,
        }
    }

    #[test]
    fn merge_complete_dwarf_equal_to_fp_is_fp() {
        let got = merge(walk(&[1, 2, 3], true), &[1, 2, 3, 0, 0]);
        assert_eq!(got, unwound(&[1, 2, 3], Method::Fp, false));
    }

    #[test]
    fn merge_complete_dwarf_that_differs_is_dwarf() {
        // The frameless caller (9) that frame pointers skipped.
        let got = merge(walk(&[1, 9, 2, 3], true), &[1, 2, 3]);
        assert_eq!(got, unwound(&[1, 9, 2, 3], Method::Dwarf, false));
        // Even when the frame-pointer walk is longer: DWARF reached the root.
        let got = merge(walk(&[1, 2], true), &[1, 2, 3]);
        assert_eq!(got, unwound(&[1, 2], Method::Dwarf, false));
    }

    #[test]
    fn merge_splices_a_short_dwarf_walk_onto_frame_pointers() {
        // DWARF found 9 (skipped by frame pointers) and stopped at the copy's end after 2.
        let got = merge(walk(&[1, 9, 2], false), &[1, 2, 3, 4]);
        assert_eq!(got, unwound(&[1, 9, 2, 3, 4], Method::Mixed, false));
        // Frame pointers recorded a garbage frame (7) where DWARF has the real one: DWARF's
        // frames up to the first shared return address, frame pointers' after it.
        let got = merge(walk(&[1, 9, 3], false), &[1, 7, 3, 4]);
        assert_eq!(got, unwound(&[1, 9, 3, 4], Method::Mixed, false));
    }

    #[test]
    fn merge_splice_that_adds_nothing_is_fp() {
        let got = merge(walk(&[1, 2, 3], false), &[1, 2, 3, 4, 5]);
        assert_eq!(got, unwound(&[1, 2, 3, 4, 5], Method::Fp, false));
    }

    #[test]
    fn merge_splices_at_the_first_shared_return_address() {
        // Recursion: 5 appears twice in both; the first DWARF frame that frame pointers also
        // have, at its first place there, is the splice point.
        let got = merge(walk(&[1, 9, 5, 5], false), &[1, 5, 5, 6]);
        assert_eq!(got, unwound(&[1, 9, 5, 5, 6], Method::Mixed, false));
        // The instruction pointer alone is not a splice point.
        let got = merge(walk(&[1, 9], false), &[1, 2, 3]);
        assert_eq!(got, unwound(&[1, 9], Method::Dwarf, true));
    }

    #[test]
    fn merge_is_truncated_where_the_fp_walk_hit_its_bound() {
        let fp: Vec<u64> = (1..=MAX_FRAMES as u64).collect();
        let got = merge(walk(&[1, 2], false), &fp);
        assert_eq!(got, unwound(&fp, Method::Fp, true));
        // A splice longer than the bound is cut to it.
        let got = merge(walk(&[1, 999, 998, 2], false), &fp);
        assert_eq!(got.ips.len(), MAX_FRAMES);
        assert_eq!(got.ips[..4], [1, 999, 998, 2]);
        assert_eq!((got.method, got.truncated), (Method::Mixed, true));
    }

    #[test]
    fn merge_without_splice_point() {
        // Two or more DWARF frames: kept, and known to be cut short.
        let got = merge(walk(&[1, 9, 8], false), &[1, 2, 3]);
        assert_eq!(got, unwound(&[1, 9, 8], Method::Dwarf, true));
        // The instruction pointer alone: the frame-pointer walk.
        let got = merge(walk(&[1], false), &[1, 2, 3, 0]);
        assert_eq!(got, unwound(&[1, 2, 3], Method::Fp, false));
        let fp: Vec<u64> = (1..=MAX_FRAMES as u64).collect();
        let got = merge(walk(&[], false), &fp);
        assert_eq!(got, unwound(&fp, Method::Fp, true));
    }

    #[test]
    fn trailing_zeros_of_the_fp_walk_are_ignored() {
        assert_eq!(
            merge(walk(&[1, 2], true), &[1, 2, 0, 0, 0]).method,
            Method::Fp
        );
        let got = merge(walk(&[1, 9, 2], false), &[1, 2, 3, 0, 0]);
        assert_eq!(got, unwound(&[1, 9, 2, 3], Method::Mixed, false));
        // Zeros inside the stack are addresses like any other; only the fill goes.
        assert_eq!(
            fp_only(&[1, 0, 2, 0]),
            unwound(&[1, 0, 2], Method::Fp, false)
        );
    }

    #[test]
    fn fp_only_is_truncated_at_the_bound() {
        assert_eq!(fp_only(&[1, 2]), unwound(&[1, 2], Method::Fp, false));
        assert_eq!(fp_only(&[0, 0]), unwound(&[], Method::Fp, false));
        let fp: Vec<u64> = (1..=MAX_FRAMES as u64 + 3).collect();
        assert_eq!(fp_only(&fp), unwound(&fp[..MAX_FRAMES], Method::Fp, true));
    }

    #[test]
    fn copy_reader_reads_only_inside_the_copy() {
        let bytes: Vec<u8> = (0..24).collect();
        let mut read = copy_reader(0x1000, &bytes);
        assert_eq!(
            read(0x1000),
            Some(u64::from_ne_bytes([0, 1, 2, 3, 4, 5, 6, 7]))
        );
        assert_eq!(
            read(0x1010),
            Some(u64::from_ne_bytes([16, 17, 18, 19, 20, 21, 22, 23]))
        );
        assert_eq!(
            read(0x1003),
            Some(u64::from_ne_bytes([3, 4, 5, 6, 7, 8, 9, 10]))
        );
        assert_eq!(read(0x1011), None, "would run past the end");
        assert_eq!(read(0x1018), None);
        assert_eq!(read(0xff8), None, "below sp");
        assert_eq!(read(u64::MAX), None);
    }

    #[test]
    fn parses_executable_maps_lines() {
        let line = "7f2a1c228000-7f2a1c3a0000 r-xp 00028000 fd:01 1835066                    \
                    /usr/lib/x86_64-linux-gnu/libc.so.6";
        assert_eq!(
            parse_maps_line(line),
            Some((
                0x7f2a_1c22_8000,
                Mapping {
                    end: 0x7f2a_1c3a_0000,
                    offset: 0x28000,
                    file: Some((
                        (0xfd << 32 | 1, 1_835_066),
                        "/usr/lib/x86_64-linux-gnu/libc.so.6".into()
                    )),
                }
            ))
        );
        let deleted = "5000-6000 r-xp 00001000 08:02 42 /tmp/a b (deleted)";
        assert_eq!(
            parse_maps_line(deleted)
                .and_then(|(_, m)| m.file)
                .map(|(_, path)| path),
            Some("/tmp/a b (deleted)".to_string())
        );
        // Anonymous code is a mapping without a file.
        let vdso =
            "7ffd4b7f3000-7ffd4b7f5000 r-xp 00000000 00:00 0                          [vdso]";
        assert_eq!(parse_maps_line(vdso).map(|(_, m)| m.file), Some(None));
        let data = "7f2a1c3a0000-7f2a1c3f6000 r--p 001a0000 fd:01 1835066 /usr/lib/libc.so.6";
        assert_eq!(parse_maps_line(data), None);
        assert_eq!(parse_maps_line("garbage"), None);
    }

    #[test]
    fn base_address_from_the_load_segment() {
        let load = |vaddr, offset, filesz, executable| Load {
            vaddr,
            offset,
            filesz,
            executable,
        };
        // PIE as GNU ld lays it out: addresses equal file offsets.
        let pie = [
            load(0, 0, 0x1000, false),
            load(0x1000, 0x1000, 0x5000, true),
        ];
        assert_eq!(
            base_avma(&pie, 0x5555_0000_1000, 0x1000, 4096),
            Some(0x5555_0000_0000)
        );
        // Non-PIE: the code is where the file says.
        let fixed = [
            load(0x40_0000, 0, 0x1000, false),
            load(0x40_1000, 0x1000, 0x5000, true),
        ];
        assert_eq!(base_avma(&fixed, 0x40_1000, 0x1000, 4096), Some(0));
        // lld: the code segment's addresses are a page past its offsets, and its offset is not
        // page-aligned (the mapping starts at the page below it).
        let lld = [
            load(0, 0, 0x1234, false),
            load(0x2234, 0x1234, 0x5000, true),
        ];
        assert_eq!(
            base_avma(&lld, 0x7000_1000, 0x1000, 4096),
            Some(0x7000_1000 - 0x1000 - 0x1000)
        );
        // Two segments on one page: the executable one counts.
        let shared = [load(0, 0, 0x800, false), load(0x1800, 0x800, 0x800, true)];
        assert_eq!(base_avma(&shared, 0x9000, 0, 4096), Some(0x9000 - 0x1000));
        assert_eq!(base_avma(&pie, 0x9000, 0x10_0000, 4096), None);
    }

    /// The registers at this point of the function it is expanded in.
    macro_rules! regs_here {
        () => {{
            #[cfg(target_arch = "x86_64")]
            {
                let (ip, sp, fp): (u64, u64, u64);
                // SAFETY: reads registers only.
                unsafe {
                    std::arch::asm!(
                        "lea {ip}, [rip]",
                        "mov {sp}, rsp",
                        "mov {fp}, rbp",
                        ip = out(reg) ip,
                        sp = out(reg) sp,
                        fp = out(reg) fp,
                        options(nomem, nostack, preserves_flags),
                    )
                };
                Regs { ip, sp, fp, lr: 0 }
            }
            #[cfg(target_arch = "aarch64")]
            {
                let (ip, sp, fp, lr): (u64, u64, u64, u64);
                // SAFETY: reads registers only.
                unsafe {
                    std::arch::asm!(
                        "adr {ip}, .",
                        "mov {sp}, sp",
                        "mov {fp}, x29",
                        "mov {lr}, x30",
                        ip = out(reg) ip,
                        sp = out(reg) sp,
                        fp = out(reg) fp,
                        lr = out(reg) lr,
                        options(nomem, nostack, preserves_flags),
                    )
                };
                Regs { ip, sp, fp, lr }
            }
        }};
    }

    /// Calls `then` with the registers of this frame, which stays as it is meanwhile: `then`'s
    /// frames are below it.
    #[inline(never)]
    fn with_regs<R>(then: &mut dyn FnMut(Regs) -> R) -> R {
        let regs = regs_here!();
        // Not a tail call: this frame must outlive `then`.
        black_box(then(regs))
    }

    /// Up to `len` bytes of this process's memory from `sp`, as eBPF would copy the stack:
    /// page by page, up to the end of the stack.
    fn copy_stack(sp: u64, len: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut at = sp;
        while at < sp + len {
            let chunk = ((at | 4095) + 1 - at).min(sp + len - at) as usize;
            let mut buf = vec![0; chunk];
            if procmem::read(std::process::id(), at, &mut buf).is_err() {
                break;
            }
            bytes.extend_from_slice(&buf);
            at += chunk as u64;
        }
        bytes
    }

    /// Whether `ip` is in the function starting at `f` (within 4 KiB).
    fn within(ip: u64, f: usize) -> bool {
        let f = f as u64;
        ip > f && ip - f < 4096
    }

    /// Whether one of the return addresses is in the function starting at `f`.
    fn returns_into(ips: &[u64], f: usize) -> bool {
        ips.iter().skip(1).any(|&ret| within(ret, f))
    }

    /// The frame-pointer walk of the same registers over the same memory.
    fn fp_walk(regs: Regs, copy: &[u8]) -> Vec<u64> {
        let mut read = copy_reader(regs.sp, copy);
        userstack::walk(regs.ip, regs.fp, |addr| {
            Some([read(addr)?, read(addr + 8)?])
        })
    }

    struct Captured {
        copied: Walk,
        live: Walk,
        short: Walk,
        fp: Vec<u64>,
    }

    fn capture(regs: Regs) -> Captured {
        let pid = std::process::id();
        let copy = copy_stack(regs.sp, 16384);
        let mut unwinder = Unwinder::new();
        let copied = unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy));
        let live = unwinder.unwind(pid, regs, procmem::live_reader(pid));
        let short = unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy[..256]));
        Captured {
            copied,
            live,
            short,
            fp: fp_walk(regs, &copy),
        }
    }

    #[inline(never)]
    fn chain_outer() -> Captured {
        black_box(chain_middle())
    }

    #[inline(never)]
    fn chain_middle() -> Captured {
        black_box(with_regs(&mut capture))
    }

    #[test]
    fn unwinds_its_own_stack_from_a_copy_and_live() {
        let got = chain_outer();
        for (name, walk) in [("copy", &got.copied), ("live", &got.live)] {
            println!("{name}: {:x?}", walk);
            assert!(
                within(walk.ips[0], with_regs::<Captured> as *const () as usize),
                "{name}"
            );
            assert!(
                returns_into(&walk.ips, chain_middle as *const () as usize),
                "{name}"
            );
            assert!(
                returns_into(&walk.ips, chain_outer as *const () as usize),
                "{name}"
            );
        }
        // Live memory reaches the thread's root; the frame-pointer walk agrees with DWARF
        // as far as it goes (this crate has frame pointers).
        assert!(got.live.complete, "{:x?}", got.live);
        assert!(
            got.live.ips.starts_with(&got.fp[..4]),
            "{:x?} vs {:x?}",
            got.live,
            got.fp
        );
        assert_eq!(
            got.copied.ips[..got.copied.ips.len().min(8)],
            got.live.ips[..8.min(got.copied.ips.len())]
        );
    }

    #[test]
    fn a_short_copy_is_an_incomplete_walk() {
        let got = chain_outer();
        println!("256 bytes: {:x?}", got.short);
        assert!(!got.short.complete);
        assert!(!got.short.ips.is_empty() && got.short.ips.len() < got.live.ips.len());
        assert!(got.live.ips.starts_with(&got.short.ips));
    }

    thread_local! {
        static IN_QSORT: RefCell<Option<Captured>> = const { RefCell::new(None) };
    }

    /// A comparator that also unwinds, once, from inside glibc's qsort (built without frame
    /// pointers on Debian).
    extern "C" fn compare_and_unwind(a: *const c_void, b: *const c_void) -> c_int {
        if IN_QSORT.with_borrow(Option::is_none) {
            let regs = regs_here!();
            let got = capture(regs);
            IN_QSORT.set(Some(got));
        }
        // SAFETY: qsort passes pointers to elements of the i32 array.
        let (a, b) = unsafe { (*a.cast::<i32>(), *b.cast::<i32>()) };
        a.cmp(&b) as c_int
    }

    #[inline(never)]
    fn sort_through_qsort() -> Captured {
        let mut values = [5i32, 3, 8, 1, 9, 2, 7, 4];
        // SAFETY: an i32 array of its length, and a comparator of i32s.
        unsafe {
            libc::qsort(
                values.as_mut_ptr().cast(),
                values.len(),
                size_of::<i32>(),
                Some(compare_and_unwind),
            )
        };
        assert_eq!(values, [1, 2, 3, 4, 5, 7, 8, 9]);
        black_box(IN_QSORT.take().expect("the comparator ran"))
    }

    #[test]
    fn dwarf_walks_through_frameless_libc_code() {
        let got = sort_through_qsort();
        let caller = sort_through_qsort as *const () as usize;
        println!("fp walk:   {:x?}", got.fp);
        println!("dwarf:     {:x?}", got.live);
        println!(
            "caller of qsort {caller:x}: in fp walk {}, in DWARF walk {}",
            returns_into(&got.fp, caller),
            returns_into(&got.live.ips, caller)
        );
        for walk in [&got.copied, &got.live] {
            assert!(returns_into(&walk.ips, caller), "{walk:x?}");
            assert!(returns_into(
                &walk.ips,
                dwarf_walks_through_frameless_libc_code as *const () as usize
            ));
        }
        assert!(got.live.complete);
        let merged = merge(got.copied.clone(), &got.fp);
        println!("merged copy with fp: {merged:x?}");
        assert!(returns_into(&merged.ips, caller));
    }

    #[inline(never)]
    fn block_in_read(fd: c_int) {
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`.
        black_box(unsafe { libc::read(fd, (&raw mut byte).cast(), 1) });
    }

    /// A forked child blocked in read(2), and the pipe it reads: killed, reaped and closed on
    /// drop, whatever the test did.
    struct Blocked {
        pid: libc::pid_t,
        fds: [c_int; 2],
    }

    impl Drop for Blocked {
        fn drop(&mut self) {
            // SAFETY: our child and our fds.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
                libc::close(self.fds[0]);
                libc::close(self.fds[1]);
            }
        }
    }

    /// The registers of a stopped tracee.
    fn tracee_regs(pid: libc::pid_t) -> Regs {
        // SAFETY: plain old data, filled by the kernel.
        let mut user: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: (&raw mut user).cast(),
            iov_len: size_of_val(&user),
        };
        // SAFETY: NT_PRSTATUS fills a user_regs_struct, which `iov` describes.
        let rc = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGSET,
                pid,
                libc::NT_PRSTATUS as usize,
                &raw mut iov,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        #[cfg(target_arch = "x86_64")]
        return Regs {
            ip: user.rip,
            sp: user.rsp,
            fp: user.rbp,
            lr: 0,
        };
        #[cfg(target_arch = "aarch64")]
        return Regs {
            ip: user.pc,
            sp: user.sp,
            fp: user.regs[29],
            lr: user.regs[30],
        };
    }

    /// The case of a blocked waiter: a process blocked in a syscall, its registers as the
    /// kernel has them (ip just past the syscall instruction, in glibc's frameless read
    /// wrapper), its stack read live.
    #[test]
    fn unwinds_a_process_blocked_in_a_syscall() {
        let mut fds = [0; 2];
        // SAFETY: fills `fds`.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child makes only async-signal-safe calls (read, _exit).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            block_in_read(fds[0]);
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0);
        let child = Blocked { pid, fds };
        let read_nr = format!("{} ", libc::SYS_read);
        let blocked = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| s.starts_with(&read_nr))
        });
        assert!(blocked, "the child never blocked in read");
        // SAFETY: attaches to and stops our own child.
        unsafe {
            assert_eq!(libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize), 0);
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize), 0);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFSTOPPED(status));
        }
        let regs = tracee_regs(child.pid);
        let mut unwinder = Unwinder::new();
        let dwarf = unwinder.unwind(pid as u32, regs, procmem::live_reader(pid as u32));
        let fp = userstack::walk_words(regs.ip, regs.fp, &mut procmem::live_reader(pid as u32));
        drop(child);
        let caller = block_in_read as *const () as usize;
        println!("fp walk: {fp:x?}");
        println!("dwarf:   {dwarf:x?}");
        println!(
            "caller of read {caller:x}: in fp walk {}, in DWARF walk {}",
            returns_into(&fp, caller),
            returns_into(&dwarf.ips, caller)
        );
        assert!(dwarf.complete);
        assert!(returns_into(&dwarf.ips, caller), "{dwarf:x?}");
        assert!(returns_into(
            &dwarf.ips,
            unwinds_a_process_blocked_in_a_syscall as *const () as usize
        ));
    }

    #[test]
    fn caches_binaries_across_processes_and_forgets_processes() {
        let pid = std::process::id();
        let mut unwinder = Unwinder::new();
        let (regs, copy) = with_regs(&mut |regs| (regs, copy_stack(regs.sp, 16384)));
        let first = unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy));
        let loaded = unwinder.stats().binaries_loaded;
        assert!(loaded >= 2, "{:?}", unwinder.stats());
        assert_eq!(
            unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy)),
            first
        );
        unwinder.forget(pid);
        assert_eq!(
            unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy)),
            first
        );
        let stats = unwinder.stats();
        assert_eq!((stats.unwinds, stats.binaries_loaded), (3, loaded));
        assert_eq!(stats.module_refreshes, 0);
    }

    #[test]
    fn evicts_processes_and_binaries_beyond_the_bounds() {
        let pid = std::process::id();
        let mut unwinder = Unwinder::with_limits(2, 1);
        let (regs, copy) = with_regs(&mut |regs| (regs, copy_stack(regs.sp, 16384)));
        let bounded = unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy));
        // Binaries evicted from the cache stay usable by the process that maps them.
        assert_eq!(
            unwinder.stats().binaries_evicted,
            unwinder.stats().binaries_loaded - 1
        );
        let unbounded = Unwinder::new().unwind(pid, regs, copy_reader(regs.sp, &copy));
        assert_eq!(bounded, unbounded);
        assert!(bounded.complete && bounded.ips.len() > 4, "{bounded:x?}");
        // Processes that are gone: no maps, no modules, a walk by frame pointers only.
        let gone = Regs {
            ip: 0x1000,
            sp: 0x2000,
            fp: 0,
            lr: 0,
        };
        unwinder.unwind(u32::MAX - 1, gone, |_| None);
        unwinder.unwind(u32::MAX - 2, gone, |_| None);
        assert_eq!(unwinder.stats().processes_evicted, 1);
        // This process was the least recently used.
        assert!(!unwinder.processes.contains_key(&pid));
    }

    #[test]
    fn new_code_is_found_by_reading_the_maps_again() {
        let pid = std::process::id();
        let mut unwinder = Unwinder::new();
        let (regs, copy) = with_regs(&mut |regs| (regs, copy_stack(regs.sp, 16384)));
        unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy));
        // An address in no mapping: read the maps once, then remembered as garbage.
        let nowhere = Regs { ip: 0x1000, ..regs };
        unwinder.unwind(pid, nowhere, |_| None);
        unwinder.unwind(pid, nowhere, |_| None);
        assert_eq!(unwinder.stats().module_refreshes, 1);
        // Code mapped since (as by dlopen): this test binary's first page, mapped again.
        let exe = File::open("/proc/self/exe").unwrap();
        // SAFETY: a fresh read-only executable mapping of a file; unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&exe),
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let fresh = Regs {
            ip: addr as u64 + 16,
            ..regs
        };
        let loaded = unwinder.stats().binaries_loaded;
        unwinder.unwind(pid, fresh, |_| None);
        let stats = unwinder.stats();
        assert_eq!(stats.module_refreshes, 2);
        assert_eq!(
            stats.binaries_loaded, loaded,
            "the executable was loaded already"
        );
        assert!(unwinder.processes[&pid].covers(addr as u64 + 16));
        // SAFETY: unmaps the mapping made above.
        unsafe { libc::munmap(addr, 4096) };
    }

    #[test]
    fn unwind_cost() {
        let pid = std::process::id();
        let (regs, copy) = with_regs(&mut |regs| (regs, copy_stack(regs.sp, 16384)));
        let start = Instant::now();
        let mut unwinder = Unwinder::new();
        let first = unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy));
        let cold = start.elapsed();
        const N: u32 = 2000;
        let start = Instant::now();
        for _ in 0..N {
            black_box(unwinder.unwind(pid, regs, copy_reader(regs.sp, &copy)));
        }
        let copied = start.elapsed() / N;
        let start = Instant::now();
        for _ in 0..N {
            black_box(unwinder.unwind(pid, regs, procmem::live_reader(pid)));
        }
        let live = start.elapsed() / N;
        println!(
            "{} frames: first unwind (maps, {} binaries) {cold:?}; then {copied:?} per unwind \
             of a copy, {live:?} live",
            first.ips.len(),
            unwinder.stats().binaries_loaded
        );
    }
}
