//! Memories as pages: which pages of a memory are worth storing (the kernel's
//! unmapped pages skipped without being read, all-zero pages left out), grouped
//! into runs (`page_runs`), and `MemoryImage`, a memory captured whole for
//! images held in memory.
//!
//! Must not know: sections, streams.

use super::format::{GhostError, MAGIC, PAGE, RUN_PAGES, Section, corrupt};

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
    page_runs_past(memory, 0)
}

/// As [`page_runs`], reading every page of the first `read_below` bytes
/// whether the kernel mapped it or not: a memory's first extent may be
/// mapped from its module's data, copied on write, whose pages hold data
/// before they are mapped.
pub fn page_runs_past(memory: &[u8], read_below: usize) -> PageRuns<'_> {
    let pages = memory.len().div_ceil(PAGE);
    let page = |i: usize| &memory[i * PAGE..((i + 1) * PAGE).min(memory.len())];
    let mapped = mapped_pages(memory);
    let below = read_below.div_ceil(PAGE);
    let maybe_data =
        |i: usize| (i < below || mapped.as_ref().is_none_or(|m| m[i])) && !is_zero(page(i));
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

    pub(crate) fn borrowed(&self) -> PageRuns<'_> {
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
pub(crate) fn is_zero(page: &[u8]) -> bool {
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
