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
//! memory   (1): index u32 │ size in bytes u64 │ run count u32 │
//!               (first page u64 │ pages u32 │ stored length u32) × count │
//!               the stored bytes of each run, in the same order
//!               (pages are 64 KiB; all-zero pages are not stored; a run is
//!               an LZ4 block, or the pages as they are when its stored
//!               length is exactly pages × 64 KiB: data LZ4 cannot shrink;
//!               the table comes first so that a reader knows where every
//!               page goes before the first one arrives)
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
//! times   (10): CPU time used so far u64 (ns) │ the deadline of the sleep
//!               the body was frozen in, on its monotonic clock u64 (ns;
//!               u64::MAX when it was not sleeping)   (since 2.2)
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
pub const MAJOR: u16 = 2;
pub const MINOR: u16 = 2;
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
    Times,
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
            Section::Times => 10,
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
            10 => Section::Times,
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
            Section::Times => "times",
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
    #[error("the image could not be read in its {section} section: {what}")]
    Io { section: Section, what: String },
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

impl GlobalValue {
    fn tagged(&self) -> (u8, u128) {
        match *self {
            GlobalValue::I32(v) => (0, v as u32 as u128),
            GlobalValue::I64(v) => (1, v as u64 as u128),
            GlobalValue::F32(v) => (2, v as u128),
            GlobalValue::F64(v) => (3, v as u128),
            GlobalValue::V128(v) => (4, v),
        }
    }
}

/// The runs of a memory that are not all zero, borrowed from it: what its
/// memory section stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRuns<'a> {
    pub size: u64,
    /// (first page, bytes of whole pages)
    pub runs: Vec<(u64, &'a [u8])>,
}

impl PageRuns<'_> {
    /// Bytes stored (before compression).
    pub fn stored_bytes(&self) -> u64 {
        self.runs.iter().map(|(_, d)| d.len() as u64).sum()
    }
}

/// Finds the runs of pages of `memory` that are not all zero. Pages the
/// kernel never mapped (nor swapped out) are zero without being read, which
/// would map them: the kernel says which through `/proc/self/pagemap`.
pub fn page_runs(memory: &[u8]) -> PageRuns<'_> {
    let pages = memory.len().div_ceil(PAGE);
    let page = |i: usize| &memory[i * PAGE..((i + 1) * PAGE).min(memory.len())];
    let mapped = mapped_pages(memory);
    let maybe_data = |i: usize| mapped.as_ref().is_none_or(|m| m[i]) && !is_zero(page(i));
    let mut runs = Vec::new();
    let mut i = 0;
    while i < pages {
        if !maybe_data(i) {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < pages && end - i < RUN_PAGES && maybe_data(end) {
            end += 1;
        }
        runs.push((i as u64, &memory[i * PAGE..(end * PAGE).min(memory.len())]));
        i = end;
    }
    PageRuns {
        size: memory.len() as u64,
        runs,
    }
}

/// For each Wasm page of `memory`: whether any of its host pages is mapped
/// or swapped out (`None` when the kernel does not say). Of anonymous
/// memory, a page neither mapped nor swapped out is all zeros.
pub fn mapped_pages(memory: &[u8]) -> Option<Vec<bool>> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::FileExt;
        const HOST_PAGE: usize = 4096;
        const PRESENT_OR_SWAPPED: u64 = 3 << 62;
        let base = memory.as_ptr() as usize;
        if !base.is_multiple_of(HOST_PAGE) || !PAGE.is_multiple_of(HOST_PAGE) {
            return None;
        }
        let file = std::fs::File::open("/proc/self/pagemap").ok()?;
        let per_page = PAGE / HOST_PAGE;
        let pages = memory.len().div_ceil(PAGE);
        let mut out = Vec::with_capacity(pages);
        let mut entries = vec![0u8; RUN_PAGES * per_page * 8];
        let mut first = 0;
        while first < pages {
            let n = (pages - first).min(RUN_PAGES);
            let buf = &mut entries[..n * per_page * 8];
            let at = ((base / HOST_PAGE + first * per_page) * 8) as u64;
            file.read_exact_at(buf, at).ok()?;
            for p in buf.chunks_exact(per_page * 8) {
                out.push(p.chunks_exact(8).any(|e| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(e);
                    u64::from_le_bytes(b) & PRESENT_OR_SWAPPED != 0
                }));
            }
            first += n;
        }
        Some(out)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = memory;
        None
    }
}

