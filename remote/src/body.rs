//! A body: one Wasm instance computing on behalf of a process. `Body::new`
//! checks and instantiates a module with its shims, `Body::run` runs it until
//! it ends or is frozen (an `Exit`), `Body::resume` goes on in place after a
//! freeze; `image.rs` writes and restores it, `control.rs` freezes and kills
//! it from other threads.
//!
//! Must not know: process tables, clusters, terminals; it has a `DeputyLink`.

use crate::clock::{BodyClock, CpuMeter};
use crate::code::ModuleHash;
use crate::control::Control;
use crate::ctx::{BodyCtx, Killed, MemoryGauge, ProcExit, Terminated, Unwinder};
use crate::engine::Runtime;
use crate::ghost::GhostError;
use crate::instrument::{FLAG_MEMORY, NORMAL, REWINDING, UNWINDING};
use crate::link::DeputyLink;
use crate::program::{Completion, Program, WARM_UP};
use crate::shims;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::{ExternType, Instance, Linker, Module, Store, TypedFunc, UpdateDeadline};

/// How often a body waiting for its rewind copies looks whether it is
/// asked to freeze or end.
const READY_TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// What a body carries with it from launch: it answers these calls itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodySpec {
    /// The program's arguments, `argv[0]` first.
    pub args: Vec<String>,
    /// The program's environment, as `NAME=VALUE`.
    pub env: Vec<String>,
    /// As `wasmtime run -W unknown-imports-trap`: a function import nothing
    /// provides is linked to one that traps when called, instead of the
    /// launch failing. (Checked at launch only: a body that moves or
    /// restarts was launched already, and is linked that way wherever it goes.)
    pub unknown_imports_trap: bool,
    /// As `wasmtime run -W max-memory-size`: no linear memory of the
    /// program's grows past this many bytes (`memory.grow` returns -1; a
    /// module that starts with more is refused). It goes with the body when
    /// it moves, and into its checkpoints.
    pub max_memory_size: Option<u64>,
}

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

