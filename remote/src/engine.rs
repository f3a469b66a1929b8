//! The wasmtime engines, and how a module becomes a [`Program`]: taken from
//! the cache of compiled modules, or instrumented and compiled now.
//!
//! Modules are identified by the SHA-256 of their bytes. The native code wasmtime
//! compiles for a module is kept on disk under that hash (next to a fingerprint of
//! the engine's configuration), so a second launch maps it instead of compiling
//! (the entries themselves: `cache.rs`).

use crate::cache::{cache_module, cache_whole, cached, store_atomically};
use crate::code::{LoadError, ModuleHash};
pub(crate) use crate::code::{compile, one_line};
use crate::program::Completion;
use crate::program::Program;
use crate::rewinds::{OnDemand, runnable_alone};
use bytes::Bytes;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wasmtime::{Config, Engine, Module};

/// A module's compiled code as one node hands it to another of the same
/// [`Runtime::fingerprint`], so that a cluster compiles each module once
/// (see [`Runtime::shared_code`], [`Runtime::adopt`]).
pub struct SharedCode {
    /// `Module::serialize` of the whole instrumented module, or of the
    /// module as it is when it cannot be frozen.
    pub code: Vec<u8>,
    /// Why it cannot be frozen: then `code` is for the engine of such
    /// modules.
    pub not_freezable: Option<String>,
}

/// How old a lock of [`Runtime::fill_cache`] may be before it is taken for
/// one its filler left when it died.
const FILL_STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// The compilation engines of a node, with its module cache.
///
/// Instrumented modules (see [`crate::instrument`]) are frozen and stopped at
/// their poll points and need nothing more of the engine. A module that cannot
/// be instrumented runs as it is, on a second engine that compiles epoch checks
/// in when the runtime is interruptible, so that a node can still stop it.
pub struct Runtime {
    engine: Engine,
    fallback: Engine,
    /// The engine of the quick tier: Cranelift without optimisations and
    /// with its single-pass register allocator, which compiles a large
    /// module about twice as fast into code that runs slower. A first
    /// launch compiles the runnable part with it, so that a large module
    /// starts soon; the body moves into the optimised code (the program's
    /// second step) as soon as it is compiled. None once turned off
    /// ([`Runtime::without_quick_tier`]: a node of a cluster, whose peers
    /// take the optimised code it compiles rather than compile it again).
    quick: Option<Engine>,
    interruptible: bool,
    cache_dir: Option<PathBuf>,
    /// The most the cache may hold, in bytes: past it, the entries used
    /// least recently go first.
    cache_max: Option<u64>,
    /// The second steps of the programs loaded here (see [`Runtime::code_to_come`]).
    completions: Mutex<Vec<std::sync::Weak<Completion>>>,
    /// Those of programs of the quick tier, held for as long as the
    /// runtime lives: one whose bodies have ended is still to come.
    tiered: Mutex<Vec<Arc<Completion>>>,
    fingerprint: u64,
    /// Every module's rewind copies are made on demand, whatever its size
    /// (see [`Runtime::with_rewinds_on_demand`]).
    on_demand_always: bool,
    /// Every module is compiled as it is (see [`Runtime::as_is`]).
    as_is: bool,
}

/// Why the bodies of a runtime made with [`Runtime::as_is`] cannot be
/// frozen.
pub const AS_IS: &str = "its module was compiled as it is, not instrumented (as asked)";

/// A module's entries in a cache: each file's path.
struct Entries {
    /// The whole instrumented module, compiled.
    whole: Option<PathBuf>,
    /// Its runnable part, until the whole one replaces it.
    runnable: Option<PathBuf>,
    /// Its runnable part compiled by the quick tier, likewise.
    quick: Option<PathBuf>,
    /// The module as it is, compiled when it cannot be frozen, and why not.
    plain: Option<PathBuf>,
    why: Option<PathBuf>,
}

/// The default cache directory: `$SSI_CACHE_DIR`, else the user's cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SSI_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "ssi").map(|d| d.cache_dir().join("modules"))
}

/// The most native stack a body's Wasm code may use, on every node (a body
/// keeps it as it moves): twice the most `-W max-wasm-stack` takes, as
/// instrumented frames are larger than the original's.
pub const WASM_STACK: usize = 16 << 20;

/// The most Wasm stack `ssirun -W max-wasm-stack` takes (Go's wasip1 runner
/// asks for 8 MiB): a body recurses at least as deep as under `wasmtime run`
/// given as much.
pub const MAX_WASM_STACK_OPTION: usize = WASM_STACK / 2;

