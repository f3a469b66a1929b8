//! Starting a process at its home: from a module (`launch`) or from a
//! checkpoint (`restore`). Both enter the process into this home's table,
//! start its body here or on a peer (`start_body`) and the task that follows it
//! (`run_process`), and serve the session its `Process`.
//!
//! Owns the order of a start: a start that fails leaves no entry and frees its
//! pid. Must not know: how a body runs, how a move happens.

use super::api::HomeTable;
use super::code::{launch_holders, on_thread, take_code};
use super::common::{lock, now_ms};
use super::family::Reap;
use super::host::MakeBody;
use super::orders::Order;
use super::placement::{Placement, Running, Source};
use super::session::ProcessServer;
use super::state::NodeCore;
use super::table::{HomeProc, Notice};
use super::task::ProcessTask;
use super::transfer::{NO_MODULE, peer_at, remote_running, restore_at, send_module, while_up};
use crate::console::{Interrupter, Ttys, console_stdio};
use crate::events::Event;
use crate::wire::{ExitReport, failed, set_texts, text, texts};
use crate::{NodeId, Pid, ProcState, ProcessInfo};
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, Shared};
use ssi_deputy::{Deputy, Preopen};
use ssi_remote::{Body, BodySpec, DeputyLink, LocalLink};
use ssi_schema::{console, process};
use std::future::ready;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A launch request, read out of its message.
pub(crate) struct LaunchRequest {
    pub(crate) module: Vec<u8>,
    pub(crate) module_name: String,
    pub(crate) command: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) preopens: Vec<Preopen>,
    pub(crate) node: NodeId,
    pub(crate) ttys: Ttys,
    pub(crate) pin: bool,
    pub(crate) unknown_imports_trap: bool,
    pub(crate) max_memory_size: Option<u64>,
}

impl LaunchRequest {
    pub(crate) fn read(r: ssi_schema::launch_spec::Reader<'_>) -> Result<Self, capnp::Error> {
        let preopens = r
            .get_preopens()?
            .iter()
            .map(|p| {
                Ok(Preopen {
                    host: PathBuf::from(text(p.get_host())?),
                    guest: text(p.get_guest())?,
                })
            })
            .collect::<Result<_, capnp::Error>>()?;
        Ok(LaunchRequest {
            module: r.get_module()?.to_vec(),
            module_name: text(r.get_module_name())?,
            command: text(r.get_command())?,
            args: texts(r.get_args()?)?,
            env: texts(r.get_env()?)?,
            preopens,
            node: r.get_node(),
            ttys: Ttys {
                stdin: r.get_stdin_tty(),
                stdout: r.get_stdout_tty(),
                stderr: r.get_stderr_tty(),
            },
            pin: r.get_pin(),
            unknown_imports_trap: r.get_unknown_imports_trap(),
            max_memory_size: crate::wire::memory_limit(r.get_max_memory_size()),
        })
    }
}

pub(crate) async fn launch(
    core: Arc<NodeCore>,
    spec: LaunchRequest,
    console: console::Client,
) -> Result<(process::Client, Pid), capnp::Error> {
    let what = &spec.module_name;
    let wasm = ssi_remote::assemble(&spec.module)
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")))?
        .into_owned();
    // Before the module is compiled, which can take minutes.
    ssi_remote::check_bytes(&wasm, spec.unknown_imports_trap)
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")))?;
    // A pinned process with no node given stays at home.
    let target = match spec.node {
        0 if spec.pin => core.id,
        0 => core.place(),
        node => node,
    };
    // Checked before the process is set up, as well as when its body starts.
    core.can_host(target).map_err(failed)?;
    let pid = core.pids.allocate().map_err(failed)?;
    let loaded = match load_listed(&core, pid, target, (what, &spec.command), wasm).await {
        Ok(loaded) => loaded,
        Err(e) => {
            core.pids.release(pid);
            return e.map(|sig| ended_while_loading(&core, pid, sig));
        }
    };
    let (program, wasm) = loaded;
    let (stdio, pump) = console_stdio(spec.ttys);
    let deputy = Deputy::new(stdio, spec.preopens)
        .map(|mut d| {
            pump.attach_input(&mut d);
            d
        })
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")));
    let deputy = match deputy {
        Ok(d) => d,
        Err(e) => {
            core.pids.release(pid);
            return Err(e);
        }
    };
    let source = Source {
        program,
        wasm,
        spec: BodySpec {
            args: spec.args,
            env: spec.env,
            unknown_imports_trap: spec.unknown_imports_trap,
            max_memory_size: spec.max_memory_size,
        },
        deputy: Arc::new(Mutex::new(deputy)),
    };
    let start = Start {
        pid,
        // Each launched process leads its own group and session, as a shell's job does.
        identity: ssi_deputy::Identity::leader(pid),
        command: spec.command,
        target,
        image: None,
        pinned: spec.pin,
    };
    start_process(core, start, source, pump, console).await
}

