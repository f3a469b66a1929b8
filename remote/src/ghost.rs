//! Ghost images: a frozen body as one self-contained byte string.
//!
//! ```text
//! ┌──────────────────────────────────────────────────────────────┐
//! │ magic "SSIGHOST" (8) │ major u16 │ minor u16 │ module SHA-256 (32) │
//! ├──────────────────────────────────────────────────────────────┤
//! │ section: kind u8 │ payload length u64 │ payload …               │  × n
//! ├──────────────────────────────────────────────────────────────┤
//! │ end: kind 0 │ length 0                                           │
//! │ checksum: XXH3-64 of every byte before it (u64)               │
//! └──────────────────────────────────────────────────────────────┘
//!
//! memory   (1): index u32 │ size in bytes u64 │ run count u32 │ runs …
//!               run: first page u64 │ pages u32 │ stored length u32 │ bytes
//!               (pages are 64 KiB; all-zero pages are not stored; the bytes
//!               are an LZ4 block, or the pages as they are when the stored
//!               length is exactly pages × 64 KiB: data LZ4 cannot shrink)
//! globals  (2): count u32 │ (type u8 │ 16 bytes of value) …
//! tables   (3): count u32 │ (index u32 │ length u32 │ element u32 …) …
//!               (an element is a function index, or u32::MAX for null)
//! stack    (4): the unwound call stack, as the instrumentation left it
//! clocks   (5): monotonic clock offset u64 (ns)
//! command  (6): argc u32 │ (length u32 │ bytes) … │ envc u32 │ (length u32 │ bytes) …
//! deputy   (7): the deputy's state, for checkpoints (its own encoding)
//! module   (8): the module's bytes, for checkpoints (a restart needs no copy)
//! instrumentation (9): version u32 of the instrumentation the stack was
//!               unwound by (a body of another version cannot rewind it)
//! ```
//!
//! A checkpoint file is an image with the deputy and module sections: the
//! home adds them to the image its body sent ([`seal_checkpoint`]).
//!
//! All integers are little-endian. The major version must match; a minor
//! version may be older than ours (newer minor versions only add section kinds,
//! which an older reader rejects by name). Decoding checks every length against
//! what remains and against fixed limits before it allocates, and every failure
//! is a [`GhostError`] that names the section.

use crate::engine::ModuleHash;
use std::fmt;

const MAGIC: &[u8; 8] = b"SSIGHOST";
pub const MAJOR: u16 = 1;
pub const MINOR: u16 = 1;
/// A Wasm page.
pub const PAGE: usize = 64 * 1024;
/// Pages per stored run: bounds what one run decompresses into.
const RUN_PAGES: usize = 64;
/// Bytes of a run tried first to see whether compressing it pays.
const SAMPLE: usize = 8 * 1024;
/// Wasm32's largest memory: 4 GiB.
const MAX_MEMORY: u64 = 1 << 32;
const MAX_MEMORIES: usize = 16;
const MAX_GLOBALS: u32 = 1 << 20;
const MAX_TABLE: u32 = 1 << 24;
const MAX_STRINGS: u32 = 1 << 20;

/// The sections of an image, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Header,
    Memory,
    Globals,
    Tables,
    Stack,
    Clocks,
    Command,
    Deputy,
    Module,
    Instrumentation,
    Checksum,
}

impl Section {
    fn kind(self) -> u8 {
        match self {
            Section::Memory => 1,
            Section::Globals => 2,
            Section::Tables => 3,
            Section::Stack => 4,
            Section::Clocks => 5,
            Section::Command => 6,
            Section::Deputy => 7,
            Section::Module => 8,
            Section::Instrumentation => 9,
            Section::Header | Section::Checksum => 0,
        }
    }

    fn of_kind(kind: u8) -> Option<Section> {
        Some(match kind {
            1 => Section::Memory,
            2 => Section::Globals,
            3 => Section::Tables,
            4 => Section::Stack,
            5 => Section::Clocks,
            6 => Section::Command,
            7 => Section::Deputy,
            8 => Section::Module,
            9 => Section::Instrumentation,
            _ => return None,
        })
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Memory => "memory",
            Section::Globals => "globals",
            Section::Tables => "tables",
            Section::Stack => "stack",
            Section::Clocks => "clocks",
            Section::Command => "command",
            Section::Deputy => "deputy",
            Section::Module => "module",
            Section::Instrumentation => "instrumentation",
            Section::Checksum => "checksum",
        })
    }
}

