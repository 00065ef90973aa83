//! Go's function table, .gopclntab (the Go 1.18+ layout; runtime/symtab.go and
//! debug/gosym/pclntab.go): a header, the function table (entry offset from runtime.text, offset
//! of the `_func` record), and the tables the records point into — function names, compilation
//! units' file lists, file names, and the pc-value tables that map pcs to a file and a line.

use anyhow::{ensure, Context};

use super::GoFrame;

/// Go 1.18 and 1.19.
const MAGIC_GO118: u32 = 0xffff_fff0;
/// Go 1.20 and later: `_func` gained startLine after the fields read here.
const MAGIC_GO120: u32 = 0xffff_fff1;
const PTR_SIZE: usize = 8;
/// magic, 2 pad bytes, minLC, ptrSize, then 8 words.
const HEADER_LEN: usize = 8 + 8 * PTR_SIZE;
/// A function table entry: entryoff, funcoff (uint32 each).
const FUNCTAB_ENTRY: usize = 8;

/// Offsets within a `_func` record.
const FUNC_NAME_OFF: usize = 4;
const FUNC_PCFILE: usize = 20;
const FUNC_PCLN: usize = 24;
const FUNC_CU_OFFSET: usize = 32;

pub(super) struct Pclntab {
    data: Vec<u8>,
    /// Instruction size unit of pc deltas: 1 on amd64, 4 on arm64.
    quantum: u32,
    nfunc: usize,
    /// The header's textStart: written up to Go 1.25, zero since.
    header_text_start: u64,
    /// runtime.text, the base of function entry offsets.
    text_start: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

/// A function's code range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Func {
    pub entry: u64,
    pub end: u64,
    /// Offset of its `_func` record in the table.
    record: usize,
}

impl Pclntab {
    pub fn parse(data: Vec<u8>) -> anyhow::Result<Pclntab> {
        ensure!(data.len() >= HEADER_LEN, "truncated .gopclntab");
        let magic = u32_at(&data, 0).unwrap_or_default();
        ensure!(
            magic == MAGIC_GO120 || magic == MAGIC_GO118,
            "unsupported .gopclntab magic {magic:#x}"
        );
        ensure!(
            usize::from(data[7]) == PTR_SIZE,
            ".gopclntab pointer size {}",
            data[7]
        );
        let word = |index: usize| u64_at(&data, 8 + index * PTR_SIZE).unwrap_or_default();
        let offset = |index: usize| -> anyhow::Result<usize> {
            usize::try_from(word(index))
                .ok()
                .filter(|&offset| offset <= data.len())
                .context(".gopclntab table offset beyond its end")
        };
        let nfunc = usize::try_from(word(0)).context(".gopclntab function count")?;
        let pclntab = Pclntab {
            quantum: u32::from(data[6]),
            nfunc,
            header_text_start: word(2),
            text_start: 0,
            funcnametab: offset(3)?,
            cutab: offset(4)?,
            filetab: offset(5)?,
            pctab: offset(6)?,
            functab: offset(7)?,
            data,
        };
        let functab_end = nfunc
            .checked_add(1)
            .and_then(|entries| entries.checked_mul(FUNCTAB_ENTRY))
            .and_then(|len| len.checked_add(pclntab.functab));
        ensure!(
            functab_end.is_some_and(|end| end <= pclntab.data.len()),
            "truncated .gopclntab function table"
        );
        ensure!(pclntab.quantum > 0, ".gopclntab quantum 0");
        Ok(pclntab)
    }

    /// Whether `bytes` start like a table's header: magic, two zero pads, a quantum of 1 (amd64)
    /// or 4 (arm64), 8-byte pointers.
    pub fn looks_like_header(bytes: &[u8]) -> bool {
        matches!(u32_at(bytes, 0), Some(MAGIC_GO118 | MAGIC_GO120))
            && matches!(bytes.get(4..8), Some([0, 0, 1 | 4, 8]))
    }

    pub fn funcnametab_offset(&self) -> u64 {
        self.funcnametab as u64
    }

    pub fn header_text_start(&self) -> Option<u64> {
        (self.header_text_start != 0).then_some(self.header_text_start)
    }

    pub fn set_text_start(&mut self, text_start: u64) {
        self.text_start = text_start;
    }

    /// The function named `name` (a linear scan: for the few runtime functions the probes need).
    pub fn find(&self, name: &str) -> Option<Func> {
        (0..self.nfunc)
            .filter_map(|index| self.func(index))
            .find(|&func| self.name(func) == Some(name))
    }