/// One linear memory, sparse and owned: only runs of pages that are not all
/// zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryImage {
    pub size: u64,
    /// (first page, bytes of whole pages)
    pub runs: Vec<(u64, Vec<u8>)>,
}

impl MemoryImage {
    /// Takes a memory's contents, leaving out all-zero pages.
    pub fn capture(bytes: &[u8]) -> MemoryImage {
        let runs = page_runs(bytes);
        MemoryImage {
            size: runs.size,
            runs: runs.runs.iter().map(|(f, d)| (*f, d.to_vec())).collect(),
        }
    }

    fn borrowed(&self) -> PageRuns<'_> {
        PageRuns {
            size: self.size,
            runs: self.runs.iter().map(|(f, d)| (*f, &d[..])).collect(),
        }
    }

    /// Writes the stored pages into `memory`, which must be `size` bytes of zeros.
    pub fn restore(&self, memory: &mut [u8]) -> Result<(), GhostError> {
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
        for (first, data) in &self.runs {
            let start = *first as usize * PAGE;
            memory
                .get_mut(start..start + data.len())
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

/// A frozen body, owned.
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
    pub times: Times,
}

/// The body's times that go with it: CPU time used, and a sleep it was
/// frozen in (to end at the same moment of its monotonic clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub cpu_ns: u64,
    pub sleep_until_ns: Option<u64>,
}

