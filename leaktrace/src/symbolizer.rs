//! Stack ids → frames, with blazesym.
//!
//! Split in two because a leaking process is often gone by the time it is reported:
//! [`Symbolizer::capture`] runs while the process lives and turns each address into (mapped
//! file, file offset) from `/proc/PID/maps`, keeping the mapped file open;
//! [`Symbolizer::frames`] runs when a report wants the stack, possibly after the process exited,
//! and reads symbols, DWARF lines and inlined functions from that file.
//!
//! Not `Send`: blazesym's symbolizer is not.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use blazesym::normalize::{NormalizeOpts, Normalizer, UserMeta};
use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Reason, Sym, Symbolized};
use blazesym::Pid;

use crate::model::{Frame, Origin, StackRef};

const MAX_STACKS: usize = 65536;
/// Each module holds up to two fds (ours and blazesym's), so this also bounds fd use.
const MAX_MODULES: usize = 128;

/// Counters since creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    /// Distinct stacks captured, failed captures included.
    pub captured_stacks: u64,
    /// Captures whose process could not be read (gone, or pid 0): their frames have only addrs.
    pub capture_failures: u64,
    /// Frames given a symbol, inlined frames included. Each distinct stack is symbolized once,
    /// so cache hits add nothing.
    pub symbolized_frames: u64,
    /// Frames left without a symbol.
    pub unresolved_frames: u64,
    /// Stacks dropped, oldest first, to stay within the cache bound.
    pub evicted_stacks: u64,
    /// Modules (open file and parsed symbols) dropped, least recently used first.
    pub evicted_modules: u64,
}

#[derive(Debug)]
pub struct Symbolizer {
    normalizer: Normalizer,
    modules: Modules,
    /// Stack → id of its (deduplicated) address list, and how the addresses were obtained.
    stacks: HashMap<StackRef, (u64, Origin)>,
    /// Capture order, for evicting the oldest.
    order: VecDeque<StackRef>,
    interned: HashMap<Rc<[Site]>, u64>,
    unique: HashMap<u64, Unique>,
    places: Places,
    next_id: u64,
    max_stacks: usize,
    stats: SymbolizerStats,
}

/// One captured address and where it was. 24 bytes: the cache holds up to `MAX_STACKS`
/// stacks of up to 127 frames (a frame-pointer walk through code without frame pointers runs
/// that deep on garbage), and a site naming its place inline took 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Site {
    /// As captured; what [`Frame::addr`] reports.
    addr: u64,
    /// Offset into the file of a [`Place::File`]; 0 elsewhere.
    offset: u64,
    /// Index into [`Symbolizer::places`].
    place: u32,
}
const _: () = assert!(std::mem::size_of::<Site>() == 24);

/// Where an address was.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Place {
    /// Anonymous or JIT memory, an unmapped address, or the capture failed.
    Raw,
    /// In the vDSO, which has no file: blazesym names it while normalizing.
    Vdso(Rc<str>),
    /// In the file mapped from `path`; `module` is None if it could not be opened.
    File {
        path: Rc<str>,
        module: Option<ModuleId>,
    },
}

/// [`Place::Raw`]'s index, reserved.
const RAW: u32 = 0;

/// Where addresses were, each stored once; sites name them by index. Places are few (the files
/// mapped by traced processes, and the vDSO's functions) and never dropped.
#[derive(Debug)]
struct Places {
    list: Vec<Place>,
    ids: HashMap<Place, u32>,
}

impl Places {
    fn new() -> Self {
        Self {
            list: vec![Place::Raw],
            ids: HashMap::from([(Place::Raw, RAW)]),
        }
    }

    /// The index of `place`, stored on first sight.
    fn id(&mut self, place: Place) -> u32 {
        if let Some(&id) = self.ids.get(&place) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(place.clone());
        self.ids.insert(place, id);
        id
    }

    fn of(&self, site: &Site) -> &Place {
        self.list.get(site.place as usize).unwrap_or(&Place::Raw)
    }
}

