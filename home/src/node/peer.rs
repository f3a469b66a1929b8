//! `Peer`, the capability nodes serve each other: heartbeats, modules
//! (`hasModule`, `loadModule`) and their compiled code (`compiledModule`),
//! bodies to run (`runBody`) or to receive (`receive`), and what a home
//! answers for its processes (signals, identities, checkpoints, moves,
//! listings).
//!
//! Owns nothing; each method calls the room that does the work.

use super::body_control::BodyControlServer;
use super::checkpoint::cluster_checkpoint;
use super::code::{code_for, load_sent};
use super::host::MakeBody;
use super::signals::signal_arg;
use super::state::NodeCore;
use super::transfer::{ArrivalServer, LinkSource, NO_MODULE, whole_program};
use crate::events::MoveCause;
use crate::home_of;
use crate::reports::{write_checkpoint_report, write_migration, write_process};
use crate::rpc::NetLink;
use crate::status::{read_status, write_status};
use crate::wire::{failed, text, texts};
use capnp::capability::Rc as CapRc;
use futures::FutureExt;
use ssi_remote::{Body, BodySpec, ModuleHash, Program};
use ssi_schema::peer;
use std::future::{Future, ready};
use std::sync::Arc;

pub(crate) struct PeerServer {
    pub(crate) core: Arc<NodeCore>,
}

impl PeerServer {
    /// The module a body is to run: held here, or sent with the request.
    pub(crate) fn program_of(
        &self,
        b: ssi_schema::body_launch::Reader<'_>,
    ) -> Result<Program, capnp::Error> {
        let core = &self.core;
        let hash: [u8; 32] = b
            .get_hash()?
            .try_into()
            .map_err(|_| failed("a module hash is 32 bytes"))?;
        let hash = ModuleHash(hash);
        if let Some(m) = core.modules.get(&hash) {
            return Ok(m.clone());
        }
        let bytes = b.get_module()?;
        if bytes.is_empty() {
            return Err(failed(format!("node {} {} {hash}", core.id, NO_MODULE)));
        }
        let program = core.runtime.load_binary(bytes).map_err(failed)?;
        if program.hash != hash {
            return Err(failed(format!("the module sent is not {hash}")));
        }
        core.modules.insert(hash, program.clone());
        Ok(program)
    }
}

