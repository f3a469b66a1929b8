//! Rewind copies made on demand, on the engine's side: a program's kept
//! modules of rewind copies (`OnDemand`, made by
//! [`crate::instrument::rewind_module`], each function's copy once per
//! node) and their linking to a body's instance (`link_rewinds`).

use crate::code::compile;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::{Engine, Module};

/// The rewind copies of a program made on demand (see
/// [`crate::instrument::rewind_module`]): modules of copies, each made for
/// the functions a stack needed that no module had yet, compiled once and
/// kept, so that each function's copy is compiled once on a node.
pub(crate) struct OnDemand {
    wasm: bytes::Bytes,
    prepared: OnceLock<Result<Arc<crate::instrument::Prepared>, String>>,
    /// Kept for each engine that compiled copies (a program's quick tier
    /// and its optimised code link different modules).
    kept: Mutex<Vec<(Engine, Kept)>>,
    /// Held while modules are made: a second stack that needs functions
    /// being compiled waits for them rather than compiling them again.
    making: Mutex<()>,
}

/// The modules of rewind copies a program keeps.
#[derive(Default)]
struct Kept {
    modules: Vec<RewindModule>,
    /// Each function's module, by its index in `modules`.
    of: HashMap<u32, usize>,
}

/// A compiled module of rewind copies, and the functions it holds.
#[derive(Clone)]
pub(crate) struct RewindModule {
    pub(crate) functions: Arc<[u32]>,
    pub(crate) module: Module,
    /// How long its compilation took where it was made (ms).
    pub(crate) cost_ms: u64,
}

/// The least compilation time (ms) of a module of rewind copies that a
/// body moved to another node takes with it (see
/// [`OnDemand::to_send`]): below it, compiling it there again is cheaper
/// than sending it.
const SEND_COST_MS: u64 = 200;

/// How many modules of rewind copies a program keeps compiled: past it,
/// they are all made again as stacks need them.
const REWIND_MODULES_KEPT: usize = 512;

/// What puts a stack back (see [`OnDemand::for_stack`]).
pub(crate) struct StackRewinds {
    /// The modules of the copies the instance lacks.
    pub(crate) modules: Vec<RewindModule>,
    /// The function exported as `_start`.
    pub(crate) start: u32,
}

impl OnDemand {
    /// The rewind copies of `wasm`, with what they need of it if it is
    /// already worked out (else worked out at the first rewind).
    pub(crate) fn new(
        wasm: bytes::Bytes,
        prepared: Option<crate::instrument::Prepared>,
    ) -> Arc<OnDemand> {
        let worked_out = OnceLock::new();
        if let Some(p) = prepared {
            let _ = worked_out.set(Ok(Arc::new(p)));
        }
        Arc::new(OnDemand {
            wasm,
            prepared: worked_out,
            kept: Default::default(),
            making: Mutex::new(()),
        })
    }

    fn prepared(&self) -> Result<Arc<crate::instrument::Prepared>, String> {
        self.prepared
            .get_or_init(|| {
                let prepared = crate::instrument::prepare(&self.wasm)
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                crate::code::release_freed_memory();
                prepared
            })
            .clone()
    }