/// Writes an image as it goes, to any byte sink (a buffer, a file, a
/// connection), checksumming every byte: memory is written straight from
/// where it lies. Memory sections come first, so that a reader can put
/// pages in place as they arrive.
pub struct ImageWriter<W: std::io::Write> {
    w: W,
    hash: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl<W: std::io::Write> ImageWriter<W> {
    /// Starts an image of a body of `module`.
    pub fn new(w: W, module: &ModuleHash) -> std::io::Result<Self> {
        let mut me = ImageWriter {
            w,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            bytes: 0,
        };
        me.put(MAGIC)?;
        me.put(&MAJOR.to_le_bytes())?;
        me.put(&MINOR.to_le_bytes())?;
        me.put(&module.0)?;
        Ok(me)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.w.write_all(b)
    }

    fn head(&mut self, s: Section, len: u64) -> std::io::Result<()> {
        self.put(&[s.kind()])?;
        self.put(&len.to_le_bytes())
    }

    /// A section whose payload is `payload`.
    fn small(&mut self, s: Section, payload: &[u8]) -> std::io::Result<()> {
        self.head(s, payload.len() as u64)?;
        self.put(payload)
    }

    /// Memory `index`: its runs of pages that are not all zero. With
    /// `compress`, runs that LZ4 shrinks (a sample tells) are compressed;
    /// without, every byte goes as it is, which is faster on a fast network.
    pub fn memory(
        &mut self,
        index: u32,
        runs: &PageRuns<'_>,
        compress: bool,
    ) -> std::io::Result<()> {
        let packed: Vec<Option<Vec<u8>>> = runs
            .runs
            .iter()
            .map(|(_, data)| {
                if !compress {
                    return None;
                }
                // A sample that LZ4 cannot shrink says the run is not worth
                // compressing (random or already compressed data).
                let sample = &data[..data.len().min(SAMPLE)];
                if lz4_flex::block::compress(sample).len() * 10 >= sample.len() * 9 {
                    return None;
                }
                let p = lz4_flex::block::compress(data);
                (p.len() < data.len()).then_some(p)
            })
            .collect();
        let stored = |i: usize| packed[i].as_ref().map_or(runs.runs[i].1.len(), Vec::len) as u64;
        let len = 4 + 8 + 4 + (0..runs.runs.len()).map(|i| 16 + stored(i)).sum::<u64>();
        self.head(Section::Memory, len)?;
        self.put(&index.to_le_bytes())?;
        self.put(&runs.size.to_le_bytes())?;
        self.put(&(runs.runs.len() as u32).to_le_bytes())?;
        // The table of runs first, so that a reader knows where every page
        // will go before the first arrives; then the pages.
        let mut table = Vec::with_capacity(runs.runs.len() * 16);
        for (i, (first, data)) in runs.runs.iter().enumerate() {
            table.extend_from_slice(&first.to_le_bytes());
            table.extend_from_slice(&((data.len() / PAGE) as u32).to_le_bytes());
            table.extend_from_slice(&(stored(i) as u32).to_le_bytes());
        }
        self.put(&table)?;
        for (i, (_, data)) in runs.runs.iter().enumerate() {
            match &packed[i] {
                Some(p) => self.put(p)?,
                None => self.put(data)?,
            }
        }
        Ok(())
    }

    pub fn globals(&mut self, globals: &[GlobalValue]) -> std::io::Result<()> {
        let mut p = Vec::with_capacity(4 + globals.len() * 17);
        p.extend_from_slice(&(globals.len() as u32).to_le_bytes());
        for g in globals {
            let (tag, v) = g.tagged();
            p.push(tag);
            p.extend_from_slice(&v.to_le_bytes());
        }
        self.small(Section::Globals, &p)
    }

    pub fn tables(&mut self, tables: &[TableImage]) -> std::io::Result<()> {
        let mut p = Vec::new();
        p.extend_from_slice(&(tables.len() as u32).to_le_bytes());
        for t in tables {
            p.extend_from_slice(&t.index.to_le_bytes());
            p.extend_from_slice(&(t.elements.len() as u32).to_le_bytes());
            for e in &t.elements {
                p.extend_from_slice(&e.unwrap_or(u32::MAX).to_le_bytes());
            }
        }
        self.small(Section::Tables, &p)
    }

    pub fn stack(&mut self, stack: &[u8]) -> std::io::Result<()> {
        self.small(Section::Stack, stack)
    }

    pub fn clocks(&mut self, monotonic_offset_ns: u64) -> std::io::Result<()> {
        self.small(Section::Clocks, &monotonic_offset_ns.to_le_bytes())
    }

    pub fn command(&mut self, args: &[Vec<u8>], env: &[Vec<u8>]) -> std::io::Result<()> {
        let mut p = Vec::new();
        for list in [args, env] {
            p.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for s in list {
                p.extend_from_slice(&(s.len() as u32).to_le_bytes());
                p.extend_from_slice(s);
            }
        }
        self.small(Section::Command, &p)
    }

    pub fn deputy(&mut self, state: &[u8]) -> std::io::Result<()> {
        self.small(Section::Deputy, state)
    }

    pub fn module(&mut self, wasm: &[u8]) -> std::io::Result<()> {
        self.small(Section::Module, wasm)
    }

    pub fn instrumentation(&mut self, version: u32) -> std::io::Result<()> {
        self.small(Section::Instrumentation, &version.to_le_bytes())
    }

    pub fn times(&mut self, times: &Times) -> std::io::Result<()> {
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&times.cpu_ns.to_le_bytes());
        p[8..].copy_from_slice(&times.sleep_until_ns.unwrap_or(u64::MAX).to_le_bytes());
        self.small(Section::Times, &p)
    }

    /// The end marker and the checksum; the sink, and the image's length.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.put(&[0])?;
        self.put(&0u64.to_le_bytes())?;
        let sum = self.hash.digest();
        self.w.write_all(&sum.to_le_bytes())?;
        self.w.flush()?;
        Ok((self.w, self.bytes + 8))
    }
}

/// The most bytes of a section other than memory: more is not an image.
const MAX_STACK: u64 = 1 << 30;
const MAX_BLOB: u64 = 1 << 30;

