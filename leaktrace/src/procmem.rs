//! Reads of another process's memory (`process_vm_readv`, which needs ptrace access): only the
//! words the waiter analysis needs — lock words and the stacks of blocked threads.

use std::io;

/// Fills `buf` from `addr` in process `pid`; an error unless every byte was read.
pub fn read(pid: u32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: one local iovec over `buf`; the kernel validates the remote range.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else if n as usize == buf.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"))
    }
}

/// A native-endian u32 at `addr` in process `pid`.
pub fn read_u32(pid: u32, addr: u64) -> io::Result<u32> {
    let mut buf = [0u8; 4];
    read(pid, addr, &mut buf)?;
    Ok(u32::from_ne_bytes(buf))
}

/// Blocks a [`live_reader`] reads and keeps: page-aligned, so each is mapped whole or not at all.
const BLOCK: u64 = 4096;
/// Blocks a [`live_reader`] keeps at most: 256 KiB, more stack than a walk of
/// [`crate::userstack::MAX_FRAMES`] frames usually spans.
const MAX_BLOCKS: usize = 64;

/// Reads native-endian u64s of process `pid` (a blocked thread's stack, for an unwinder), None
/// where its memory cannot be read. The 4 KiB blocks read are kept, so a stack walk costs a
/// syscall per block it touches instead of one per word.
pub fn live_reader(pid: u32) -> impl FnMut(u64) -> Option<u64> {
    let mut blocks = Blocks {
        pid,
        held: Vec::new(),
        next: 0,
    };
    move |addr| {
        let mut word = [0u8; 8];
        let end = addr.checked_add(8)?;
        // A word may straddle two blocks: copy each block's part.
        let mut at = addr;
        while at < end {
            let base = at & !(BLOCK - 1);
            let block = blocks.get(base)?;
            let from = (at - base) as usize;
            let len = ((end - at) as usize).min(BLOCK as usize - from);
            let into = (at - addr) as usize;
            word[into..into + len].copy_from_slice(&block[from..from + len]);
            at += len as u64;
        }
        Some(u64::from_ne_bytes(word))
    }
}

/// The blocks of a [`live_reader`]: base → bytes, None for a block that could not be read (also
/// remembered, so a walk that keeps probing it costs nothing more).
struct Blocks {
    pid: u32,
    held: Vec<(u64, Option<Box<[u8]>>)>,
    /// Slot replaced next once `held` is full: the oldest.
    next: usize,
}

impl Blocks {
    fn get(&mut self, base: u64) -> Option<&[u8]> {
        let slot = match self.held.iter().position(|(held, _)| *held == base) {
            Some(slot) => slot,
            None => {
                let mut bytes = vec![0u8; BLOCK as usize].into_boxed_slice();
                let bytes = read(self.pid, base, &mut bytes).ok().map(|()| bytes);
                if self.held.len() < MAX_BLOCKS {
                    self.held.push((base, bytes));
                    self.held.len() - 1
                } else {
                    let slot = self.next;
                    self.next = (slot + 1) % MAX_BLOCKS;
                    self.held[slot] = (base, bytes);
                    slot
                }
            }
        };
        self.held[slot].1.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_memory() {
        let word: u32 = 0x1234_5678;
        let got = read_u32(std::process::id(), (&raw const word) as u64).unwrap();
        assert_eq!(got, 0x1234_5678);
        let pair: [u64; 2] = [7, 0xdead_beef];
        let mut got = [0u8; 16];
        read(std::process::id(), pair.as_ptr() as u64, &mut got).unwrap();
        assert_eq!(
            u64::from_ne_bytes(got[8..].try_into().unwrap()),
            0xdead_beef
        );
        assert!(read_u32(std::process::id(), 8).is_err());
    }

    #[test]
    fn live_reader_reads_words_across_blocks_and_fails_outside_memory() {
        // Three blocks' worth, so some word straddles a block boundary whatever the alignment.
        let words: Vec<u64> = (0..1536u64).map(|i| i * 0x0101_0101).collect();
        let base = words.as_ptr() as u64;
        let mut read = live_reader(std::process::id());
        for (i, want) in words.iter().enumerate() {
            assert_eq!(read(base + 8 * i as u64), Some(*want));
        }
        // Unaligned: the bytes of two neighbouring words.
        let boundary = (base + BLOCK) & !(BLOCK - 1);
        let mut want = [0u8; 8];
        let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_ne_bytes()).collect();
        let at = (boundary - 3 - base) as usize;
        want.copy_from_slice(&bytes[at..at + 8]);
        assert_eq!(read(boundary - 3), Some(u64::from_ne_bytes(want)));
        assert_eq!(read(8), None);
        assert_eq!(read(u64::MAX - 4), None);
    }
}
