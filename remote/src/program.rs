//! A program: a module compiled and ready to instantiate, and the second
//! step of its compilation (`Completion`): the whole instrumented module,
//! compiled on a thread of its own while bodies run the runnable part (of
//! the quick tier, on a first launch), and the moves of those bodies into
//! it once it is ready.
//!
//! Must not know: where compiled code is cached, or how engines are
//! configured (`engine.rs`).

use crate::code::{LoadError, ModuleHash};
use crate::rewinds::OnDemand;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use wasmtime::Module;

/// A module ready to instantiate: compiled, instrumented for freezing when it
/// can be.
///
/// A module instrumented now (not found in the cache) is compiled in two
/// steps, so that its first launch does not wait for the larger part: first
/// its runnable part (`instrument::Instrumented::runnable`: the fast copies,
/// which run, freeze and write images), then, on a thread of its own, the
/// whole module with its rewind copies. A body started on the runnable part
/// moves into an instance of the whole module before its first rewind (the
/// resume after a freeze, a handler run at a poll point), waiting for it if
/// it is not compiled yet; bodies started later start on the whole module.
#[derive(Clone)]
pub struct Program {
    /// The hash of the module as given (not as instrumented): what images and
    /// nodes name it by.
    pub hash: ModuleHash,
    pub module: Module,
    /// Why its bodies cannot be frozen, if they cannot.
    pub not_freezable: Option<String>,
    /// The module linked to the shims, once a body of it was made: later
    /// bodies instantiate it at once.
    pub(crate) linked: Arc<OnceLock<wasmtime::InstancePre<crate::ctx::BodyCtx>>>,
    /// While `module` is only the runnable part: the whole module, compiling.
    pub(crate) completion: Option<Arc<Completion>>,
    /// When `module` is the runnable part of a module too large to compile
    /// whole: its rewind copies, made for each stack put back.
    pub(crate) on_demand: Option<Arc<OnDemand>>,
}

impl Program {
    pub fn freezable(&self) -> bool {
        self.not_freezable.is_none()
    }

    /// Whether its rewind copies are compiled (a program compiled in one step,
    /// or whose second step is done).
    pub fn is_complete(&self) -> bool {
        self.completion.as_ref().is_none_or(|c| c.is_done())
    }

    /// The program with its rewind copies, once they are compiled: waits for
    /// the second step of its compilation if it is still under way.
    pub fn complete(&self) -> Result<Program, LoadError> {
        match &self.completion {
            None => Ok(self.clone()),
            Some(c) => c.program(self.hash),
        }
    }

    /// Begins compiling the whole module once `delay` has passed (unless
    /// it has begun): for a node that holds the program of a process whose
    /// body may come to it (its home), as a body run here would.
    pub fn complete_after(&self, delay: std::time::Duration) {
        if let Some(c) = &self.completion {
            c.begin_after(delay);
        }
    }

    /// What a new body instantiates: the whole module if it is compiled, else
    /// the runnable part, with the compilation to move into later.
    pub(crate) fn current(&self) -> Program {
        match &self.completion {
            Some(c) if c.is_done() => self.complete().unwrap_or_else(|_| self.clone()),
            _ => self.clone(),
        }
    }
}

/// The second step of a program's compilation: the whole instrumented
/// module, compiled on a thread of its own once a body needs it: when a
/// body of the runnable part has run for [`WARM_UP`], or at once when one
/// must rewind. (A node that only holds the program for bodies elsewhere,
/// or a command that ends within the warm-up, never compiles it.)
pub(crate) struct Completion {
    name: String,
    make: Mutex<Option<MakeWhole>>,
    done: Mutex<Option<Result<Module, String>>>,
    ready: Condvar,
    linked: Arc<OnceLock<wasmtime::InstancePre<crate::ctx::BodyCtx>>>,
    /// The rewind copies of the module it makes, when they are made on
    /// demand (its program's [`Program::on_demand`]).
    on_demand: Option<Arc<OnDemand>>,
    /// The bodies of a quick first tier (see [`crate::Runtime`]): each is asked to
    /// move into the module made once it is ready, rather than at its first
    /// rewind, as their code is slower.
    tier_up: Option<Mutex<Vec<std::sync::Weak<crate::control::ControlInner>>>>,
}

/// How long a body runs on a program's runnable part before the whole
/// module's compilation begins.
pub const WARM_UP: std::time::Duration = std::time::Duration::from_secs(1);

/// How a program's whole module is made (instrumenting again if need be).
type MakeWhole = Box<dyn FnOnce() -> Result<Module, LoadError> + Send>;

impl Completion {
    /// The second step of `hash`'s compilation, `make` to run when begun.
    pub(crate) fn new(
        hash: &ModuleHash,
        make: impl FnOnce() -> Result<Module, LoadError> + Send + 'static,
    ) -> Arc<Completion> {
        Arc::new(Self::made_by(hash, Box::new(make)))
    }

