//! `ssi spawn`: a child at its parent's home, its deputy built from the
//! parent's (the descriptors named, or all, shared as after `fork`), its body on
//! any node, started on a thread of its own; returns once the body runs.
//!
//! Must not know: sessions (a child shares its parent's console).

use super::launch::{Start, run_process};
use super::placement::Source;
use super::state::NodeCore;
use crate::Pid;
use crate::rpc::thread_runtime;
use ssi_deputy::Errno;
use ssi_deputy::process::Child;
use ssi_remote::BodySpec;
use std::sync::{Arc, Mutex};

impl NodeCore {
    /// Starts a child at this home (`ssi` `spawn`), from its parent's deputy
    /// thread: it shares its parent's console, its body starts where `node`
    /// says, and its task runs on a thread of its own. Returns once the body
    /// runs, so that a failure to start is the parent's error.
    pub(crate) fn spawn_child(self: &Arc<Self>, child: Child) -> Result<Pid, Errno> {
        let core = self;
        let (parent, interrupter, program, wasm, max_memory) = core
            .procs
            .get(&child.parent)
            .filter(|p| p.zombie.is_none())
            .map(|p| {
                (
                    p.identity,
                    p.interrupter.clone(),
                    p.program.clone(),
                    p.wasm.clone(),
                    p.max_memory,
                )
            })
            .ok_or(Errno::Srch)?;
        let own_module = child.module.is_none();
        let (program, wasm) = match child.module {
            None => (program, wasm),
            Some(bytes) => {
                let loaded = ssi_remote::assemble(&bytes)
                    .map(|w| bytes::Bytes::from(w.into_owned()))
                    .map_err(|e| e.to_string())
                    .and_then(|w| {
                        ssi_remote::check_bytes(&w, false).map_err(|e| e.to_string())?;
                        let p = core
                            .runtime
                            .load_shared(&w, false)
                            .map_err(|e| e.to_string())?;
                        Ok((p, w))
                    });
                loaded.map_err(|e| {
                    tracing::info!(parent = child.parent, "spawn: not a module it can run: {e}");
                    Errno::Noexec
                })?
            }
        };
        let target = if child.node == 0 {
            core.place()
        } else {
            child.node
        };
        if let Err(e) = core.can_host(target) {
            tracing::info!(parent = child.parent, "spawn: {e}");
            return Err(Errno::Hostunreach);
        }
        let pid = core.pids.allocate().map_err(|_| Errno::Again)?;
        let text = |list: Vec<Vec<u8>>| -> Vec<String> {
            list.into_iter()
                .map(|a| String::from_utf8_lossy(&a).into_owned())
                .collect()
        };
        let args = text(child.args);
        let start = Start {
            pid,
            identity: ssi_deputy::Identity {
                pid,
                ppid: child.parent,
                pgid: parent.pgid,
                sid: parent.sid,
            },
            command: args.join(" "),
            target,
            image: None,
            pinned: false,
        };
        let source = Source {
            program,
            wasm,
            spec: BodySpec {
                args,
                env: text(child.env),
                // Its parent's own module runs as the parent's was launched.
                unknown_imports_trap: own_module,
                max_memory_size: max_memory,
            },
            deputy: Arc::new(Mutex::new(child.deputy)),
        };
        let (started, outcome) = flume::bounded::<Result<(), Errno>>(1);
        let thread_core = core.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ssi-proc-{pid}"))
            .spawn(move || {
                let Ok(rt) = thread_runtime() else {
                    thread_core.pids.release(pid);
                    let _ = started.send(Err(Errno::Again));
                    return;
                };
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async {
                    let r = run_process(&thread_core, start, source, interrupter, None).await;
                    let _ = started.send(r.map(|_| ()).map_err(|e| {
                        tracing::warn!(pid, "spawn: the child's body did not start: {}", e.extra);
                        Errno::Hostunreach
                    }));
                });
                // The child's task runs to its end.
                rt.block_on(local);
            });
        if spawned.is_err() {
            core.pids.release(pid);
            return Err(Errno::Again);
        }
        outcome.recv().unwrap_or(Err(Errno::Again))?;
        Ok(pid)
    }
}
