//! `ImageWriter`: writes an image section by section into any `Write` (a socket
//! for a migration, a buffer for a checkpoint), memories straight from the
//! instance's pages, and the checksum at the end.

use super::format::{
    GlobalValue, MAGIC, MAJOR, MINOR, PAGE, RewindCode, SAMPLE, Section, TableImage, Times,
};
use super::pages::PageRuns;
use crate::code::ModuleHash;

/// Writes an image as it goes, to any byte sink (a buffer, a file, a
/// connection), checksumming every byte: memory is written straight from
/// where it lies. Memory sections come first, so that a reader can put
/// pages in place as they arrive.
pub struct ImageWriter<W: std::io::Write> {
    pub(crate) w: W,
    pub(crate) hash: xxhash_rust::xxh3::Xxh3,
    pub(crate) bytes: u64,
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

    pub(crate) fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.w.write_all(b)
    }

    pub(crate) fn head(&mut self, s: Section, len: u64) -> std::io::Result<()> {
        self.put(&[s.kind()])?;
        self.put(&len.to_le_bytes())
    }

    /// A section whose payload is `payload`.
    pub(crate) fn small(&mut self, s: Section, payload: &[u8]) -> std::io::Result<()> {
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

    /// The limits the body runs under: the most bytes a memory of the
    /// guest's may reach (`wasmtime run -W max-memory-size`).
    pub fn limits(&mut self, max_memory: u64) -> std::io::Result<()> {
        self.small(Section::Limits, &max_memory.to_le_bytes())
    }

    /// Compiled rewind copies, for a move between nodes (see
    /// [`RewindCode`]); none: no section.
    pub fn rewind_code(&mut self, modules: &[RewindCode]) -> std::io::Result<()> {
        if modules.is_empty() {
            return Ok(());
        }
        let len: usize = modules
            .iter()
            .map(|m| 4 + 4 * m.functions.len() + 16 + m.code.len())
            .sum();
        self.head(Section::RewindCode, 4 + len as u64)?;
        self.put(&(modules.len() as u32).to_le_bytes())?;
        for m in modules {
            self.put(&(m.functions.len() as u32).to_le_bytes())?;
            for f in &m.functions {
                self.put(&f.to_le_bytes())?;
            }
            self.put(&m.cost_ms.to_le_bytes())?;
            self.put(&(m.code.len() as u64).to_le_bytes())?;
            self.put(&m.code)?;
        }
        Ok(())
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