    fn made_by(hash: &ModuleHash, make: MakeWhole) -> Completion {
        Completion {
            name: format!("compile-{}", &hash.to_hex()[..12]),
            make: Mutex::new(Some(make)),
            done: Mutex::new(None),
            ready: Condvar::new(),
            linked: Default::default(),
            on_demand: None,
            tier_up: None,
        }
    }

    /// As [`Completion::new`], for a program whose runnable part is of the
    /// quick tier: its bodies move into the module made as soon as it is
    /// ready. `on_demand`: the rewind copies of that module, when they are
    /// made on demand.
    pub(crate) fn tier_up(
        hash: &ModuleHash,
        on_demand: Option<Arc<OnDemand>>,
        make: impl FnOnce() -> Result<Module, LoadError> + Send + 'static,
    ) -> Arc<Completion> {
        Arc::new(Completion {
            on_demand,
            tier_up: Some(Mutex::new(Vec::new())),
            ..Self::made_by(hash, Box::new(make))
        })
    }

    /// A body of the quick tier, to move into the module made once it is
    /// ready (at once if it is).
    pub(crate) fn watch(&self, control: &crate::control::Control) {
        let Some(bodies) = &self.tier_up else { return };
        let mut bodies = bodies.lock().unwrap_or_else(|p| p.into_inner());
        bodies.retain(|b| b.strong_count() > 0);
        if self.is_done() {
            drop(bodies);
            control.move_on();
        } else {
            bodies.push(control.downgrade());
        }
    }

    /// Starts the compilation once a body has run for `delay` (unless it
    /// has started by then): a program that ends sooner, as most short
    /// commands do, never pays for it.
    pub(crate) fn begin_after(self: &Arc<Self>, delay: std::time::Duration) {
        if self.is_done()
            || self
                .make
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
        {
            return;
        }
        let later = Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name(format!("{}-timer", self.name))
            .spawn(move || {
                std::thread::sleep(delay);
                if let Some(c) = later.upgrade() {
                    c.begin();
                }
            });
    }

    /// Starts the compilation on a thread of its own, unless it has started.
    pub(crate) fn begin(self: &Arc<Self>) {
        let Some(make) = self.make.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let filled = self.clone();
        let spawned = std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || filled.fill(make().map_err(|e| e.to_string())));
        if let Err(e) = spawned {
            self.fill(Err(format!("cannot start the compilation: {e}")));
        }
    }

    fn fill(&self, module: Result<Module, String>) {
        let made = module.is_ok();
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(module);
        self.ready.notify_all();
        if let (true, Some(bodies)) = (made, &self.tier_up) {
            let bodies = std::mem::take(&mut *bodies.lock().unwrap_or_else(|p| p.into_inner()));
            for control in bodies.iter().filter_map(crate::control::Control::upgrade) {
                control.move_on();
            }
        }
    }

    /// Whether the compilation has begun and not ended.
    pub(crate) fn is_underway(&self) -> bool {
        self.make
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
            && !self.is_done()
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The program of the whole module (`hash` its name), once compiled
    /// (begun now if it has not been).
    pub(crate) fn program(self: &Arc<Self>, hash: ModuleHash) -> Result<Program, LoadError> {
        self.begin();
        Ok(self.program_of(hash, self.wait()?))
    }

    fn program_of(&self, hash: ModuleHash, module: Module) -> Program {
        Program {
            hash,
            module,
            not_freezable: None,
            linked: self.linked.clone(),
            completion: None,
            on_demand: self.on_demand.clone(),
        }
    }

    /// The program of the whole module (`hash` its name) if it is compiled
    /// within `within` (begun now if it has not been), else `None`.
    pub(crate) fn program_within(
        self: &Arc<Self>,
        hash: ModuleHash,
        within: std::time::Duration,
    ) -> Option<Result<Program, LoadError>> {
        self.begin();
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let (done, _) = self
            .ready
            .wait_timeout_while(done, within, |d| d.is_none())
            .unwrap_or_else(|p| p.into_inner());
        let module = done.as_ref()?.clone();
        Some(
            module
                .map_err(LoadError::Invalid)
                .map(|m| self.program_of(hash, m)),
        )
    }

    /// The whole module, once compiled.
    fn wait(&self) -> Result<Module, LoadError> {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(module) = done.as_ref() {
                return module.clone().map_err(LoadError::Invalid);
            }
            done = self.ready.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("hash", &self.hash)
            .field("not_freezable", &self.not_freezable)
            .field("complete", &self.is_complete())
            .field("rewinds_on_demand", &self.on_demand.is_some())
            .finish()
    }
}