/// Why an image cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GhostError {
    #[error("the image is empty")]
    Empty,
    #[error("not a ghost image (bad magic)")]
    BadMagic,
    #[error(
        "ghost image version {major}.{minor} is not readable by this version ({MAJOR}.{MINOR})"
    )]
    Version { major: u16, minor: u16 },
    #[error("the image is truncated in its {0} section")]
    Truncated(Section),
    #[error("the image is corrupt: its checksum does not match")]
    Checksum,
    #[error("the image's {section} section is corrupt: {what}")]
    Corrupt { section: Section, what: String },
    #[error("unknown section kind {0} (written by a newer version?)")]
    UnknownSection(u8),
    #[error(
        "the image was taken under instrumentation version {found:?}, and this version needs {expected}"
    )]
    WrongInstrumentation { expected: u32, found: Option<u32> },
    #[error("the image is of module {found}, not {expected}")]
    WrongModule {
        expected: ModuleHash,
        found: ModuleHash,
    },
}

fn corrupt(section: Section, what: impl Into<String>) -> GhostError {
    GhostError::Corrupt {
        section,
        what: what.into(),
    }
}

/// The value of one global, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// The bits of an f32.
    F32(u32),
    /// The bits of an f64.
    F64(u64),
    V128(u128),
}

/// One linear memory, sparse: only runs of pages that are not all zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryImage {
    pub size: u64,
    /// (first page, bytes of whole pages)
    pub runs: Vec<(u64, Vec<u8>)>,
}

impl MemoryImage {
    /// Takes a memory's contents, leaving out all-zero pages.
    pub fn capture(bytes: &[u8]) -> MemoryImage {
        let pages = bytes.len().div_ceil(PAGE);
        let page = |i: usize| &bytes[i * PAGE..((i + 1) * PAGE).min(bytes.len())];
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut i = 0;
        while i < pages {
            if is_zero(page(i)) {
                i += 1;
                continue;
            }
            // A run of pages that are not all zero, copied at once.
            let mut end = i + 1;
            while end < pages && end - i < RUN_PAGES && !is_zero(page(end)) {
                end += 1;
            }
            let data = bytes[i * PAGE..(end * PAGE).min(bytes.len())].to_vec();
            runs.push((i as u64, data));
            i = end;
        }
        MemoryImage {
            size: bytes.len() as u64,
            runs,
        }
    }

    /// Writes the stored pages into `memory`, which must be `size` bytes of zeros.
    pub fn restore(&self, memory: &mut [u8]) -> Result<(), GhostError> {
        self.restore_over(memory, 0)
    }

    /// Writes the stored pages into `memory` (`size` bytes), of which only the
    /// first `dirty` bytes may hold anything but zeros (a fresh instance's data
    /// segments): those pages that no run covers are cleared, unless they are
    /// zero already (read, not written: untouched pages stay unmapped).
    pub fn restore_over(&self, memory: &mut [u8], dirty: usize) -> Result<(), GhostError> {
        if memory.len() as u64 != self.size {
            return Err(corrupt(
                Section::Memory,
                format!(
                    "the memory is {} bytes, the image {}",
                    memory.len(),
                    self.size
                ),
            ));
        }
        let dirty_pages = dirty.min(memory.len()).div_ceil(PAGE);
        let mut next_run = self.runs.iter().peekable();
        let mut page = 0usize;
        while page < dirty_pages {
            // Skip the pages of runs that start at or before this page.
            while let Some((first, data)) = next_run.peek() {
                let end = *first as usize + data.len().div_ceil(PAGE);
                if end <= page {
                    next_run.next();
                } else {
                    break;
                }
            }
            let covered = next_run
                .peek()
                .is_some_and(|(first, _)| (*first as usize) <= page);
            if !covered {
                let range = page * PAGE..((page + 1) * PAGE).min(memory.len());
                if !is_zero(&memory[range.clone()]) {
                    memory[range].fill(0);
                }
            }
            page += 1;
        }
        for (first, data) in &self.runs {
            let start = *first as usize * PAGE;
            let end = start + data.len();
            memory
                .get_mut(start..end)
                .ok_or_else(|| corrupt(Section::Memory, "a run lies outside the memory"))?
                .copy_from_slice(data);
        }
        Ok(())
    }