/// A deduplicated address list and, once asked for, its frames.
#[derive(Debug)]
struct Unique {
    sites: Rc<[Site]>,
    /// Stacks sharing it.
    refs: usize,
    frames: Option<Box<[Frame]>>,
}

/// `(st_dev, st_ino)` of a mapped file: unlike its path, this cannot come to mean another file.
type ModuleId = (u64, u64);

/// Open mapped files and blazesym's symbol caches for them, least recently used evicted first.
#[derive(Debug)]
struct Modules {
    blaze: blazesym::symbolize::Symbolizer,
    open: HashMap<ModuleId, Module>,
    max: usize,
    clock: u64,
    evicted: u64,
}

#[derive(Debug)]
struct Module {
    /// Keeps the mapped file readable after the process exits or the file is deleted.
    _file: File,
    /// `/proc/self/fd/N` of that file: how blazesym, which wants a path, gets at it.
    src: PathBuf,
    /// The path it was first seen mapped from, shared by every frame in it: one allocation
    /// per module instead of one per frame.
    path: Rc<str>,
    last_used: u64,
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::with_limits(MAX_STACKS, MAX_MODULES)
    }

    fn with_limits(max_stacks: usize, max_modules: usize) -> Self {
        Self {
            // VMAs are looked up afresh on every capture: cached ones go stale on
            // dlopen/munmap. Where the kernel has the PROCMAP_QUERY ioctl (6.11+) each address
            // is one query; otherwise all of /proc/PID/maps is read, which costs as much as the
            // process has mappings (every thread stack is one): a process of 2000 threads made
            // that 4000 lines per new stack and kept leaktrace busy for seconds.
            // Build ids are off: modules are identified by the open file itself, and reading
            // them would parse every ELF again on every capture.
            normalizer: Normalizer::builder()
                .enable_procmap_query(
                    blazesym::helper::is_procmap_query_supported().unwrap_or(false),
                )
                .enable_vma_caching(false)
                .enable_build_ids(false)
                .build(),
            modules: Modules {
                blaze: blazesym::symbolize::Symbolizer::builder()
                    .enable_code_info(true)
                    .enable_inlined_fns(true)
                    .enable_demangling(true)
                    .build(),
                open: HashMap::new(),
                max: max_modules.max(1),
                clock: 0,
                evicted: 0,
            },
            stacks: HashMap::new(),
            order: VecDeque::new(),
            interned: HashMap::new(),
            unique: HashMap::new(),
            places: Places::new(),
            next_id: 0,
            max_stacks: max_stacks.max(1),
            stats: SymbolizerStats::default(),
        }
    }

    /// Normalizes the addresses (innermost first) of a new stack of a live process. Stacks
    /// already captured are skipped. If the process cannot be read the stack is still recorded,
    /// with frames carrying only addresses.
    pub fn capture(&mut self, stack: StackRef, ips: &[u64], origin: Origin) {
        if self.stacks.contains_key(&stack) {
            return;
        }
        // The kernel zero-fills stack map slots past the last frame.
        let ips = ips.split(|&ip| ip == 0).next().unwrap_or_default();
        let sites = match self.normalize(stack.pid, ips) {
            Some(sites) => sites,
            None => {
                self.stats.capture_failures += 1;
                ips.iter()
                    .map(|&addr| Site {
                        addr,
                        offset: 0,
                        place: RAW,
                    })
                    .collect()
            }
        };
        self.stats.captured_stacks += 1;

        let id = match self.interned.get(sites.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let sites: Rc<[Site]> = sites.into();
                self.interned.insert(Rc::clone(&sites), id);
                self.unique.insert(
                    id,
                    Unique {
                        sites,
                        refs: 0,
                        frames: None,
                    },
                );
                id
            }
        };
        if let Some(unique) = self.unique.get_mut(&id) {
            unique.refs += 1;
        }
        self.stacks.insert(stack, (id, origin));
        self.order.push_back(stack);
        while self.stacks.len() > self.max_stacks {
            self.evict_oldest_stack();
        }
    }

    /// Frames of a captured stack, innermost first, inlined calls as frames of their own;
    /// symbolized on first request, then cached. Unknown (or evicted) stack → empty.
    pub fn frames(&mut self, stack: StackRef) -> &[Frame] {
        let Some(&(id, _)) = self.stacks.get(&stack) else {
            return &[];
        };
        if let Some(unique) = self.unique.get(&id) {
            if unique.frames.is_none() {
                let sites = Rc::clone(&unique.sites);
                let frames = self.symbolize(&sites);
                if let Some(unique) = self.unique.get_mut(&id) {
                    unique.frames = Some(frames);
                }
            }
        }
        self.unique
            .get(&id)
            .and_then(|unique| unique.frames.as_deref())
            .unwrap_or_default()
    }

    /// How a captured stack was obtained.
    pub fn origin(&self, stack: StackRef) -> Option<Origin> {
        self.stacks.get(&stack).map(|&(_, origin)| origin)
    }

    pub fn stats(&self) -> SymbolizerStats {
        SymbolizerStats {
            evicted_modules: self.modules.evicted,
            ..self.stats
        }
    }

    /// None if the process's maps cannot be read.
    fn normalize(&mut self, pid: u32, ips: &[u64]) -> Option<Vec<Site>> {
        // blazesym reads pid 0 as "this process".
        let blaze_pid = Pid::Pid(NonZeroU32::new(pid)?);
        if ips.is_empty() {
            return Some(Vec::new());
        }
        // Every frame but the innermost is a return address, which may already be past the end
        // of the calling function (a call to a noreturn function): place the call instead.
        let lookup: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| if i == 0 { ip } else { ip.saturating_sub(1) })
            .collect();
        // map_files paths name the mapped file itself, even deleted or in another mount
        // namespace; modules are opened through them while the process still lives.
        let opts = NormalizeOpts {
            map_files: true,
            ..NormalizeOpts::default()
        };
        let out = self
            .normalizer
            .normalize_user_addrs_opts(blaze_pid, &lookup, &opts)
            .ok()?;
        let places: Vec<u32> = out
            .meta
            .iter()
            .map(|meta| {
                let place = match meta {
                    UserMeta::Elf(elf) => self.modules.open_mapped(pid, &elf.path),
                    UserMeta::Sym(sym) => Place::Vdso(sym.name.as_ref().into()),
                    _ => Place::Raw,
                };
                self.places.id(place)
            })
            .collect();
        let sites = ips
            .iter()
            .zip(&out.outputs)
            .map(|(&addr, &(offset, meta))| {
                let place = places.get(meta).copied().unwrap_or(RAW);
                let offset = match self.places.list.get(place as usize) {
                    Some(Place::File { .. }) => offset,
                    _ => 0,
                };
                Site {
                    addr,
                    offset,
                    place,
                }
            })
            .collect();
        Some(sites)
    }

    fn symbolize(&mut self, sites: &[Site]) -> Box<[Frame]> {
        // One blazesym call per module: its lookups are per source.
        let mut by_module: HashMap<ModuleId, Vec<usize>> = HashMap::new();
        for (i, site) in sites.iter().enumerate() {
            if let Place::File {
                module: Some(module),
                ..
            } = *self.places.of(site)
            {
                by_module.entry(module).or_default().push(i);
            }
        }
        let mut resolved: Vec<Option<Vec<Frame>>> = vec![None; sites.len()];
        for (module, indices) in by_module {
            let offsets: Vec<u64> = indices
                .iter()
                .filter_map(|&i| Some(sites.get(i)?.offset))
                .collect();
            let syms = self.modules.symbolize(module, &offsets);
            for (i, sym) in indices.into_iter().zip(syms) {
                if let (Some(sym), Some(site), Some(slot)) =
                    (sym, sites.get(i), resolved.get_mut(i))
                {
                    *slot = Some(sym_frames(site, self.places.of(site), &sym));
                }
            }
        }

        let mut frames = Vec::with_capacity(sites.len());
        for (site, resolved) in sites.iter().zip(resolved) {
            match resolved {
                Some(resolved) => frames.extend(resolved),
                None => frames.push(bare_frame(site, self.places.of(site))),
            }
        }
        let symbolized = frames.iter().filter(|f| f.symbol.is_some()).count() as u64;
        self.stats.symbolized_frames += symbolized;
        self.stats.unresolved_frames += frames.len() as u64 - symbolized;
        frames.into_boxed_slice()
    }

    fn evict_oldest_stack(&mut self) {
        let Some(stack) = self.order.pop_front() else {
            return;
        };
        let Some((id, _)) = self.stacks.remove(&stack) else {
            return;
        };
        self.stats.evicted_stacks += 1;
        if let Entry::Occupied(mut unique) = self.unique.entry(id) {
            unique.get_mut().refs -= 1;
            if unique.get().refs == 0 {
                self.interned.remove(&unique.remove().sites);
            }
        }
    }
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Modules {
    /// Opens the file behind `/proc/PID/map_files/START-END` (or finds it open already).
    fn open_mapped(&mut self, pid: u32, map_file: &Path) -> Place {
        // Readable with ptrace access alone, unlike the file behind it.
        let Ok(target) = fs::read_link(map_file) else {
            return Place::Raw;
        };
        let (path, deleted) = match target.as_os_str().as_bytes().strip_suffix(b" (deleted)") {
            Some(path) => (Path::new(OsStr::from_bytes(path)), true),
            None => (target.as_path(), false),
        };
        // Opening map_files needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE. Without, fall back
        // to the path as the process sees it (its root may differ from ours), then as we see
        // it; both would be a different file than the one mapped if it was deleted.
        let file = File::open(map_file).or_else(|err| {
            if deleted {
                return Err(err);
            }
            let relative = path.strip_prefix("/").unwrap_or(path);
            File::open(Path::new(&format!("/proc/{pid}/root")).join(relative))
                .or_else(|_| File::open(path))
        });
        let module = file.ok().and_then(|file| {
            let meta = file.metadata().ok()?;
            let id = (meta.dev(), meta.ino());
            self.clock += 1;
            let shared = match self.open.entry(id) {
                Entry::Occupied(mut open) => {
                    open.get_mut().last_used = self.clock;
                    Rc::clone(&open.get().path)
                }
                Entry::Vacant(vacant) => {
                    let path: Rc<str> = path.to_string_lossy().into();
                    vacant.insert(Module {
                        src: PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
                        _file: file,
                        path: Rc::clone(&path),
                        last_used: self.clock,
                    });
                    path
                }
            };
            while self.open.len() > self.max {
                self.evict_lru();
            }
            Some((id, shared))
        });
        let (module, path) = match module {
            Some((id, path)) => (Some(id), path),
            None => (None, path.to_string_lossy().into()),
        };
        Place::File { path, module }
    }

    /// One entry per offset: None where the module is gone or has no symbol for it.
    fn symbolize(&mut self, id: ModuleId, offsets: &[u64]) -> Vec<Option<Sym<'static>>> {
        let Some(module) = self.open.get_mut(&id) else {
            return vec![None; offsets.len()];
        };
        self.clock += 1;
        module.last_used = self.clock;
        let input = Input::FileOffset(offsets);
        let mut elf = Elf::new(&module.src);
        elf.debug_syms = false;
        // Broken or unsupported DWARF fails the whole file or single lookups (blazesym folds
        // those into Unknown); the ELF symbol table may still know the function.
        let lookup = |src: Source<'_>| {
            self.blaze
                .symbolize(&src, input)
                .unwrap_or_else(|_| vec![Symbolized::Unknown(Reason::IgnoredError); offsets.len()])
        };
        let dwarf = lookup(Source::Elf(Elf::new(&module.src)));
        let symtab = lookup(Source::Elf(elf));
        dwarf
            .into_iter()
            .zip(symtab)
            .map(|(dwarf, symtab)| match (dwarf, symtab) {
                // Same function: the symbol table's name is the full path, while DWARF's can be
                // short (`debug = "line-tables-only"` has no linkage names).
                (Symbolized::Sym(mut dwarf), Symbolized::Sym(symtab)) => {
                    if dwarf.addr == symtab.addr {
                        dwarf.name = symtab.name;
                    }
                    Some(dwarf.into_owned())
                }
                (Symbolized::Sym(sym), Symbolized::Unknown(_))
                | (Symbolized::Unknown(_), Symbolized::Sym(sym)) => Some(sym.into_owned()),
                (Symbolized::Unknown(_), Symbolized::Unknown(_)) => None,
            })
            .collect()
    }

    fn evict_lru(&mut self) {
        let Some(id) = self
            .open
            .iter()
            .min_by_key(|(_, module)| module.last_used)
            .map(|(&id, _)| id)
        else {
            return;
        };
        if let Some(module) = self.open.remove(&id) {
            // Also required for correctness: the fd number, and so the path, will be reused.
            let _ = self.blaze.evict(&Evict::Elf(evict::Elf::new(module.src)));
            self.evicted += 1;
        }
    }
}

