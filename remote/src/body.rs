//! A body: one Wasm instance computing on behalf of a process.

use crate::engine::Runtime;
use crate::link::DeputyLink;
use crate::shims;
use ssi_deputy::Errno;
use ssi_deputy::abi::clockid;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{
    Engine, ExternType, Linker, Memory, Module, ResourceLimiter, Store, UpdateDeadline,
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

/// The process sent itself a signal that ends it (`ssi` API `kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ended by its own signal {0}")]
pub struct Terminated(pub u8);

/// The body was killed by its host (see [`Killer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("killed")]
pub struct Killed;

/// Stops a running body from another thread. On an interruptible runtime (see
/// [`Runtime::interruptible`]) even a loop without calls stops, at its next
/// epoch check (a loop header or a function entry); otherwise the body stops at
/// its next system call. Either way it ends with [`Killed`].
#[derive(Clone)]
pub struct Killer {
    flag: Arc<AtomicBool>,
    engine: Engine,
}

impl Killer {
    pub fn kill(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.engine.increment_epoch();
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
    pub(crate) killed: Arc<AtomicBool>,
    pub(crate) link: Box<dyn DeputyLink>,
    pub(crate) args: Vec<Vec<u8>>,
    pub(crate) env: Vec<Vec<u8>>,
    pub(crate) clock: BodyClock,
    pub(crate) memory: Option<Memory>,
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
    start: wasmtime::TypedFunc<(), ()>,
    killer: Killer,
    memory_bytes: Arc<AtomicU64>,
}

impl Body {
    /// Instantiates `module` for a fresh launch.
    pub fn new(
        runtime: &Runtime,
        module: &Module,
        spec: &BodySpec,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        check_module(module)?;
        let mut linker = Linker::new(runtime.engine());
        shims::add_to_linker(&mut linker).map_err(|e| BodyError::Linker(e.to_string()))?;
        let memory_bytes = Arc::new(AtomicU64::new(0));
        let killer = Killer {
            flag: Arc::new(AtomicBool::new(false)),
            engine: runtime.engine().clone(),
        };
        let ctx = BodyCtx {
            gauge: MemoryGauge(memory_bytes.clone()),
            killed: killer.flag.clone(),
            link,
            args: spec.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: spec.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            clock: BodyClock::starting_at(0),
            memory: None,
        };
        let mut store = Store::new(runtime.engine(), ctx);
        store.limiter(|ctx| &mut ctx.gauge);
        if runtime.is_interruptible() {
            let flag = killer.flag.clone();
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if flag.load(Ordering::SeqCst) {
                    Err(Killed.into())
                } else {
                    Ok(UpdateDeadline::Continue(1))
                }
            });
        }
        let instance = linker
            .instantiate(&mut store, module)
            .map_err(|e| BodyError::Instantiate(format!("{e:#}")))?;
        if let Some(m) = instance.get_memory(&mut store, "memory") {
            memory_bytes.store(m.data_size(&store) as u64, Ordering::Relaxed);
            store.data_mut().memory = Some(m);
        }
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|_| BodyError::BadStart)?;
        Ok(Body {
            store,
            start,
            killer,
            memory_bytes,
        })
    }

    /// A handle that stops this body from another thread.
    pub fn killer(&self) -> Killer {
        self.killer.clone()
    }

    /// The size of the body's linear memory, kept current as it grows.
    pub fn memory_gauge(&self) -> Arc<AtomicU64> {
        self.memory_bytes.clone()
    }

    /// Runs the body to its end. Every call it made has been executed at its
    /// deputy when this returns.
    pub fn run(mut self) -> Exit {
        let exit = match self.start.call(&mut self.store, ()) {
            Ok(()) => Exit::Status(0),
            Err(e) => match (e.downcast_ref::<ProcExit>(), e.downcast_ref::<Terminated>()) {
                (Some(ProcExit(code)), _) => Exit::Status(*code),
                (_, Some(Terminated(n))) => Exit::Signaled(*n),
                _ if e.is::<wasmtime::Trap>() => Exit::Trap(e),
                _ => Exit::Failed(e),
            },
        };
        match self.store.data_mut().link.flush() {
            Ok(()) => exit,
            Err(e) if matches!(exit, Exit::Status(_)) => Exit::Failed(e.into()),
            Err(_) => exit,
        }
    }
}