/// A section as an [`ImageReader`] meets it. Memory sections hand their
/// pages on as they are read ([`ImageReader::pages`]).
#[derive(Debug)]
pub enum Part {
    Memory {
        index: u32,
        size: u64,
    },
    Globals(Vec<GlobalValue>),
    Tables(Vec<TableImage>),
    Stack(Vec<u8>),
    Clocks(u64),
    Command {
        args: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
    },
    Deputy(Vec<u8>),
    Module(Vec<u8>),
    Instrumentation(u32),
    Times(Times),
}

/// Reads an image as it comes, checking every length before it allocates
/// and the checksum at the end; every failure names its section.
pub struct ImageReader<R: std::io::Read> {
    r: R,
    hash: xxhash_rust::xxh3::Xxh3,
    section: Section,
    /// The module the image is of.
    pub module: ModuleHash,
    /// The runs of the memory section just announced, not yet read: (first
    /// page, pages, stored length).
    table: Vec<(u64, u32, u32)>,
    memories: u32,
}

impl<R: std::io::Read> ImageReader<R> {
    /// Reads the header; `expected` is the module it must belong to, if known.
    pub fn new(r: R, expected: Option<&ModuleHash>) -> Result<Self, GhostError> {
        let mut me = ImageReader {
            r,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            section: Section::Header,
            module: ModuleHash([0; 32]),
            table: Vec::new(),
            memories: 0,
        };
        let mut magic = [0u8; 8];
        me.fill(&mut magic).map_err(|e| match e {
            GhostError::Truncated(_) => GhostError::BadMagic,
            e => e,
        })?;
        if &magic != MAGIC {
            return Err(GhostError::BadMagic);
        }
        let (major, minor) = (me.u16()?, me.u16()?);
        if major != MAJOR || minor > MINOR {
            return Err(GhostError::Version { major, minor });
        }
        let mut hash = [0u8; 32];
        me.fill(&mut hash)?;
        me.module = ModuleHash(hash);
        if let Some(expected) = expected
            && *expected != me.module
        {
            return Err(GhostError::WrongModule {
                expected: *expected,
                found: me.module,
            });
        }
        Ok(me)
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GhostError> {
        self.r.read_exact(buf).map_err(|e| self.io(e))?;
        self.hash.update(buf);
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> GhostError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            GhostError::Truncated(self.section)
        } else {
            GhostError::Io {
                section: self.section,
                what: e.to_string(),
            }
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GhostError> {
        let mut a = [0u8; N];
        self.fill(&mut a)?;
        Ok(a)
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

    /// `len` bytes into a buffer that grows as they come (a length that lies
    /// costs no more than the bytes that are there).
    fn blob(&mut self, len: u64, max: u64) -> Result<Vec<u8>, GhostError> {
        if len > max {
            return Err(corrupt(
                self.section,
                format!("{len} bytes is over the limit {max}"),
            ));
        }
        let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
        let got = std::io::Read::read_to_end(&mut std::io::Read::take(&mut self.r, len), &mut out)
            .map_err(|e| self.io(e))?;
        if (got as u64) < len {
            return Err(GhostError::Truncated(self.section));
        }
        self.hash.update(&out);
        Ok(out)
    }

    /// The next section, or `None` after the last one, once the checksum
    /// is found to match. A memory section's pages must be read with
    /// [`ImageReader::pages`] before the next section is asked for.
    pub fn section(&mut self) -> Result<Option<Part>, GhostError> {
        if !self.table.is_empty() {
            return Err(corrupt(Section::Memory, "its pages were not read"));
        }
        self.section = Section::Header;
        let kind = self.array::<1>()?[0];
        let len = self.u64()?;
        if kind == 0 {
            self.section = Section::Checksum;
            let sum = self.hash.digest();
            let mut found = [0u8; 8];
            self.r.read_exact(&mut found).map_err(|e| self.io(e))?;
            if u64::from_le_bytes(found) != sum {
                return Err(GhostError::Checksum);
            }
            if len != 0 {
                return Err(corrupt(Section::Checksum, "the end marker has a length"));
            }
            return Ok(None);
        }
        let section = Section::of_kind(kind).ok_or(GhostError::UnknownSection(kind))?;
        self.section = section;
        let payload = |me: &mut Self, max: u64| me.blob(len, max);
        Ok(Some(match section {
            Section::Memory => {
                if self.memories as usize >= MAX_MEMORIES {
                    return Err(corrupt(section, "too many memories"));
                }
                if len < 16 {
                    return Err(GhostError::Truncated(section));
                }
                let index = self.u32()?;
                if index != self.memories {
                    return Err(corrupt(section, "memories out of order"));
                }
                self.memories += 1;
                let size = self.u64()?;
                if size > MAX_MEMORY || size % PAGE as u64 != 0 {
                    return Err(corrupt(
                        section,
                        format!("memory size {size} is not a whole number of pages up to 4 GiB"),
                    ));
                }
                let runs = u64::from(self.u32()?);
                let pages = size / PAGE as u64;
                if runs * 16 > len - 16 || runs > pages {
                    return Err(corrupt(
                        section,
                        format!("{runs} runs of pages cannot be there"),
                    ));
                }
                let mut table = vec![0u8; runs as usize * 16];
                self.fill(&mut table)?;
                let (mut next_page, mut stored_total) = (0u64, 0u64);
                for entry in table.chunks_exact(16) {
                    let word = |a: usize, b: usize| -> u64 {
                        entry[a..b]
                            .iter()
                            .rev()
                            .fold(0, |v, x| (v << 8) | u64::from(*x))
                    };
                    let (first, count, stored) = (word(0, 8), word(8, 12), word(12, 16));
                    if count == 0
                        || count as usize > RUN_PAGES
                        || first < next_page
                        || first + count > pages
                        || stored > count * PAGE as u64
                    {
                        return Err(corrupt(section, "a run of pages is out of place"));
                    }
                    next_page = first + count;
                    stored_total += stored;
                    self.table.push((first, count as u32, stored as u32));
                }
                if 16 + runs * 16 + stored_total != len {
                    self.table.clear();
                    return Err(corrupt(section, "its runs do not add up to its length"));
                }
                self.table.reverse();
                Part::Memory { index, size }
            }
            Section::Globals => {
                let data = payload(self, MAX_GLOBALS as u64 * 17 + 4)?;
                Part::Globals(In::of(&data, section).globals()?)
            }
            Section::Tables => {
                let data = payload(self, MAX_BLOB)?;
                Part::Tables(In::of(&data, section).tables()?)
            }
            Section::Stack => Part::Stack(payload(self, MAX_STACK)?),
            Section::Clocks => {
                let data = payload(self, 8)?;
                let mut s = In::of(&data, section);
                let v = s.u64()?;
                s.done()?;
                Part::Clocks(v)
            }
            Section::Command => {
                let data = payload(self, MAX_BLOB)?;
                let mut s = In::of(&data, section);
                let args = s.strings()?;
                let env = s.strings()?;
                s.done()?;
                Part::Command { args, env }
            }
            Section::Deputy => Part::Deputy(payload(self, MAX_BLOB)?),
            Section::Module => Part::Module(payload(self, MAX_BLOB)?),
            Section::Instrumentation => {
                let data = payload(self, 4)?;
                let mut s = In::of(&data, section);
                let v = s.u32()?;
                s.done()?;
                Part::Instrumentation(v)
            }
            Section::Times => {
                let data = payload(self, 16)?;
                let mut s = In::of(&data, section);
                let cpu_ns = s.u64()?;
                let sleep = s.u64()?;
                s.done()?;
                Part::Times(Times {
                    cpu_ns,
                    sleep_until_ns: (sleep != u64::MAX).then_some(sleep),
                })
            }
            Section::Header | Section::Checksum => {
                return Err(GhostError::UnknownSection(kind));
            }
        }))
    }

    /// The runs of the memory section just announced, in order: (first
    /// page, pages).
    pub fn runs(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.table.iter().rev().map(|(f, c, _)| (*f, *c))
    }

    /// Reads the runs of the memory section just announced: each run's
    /// pages go where `sink` says, decompressed there if they were compressed.
    pub fn pages(&mut self, sink: &mut impl PageSink) -> Result<(), GhostError> {
        let s = Section::Memory;
        let mut packed = Vec::new();
        while let Some((first, count, stored)) = self.table.pop() {
            let bytes = count as usize * PAGE;
            let target = sink.run(first, count)?;
            if target.len() != bytes {
                return Err(corrupt(s, "a run has no room for its pages"));
            }
            if stored as usize == bytes {
                if let Err(e) = self.r.read_exact(target) {
                    return Err(self.io(e));
                }
                self.hash.update(target);
            } else {
                packed.resize(stored as usize, 0);
                self.r.read_exact(&mut packed).map_err(|e| self.io(e))?;
                self.hash.update(&packed);
                let n = lz4_flex::block::decompress_into(&packed, target)
                    .map_err(|e| corrupt(s, format!("cannot decompress pages: {e}")))?;
                if n != bytes {
                    return Err(corrupt(s, "a run decompresses to the wrong size"));
                }
            }
        }
        Ok(())
    }

    /// Reads the runs of the memory section just announced into owned pages.
    pub fn owned_pages(&mut self, size: u64) -> Result<MemoryImage, GhostError> {
        let mut image = MemoryImage {
            size,
            runs: Vec::new(),
        };
        self.pages(&mut image)?;
        Ok(image)
    }
}

/// Where [`ImageReader::pages`] puts each run of pages.
pub trait PageSink {
    /// Room for `count` pages from page `first`: exactly that many bytes.
    fn run(&mut self, first: u64, count: u32) -> Result<&mut [u8], GhostError>;
}

impl PageSink for MemoryImage {
    fn run(&mut self, first: u64, count: u32) -> Result<&mut [u8], GhostError> {
        self.runs.push((first, vec![0u8; count as usize * PAGE]));
        let last = self.runs.len() - 1;
        Ok(&mut self.runs[last].1[..])
    }
}

/// Reads pages and forgets them.
struct Discard(Vec<u8>);

impl PageSink for Discard {
    fn run(&mut self, _: u64, count: u32) -> Result<&mut [u8], GhostError> {
        self.0.resize(count as usize * PAGE, 0);
        Ok(&mut self.0[..])
    }
}

/// What an image says besides its pages: enough to restart a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub module: Option<ModuleHash>,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub deputy: Option<Vec<u8>>,
    pub module_bytes: Option<Vec<u8>>,
}

impl Ghost {
    /// Encodes the image.
    pub fn encode(&self, module: &ModuleHash) -> Vec<u8> {
        let size = 4096
            + self.stack.len()
            + self
                .memories
                .iter()
                .map(|m| m.stored_bytes() as usize + m.runs.len() * 16)
                .sum::<usize>();
        let write = || -> std::io::Result<Vec<u8>> {
            let mut w = ImageWriter::new(Vec::with_capacity(size), module)?;
            for (i, m) in self.memories.iter().enumerate() {
                w.memory(i as u32, &m.borrowed(), true)?;
            }
            w.globals(&self.globals)?;
            w.tables(&self.tables)?;
            w.stack(&self.stack)?;
            w.clocks(self.clock_offset_ns)?;
            w.command(&self.args, &self.env)?;
            if let Some(d) = &self.deputy {
                w.deputy(d)?;
            }
            if let Some(m) = &self.module_bytes {
                w.module(m)?;
            }
            if let Some(v) = self.instrumentation {
                w.instrumentation(v)?;
            }
            w.times(&self.times)?;
            Ok(w.finish()?.0)
        };
        // Writing to a vector does not fail.
        write().unwrap_or_default()
    }

    /// Decodes an image; `expected` is the module it must belong to, if known.
    /// The checksum is checked first, so that a flipped bit anywhere is
    /// caught before any section is believed.
    pub fn decode(image: &[u8], expected: Option<&ModuleHash>) -> Result<Ghost, GhostError> {
        let mut r = checked(image, expected)?;
        let mut g = Ghost {
            module: Some(r.module),
            ..Ghost::default()
        };
        while let Some(part) = r.section()? {
            match part {
                Part::Memory { size, .. } => g.memories.push(r.owned_pages(size)?),
                Part::Globals(v) => g.globals = v,
                Part::Tables(v) => g.tables = v,
                Part::Stack(v) => g.stack = v,
                Part::Clocks(v) => g.clock_offset_ns = v,
                Part::Command { args, env } => {
                    g.args = args;
                    g.env = env;
                }
                Part::Deputy(v) => g.deputy = Some(v),
                Part::Module(v) => g.module_bytes = Some(v),
                Part::Instrumentation(v) => g.instrumentation = Some(v),
                Part::Times(v) => g.times = v,
            }
        }
        Ok(g)
    }
}

/// A reader of an image held whole, its checksum checked first.
pub fn checked<'a>(
    image: &'a [u8],
    expected: Option<&ModuleHash>,
) -> Result<ImageReader<&'a [u8]>, GhostError> {
    if image.is_empty() {
        return Err(GhostError::Empty);
    }
    let r = ImageReader::new(image, expected)?;
    if image.len() < 8 + 4 + 32 + 9 + 8 {
        return Err(GhostError::Truncated(Section::Header));
    }
    let (body, sum) = image.split_at(image.len() - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum_bytes) {
        return Err(GhostError::Checksum);
    }
    Ok(r)
}

