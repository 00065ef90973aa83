//! The Go version from `.go.buildinfo`, as debug/buildinfo reads it: a 32-byte header (14-byte
//! magic, pointer size, flags), then — since Go 1.18 (flag 2) — the version as a varint-prefixed
//! string; before, two pointers to Go string headers (version, module info).

use anyhow::{bail, ensure, Context};
use object::{Object, ObjectSection, ReadRef};

use super::Image;

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// The header sits at this alignment when it has to be searched for.
const ALIGN: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE_STRINGS: u8 = 2;

/// The `go version` string the binary was built with, or None when it has no build info.
pub(super) fn version<'data, R: ReadRef<'data>>(
    image: &Image<'_, 'data, R>,
) -> anyhow::Result<Option<String>> {
    let section = image.elf.section_by_name(".go.buildinfo");
    let header = match section {
        Some(section) => Some(section.data()?),
        // Without section headers: in a data segment, at an aligned offset.
        None => image.writable_data().find_map(find),
    };
    match header {
        Some(header) if header.starts_with(MAGIC) => {
            parse(header, |address, size| image.read(address, size)).map(Some)
        }
        Some(_) => bail!(".go.buildinfo does not start with the build info magic"),
        None => Ok(None),
    }
}

/// The build info header within `data`, searched at aligned offsets.
pub(super) fn find(data: &[u8]) -> Option<&[u8]> {
    (0..data.len())
        .step_by(ALIGN)
        .map(|at| &data[at..])
        .find(|rest| rest.starts_with(MAGIC) && rest.len() >= HEADER_LEN)
}

/// The version string of a build info header; `read` gives the bytes at a virtual address, for
/// the pointer format of Go before 1.18.
pub(super) fn parse<'m>(
    header: &[u8],
    read: impl Fn(u64, u64) -> Option<&'m [u8]>,
) -> anyhow::Result<String> {
    ensure!(
        header.len() >= HEADER_LEN && header.starts_with(MAGIC),
        "truncated build info"
    );
    let ptr_size = usize::from(header[14]);
    let flags = header[15];
    if flags & FLAG_INLINE_STRINGS != 0 {
        let (len, at) = uvarint(&header[HEADER_LEN..]).context("truncated build info version")?;
        let start = HEADER_LEN + at;
        let version = usize::try_from(len)
            .ok()
            .and_then(|len| header.get(start..start.checked_add(len)?))
            .context("truncated build info version")?;
        return Ok(String::from_utf8_lossy(version).into_owned());
    }
    ensure!(
        ptr_size == 4 || ptr_size == 8,
        "build info pointer size {ptr_size}"
    );
    let word = |bytes: &[u8]| -> Option<u64> {
        let bytes = bytes.get(..ptr_size)?;
        let mut value = [0; 8];
        if flags & FLAG_BIG_ENDIAN != 0 {
            value[8 - ptr_size..].copy_from_slice(bytes);
            Some(u64::from_be_bytes(value))
        } else {
            value[..ptr_size].copy_from_slice(bytes);
            Some(u64::from_le_bytes(value))
        }
    };
    let string_header = word(&header[16..])
        .and_then(|address| read(address, 2 * ptr_size as u64))
        .context("build info version pointer outside the file")?;
    let version = word(string_header)
        .zip(word(&string_header[ptr_size..]))
        .and_then(|(address, len)| read(address, len))
        .context("build info version string outside the file")?;
    Ok(String::from_utf8_lossy(version).into_owned())
}

/// An unsigned LEB128 varint (Go's encoding/binary.Uvarint) and the bytes it took.
pub(super) fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (at, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * at);
        if byte & 0x80 == 0 {
            return Some((value, at + 1));
        }
    }
    None
}