    /// What puts `stack` back in an instance whose table holds the rewind
    /// copies of `linked`: the modules of the copies it lacks, made now if
    /// no module has them. Worked out on a thread of its own (a large
    /// module's copies take seconds to compile): the answer comes on the
    /// channel returned, and a caller that stops waiting (a body asked to
    /// freeze meanwhile) leaves what was made kept for the next rewind.
    pub(crate) fn for_stack(
        self: &Arc<Self>,
        engine: &Engine,
        stack: Vec<u8>,
        linked: BTreeSet<u32>,
    ) -> std::sync::mpsc::Receiver<Result<StackRewinds, String>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (on_demand, engine) = (self.clone(), engine.clone());
        let sent = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("rewind-copies".into())
            .spawn(move || {
                let _ = sent.send(on_demand.stack_rewinds(&engine, &stack, &linked));
            });
        if let Err(e) = spawned {
            let _ = tx.send(Err(format!("cannot start making the rewind copies: {e}")));
        }
        rx
    }

    fn stack_rewinds(
        &self,
        engine: &Engine,
        stack: &[u8],
        linked: &BTreeSet<u32>,
    ) -> Result<StackRewinds, String> {
        let p = self.prepared()?;
        let start = p.start().ok_or("the module exports no `_start`")?;
        let needed: Vec<u32> = crate::instrument::stack_functions(&self.wasm, &p, stack)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|f| !linked.contains(f))
            .collect();
        if needed.is_empty() {
            return Ok(StackRewinds {
                modules: Vec::new(),
                start,
            });
        }
        let cover = |needed: &[u32]| {
            self.with_kept(engine, |kept| {
                let mut found = BTreeSet::new();
                let mut missing = Vec::new();
                for f in needed {
                    match kept.of.get(f) {
                        Some(m) => {
                            found.insert(*m);
                        }
                        None => missing.push(*f),
                    }
                }
                let found: Vec<RewindModule> =
                    found.into_iter().map(|m| kept.modules[m].clone()).collect();
                (found, missing)
            })
        };
        let (mut found, missing) = cover(&needed);
        if missing.is_empty() {
            return Ok(StackRewinds {
                modules: found,
                start,
            });
        }
        // One module made at a time; those it made meanwhile count.
        let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        let (more, missing) = cover(&missing);
        found.extend(more);
        if !missing.is_empty() {
            let began = std::time::Instant::now();
            let wasm = crate::instrument::rewind_module(&self.wasm, &p, &missing)
                .map_err(|e| e.to_string())?;
            let module = compile(engine, &wasm).map_err(|e| e.to_string())?;
            let made = RewindModule {
                module,
                functions: missing.into(),
                cost_ms: began.elapsed().as_millis() as u64,
            };
            tracing::debug!(
                functions = ?made.functions,
                bytes = wasm.len(),
                ms = made.cost_ms,
                "rewind copies compiled"
            );
            self.keep(engine, made.clone());
            found.push(made);
        }
        Ok(StackRewinds {
            modules: found,
            start,
        })
    }
}

impl OnDemand {
    /// Keeps `made` for the stacks to come (all are dropped past
    /// [`REWIND_MODULES_KEPT`]).
    fn keep(&self, engine: &Engine, made: RewindModule) {
        self.with_kept(engine, |kept| {
            if kept.modules.len() >= REWIND_MODULES_KEPT {
                *kept = Kept::default();
            }
            let at = kept.modules.len();
            for f in made.functions.iter() {
                kept.of.insert(*f, at);
            }
            kept.modules.push(made);
        })
    }

    /// `f` on the modules kept for `engine`, under the lock.
    fn with_kept<T>(&self, engine: &Engine, f: impl FnOnce(&mut Kept) -> T) -> T {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        f(Self::of_engine(&mut kept, engine))
    }

