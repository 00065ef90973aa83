//! `runtime.g` member offsets from a Go binary's DWARF: the `DW_TAG_structure_type` named
//! "runtime.g" and the `DW_AT_data_member_location` of its members. Go writes .debug_* sections
//! zlib-compressed (SHF_COMPRESSED); object decompresses them.

use std::borrow::Cow;

use anyhow::{bail, Context};
use gimli::{constants, AttributeValue, EndianSlice, LittleEndian};
use object::{Object, ObjectSection, ReadRef};

use super::GLayout;

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// The layout from DWARF; None when the binary has none (`-ldflags=-w`).
pub(super) fn from_dwarf<'data, R: ReadRef<'data>>(
    elf: &object::File<'data, R>,
) -> anyhow::Result<Option<GLayout>> {
    let Some(info) = elf.section_by_name(".debug_info") else {
        return Ok(None);
    };
    let section = |name: &str| -> anyhow::Result<Cow<'data, [u8]>> {
        match elf.section_by_name(name) {
            Some(section) => Ok(section.uncompressed_data()?),
            None => Ok(Cow::Borrowed(&[])),
        }
    };
    let info = info.uncompressed_data()?;
    let abbrev = section(".debug_abbrev")?;
    let strings = section(".debug_str")?;
    let debug_info = gimli::DebugInfo::new(&info, LittleEndian);
    let debug_abbrev = gimli::DebugAbbrev::new(&abbrev, LittleEndian);
    let debug_str = gimli::DebugStr::new(&strings, LittleEndian);

    let mut units = debug_info.units();
    while let Some(unit) = units.next()? {
        let abbreviations = unit.abbreviations(&debug_abbrev)?;
        let mut entries = unit.entries(&abbreviations);
        while let Some(entry) = entries.next_dfs()? {
            if entry.tag() != constants::DW_TAG_structure_type
                || name(entry.attr_value(constants::DW_AT_name), &debug_str) != Some(b"runtime.g")
            {
                continue;
            }
            // Members are the struct's children: one level deeper, until the depth falls back.
            let depth = entry.depth();
            let mut members = Members::default();
            while let Some(member) = entries.next_dfs()? {
                if member.depth() <= depth {
                    break;
                }
                if member.depth() != depth + 1 || member.tag() != constants::DW_TAG_member {
                    continue;
                }
                let offset = member
                    .attr(constants::DW_AT_data_member_location)
                    .and_then(|location| location.udata_value())
                    .and_then(|offset| u16::try_from(offset).ok());
                if let (Some(name), Some(offset)) = (
                    name(member.attr_value(constants::DW_AT_name), &debug_str),
                    offset,
                ) {
                    members.set(name, offset);
                }
            }
            return members.layout().map(Some);
        }
    }
    bail!("DWARF describes no runtime.g")
}

/// A DW_AT_name: inline (Go's choice) or in .debug_str.
fn name<'a>(
    value: Option<AttributeValue<Slice<'a>>>,
    debug_str: &gimli::DebugStr<Slice<'a>>,
) -> Option<&'a [u8]> {
    match value? {
        AttributeValue::String(name) => Some(name.slice()),
        AttributeValue::DebugStrRef(offset) => Some(debug_str.get_str(offset).ok()?.slice()),
        _ => None,
    }
}

#[derive(Default)]
struct Members {
    goid: Option<u16>,
    atomicstatus: Option<u16>,
    waitreason: Option<u16>,
    parent_goid: Option<u16>,
    gopc: Option<u16>,
    startpc: Option<u16>,
}

impl Members {
    fn set(&mut self, name: &[u8], offset: u16) {
        let field = match name {
            b"goid" => &mut self.goid,
            b"atomicstatus" => &mut self.atomicstatus,
            b"waitreason" => &mut self.waitreason,
            b"parentGoid" => &mut self.parent_goid,
            b"gopc" => &mut self.gopc,
            b"startpc" => &mut self.startpc,
            _ => return,
        };
        *field = Some(offset);
    }

    fn layout(self) -> anyhow::Result<GLayout> {
        let member = |offset: Option<u16>, name: &str| {
            offset.with_context(|| format!("runtime.g has no member {name} in DWARF"))
        };
        Ok(GLayout {
            goid: member(self.goid, "goid")?,
            atomicstatus: member(self.atomicstatus, "atomicstatus")?,
            waitreason: member(self.waitreason, "waitreason")?,
            parent_goid: member(self.parent_goid, "parentGoid")?,
            gopc: member(self.gopc, "gopc")?,
            startpc: member(self.startpc, "startpc")?,
        })
    }
}
