//! `ImageReader`: reads an image section by section from any `Read`, a memory's
//! pages handed to a `PageSink` as they arrive (straight into a new instance's
//! memory), every length checked against what remains and the format's limits
//! before anything is allocated, and the checksum verified at the end.

use super::format::{
    GhostError, GlobalValue, MAGIC, MAJOR, MAX_GLOBALS, MAX_MEMORIES, MAX_MEMORY,
    MAX_REWIND_MODULES, MAX_STRINGS, MAX_TABLE, MINOR, PAGE, RUN_PAGES, RewindCode, Section,
    TableImage, Times, corrupt,
};
use super::pages::MemoryImage;
use crate::code::ModuleHash;

/// The most bytes of a section other than memory: more is not an image.
pub(crate) const MAX_STACK: u64 = 1 << 30;

pub(crate) const MAX_BLOB: u64 = 1 << 30;

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
    /// The most bytes a memory of the guest's may reach.
    Limits {
        max_memory: u64,
    },
    /// Compiled rewind copies (only from a reader told to accept them:
    /// [`ImageReader::accepting_code`]).
    RewindCode(Vec<RewindCode>),
}

/// Reads an image as it comes, checking every length before it allocates
/// and the checksum at the end; every failure names its section.
pub struct ImageReader<R: std::io::Read> {
    pub(crate) r: R,
    pub(crate) hash: xxhash_rust::xxh3::Xxh3,
    pub(crate) section: Section,
    /// The module the image is of.
    pub module: ModuleHash,
    /// The runs of the memory section just announced, not yet read: (first
    /// page, pages, stored length).
    pub(crate) table: Vec<(u64, u32, u32)>,
    pub(crate) memories: u32,
    /// Whether a rewind code section is accepted (see
    /// [`ImageReader::accepting_code`]).
    pub(crate) code: bool,
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
            code: false,
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

    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> Result<(), GhostError> {
        self.r.read_exact(buf).map_err(|e| self.io(e))?;
        self.hash.update(buf);
        Ok(())
    }

    pub(crate) fn io(&self, e: std::io::Error) -> GhostError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            GhostError::Truncated(self.section)
        } else {
            GhostError::Io {
                section: self.section,
                what: e.to_string(),
            }
        }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], GhostError> {
        let mut a = [0u8; N];
        self.fill(&mut a)?;
        Ok(a)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, GhostError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, GhostError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, GhostError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// `len` bytes into a buffer that grows as they come (a length that lies
    /// costs no more than the bytes that are there).
    pub(crate) fn blob(&mut self, len: u64, max: u64) -> Result<Vec<u8>, GhostError> {
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

    /// Accepts a rewind code section: compiled code, which the engine runs
    /// as it is, so accepted only on an image connection from another node
    /// of the cluster (a move), never from a file.
    pub fn accepting_code(mut self) -> Self {
        self.code = true;
        self
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
            Section::Limits => {
                let data = payload(self, 8)?;
                let mut s = In::of(&data, section);
                let max_memory = s.u64()?;
                s.done()?;
                Part::Limits { max_memory }
            }
            Section::RewindCode => {
                if !self.code {
                    return Err(corrupt(
                        section,
                        "compiled code comes only with a move between nodes, not in an image held whole",
                    ));
                }
                let data = payload(self, MAX_BLOB)?;
                Part::RewindCode(In::of(&data, section).rewind_code()?)
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
pub(crate) struct Discard(pub(crate) Vec<u8>);

impl PageSink for Discard {
    fn run(&mut self, _: u64, count: u32) -> Result<&mut [u8], GhostError> {
        self.0.resize(count as usize * PAGE, 0);
        Ok(&mut self.0[..])
    }
}

/// A section's payload, held whole.
pub(crate) struct In<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) section: Section,
}

impl<'a> In<'a> {
    pub(crate) fn of(data: &'a [u8], section: Section) -> Self {
        In { data, section }
    }

    pub(crate) fn done(&self) -> Result<(), GhostError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(corrupt(self.section, "bytes left over"))
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], GhostError> {
        if n > self.data.len() {
            return Err(GhostError::Truncated(self.section));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], GhostError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, GhostError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, GhostError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, GhostError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A count, refused above `max` or above what the remaining bytes can hold
    /// at `min_size` bytes each.
    pub(crate) fn count(&mut self, max: u32, min_size: usize) -> Result<usize, GhostError> {
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

    pub(crate) fn globals(&mut self) -> Result<Vec<GlobalValue>, GhostError> {
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

    pub(crate) fn tables(&mut self) -> Result<Vec<TableImage>, GhostError> {
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

    pub(crate) fn rewind_code(&mut self) -> Result<Vec<RewindCode>, GhostError> {
        let n = self.count(MAX_REWIND_MODULES, 20)?;
        let out = (0..n)
            .map(|_| {
                let functions = self.count(MAX_GLOBALS, 4)?;
                let functions = (0..functions)
                    .map(|_| self.u32())
                    .collect::<Result<_, _>>()?;
                let cost_ms = self.u64()?;
                let len = usize::try_from(self.u64()?)
                    .map_err(|_| GhostError::Truncated(self.section))?;
                let code = self.take(len)?.to_vec();
                Ok(RewindCode {
                    functions,
                    cost_ms,
                    code,
                })
            })
            .collect::<Result<_, _>>()?;
        self.done()?;
        Ok(out)
    }

    pub(crate) fn strings(&mut self) -> Result<Vec<Vec<u8>>, GhostError> {
        let n = self.count(MAX_STRINGS, 4)?;
        (0..n)
            .map(|_| {
                let len = self.u32()? as usize;
                Ok(self.take(len)?.to_vec())
            })
            .collect()
    }
}
