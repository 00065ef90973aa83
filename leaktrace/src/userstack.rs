//! User stacks of blocked threads, walked from userspace. A thread in a futex wait does not run,
//! so its user stack stays as it was when the wait began: reading it when a scan finds the wait
//! long gives the stack the kernel would have captured at entry, and spares the other waits —
//! most last microseconds — a stack walk each (817 ns per wait, see BENCHMARKS.md). The probe
//! saves the registers at entry; the walk is the kernel's frame-pointer walk
//! (`bpf_get_stackid(BPF_F_USER_STACK)`), over `process_vm_readv`.

use std::hash::{DefaultHasher, Hash, Hasher};

use crate::model::StackId;

/// Frames at most, as the kernel's default `perf_event_max_stack`.
pub const MAX_FRAMES: usize = 127;

/// Walked stacks' ids have this bit set. The kernel stack map hands out ids below its capacity,
/// so the two never meet.
pub const WALKED: StackId = 1 << 31;
const _: () = assert!(leaktrace_common::capacity::STACKS <= WALKED);

/// The return addresses of a frame-pointer chain: `ip`, then for each frame record at `fp` —
/// two words, the caller's frame pointer and the return address — the return address, until
/// a null frame pointer, a record that cannot be read, or [`MAX_FRAMES`].
pub fn walk(ip: u64, fp: u64, mut read_record: impl FnMut(u64) -> Option<[u64; 2]>) -> Vec<u64> {
    let mut ips = vec![ip];
    let mut fp = fp;
    while fp != 0 && ips.len() < MAX_FRAMES {
        let Some([next, ret]) = read_record(fp) else {
            break;
        };
        ips.push(ret);
        fp = next;
    }
    ips
}

/// The frame-pointer walk over memory read a word at a time (a blocked thread's stack, through
/// the page cache of [`crate::procmem::live_reader`] that its unwind shares).
pub fn walk_words(ip: u64, fp: u64, read: &mut impl FnMut(u64) -> Option<u64>) -> Vec<u64> {
    walk(ip, fp, |addr| {
        Some([read(addr)?, read(addr.checked_add(8)?)?])
    })
}

/// An id for a walked stack: equal stacks get equal ids (waiters are grouped by stack id), and
/// the id space is [`WALKED`]'s half. Two different stacks of one process sharing an id takes
/// a 31-bit hash collision.
pub fn walked_id(ips: &[u64]) -> StackId {
    let mut hasher = DefaultHasher::new();
    ips.hash(&mut hasher);
    hasher.finish() as StackId | WALKED
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Frame records at fake addresses: fp → [next fp, return address].
    fn memory(records: &[(u64, [u64; 2])]) -> impl FnMut(u64) -> Option<[u64; 2]> {
        let map: HashMap<u64, [u64; 2]> = records.iter().copied().collect();
        move |addr| map.get(&addr).copied()
    }

    #[test]
    fn follows_the_chain_to_its_null_end() {
        let mem = memory(&[
            (0x100, [0x200, 0xa1]),
            (0x200, [0x300, 0xa2]),
            (0x300, [0, 0xa3]),
        ]);
        assert_eq!(walk(0xa0, 0x100, mem), vec![0xa0, 0xa1, 0xa2, 0xa3]);
    }

    #[test]
    fn stops_where_memory_cannot_be_read() {
        let mem = memory(&[(0x100, [0x999, 0xa1])]);
        assert_eq!(walk(0xa0, 0x100, mem), vec![0xa0, 0xa1]);
        // No frame pointer at all: the instruction pointer alone.
        assert_eq!(walk(0xa0, 0, memory(&[])), vec![0xa0]);
    }

    #[test]
    fn a_cycle_ends_at_the_frame_limit() {
        let mem = memory(&[(0x100, [0x100, 0xa1])]);
        assert_eq!(walk(0xa0, 0x100, mem).len(), MAX_FRAMES);
    }

    #[test]
    fn ids_are_the_stacks_and_never_kernel_ids() {
        let a = walked_id(&[1, 2, 3]);
        assert_eq!(a, walked_id(&[1, 2, 3]));
        assert_ne!(a, walked_id(&[1, 2, 4]));
        assert!(a & WALKED != 0);
    }

    #[test]
    fn walks_a_real_frame_pointer_chain() {
        // This crate is built with frame pointers (.cargo/config.toml): the chain from here
        // passes through the caller, whose return address lies inside this test function.
        #[inline(never)]
        fn leaf() -> Vec<u64> {
            let fp: u64;
            // SAFETY: reads the frame pointer register.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                std::arch::asm!("mov {}, rbp", out(reg) fp)
            };
            #[cfg(target_arch = "aarch64")]
            unsafe {
                std::arch::asm!("mov {}, x29", out(reg) fp)
            };
            let mut read = crate::procmem::live_reader(std::process::id());
            walk_words(leaf as *const () as u64, fp, &mut read)
        }
        let here = walks_a_real_frame_pointer_chain as *const () as u64;
        let ips = std::hint::black_box(leaf());
        assert!(ips.len() > 2, "{ips:x?}");
        // The first return address is in the caller: this function, within a few KiB.
        assert!(
            ips[1] > here && ips[1] - here < 4096,
            "{ips:x?} vs {here:x}"
        );
    }
}
