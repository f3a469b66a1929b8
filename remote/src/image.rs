//! A body and its ghost image: `Body::write_image` writes a frozen body's
//! memories (their pages straight from the instance, unmapped ones past
//! the first extent skipped), globals, unwound stack, clocks and times
//! (`ImageStats` says how much), and
//! `Body::restore`/`fill` read an image into a fresh instance of the same
//! module, mapping pages ahead of the reader so the kernel faults them in
//! once. The format itself is `ghost`'s.
//!
//! Must not know: where the image goes (a socket, a file: any `Read`/`Write`).

use crate::body::{Body, BodyError};
use crate::clock::BodyClock;
use crate::ctx::set_i32;
use crate::engine::Runtime;
use crate::ghost::{
    GhostError, GlobalValue, ImageReader, ImageWriter, PAGE, Part, Section, page_runs_past,
};
use crate::instrument::memory_export;
use crate::link::DeputyLink;
use crate::program::Program;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::{Memory, Val};

/// What [`Body::write_image`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageStats {
    /// The image's length.
    pub bytes: u64,
    /// The body's linear memory, all of it.
    pub memory: u64,
}

/// Puts an image's runs into a fresh instance's memory: the first
/// `dirty_pages` (its data segments, mapped from the module copied on
/// write: a page holds data before the kernel maps it, so each is read) are
/// cleared where no run covers them.
pub(crate) struct IntoMemory<'a> {
    pub(crate) data: &'a mut [u8],
    pub(crate) dirty_pages: usize,
    /// The page after the last run.
    pub(crate) next: usize,
    /// How far the runs have come (for a helper mapping ahead of them).
    pub(crate) reached: &'a AtomicU64,
    /// How far that helper has mapped.
    pub(crate) helped: &'a AtomicU64,
}

impl IntoMemory<'_> {
    /// Clears the data-segment pages from `next` up to `to` that are not zero.
    pub(crate) fn clear(&mut self, to: usize) {
        for page in self.next..to.min(self.dirty_pages) {
            let range = page * PAGE..((page + 1) * PAGE).min(self.data.len());
            if self.data[range.clone()].iter().any(|b| *b != 0) {
                self.data[range].fill(0);
            }
        }
    }
}

impl crate::ghost::PageSink for IntoMemory<'_> {
    fn run(&mut self, first: u64, count: u32) -> Result<&mut [u8], GhostError> {
        let (first, count) = (first as usize, count as usize);
        self.clear(first);
        self.next = first + count;
        self.reached.store((first * PAGE) as u64, Ordering::Relaxed);
        let run = self
            .data
            .get_mut(first * PAGE..(first + count) * PAGE)
            .ok_or_else(|| GhostError::Corrupt {
                section: Section::Memory,
                what: "a run lies outside the memory".into(),
            })?;
        let end = ((first + count) * PAGE) as u64;
        if self.helped.load(Ordering::Acquire) < end {
            populate(run);
        }
        Ok(run)
    }
}

/// Bytes of pages to map past which a helper maps them ahead of the image.
pub(crate) const POPULATE_AHEAD: usize = 4 << 20;

/// Maps the pages of `runs` (byte ranges of the memory at `base`), in order,
/// ahead of where the runs being read have `reached` (runs it falls behind
/// are skipped: their reader maps them), saying in `helped` how far it is.
pub(crate) fn populate_ahead(
    base: usize,
    runs: &[(usize, usize)],
    reached: &AtomicU64,
    helped: &AtomicU64,
) {
    const CHUNK: usize = 1 << 20;
    for &(start, end) in runs {
        let mut at = start;
        while at < end {
            let behind = reached.load(Ordering::Relaxed);
            if behind == u64::MAX {
                return;
            }
            if end as u64 <= behind {
                break;
            }
            let n = CHUNK.min(end - at);
            // SAFETY: the range lies in the memory being filled, which
            // outlives this helper (it is joined before the fill returns);
            // the advice maps pages and changes no byte of them.
            unsafe { populate_raw(base + at, n) };
            at += n;
        }
        helped.store(end as u64, Ordering::Release);
    }
}

/// Has the kernel map pages about to be written at once (far cheaper than a
/// fault for each); where it cannot, they are mapped as they are written.
pub(crate) fn populate(region: &mut [u8]) {
    // SAFETY: the region is memory this body owns, mapped and writable.
    unsafe { populate_raw(region.as_mut_ptr() as usize, region.len()) }
}

