//! `BodyCtx`, the host state of a running body (wasmtime's store data): its
//! control, its deputy link, arguments, environment, clocks, memory gauge; and
//! `Unwinder`, the instrumentation's exports with which the host unwinds a
//! body at a host call (`start_unwind`) and puts it back (`end_rewind`).
//! Also what stops a guest from inside a host call: `ProcExit`, `Killed`,
//! `Terminated`.
//!
//! Below the shims and the body, which both use it; must not know either.

use crate::clock::BodyClock;
use crate::control::Control;
use crate::ghost::PAGE;
use crate::instrument::{
    self, NORMAL, PTR_GLOBAL, REWIND, REWINDING, STACK_MEMORY, STATE_GLOBAL, UNWINDING,
};
use crate::link::DeputyLink;
use ssi_deputy::Errno;
use ssi_deputy::abi::clockid;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{
    ExternType, Global, Instance, Memory, Module, ResourceLimiter, Store, TypedFunc, Val,
};

/// The guest called `proc_exit` with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("exited with status {0}")]
pub struct ProcExit(pub i32);

/// The process sent itself a signal that ends it (`ssi` API `kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ended by its own signal {0}")]
pub struct Terminated(pub u8);

/// The body was killed by its host (see [`Control::kill`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("killed")]
pub struct Killed;

/// Keeps the size of a body's linear memory where other threads can read it,
/// and bounds it as `wasmtime run -W max-memory-size` does.
pub(crate) struct MemoryGauge {
    pub(crate) bytes: Arc<AtomicU64>,
    /// No memory of the guest's grows past this many bytes: `memory.grow`
    /// returns -1, and a module that starts with more is refused.
    pub(crate) max: Option<u64>,
}

impl ResourceLimiter for MemoryGauge {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The flag and the unwind stack are the instrumentation's, not the
        // guest's.
        if instrument::own_memory(maximum) {
            return Ok(true);
        }
        if self.max.is_some_and(|max| desired as u64 > max) {
            return Ok(false);
        }
        self.bytes.store(desired as u64, Ordering::Relaxed);
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
    pub(crate) gauge: MemoryGauge,
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
    /// Calls it has sent its deputy, readable from other threads.
    pub(crate) calls: Arc<AtomicU64>,
}

/// The instrumentation's exports, with which the host unwinds and rewinds
/// the guest (see [`crate::instrument`]).
#[derive(Clone)]
pub(crate) struct Unwinder {
    pub(crate) state: Global,
    pub(crate) ptr: Global,
    pub(crate) stack: Memory,
    pub(crate) rewind: Option<TypedFunc<(), ()>>,
    /// The rewind copies, by function index.
    pub(crate) rewinds: Option<wasmtime::Table>,
    /// The function index of each import that can unwind, by name.
    pub(crate) markers: Vec<(&'static str, u32)>,
    /// Above zero while a pinned call runs: nothing unwinds then.
    pub(crate) nounwind: Option<Global>,
}

pub(crate) fn get_i32(store: impl wasmtime::AsContextMut, g: &Global) -> i32 {
    g.get(store).i32().unwrap_or(0)
}

pub(crate) fn set_i32(
    store: impl wasmtime::AsContextMut,
    g: &Global,
    v: i32,
) -> wasmtime::Result<()> {
    g.set(store, Val::I32(v))
}

impl Unwinder {
    pub(crate) fn of(
        store: &mut Store<BodyCtx>,
        instance: &Instance,
        module: &Module,
    ) -> Option<Unwinder> {
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
            nounwind: instance.get_global(&mut *store, instrument::NOUNWIND_GLOBAL),
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

    /// Whether a pinned call is under way (see `instrument::NOUNWIND_GLOBAL`).
    pub(crate) fn pinned(&self, store: impl wasmtime::AsContextMut) -> bool {
        self.nounwind
            .as_ref()
            .is_some_and(|g| get_i32(store, g) != 0)
    }

    /// The unwound stack's length.
    pub(crate) fn top(&self, store: impl wasmtime::AsContextMut) -> usize {
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
    pub(crate) fn reserve(
        &self,
        mut store: impl wasmtime::AsContextMut,
        len: usize,
    ) -> wasmtime::Result<()> {
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

/// Whether a call cut short (`EINTR`) for a freeze must be made again
/// instead of unwinding: a pinned call is under way (the freeze waits until
/// it is over). Waits a little first, so that a call cut short again at once
/// is not made in a busy loop.
pub(crate) fn held_for_freeze(c: &mut wasmtime::Caller<'_, BodyCtx>) -> bool {
    if !c.data().control.freezing() {
        return false;
    }
    let Some(u) = c.data().unwinder.clone() else {
        return false;
    };
    if !u.pinned(&mut *c) {
        return false;
    }
    std::thread::sleep(std::time::Duration::from_millis(10));
    true
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