fn bare_frame(site: &Site, place: &Place) -> Frame {
    let (symbol, module) = match place {
        Place::Raw => (None, None),
        Place::Vdso(name) => (Some(name.to_string()), None),
        Place::File { path, .. } => (None, Some(path.to_string())),
    };
    Frame {
        addr: site.addr,
        symbol,
        offset: module.is_some().then_some(site.offset),
        module,
        file: None,
        line: None,
    }
}

/// The frames of one address: inlined callees innermost first, then the function containing
/// the address. Each carries its own call-site line.
fn sym_frames(site: &Site, place: &Place, sym: &Sym<'_>) -> Vec<Frame> {
    let module = match place {
        Place::File { path, .. } => Some(path.to_string()),
        _ => None,
    };
    let frame = |name: &str, code: Option<&CodeInfo<'_>>| Frame {
        addr: site.addr,
        symbol: (!name.is_empty()).then(|| name.to_owned()),
        offset: module.is_some().then_some(site.offset),
        module: module.clone(),
        file: code.map(|code| code.to_path().to_string_lossy().into_owned()),
        line: code.and_then(|code| code.line),
    };
    sym.inlined
        .iter()
        .rev()
        .map(|inlined| frame(&inlined.name, inlined.code_info.as_ref()))
        .chain(std::iter::once(frame(&sym.name, sym.code_info.as_deref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::hint::black_box;

    use super::*;

    const FP: Origin = Origin {
        method: crate::unwind::Method::Fp,
        truncated: false,
    };

    /// Above PID_MAX_LIMIT (4M), so it can never exist.
    const NO_SUCH_PID: u32 = u32::MAX / 4;
    const PROBE: &str = "leaktrace_symbolizer_probe_fn";

    #[inline(never)]
    fn leaktrace_symbolizer_probe_fn(x: u64) -> u64 {
        let mut acc = x;
        for i in 0..black_box(16) {
            acc = acc.wrapping_mul(31).wrapping_add(i) ^ (acc >> 7);
        }
        acc
    }

    fn probe_addr() -> u64 {
        black_box(leaktrace_symbolizer_probe_fn(1));
        leaktrace_symbolizer_probe_fn as fn(u64) -> u64 as usize as u64
    }

    fn this(id: u32) -> StackRef {
        StackRef {
            pid: std::process::id(),
            exec_gen: 0,
            id,
        }
    }

    /// Whether the test binary carries DWARF line tables (not the case for a release build
    /// without `debug` in its profile): read from its ELF section headers.
    fn exe_has_dwarf_lines() -> bool {
        let Ok(elf) = fs::read("/proc/self/exe") else {
            return false;
        };
        let u16_at = |at: usize| -> Option<usize> {
            Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?).into())
        };
        let u32_at = |at: usize| -> Option<usize> {
            usize::try_from(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?)).ok()
        };
        let u64_at = |at: usize| -> Option<usize> {
            usize::try_from(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?)).ok()
        };
        let names = || -> Option<Vec<Vec<u8>>> {
            let (shoff, shentsize) = (u64_at(0x28)?, u16_at(0x3a)?);
            let (shnum, shstrndx) = (u16_at(0x3c)?, u16_at(0x3e)?);
            let strtab = u64_at(shoff + shstrndx * shentsize + 0x18)?;
            (0..shnum)
                .map(|i| {
                    let name = strtab + u32_at(shoff + i * shentsize)?;
                    let len = elf.get(name..)?.iter().position(|&b| b == 0)?;
                    Some(elf.get(name..name + len)?.to_vec())
                })
                .collect()
        };
        names().is_some_and(|names| names.iter().any(|name| name == b".debug_line"))
    }

    #[test]
    fn names_a_function_of_this_process() {
        let mut sym = Symbolizer::new();
        let probe = probe_addr();
        // Innermost exact, then a return-address-like one inside the probe.
        let ips = [probe + 1, probe + 9];
        sym.capture(this(1), &ips, FP);
        let frames = sym.frames(this(1)).to_vec();
        let exe = std::env::current_exe().expect("current exe");
        let dwarf = exe_has_dwarf_lines();
        for addr in ips {
            let at: Vec<&Frame> = frames.iter().filter(|f| f.addr == addr).collect();
            let probe_frame = at
                .iter()
                .find(|f| f.symbol.as_deref().is_some_and(|s| s.contains(PROBE)))
                .unwrap_or_else(|| panic!("no frame names {PROBE} at {addr:#x}: {frames:#?}"));
            let symbol = probe_frame.symbol.as_deref().unwrap_or_default();
            assert!(
                !symbol.contains("::h"),
                "legacy hash not stripped: {symbol}"
            );
            assert!(symbol.starts_with("leaktrace::"), "not demangled: {symbol}");
            assert_eq!(probe_frame.module.as_deref(), exe.to_str());
            if dwarf {
                let file = probe_frame.file.as_deref().unwrap_or_default();
                assert!(file.ends_with("symbolizer.rs"), "{probe_frame:?}");
                assert!(probe_frame.line.is_some(), "{probe_frame:?}");
            } else {
                // Release without `debug` in the profile: ELF symbols only, no file/line.
                assert_eq!(probe_frame.file, None, "binary has no DWARF");
            }
        }
        assert_eq!(frames.first().map(|f| f.addr), Some(probe + 1));
        let stats = sym.stats();
        assert_eq!((stats.captured_stacks, stats.capture_failures), (1, 0));
        assert_eq!(stats.symbolized_frames, frames.len() as u64);
    }

    #[test]
    fn names_a_shared_library_function() {
        let mut sym = Symbolizer::new();
        let getpid = libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize as u64;
        sym.capture(this(1), &[getpid], FP);
        let frames = sym.frames(this(1));
        let frame = frames.first().expect("a frame");
        assert!(
            frame.module.as_deref().is_some_and(|m| m.contains("libc")),
            "{frames:?}"
        );
        assert!(
            frame
                .symbol
                .as_deref()
                .is_some_and(|s| s.contains("getpid")),
            "{frames:?}"
        );
    }

    #[inline(always)]
    fn leaktrace_inlined_callee(x: u64) -> u64 {
        black_box(x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(17)
    }

    #[inline(never)]
    fn leaktrace_inlining_caller(x: u64) -> u64 {
        let a = leaktrace_inlined_callee(x);
        black_box(a) ^ leaktrace_inlined_callee(a + 1)
    }

    #[test]
    fn inlined_calls_are_frames_of_their_own() {
        black_box(leaktrace_inlining_caller(1));
        let caller = leaktrace_inlining_caller as fn(u64) -> u64 as usize as u64;
        // Every byte of the caller (and whatever follows it), each as an innermost frame.
        let ips: Vec<u64> = (0..128).map(|i| caller + i).collect();
        let mut sym = Symbolizer::new();
        for (id, &ip) in (0..).zip(&ips) {
            sym.capture(this(id), &[ip], FP);
        }
        let named = |f: &Frame, name: &str| f.symbol.as_deref().is_some_and(|s| s.contains(name));
        let inlined = (0..).zip(&ips).find_map(|(id, _)| {
            let frames = sym.frames(this(id));
            frames
                .iter()
                .any(|f| named(f, "leaktrace_inlined_callee"))
                .then(|| frames.to_vec())
        });
        if !exe_has_dwarf_lines() {
            assert_eq!(
                inlined, None,
                "inlined frames need DWARF, which this binary lacks"
            );
            return;
        }
        let frames = inlined.expect("an address inside the inlined callee");
        let callee = frames
            .iter()
            .position(|f| named(f, "leaktrace_inlined_callee"));
        let caller = frames
            .iter()
            .position(|f| named(f, "leaktrace_inlining_caller"));
        // Innermost first: the callee, then the function it was inlined into, last.
        assert!(
            callee < caller && caller == Some(frames.len() - 1),
            "{frames:#?}"
        );
        assert!(frames.iter().all(|f| f.line.is_some()), "{frames:#?}");
    }

    #[test]
    fn symbolizes_a_deleted_file_after_it_is_unmapped() {
        let mut sym = Symbolizer::new();
        sym.capture(this(1), &[probe_addr()], FP);
        let site = sym.unique.values().next().map(|u| u.sites[0]);
        let offset = match site.map(|site| (site, sym.places.of(&site))) {
            Some((site, Place::File { .. })) => site.offset,
            other => panic!("probe not in a file: {other:?}"),
        };
        // Map a copy of this executable, as a library would be, then delete the copy.
        let copy = std::env::temp_dir().join(format!("leaktrace-deleted-{}", std::process::id()));
        fs::copy(std::env::current_exe().expect("current exe"), &copy).expect("copy");
        let file = File::open(&copy).expect("open copy");
        let len = usize::try_from(file.metadata().expect("stat copy").len()).expect("len");
        // SAFETY: a fresh private read-only mapping of a file we own, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        fs::remove_file(&copy).expect("delete copy");
        drop(file);
        assert_ne!(map, libc::MAP_FAILED);
        let base = map as u64;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let end = base + (len as u64).div_ceil(page) * page;
        let privileged = File::open(format!("/proc/self/map_files/{base:x}-{end:x}")).is_ok();

        sym.capture(this(2), &[base + offset], FP);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(map, len) };
        // Gone from disk and from the address space: only the module's open file is left.
        let frames = sym.frames(this(2));
        assert_eq!(frames[0].module.as_deref(), copy.to_str(), "{frames:?}");
        if privileged {
            assert!(
                frames[0]
                    .symbol
                    .as_deref()
                    .is_some_and(|s| s.contains(PROBE)),
                "{frames:?}"
            );
        } else {
            // Without CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE a deleted file cannot be reopened.
            assert_eq!(frames[0].symbol, None, "{frames:?}");
        }
    }

    #[test]
    fn unknown_stack_is_empty() {
        let mut sym = Symbolizer::new();
        assert!(sym.frames(this(7)).is_empty());
        sym.capture(this(1), &[], FP);
        assert!(sym.frames(this(1)).is_empty());
        assert!(sym.frames(this(7)).is_empty());
    }

    #[test]
    fn gone_process_keeps_addresses() {
        let mut sym = Symbolizer::new();
        let probe = probe_addr();
        let gone = StackRef {
            pid: NO_SUCH_PID,
            exec_gen: 0,
            id: 1,
        };
        let kernel = StackRef {
            pid: 0,
            exec_gen: 0,
            id: 1,
        };
        // Trailing zeros are the kernel's padding.
        sym.capture(gone, &[probe, probe + 8, 0, 0], FP);
        sym.capture(kernel, &[probe], FP);
        let bare = |addr| Frame {
            addr,
            ..Frame::default()
        };
        assert_eq!(sym.frames(gone), [bare(probe), bare(probe + 8)]);
        assert_eq!(sym.frames(kernel), [bare(probe)]);
        let stats = sym.stats();
        assert_eq!((stats.captured_stacks, stats.capture_failures), (2, 2));
        assert_eq!((stats.symbolized_frames, stats.unresolved_frames), (0, 3));
    }

    #[test]
    fn anonymous_memory_keeps_the_address() {
        let len = 4096;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        let addr = map as u64 + 16;
        let mut sym = Symbolizer::new();
        sym.capture(this(1), &[addr], FP);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(map, len) };
        let frames = sym.frames(this(1));
        assert_eq!(
            frames,
            [Frame {
                addr,
                ..Frame::default()
            }]
        );
        assert_eq!(sym.stats().capture_failures, 0);
    }

    #[test]
    fn caches_and_deduplicates() {
        let mut sym = Symbolizer::new();
        let ips = [probe_addr() + 1];
        sym.capture(this(1), &ips, FP);
        let first = sym.frames(this(1)).to_vec();
        let after_first = sym.stats();
        assert!(after_first.symbolized_frames > 0);
        assert_eq!(sym.frames(this(1)), first);
        // Same addresses under another id (a forked child, say), and a repeated capture.
        sym.capture(this(2), &ips, FP);
        sym.capture(this(1), &ips, FP);
        assert_eq!(sym.frames(this(2)), first);
        let stats = sym.stats();
        assert_eq!(stats.captured_stacks, 2);
        assert_eq!(stats.symbolized_frames, after_first.symbolized_frames);
        assert_eq!(stats.unresolved_frames, after_first.unresolved_frames);
    }

    #[test]
    fn evicts_oldest_stacks() {
        let mut sym = Symbolizer::with_limits(2, MAX_MODULES);
        let probe = probe_addr();
        for id in 1..=3 {
            sym.capture(this(id), &[probe + u64::from(id)], FP);
        }
        assert!(sym.frames(this(1)).is_empty());
        assert_eq!(sym.frames(this(3)).first().map(|f| f.addr), Some(probe + 3));
        assert_eq!(sym.stats().evicted_stacks, 1);
        // A shared address list outlives the first stack using it.
        sym.capture(this(4), &[probe + 3], FP);
        assert_eq!(sym.frames(this(4)).first().map(|f| f.addr), Some(probe + 3));
        assert_eq!(sym.stats().evicted_stacks, 2);
        assert_eq!(
            (sym.stacks.len(), sym.unique.len(), sym.interned.len()),
            (2, 1, 1)
        );
    }

    #[test]
    fn evicts_least_recently_used_modules() {
        let mut sym = Symbolizer::with_limits(MAX_STACKS, 1);
        let probe = probe_addr();
        let getpid = libc::getpid as unsafe extern "C" fn() -> libc::pid_t as usize as u64;
        sym.capture(this(1), &[probe], FP);
        sym.capture(this(2), &[getpid], FP);
        assert_eq!(sym.stats().evicted_modules, 1);
        // The executable was evicted: module known, symbols gone.
        let frames = sym.frames(this(1));
        assert_eq!(frames.len(), 1);
        assert!(
            frames[0].module.is_some() && frames[0].symbol.is_none(),
            "{frames:?}"
        );
        assert!(sym.frames(this(2))[0].symbol.is_some());
        // Capturing it again reopens it.
        sym.capture(this(3), &[probe + 1], FP);
        assert!(sym.frames(this(3))[0].symbol.is_some());
        assert_eq!(sym.stats().evicted_modules, 2);
    }
}