    /// Bytes actually stored (before compression).
    pub fn stored_bytes(&self) -> u64 {
        self.runs.iter().map(|(_, d)| d.len() as u64).sum()
    }
}

/// Whether a page is all zeros, 64 bytes at a time (a page that is not
/// usually says so in its first bytes).
fn is_zero(page: &[u8]) -> bool {
    let mut blocks = page.chunks_exact(64);
    blocks
        .by_ref()
        .all(|b| b.iter().fold(0u8, |acc, x| acc | x) == 0)
        && blocks.remainder().iter().all(|b| *b == 0)
}

/// The bytes of linear memory an image holds (its memories' sizes), read from
/// the section headers alone.
pub fn memory_bytes(image: &[u8]) -> u64 {
    let mut at = MAGIC.len() + 4 + 32;
    let mut total = 0u64;
    while let Some(&kind) = image.get(at) {
        let Some(len) = image
            .get(at + 1..at + 9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
        else {
            break;
        };
        if kind == 0 {
            break;
        }
        if kind == Section::Memory.kind()
            && let Some(size) = image
                .get(at + 9 + 4..at + 9 + 12)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
        {
            total += u64::from_le_bytes(size);
        }
        at = match usize::try_from(len)
            .ok()
            .and_then(|l| (at + 9).checked_add(l))
        {
            Some(next) => next,
            None => break,
        };
    }
    total
}

/// One table: function indices, `None` for null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableImage {
    pub index: u32,
    pub elements: Vec<Option<u32>>,
}

/// A frozen body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ghost {
    pub module: Option<ModuleHash>,
    pub memories: Vec<MemoryImage>,
    pub globals: Vec<GlobalValue>,
    pub tables: Vec<TableImage>,
    pub stack: Vec<u8>,
    pub clock_offset_ns: u64,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub deputy: Option<Vec<u8>>,
    /// The module itself (checkpoints carry it).
    pub module_bytes: Option<Vec<u8>>,
    /// The version of the instrumentation that unwound the stack.
    pub instrumentation: Option<u32>,
}

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// The end marker and the checksum of everything before.
    fn end(mut self) -> Vec<u8> {
        self.u8(0);
        self.u64(0);
        let sum = xxhash_rust::xxh3::xxh3_64(&self.0);
        self.u64(sum);
        self.0
    }

    /// Writes a section: kind, length, then what `body` writes.
    fn section(&mut self, s: Section, body: impl FnOnce(&mut Out)) {
        self.u8(s.kind());
        let at = self.0.len();
        self.u64(0);
        body(self);
        let len = (self.0.len() - at - 8) as u64;
        self.0[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }
}