/// # Safety
/// `[at, at + len)` must be mapped writable memory of this process; its
/// contents are not changed.
pub(crate) unsafe fn populate_raw(at: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        // SAFETY: per this function's contract; the advice only maps pages.
        unsafe {
            libc::madvise(at as *mut libc::c_void, len, MADV_POPULATE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (at, len);
}

impl Body {
    /// Instantiates `program` and puts the frozen body of `image` (a ghost
    /// image held whole, its checksum checked first) back into it:
    /// [`Body::run`] resumes it where it was frozen.
    pub fn restore(
        runtime: &Runtime,
        program: &Program,
        image: &[u8],
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        let reader = crate::ghost::checked(image, Some(&program.hash))?;
        Self::restore_from(runtime, program, reader, link)
    }

    /// As [`Body::restore`], from an image read as it comes (from a
    /// connection): pages go into the new instance's memory as they arrive.
    /// The image's checksum is checked at its end, before the body can run.
    pub fn restore_from<R: std::io::Read>(
        runtime: &Runtime,
        program: &Program,
        image: ImageReader<R>,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        let mut body = Self::vessel(runtime, program, link)?;
        body.fill(image)?;
        Ok(body)
    }

    /// Puts the frozen body of `image` into this fresh instance (see
    /// [`Body::vessel`]): [`Body::run`] resumes it where it was frozen.
    pub fn fill<R: std::io::Read>(&mut self, mut image: ImageReader<R>) -> Result<(), BodyError> {
        if image.module != self.hash {
            return Err(GhostError::WrongModule {
                expected: self.hash,
                found: image.module,
            }
            .into());
        }
        let body = self;
        let memories = body.memories();
        let globals = body.globals();
        let u = body.unwinder()?;
        let corrupt =
            |section, what: String| -> BodyError { GhostError::Corrupt { section, what }.into() };
        let (mut seen_memories, mut seen_globals, mut seen_stack) = (0, false, false);
        let mut instrumentation = None;
        while let Some(part) = image.section()? {
            match part {
                Part::Memory { index, size } => {
                    let m = *memories.get(index as usize).ok_or_else(|| {
                        corrupt(
                            Section::Memory,
                            format!("memory {index}: the module has {}", memories.len()),
                        )
                    })?;
                    seen_memories += 1;
                    body.fill_memory(index as usize, m, size, &mut image)?;
                }
                Part::Globals(values) => {
                    if globals.len() != values.len() {
                        return Err(corrupt(
                            Section::Globals,
                            format!("{} globals, the module has {}", values.len(), globals.len()),
                        ));
                    }
                    for (g, v) in globals.iter().zip(&values) {
                        let val = match *v {
                            GlobalValue::I32(v) => Val::I32(v),
                            GlobalValue::I64(v) => Val::I64(v),
                            GlobalValue::F32(v) => Val::F32(v),
                            GlobalValue::F64(v) => Val::F64(v),
                            GlobalValue::V128(v) => Val::V128(v.into()),
                        };
                        g.set(&mut body.store, val)
                            .map_err(|e| corrupt(Section::Globals, format!("{e}")))?;
                    }
                    seen_globals = true;
                }
                Part::Stack(stack) => {
                    u.reserve(&mut body.store, stack.len()).map_err(|e| {
                        corrupt(
                            Section::Stack,
                            format!("{} bytes of stack do not fit: {e}", stack.len()),
                        )
                    })?;
                    u.stack.data_mut(&mut body.store)[..stack.len()].copy_from_slice(&stack);
                    set_i32(&mut body.store, &u.ptr, stack.len() as i32)
                        .map_err(|e| corrupt(Section::Stack, e.to_string()))?;
                    seen_stack = true;
                }
                Part::Clocks(offset) => {
                    body.store.data_mut().clock = BodyClock::starting_at(offset)
                }
                Part::Times(times) => {
                    body.cpu.before_ns = times.cpu_ns;
                    body.store.data_mut().sleep_until = times.sleep_until_ns;
                }
                Part::Command { args, env } => {
                    let ctx = body.store.data_mut();
                    ctx.args = args;
                    ctx.env = env;
                }
                Part::Limits { max_memory } => body.store.data_mut().gauge.max = Some(max_memory),
                // Before the rewind below begins to make what the stack
                // needs: what came is not made again.
                Part::RewindCode(sent) => {
                    if let Some(on_demand) = body.on_demand.clone() {
                        on_demand.adopt(body.store.engine(), sent);
                    }
                }
                Part::Instrumentation(v) => {
                    if v != crate::instrument::VERSION {
                        return Err(GhostError::WrongInstrumentation {
                            expected: crate::instrument::VERSION,
                            found: Some(v),
                        }
                        .into());
                    }
                    instrumentation = Some(v);
                }
                // Tables do not change (modules that change them are not
                // instrumented); a checkpoint's extras are its home's.
                Part::Tables(_) | Part::Deputy(_) | Part::Module(_) => {}
            }
        }
        if instrumentation.is_none() {
            return Err(GhostError::WrongInstrumentation {
                expected: crate::instrument::VERSION,
                found: None,
            }
            .into());
        }
        if seen_memories != memories.len() || !seen_globals || !seen_stack {
            return Err(corrupt(
                Section::Header,
                "the image lacks a memory, its globals or its stack".into(),
            ));
        }
        body.start_rewind()?;
        if let Some(m) = body.store.data().memory {
            let size = m.data_size(&body.store) as u64;
            body.memory_bytes.store(size, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Puts an image's memory section into `m`: grown to its size, its pages
    /// read in place, and the pages of the fresh instance's data segments
    /// that the image does not cover cleared.
    pub(crate) fn fill_memory<R: std::io::Read>(
        &mut self,
        index: usize,
        m: Memory,
        size: u64,
        image: &mut ImageReader<R>,
    ) -> Result<(), BodyError> {
        let corrupt = |what: String| -> BodyError {
            GhostError::Corrupt {
                section: Section::Memory,
                what,
            }
            .into()
        };
        let now = m.data_size(&self.store) as u64;
        if size < now {
            return Err(corrupt(format!(
                "a memory of {size} bytes cannot hold {now}"
            )));
        }
        let grow = (size - now) / PAGE as u64;
        if grow > 0 {
            m.grow(&mut self.store, grow)
                .map_err(|e| corrupt(format!("cannot grow to {size} bytes: {e}")))?;
        }
        let fresh = self.fresh.get(index).copied().unwrap_or(0);
        let data = m.data_mut(&mut self.store);
        let dirty_pages = fresh.min(data.len()).div_ceil(PAGE);
        // The runs, to be mapped.
        let runs: Vec<(usize, usize)> = image
            .runs()
            .map(|(f, c)| (f as usize * PAGE, (f as usize + c as usize) * PAGE))
            .collect();
        let to_map: usize = runs.iter().map(|(a, b)| b - a).sum();
        let reached = AtomicU64::new(0);
        let helped = AtomicU64::new(0);
        let base = data.as_mut_ptr() as usize;
        let mut sink = IntoMemory {
            data,
            dirty_pages,
            next: 0,
            reached: &reached,
            helped: &helped,
        };
        std::thread::scope(|scope| {
            // Much to map: a helper maps the runs ahead of their pages
            // coming in, on another core.
            if to_map >= POPULATE_AHEAD {
                let (reached, helped, runs) = (&reached, &helped, &runs);
                scope.spawn(move || populate_ahead(base, runs, reached, helped));
            }
            let read = image.pages(&mut sink);
            reached.store(u64::MAX, Ordering::Relaxed);
            read
        })?;
        let end = sink.dirty_pages;
        sink.clear(end);
        Ok(())
    }

    /// The exported mutable globals, in index order.
    pub(crate) fn globals(&mut self) -> Vec<wasmtime::Global> {
        let mut found: Vec<(u32, wasmtime::Global)> = Vec::new();
        let names: Vec<(u32, String)> = self
            .instance
            .exports(&mut self.store)
            .filter_map(|e| {
                let i = e.name().strip_prefix("__ssi_global_")?.parse().ok()?;
                Some((i, e.name().to_string()))
            })
            .collect();
        for (i, name) in names {
            // (Immutable ones are exported too, for rewind copies made on
            // demand: they are the module's, not the body's.)
            if let Some(g) = self.instance.get_global(&mut self.store, &name)
                && g.ty(&self.store).mutability() == wasmtime::Mutability::Var
            {
                found.push((i, g));
            }
        }
        found.sort_by_key(|(i, _)| *i);
        found.into_iter().map(|(_, g)| g).collect()
    }

    pub(crate) fn memories(&mut self) -> Vec<Memory> {
        (0..)
            .map_while(|i| self.instance.get_memory(&mut self.store, &memory_export(i)))
            .collect()
    }

    /// After [`Exit::Frozen`](crate::Exit::Frozen): writes the frozen body's image to `w`, its
    /// pages straight from the instance's memory (all-zero pages left out;
    /// with `compress`, runs LZ4 shrinks compressed). Returns the sink and
    /// what was written.
    pub fn write_image<W: std::io::Write>(
        &mut self,
        w: W,
        compress: bool,
    ) -> Result<(W, ImageStats), BodyError> {
        self.write_image_with(w, compress, false)
    }

    /// As [`Body::write_image`] (uncompressed), for a move to another node
    /// of the cluster: the image also carries the compiled rewind copies
    /// of the functions on the body's stack that this node made on demand
    /// and that were long to make (a large module's largest functions take
    /// up to a minute), so that the node it goes to does not make them
    /// again. Never for a file: a reader accepts them only from an image
    /// connection ([`crate::ghost::ImageReader::accepting_code`]).
    pub fn write_move_image<W: std::io::Write>(
        &mut self,
        w: W,
    ) -> Result<(W, ImageStats), BodyError> {
        self.write_image_with(w, false, true)
    }

    fn write_image_with<W: std::io::Write>(
        &mut self,
        w: W,
        compress: bool,
        with_code: bool,
    ) -> Result<(W, ImageStats), BodyError> {
        let mut globals = Vec::new();
        for g in self.globals() {
            globals.push(match g.get(&mut self.store) {
                Val::I32(v) => GlobalValue::I32(v),
                Val::I64(v) => GlobalValue::I64(v),
                Val::F32(v) => GlobalValue::F32(v),
                Val::F64(v) => GlobalValue::F64(v),
                Val::V128(v) => GlobalValue::V128(v.as_u128()),
                _ => {
                    return Err(BodyError::NotFreezable(
                        "a mutable global holds a reference".into(),
                    ));
                }
            });
        }
        let u = self.unwinder()?;
        let top = u.top(&mut self.store);
        let memories = self.memories();
        let store = &self.store;
        let stack =
            u.stack.data(store).get(..top).ok_or_else(|| {
                BodyError::NotFreezable("the unwind stack is out of bounds".into())
            })?;
        let ctx = store.data();
        let io = |e: std::io::Error| BodyError::Image(e.to_string());
        let mut out = ImageWriter::new(w, &self.hash).map_err(io)?;
        // What a reader needs first, then the pages, which are most of it.
        out.instrumentation(crate::instrument::VERSION)
            .map_err(io)?;
        out.clocks(ctx.clock.monotonic_ns()).map_err(io)?;
        out.times(&crate::ghost::Times {
            cpu_ns: self.cpu.read_ns(),
            sleep_until_ns: ctx.sleep_until,
        })
        .map_err(io)?;
        out.command(&ctx.args, &ctx.env).map_err(io)?;
        if let Some(max) = ctx.gauge.max {
            out.limits(max).map_err(io)?;
        }
        out.globals(&globals).map_err(io)?;
        out.tables(&[]).map_err(io)?;
        out.stack(stack).map_err(io)?;
        if with_code && let Some(on_demand) = &self.on_demand {
            out.rewind_code(&on_demand.to_send(store.engine(), stack))
                .map_err(io)?;
        }
        let mut memory = 0;
        for (i, m) in memories.iter().enumerate() {
            let data = m.data(store);
            memory += data.len() as u64;
            let fresh = self.fresh.get(i).copied().unwrap_or(usize::MAX);
            out.memory(i as u32, &page_runs_past(data, fresh), compress)
                .map_err(io)?;
        }
        let (w, bytes) = out.finish().map_err(io)?;
        Ok((w, ImageStats { bytes, memory }))
    }

    /// After [`Exit::Frozen`](crate::Exit::Frozen): the frozen body's image, whole.
    pub fn image(&mut self) -> Result<Vec<u8>, BodyError> {
        Ok(self.write_image(Vec::new(), true)?.0)
    }
}
