//! DWARF unwinding through a binary a traced process maps: its ELF headers, segments and
//! .eh_frame / .eh_frame_hdr / .debug_frame, parsed and walked as for a real thread. The input
//! is 32 bytes of registers (ip and fp relative to where the binary is mapped), a 2-byte stack
//! length, that many stack bytes, then the binary. Any binary and stack give a walk, never a
//! panic, and no walk is longer than the frame limit.
#![no_main]

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::FromRawFd;
use std::sync::Mutex;

use leaktrace::unwind::{self, Regs};
use leaktrace::userstack::MAX_FRAMES;
use libfuzzer_sys::fuzz_target;

/// Where the binary's first executable segment is mapped; the stack sits far above it.
const MAPPED_AT: u64 = 0x5555_0000_0000;
const STACK_AT: u64 = 0x7ffc_0000_0000;

static FILE: Mutex<Option<File>> = Mutex::new(None);

fn memfd() -> File {
    // SAFETY: a NUL-terminated name and no flags; the fd returned is owned by the File.
    let fd = unsafe { libc::memfd_create(c"unwind-elf".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nothing else owns.
    unsafe { File::from_raw_fd(fd) }
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fuzz_target!(|data: &[u8]| {
    let Some((regs, rest)) = data.split_first_chunk::<32>() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let (stack, elf) = rest.split_at(usize::from(u16::from_le_bytes(*len)).min(rest.len()));
    let regs = Regs {
        ip: MAPPED_AT.wrapping_add(word(regs, 0) & 0xff_ffff),
        sp: STACK_AT,
        fp: STACK_AT.wrapping_add(word(regs, 8) & 0xffff),
        lr: MAPPED_AT.wrapping_add(word(regs, 16) & 0xff_ffff),
    };
    let mut slot = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let file = slot.get_or_insert_with(memfd);
    file.set_len(0).expect("truncate memfd");
    file.rewind().expect("rewind memfd");
    file.write_all(elf).expect("write memfd");
    let ips = unwind::unwind_image(file, MAPPED_AT, regs, unwind::copy_reader(STACK_AT, stack));
    assert!(ips.len() <= MAX_FRAMES);
});