    /// The function whose code holds `pc`.
    pub fn func_at(&self, pc: u64) -> Option<Func> {
        let offset = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        if offset < self.entry_offset(0)? || offset >= self.entry_offset(self.nfunc)? {
            return None;
        }
        // entry(low) <= offset < entry(high)
        let (mut low, mut high) = (0, self.nfunc);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.entry_offset(middle)? <= offset {
                low = middle;
            } else {
                high = middle;
            }
        }
        self.func(low)
    }

    pub fn frame(&self, pc: u64) -> Option<GoFrame> {
        let func = self.func_at(pc)?;
        let file = self
            .pcvalue(func, FUNC_PCFILE, pc)
            .and_then(|index| self.file_name(func, index))
            .unwrap_or("?");
        let line = self.pcvalue(func, FUNC_PCLN, pc).unwrap_or(0);
        Some(GoFrame {
            function: self.name(func)?.to_owned(),
            file: file.to_owned(),
            line: u32::try_from(line).unwrap_or(0),
        })
    }

    /// Every function, in address order.
    #[cfg(test)]
    pub fn functions(&self) -> impl Iterator<Item = (Func, &str)> + '_ {
        (0..self.nfunc).filter_map(|index| {
            let func = self.func(index)?;
            Some((func, self.name(func)?))
        })
    }

    fn entry_offset(&self, index: usize) -> Option<u32> {
        u32_at(&self.data, self.functab + index * FUNCTAB_ENTRY)
    }

    fn func(&self, index: usize) -> Option<Func> {
        if index >= self.nfunc {
            return None;
        }
        let entry = self.entry_offset(index)?;
        let end = self.entry_offset(index + 1)?;
        let record_offset = u32_at(&self.data, self.functab + index * FUNCTAB_ENTRY + 4)?;
        let record = self
            .functab
            .checked_add(usize::try_from(record_offset).ok()?)?;
        // The record's fixed fields must be in the table for the reads below.
        self.data.get(record..record + FUNC_CU_OFFSET + 4)?;
        (entry <= end).then_some(Func {
            entry: self.text_start.checked_add(u64::from(entry))?,
            end: self.text_start.checked_add(u64::from(end))?,
            record,
        })
    }

    fn name(&self, func: Func) -> Option<&str> {
        let offset = u32_at(&self.data, func.record + FUNC_NAME_OFF)?;
        self.string(
            self.funcnametab
                .checked_add(usize::try_from(offset).ok()?)?,
        )
    }

    /// File `index` of the function's compilation unit.
    fn file_name(&self, func: Func, index: i32) -> Option<&str> {
        let cu = u32_at(&self.data, func.record + FUNC_CU_OFFSET)?;
        let entry = u64::from(cu) + u64::try_from(index).ok()?;
        let at = self
            .cutab
            .checked_add(usize::try_from(entry).ok()?.checked_mul(4)?)?;
        let offset = u32_at(&self.data, at)?;
        if offset == u32::MAX {
            return None;
        }
        self.string(self.filetab.checked_add(usize::try_from(offset).ok()?)?)
    }

    /// The value at `pc` of the function's pc-value table whose offset is the record's `field`.
    fn pcvalue(&self, func: Func, field: usize, pc: u64) -> Option<i32> {
        let offset = u32_at(&self.data, func.record + field)?;
        if offset == 0 {
            return None;
        }
        let table = self
            .data
            .get(self.pctab.checked_add(usize::try_from(offset).ok()?)?..)?;
        pcvalue(table, self.quantum, func.entry, pc)
    }

    /// A NUL-terminated string at `at`.
    fn string(&self, at: usize) -> Option<&str> {
        let bytes = self.data.get(at..)?;
        let end = bytes.iter().position(|&byte| byte == 0)?;
        std::str::from_utf8(&bytes[..end]).ok()
    }
}

/// The value of a pc-value table at `target`, for a function starting at `entry`: pairs of
/// (value delta, zigzag varint; pc delta × quantum, varint) from value -1 at `entry`, ending with
/// a zero value delta after the first pair (runtime.step).
pub(super) fn pcvalue(mut table: &[u8], quantum: u32, entry: u64, target: u64) -> Option<i32> {
    let mut pc = entry;
    let mut value: i32 = -1;
    let mut first = true;
    loop {
        let (value_delta, len) = varint(table)?;
        if value_delta == 0 && !first {
            return None;
        }
        first = false;
        table = &table[len..];
        value = value.wrapping_add((-((value_delta & 1) as i32)) ^ (value_delta >> 1) as i32);
        let (pc_delta, len) = varint(table)?;
        table = &table[len..];
        pc = pc.checked_add(u64::from(pc_delta) * u64::from(quantum))?;
        if target < pc {
            return Some(value);
        }
    }
}

/// A varint as the runtime reads pc-value tables (readvarint): 7 bits a byte, low first, into a
/// u32; the bytes it took.
pub(super) fn varint(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (at, &byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f) << (7 * at);
        if byte & 0x80 == 0 {
            return Some((value, at + 1));
        }
    }
    None
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}