impl Ghost {
    /// Encodes the image.
    pub fn encode(&self, module: &ModuleHash) -> Vec<u8> {
        // Room for every page as it is (incompressible data), so that the
        // image is written without growing it.
        let mut o = Out(Vec::with_capacity(
            4096 + self.stack.len()
                + self
                    .memories
                    .iter()
                    .map(|m| m.stored_bytes() as usize + m.runs.len() * 16)
                    .sum::<usize>(),
        ));
        o.bytes(MAGIC);
        o.u16(MAJOR);
        o.u16(MINOR);
        o.bytes(&module.0);
        for (i, m) in self.memories.iter().enumerate() {
            o.section(Section::Memory, |o| {
                o.u32(i as u32);
                o.u64(m.size);
                o.u32(m.runs.len() as u32);
                for (first, data) in &m.runs {
                    // A sample that LZ4 cannot shrink says the run is not worth
                    // compressing (random or already compressed data).
                    let sample = &data[..data.len().min(SAMPLE)];
                    let worth = lz4_flex::block::compress(sample).len() * 10 < sample.len() * 9;
                    let packed = if worth {
                        lz4_flex::block::compress(data)
                    } else {
                        Vec::new()
                    };
                    let stored: &[u8] = if worth && packed.len() < data.len() {
                        &packed
                    } else {
                        data
                    };
                    o.u64(*first);
                    o.u32((data.len() / PAGE) as u32);
                    o.u32(stored.len() as u32);
                    o.bytes(stored);
                }
            });
        }
        o.section(Section::Globals, |o| {
            o.u32(self.globals.len() as u32);
            for g in &self.globals {
                let (tag, v): (u8, u128) = match *g {
                    GlobalValue::I32(v) => (0, v as u32 as u128),
                    GlobalValue::I64(v) => (1, v as u64 as u128),
                    GlobalValue::F32(v) => (2, v as u128),
                    GlobalValue::F64(v) => (3, v as u128),
                    GlobalValue::V128(v) => (4, v),
                };
                o.u8(tag);
                o.bytes(&v.to_le_bytes());
            }
        });
        o.section(Section::Tables, |o| {
            o.u32(self.tables.len() as u32);
            for t in &self.tables {
                o.u32(t.index);
                o.u32(t.elements.len() as u32);
                for e in &t.elements {
                    o.u32(e.unwrap_or(u32::MAX));
                }
            }
        });
        o.section(Section::Stack, |o| o.bytes(&self.stack));
        o.section(Section::Clocks, |o| o.u64(self.clock_offset_ns));
        o.section(Section::Command, |o| {
            for list in [&self.args, &self.env] {
                o.u32(list.len() as u32);
                for s in list.iter() {
                    o.u32(s.len() as u32);
                    o.bytes(s);
                }
            }
        });
        if let Some(d) = &self.deputy {
            o.section(Section::Deputy, |o| o.bytes(d));
        }
        if let Some(m) = &self.module_bytes {
            o.section(Section::Module, |o| o.bytes(m));
        }
        if let Some(v) = self.instrumentation {
            o.section(Section::Instrumentation, |o| o.u32(v));
        }
        o.end()
    }

    /// Decodes an image; `expected` is the module it must belong to, if known.
    pub fn decode(image: &[u8], expected: Option<&ModuleHash>) -> Result<Ghost, GhostError> {
        if image.is_empty() {
            return Err(GhostError::Empty);
        }
        let mut r = In {
            data: image,
            section: Section::Header,
        };
        if image.len() < MAGIC.len() || r.take(MAGIC.len())? != MAGIC {
            return Err(GhostError::BadMagic);
        }
        let (major, minor) = (r.u16()?, r.u16()?);
        if major != MAJOR || minor > MINOR {
            return Err(GhostError::Version { major, minor });
        }
        // The checksum covers everything, so a flipped bit anywhere is caught
        // before any section is believed.
        if image.len() < 8 + 4 + 32 + 9 + 8 {
            return Err(GhostError::Truncated(Section::Header));
        }
        let (body, sum) = image.split_at(image.len() - 8);
        let mut sum_bytes = [0u8; 8];
        sum_bytes.copy_from_slice(sum);
        if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum_bytes) {
            return Err(GhostError::Checksum);
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(r.take(32)?);
        let found = ModuleHash(hash);
        if let Some(expected) = expected
            && *expected != found
        {
            return Err(GhostError::WrongModule {
                expected: *expected,
                found,
            });
        }
        let mut g = Ghost {
            module: Some(found),
            ..Ghost::default()
        };
        r.data = &r.data[..r.data.len() - 8];
        loop {
            r.section = Section::Header;
            let kind = r.u8()?;
            let len = r.u64()?;
            if kind == 0 {
                if !r.data.is_empty() {
                    return Err(corrupt(Section::Checksum, "bytes after the end"));
                }
                return Ok(g);
            }
            let section = Section::of_kind(kind).ok_or(GhostError::UnknownSection(kind))?;
            r.section = section;
            let len = usize::try_from(len).map_err(|_| GhostError::Truncated(section))?;
            let payload = r.take(len)?;
            let mut s = In {
                data: payload,
                section,
            };
            match section {
                Section::Memory => {
                    if g.memories.len() >= MAX_MEMORIES {
                        return Err(corrupt(section, "too many memories"));
                    }
                    g.memories.push(s.memory(g.memories.len() as u32)?);
                }
                Section::Globals => g.globals = s.globals()?,
                Section::Tables => g.tables = s.tables()?,
                Section::Stack => g.stack = payload.to_vec(),
                Section::Clocks => g.clock_offset_ns = s.u64()?,
                Section::Command => {
                    g.args = s.strings()?;
                    g.env = s.strings()?;
                }
                Section::Deputy => g.deputy = Some(payload.to_vec()),
                Section::Module => g.module_bytes = Some(payload.to_vec()),
                Section::Instrumentation => g.instrumentation = Some(s.u32()?),
                Section::Header | Section::Checksum => {}
            }
            if !matches!(section, Section::Stack | Section::Deputy | Section::Module)
                && !s.data.is_empty()
            {
                return Err(corrupt(section, "bytes left over"));
            }
        }
    }
}

