//! Compiled code shared between nodes, so that a cluster compiles each
//! module once: a node sent a module it has no code for asks the nodes that
//! may hold it (`Peer.loadModule`'s `holders`) for theirs
//! (`Peer.compiledModule`), as a home that launches a program asks its
//! peers (`launch_holders`), and compiles it only when none of them has it
//! for its own engine and CPU (the runtime's fingerprint, checked by the
//! node that answers and by wasmtime as it loads the code).
//!
//! Must not know: processes, bodies.

use super::state::NodeCore;
use super::transfer::{peer_at, while_up};
use crate::NodeId;
use crate::events::Event;
use futures::channel::oneshot;
use ssi_remote::{ModuleHash, Program, SharedCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a holder may take to hand over a module's code (a few hundred
/// MB on a slow link) before this node compiles the module itself.
const FETCH_WITHIN: Duration = Duration::from_secs(120);

/// Runs `work` on a thread of its own (instrumenting, compiling and
/// serializing take seconds): the connection goes on answering meanwhile.
pub(crate) async fn on_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (done, result) = oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = done.send(work());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    result
        .await
        .map_err(|_| format!("the {name} thread went away"))
}

/// What this node answers a peer of fingerprint `fingerprint` that asks for
/// the compiled code of module `hash`: its code when it holds it whole,
/// from the cache or serialized from the program it holds.
pub(crate) async fn code_for(
    core: &Arc<NodeCore>,
    hash: ModuleHash,
    fingerprint: u64,
) -> Result<Option<SharedCode>, String> {
    if fingerprint != core.runtime.fingerprint() {
        return Ok(None);
    }
    let held = core.modules.get(&hash).map(|p| p.clone());
    let core = core.clone();
    on_thread("share-code", move || {
        core.runtime.shared_code(&hash, held.as_ref())
    })
    .await
}

/// Asks node `from` for the compiled code of module `hash`.
async fn fetch(
    core: &NodeCore,
    from: NodeId,
    hash: &ModuleHash,
) -> Result<Option<SharedCode>, String> {
    let (_, _gateway, peer) = peer_at(core, from).await?;
    let mut ask = peer.compiled_module_request();
    ask.get().set_hash(&hash.0);
    ask.get().set_fingerprint(core.runtime.fingerprint());
    let answer = while_up(
        core,
        from,
        tokio::time::timeout(FETCH_WITHIN, ask.send().promise),
    )
    .await?
    .map_err(|_| format!("node {from} did not answer within {FETCH_WITHIN:?}"))?
    .map_err(|e| format!("node {from}: {}", crate::rpc::remote_message(&e)))?;
    let r = answer.get().map_err(|e| format!("node {from}: {e}"))?;
    let code = r.get_code().map_err(|e| format!("node {from}: {e}"))?;
    if code.is_empty() {
        return Ok(None);
    }
    let why = crate::wire::text(r.get_not_freezable()).map_err(|e| format!("node {from}: {e}"))?;
    Ok(Some(SharedCode {
        code: code.to_vec(),
        not_freezable: Some(why).filter(|w| !w.is_empty()),
    }))
}

/// The program of the module of `hash` from the code one of `holders`
/// compiled, when this node has none of its own in its cache: the first
/// that hands over code this node can load. None: it is to be compiled here.
pub(crate) async fn take_code(
    core: &Arc<NodeCore>,
    hash: ModuleHash,
    wasm: &bytes::Bytes,
    holders: Vec<NodeId>,
) -> Option<Program> {
    if core.runtime.has_code(&hash) {
        return None;
    }
    for from in holders.into_iter().filter(|h| *h != core.id) {
        let started = Instant::now();
        let shared = match fetch(core, from, &hash).await {
            Ok(Some(shared)) => shared,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(module = %hash, node = from, error = %e, "cannot fetch compiled code");
                continue;
            }
        };
        let size = shared.code.len();
        let (c, wasm) = (core.clone(), wasm.clone());
        match on_thread("adopt-code", move || c.runtime.adopt(hash, &shared, wasm)).await {
            Ok(Ok(program)) => {
                core.record(Event::new(
                    "fetched",
                    core.id,
                    format!(
                        "compiled code of module {} from node {from}: {:.1} MB in {} ms",
                        short(&hash),
                        size as f64 / 1e6,
                        started.elapsed().as_millis()
                    ),
                ));
                return Some(program);
            }
            Ok(Err(e)) => {
                tracing::warn!(module = %hash, node = from, error = %e, "compiling the module here instead")
            }
            Err(e) => {
                tracing::warn!(module = %hash, error = %e, "compiling the module here instead")
            }
        }
    }
    None
}

/// The nodes a home asks for the code of a module it launches and has not
/// compiled: those known to hold it, then other peers that are up, at most
/// [`ASKED_AT_LAUNCH`] (each answers at once when it does not hold it).
pub(crate) fn launch_holders(core: &NodeCore, hash: &ModuleHash) -> Vec<NodeId> {
    let mut asked: Vec<NodeId> = core.holders(hash);
    let mut up: Vec<NodeId> = core
        .peers
        .iter()
        .filter(|p| p.value().up)
        .map(|p| *p.key())
        .collect();
    up.sort_unstable();
    for id in up {
        if !asked.contains(&id) {
            asked.push(id);
        }
    }
    asked.retain(|id| *id != core.id);
    asked.truncate(ASKED_AT_LAUNCH);
    asked
}

/// How many peers a home asks for a module's code before it compiles it.
const ASKED_AT_LAUNCH: usize = 8;

/// Loads the module `wasm` (binary) sent here, and holds it: with the code
/// one of `holders` compiled when this node has none of its own, else
/// instrumented and compiled here. With `whole`, returns once its whole
/// module is compiled.
pub(crate) async fn load_sent(
    core: &Arc<NodeCore>,
    wasm: Vec<u8>,
    whole: bool,
    holders: Vec<NodeId>,
) -> Result<(), String> {
    let wasm = bytes::Bytes::from(wasm);
    let hash = ModuleHash::of(&wasm);
    if let Some(program) = take_code(core, hash, &wasm, holders).await {
        core.modules.insert(hash, program);
        return Ok(());
    }
    let c = core.clone();
    on_thread("load-module", move || {
        let program = c
            .runtime
            .load_shared(&wasm, whole)
            .map_err(|e| e.to_string())?;
        c.modules.insert(program.hash, program);
        Ok(())
    })
    .await?
}

/// A module's hash as events show it.
fn short(hash: &ModuleHash) -> String {
    hash.to_hex()[..12].to_string()
}