/// Loads a launched process's module on a thread of its own, the process
/// listed meanwhile as `loading` under `pid` (so `ssictl ps` shows it and a
/// signal reaches it). The program and the module's bytes; or why not: a
/// load that failed (`Err(Err)`), or the signal that ended it (`Err(Ok)`).
async fn load_listed(
    core: &Arc<NodeCore>,
    pid: Pid,
    target: NodeId,
    (what, command): (&str, &str),
    wasm: Vec<u8>,
) -> Result<(ssi_remote::Program, bytes::Bytes), Result<ssi_deputy::Signal, capnp::Error>> {
    // Shared, not copied, by the process and its program (a module can be
    // tens of megabytes).
    let wasm = bytes::Bytes::from(wasm);
    let (ended, end) = oneshot::channel();
    core.loading.insert(
        pid,
        super::table::Loading {
            info: ProcessInfo {
                pid,
                home: core.id,
                node: target,
                state: ProcState::Loading,
                command: command.to_string(),
                started_ms: now_ms(),
                cpu_ns: 0,
                memory: 0,
                pgid: pid,
                ppid: 0,
                pinned: None,
                moves: 0,
                user_pinned: false,
            },
            ended: Mutex::new(Some(ended)),
        },
    );
    // The code a peer compiled, if one has it; else compiled here, on a
    // thread of its own.
    let load = {
        let core = core.clone();
        async move {
            let hash = ssi_remote::ModuleHash::of(&wasm);
            let holders = launch_holders(&core, &hash);
            if let Some(program) = take_code(&core, hash, &wasm, holders).await {
                return Ok((program, wasm));
            }
            let loader = core.clone();
            on_thread(&format!("load-{pid}"), move || {
                loader.runtime.load_shared(&wasm, false).map(|p| (p, wasm))
            })
            .await
            .map_err(|e| format!("cannot load the module: {e}"))?
            .map_err(|e| format!("cannot run `{what}`: {e}"))
        }
    };
    let outcome = match futures::future::select(Box::pin(load), end).await {
        futures::future::Either::Left((loaded, _)) => loaded.map_err(|e| Err(failed(e))),
        futures::future::Either::Right((Ok(sig), _)) => Err(Ok(sig)),
        futures::future::Either::Right((Err(_), _)) => {
            Err(Err(failed("the loading process went away")))
        }
    };
    core.loading.remove(&pid);
    outcome
}

/// A process that a signal ended while its module was loading: its session
/// is given a process that has ended so, as if its body had been killed.
fn ended_while_loading(
    core: &Arc<NodeCore>,
    pid: Pid,
    sig: ssi_deputy::Signal,
) -> (process::Client, Pid) {
    core.record(
        Event::new(
            "exited",
            core.id,
            format!("process {pid} was ended by {sig} while its module was loading"),
        )
        .of(pid),
    );
    let exit = ready(ExitReport::Signaled(sig.number()))
        .boxed_local()
        .shared();
    let process = capnp_rpc::new_client(ProcessServer {
        core: core.clone(),
        pid,
        exit,
        orders: None,
    });
    (process, pid)
}