/// Turns a body's image into a checkpoint: adds the deputy's state and the
/// module, and seals it again. The image is checked first (its checksum), so
/// a damaged image is never sealed as if it were sound.
pub fn seal_checkpoint(
    image: Vec<u8>,
    deputy: &[u8],
    module: &[u8],
) -> Result<Vec<u8>, GhostError> {
    const TAIL: usize = 1 + 8 + 8;
    if image.len() < MAGIC.len() + 4 + 32 + TAIL {
        return Err(GhostError::Truncated(Section::Header));
    }
    let (body, sum) = image.split_at(image.len() - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum_bytes) {
        return Err(GhostError::Checksum);
    }
    let mut o = Out(image);
    o.0.truncate(o.0.len() - TAIL);
    o.0.reserve(deputy.len() + module.len() + 2 * 9 + TAIL);
    o.section(Section::Deputy, |o| o.bytes(deputy));
    o.section(Section::Module, |o| o.bytes(module));
    Ok(o.end())
}

struct In<'a> {
    data: &'a [u8],
    section: Section,
}

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GhostError> {
        if n > self.data.len() {
            return Err(GhostError::Truncated(self.section));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], GhostError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, GhostError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, GhostError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, GhostError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, GhostError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A count, refused above `max` or above what the remaining bytes can hold
    /// at `min_size` bytes each.
    fn count(&mut self, max: u32, min_size: usize) -> Result<usize, GhostError> {
        let n = self.u32()?;
        if n > max {
            return Err(corrupt(
                self.section,
                format!("count {n} is over the limit {max}"),
            ));
        }
        if (n as usize).saturating_mul(min_size) > self.data.len() {
            return Err(GhostError::Truncated(self.section));
        }
        Ok(n as usize)
    }

    fn memory(&mut self, expected_index: u32) -> Result<MemoryImage, GhostError> {
        let s = self.section;
        if self.u32()? != expected_index {
            return Err(corrupt(s, "memories out of order"));
        }
        let size = self.u64()?;
        if size > MAX_MEMORY || size % PAGE as u64 != 0 {
            return Err(corrupt(
                s,
                format!("memory size {size} is not a whole number of pages up to 4 GiB"),
            ));
        }
        let pages = size / PAGE as u64;
        let runs = self.count(u32::MAX, 16)?;
        let mut out = Vec::with_capacity(runs);
        let mut next_free = 0u64;
        for _ in 0..runs {
            let first = self.u64()?;
            let count = self.u32()? as u64;
            let packed_len = self.u32()? as usize;
            if count == 0
                || count as usize > RUN_PAGES
                || first < next_free
                || first + count > pages
            {
                return Err(corrupt(s, "a run of pages is out of place"));
            }
            next_free = first + count;
            let packed = self.take(packed_len)?;
            let data = if packed_len == count as usize * PAGE {
                packed.to_vec()
            } else {
                lz4_flex::block::decompress(packed, count as usize * PAGE)
                    .map_err(|e| corrupt(s, format!("cannot decompress pages: {e}")))?
            };
            if data.len() != count as usize * PAGE {
                return Err(corrupt(s, "a run decompresses to the wrong size"));
            }
            out.push((first, data));
        }
        Ok(MemoryImage { size, runs: out })
    }

    fn globals(&mut self) -> Result<Vec<GlobalValue>, GhostError> {
        let n = self.count(MAX_GLOBALS, 17)?;
        (0..n)
            .map(|_| {
                let tag = self.u8()?;
                let v = u128::from_le_bytes(self.array()?);
                Ok(match tag {
                    0 => GlobalValue::I32(v as u32 as i32),
                    1 => GlobalValue::I64(v as u64 as i64),
                    2 => GlobalValue::F32(v as u32),
                    3 => GlobalValue::F64(v as u64),
                    4 => GlobalValue::V128(v),
                    t => return Err(corrupt(self.section, format!("unknown global type {t}"))),
                })
            })
            .collect()
    }

    fn tables(&mut self) -> Result<Vec<TableImage>, GhostError> {
        let n = self.count(MAX_MEMORIES as u32 * 64, 8)?;
        (0..n)
            .map(|_| {
                let index = self.u32()?;
                let len = self.count(MAX_TABLE, 4)?;
                let elements = (0..len)
                    .map(|_| self.u32().map(|e| (e != u32::MAX).then_some(e)))
                    .collect::<Result<_, _>>()?;
                Ok(TableImage { index, elements })
            })
            .collect()
    }

    fn strings(&mut self) -> Result<Vec<Vec<u8>>, GhostError> {
        let n = self.count(MAX_STRINGS, 4)?;
        (0..n)
            .map(|_| {
                let len = self.u32()? as usize;
                Ok(self.take(len)?.to_vec())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> ModuleHash {
        ModuleHash::of(b"some module")
    }

    fn sample() -> Ghost {
        let mut memory = vec![0u8; 10 * PAGE];
        memory[3] = 7;
        memory[5 * PAGE + 100] = 9;
        memory[6 * PAGE..7 * PAGE].fill(0xAB);
        Ghost {
            module: Some(module()),
            memories: vec![MemoryImage::capture(&memory)],
            globals: vec![
                GlobalValue::I32(-5),
                GlobalValue::I64(1 << 40),
                GlobalValue::F32(1.5f32.to_bits()),
                GlobalValue::F64(2.25f64.to_bits()),
                GlobalValue::V128(u128::MAX - 3),
            ],
            tables: vec![TableImage {
                index: 0,
                elements: vec![None, Some(3), Some(9)],
            }],
            stack: b"unwound frames".to_vec(),
            clock_offset_ns: 123_456_789,
            args: vec![b"prog.wasm".to_vec(), b"x".to_vec()],
            env: vec![b"A=1".to_vec()],
            deputy: Some(b"deputy state".to_vec()),
            module_bytes: None,
            instrumentation: Some(3),
        }
    }

    #[test]
    fn a_sealed_checkpoint_carries_deputy_and_module() {
        let g = Ghost {
            deputy: None,
            ..sample()
        };
        let sealed = seal_checkpoint(g.encode(&module()), b"{}", b"\0asm").expect("seals");
        let back = Ghost::decode(&sealed, Some(&module())).expect("decodes");
        assert_eq!(back.deputy.as_deref(), Some(&b"{}"[..]));
        assert_eq!(back.module_bytes.as_deref(), Some(&b"\0asm"[..]));
        assert_eq!(back.memories, g.memories);
        let mut damaged = g.encode(&module());
        damaged[60] ^= 1;
        assert_eq!(
            seal_checkpoint(damaged, b"{}", b""),
            Err(GhostError::Checksum)
        );
    }

    #[test]
    fn round_trip() {
        let g = sample();
        let image = g.encode(&module());
        assert_eq!(memory_bytes(&image), 10 * PAGE as u64);
        assert_eq!(Ghost::decode(&image, Some(&module())), Ok(g.clone()));
        let mut memory = vec![0u8; 10 * PAGE];
        g.memories[0].restore(&mut memory).expect("restore");
        assert_eq!(memory[3], 7);
        assert_eq!(memory[5 * PAGE + 100], 9);
        assert_eq!(memory[6 * PAGE + 1], 0xAB);
    }

    #[test]
    fn incompressible_pages_are_stored_as_they_are() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..3 * PAGE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let g = Ghost {
            memories: vec![MemoryImage::capture(&noise)],
            ..Ghost::default()
        };
        let image = g.encode(&module());
        assert!(image.len() < noise.len() + 200, "{}", image.len());
        let back = Ghost::decode(&image, None).expect("decodes");
        let mut memory = vec![0u8; noise.len()];
        back.memories[0].restore(&mut memory).expect("restore");
        assert_eq!(memory, noise);
    }

    #[test]
    fn restoring_over_a_used_memory_clears_what_no_run_covers() {
        let g = sample();
        let mut memory = vec![0x55u8; 10 * PAGE];
        g.memories[0]
            .restore_over(&mut memory, 8 * PAGE)
            .expect("restore");
        let mut fresh = vec![0u8; 10 * PAGE];
        g.memories[0].restore(&mut fresh).expect("restore");
        // Pages 8 and 9 were said to be zero already: left as they were.
        assert_eq!(memory[..8 * PAGE], fresh[..8 * PAGE]);
        assert!(memory[8 * PAGE..].iter().all(|b| *b == 0x55));
    }

    #[test]
    fn zero_pages_are_not_stored() {
        let memory = vec![0u8; 1024 * PAGE];
        let sparse = MemoryImage::capture(&memory);
        assert!(sparse.runs.is_empty());
        let small = Ghost {
            memories: vec![sparse],
            ..Ghost::default()
        }
        .encode(&module());
        // 64 MiB of zeros is a few dozen bytes.
        assert!(small.len() < 200, "{}", small.len());
        let mut touched = memory.clone();
        touched[500 * PAGE] = 1;
        let img = MemoryImage::capture(&touched);
        assert_eq!(img.stored_bytes(), PAGE as u64);
    }

    #[test]
    fn bad_images_get_named_errors() {
        let image = sample().encode(&module());
        assert_eq!(Ghost::decode(&[], None), Err(GhostError::Empty));
        assert_eq!(
            Ghost::decode(b"not an image at all", None),
            Err(GhostError::BadMagic)
        );
        // Truncated anywhere: the checksum no longer matches, or the header is short.
        for cut in [10, 60, image.len() / 2, image.len() - 1] {
            let e = Ghost::decode(&image[..cut], None).expect_err("truncated");
            assert!(
                matches!(e, GhostError::Checksum | GhostError::Truncated(_)),
                "cut at {cut}: {e}"
            );
        }
        // A flipped bit anywhere after the version.
        for at in [13, 50, image.len() / 2, image.len() - 9] {
            let mut flipped = image.clone();
            flipped[at] ^= 0x10;
            assert_eq!(
                Ghost::decode(&flipped, None),
                Err(GhostError::Checksum),
                "bit at {at}"
            );
        }
        let mut newer = image.clone();
        newer[8] = 2;
        assert_eq!(
            Ghost::decode(&newer, None),
            Err(GhostError::Version {
                major: 2,
                minor: MINOR
            })
        );
        let other = ModuleHash::of(b"another module");
        assert!(matches!(
            Ghost::decode(&image, Some(&other)),
            Err(GhostError::WrongModule { .. })
        ));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // A well-formed image whose globals section claims a billion entries.
        let mut o = Out(Vec::new());
        o.bytes(MAGIC);
        o.u16(MAJOR);
        o.u16(MINOR);
        o.bytes(&module().0);
        o.section(Section::Globals, |o| o.u32(1_000_000_000));
        o.u8(0);
        o.u64(0);
        let sum = xxhash_rust::xxh3::xxh3_64(&o.0);
        o.u64(sum);
        let e = Ghost::decode(&o.0, None).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the image's globals section is corrupt: count 1000000000 is over the limit 1048576"
        );
    }
}