    /// The compiled modules kept for `engine` that hold rewind copies of the
    /// functions on `stack` (an unwound stack) and took at least
    /// [`SEND_COST_MS`] to compile: what a body moved to another node takes
    /// with it, so that a cluster compiles a large function's copy once
    /// rather than once on every node the body goes to.
    pub(crate) fn to_send(&self, engine: &Engine, stack: &[u8]) -> Vec<crate::ghost::RewindCode> {
        let costly: Vec<RewindModule> = self.with_kept(engine, |kept| {
            kept.modules
                .iter()
                .filter(|m| m.cost_ms >= SEND_COST_MS)
                .cloned()
                .collect()
        });
        if costly.is_empty() {
            return Vec::new();
        }
        // (Worked out already: this node made copies.)
        let Ok(p) = self.prepared() else {
            return Vec::new();
        };
        let Ok(on_stack) = crate::instrument::stack_functions(&self.wasm, &p, stack) else {
            return Vec::new();
        };
        let on_stack: BTreeSet<u32> = on_stack.into_iter().collect();
        costly
            .into_iter()
            .filter(|m| m.functions.iter().any(|f| on_stack.contains(f)))
            .filter_map(|m| match m.module.serialize() {
                Ok(code) => Some(crate::ghost::RewindCode {
                    functions: m.functions.to_vec(),
                    cost_ms: m.cost_ms,
                    code,
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot send compiled rewind copies");
                    None
                }
            })
            .collect()
    }

    /// Keeps the compiled rewind copies a body brought from another node
    /// (see [`Self::to_send`]) for `engine`, those of functions it has no
    /// copy of yet. Code that this engine cannot load (another
    /// configuration or CPU: wasmtime checks) is left out, and those copies
    /// are compiled here when needed.
    pub(crate) fn adopt(&self, engine: &Engine, sent: Vec<crate::ghost::RewindCode>) {
        for s in sent {
            let fresh = self.with_kept(engine, |kept| {
                s.functions.iter().any(|f| !kept.of.contains_key(f))
            });
            if !fresh {
                continue;
            }
            // SAFETY: the code comes from a node of this cluster, over the
            // image connection it was given a ticket for (the same trust as
            // the compiled modules nodes share, `Peer.compiledModule`), and
            // never from a file (`ImageReader::accepting_code`); wasmtime
            // checks that this engine can run it.
            match unsafe { Module::deserialize(engine, &s.code) } {
                Ok(module) => {
                    tracing::debug!(functions = ?s.functions, bytes = s.code.len(), "rewind copies received");
                    self.keep(
                        engine,
                        RewindModule {
                            functions: s.functions.into(),
                            module,
                            cost_ms: s.cost_ms,
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!(error = %crate::code::one_line(&e), "cannot load the rewind copies received; compiling them here when needed")
                }
            }
        }
    }

    /// The modules kept for `engine`.
    fn of_engine<'k>(kept: &'k mut Vec<(Engine, Kept)>, engine: &Engine) -> &'k mut Kept {
        let at = match kept.iter().position(|(e, _)| Engine::same(e, engine)) {
            Some(at) => at,
            None => {
                kept.push((engine.clone(), Kept::default()));
                kept.len() - 1
            }
        };
        &mut kept[at].1
    }
}

/// Whether a compiled module is an instrumented runnable part without a
/// whole module to come: its rewind copies are made on demand.
pub(crate) fn runnable_alone(module: &Module) -> bool {
    module.get_export(crate::instrument::FLAG_MEMORY).is_some()
        && module.get_export(crate::instrument::REWIND).is_none()
}

/// Instantiates `module`, a module of rewind copies made on demand
/// ([`crate::instrument::rewind_module`]), linked to `instance` (of the
/// runnable part it puts a stack back into): its functions from the
/// instance's table of every function, the rest by its reserved exports.
/// Instantiating it writes its copies into the instance's table of
/// rewind copies.
pub fn link_rewinds<T: 'static>(
    store: &mut wasmtime::Store<T>,
    instance: &wasmtime::Instance,
    module: &Module,
) -> wasmtime::Result<wasmtime::Instance> {
    use crate::instrument::{FUNC_IMPORT, FUNCS_TABLE};
    let funcs = instance
        .get_table(&mut *store, FUNCS_TABLE)
        .ok_or_else(|| wasmtime::format_err!("the instance has no `{FUNCS_TABLE}`"))?;
    let mut imports = Vec::new();
    for import in module.imports() {
        let name = import.name();
        let found = match name.strip_prefix(FUNC_IMPORT) {
            Some(index) => {
                let index: u64 = index
                    .parse()
                    .map_err(|_| wasmtime::format_err!("a bad function import `{name}`"))?;
                funcs
                    .get(&mut *store, index)
                    .and_then(|r| r.as_func().flatten().cloned())
                    .map(wasmtime::Extern::Func)
            }
            None => instance.get_export(&mut *store, name),
        };
        imports.push(found.ok_or_else(|| wasmtime::format_err!("the instance lacks `{name}`"))?);
    }
    wasmtime::Instance::new(store, module, &imports)
}

/// The rewind copy of `start` (the function exported as `_start`) that
/// the modules linked to `instance` wrote into its table of rewind copies:
/// what puts a stack back.
pub fn rewind_start<T: 'static>(
    store: &mut wasmtime::Store<T>,
    instance: &wasmtime::Instance,
    start: u32,
) -> wasmtime::Result<wasmtime::TypedFunc<(), ()>> {
    use crate::instrument::REWIND_TABLE;
    let table = instance
        .get_table(&mut *store, REWIND_TABLE)
        .ok_or_else(|| wasmtime::format_err!("the instance has no `{REWIND_TABLE}`"))?;
    let copy = table
        .get(&mut *store, u64::from(start))
        .and_then(|r| r.as_func().flatten().cloned())
        .ok_or_else(|| wasmtime::format_err!("no rewind copy of `_start` is linked"))?;
    copy.typed::<(), ()>(&*store)
}

#[cfg(test)]
impl OnDemand {
    /// Counts every module kept as long to make, as a large function's is
    /// (so that a move sends it along).
    pub(crate) fn as_if_long_to_make(&self) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for (_, k) in kept.iter_mut() {
            for m in &mut k.modules {
                m.cost_ms = SEND_COST_MS;
            }
        }
    }

    /// How many modules of copies are kept for `engine`.
    pub(crate) fn modules_kept(&self, engine: &Engine) -> usize {
        self.with_kept(engine, |kept| kept.modules.len())
    }
}
