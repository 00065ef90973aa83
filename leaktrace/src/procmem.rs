//! Reads of another process's memory (`process_vm_readv`, which needs ptrace access): only the
//! words the waiter analysis needs — lock words and the frame records of blocked threads.

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

/// `N` native-endian u64s from `addr` in process `pid`.
pub fn read_u64s<const N: usize>(pid: u32, addr: u64) -> io::Result<[u64; N]> {
    let mut bytes = [[0u8; 8]; N];
    read(pid, addr, bytes.as_flattened_mut())?;
    Ok(bytes.map(u64::from_ne_bytes))
}

/// A native-endian u32 at `addr` in process `pid`.
pub fn read_u32(pid: u32, addr: u64) -> io::Result<u32> {
    let mut buf = [0u8; 4];
    read(pid, addr, &mut buf)?;
    Ok(u32::from_ne_bytes(buf))
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
        let got = read_u64s::<2>(std::process::id(), pair.as_ptr() as u64).unwrap();
        assert_eq!(got, pair);
        assert!(read_u32(std::process::id(), 8).is_err());
    }
}
