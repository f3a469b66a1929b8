//! A body: one Wasm instance computing on behalf of a process.

use crate::engine::{ModuleHash, Program, Runtime};
use crate::ghost::{
    GhostError, GlobalValue, ImageReader, ImageWriter, PAGE, Part, Section, page_runs,
};
use crate::instrument::{
    self, FLAG_MEMORY, NORMAL, PTR_GLOBAL, REWIND, REWINDING, STACK_MEMORY, STATE_GLOBAL,
    UNWINDING, memory_export,
};
use crate::link::DeputyLink;
use crate::shims;
use ssi_deputy::Errno;
use ssi_deputy::abi::clockid;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{
    Engine, ExternType, Global, Instance, Linker, Memory, Module, ResourceLimiter, SharedMemory,
    Store, TypedFunc, UpdateDeadline, Val,
};

/// What a body carries with it from launch: it answers these calls itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodySpec {
    /// The program's arguments, `argv[0]` first.
    pub args: Vec<String>,
    /// The program's environment, as `NAME=VALUE`.
    pub env: Vec<String>,
}

/// The guest called `proc_exit` with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exited with status {0}")]
pub struct ProcExit(pub i32);

/// How a body ended.
#[derive(Debug)]
pub enum Exit {
    /// `_start` returned (status 0) or the guest called `proc_exit`.
    Status(i32),
    /// The guest trapped (the error carries the Wasm backtrace).
    Trap(wasmtime::Error),
    /// The host stopped the guest: an invalid exit status, a lost deputy link.
    Failed(wasmtime::Error),
    /// The process sent itself a signal that ends it (this number).
    Signaled(u8),
    /// The body was frozen (see [`Control::freeze`]). Its image can be
    /// written ([`Body::write_image`]); then it can go on where it was
    /// ([`Body::resume`]) or be dropped.
    Frozen,
}

/// Why a body could not start.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the module imports `{module}::{name}` ({kind}), which is not provided")]
    UnknownImport {
        module: String,
        name: String,
        kind: &'static str,
    },
    #[error("the module has no `_start` function: it is not a WASI command")]
    NoStart,
    #[error("`_start` has the wrong type: expected a function with no parameters and no results")]
    BadStart,
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    #[error("cannot set up the WASI imports: {0}")]
    Linker(String),
    #[error("the module cannot be frozen or restored: {0}")]
    NotFreezable(String),
    #[error(transparent)]
    Ghost(#[from] GhostError),
    #[error("cannot write the image: {0}")]
    Image(String),
}

/// What [`Body::write_image`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageStats {
    /// The image's length.
    pub bytes: u64,
    /// The body's linear memory, all of it.
    pub memory: u64,
}

/// Puts an image's runs into a fresh instance's memory: the first
/// `dirty_pages` (its data segments) are cleared where no run covers them.
struct IntoMemory<'a> {
    data: &'a mut [u8],
    dirty_pages: usize,
    /// Which of those the kernel mapped (the others are zeros).
    mapped: Option<Vec<bool>>,
    /// The page after the last run.
    next: usize,
    /// How far the runs have come (for a helper mapping ahead of them).
    reached: &'a AtomicU64,
    /// How far that helper has mapped.
    helped: &'a AtomicU64,
}