pub(crate) fn kind_name(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

/// Whether an import is provided: a WASI preview1 function or one of the
/// `ssi` host API (or, with `unknown_imports_trap`, any function).
fn provided(module: &str, name: &str, func: bool, unknown_imports_trap: bool) -> bool {
    func && (unknown_imports_trap
        || (module == shims::MODULE && shims::FUNCTIONS.contains(&name))
        || (module == shims::SSI_MODULE && shims::SSI_FUNCTIONS.contains(&name)))
}

/// Checks that a module can run as a body: every import is a WASI preview1
/// function or one of the `ssi` host API (or, with `unknown_imports_trap`,
/// any function), and it has a `_start` of the right type.
pub(crate) fn check_module(module: &Module, unknown_imports_trap: bool) -> Result<(), BodyError> {
    for import in module.imports() {
        let ty = import.ty();
        let func = matches!(ty, ExternType::Func(_));
        if !provided(import.module(), import.name(), func, unknown_imports_trap) {
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

/// Checks what [`Body::new`] checks of a compiled module (every import
/// provided, a `_start` of the right type), on a module's bytes before it is
/// compiled (which takes minutes for the largest), reading only the
/// sections before its code. A module these sections cannot be read from
/// passes: compiling it says what is wrong with it.
pub fn check_bytes(wasm: &[u8], unknown_imports_trap: bool) -> Result<(), BodyError> {
    use wasmparser::{CompositeInnerType, Payload, TypeRef};
    // Per type: its number of parameters and results, if a function type.
    let mut types: Vec<Option<(usize, usize)>> = Vec::new();
    // Per function (imported, then defined): its type.
    let mut funcs: Vec<u32> = Vec::new();
    let mut start = None;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else {
            return Ok(());
        };
        match payload {
            Payload::TypeSection(section) => {
                for group in section.into_iter().flatten() {
                    for sub in group.into_types() {
                        types.push(match &sub.composite_type.inner {
                            CompositeInnerType::Func(f) => {
                                Some((f.params().len(), f.results().len()))
                            }
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(section) => {
                for import in section.into_imports().flatten() {
                    let (kind, func) = match import.ty {
                        TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                            funcs.push(t);
                            ("function", true)
                        }
                        TypeRef::Global(_) => ("global", false),
                        TypeRef::Table(_) => ("table", false),
                        TypeRef::Memory(_) => ("memory", false),
                        TypeRef::Tag(_) => ("tag", false),
                    };
                    if !provided(import.module, import.name, func, unknown_imports_trap) {
                        return Err(BodyError::UnknownImport {
                            module: import.module.to_string(),
                            name: import.name.to_string(),
                            kind,
                        });
                    }
                }
            }
            Payload::FunctionSection(section) => funcs.extend(section.into_iter().flatten()),
            Payload::ExportSection(section) => {
                for export in section.into_iter().flatten() {
                    if export.name == "_start" {
                        start = Some((export.kind, export.index));
                    }
                }
            }
            Payload::CodeSectionStart { .. } | Payload::End(_) => break,
            _ => {}
        }
    }
    match start {
        None => Err(BodyError::NoStart),
        Some((wasmparser::ExternalKind::Func, f)) => {
            let ty = funcs.get(f as usize).and_then(|t| types.get(*t as usize));
            match ty {
                Some(Some((0, 0))) | None => Ok(()),
                Some(_) => Err(BodyError::BadStart),
            }
        }
        Some(_) => Err(BodyError::BadStart),
    }
}

/// A body ready to run: an instance of its module, linked to its deputy.
pub struct Body {
    pub(crate) store: Store<BodyCtx>,
    pub(crate) instance: Instance,
    pub(crate) start: TypedFunc<(), ()>,
    pub(crate) control: Control,
    pub(crate) memory_bytes: Arc<AtomicU64>,
    pub(crate) cpu: CpuMeter,
    pub(crate) hash: ModuleHash,
    /// The next [`Body::run`] rewinds the stack put back.
    pub(crate) rewind_next: bool,
    /// Bytes of each memory as instantiated: what its data segments may
    /// have written.
    pub(crate) fresh: Vec<usize>,
    /// The instance is of the program's runnable part (no rewind copies):
    /// the whole module, compiling, which the body moves into before its
    /// first rewind (see `Program`).
    pub(crate) completion: Option<Arc<Completion>>,
    /// The program's rewind copies are made on demand (see `Program`).
    pub(crate) on_demand: Option<Arc<crate::rewinds::OnDemand>>,
    /// The functions whose rewind copies this instance's table holds (from
    /// the modules of rewind copies linked to it so far), and the rewind
    /// copy of `_start` from it.
    pub(crate) linked_rewinds: (std::collections::BTreeSet<u32>, Option<TypedFunc<(), ()>>),
    /// Compiled with epoch checks (see `Runtime::interruptible`).
    pub(crate) interruptible: bool,
    /// The rewind copies being made for the stack to put back next.
    pub(crate) rewinds_coming: Option<RewindsComing>,
}

/// The answer to come of [`crate::rewinds::OnDemand::for_stack`].
pub(crate) type RewindsComing =
    std::sync::mpsc::Receiver<Result<crate::rewinds::StackRewinds, String>>;

impl Body {
    /// Instantiates `program` for a fresh launch.
    pub fn new(
        runtime: &Runtime,
        program: &Program,
        spec: &BodySpec,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        check_module(&program.module, spec.unknown_imports_trap)?;
        let args = spec.args.iter().map(|a| a.as_bytes().to_vec()).collect();
        let env = spec.env.iter().map(|e| e.as_bytes().to_vec()).collect();
        let program = program.current();
        Self::instantiate(
            runtime.is_interruptible(),
            &program,
            (args, env),
            spec.max_memory_size,
            link,
        )
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
        // It rewinds at once: the whole module, waited for if need be.
        let program = program
            .complete()
            .map_err(|e| BodyError::Instantiate(e.to_string()))?;
        // Its limit, if it has one, comes with its image.
        Self::instantiate(
            runtime.is_interruptible(),
            &program,
            (Vec::new(), Vec::new()),
            None,
            link,
        )
    }

    /// An instance of `program` (the part of it compiled now: see
    /// `Program::current`), with its shims and its link.
    pub(crate) fn instantiate(
        interruptible: bool,
        program: &Program,
        (args, env): (Vec<Vec<u8>>, Vec<Vec<u8>>),
        max_memory: Option<u64>,
        link: Box<dyn DeputyLink>,
    ) -> Result<Self, BodyError> {
        let module = &program.module;
        let engine = module.engine();
        let linked = match program.linked.get() {
            Some(pre) => pre.clone(),
            None => {
                // What the launch took (see `BodySpec::unknown_imports_trap`).
                check_module(module, true)?;
                let mut linker = Linker::new(engine);
                shims::add_to_linker(&mut linker).map_err(|e| BodyError::Linker(e.to_string()))?;
                linker
                    .define_unknown_imports_as_traps(module)
                    .map_err(|e| BodyError::Linker(e.to_string()))?;
                let pre = linker
                    .instantiate_pre(module)
                    .map_err(|e| BodyError::Instantiate(format!("{e:#}")))?;
                program.linked.get_or_init(|| pre).clone()
            }
        };
        let memory_bytes = Arc::new(AtomicU64::new(0));
        let placeholder = Control::new(engine, None);
        let ctx = BodyCtx {
            gauge: MemoryGauge {
                bytes: memory_bytes.clone(),
                max: max_memory,
            },
            control: placeholder,
            unwinder: None,
            instance: None,
            link,
            args,
            env,
            clock: BodyClock::starting_at(0),
            memory: None,
            in_handler: false,
            sleep_until: None,
            calls: Arc::new(AtomicU64::new(0)),
        };
        let mut store = Store::new(engine, ctx);
        store.limiter(|ctx| &mut ctx.gauge);
        if interruptible {
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
        if !control.freezable() && interruptible {
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
        let completion = program.completion.clone().inspect(|c| {
            c.begin_after(WARM_UP);
            c.watch(&control);
        });
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
            completion,
            on_demand: program.on_demand.clone(),
            linked_rewinds: Default::default(),
            rewinds_coming: None,
            interruptible,
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

    /// How many calls the body has sent its deputy, readable from other
    /// threads (a balancer keeps a body that calls home often near it).
    pub fn call_counter(&self) -> Arc<AtomicU64> {
        self.store.data().calls.clone()
    }

    /// The body's CPU time, readable from other threads.
    pub fn cpu_meter(&self) -> CpuMeter {
        self.cpu
    }

    /// After [`Exit::Frozen`]: the body goes on where it was, in the same
    /// instance, at the next [`Body::run`].
    pub fn resume(&mut self) -> Result<(), BodyError> {
        self.control.clear_freeze();
        // The unwound stack is still in its memory, the top where it was.
        self.start_rewind()
    }

    pub(crate) fn unwinder(&self) -> Result<Unwinder, BodyError> {
        self.store
            .data()
            .unwinder
            .clone()
            .ok_or_else(|| BodyError::NotFreezable("no unwinder exports".into()))
    }

    /// The next `run` puts the stack back where the body was frozen.
    pub(crate) fn start_rewind(&mut self) -> Result<(), BodyError> {
        let u = self.unwinder()?;
        // (The runnable part of a program has none: `run` moves the body
        // into the whole module first.)
        if u.rewind.is_none() && self.completion.is_none() && self.on_demand.is_none() {
            return Err(BodyError::NotFreezable(
                "`_start` has no rewind copy".into(),
            ));
        }
        u.set_state(&mut self.store, REWINDING)
            .map_err(|e| BodyError::Instantiate(format!("cannot start the rewind: {e:#}")))?;
        self.rewind_next = true;
        // Copies made on demand are begun now: a body restored by a move
        // waits for its source to be let go before it runs. (Not for an
        // instance the body leaves before it rewinds.)
        if !self.moves_before_rewind() {
            self.rewinds_coming = self.make_rewinds()?;
        }
        Ok(())
    }

    /// Whether the body moves into its program's second step before it
    /// rewinds: it is on a runnable part without rewind copies, or on the
    /// quick tier once the second step is compiled or the body asked to
    /// move. (A body of the quick tier whose rewind copies are made on
    /// demand rewinds on copies compiled by the quick tier meanwhile.)
    fn moves_before_rewind(&self) -> bool {
        self.completion
            .as_ref()
            .is_some_and(|c| self.on_demand.is_none() || c.is_done() || self.control.moving())
    }

    /// Begins making the rewind copies of the functions on the unwound
    /// stack that this instance lacks, when they are made on demand: the
    /// answer comes on the channel.
    fn make_rewinds(&mut self) -> Result<Option<RewindsComing>, BodyError> {
        let Some(on_demand) = self.on_demand.clone() else {
            return Ok(None);
        };
        let u = self.unwinder()?;
        let top = crate::ctx::get_i32(&mut self.store, &u.ptr) as usize;
        let stack = u
            .stack
            .data(&self.store)
            .get(..top)
            .ok_or_else(|| BodyError::Instantiate("the unwind stack's top is past its end".into()))?
            .to_vec();
        let linked = self.linked_rewinds.0.clone();
        Ok(Some(on_demand.for_stack(
            self.store.engine(),
            stack,
            linked,
        )))
    }

    /// Runs the body until it ends or freezes. Every call it made has been
    /// executed at its deputy when this returns.
    pub fn run(&mut self) -> Exit {
        let exit = loop {
            if self.rewind_next {
                match self.complete() {
                    Ok(true) => {}
                    Ok(false) => break self.stopped_before_rewind(),
                    Err(e) => break Exit::Failed(wasmtime::Error::new(e)),
                }
            }
            // The rewind copy of `_start`: linked on demand, or the module's.
            let rewind = if self.rewind_next {
                self.linked_rewinds.1.clone().or_else(|| {
                    let unwinder = self.store.data().unwinder.as_ref();
                    unwinder.and_then(|u| u.rewind.clone())
                })
            } else {
                None
            };
            let result = match rewind {
                Some(rewind) => {
                    self.rewind_next = false;
                    rewind.call(&mut self.store, ())
                }
                None => self.start.call(&mut self.store, ()),
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
    pub(crate) fn after_unwind(&mut self) -> Option<Exit> {
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

    /// Before a rewind, the rewind copies it needs, waited for if they are
    /// still compiling; false if the body is asked to freeze or end
    /// meanwhile (see [`Body::stopped_before_rewind`]).
    ///
    /// On the runnable part of a program (which has no rewind copies), the
    /// unwound body moves into a fresh instance of the whole module, through
    /// its own image, keeping what other threads hold of it (its control,
    /// gauges and link). On a program whose rewind copies are made on
    /// demand, the module of the copies of the functions on its stack is
    /// linked to its instance (unless the copies linked before cover them).
    pub(crate) fn complete(&mut self) -> Result<bool, BodyError> {
        if self.moves_before_rewind() && !self.move_into_completion()? {
            return Ok(false);
        }
        if self.on_demand.is_some() {
            return self.link_rewinds();
        }
        Ok(true)
    }

    /// On the runnable part of a program: into an instance of the module
    /// its second step makes (see [`Body::complete`]).
    fn move_into_completion(&mut self) -> Result<bool, BodyError> {
        let Some(completion) = self.completion.clone() else {
            return Ok(true);
        };
        let Some(program) = self.unless_stopped(|tick| completion.program_within(self.hash, tick))
        else {
            return Ok(false);
        };
        self.completion = None;
        let program = program.map_err(|e| BodyError::Instantiate(e.to_string()))?;
        let (image, _) = self.write_image(Vec::new(), false)?;
        let link = std::mem::replace(
            &mut self.store.data_mut().link,
            Box::new(crate::link::NoLink),
        );
        let max = self.store.data().gauge.max;
        let mut next = Self::instantiate(
            self.interruptible,
            &program,
            (Vec::new(), Vec::new()),
            max,
            link,
        )?;
        // The gauges others read are this body's (the fill keeps them current).
        let ctx = next.store.data_mut();
        ctx.gauge = MemoryGauge {
            bytes: self.memory_bytes.clone(),
            max,
        };
        ctx.calls = self.store.data().calls.clone();
        next.memory_bytes = self.memory_bytes.clone();
        next.fill(crate::ghost::checked(&image, Some(&self.hash))?)?;
        let flag = next.control.take_flag();
        self.control.adopt_flag(flag);
        next.control = self.control.clone();
        next.store.data_mut().control = self.control.clone();
        next.cpu = self.cpu;
        *self = next;
        self.control.moved();
        Ok(true)
    }

    fn link_rewinds(&mut self) -> Result<bool, BodyError> {
        let answer = match self.rewinds_coming.take() {
            Some(coming) => coming,
            None => match self.make_rewinds()? {
                Some(coming) => coming,
                None => return Ok(true),
            },
        };
        let Some(answer) = self.unless_stopped(|tick| match answer.recv_timeout(tick) {
            Ok(made) => Some(made),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(Err(
                "the rewind copies' maker ended without an answer".into(),
            )),
        }) else {
            // (Asked for again at the next rewind: kept by then.)
            return Ok(false);
        };
        let made = answer
            .map_err(|e| BodyError::Instantiate(format!("cannot put the stack back: {e}")))?;
        for m in &made.modules {
            crate::rewinds::link_rewinds(&mut self.store, &self.instance, &m.module).map_err(
                |e| BodyError::Instantiate(format!("cannot link the rewind copies: {e:#}")),
            )?;
            self.linked_rewinds.0.extend(m.functions.iter().copied());
        }
        if self.linked_rewinds.1.is_none() {
            let start = crate::rewinds::rewind_start(&mut self.store, &self.instance, made.start)
                .map_err(|e| BodyError::Instantiate(format!("{e:#}")))?;
            self.linked_rewinds.1 = Some(start);
        }
        Ok(true)
    }

    /// `ready`'s answer (it waits at most the tick it is given), tried
    /// again until there is one, unless the body is asked to freeze or end
    /// before or meanwhile: then `None`. Once it has had to wait, the body
    /// is seen waiting for its code ([`Control::waiting_for_code`]) until
    /// this returns.
    fn unless_stopped<T>(
        &self,
        mut ready: impl FnMut(std::time::Duration) -> Option<T>,
    ) -> Option<T> {
        let mut waited = false;
        let answer = loop {
            if self.control.freezing() || self.control.killing() {
                break None;
            }
            if let Some(answer) = ready(READY_TICK) {
                break Some(answer);
            }
            if !waited {
                self.control.set_waiting(true);
                waited = true;
            }
        };
        if waited {
            self.control.set_waiting(false);
        }
        answer
    }

    /// Asked to freeze or end while waiting for its rewind copies: the body
    /// has not rewound, so it is still exactly as it unwound; it is frozen
    /// as it is (the next [`Body::resume`] or restore rewinds), or it ends.
    fn stopped_before_rewind(&mut self) -> Exit {
        if self.control.killing() {
            return Exit::Failed(Killed.into());
        }
        self.rewind_next = false;
        let normal = self
            .unwinder()
            .map_err(wasmtime::Error::new)
            .and_then(|u| u.set_state(&mut self.store, NORMAL));
        match normal {
            Ok(()) => Exit::Frozen,
            Err(e) => Exit::Failed(e),
        }
    }

    /// Whether `_start` returned because the body unwound; then the unwind is
    /// finished.
    pub(crate) fn unwound(&mut self) -> wasmtime::Result<bool> {
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
    use crate::clock::*;
    use crate::control::*;
    use crate::ctx::*;
    use ssi_deputy::Errno;
    use ssi_deputy::{Reply, Syscall, SyscallResult};
    use std::sync::Mutex as StdMutex;
    use std::time::{Duration, Instant};
    use wasmtime::Engine;

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
        ;; (an immutable global is the module's, not part of an image)
        (global $base i32 (i32.const 1024))
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
        // A behaviour, not a speed (`ssi-ghostbench` measures that): the loop
        // never ends by itself, so only its poll points can stop it.
        assert!(took < Duration::from_secs(5), "froze in {took:?}");
        assert!(out.lock().expect("out").is_empty(), "froze before printing");
        let ghost = crate::ghost::Ghost::decode(&image, Some(&program.hash)).expect("decode");
        assert!(!ghost.stack.is_empty());
        // It spun: its CPU time goes with it.
        assert!(ghost.times.cpu_ns > 0, "{:?}", ghost.times);
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
                took < Duration::from_secs(2),
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
        // About 300 ms were left: sleeping the whole 600 ms again would be
        // wrong, and so would not sleeping at all.
        let slept = resumed.elapsed();
        assert!(
            slept < Duration::from_millis(550) && slept > Duration::from_millis(150),
            "slept {slept:?} after its restore"
        );
        assert_eq!(*out.lock().expect("out"), b"z");
    }

    #[test]
    fn a_loop_without_calls_is_frozen_at_any_moment_again_and_again() {
        let runtime = Runtime::new(None).expect("engine");
        // A loop that never ends (its counter still steps, so that its poll
        // point is the same): however slowly the freezes come on a loaded
        // machine, the body is still in it at the last one.
        let guest = GUEST.replace("(i32.gt_s (local.get $n) (i32.const 0))", "(i32.const 1)");
        assert_ne!(guest, GUEST);
        let program = runtime.load(guest.as_bytes()).expect("program");
        let (frozen_tx, frozen) = std::sync::mpsc::channel::<Result<Instant, String>>();
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
            loop {
                match body.run() {
                    Exit::Frozen => {}
                    exit => {
                        let _ = frozen_tx.send(Err(format!("ended with {exit:?}")));
                        return;
                    }
                }
                let image = body.image().expect("image");
                frozen_tx.send(Ok(Instant::now())).expect("frozen");
                drop(image);
                if !go.recv().expect("go") {
                    break;
                }
                body.resume().expect("resume");
            }
        });
        let control: Control = control.recv().expect("control");
        // From the request to the whole image in hand (memory, globals and a
        // stack 200 frames deep), at moments spread over the loop; how soon is
        // `ssi-ghostbench`'s figure, this checks that each one comes.
        let mut took = Vec::new();
        for _ in 0..25 {
            std::thread::sleep(Duration::from_millis(4));
            let asked = Instant::now();
            assert!(control.freeze());
            let at = frozen
                .recv_timeout(Duration::from_secs(5))
                .expect("frozen within 5 s")
                .expect("frozen");
            took.push(at.duration_since(asked));
            go_tx.send(true).expect("go");
        }
        std::thread::sleep(Duration::from_millis(4));
        control.freeze();
        frozen
            .recv_timeout(Duration::from_secs(5))
            .expect("frozen within 5 s")
            .expect("frozen");
        go_tx.send(false).expect("stop");
        runner.join().expect("body thread");
        took.sort();
        let median = took[took.len() / 2];
        eprintln!(
            "freeze latency: median {median:?}, max {:?}",
            took[took.len() - 1]
        );
        assert_eq!(took.len(), 25);
    }

    /// A program whose whole module comes `after` its runnable part.
    fn late_program(runtime: &Runtime, after: Duration) -> Program {
        let wasm = wat::parse_str(GUEST).expect("wat");
        let instrumented = crate::instrument::instrument(&wasm).expect("instrumented");
        let engine = runtime.engine().clone();
        let runnable = Module::from_binary(&engine, &instrumented.runnable).expect("runnable");
        let hash = ModuleHash::of(&wasm);
        let completion = Completion::new(&hash, move || {
            std::thread::sleep(after);
            Module::from_binary(&engine, &instrumented.wasm)
                .map_err(|e| crate::code::LoadError::Invalid(e.to_string()))
        });
        Program {
            hash,
            module: runnable,
            not_freezable: None,
            linked: Default::default(),
            completion: Some(completion),
            on_demand: None,
        }
    }

    /// A fresh body of [`late_program`] (its whole module compiled `after`
    /// once begun), with what it writes.
    fn late_body(after: Duration) -> (Program, Body, Arc<StdMutex<Vec<u8>>>) {
        let runtime = Runtime::new(None).expect("engine");
        let program = late_program(&runtime, after);
        let (body, out) = fresh_body(&runtime, &program);
        (program, body, out)
    }

    /// A fresh body of `program`, with what it writes.
    fn fresh_body(runtime: &Runtime, program: &Program) -> (Body, Arc<StdMutex<Vec<u8>>>) {
        let out = Arc::new(StdMutex::new(Vec::new()));
        let body = Body::new(
            runtime,
            program,
            &BodySpec::default(),
            Box::new(Recorder(out.clone())),
        )
        .expect("body");
        (body, out)
    }

    /// Runs `body` to its end (status 0), going on after every freeze.
    fn run_to_the_end(body: &mut Body) {
        loop {
            match body.run() {
                Exit::Frozen => body.resume().expect("resume"),
                Exit::Status(0) => break,
                exit => panic!("ended with {exit:?}"),
            }
        }
    }

    /// Runs `body`, asked to freeze `after`, until it is frozen.
    fn run_until_frozen(body: &mut Body, after: Duration) {
        let control = body.control();
        let freezer = std::thread::spawn(move || {
            std::thread::sleep(after);
            assert!(control.freeze());
        });
        assert!(matches!(body.run(), Exit::Frozen));
        freezer.join().expect("freezer");
    }

    /// A body whose rewind copies are made on demand freezes, goes on in
    /// place (again and again, each stack put back by the copies of its
    /// functions), and is restored from its image elsewhere.
    #[test]
    fn a_body_whose_rewind_copies_are_made_on_demand_freezes_goes_on_and_moves() {
        let runtime = Runtime::new(None)
            .expect("engine")
            .with_rewinds_on_demand()
            .without_quick_tier();
        let program = runtime.load(GUEST.as_bytes()).expect("program");
        assert!(program.on_demand.is_some(), "{program:?}");
        assert!(
            program
                .module
                .get_export(crate::instrument::REWIND)
                .is_none()
        );
        let (mut body, out) = fresh_body(&runtime, &program);
        let control = body.control();
        let freezer = std::thread::spawn(move || {
            let mut froze = 0;
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(3));
                froze += usize::from(control.freeze());
            }
            froze
        });
        let mut frozen = 0;
        let image = loop {
            match body.run() {
                Exit::Frozen if frozen < 5 => {
                    frozen += 1;
                    body.resume().expect("resume");
                }
                Exit::Frozen => break body.image().expect("image"),
                Exit::Status(0) => panic!("ended before it froze six times"),
                exit => panic!("ended with {exit:?}"),
            }
        };
        freezer.join().expect("freezer");
        assert!(
            body.linked_rewinds.1.is_some(),
            "rewound by copies made on demand"
        );
        // Restored on another node's runtime: its copies made there.
        let elsewhere = Runtime::new(None).expect("engine").with_rewinds_on_demand();
        let there = elsewhere.load(GUEST.as_bytes()).expect("program");
        let mut body = Body::restore(&elsewhere, &there, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        // Asked to freeze before its copies are made: frozen as it came,
        // without them, and its image goes on in a third place.
        assert!(body.control().freeze());
        assert!(matches!(body.run(), Exit::Frozen));
        assert!(body.linked_rewinds.1.is_none(), "no copies were linked");
        let image = body.image().expect("image again");
        let third = Runtime::new(None).expect("engine").with_rewinds_on_demand();
        let there = third.load(GUEST.as_bytes()).expect("program");
        let mut body = Body::restore(&third, &there, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        assert!(matches!(body.run(), Exit::Status(0)));
        assert_eq!(*out.lock().expect("out"), expected());
    }

    /// A body moved to another node takes the rewind copies of its stack
    /// that were long to make with it: the node it goes to keeps them and
    /// puts the stack back with them, and an image held whole (a file)
    /// that carries any is refused.
    #[test]
    fn a_moved_body_takes_its_costly_rewind_copies_with_it() {
        let runtime = Runtime::new(None)
            .expect("engine")
            .with_rewinds_on_demand()
            .without_quick_tier();
        let program = runtime.load(GUEST.as_bytes()).expect("program");
        let (mut body, out) = fresh_body(&runtime, &program);
        let control = body.control();
        let freezer = std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(3));
                control.freeze();
            }
        });
        // Frozen and resumed in place until copies were made here.
        let mut frozen = 0;
        loop {
            match body.run() {
                Exit::Frozen if frozen < 3 || body.linked_rewinds.1.is_none() => {
                    frozen += 1;
                    body.resume().expect("resume");
                }
                Exit::Frozen => break,
                exit => panic!("ended with {exit:?} before it froze with copies made"),
            }
        }
        freezer.join().expect("freezer");
        let on_demand = program.on_demand.clone().expect("copies made on demand");
        // Quick to make (a small guest): not worth sending.
        let (plain, _) = body.write_move_image(Vec::new()).expect("image");
        assert!(!crate::ghost::carries_code(&plain));
        on_demand.as_if_long_to_make();
        let (image, _) = body.write_move_image(Vec::new()).expect("image");
        assert!(crate::ghost::carries_code(&image));
        // Held whole, as a checkpoint file is: refused by name.
        let elsewhere = Runtime::new(None)
            .expect("engine")
            .with_rewinds_on_demand()
            .without_quick_tier();
        let there = elsewhere.load(GUEST.as_bytes()).expect("program");
        let refused = Body::restore(&elsewhere, &there, &image, Box::new(Recorder(out.clone())))
            .err()
            .expect("an image held whole with compiled code");
        assert!(refused.to_string().contains("rewind code"), "{refused}");
        // From a move's connection: the copies are kept there, and the
        // stack goes back with them.
        let mut moved =
            Body::vessel(&elsewhere, &there, Box::new(Recorder(out.clone()))).expect("vessel");
        let reader = crate::ghost::ImageReader::new(&image[..], Some(&there.hash))
            .expect("header")
            .accepting_code();
        let there_demand = there.on_demand.clone().expect("copies made on demand");
        assert_eq!(there_demand.modules_kept(elsewhere.engine()), 0);
        moved.fill(reader).expect("restored");
        let received = there_demand.modules_kept(elsewhere.engine());
        assert!(received > 0, "no copies received");
        assert!(matches!(moved.run(), Exit::Status(0)));
        assert_eq!(*out.lock().expect("out"), expected());
        assert!(moved.linked_rewinds.1.is_some(), "rewound");
    }

    /// A first launch runs on the quick tier's code and moves into
    /// Cranelift's as soon as it is compiled, without a freeze, and ends
    /// as it would have: into the whole module, and into the runnable part
    /// whose rewind copies are made on demand.
    #[test]
    fn a_body_of_the_quick_tier_moves_into_the_second_step_once_it_is_compiled() {
        // Long enough to be under way when the second step is ready.
        let guest = GUEST.replace("300000000", "1500000000");
        for on_demand in [false, true] {
            let runtime = Runtime::new(None).expect("engine");
            if runtime.quick_engine().is_none() {
                return;
            }
            let runtime = if on_demand {
                runtime.with_rewinds_on_demand()
            } else {
                runtime
            };
            let program = runtime.load(guest.as_bytes()).expect("program");
            assert!(
                !Engine::same(program.module.engine(), runtime.engine()),
                "compiled by the quick tier"
            );
            let (mut body, out) = fresh_body(&runtime, &program);
            let completion = body.completion.clone().expect("a second step");
            let control = body.control();
            let started = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                completion.begin();
                // It moves: then nothing is asked of it any more.
                let deadline = Instant::now() + Duration::from_secs(20);
                while !completion.is_done() || control.moving() {
                    assert!(Instant::now() < deadline, "did not move within 20 s");
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            assert!(matches!(body.run(), Exit::Status(0)), "ran through");
            started.join().expect("watcher");
            assert!(body.completion.is_none(), "moved into the second step");
            assert!(Engine::same(body.store.engine(), runtime.engine()));
            assert_eq!(body.on_demand.is_some(), on_demand);
            assert_eq!(body.linked_rewinds.1.is_some(), on_demand);
            assert_eq!(*out.lock().expect("out"), expected());
        }
    }

    /// A body of the quick tier whose rewind copies are made on demand
    /// goes on after a freeze on copies the quick tier compiles, without
    /// waiting for the optimised code.
    #[test]
    fn a_body_of_the_quick_tier_rewinds_on_its_own_copies_meanwhile() {
        let runtime = Runtime::new(None).expect("engine").with_rewinds_on_demand();
        if runtime.quick_engine().is_none() {
            return;
        }
        let guest = GUEST.replace("300000000", "1500000000");
        let program = runtime.load(guest.as_bytes()).expect("program");
        let (mut body, out) = fresh_body(&runtime, &program);
        run_until_frozen(&mut body, Duration::from_millis(20));
        body.resume().expect("resume");
        // (Past the compile of its copies, well before the warm-up's end.)
        run_until_frozen(&mut body, Duration::from_millis(300));
        let completion = body.completion.clone().expect("on the quick tier");
        assert!(
            !completion.is_done(),
            "the optimised code is not compiled yet"
        );
        assert!(!Engine::same(body.store.engine(), runtime.engine()));
        assert!(body.linked_rewinds.1.is_some(), "rewound on its own copies");
        body.resume().expect("resume");
        run_to_the_end(&mut body);
        assert_eq!(*out.lock().expect("out"), expected());
    }

    /// A body waiting for its rewind copies to compile (here the whole
    /// module, which takes seconds) is frozen at once when asked, as it
    /// unwound, and goes on later.
    #[test]
    fn a_body_waiting_for_its_rewind_copies_freezes_at_once() {
        let (program, mut body, out) = late_body(Duration::from_secs(3));
        run_until_frozen(&mut body, Duration::from_millis(20));
        body.resume().expect("resume");
        run_until_frozen(&mut body, Duration::from_millis(50));
        assert!(
            !program.is_complete() && body.completion.is_some(),
            "frozen while the whole module compiled"
        );
        body.resume().expect("resume");
        run_to_the_end(&mut body);
        assert!(body.completion.is_none(), "moved into the whole module");
        assert_eq!(*out.lock().expect("out"), expected());
    }

    /// A body that waits for its code (here its whole module, compiled
    /// late, before it rewinds) says so to other threads (`ps` shows it
    /// resuming) until it has it and goes on.
    #[test]
    fn a_body_waiting_for_its_code_says_so_until_it_goes_on() {
        let (_program, mut body, out) = late_body(Duration::from_millis(1500));
        run_until_frozen(&mut body, Duration::from_millis(20));
        assert!(!body.control().waiting_for_code(), "it ran, then froze");
        body.resume().expect("resume");
        let control = body.control();
        let watcher = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            let mut seen = false;
            while std::time::Instant::now() < deadline {
                match (seen, control.waiting_for_code()) {
                    (false, true) => seen = true,
                    (true, false) => return Ok(()),
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            Err(if seen {
                "it was still waiting after 20 s"
            } else {
                "it was never seen waiting"
            })
        });
        run_to_the_end(&mut body);
        assert_eq!(watcher.join().expect("watcher"), Ok(()));
        assert!(!body.control().waiting_for_code());
        assert_eq!(*out.lock().expect("out"), expected());
    }

    #[test]
    fn a_body_on_the_runnable_part_freezes_and_goes_on_in_the_whole_module_once_compiled() {
        let (program, mut body, out) = late_body(Duration::from_millis(300));
        assert!(body.completion.is_some(), "started on the runnable part");
        run_until_frozen(&mut body, Duration::from_millis(20));
        // Its image is written from the runnable part as from the whole one.
        let image = body.image().expect("image");
        assert!(!image.is_empty());
        // Goes on in place: it waits for the whole module, moves into it,
        // and ends as a body that never froze does.
        body.resume().expect("resume");
        let (control, late) = (body.control(), program.clone());
        let again = std::thread::spawn(move || {
            while !late.is_complete() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(30));
            // The control held from before reaches the new instance.
            control.freeze()
        });
        let mut frozen = 0;
        loop {
            match body.run() {
                Exit::Frozen => {
                    frozen += 1;
                    body.resume().expect("resume");
                }
                Exit::Status(0) => break,
                exit => panic!("ended with {exit:?}"),
            }
        }
        assert!(again.join().expect("freezer"));
        assert!(body.completion.is_none(), "moved into the whole module");
        assert!(frozen >= 1, "the held control froze the new instance");
        assert_eq!(*out.lock().expect("out"), expected());
    }

    #[test]
    fn a_ghost_of_the_runnable_part_is_restored_into_the_whole_module() {
        let runtime = Runtime::new(None).expect("engine");
        let program = late_program(&runtime, Duration::from_millis(100));
        let out = Arc::new(StdMutex::new(Vec::new()));
        let image = frozen_after(&program, &out, Duration::from_millis(20));
        // A vessel waits for the whole module: it rewinds at once.
        let mut body = Body::restore(&runtime, &program, &image, Box::new(Recorder(out.clone())))
            .expect("restore");
        assert!(body.completion.is_none());
        assert!(matches!(body.run(), Exit::Status(0)));
        assert_eq!(*out.lock().expect("out"), expected());
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