/// The most native stack a body's Wasm code may use on the quick tier,
/// whose unoptimised frames are larger still: Cranelift's single-pass
/// register allocator gives every value a stack slot of its own, and Go's
/// functions (many values each) get frames fifteen times their optimised
/// ones (`encoding/json`'s recursive decoders: 4,016 bytes against 272). A
/// first launch recurses as deep as the optimised code does.
pub const QUICK_WASM_STACK: usize = 16 * WASM_STACK;

/// The native stack of a thread that runs a body: its Wasm stack (on the
/// quick tier, the larger), and room for the host's frames around it.
pub const BODY_THREAD_STACK: usize = QUICK_WASM_STACK + (4 << 20);

impl Runtime {
    /// A runtime caching compiled code in `cache_dir` (none: compile every
    /// time). A module that cannot be instrumented can be stopped at a system
    /// call only: the embedded default, where the body ends with its `ssirun`,
    /// needs no more.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        Self::with_config(cache_dir, false)
    }

    /// As [`Runtime::new`], with epoch checks compiled into modules that cannot
    /// be instrumented, so that a node can stop them even in a loop without calls.
    pub fn interruptible(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        Self::with_config(cache_dir, true)
    }

    /// Whether bodies of this runtime can be stopped anywhere.
    pub fn is_interruptible(&self) -> bool {
        self.interruptible
    }

    fn with_config(cache_dir: Option<PathBuf>, interruptible: bool) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_threads(true);
        config.shared_memory(true);
        config.wasm_multi_memory(true);
        // Exception handling (`try_table`, `throw`, `exnref`), as `wasmtime
        // run` takes it. (Its legacy encoding, `try`/`catch`/`delegate`, is
        // one Cranelift does not compile.)
        config.wasm_exceptions(true);
        // The instrumentation hints the branches of its poll points and of its
        // checks after calls as not taken (`metadata.code.branch_hint`): the
        // engine lays their code out after the function's hot paths.
        config.wasm_branch_hinting(true);
        // The instrumented code's frames are larger than the original's: a
        // deeper stack lets a program recurse as deep as under `wasmtime run`
        // (512 KiB, or up to `MAX_WASM_STACK_OPTION` with `-W
        // max-wasm-stack`). Body threads have room for it
        // (`BODY_THREAD_STACK`); what they do not touch costs nothing.
        config.max_wasm_stack(WASM_STACK);
        // (Checked against, though bodies do not run on fibers.)
        config.async_stack_size(BODY_THREAD_STACK);
        // Memories start as wasmtime maps them: their data segments from the
        // module's image, copied on write (without it, wasmtime compiles a
        // function that writes every segment, which doubles the compile of a
        // module with many, as Go's and Python's). A page of that image the
        // body never touched is not mapped yet holds data: images read every
        // page of a memory's first extent whatever the kernel says (see
        // `Body::fresh`), and skip unmapped pages only past it.
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(one_line(&e)))?;
        let quick = quick_engine(config.clone());
        config.epoch_interruption(interruptible);
        let fallback = Engine::new(&config).map_err(|e| LoadError::Engine(one_line(&e)))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        interruptible.hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        crate::instrument::VERSION.hash(&mut h);
        Ok(Runtime {
            engine,
            fallback,
            quick,
            interruptible,
            cache_dir,
            cache_max: None,
            fingerprint: h.finish(),
            completions: Default::default(),
            tiered: Default::default(),
            on_demand_always: false,
            as_is: false,
        })
    }

    /// Makes the rewind copies of every module this runtime loads on
    /// demand, for the stack being put back, as it does for modules past
    /// [`crate::instrument::WHOLE_MAX_CODE`], instead of compiling them
    /// with its whole module (a module whose rewind copies cannot be made
    /// that way is still compiled whole).
    pub fn with_rewinds_on_demand(mut self) -> Self {
        self.on_demand_always = true;
        self
    }

    /// Compiles every module with Cranelift only: a first launch's
    /// runnable part too, which is then as fast as the whole module's
    /// (for measuring the instrumented code itself).
    pub fn without_quick_tier(mut self) -> Self {
        self.quick = None;
        self
    }

    /// Compiles every module as it is, not instrumented, on the same engine
    /// and with the same configuration: its bodies run as any other, but
    /// cannot be frozen ([`AS_IS`] says so). What the instrumentation's cost
    /// is measured against. Such code is cached in entries of its own, never
    /// taken for a freezable module's.
    pub fn as_is(mut self) -> Self {
        self.as_is = true;
        self
    }

    /// The engine a first launch compiles the runnable part with, the
    /// quick tier (see [`Runtime`]), if it has one.
    pub fn quick_engine(&self) -> Option<&Engine> {
        self.quick.as_ref()
    }

    /// Bounds the cache to `bytes`: when an entry is written past it, the
    /// entries used least recently (loaded or written) are removed until it
    /// holds no more (the new entry stays, whatever its size).
    pub fn with_cache_max(mut self, bytes: u64) -> Self {
        self.cache_max = Some(bytes);
        self
    }

    /// The engine of instrumented modules.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether the second step of a program loaded here is still to be
    /// compiled: under way, or not begun for a program of the quick tier
    /// (whose later launches would otherwise start on slower code as long
    /// as none runs past the warm-up). A process that ends now leaves it
    /// uncached.
    pub fn code_to_come(&self) -> bool {
        self.completions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .any(|c| c.is_underway())
            || self
                .tiered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|c| !c.is_done())
    }

    /// Compiles the whole module of `wasm` into the cache, unless it is
    /// there or another process is compiling it: what a command that ended
    /// while its whole module compiled leaves to a process of its own
    /// (`ssirun --fill-cache`), so that the next launch starts on it.
    /// Returns whether it compiled.
    pub fn fill_cache(&self, wasm: &[u8]) -> Result<bool, LoadError> {
        let hash = ModuleHash::of(wasm);
        let Some(whole) = self.entries(&hash).whole else {
            return Ok(false);
        };
        if whole.exists() {
            return Ok(false);
        }
        // Hidden: not an entry of the cache, which eviction would count.
        let stem = whole.file_stem().unwrap_or_default().to_string_lossy();
        let lock = whole.with_file_name(format!(".{stem}.filling"));
        if let Some(dir) = lock.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LoadError::Cache(e.to_string()))?;
        }
        // A lock left by a filler that died is stale after a while.
        let stale = std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > FILL_STALE);
        if stale {
            let _ = std::fs::remove_file(&lock);
        }
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
            .is_err()
        {
            return Ok(false);
        }
        let _unlock = scopeguard::guard((), |()| {
            let _ = std::fs::remove_file(&lock);
        });
        self.load_whole(wasm).map(|_| true)
    }

    /// What the code this runtime compiles depends on: the engine's
    /// configuration and the CPU features its compiler targets (wasmtime's
    /// compatibility hash), whether it is interruptible, and the versions
    /// of ssi and of its instrumentation. Compiled code is shared only
    /// between runtimes of the same fingerprint (and wasmtime checks it
    /// again as it loads it).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether a load of the module of `hash` would find its compiled code
    /// (whole) in the cache.
    pub fn has_code(&self, hash: &ModuleHash) -> bool {
        let e = self.entries(hash);
        let exists = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.exists());
        exists(&e.whole) || (exists(&e.plain) && exists(&e.why))
    }

    /// The whole compiled code of the module of `hash`, for a node of the
    /// same fingerprint that lacks it: from the cache, else serialized from
    /// `held` (the program loaded here) once its whole module is compiled.
    /// None when this node has only the runnable part, or nothing.
    pub fn shared_code(&self, hash: &ModuleHash, held: Option<&Program>) -> Option<SharedCode> {
        let e = self.entries(hash);
        let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read(p).ok());
        if let Some(code) = read(&e.whole) {
            return Some(SharedCode {
                code,
                not_freezable: None,
            });
        }
        if let (Some(code), Some(why)) = (read(&e.plain), read(&e.why)) {
            return Some(SharedCode {
                code,
                not_freezable: Some(String::from_utf8_lossy(&why).into_owned()),
            });
        }
        let held = held.filter(|p| p.is_complete())?.current();
        match held.module.serialize() {
            Ok(code) => Some(SharedCode {
                code,
                not_freezable: held.not_freezable.clone(),
            }),
            Err(e) => {
                tracing::warn!(module = %hash, error = %one_line(&e), "cannot serialize compiled module");
                None
            }
        }
    }

    /// The program of the module of `hash` from code a node of the same
    /// fingerprint compiled ([`Runtime::shared_code`]), kept in the cache as
    /// if it had been compiled here. Code that is not for this engine
    /// (another CPU, another configuration, damaged on the way) is refused,
    /// and nothing is cached.
    ///
    /// `wasm` is the module itself: a program whose rewind copies are made
    /// on demand makes them from it.
    pub fn adopt(
        &self,
        hash: ModuleHash,
        shared: &SharedCode,
        wasm: Bytes,
    ) -> Result<Program, LoadError> {
        let engine = match shared.not_freezable {
            None => &self.engine,
            Some(_) => &self.fallback,
        };
        // SAFETY: the code comes from a node of this cluster, trusted as the
        // compiler of the bodies it runs; wasmtime checks its header, its
        // version, and that the engine's configuration and this CPU's
        // features are those it was compiled for.
        let module = unsafe { Module::deserialize(engine, &shared.code) }
            .map_err(|e| LoadError::Shared(one_line(&e)))?;
        let e = self.entries(&hash);
        match &shared.not_freezable {
            None => {
                if let Some(p) = &e.whole {
                    store_atomically(p, &shared.code, self.cache_max);
                }
            }
            Some(why) => {
                if let Some(w) = &e.why {
                    store_atomically(w, why.as_bytes(), None);
                }
                if let Some(p) = &e.plain {
                    store_atomically(p, &shared.code, self.cache_max);
                }
            }
        }
        let on_demand = (shared.not_freezable.is_none() && runnable_alone(&module))
            .then(|| OnDemand::new(wasm, None));
        Ok(Program {
            hash,
            module,
            not_freezable: shared.not_freezable.clone(),
            linked: Default::default(),
            completion: None,
            on_demand,
        })
    }

    /// The cache's entries for the module of `hash` (none without a cache).
    fn entries(&self, hash: &ModuleHash) -> Entries {
        let path = |kind| self.cache_path(hash, kind);
        Entries {
            whole: path("cwasm"),
            runnable: path("runnable.cwasm"),
            quick: path("quick.cwasm"),
            plain: path("plain.cwasm"),
            why: path("why"),
        }
    }

    fn cache_path(&self, hash: &ModuleHash, kind: &str) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| {
            d.join(format!(
                "{}-{:016x}.{kind}",
                hash.to_hex(),
                self.fingerprint
            ))
        })
    }

    /// Turns the bytes of a file into a program: binary Wasm as is, Wasm text is
    /// assembled first. The compiled code comes from the cache when present.
    pub fn load(&self, bytes: &[u8]) -> Result<Program, LoadError> {
        self.load_binary(&assemble(bytes)?)
    }

    /// Loads a binary module: instruments and compiles it, or takes both from
    /// the cache. A module instrumented now is compiled in two steps (see
    /// [`Program`]): this returns once the first is done.
    pub fn load_binary(&self, wasm: &[u8]) -> Result<Program, LoadError> {
        self.load_program(wasm, &|| Bytes::copy_from_slice(wasm), false)
    }

    /// As [`Runtime::load_binary`] (or with `whole`, [`Runtime::load_whole`]),
    /// for a module its caller holds in shared bytes: a program that keeps
    /// its module (to make rewind copies on demand, to compile its second
    /// step) keeps these, not a copy (a large module is tens of megabytes).
    pub fn load_shared(&self, wasm: &Bytes, whole: bool) -> Result<Program, LoadError> {
        self.load_program(wasm, &|| wasm.clone(), whole)
    }

    /// As [`Runtime::load_binary`], for a body about to arrive with a stack to
    /// put back: returns once the whole module is compiled (in one step).
    pub fn load_whole(&self, wasm: &[u8]) -> Result<Program, LoadError> {
        self.load_program(wasm, &|| Bytes::copy_from_slice(wasm), true)
    }

    /// A program of `wasm`; with `whole`, always complete (never the
    /// runnable part with a second step to come). `kept` gives the bytes a
    /// program keeps, if it keeps them.
    fn load_program(
        &self,
        wasm: &[u8],
        kept: &dyn Fn() -> Bytes,
        whole: bool,
    ) -> Result<Program, LoadError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        let hash = ModuleHash::of(wasm);
        let Entries {
            whole: whole_path,
            runnable: runnable_path,
            quick: quick_path,
            plain: plain_path,
            why: why_path,
        } = self.entries(&hash);
        let program = |module, not_freezable, completion| Program {
            hash,
            module,
            not_freezable,
            linked: Default::default(),
            completion,
            on_demand: None,
        };
        if self.as_is {
            let path = self.cache_path(&hash, "asis.cwasm");
            if let Some(module) = path.as_ref().and_then(|p| cached(&self.engine, p)) {
                return Ok(program(module, Some(AS_IS.into()), None));
            }
            let module = compile(&self.engine, wasm)?;
            cache_module(path.as_deref(), &module, self.cache_max);
            return Ok(program(module, Some(AS_IS.into()), None));
        }
        // A module whose rewind copies are made on demand: its runnable
        // part is all a node compiles, kept as its whole code.
        let alone = |module: Module, on_demand| Program {
            on_demand: Some(on_demand),
            ..program(module, None, None)
        };
        if let Some(module) = whole_path.as_ref().and_then(|p| cached(&self.engine, p)) {
            if runnable_alone(&module) {
                return Ok(alone(module, OnDemand::new(kept(), None)));
            }
            return Ok(program(module, None, None));
        }
        if let (Some(module), Some(why)) = (
            plain_path.as_ref().and_then(|p| cached(&self.fallback, p)),
            why_path
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok()),
        ) {
            return Ok(program(module, Some(why), None));
        }
        // (Made on demand by choice only when they can be: what that needs
        // is worked out once, here.)
        let by_size = crate::instrument::rewinds_on_demand(wasm);
        let prepared = (self.on_demand_always && !by_size)
            .then(|| crate::instrument::prepare(wasm).ok())
            .flatten()
            .filter(|p| p.refusal().is_none());
        let on_demand = (by_size || prepared.is_some()).then(|| OnDemand::new(kept(), prepared));
        // The second step: the whole module, or the runnable part alone
        // when the rewind copies are made on demand (then compiled by
        // Cranelift after the quick tier's). Another process may have
        // cached it by the time it begins.
        let max = self.cache_max;
        let completion = |tier_up: bool| {
            let (engine, wasm) = (self.engine.clone(), kept());
            let whole_path = whole_path.clone();
            let parts = [runnable_path.clone(), quick_path.clone()];
            let runnable_only = on_demand.is_some();
            let make = move || {
                if let Some(module) = whole_path.as_ref().and_then(|p| cached(&engine, p)) {
                    return Ok(module);
                }
                let code = if runnable_only {
                    crate::instrument::instrument_runnable(&wasm)
                } else {
                    crate::instrument::instrument(&wasm).map(|i| i.wasm)
                }
                .map_err(|e| LoadError::Invalid(e.to_string()))?;
                let module = compile(&engine, &code)?;
                cache_whole(&whole_path, &parts, &module, max);
                Ok(module)
            };
            let c = if tier_up {
                let c = Completion::tier_up(&hash, on_demand.clone(), make);
                let mut held = self.tiered.lock().unwrap_or_else(|p| p.into_inner());
                held.retain(|c| !c.is_done());
                held.push(c.clone());
                c
            } else {
                Completion::new(&hash, make)
            };
            let mut known = self.completions.lock().unwrap_or_else(|p| p.into_inner());
            known.retain(|c| c.strong_count() > 0);
            known.push(Arc::downgrade(&c));
            c
        };
        // The runnable part compiled by the quick tier, with its second
        // step (and, while that compiles, its own rewind copies when they
        // are made on demand).
        let tiered = |module| Program {
            on_demand: on_demand.clone(),
            ..program(module, None, Some(completion(true)))
        };
        // The runnable part compiled by an earlier launch that ended before
        // the second step did: the second step is made again.
        if !whole {
            if on_demand.is_none()
                && let Some(module) = runnable_path.as_ref().and_then(|p| cached(&self.engine, p))
            {
                return Ok(program(module, None, Some(completion(false))));
            }
            if let Some(quick) = &self.quick
                && let Some(module) = quick_path.as_ref().and_then(|p| cached(quick, p))
            {
                return Ok(tiered(module));
            }
        }
        // The instrumenter validates the module as it reads it; a module it
        // refuses is validated whole before it is called unfreezable, so that
        // a malformed one is named as wasmparser (what wasmtime validates
        // with) finds it, not as the instrumentation does.
        let instrumented = if whole && on_demand.is_none() {
            crate::instrument::instrument(wasm).map(|i| i.wasm)
        } else {
            // A first launch makes only the runnable part: the whole module
            // is instrumented again by the second step.
            crate::instrument::instrument_runnable(wasm)
        };
        if instrumented.is_err() {
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
                .validate_all(wasm)
                .map_err(|e| LoadError::Invalid(e.to_string()))?;
        }
        let parts = [runnable_path.clone(), quick_path.clone()];
        match instrumented {
            // A first launch: the runnable part by the quick tier.
            Ok(runnable) if !whole && let Some(module) = self.quick_compile(&hash, &runnable) => {
                cache_module(quick_path.as_deref(), &module, max);
                Ok(tiered(module))
            }
            Ok(runnable) if let Some(on_demand) = on_demand.clone() => {
                let module = compile(&self.engine, &runnable)?;
                cache_whole(&whole_path, &parts, &module, max);
                Ok(alone(module, on_demand))
            }
            Ok(instrumented) if whole => {
                let module = compile(&self.engine, &instrumented)?;
                cache_whole(&whole_path, &parts, &module, max);
                Ok(program(module, None, None))
            }
            Ok(runnable) => {
                let module = compile(&self.engine, &runnable)?;
                cache_module(runnable_path.as_deref(), &module, max);
                Ok(program(module, None, Some(completion(false))))
            }
            Err(why) => {
                tracing::info!(module = %hash, reason = %why, "not freezable");
                let module = compile(&self.fallback, wasm)?;
                let why = why.to_string();
                // (Bounded once, by the module's entry after it.)
                if let Some(w) = &why_path {
                    store_atomically(w, why.as_bytes(), None);
                }
                cache_module(plain_path.as_deref(), &module, max);
                Ok(program(module, Some(why), None))
            }
        }
    }

    /// The runnable part `runnable` compiled by the quick tier, unless there
    /// is none or it cannot compile it.
    fn quick_compile(&self, hash: &ModuleHash, runnable: &[u8]) -> Option<Module> {
        let quick = self.quick.as_ref()?;
        compile(quick, runnable)
            .inspect_err(
                |e| tracing::info!(module = %hash, error = %e, "the quick tier cannot compile it"),
            )
            .ok()
    }
}

