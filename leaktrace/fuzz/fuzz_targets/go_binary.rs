//! A Go binary as the tracer reads it from a process's executable: ELF headers, .go.buildinfo,
//! .gopclntab, runtime.g's DWARF and the runtime's code. Any file is a Go binary, not one (None)
//! or one the tracer cannot probe (an error), never a panic; a Go binary answers every address
//! and wait reason. The bytes are written to a memfd and inspected through its path, the way
//! the tracer opens /proc/PID/exe.
#![no_main]

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::sync::Mutex;

use leaktrace::goruntime::GoBinary;
use libfuzzer_sys::fuzz_target;

static FILE: Mutex<Option<(File, PathBuf)>> = Mutex::new(None);

fn memfd() -> (File, PathBuf) {
    // SAFETY: a NUL-terminated name and no flags; the fd returned is owned by the File.
    let fd = unsafe { libc::memfd_create(c"go-binary".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    (file, path)
}

fuzz_target!(|data: &[u8]| {
    let mut slot = FILE.lock().unwrap_or_else(|e| e.into_inner());
    let (file, path) = slot.get_or_insert_with(memfd);
    file.set_len(0).expect("truncate memfd");
    file.rewind().expect("rewind memfd");
    file.write_all(data).expect("write memfd");
    if let Ok(Some(binary)) = GoBinary::inspect(path) {
        for code in 0..=u8::MAX {
            let _ = binary.wait_reason(code);
        }
        let base = binary.image_base();
        for word in data.chunks_exact(8).take(64) {
            let pc = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let _ = binary.frame(pc);
            let _ = binary.frame(base.wrapping_add(pc & 0xff_ffff));
        }
    }
});