impl peer::Server for PeerServer {
    fn heartbeat(
        self: CapRc<Self>,
        params: peer::HeartbeatParams,
        mut results: peer::HeartbeatResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let status = read_status(params.get()?.get_status()?)?;
            self.core.seen(status);
            write_status(results.get().init_status(), &self.core.status());
            Ok(())
        })();
        ready(r)
    }

    fn has_module(
        self: CapRc<Self>,
        params: peer::HasModuleParams,
        mut results: peer::HasModuleResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = (|| -> Result<_, capnp::Error> {
            let p = params.get()?;
            let hash: [u8; 32] = p
                .get_hash()?
                .try_into()
                .map_err(|_| failed("a module hash is 32 bytes"))?;
            let held = self.core.modules.get(&ModuleHash(hash)).map(|p| p.clone());
            Ok((held, p.get_whole()))
        })();
        async move {
            let (held, whole) = asked?;
            if let (Some(program), true) = (&held, whole) {
                whole_program(program.clone()).await.map_err(failed)?;
            }
            results.get().set_present(held.is_some());
            Ok(())
        }
    }

    fn run_body(
        self: CapRc<Self>,
        params: peer::RunBodyParams,
        mut results: peer::RunBodyResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let core = &self.core;
            let b = params.get()?.get_body()?;
            let pid = b.get_pid();
            let program = self.program_of(b)?;
            let spec = BodySpec {
                args: texts(b.get_args()?)?,
                env: texts(b.get_env()?)?,
                unknown_imports_trap: b.get_unknown_imports_trap(),
                max_memory_size: crate::wire::memory_limit(b.get_max_memory_size()),
            };
            let home = text(b.get_home())?;
            let secret = b.get_secret()?.to_vec();
            let made = program.clone();
            let make: MakeBody = Box::new(move |runtime| {
                let link = NetLink::connect(&home, pid, &secret).map_err(|e| e.to_string())?;
                Body::new(runtime, &made, &spec, Box::new(link)).map_err(|e| e.to_string())
            });
            let pinned = b.get_pinned();
            let spawned = core.spawn_body(pid, program, make).map_err(failed)?;
            spawned
                .0
                .pinned
                .store(pinned, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, capnp::Error>(spawned)
        })();
        async move {
            let (slot, started, exit) = r?;
            let control = BodyControlServer::new(slot, exit.boxed_local(), None);
            // Answered once the body runs.
            started
                .await
                .map_err(|_| failed("the body's thread went away"))?
                .map_err(failed)?;
            results.get().set_control(capnp_rpc::new_client(control));
            Ok(())
        }
    }

    fn receive(
        self: CapRc<Self>,
        params: peer::ReceiveParams,
        mut results: peer::ReceiveResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let core = &self.core;
            let b = params.get()?.get_body()?;
            let pid = b.get_pid();
            // A balancer's move is checked against this node's own load.
            core.accepts(pid, Some(b.get_sender_load()).filter(|l| *l > 0.0))
                .map_err(failed)?;
            let program = self.program_of(b)?;
            let home = text(b.get_home())?;
            let secret = b.get_secret()?.to_vec();
            // The link to the home opens while the image comes.
            let connecting = std::thread::Builder::new()
                .name(format!("link-{pid}"))
                .spawn(move || NetLink::connect(&home, pid, &secret))
                .map_err(failed)?;
            let (ticket, arrival) = core
                .expect(pid, program, LinkSource::Remote(connecting))
                .map_err(failed)?;
            arrival
                .slot
                .pinned
                .store(b.get_pinned(), std::sync::atomic::Ordering::SeqCst);
            let mut r = results.get();
            r.set_ticket(&ticket);
            r.set_arrival(capnp_rpc::new_client(ArrivalServer::new(
                core.clone(),
                ticket,
                arrival,
            )));
            Ok(())
        })();
        ready(r)
    }

    fn checkpoint(
        self: CapRc<Self>,
        params: peer::CheckpointParams,
        mut results: peer::CheckpointResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let pid = p.get_pid();
            if home_of(pid) != core.id {
                return Err(failed(format!("process {pid} does not have its home here")));
            }
            let report = cluster_checkpoint(core, pid, p.get_stop(), p.get_sink()?).await?;
            write_checkpoint_report(results.get().init_report(), &report);
            Ok(())
        }
    }

    fn pin(
        self: CapRc<Self>,
        params: peer::PinParams,
        _: peer::PinResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = params.get().and_then(|p| {
            let pid = p.get_pid();
            if home_of(pid) != self.core.id {
                return Err(failed(format!("process {pid} does not have its home here")));
            }
            self.core.pin(pid, p.get_pinned())
        });
        ready(r)
    }

    fn load_module(
        self: CapRc<Self>,
        params: peer::LoadModuleParams,
        _: peer::LoadModuleResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        let asked = params.get().and_then(|p| {
            let holders: Vec<u16> = p.get_holders()?.iter().collect();
            Ok((p.get_module()?.to_vec(), p.get_whole(), holders))
        });
        async move {
            let (bytes, whole, holders) = asked?;
            load_sent(&core, bytes, whole, holders)
                .await
                .map_err(failed)
        }
    }

    fn compiled_module(
        self: CapRc<Self>,
        params: peer::CompiledModuleParams,
        mut results: peer::CompiledModuleResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        let asked = params.get().and_then(|p| {
            let hash: [u8; 32] = p
                .get_hash()?
                .try_into()
                .map_err(|_| failed("a module hash is 32 bytes"))?;
            Ok((ModuleHash(hash), p.get_fingerprint()))
        });
        async move {
            let (hash, fingerprint) = asked?;
            if let Some(shared) = code_for(&core, hash, fingerprint).await.map_err(failed)? {
                let mut r = results.get();
                r.set_code(&shared.code);
                r.set_not_freezable(shared.not_freezable.as_deref().unwrap_or(""));
            }
            Ok(())
        }
    }

    fn migrate(
        self: CapRc<Self>,
        params: peer::MigrateParams,
        mut results: peer::MigrateResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let sender_load = Some(p.get_sender_load()).filter(|l| *l > 0.0);
            let cause = MoveCause::from_wire(p.get_cause()?);
            let why = text(p.get_why())?;
            let report = core
                .migrate(
                    p.get_pid(),
                    p.get_node(),
                    sender_load,
                    cause,
                    &why,
                    p.has_progress().then(|| p.get_progress()).transpose()?,
                )
                .await?;
            write_migration(results.get().init_report(), &report);
            Ok(())
        }
    }

    fn events(
        self: CapRc<Self>,
        params: peer::EventsParams,
        _: peer::EventsResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            core.push_own_events(p.get_sink()?, p.get_backlog(), p.get_follow())
                .await
        }
    }

    fn drain(
        self: CapRc<Self>,
        params: peer::DrainParams,
        mut results: peer::DrainResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let outcome = core.drain(params.get()?.get_draining()).await;
            outcome.write(results.get());
            Ok(())
        }
    }

    fn signal(
        self: CapRc<Self>,
        params: peer::SignalParams,
        mut results: peer::SignalResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let p = params.get()?;
            let sig = signal_arg(p.get_signal())?;
            let n = self.core.signal(p.get_target(), sig).map_err(failed)?;
            results.get().set_count(n);
            Ok(())
        })();
        ready(r)
    }

    fn identity(
        self: CapRc<Self>,
        params: peer::IdentityParams,
        mut results: peer::IdentityResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let pid = params.get()?.get_pid();
            let id = self
                .core
                .identity_of(pid)
                .ok_or_else(|| failed(format!("no process {pid}")))?;
            let mut b = results.get().init_identity();
            b.set_pid(id.pid);
            b.set_ppid(id.ppid);
            b.set_pgid(id.pgid);
            b.set_sid(id.sid);
            Ok(())
        })();
        ready(r)
    }

    fn processes(
        self: CapRc<Self>,
        _: peer::ProcessesParams,
        mut results: peer::ProcessesResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let procs = self.core.home_processes();
        let bodies = self.core.body_stats();
        let mut r = results.get();
        let mut list = r.reborrow().init_processes(procs.len() as u32);
        for (i, p) in procs.iter().enumerate() {
            write_process(list.reborrow().get(i as u32), p);
        }
        let mut list = r.init_bodies(bodies.len() as u32);
        for (i, s) in bodies.iter().enumerate() {
            let mut b = list.reborrow().get(i as u32);
            b.set_pid(s.pid);
            b.set_cpu_ns(s.cpu_ns);
            b.set_memory(s.memory);
            b.set_waiting(s.waiting);
        }
        ready(Ok(()))
    }
}