/// What an image held whole says besides its pages (which are skipped).
pub fn read_meta(image: &[u8]) -> Result<Meta, GhostError> {
    let mut r = checked(image, None)?;
    let mut m = Meta {
        module: Some(r.module),
        ..Meta::default()
    };
    let mut scratch = Discard(Vec::new());
    while let Some(part) = r.section()? {
        match part {
            Part::Memory { .. } => r.pages(&mut scratch)?,
            Part::Command { args, env } => {
                m.args = args;
                m.env = env;
            }
            Part::Deputy(v) => m.deputy = Some(v),
            Part::Module(v) => m.module_bytes = Some(v),
            _ => {}
        }
    }
    Ok(m)
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
    let mut out = image;
    out.truncate(out.len() - TAIL);
    out.reserve(deputy.len() + module.len() + 2 * 9 + TAIL);
    for (s, payload) in [(Section::Deputy, deputy), (Section::Module, module)] {
        out.push(s.kind());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out.push(0);
    out.extend_from_slice(&0u64.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// A section's payload, held whole.
struct In<'a> {
    data: &'a [u8],
    section: Section,
}

impl<'a> In<'a> {
    fn of(data: &'a [u8], section: Section) -> Self {
        In { data, section }
    }

    fn done(&self) -> Result<(), GhostError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.section, "bytes left over"))
        }
    }

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

    fn globals(&mut self) -> Result<Vec<GlobalValue>, GhostError> {
        let n = self.count(MAX_GLOBALS, 17)?;
        let out = (0..n)
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
            .collect::<Result<_, _>>()?;
        self.done()?;
        Ok(out)
    }

    fn tables(&mut self) -> Result<Vec<TableImage>, GhostError> {
        let n = self.count(MAX_MEMORIES as u32 * 64, 8)?;
        let out = (0..n)
            .map(|_| {
                let index = self.u32()?;
                let len = self.count(MAX_TABLE, 4)?;
                let elements = (0..len)
                    .map(|_| self.u32().map(|e| (e != u32::MAX).then_some(e)))
                    .collect::<Result<_, _>>()?;
                Ok(TableImage { index, elements })
            })
            .collect::<Result<_, _>>()?;
        self.done()?;
        Ok(out)
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
            times: Times {
                cpu_ns: 42_000_000,
                sleep_until_ns: Some(200_000_000),
            },
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
        newer[8] = MAJOR as u8 + 1;
        assert_eq!(
            Ghost::decode(&newer, None),
            Err(GhostError::Version {
                major: MAJOR + 1,
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
        let mut o = Vec::new();
        o.extend_from_slice(MAGIC);
        o.extend_from_slice(&MAJOR.to_le_bytes());
        o.extend_from_slice(&MINOR.to_le_bytes());
        o.extend_from_slice(&module().0);
        o.push(Section::Globals.kind());
        o.extend_from_slice(&4u64.to_le_bytes());
        o.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        o.push(0);
        o.extend_from_slice(&0u64.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&o);
        o.extend_from_slice(&sum.to_le_bytes());
        let e = Ghost::decode(&o, None).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the image's globals section is corrupt: count 1000000000 is over the limit 1048576"
        );
        // A stack section that claims more bytes than any stack: refused
        // before reading, from a stream.
        let mut o = Vec::new();
        o.extend_from_slice(MAGIC);
        o.extend_from_slice(&MAJOR.to_le_bytes());
        o.extend_from_slice(&MINOR.to_le_bytes());
        o.extend_from_slice(&module().0);
        o.push(Section::Stack.kind());
        o.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let mut r = ImageReader::new(&o[..], None).expect("header");
        assert!(matches!(
            r.section(),
            Err(GhostError::Corrupt {
                section: Section::Stack,
                ..
            })
        ));
    }

    #[test]
    fn a_stream_is_read_as_it_comes_and_checked_at_its_end() {
        let g = sample();
        let image = g.encode(&module());
        // Through a reader that hands out a few bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = ImageReader::new(Trickle(&image), Some(&module())).expect("header");
        let mut memories = Vec::new();
        while let Some(part) = r.section().expect("a section") {
            if let Part::Memory { size, .. } = part {
                memories.push(r.owned_pages(size).expect("pages"));
            }
        }
        assert_eq!(memories, g.memories);
        // A flipped bit is found at the end, whatever was read before.
        let mut flipped = image.clone();
        flipped[image.len() / 2] ^= 4;
        let mut r = ImageReader::new(Trickle(&flipped), None).expect("header");
        let end = loop {
            match r.section() {
                Ok(Some(Part::Memory { size, .. })) => {
                    if let Err(e) = r.owned_pages(size) {
                        break e;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("a damaged stream was taken"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(end, GhostError::Checksum | GhostError::Corrupt { .. }),
            "{end}"
        );
        // Cut short: truncated, naming where.
        let mut r = ImageReader::new(&image[..100], None).expect("header");
        let cut = loop {
            match r.section() {
                Ok(Some(Part::Memory { size, .. })) => {
                    if let Err(e) = r.owned_pages(size) {
                        break e;
                    }
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(cut, GhostError::Truncated(Section::Memory));
    }

    #[test]
    fn pages_the_kernel_never_mapped_are_zero_without_being_read() {
        // A large zeroed allocation is mapped lazily: touch two pages only.
        let mut memory = vec![0u8; 4096 * PAGE];
        memory[17 * PAGE + 5] = 1;
        memory[4000 * PAGE] = 2;
        let runs = page_runs(&memory);
        assert_eq!(runs.runs.len(), 2);
        assert_eq!(runs.runs[0].0, 17);
        assert_eq!(runs.runs[1].0, 4000);
        if let Some(mapped) = mapped_pages(&memory) {
            assert!(mapped[17] && mapped[4000]);
            assert!(
                mapped.iter().filter(|m| **m).count() < 64,
                "most pages unmapped"
            );
        }
    }

    #[test]
    fn meta_is_read_without_the_pages() {
        let g = sample();
        let m = read_meta(&g.encode(&module())).expect("meta");
        assert_eq!(m.args, g.args);
        assert_eq!(m.env, g.env);
        assert_eq!(m.deputy, g.deputy);
        assert_eq!(m.module, Some(module()));
    }
}