/// The quick tier's engine (see [`Runtime`]): `config`, the instrumented
/// modules' own, with the cheapest code generation.
fn quick_engine(mut config: Config) -> Option<Engine> {
    config.max_wasm_stack(QUICK_WASM_STACK);
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    config.cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
    Engine::new(&config)
        .inspect_err(|e| tracing::warn!(error = %one_line(e), "no quick tier"))
        .ok()
}

/// Whether a module (binary or text) imports function `name` of `module`;
/// false for anything that does not parse.
pub fn imports(bytes: &[u8], module: &str, name: &str) -> bool {
    let Ok(binary) = assemble(bytes) else {
        return false;
    };
    wasmparser::Parser::new(0)
        .parse_all(&binary)
        .any(|payload| match payload {
            Ok(wasmparser::Payload::ImportSection(reader)) => reader
                .into_iter()
                .flatten()
                .flat_map(|group| group.into_iter().flatten())
                .any(|(_, i)| i.module == module && i.name == name),
            _ => false,
        })
}

/// The binary form of a module file: binary Wasm as is, Wasm text assembled.
pub fn assemble(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, LoadError> {
    if bytes.starts_with(b"\0asm") {
        Ok(std::borrow::Cow::Borrowed(bytes))
    } else if looks_like_text(bytes) {
        Ok(std::borrow::Cow::Owned(
            wat::parse_bytes(bytes)
                .map_err(|e| LoadError::BadText(e.to_string().replace('\n', " ")))?
                .into_owned(),
        ))
    } else {
        Err(LoadError::NotWasm)
    }
}

/// Whether bytes look like WebAssembly text (a module starts with `(` once leading
/// white space and comments are skipped).
fn looks_like_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(";;") {
            rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if rest.starts_with("(;") {
            match rest.find(";)") {
                Some(end) => rest = &rest[end + 2..],
                None => return false,
            }
        } else {
            return rest.starts_with('(');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_detection() {
        assert!(looks_like_text(b"  ;; hi\n (module)"));
        assert!(looks_like_text(b"(; block ;)(module)"));
        assert!(!looks_like_text(b"hello world"));
        assert!(!looks_like_text(&[0xff, 0xfe, 0x28]));
    }

    #[test]
    fn imports_are_found_in_text_and_binary() {
        let text = br#"(module (import "ssi" "spawn" (func)) (import "a" "b" (func)))"#;
        assert!(imports(text, "ssi", "spawn"));
        assert!(!imports(text, "ssi", "waitpid"));
        let binary = assemble(text).expect("assembles").into_owned();
        assert!(imports(&binary, "a", "b"));
        assert!(!imports(b"garbage", "ssi", "spawn"));
    }

    #[test]
    fn garbage_is_not_wasm() {
        let rt = Runtime::new(None).expect("engine");
        assert!(matches!(
            rt.load(b"#!/bin/sh\necho hi\n"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            rt.load(b"\0asm\x01\0\0\0\x99"),
            Err(LoadError::Invalid(_))
        ));
        assert!(matches!(
            rt.load(b"(module (func $f (result i32)))"),
            Err(LoadError::BadText(_) | LoadError::Invalid(_))
        ));
    }

    #[test]
    fn cache_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("engine");
        let p1 = rt
            .load(b"(module (func (export \"_start\")))")
            .expect("compile");
        assert!(p1.freezable());
        // Its whole module, compiled on a thread of its own, replaces its
        // runnable part in the cache.
        p1.complete().expect("the whole module");
        let names = || -> Vec<String> {
            std::fs::read_dir(dir.path())
                .expect("dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        };
        wait_for(|| names().len() == 1);
        assert!(names()[0].ends_with(".cwasm") && !names()[0].contains("runnable"));
        let p2 = rt
            .load(b"(module (func (export \"_start\")))")
            .expect("from cache");
        assert!(p2.is_complete());
        assert_eq!(p1.hash, p2.hash);
        assert!(p2.module.get_export("_start").is_some());
        assert!(
            p2.module
                .get_export(crate::instrument::FLAG_MEMORY)
                .is_some()
        );
    }

    /// Polls `ok` for at most 10 s.
    fn wait_for(ok: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "not within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn a_program_starts_on_its_runnable_part_and_a_later_launch_finds_it_whole_or_completes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("engine");
        let text = b"(module (func $f (loop (br 0))) (func (export \"_start\") (call $f)))";
        let first = rt.load(text).expect("compile");
        // The runnable part has no rewind copies; the whole module has.
        assert!(first.module.get_export(crate::instrument::REWIND).is_none());
        let whole = first.complete().expect("the whole module");
        assert!(whole.is_complete());
        assert!(whole.module.get_export(crate::instrument::REWIND).is_some());
        // A body made now starts on the whole module.
        assert!(first.current().completion.is_none());
        // With only the runnable part cached, a launch takes it and compiles
        // the whole module again.
        wait_for(|| std::fs::read_dir(dir.path()).expect("dir").count() == 1);
        let cached: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        let runnable = cached[0].with_file_name(
            cached[0]
                .file_name()
                .expect("name")
                .to_string_lossy()
                .replace(".cwasm", ".runnable.cwasm"),
        );
        let runnable_module = first.module.serialize().expect("serialize");
        std::fs::write(&runnable, runnable_module).expect("write");
        std::fs::remove_file(&cached[0]).expect("remove");
        let again = rt.load(text).expect("from the runnable part");
        assert!(again.module.get_export(crate::instrument::REWIND).is_none());
        let whole = again.complete().expect("the whole module again");
        assert!(whole.module.get_export(crate::instrument::REWIND).is_some());
        wait_for(|| !runnable.exists() && cached[0].exists());
    }

    #[test]
    fn a_bounded_cache_lets_the_entries_used_least_recently_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let size = || -> u64 {
            std::fs::read_dir(dir.path())
                .expect("dir")
                .map(|e| e.expect("entry").metadata().expect("meta").len())
                .sum()
        };
        let module = |n: u32| {
            format!("(module (func (export \"_start\") (loop (br_if 0 (i32.const {n})))))")
        };
        // Three modules' whole entries, each about the same size.
        let unbounded = Runtime::new(Some(dir.path().to_path_buf())).expect("engine");
        for n in 0..3 {
            unbounded
                .load(module(n).as_bytes())
                .and_then(|p| p.complete())
                .expect("compiled");
            wait_for(|| std::fs::read_dir(dir.path()).expect("dir").count() == n as usize + 1);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let one = size() / 3;
        // Module 0 is used again: module 1 is now the least recent.
        let bounded = Runtime::new(Some(dir.path().to_path_buf()))
            .expect("engine")
            .with_cache_max(one * 3 + one / 2);
        assert!(
            bounded
                .load(module(0).as_bytes())
                .expect("hit")
                .is_complete()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        // A fourth entry passes the bound: module 1's goes, the others stay.
        bounded
            .load(module(3).as_bytes())
            .and_then(|p| p.complete())
            .expect("compiled");
        wait_for(|| size() <= one * 3 + one / 2);
        let hash = |n: u32| ModuleHash::of(&assemble(module(n).as_bytes()).expect("wat")).to_hex();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        let held = |n: u32| names.iter().any(|f| f.starts_with(&hash(n)));
        assert!(held(0) && !held(1) && held(2) && held(3), "{names:?}");
    }

    #[test]
    fn a_module_that_cannot_be_instrumented_still_runs_and_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("engine");
        let text = b"(module (func $f (return_call $f)) (func (export \"_start\")))";
        let p = rt.load(text).expect("compiled as it is");
        assert!(
            p.not_freezable
                .as_deref()
                .is_some_and(|w| w.contains("tail calls"))
        );
        let again = rt.load(text).expect("from cache");
        assert_eq!(again.not_freezable, p.not_freezable);
    }

    #[test]
    fn a_runtime_as_is_compiles_modules_uninstrumented_in_entries_of_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = b"(module (func $f (loop (br 0))) (func (export \"_start\") (call $f)))";
        let as_is = Runtime::new(Some(dir.path().to_path_buf()))
            .expect("engine")
            .as_is();
        let p = as_is.load(text).expect("compiled as it is");
        assert_eq!(p.not_freezable.as_deref(), Some(AS_IS));
        assert!(p.completion.is_none());
        // The module as it is: none of the instrumentation's exports.
        assert!(
            p.module
                .get_export(crate::instrument::FLAG_MEMORY)
                .is_none()
        );
        // On the engine instrumented code runs on, not the fallback's.
        assert!(Engine::same(p.module.engine(), &as_is.engine));
        let again = as_is.load(text).expect("from the cache");
        assert_eq!(again.not_freezable.as_deref(), Some(AS_IS));
        // A runtime that instruments never takes that entry for its own.
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("engine");
        let freezable = rt.load(text).expect("instrumented");
        assert!(freezable.freezable());
        assert!(
            freezable
                .module
                .get_export(crate::instrument::FLAG_MEMORY)
                .is_some()
        );
    }

    #[test]
    fn code_one_node_compiled_is_adopted_by_another_of_the_same_fingerprint_and_checked() {
        let (here, there) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let a = Runtime::interruptible(Some(here.path().to_path_buf())).expect("engine");
        let b = Runtime::interruptible(Some(there.path().to_path_buf())).expect("engine");
        assert_eq!(a.fingerprint(), b.fingerprint());
        let wasm =
            assemble(b"(module (func $f (loop (br 0))) (func (export \"_start\") (call $f)))")
                .expect("wat")
                .into_owned();
        let hash = ModuleHash::of(&wasm);
        // Only the runnable part: nothing to share yet.
        let held = a.load(&wasm).expect("compiled");
        assert!(a.shared_code(&hash, None).is_none());
        let whole = held.complete().expect("whole");
        // Whole: from the program held, and from the cache once written.
        assert!(a.shared_code(&hash, Some(&whole)).is_some());
        wait_for(|| a.has_code(&hash));
        let shared = a.shared_code(&hash, None).expect("from the cache");
        assert!(!b.has_code(&hash));
        let adopted = b
            .adopt(hash, &shared, wasm.clone().into())
            .expect("adopted");
        assert!(adopted.is_complete() && adopted.freezable());
        assert!(
            adopted
                .module
                .get_export(crate::instrument::REWIND)
                .is_some()
        );
        assert!(b.has_code(&hash));
        assert!(b.load(&wasm).expect("from the cache").is_complete());

        // Damaged on the way: refused, nothing cached.
        let c = tempfile::tempdir().expect("dir");
        let fresh = Runtime::interruptible(Some(c.path().to_path_buf())).expect("engine");
        let mut damaged = SharedCode {
            code: shared.code.clone(),
            not_freezable: None,
        };
        damaged.code.truncate(damaged.code.len() / 2);
        assert!(matches!(
            fresh.adopt(hash, &damaged, wasm.clone().into()),
            Err(LoadError::Shared(_))
        ));
        assert!(!fresh.has_code(&hash));

        // A module that cannot be frozen is shared with its reason, and code
        // for another engine configuration (epoch checks, compiled by an
        // interruptible runtime) is refused by one without them, whose
        // fingerprint differs.
        let plain = assemble(b"(module (func $f (return_call $f)) (func (export \"_start\")))")
            .expect("wat")
            .into_owned();
        let plain_hash = ModuleHash::of(&plain);
        let p = a.load(&plain).expect("compiled as it is");
        let shared = a.shared_code(&plain_hash, Some(&p)).expect("shared");
        assert!(
            shared
                .not_freezable
                .as_deref()
                .is_some_and(|w| w.contains("tail calls"))
        );
        let adopted = b
            .adopt(plain_hash, &shared, plain.clone().into())
            .expect("adopted");
        assert_eq!(adopted.not_freezable, p.not_freezable);
        assert!(b.has_code(&plain_hash));
        let other = Runtime::new(Some(c.path().to_path_buf())).expect("engine");
        assert_ne!(other.fingerprint(), a.fingerprint());
        assert!(matches!(
            other.adopt(plain_hash, &shared, plain.clone().into()),
            Err(LoadError::Shared(_))
        ));
        assert!(!other.has_code(&plain_hash));
    }
}
