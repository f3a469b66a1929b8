//! Rewind copies made on demand, on the engine's side: a program's kept
//! modules of rewind copies (`OnDemand`, made by
//! [`crate::instrument::rewind_module`]) and their linking to a body's
//! instance (`link_rewinds`).

use crate::engine::compile;
use std::sync::{Arc, Mutex, OnceLock};
use wasmtime::{Engine, Module};

/// The rewind copies of a program made on demand (see
/// [`crate::instrument::rewind_module`]): a module per set of functions on
/// the stacks put back, compiled once and kept.
pub(crate) struct OnDemand {
    wasm: Arc<[u8]>,
    prepared: OnceLock<Result<Arc<crate::instrument::Prepared>, String>>,
    modules: Mutex<std::collections::HashMap<Vec<u32>, Module>>,
}

/// How many modules of rewind copies a program keeps compiled.
const REWIND_MODULES_KEPT: usize = 64;

impl OnDemand {
    /// The rewind copies of `wasm`, with what they need of it if it is
    /// already worked out (else worked out at the first rewind).
    pub(crate) fn new(wasm: &[u8], prepared: Option<crate::instrument::Prepared>) -> Arc<OnDemand> {
        let worked_out = OnceLock::new();
        if let Some(p) = prepared {
            let _ = worked_out.set(Ok(Arc::new(p)));
        }
        Arc::new(OnDemand {
            wasm: wasm.into(),
            prepared: worked_out,
            modules: Default::default(),
        })
    }

    fn prepared(&self) -> Result<Arc<crate::instrument::Prepared>, String> {
        self.prepared
            .get_or_init(|| {
                crate::instrument::prepare(&self.wasm)
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }

    /// The functions whose rewind copies put `stack` back.
    pub(crate) fn stack_functions(&self, stack: &[u8]) -> Result<Vec<u32>, String> {
        crate::instrument::stack_functions(&self.wasm, &*self.prepared()?, stack)
            .map_err(|e| e.to_string())
    }

    /// The compiled module of the rewind copies of `functions`.
    pub(crate) fn rewind_module(
        &self,
        engine: &Engine,
        functions: &[u32],
    ) -> Result<Module, String> {
        let kept = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = kept.get(functions) {
            return Ok(m.clone());
        }
        drop(kept);
        let wasm = crate::instrument::rewind_module(&self.wasm, &*self.prepared()?, functions)
            .map_err(|e| e.to_string())?;
        let module = compile(engine, &wasm).map_err(|e| e.to_string())?;
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if modules.len() >= REWIND_MODULES_KEPT {
            modules.clear();
        }
        modules.insert(functions.to_vec(), module.clone());
        Ok(module)
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