impl IntoMemory<'_> {
    /// Clears the data-segment pages from `next` up to `to` that are not zero
    /// (pages the kernel never mapped are).
    fn clear(&mut self, to: usize) {
        for page in self.next..to.min(self.dirty_pages) {
            if self.mapped.as_ref().is_some_and(|m| !m[page]) {
                continue;
            }
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
const POPULATE_AHEAD: usize = 4 << 20;

/// Maps the pages of `runs` (byte ranges of the memory at `base`), in order,
/// ahead of where the runs being read have `reached` (runs it falls behind
/// are skipped: their reader maps them), saying in `helped` how far it is.
fn populate_ahead(base: usize, runs: &[(usize, usize)], reached: &AtomicU64, helped: &AtomicU64) {
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
fn populate(region: &mut [u8]) {
    // SAFETY: the region is memory this body owns, mapped and writable.
    unsafe { populate_raw(region.as_mut_ptr() as usize, region.len()) }
}

/// # Safety
/// `[at, at + len)` must be mapped writable memory of this process; its
/// contents are not changed.
unsafe fn populate_raw(at: usize, len: usize) {
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

/// The monotonic clock of a body: it starts at an offset carried by the body, so
/// that it never goes backwards when the body moves.
#[derive(Debug, Clone, Copy)]
pub struct BodyClock {
    base: Instant,
    offset_ns: u64,
}

impl BodyClock {
    pub fn starting_at(offset_ns: u64) -> Self {
        BodyClock {
            base: Instant::now(),
            offset_ns,
        }
    }

    pub fn monotonic_ns(&self) -> u64 {
        let elapsed = self.base.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.offset_ns.saturating_add(elapsed)
    }
}

/// The CPU clock of the calling thread, readable from other threads while it lives.
#[derive(Debug, Clone, Copy)]
pub struct ThreadCpuClock(libc::clockid_t);

impl ThreadCpuClock {
    pub fn current() -> Option<Self> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: pthread_self() is the calling thread; `id` is a valid out pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        (rc == 0).then_some(ThreadCpuClock(id))
    }

    /// CPU time used by the thread, in ns (0 once the thread has ended).
    pub fn read_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out pointer; an invalid clock id returns an error.
        let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }
}

/// The CPU time a body has used, readable from any thread: what it had used
/// before it came to this instance (its image says), and what the thread
/// that made this instance has used since.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    clock: Option<ThreadCpuClock>,
    start_ns: u64,
    before_ns: u64,
}

impl CpuMeter {
    fn here() -> Self {
        let clock = ThreadCpuClock::current();
        CpuMeter {
            clock,
            start_ns: clock.map(|c| c.read_ns()).unwrap_or(0),
            before_ns: 0,
        }
    }

    pub fn read_ns(&self) -> u64 {
        let here = self
            .clock
            .map(|c| c.read_ns().saturating_sub(self.start_ns))
            .unwrap_or(0);
        self.before_ns.saturating_add(here)
    }
}

/// The process sent itself a signal that ends it (`ssi` API `kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ended by its own signal {0}")]
pub struct Terminated(pub u8);

/// The body was killed by its host (see [`Control::kill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("killed")]
pub struct Killed;

const NOTHING: u8 = 0;
const FREEZE: u8 = 1;
const KILL: u8 = 2;

/// The flag's values (see [`crate::instrument`]).
const FLAG_UNWIND: u32 = 1;
const FLAG_END: u32 = 2;

/// What a body's host asks of it from other threads: to freeze or to end.
///
/// An instrumented body honours either at its next poll point (a loop header
/// or a function entry), or at once if it waits in a system call: the request
/// raises the flag its poll points read (to 1: unwind; to 2: end, where the
/// poll point traps), and wakes a sleep of the body's own.
/// A call waiting at the deputy is the deputy's to cancel (it answers
/// `EINTR`, and the body, seeing the request, freezes or ends instead).
/// A body that cannot be instrumented cannot be frozen; it is stopped at its
/// next epoch check on an interruptible runtime, else at its next system call.
#[derive(Clone)]
pub struct Control(Arc<ControlInner>);

struct ControlInner {
    request: AtomicU8,
    /// Signals are pending for the body's handlers.
    signalled: std::sync::atomic::AtomicBool,
    /// A signal handler runs: requests wait for it to return (but a kill).
    in_handler: std::sync::atomic::AtomicBool,
    flag: Option<SharedMemory>,
    engine: Engine,
    sleeping: Mutex<()>,
    wake: Condvar,
}

impl Control {
    fn new(engine: &Engine, flag: Option<SharedMemory>) -> Self {
        Control(Arc::new(ControlInner {
            request: AtomicU8::new(NOTHING),
            signalled: std::sync::atomic::AtomicBool::new(false),
            in_handler: std::sync::atomic::AtomicBool::new(false),
            flag,
            engine: engine.clone(),
            sleeping: Mutex::new(()),
            wake: Condvar::new(),
        }))
    }

    /// Ends the body: it returns [`Killed`].
    pub fn kill(&self) {
        self.0.request.store(KILL, Ordering::SeqCst);
        self.set_flag(FLAG_END);
        self.wake();
        self.0.engine.increment_epoch();
    }

    /// Asks the body to freeze: [`Body::run`] returns [`Exit::Frozen`]. False
    /// if the body cannot be frozen (see [`Program::not_freezable`]).
    pub fn freeze(&self) -> bool {
        if self.0.flag.is_none() {
            return false;
        }
        let _ =
            self.0
                .request
                .compare_exchange(NOTHING, FREEZE, Ordering::SeqCst, Ordering::SeqCst);
        self.raise();
        true
    }

    /// Tells the body that signals are pending for its handlers: it asks its
    /// deputy for them at its next poll point, or when a sleep or a call
    /// waiting at the deputy is cut short.
    pub fn signal(&self) {
        self.0.signalled.store(true, Ordering::SeqCst);
        self.raise();
    }

    /// Takes the note that signals are pending.
    pub(crate) fn take_signalled(&self) -> bool {
        self.0.signalled.swap(false, Ordering::SeqCst)
    }

    fn pending(&self) -> bool {
        self.0.request.load(Ordering::SeqCst) != NOTHING || self.0.signalled.load(Ordering::SeqCst)
    }

    /// Lowers the flag once nothing is asked of the body any more, and
    /// raises it if something is.
    pub(crate) fn settle(&self) {
        if !self.pending() && !self.killing() {
            self.set_flag(0);
        }
        // A request that came meanwhile raises it again.
        if self.pending() {
            self.raise();
        }
    }

    /// A signal handler starts: until it returns, the flag stays down (but
    /// for a kill), so that the handler runs to its end.
    pub(crate) fn enter_handler(&self) {
        self.0.in_handler.store(true, Ordering::SeqCst);
        self.lower_in_handler();
    }

    /// The flag came up while a handler ran (a request just before it
    /// started): down again.
    pub(crate) fn lower_in_handler(&self) {
        if !self.killing() {
            self.set_flag(0);
        }
    }

    /// The handler returned: requests made meanwhile raise the flag.
    pub(crate) fn leave_handler(&self) {
        self.0.in_handler.store(false, Ordering::SeqCst);
        self.settle();
    }

    /// Whether the body can be frozen.
    pub fn freezable(&self) -> bool {
        self.0.flag.is_some()
    }

    /// Sets the word the body's poll points read.
    fn set_flag(&self, value: u32) {
        if let Some(flag) = &self.0.flag {
            let cells = flag.data();
            if cells.len() >= 4 {
                // SAFETY: the flag memory is a live, page-aligned shared memory
                // (kept alive by `flag`); Wasm reads it with plain loads, which
                // is how shared memories are meant to be used across threads.
                let word = unsafe { AtomicU32::from_ptr(cells.as_ptr() as *mut u32) };
                word.store(value, Ordering::SeqCst);
            }
        }
    }

    fn raise(&self) {
        if !self.killing() && !self.0.in_handler.load(Ordering::SeqCst) {
            self.set_flag(FLAG_UNWIND);
        }
        self.wake();
    }

    fn wake(&self) {
        let _guard = self.0.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        self.0.wake.notify_all();
    }

    /// Takes back a freeze request (the body resumes).
    fn clear_freeze(&self) {
        let cleared = self
            .0
            .request
            .compare_exchange(FREEZE, NOTHING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if cleared {
            self.settle();
        }
    }

    pub(crate) fn killing(&self) -> bool {
        self.0.request.load(Ordering::SeqCst) == KILL
    }

    pub(crate) fn freezing(&self) -> bool {
        self.0.request.load(Ordering::SeqCst) == FREEZE
    }

    /// Sleeps for `d`, or less if a request comes: then false.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut guard = self.0.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.0.request.load(Ordering::SeqCst) != NOTHING
                || self.0.signalled.load(Ordering::SeqCst)
            {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .0
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Keeps the size of a body's linear memory where other threads can read it.
struct MemoryGauge(Arc<AtomicU64>);

impl ResourceLimiter for MemoryGauge {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.0.store(desired as u64, Ordering::Relaxed);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// The host state of a running body (wasmtime's store data).
pub struct BodyCtx {
    gauge: MemoryGauge,
    pub(crate) control: Control,
    pub(crate) unwinder: Option<Unwinder>,
    pub(crate) instance: Option<Instance>,
    pub(crate) link: Box<dyn DeputyLink>,
    pub(crate) args: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
    pub(crate) clock: BodyClock,
    pub(crate) memory: Option<Memory>,
    /// A signal handler runs: calls that wait neither unwind nor run handlers.
    pub(crate) in_handler: bool,
    /// When a clock-only `poll_oneoff` cut short (by a signal, or a freeze)
    /// ends, on the body's monotonic clock: it goes on until then.
    pub(crate) sleep_until: Option<u64>,
}

/// The instrumentation's exports, with which the host unwinds and rewinds
/// the guest (see [`crate::instrument`]).
#[derive(Clone)]
pub(crate) struct Unwinder {
    state: Global,
    ptr: Global,
    stack: Memory,
    rewind: Option<TypedFunc<(), ()>>,
    /// The rewind copies, by function index.
    rewinds: Option<wasmtime::Table>,
    /// The function index of each import that can unwind, by name.
    markers: Vec<(&'static str, u32)>,
}

fn get_i32(store: impl wasmtime::AsContextMut, g: &Global) -> i32 {
    g.get(store).i32().unwrap_or(0)
}

fn set_i32(store: impl wasmtime::AsContextMut, g: &Global, v: i32) -> wasmtime::Result<()> {
    g.set(store, Val::I32(v))
}

impl Unwinder {
    fn of(store: &mut Store<BodyCtx>, instance: &Instance, module: &Module) -> Option<Unwinder> {
        let mut markers = Vec::new();
        let funcs = module
            .imports()
            .filter(|i| matches!(i.ty(), ExternType::Func(_)));
        for (index, import) in funcs.enumerate() {
            for (m, name) in instrument::UNWINDING_IMPORTS {
                if import.module() == m && import.name() == name {
                    markers.push((name, index as u32));
                }
            }
        }
        Some(Unwinder {
            state: instance.get_global(&mut *store, STATE_GLOBAL)?,
            ptr: instance.get_global(&mut *store, PTR_GLOBAL)?,
            stack: instance.get_memory(&mut *store, STACK_MEMORY)?,
            rewind: instance.get_typed_func(&mut *store, REWIND).ok(),
            rewinds: instance.get_table(&mut *store, instrument::REWIND_TABLE),
            markers,
        })
    }

    pub(crate) fn state(&self, store: impl wasmtime::AsContextMut) -> i32 {
        get_i32(store, &self.state)
    }

    pub(crate) fn set_state(
        &self,
        store: impl wasmtime::AsContextMut,
        v: i32,
    ) -> wasmtime::Result<()> {
        set_i32(store, &self.state, v)
    }

    /// The unwound stack's length.
    fn top(&self, store: impl wasmtime::AsContextMut) -> usize {
        get_i32(store, &self.ptr) as u32 as usize
    }

    /// The rewind copy of the function whose frame is on top of the stack.
    pub(crate) fn rewind_of_top(
        &self,
        mut store: impl wasmtime::AsContextMut,
    ) -> wasmtime::Result<wasmtime::Func> {
        let top = self.top(&mut store);
        let fid = top
            .checked_sub(4)
            .and_then(|at| self.stack.data(&store).get(at..top))
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| wasmtime::Error::msg("the unwind stack is empty"))?;
        self.rewinds
            .as_ref()
            .and_then(|t| t.get(&mut store, u64::from(fid)))
            .and_then(|r| r.as_func().flatten().copied())
            .ok_or_else(|| wasmtime::Error::msg(format!("function {fid} has no rewind copy")))
    }

    /// Makes room for `len` bytes of stack.
    fn reserve(&self, mut store: impl wasmtime::AsContextMut, len: usize) -> wasmtime::Result<()> {
        let have = self.stack.data_size(&store);
        if len > have {
            let pages = (len - have).div_ceil(PAGE) as u64;
            self.stack.grow(&mut store, pages)?;
        }
        Ok(())
    }
}

/// Starts unwinding the guest's stack from the import `name`, which the
/// guest called: the import's marker goes on the unwind stack, and when the
/// import returns, every Wasm frame saves itself and returns.
pub(crate) fn start_unwind(
    c: &mut wasmtime::Caller<'_, BodyCtx>,
    name: &str,
) -> wasmtime::Result<()> {
    let u = c
        .data()
        .unwinder
        .clone()
        .ok_or_else(|| wasmtime::Error::msg("the body cannot be frozen"))?;
    let fid = u
        .markers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .ok_or_else(|| wasmtime::Error::msg(format!("`{name}` cannot unwind")))?;
    let top = u.top(&mut *c);
    u.reserve(&mut *c, top + 8)?;
    let data = u.stack.data_mut(&mut *c);
    data[top..top + 4].copy_from_slice(&0u32.to_le_bytes());
    data[top + 4..top + 8].copy_from_slice(&fid.to_le_bytes());
    set_i32(&mut *c, &u.ptr, (top + 8) as i32)?;
    u.set_state(&mut *c, UNWINDING)
}

/// If the guest is being rewound, it has reached the import `name`, where it
/// was frozen: the rewind ends and the call goes on (it is made again).
pub(crate) fn end_rewind(
    c: &mut wasmtime::Caller<'_, BodyCtx>,
    name: &str,
) -> wasmtime::Result<()> {
    let Some(u) = c.data().unwinder.clone() else {
        return Ok(());
    };
    if u.state(&mut *c) != REWINDING {
        return Ok(());
    }
    let top = u.top(&mut *c);
    let marker = top
        .checked_sub(8)
        .and_then(|at| u.stack.data(&*c).get(at..top))
        .map(|m| {
            (
                u32::from_le_bytes([m[0], m[1], m[2], m[3]]),
                u32::from_le_bytes([m[4], m[5], m[6], m[7]]),
            )
        });
    let fid = u.markers.iter().find(|(n, _)| *n == name).map(|(_, f)| *f);
    match marker {
        Some((0, f)) if Some(f) == fid => {}
        _ => {
            return Err(wasmtime::Error::msg(format!(
                "the restored stack does not end in `{name}`"
            )));
        }
    }
    set_i32(&mut *c, &u.ptr, (top - 8) as i32)?;
    u.set_state(&mut *c, NORMAL)
}

impl BodyCtx {
    pub(crate) fn clock_now(&self, id: u32) -> Result<u64, Errno> {
        match id {
            clockid::REALTIME => Ok(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Errno::Io)?
                .as_nanos()
                .min(u64::MAX as u128) as u64),
            clockid::MONOTONIC => Ok(self.clock.monotonic_ns()),
            clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => Err(Errno::Badf),
            _ => Err(Errno::Inval),
        }
    }

    pub(crate) fn clock_res(&self, id: u32) -> Result<u64, Errno> {
        match id {
            clockid::REALTIME | clockid::MONOTONIC => Ok(1),
            clockid::PROCESS_CPUTIME | clockid::THREAD_CPUTIME => Err(Errno::Badf),
            _ => Err(Errno::Inval),
        }
    }
}

fn kind_name(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

/// Checks that a module can run as a body: every import is a WASI preview1
/// function or one of the `ssi` host API, and it has a `_start` of the right type.
pub fn check_module(module: &Module) -> Result<(), BodyError> {
    for import in module.imports() {
        let ty = import.ty();
        let known = matches!(ty, ExternType::Func(_))
            && ((import.module() == shims::MODULE && shims::FUNCTIONS.contains(&import.name()))
                || (import.module() == shims::SSI_MODULE
                    && shims::SSI_FUNCTIONS.contains(&import.name())));
        if !known {
            return Err(BodyError::UnknownImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
                kind: kind_name(&ty),
            });
        }
    }
    match module.get_export("_start") {
        None => Err(BodyError::NoStart),
        Some(ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => Ok(()),
        Some(_) => Err(BodyError::BadStart),
    }
}

/// A body ready to run: an instance of its module, linked to its deputy.
pub struct Body {
    store: Store<BodyCtx>,
    instance: Instance,
    start: TypedFunc<(), ()>,
    control: Control,
    memory_bytes: Arc<AtomicU64>,
    cpu: CpuMeter,
    hash: ModuleHash,
    /// The next [`Body::run`] rewinds the stack put back.
    rewind_next: bool,
    /// Bytes of each memory as instantiated: what its data segments may
    /// have written.
    fresh: Vec<usize>,
}

impl Body {
    /// Instantiates `program` for a fresh launch.
    pub fn new(
        runtime: &Runtime,
        program: &Program,
        spec: &BodySpec,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        let args = spec.args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let env = spec.env.iter().map(|e| e.as_bytes().to_vec()).collect();
        Self::instantiate(runtime, program, args, env, 0, link)
    }

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

    /// A fresh instance of `program` for an image to come: it does not run
    /// until [`Body::fill`] has put a frozen body into it.
    pub fn vessel(
        runtime: &Runtime,
        program: &Program,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        if let Some(why) = &program.not_freezable {
            return Err(BodyError::NotFreezable(why.clone()));
        }
        Self::instantiate(runtime, program, Vec::new(), Vec::new(), 0, link)
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
    fn fill_memory<R: std::io::Read>(
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
        let mapped = crate::ghost::mapped_pages(&data[..dirty_pages * PAGE]);
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
            mapped,
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

    fn instantiate(
        runtime: &Runtime,
        program: &Program,
        args: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
        clock_offset_ns: u64,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        let module = &program.module;
        let engine = module.engine();
        let linked = match program.linked.get() {
            Some(pre) => pre.clone(),
            None => {
                check_module(module)?;
                let mut linker = Linker::new(engine);
                shims::add_to_linker(&mut linker).map_err(|e| BodyError::Linker(e.to_string()))?;
                let pre = linker
                    .instantiate_pre(module)
                    .map_err(|e| BodyError::Instantiate(format!("{e:#}")))?;
                program.linked.get_or_init(|| pre).clone()
            }
        };
        let memory_bytes = Arc::new(AtomicU64::new(0));
        let placeholder = Control::new(engine, None);
        let ctx = BodyCtx {
            gauge: MemoryGauge(memory_bytes.clone()),
            control: placeholder,
            unwinder: None,
            instance: None,
            link,
            args,
            env,
            clock: BodyClock::starting_at(clock_offset_ns),
            memory: None,
            in_handler: false,
            sleep_until: None,
        };
        let mut store = Store::new(engine, ctx);
        store.limiter(|ctx| &mut ctx.gauge);
        if runtime.is_interruptible() {
            // A start function runs at instantiation, through the epoch
            // checks of a module that cannot be instrumented: it goes on.
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Continue(1)));
        }
        let instance = linked
            .instantiate(&mut store)
            .map_err(|e| BodyError::Instantiate(format!("{e:#}")))?;
        let flag = instance.get_shared_memory(&mut store, FLAG_MEMORY);
        let unwinder = Unwinder::of(&mut store, &instance, module);
        let control = Control::new(engine, flag.filter(|_| unwinder.is_some()));
        store.data_mut().control = control.clone();
        store.data_mut().unwinder = unwinder;
        store.data_mut().instance = Some(instance);
        if !control.freezable() && runtime.is_interruptible() {
            let control = control.clone();
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if control.killing() {
                    Err(Killed.into())
                } else {
                    Ok(UpdateDeadline::Continue(1))
                }
            });
        }
        if let Some(m) = instance.get_memory(&mut store, "memory") {
            memory_bytes.store(m.data_size(&store) as u64, Ordering::Relaxed);
            store.data_mut().memory = Some(m);
        }
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|_| BodyError::BadStart)?;
        Ok(Body {
            store,
            instance,
            start,
            control,
            memory_bytes,
            cpu: CpuMeter::here(),
            hash: program.hash,
            rewind_next: false,
            fresh: Vec::new(),
        })
        .map(|mut body| {
            let memories = body.memories();
            body.fresh = memories.iter().map(|m| m.data_size(&body.store)).collect();
            body
        })
    }

    /// Gives the body its link to its deputy (one made while the body was
    /// being set up).
    pub fn set_link(&mut self, link: Box<dyn DeputyLink>) {
        self.store.data_mut().link = link;
    }

    /// A handle that freezes or stops this body from another thread.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The size of the body's linear memory, kept current as it grows.
    pub fn memory_gauge(&self) -> Arc<AtomicU64> {
        self.memory_bytes.clone()
    }

    /// The body's CPU time, readable from other threads.
    pub fn cpu_meter(&self) -> CpuMeter {
        self.cpu
    }

    /// The exported mutable globals, in index order.
    fn globals(&mut self) -> Vec<wasmtime::Global> {
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
            if let Some(g) = self.instance.get_global(&mut self.store, &name) {
                found.push((i, g));
            }
        }
        found.sort_by_key(|(i, _)| *i);
        found.into_iter().map(|(_, g)| g).collect()
    }

    fn memories(&mut self) -> Vec<Memory> {
        (0..)
            .map_while(|i| self.instance.get_memory(&mut self.store, &memory_export(i)))
            .collect()
    }

    /// After [`Exit::Frozen`]: writes the frozen body's image to `w`, its
    /// pages straight from the instance's memory (all-zero pages left out;
    /// with `compress`, runs LZ4 shrinks compressed). Returns the sink and
    /// what was written.
    pub fn write_image<W: std::io::Write>(
        &mut self,
        w: W,
        compress: bool,
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
        out.globals(&globals).map_err(io)?;
        out.tables(&[]).map_err(io)?;
        out.stack(stack).map_err(io)?;
        let mut memory = 0;
        for (i, m) in memories.iter().enumerate() {
            let data = m.data(store);
            memory += data.len() as u64;
            out.memory(i as u32, &page_runs(data), compress)
                .map_err(io)?;
        }
        let (w, bytes) = out.finish().map_err(io)?;
        Ok((w, ImageStats { bytes, memory }))
    }

    /// After [`Exit::Frozen`]: the frozen body's image, whole.
    pub fn image(&mut self) -> Result<Vec<u8>, BodyError> {
        Ok(self.write_image(Vec::new(), true)?.0)
    }

    /// After [`Exit::Frozen`]: the body goes on where it was, in the same
    /// instance, at the next [`Body::run`].
    pub fn resume(&mut self) -> Result<(), BodyError> {
        self.control.clear_freeze();
        // The unwound stack is still in its memory, the top where it was.
        self.start_rewind()
    }

    fn unwinder(&self) -> Result<Unwinder, BodyError> {
        self.store
            .data()
            .unwinder
            .clone()
            .ok_or_else(|| BodyError::NotFreezable("no unwinder exports".into()))
    }

    /// The next `run` puts the stack back where the body was frozen.
    fn start_rewind(&mut self) -> Result<(), BodyError> {
        let u = self.unwinder()?;
        if u.rewind.is_none() {
            return Err(BodyError::NotFreezable(
                "`_start` has no rewind copy".into(),
            ));
        }
        u.set_state(&mut self.store, REWINDING)
            .map_err(|e| BodyError::Instantiate(format!("cannot start the rewind: {e:#}")))?;
        self.rewind_next = true;
        Ok(())
    }

    /// Runs the body until it ends or freezes. Every call it made has been
    /// executed at its deputy when this returns.
    pub fn run(&mut self) -> Exit {
        let exit = loop {
            let result = match (self.rewind_next, self.store.data().unwinder.clone()) {
                (
                    true,
                    Some(Unwinder {
                        rewind: Some(rewind),
                        ..
                    }),
                ) => {
                    self.rewind_next = false;
                    rewind.call(&mut self.store, ())
                }
                _ => self.start.call(&mut self.store, ()),
            };
            match result {
                Ok(()) => match self.unwound() {
                    Ok(false) => break Exit::Status(0),
                    Ok(true) => match self.after_unwind() {
                        Some(exit) => break exit,
                        None => continue,
                    },
                    Err(e) => break Exit::Failed(e),
                },
                Err(_) if self.control.killing() => break Exit::Failed(Killed.into()),
                Err(e) => {
                    break match (e.downcast_ref::<ProcExit>(), e.downcast_ref::<Terminated>()) {
                        (Some(ProcExit(code)), _) => Exit::Status(*code),
                        (_, Some(Terminated(n))) => Exit::Signaled(*n),
                        _ if e.is::<wasmtime::Trap>() => Exit::Trap(e),
                        _ => Exit::Failed(e),
                    };
                }
            }
        };
        if let Exit::Frozen = exit {
            return match self.store.data_mut().link.flush() {
                Ok(()) => exit,
                Err(e) => Exit::Failed(e.into()),
            };
        }
        match self.store.data_mut().link.flush() {
            Ok(()) => exit,
            Err(e) if matches!(exit, Exit::Status(_)) => Exit::Failed(e.into()),
            Err(_) => exit,
        }
    }

    /// The body has unwound to the host: it ends (a kill), is frozen, or
    /// (for signals, or a freeze taken back) runs its handlers and goes on
    /// (`None`).
    fn after_unwind(&mut self) -> Option<Exit> {
        if self.control.killing() {
            return Some(Exit::Failed(Killed.into()));
        }
        if !self.control.freezing() && self.control.take_signalled() {
            if let Err(e) = crate::shims::run_handlers(&mut self.store) {
                return Some(
                    match (e.downcast_ref::<ProcExit>(), e.downcast_ref::<Terminated>()) {
                        (Some(ProcExit(code)), _) => Exit::Status(*code),
                        (_, Some(Terminated(n))) => Exit::Signaled(*n),
                        _ if self.control.killing() => Exit::Failed(Killed.into()),
                        _ if e.is::<wasmtime::Trap>() => Exit::Trap(e),
                        _ => Exit::Failed(e),
                    },
                );
            }
            if self.control.killing() {
                return Some(Exit::Failed(Killed.into()));
            }
        }
        if self.control.freezing() {
            return Some(Exit::Frozen);
        }
        self.control.settle();
        match self.start_rewind() {
            Ok(()) => None,
            Err(e) => Some(Exit::Failed(wasmtime::Error::new(e))),
        }
    }

    /// Whether `_start` returned because the body unwound; then the unwind is
    /// finished.
    fn unwound(&mut self) -> wasmtime::Result<bool> {
        let Some(u) = self.store.data().unwinder.clone() else {
            return Ok(false);
        };
        if u.state(&mut self.store) != UNWINDING {
            return Ok(false);
        }
        u.set_state(&mut self.store, NORMAL)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssi_deputy::{Reply, Syscall, SyscallResult};
    use std::sync::Mutex as StdMutex;

    /// A deputy of the simplest kind: it keeps what is written to fd 1.
    struct Recorder(Arc<StdMutex<Vec<u8>>>);

    impl DeputyLink for Recorder {
        fn call(&mut self, call: Syscall) -> Result<SyscallResult, crate::LinkError> {
            Ok(match call {
                Syscall::FdWrite { fd: 1, data } => {
                    let n = data.len() as u32;
                    self.0.lock().expect("recorder").extend_from_slice(&data);
                    Ok(Reply::Size(n))
                }
                _ => Err(Errno::Nosys),
            })
        }
    }

    /// Recursion 200 deep, a loop without calls at the bottom, a stack-allocated
    /// array per frame; prints one decimal digit per level on the way back.
    const GUEST: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 2)
        (global $sp (mut i32) (i32.const 65536))
        (func $spin (param $n i32) (result i32) (local $x i32)
            (loop $l
                (local.set $x (i32.add (i32.mul (local.get $x) (i32.const 1103515245)) (i32.const 12345)))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (br_if $l (i32.gt_s (local.get $n) (i32.const 0))))
            (local.get $x))
        (func $rec (param $depth i32) (result i32) (local $frame i32) (local $v i32)
            ;; a 16-byte array on the shadow stack
            (global.set $sp (local.tee $frame (i32.sub (global.get $sp) (i32.const 16))))
            (i32.store (local.get $frame) (local.get $depth))
            (if (i32.eqz (local.get $depth))
                (then (local.set $v (call $spin (i32.const 300000000))))
                (else (local.set $v (call $rec (i32.sub (local.get $depth) (i32.const 1))))))
            ;; print the digit depth % 10 through memory at 100
            (i32.store8 (i32.const 100) (i32.add (i32.const 48)
                (i32.rem_u (i32.load (local.get $frame)) (i32.const 10))))
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const 1))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (global.set $sp (i32.add (local.get $frame) (i32.const 16)))
            (i32.add (local.get $v) (i32.const 1)))
        (func (export "_start") (drop (call $rec (i32.const 200)))))"#;

    /// How a body ended, and its image if it froze.
    type Ended = (Exit, Option<Vec<u8>>);

    /// Runs a body of `program` on a thread of its own.
    fn spawn(
        program: &Program,
        out: Arc<StdMutex<Vec<u8>>>,
    ) -> (std::thread::JoinHandle<Ended>, Control) {
        let program = program.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let runner = std::thread::spawn(move || {
            let runtime = Runtime::new(None).expect("engine");
            let mut body = Body::new(
                &runtime,
                &program,
                &BodySpec::default(),
                Box::new(Recorder(out)),
            )
            .expect("body");
            tx.send(body.control()).expect("control");
            let exit = body.run();
            let image = matches!(exit, Exit::Frozen).then(|| body.image().expect("image"));
            (exit, image)
        });
        (runner, rx.recv().expect("control"))
    }

    /// Runs a body of `program` for `run`, then freezes it: its image.
    fn frozen_after(program: &Program, out: &Arc<StdMutex<Vec<u8>>>, run: Duration) -> Vec<u8> {
        let (runner, control) = spawn(program, out.clone());
        std::thread::sleep(run);
        assert!(control.freeze());
        let (exit, image) = runner.join().expect("body thread");
        match (exit, image) {
            (Exit::Frozen, Some(image)) => image,
            (exit, _) => panic!("not frozen: {exit:?}"),
        }
    }

    fn expected() -> Vec<u8> {
        (0..=200u32).map(|d| b'0' + (d % 10) as u8).collect()
    }

    #[test]
    fn a_body_frozen_in_a_loop_without_calls_resumes_where_it_was() {
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(GUEST.as_bytes()).expect("program");
        assert!(program.freezable(), "{:?}", program.not_freezable);
        let out = Arc::new(StdMutex::new(Vec::new()));
        let (runner, control) = spawn(&program, out.clone());
        std::thread::sleep(Duration::from_millis(30));
        let asked = Instant::now();
        assert!(control.freeze());
        let (exit, image) = runner.join().expect("body thread");
        let took = asked.elapsed();
        let (Exit::Frozen, Some(image)) = (&exit, image) else {
            panic!("not frozen: {exit:?}");
        };
        assert!(took < Duration::from_millis(50), "froze in {took:?}");
        assert!(out.lock().expect("out").is_empty(), "froze before printing");
        let ghost = crate::ghost::Ghost::decode(&image, Some(&program.hash)).expect("decode");
        assert!(!ghost.stack.is_empty());
        // It spun for 30 ms: its CPU time goes with it.
        assert!(ghost.times.cpu_ns >= 5_000_000, "{:?}", ghost.times);
        assert_eq!(ghost.times.sleep_until_ns, None);
        // Through the image format, as a migration carries it.
        let mut body = Body::restore(&runtime, &program, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        assert!(body.cpu_meter().read_ns() >= ghost.times.cpu_ns);
        // Frozen again, at once, and resumed in place.
        let control = body.control();
        assert!(control.freeze());
        let Exit::Frozen = body.run() else {
            panic!("not frozen again");
        };
        body.resume().expect("resume");
        match body.run() {
            Exit::Status(0) => {}
            other => panic!("resumed body ended with {other:?}"),
        }
        assert_eq!(*out.lock().expect("out"), expected());
    }

    /// A module with a start function (which a restore would run again) is
    /// not instrumented; on a runtime with epoch checks, its start function
    /// runs through them at instantiation, and the body runs as it is.
    #[test]
    fn a_start_function_runs_on_an_interruptible_runtime() {
        let guest = r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "s")
            (func $init (local $n i32)
                (local.set $n (i32.const 3000000))
                (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
                (i32.store (i32.const 0) (i32.const 100))
                (i32.store (i32.const 4) (i32.const 1))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            (start $init)
            (func (export "_start")))"#;
        let runtime = Runtime::interruptible(None).expect("engine");
        let program = runtime.load(guest.as_bytes()).expect("program");
        assert!(!program.freezable());
        let out = Arc::new(StdMutex::new(Vec::new()));
        // A tick of the epoch now and then, as a node's ticker does.
        let ticking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let ticker = {
            let (engine, ticking) = (program.module.engine().clone(), ticking.clone());
            std::thread::spawn(move || {
                while ticking.load(Ordering::Relaxed) {
                    engine.increment_epoch();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let mut body = Body::new(
            &runtime,
            &program,
            &BodySpec::default(),
            Box::new(Recorder(out.clone())),
        )
        .expect("instantiated, its start function run");
        let exit = body.run();
        ticking.store(false, Ordering::Relaxed);
        ticker.join().expect("ticker");
        assert!(matches!(exit, Exit::Status(0)), "{exit:?}");
        assert_eq!(*out.lock().expect("out"), b"s");
    }

    /// A recursive function (with a poll point at its entry) whose loop
    /// neither stores nor calls: the loop's poll point must see the flag
    /// rise, however the compiler treats a load the entry's load precedes.
    /// `$step` is the first local the loop steps: by one (a counted loop, the
    /// flag read once per period) or by a large constant (the flag read on
    /// every iteration).
    fn loop_after_entry_poll(step: i64) -> String {
        format!(
            r#"(module
            (memory (export "memory") 1)
            (func $f (param $d i32) (result i64) (local $a i64) (local $n i64)
                (if (local.get $d)
                    (then (return (call $f (i32.sub (local.get $d) (i32.const 1))))))
                (local.set $n (i64.const 20000000000))
                (loop $l
                    (local.set $a (i64.add (local.get $a) (i64.const {step})))
                    (local.set $n (i64.sub (local.get $n) (i64.const 1)))
                    (br_if $l (i64.ne (local.get $n) (i64.const 0))))
                (local.get $a))
            (func (export "_start") (drop (call $f (i32.const 3)))))"#
        )
    }

    #[test]
    fn a_loop_without_stores_after_an_entry_poll_is_frozen_at_once() {
        for step in [1, 3_144_643_083_418_229_056] {
            let runtime = Runtime::new(None).expect("engine");
            let program = runtime
                .load(loop_after_entry_poll(step).as_bytes())
                .expect("program");
            let out = Arc::new(StdMutex::new(Vec::new()));
            let (runner, control) = spawn(&program, out);
            std::thread::sleep(Duration::from_millis(50));
            let asked = Instant::now();
            assert!(control.freeze());
            let (exit, _) = runner.join().expect("body thread");
            let took = asked.elapsed();
            assert!(matches!(exit, Exit::Frozen), "step {step}: {exit:?}");
            // The loop runs for many seconds: only a poll point that sees
            // the flag freezes it this soon.
            assert!(
                took < Duration::from_millis(200),
                "step {step}: froze in {took:?}"
            );
        }
    }

    /// Recursion as deep as `wasmtime run` allows (its default 512 KiB of
    /// Wasm stack) also runs instrumented, whose frames are larger, on a
    /// body thread.
    #[test]
    fn recursion_as_deep_as_wasmtime_allows_runs_instrumented() {
        let guest = r#"(module
            (memory (export "memory") 1)
            (func $r (param $d i32) (param $x i64) (result i64) (local $y i64) (local $z i64)
                (local.set $y (i64.mul (local.get $x) (i64.const 31)))
                (local.set $z (i64.add (local.get $x) (i64.const 7)))
                (if (result i64) (i32.eqz (local.get $d))
                    (then (local.get $x))
                    (else (i64.add (i64.xor (call $r (i32.sub (local.get $d) (i32.const 1))
                        (local.get $y)) (local.get $z)) (local.get $y)))))
            (func (export "_start") (drop (call $r (i32.const 15000) (i64.const 1)))))"#;
        // Plain wasmtime, its default stack: it gets to the bottom.
        let plain = wasmtime::Engine::default();
        let module = Module::new(&plain, guest).expect("module");
        let mut store = Store::new(&plain, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .expect("_start");
        start.call(&mut store, ()).expect("wasmtime runs it");
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(guest.as_bytes()).expect("program");
        assert!(program.freezable(), "{:?}", program.not_freezable);
        let exit = std::thread::Builder::new()
            .stack_size(crate::engine::BODY_THREAD_STACK)
            .spawn(move || {
                let runtime = Runtime::new(None).expect("engine");
                let out = Arc::new(StdMutex::new(Vec::new()));
                Body::new(
                    &runtime,
                    &program,
                    &BodySpec::default(),
                    Box::new(Recorder(out)),
                )
                .expect("body")
                .run()
            })
            .expect("body thread")
            .join()
            .expect("body thread");
        assert!(matches!(exit, Exit::Status(0)), "{exit:?}");
    }

    #[test]
    fn a_thread_cpu_clock_advances() {
        let clock = ThreadCpuClock::current().expect("cpu clock");
        let before = clock.read_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(clock.read_ns() > before);
    }

    /// Sleeps 600 ms (a relative clock subscription), then writes "z".
    const SLEEPER: &str = r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            ;; subscription at 0: userdata 7, clock, monotonic, 600 ms
            (i64.store (i32.const 0) (i64.const 7))
            (i32.store8 (i32.const 8) (i32.const 0))
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 600000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
            (i32.store8 (i32.const 200) (i32.const 122))
            (i32.store (i32.const 136) (i32.const 200))
            (i32.store (i32.const 140) (i32.const 1))
            (drop (call $write (i32.const 1) (i32.const 136) (i32.const 1) (i32.const 144)))))"#;

    #[test]
    fn a_body_frozen_in_a_sleep_wakes_at_the_same_deadline_where_it_resumes() {
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(SLEEPER.as_bytes()).expect("program");
        let out = Arc::new(StdMutex::new(Vec::new()));
        let image = frozen_after(&program, &out, Duration::from_millis(300));
        let ghost = crate::ghost::Ghost::decode(&image, Some(&program.hash)).expect("decode");
        let deadline = ghost.times.sleep_until_ns.expect("frozen in its sleep");
        assert!(deadline > ghost.clock_offset_ns, "{ghost:?}");
        let mut body = Body::restore(&runtime, &program, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        let resumed = Instant::now();
        match body.run() {
            Exit::Status(0) => {}
            other => panic!("restored body ended with {other:?}"),
        }
        // About 300 ms were left; sleeping the whole 600 ms again would be wrong.
        let slept = resumed.elapsed();
        assert!(
            slept < Duration::from_millis(550),
            "slept {slept:?} after its restore"
        );
        assert_eq!(*out.lock().expect("out"), b"z");
    }

    #[test]
    fn a_loop_without_calls_is_frozen_within_a_millisecond() {
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(GUEST.as_bytes()).expect("program");
        let (frozen_tx, frozen) = std::sync::mpsc::channel::<Instant>();
        let (go_tx, go) = std::sync::mpsc::channel::<bool>();
        let (control_tx, control) = std::sync::mpsc::channel();
        let runner = std::thread::spawn(move || {
            let runtime = Runtime::new(None).expect("engine");
            let out = Arc::new(StdMutex::new(Vec::new()));
            let mut body = Body::new(
                &runtime,
                &program,
                &BodySpec::default(),
                Box::new(Recorder(out)),
            )
            .expect("body");
            control_tx.send(body.control()).expect("control");
            while let Exit::Frozen = body.run() {
                let image = body.image().expect("image");
                frozen_tx.send(Instant::now()).expect("frozen");
                drop(image);
                if !go.recv().expect("go") {
                    break;
                }
                body.resume().expect("resume");
            }
        });
        let control: Control = control.recv().expect("control");
        // From the request to the whole image in hand (memory, globals and a
        // stack 200 frames deep), at moments spread over the loop.
        let mut took = Vec::new();
        for _ in 0..25 {
            std::thread::sleep(Duration::from_millis(4));
            let asked = Instant::now();
            assert!(control.freeze());
            took.push(frozen.recv().expect("frozen").duration_since(asked));
            go_tx.send(true).expect("go");
        }
        std::thread::sleep(Duration::from_millis(4));
        control.freeze();
        frozen.recv().expect("frozen");
        go_tx.send(false).expect("stop");
        runner.join().expect("body thread");
        took.sort();
        let median = took[took.len() / 2];
        eprintln!(
            "freeze latency: median {median:?}, max {:?}",
            took[took.len() - 1]
        );
        assert!(median < Duration::from_millis(1), "{took:?}");
    }

    #[test]
    fn kill_stops_a_loop_without_calls() {
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(GUEST.as_bytes()).expect("program");
        let out = Arc::new(StdMutex::new(Vec::new()));
        let (runner, control) = spawn(&program, out);
        std::thread::sleep(Duration::from_millis(20));
        control.kill();
        match runner.join().expect("body thread").0 {
            Exit::Failed(e) if e.is::<Killed>() => {}
            other => panic!("not killed: {other:?}"),
        }
    }

    #[test]
    fn a_ghost_of_another_module_is_refused_by_name() {
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(GUEST.as_bytes()).expect("program");
        let other = ModuleHash::of(b"another");
        let image = crate::ghost::Ghost::default().encode(&other);
        let out = Arc::new(StdMutex::new(Vec::new()));
        match Body::restore(&runtime, &program, &image, Box::new(Recorder(out))) {
            Err(BodyError::Ghost(GhostError::WrongModule { .. })) => {}
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("restored a ghost of another module"),
        }
    }

    /// Pages a body never touched keep what its data segments put there,
    /// wherever the body moves (however the engine maps them).
    #[test]
    fn data_segments_never_touched_come_along() {
        let guest = r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 8)
            (data (i32.const 200000) "hello")
            (func (export "_start") (local $n i32)
                (local.set $n (i32.const 200000000))
                (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
                (i32.store (i32.const 0) (i32.const 200000))
                (i32.store (i32.const 4) (i32.const 5))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(guest.as_bytes()).expect("program");
        let out = Arc::new(StdMutex::new(Vec::new()));
        let image = frozen_after(&program, &out, Duration::from_millis(20));
        let mut body = Body::restore(&runtime, &program, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        assert!(matches!(body.run(), Exit::Status(0)));
        assert_eq!(*out.lock().expect("out"), b"hello");
    }

    /// A fresh instance writes its data segments; the restored body's pages
    /// are what its image says, zeros included.
    #[test]
    fn a_restored_memory_holds_the_image_not_the_data_segments() {
        let guest = r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 70000) "XYZ")
            (func (export "_start") (local $n i32)
                ;; the segment's page becomes all zeros, then a long loop
                (i32.store16 (i32.const 70000) (i32.const 0))
                (i32.store8 (i32.const 70002) (i32.const 0))
                (local.set $n (i32.const 200000000))
                (loop $l (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
                ;; print the three bytes, as digits
                (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.load8_u (i32.const 70000))))
                (i32.store8 (i32.const 101) (i32.add (i32.const 48) (i32.load8_u (i32.const 70001))))
                (i32.store8 (i32.const 102) (i32.add (i32.const 48) (i32.load8_u (i32.const 70002))))
                (i32.store (i32.const 0) (i32.const 100))
                (i32.store (i32.const 4) (i32.const 3))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;
        let runtime = Runtime::new(None).expect("engine");
        let program = runtime.load(guest.as_bytes()).expect("program");
        let out = Arc::new(StdMutex::new(Vec::new()));
        let image = frozen_after(&program, &out, Duration::from_millis(20));
        let mut body = Body::restore(&runtime, &program, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        assert!(matches!(body.run(), Exit::Status(0)));
        assert_eq!(*out.lock().expect("out"), b"000");
    }
}