/// Restarts a checkpoint with this node as its home (`ssirun --restore`).
pub(crate) async fn restore(
    core: Arc<NodeCore>,
    image: Vec<u8>,
    node: NodeId,
    ttys: Ttys,
    console: console::Client,
) -> Result<(process::Client, Pid), capnp::Error> {
    let bad = |e: String| failed(format!("cannot restore the checkpoint: {e}"));
    let ghost = ssi_remote::ghost::read_meta(&image).map_err(|e| bad(e.to_string()))?;
    let (Some(wasm), Some(state)) = (&ghost.module_bytes, &ghost.deputy) else {
        return Err(bad(
            "it is a ghost image without a deputy and a module section, not a checkpoint".into(),
        ));
    };
    let state = ssi_deputy::DeputyState::decode(state).map_err(|e| bad(e.to_string()))?;
    // One copy of the image's module, shared by the process and its program.
    let wasm = bytes::Bytes::copy_from_slice(wasm);
    let program = core
        .runtime
        .load_shared(&wasm, false)
        .map_err(|e| bad(format!("its module: {e}")))?;
    if ghost.module != Some(program.hash) {
        return Err(bad(
            "its module section is not the module its image was taken from".into(),
        ));
    }
    let target = if node == 0 { core.id } else { node };
    core.can_host(target).map_err(failed)?;
    let (stdio, pump) = console_stdio(ttys);
    let mut deputy = Deputy::restore(stdio, &state).map_err(|e| bad(e.to_string()))?;
    pump.attach_input(&mut deputy);
    // Its own pid if that is of this home and free (the process keeps its
    // identity); otherwise a new one, which leads its own group.
    let (pid, identity) = if core.pids.claim(state.pid) {
        let mut identity = state.identity();
        // A child whose parent is gone is the reaper's.
        if identity.ppid != 0 && core.identity_of(identity.ppid).is_none() {
            identity.ppid = 0;
        }
        (state.pid, identity)
    } else {
        let pid = core.pids.allocate().map_err(failed)?;
        (pid, ssi_deputy::Identity::leader(pid))
    };
    let text = |list: &[Vec<u8>]| -> Vec<String> {
        list.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let spec = BodySpec {
        args: text(&ghost.args),
        env: text(&ghost.env),
        // Launched already: linked as it was, and bounded as it was.
        unknown_imports_trap: true,
        max_memory_size: ghost.max_memory,
    };
    let source = Source {
        program,
        wasm,
        deputy: Arc::new(Mutex::new(deputy)),
        spec,
    };
    drop(ghost);
    let start = Start {
        pid,
        identity,
        command: source.spec.args.join(" "),
        target,
        image: Some(image),
        pinned: false,
    };
    start_process(core, start, source, pump, console).await
}

/// How a process starts: from the beginning or from an image.
pub(crate) struct Start {
    /// Held by the caller; freed if the start fails.
    pub(crate) pid: Pid,
    pub(crate) identity: ssi_deputy::Identity,
    pub(crate) command: String,
    pub(crate) target: NodeId,
    pub(crate) image: Option<Vec<u8>>,
    /// The balancer leaves it where it starts.
    pub(crate) pinned: bool,
}

/// Enters a process into this home's table, starts its body and the task that
/// follows it, and serves its session the process.
pub(crate) async fn start_process(
    core: Arc<NodeCore>,
    start: Start,
    source: Source,
    pump: crate::console::ConsolePump,
    console: console::Client,
) -> Result<(process::Client, Pid), capnp::Error> {
    let pid = start.pid;
    let flusher = pump.flusher();
    let interrupter = pump.interrupter();
    tokio::task::spawn_local(pump.run(console));
    let (exit, orders) = run_process(&core, start, source, interrupter, Some(flusher)).await?;
    let process = capnp_rpc::new_client(ProcessServer {
        core: core.clone(),
        pid,
        exit,
        orders: Some(orders),
    });
    Ok((process, pid))
}

/// The end of a process, as its session waits for it.
pub(crate) type ExitFuture = Shared<LocalBoxFuture<'static, ExitReport>>;

/// Enters a process into this home's table and starts its body; the task that
/// follows it to its end runs on the calling thread's `LocalSet`. On failure
/// the process is out of the table and its pid free again.
pub(crate) async fn run_process(
    core: &Arc<NodeCore>,
    start: Start,
    source: Source,
    interrupter: Interrupter,
    flusher: Option<crate::console::Flusher>,
) -> Result<(ExitFuture, super::orders::OrderSender), capnp::Error> {
    let pid = start.pid;
    let command = start.command.clone();
    // Taken now: once the body runs, it may hold its deputy in a call that
    // waits for this thread (a read of the console).
    let signals = {
        let mut deputy = lock(&source.deputy);
        deputy.set_process(
            start.identity,
            Arc::new(HomeTable {
                core: Arc::downgrade(core),
            }),
        );
        deputy.signals()
    };
    core.modules
        .insert(source.program.hash, source.program.clone());
    // Its body may come here (the balancer brings bodies home): the whole
    // module is made ready as if the body ran here.
    source.program.complete_after(ssi_remote::WARM_UP);
    let (orders_tx, orders) = tokio::sync::mpsc::unbounded_channel::<Order>();
    let notice = Arc::new(Notice::default());
    core.procs.insert(
        pid,
        HomeProc {
            info: ProcessInfo {
                pid,
                home: core.id,
                node: start.target,
                state: ProcState::Running,
                command: command.clone(),
                started_ms: now_ms(),
                cpu_ns: 0,
                memory: 0,
                pgid: start.identity.pgid,
                ppid: start.identity.ppid,
                pinned: source.program.not_freezable.clone(),
                moves: 0,
                user_pinned: start.pinned,
            },
            identity: start.identity,
            deputy: source.deputy.clone(),
            orders: orders_tx.clone(),
            secret: None,
            zombie: None,
            change: None,
            notice: notice.clone(),
            interrupter: interrupter.clone(),
            program: source.program.clone(),
            wasm: source.wasm.clone(),
            max_memory: source.spec.max_memory_size,
        },
    );
    let mut reap = Reap::new(core.clone(), pid);
    // Told before the body runs: what it does (children it spawns) comes after.
    core.record(
        Event::new(
            "started",
            start.target,
            format!(
                "process {pid} started on node {}: {}",
                start.target, command
            ),
        )
        .of(pid),
    );
    let first = match start_body(core, pid, start.target, &source, start.image).await {
        Ok(first) => first,
        Err(e) => {
            reap.discard();
            core.record(
                Event::new(
                    "failed",
                    start.target,
                    format!(
                        "process {pid} could not start on node {}: {}",
                        start.target,
                        crate::rpc::remote_message(&e)
                    ),
                )
                .of(pid),
            );
            return Err(e);
        }
    };
    let (done, report) = oneshot::channel::<ExitReport>();
    let task = ProcessTask {
        core: core.clone(),
        pid,
        own_console: flusher.is_some(),
        interrupter,
        notice,
        signals,
        source,
        links: Default::default(),
    };
    let core_ = core.clone();
    tokio::task::spawn_local(async move {
        let report = task.run(first, orders).await;
        tracing::debug!(pid, ?report, "process ended");
        // Everything the program wrote reaches the session before its end does;
        // then the session's console is let go.
        if let Some(flusher) = flusher {
            flusher.close().await;
            tracing::debug!(pid, "its output reached its session");
        }
        // Told before the table lets it go (where its body was is there).
        let event = ended(&core_, pid, &report);
        reap.ended(&report);
        drop(reap);
        if let Some(e) = event {
            core_.record(e);
        }
        let _ = done.send(report);
        tracing::debug!(pid, "its end is told");
    });
    let exit = async move {
        report.await.unwrap_or_else(|_| {
            ExitReport::Failed(vec!["the process's task ended without a report".into()])
        })
    }
    .boxed_local()
    .shared();
    Ok((exit, orders_tx))
}

/// Starts a process's body on node `target` (this node or a peer), from the
/// start or from a ghost image held whole (a checkpoint). Returns once the
/// body runs (for an image: once it is restored).
pub(crate) async fn start_body(
    core: &Arc<NodeCore>,
    pid: Pid,
    target: NodeId,
    source: &Source,
    image: Option<Vec<u8>>,
) -> Result<Running, capnp::Error> {
    let pinned = core.is_pinned(pid);
    if target == core.id {
        let link_deputy = source.deputy.clone();
        let (program, spec) = (source.program.clone(), source.spec.clone());
        let make: MakeBody = Box::new(move |runtime| {
            let link: Box<dyn DeputyLink> = Box::new(LocalLink::new(link_deputy));
            match image {
                None => Body::new(runtime, &program, &spec, link),
                Some(bytes) => Body::restore(runtime, &program, &bytes, link),
            }
            .map_err(|e| e.to_string())
        });
        let (slot, started, end) = core
            .spawn_body(pid, source.program.clone(), make)
            .map_err(failed)?;
        slot.pinned
            .store(pinned, std::sync::atomic::Ordering::SeqCst);
        started
            .await
            .map_err(|_| failed("the body's thread went away"))?
            .map_err(failed)?;
        return Ok(Running {
            place: Placement::Local(slot),
            end: end.boxed_local(),
        });
    }
    if let Some(image) = image {
        return restore_at(core, pid, target, source, image)
            .await
            .map_err(failed);
    }
    let (address, gateway, peer) = peer_at(core, target).await.map_err(failed)?;
    let hash = source.program.hash;
    send_module(core, target, &hash, &source.wasm, false)
        .await
        .map_err(failed)?;
    let secret: [u8; 16] = rand::random();
    if let Some(mut p) = core.procs.get_mut(&pid) {
        p.secret = Some(secret);
    }
    let run = |with_module: bool| {
        let mut req = peer.run_body_request();
        let mut b = req.get().init_body();
        b.set_pid(pid);
        b.set_hash(&hash.0);
        if with_module {
            b.set_module(&source.wasm);
        }
        set_texts(
            b.reborrow().init_args(source.spec.args.len() as u32),
            &source.spec.args,
        );
        set_texts(
            b.reborrow().init_env(source.spec.env.len() as u32),
            &source.spec.env,
        );
        b.set_unknown_imports_trap(source.spec.unknown_imports_trap);
        b.set_max_memory_size(crate::wire::memory_limit_wire(source.spec.max_memory_size));
        b.set_home(&core.address);
        b.set_secret(&secret);
        b.set_clock_offset(0);
        b.set_pinned(pinned);
        req.send().promise
    };
    // A node that held the module may have restarted since: then it is sent.
    let started = while_up(core, target, async {
        match run(false).await {
            Err(e) if crate::rpc::remote_message(&e).contains(NO_MODULE) => run(true).await,
            r => r,
        }
    })
    .await;
    let reply = match started {
        Ok(reply) => reply?,
        // Silent before it said the body runs: the body may run there (its
        // output may even have come), and nothing more will be heard of it.
        Err(_) => {
            let why = format!("node {target} ({address}) stopped answering as the body started");
            let gone = capnp::Error::disconnected(why.clone());
            return Ok(Running {
                place: Placement::Remote {
                    node: target,
                    control: capnp_rpc::new_future_client(ready(Err(gone))),
                },
                end: ready(ExitReport::Lost(why)).boxed_local(),
            });
        }
    };
    let control = reply.get()?.get_control()?;
    core.note_holds(target, hash, false);
    Ok(remote_running(
        core.clone(),
        target,
        address,
        gateway,
        control,
    ))
}

/// A process's end as an event: where its body was, and how it ended
/// (none for a body that moved on, whose process goes on).
fn ended(core: &NodeCore, pid: Pid, report: &ExitReport) -> Option<Event> {
    let node = core.procs.get(&pid).map_or(core.id, |p| p.info.node);
    let (kind, status, what) = match report {
        ExitReport::Status(code) => ("exited", Some(*code), format!("exited with status {code}")),
        ExitReport::Signaled(n) => (
            "killed",
            Some(i32::from(*n)),
            format!("was killed by {}", signal_name(*n)),
        ),
        ExitReport::Trap(lines) => (
            "trapped",
            None,
            format!(
                "trapped: {}",
                lines.first().map(String::as_str).unwrap_or("wasm trap")
            ),
        ),
        ExitReport::Failed(lines) => ("failed", None, format!("failed: {}", lines.join("; "))),
        ExitReport::Lost(why) => ("lost", None, format!("was lost: {why}")),
        ExitReport::Checkpointed => (
            "exited",
            None,
            "ended after its checkpoint (stopped there)".to_string(),
        ),
        ExitReport::Moved => return None,
    };
    let mut e = Event::new(kind, node, format!("process {pid} {what}")).of(pid);
    e.status = status;
    Some(e)
}

/// A signal's name (SIGTERM), or its number.
fn signal_name(n: u8) -> String {
    ssi_deputy::Signal::from_number(n)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("signal {n}"))
}
