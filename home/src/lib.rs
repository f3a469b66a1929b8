//! ssi-home: the services of a node.
//!
//! A node is both a home (it launches processes, allocates their cluster-wide
//! pids, keeps their process table entries and hosts their deputies) and a host
//! (it runs bodies). This crate holds that logic, independent of how a user
//! reaches it: the embedded single-node default used by `ssirun` when no cluster
//! is running is a [`Node`] inside the `ssirun` process.
//!
//! A cluster node ([`Daemon`], run by `ssid`) serves the Cap'n Proto protocol
//! of `ssi-schema`: sessions launch processes, peers exchange heartbeats and
//! host each other's bodies, bodies away from home reach their deputies over
//! a [`NetLink`], administrators list processes and nodes.
//!
//! It knows nothing of terminals' raw modes or of command-line parsing.

mod console;
pub mod events;
mod node;
mod pid;
pub mod policy;
mod reports;
mod rpc;
mod status;
mod wire;

pub use console::{ConsolePump, Flusher, Ttys, console_stdio};
pub use node::{
    Checkpoint, Config, DOWN_AFTER, Daemon, DrainOutcome, HEARTBEAT_EVERY, NodeCore, SignalError,
    StartError, admin_checkpoint, admin_drain, admin_events, admin_migrate, admin_nodes, admin_pin,
    admin_processes, process_checkpoint, restore_request,
};
pub use pid::{MAX_NODE_ID, NodeId, Pid, PidAllocator, PidError, home_of};
pub use reports::{
    CheckpointReport, MigrationReport, NodeInfo, ProcState, ProcessInfo, read_checkpoint_report,
    read_migration,
};
pub use rpc::{
    CONNECT_TIMEOUT, ConnectError, DEPUTY_PREAMBLE, Endpoint, NetLink, connect, connection_closed,
    remote_message, run_connection, thread_runtime,
};
pub use status::NodeStatus;
pub use wire::{ExitReport, memory_limit_wire, read_exit, write_exit};

/// The default Unix socket of the local node: `$SSI_SOCKET`, else
/// `$XDG_RUNTIME_DIR/ssi/node.sock`, else `/tmp/ssi-$UID/node.sock`.
pub fn default_socket() -> std::path::PathBuf {
    if let Some(s) = std::env::var_os("SSI_SOCKET") {
        return s.into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => std::path::Path::new(&dir).join("ssi/node.sock"),
        _ => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            std::path::PathBuf::from(format!("/tmp/ssi-{uid}/node.sock"))
        }
    }
}

use bytes::Bytes;
use dashmap::DashMap;
use ssi_deputy::{Deputy, DeputyError, Preopen, Stdio};
use ssi_remote::{Body, BodyError, BodySpec, Exit, LoadError, LocalLink, Runtime};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// Why a process could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Deputy(#[from] DeputyError),
    #[error(transparent)]
    Pid(#[from] PidError),
    #[error("cannot restore the checkpoint: {0}")]
    Image(ssi_remote::ghost::GhostError),
    #[error("cannot restore the checkpoint: {0}")]
    State(ssi_deputy::StateError),
    #[error("cannot restore the checkpoint: {0}")]
    NotCheckpoint(&'static str),
}

/// What to run.
pub struct LaunchSpec {
    /// The bytes of the module file (binary Wasm or Wasm text).
    pub module: Vec<u8>,
    /// The command line shown in process listings.
    pub command: String,
    /// Arguments (`argv[0]` first) and environment (`NAME=VALUE`).
    pub body: BodySpec,
    pub preopens: Vec<Preopen>,
    pub stdio: Stdio,
}

/// A node: its compilation runtime, its pid space and its process table.
pub struct Node {
    id: NodeId,
    runtime: Runtime,
    pids: PidAllocator,
    procs: DashMap<Pid, ProcessInfo>,
}

/// A launched process whose body is ready to run on this node.
pub struct Process<'n> {
    node: &'n Node,
    pid: Pid,
    /// The module as it runs (binary), which checkpoints carry.
    wasm: Bytes,
    body: Body,
    deputy: Arc<Mutex<Deputy>>,
    table: Arc<EmbeddedTable>,
}

/// The process table of the embedded node, as its one process's deputy sees it:
/// the process can signal itself (its pid or its group).
struct EmbeddedTable {
    pid: Pid,
    killer: std::sync::OnceLock<ssi_remote::Control>,
    fatal: Mutex<Option<ssi_deputy::Signal>>,
}

impl ssi_deputy::ProcessTable for EmbeddedTable {
    fn identity_of(&self, _pid: u32) -> Result<ssi_deputy::Identity, ssi_deputy::Errno> {
        Err(ssi_deputy::Errno::Srch)
    }

    fn kill(
        &self,
        _from: u32,
        target: i32,
        signal: Option<ssi_deputy::Signal>,
    ) -> Result<u32, ssi_deputy::Errno> {
        if target.unsigned_abs() != self.pid {
            return Err(ssi_deputy::Errno::Srch);
        }
        let Some(signal) = signal else { return Ok(1) };
        match signal.default_action() {
            ssi_deputy::DefaultAction::Terminate => {
                let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
                fatal.get_or_insert(signal);
                if let Some(k) = self.killer.get() {
                    k.kill();
                }
                Ok(1)
            }
            ssi_deputy::DefaultAction::Stop => Err(ssi_deputy::Errno::Notsup),
            _ => Ok(1),
        }
    }

    /// Children need a node's process table: `ssirun` runs a program that
    /// imports `ssi` `spawn` on a private node instead of this one.
    fn spawn(&self, _child: ssi_deputy::process::Child) -> Result<u32, ssi_deputy::Errno> {
        Err(ssi_deputy::Errno::Nosys)
    }

    /// The lone process has no children.
    fn wait(
        &self,
        _parent: u32,
        _target: i32,
        _options: u32,
    ) -> Result<(u32, u32), ssi_deputy::Errno> {
        Err(ssi_deputy::Errno::Child)
    }

    /// It leads its session: its group cannot change.
    fn setpgid(&self, _caller: u32, pid: u32, _pgid: u32) -> Result<(), ssi_deputy::Errno> {
        if pid == self.pid {
            Err(ssi_deputy::Errno::Perm)
        } else {
            Err(ssi_deputy::Errno::Srch)
        }
    }

    /// It already leads a group.
    fn setsid(&self, _caller: u32) -> Result<u32, ssi_deputy::Errno> {
        Err(ssi_deputy::Errno::Perm)
    }
}

impl Node {
    pub fn new(id: NodeId, runtime: Runtime) -> Result<Self, PidError> {
        Ok(Node {
            id,
            runtime,
            pids: PidAllocator::new(id)?,
            procs: DashMap::new(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Creates the process: allocates its pid, sets up its deputy here (its home),
    /// and instantiates its body with an in-process link to that deputy.
    pub fn launch(&self, spec: LaunchSpec) -> Result<Process<'_>, LaunchError> {
        // A binary module is kept as it was read (no copy: it can be tens of
        // megabytes), text is assembled.
        let assembled = match ssi_remote::assemble(&spec.module)? {
            std::borrow::Cow::Owned(wasm) => Some(wasm),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let wasm = Bytes::from(assembled.unwrap_or(spec.module));
        // Before the module is compiled, which can take minutes.
        ssi_remote::check_bytes(&wasm, spec.body.unknown_imports_trap)?;
        let program = self.runtime.load_shared(&wasm, false)?;
        let deputy = Deputy::new(spec.stdio, spec.preopens)?;
        let pid = self.pids.allocate()?;
        self.start(
            pid,
            ssi_deputy::Identity::leader(pid),
            deputy,
            wasm,
            spec.command,
            |link| Body::new(&self.runtime, &program, &spec.body, link),
        )
    }

    /// Restarts a checkpoint here, its streams `stdio`: with its own pid if
    /// that pid is of this node and free, else a new one.
    pub fn restore(&self, image: &[u8], stdio: Stdio) -> Result<Process<'_>, LaunchError> {
        let ghost = ssi_remote::ghost::read_meta(image).map_err(LaunchError::Image)?;
        let (Some(wasm), Some(state)) = (&ghost.module_bytes, &ghost.deputy) else {
            return Err(LaunchError::NotCheckpoint(
                "it is a ghost image without a deputy and a module section",
            ));
        };
        let state = ssi_deputy::DeputyState::decode(state).map_err(LaunchError::State)?;
        // One copy of the image's module, shared by the process and its program.
        let wasm = Bytes::copy_from_slice(wasm);
        let program = self.runtime.load_shared(&wasm, false)?;
        if ghost.module != Some(program.hash) {
            return Err(LaunchError::NotCheckpoint(
                "its module section is not the module its image was taken from",
            ));
        }
        let deputy = Deputy::restore(stdio, &state).map_err(LaunchError::State)?;
        let (pid, identity) = if self.pids.claim(state.pid) {
            (state.pid, state.identity())
        } else {
            let pid = self.pids.allocate()?;
            (pid, ssi_deputy::Identity::leader(pid))
        };
        let command = ghost
            .args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        self.start(pid, identity, deputy, wasm, command, |link| {
            Body::restore(&self.runtime, &program, image, link)
        })
    }

    /// Enters a process (its pid held by the caller) into the table, with
    /// the body `make` builds around a link to its deputy.
    fn start(
        &self,
        pid: Pid,
        identity: ssi_deputy::Identity,
        mut deputy: Deputy,
        wasm: Bytes,
        command: String,
        make: impl FnOnce(Box<dyn ssi_remote::DeputyLink>) -> Result<Body, BodyError>,
    ) -> Result<Process<'_>, LaunchError> {
        let table = Arc::new(EmbeddedTable {
            pid,
            killer: std::sync::OnceLock::new(),
            fatal: Mutex::new(None),
        });
        deputy.set_process(identity, table.clone());
        let deputy = Arc::new(Mutex::new(deputy));
        let body = match make(Box::new(LocalLink::new(deputy.clone()))) {
            Ok(b) => b,
            Err(e) => {
                self.pids.release(pid);
                return Err(e.into());
            }
        };
        let _ = table.killer.set(body.control());
        self.procs.insert(
            pid,
            ProcessInfo {
                pid,
                home: self.id,
                node: self.id,
                state: ProcState::Running,
                command,
                started_ms: SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                cpu_ns: 0,
                memory: 0,
                pgid: identity.pgid,
                ppid: identity.ppid,
                pinned: None,
                moves: 0,
                user_pinned: false,
            },
        );
        Ok(Process {
            node: self,
            pid,
            wasm,
            body,
            deputy,
            table,
        })
    }

    /// Every process this node knows of.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let mut list: Vec<_> = self.procs.iter().map(|e| e.value().clone()).collect();
        list.sort_by_key(|p| p.pid);
        list
    }
}

/// How long a process ran and how it ended.
#[derive(Debug)]
pub struct Finished {
    pub pid: Pid,
    pub exit: Exit,
    /// The signal that ended it, if one did.
    pub signal: Option<ssi_deputy::Signal>,
    pub wall: std::time::Duration,
}

impl Process<'_> {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The deputy of this process (its descriptor table, for inspection).
    pub fn deputy(&self) -> &Arc<Mutex<Deputy>> {
        &self.deputy
    }

    /// Runs the body on the calling thread until the process ends, then removes it
    /// from the process table and releases its pid.
    pub fn run(self) -> Finished {
        self.run_checkpointing(None, |_| {})
    }

    /// As [`Process::run`], taking a checkpoint every `every` (if given): each
    /// is handed to `save` (its bytes, or why it could not be taken), and the
    /// body goes on.
    pub fn run_checkpointing(
        mut self,
        every: Option<std::time::Duration>,
        mut save: impl FnMut(Result<Vec<u8>, String>),
    ) -> Finished {
        let started = Instant::now();
        let done = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let timer = every.map(|every| {
            let control = self.body.control();
            let done = done.clone();
            std::thread::spawn(move || {
                let (lock, wake) = &*done;
                let mut ended = lock.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    // Checked under the lock before each wait: a program that
                    // ended before this thread first waited (its notice then
                    // went to nobody) does not keep `ssirun` a whole period.
                    if *ended {
                        return;
                    }
                    let (guard, waited) = wake
                        .wait_timeout(ended, every)
                        .unwrap_or_else(|p| p.into_inner());
                    ended = guard;
                    if *ended {
                        return;
                    }
                    if waited.timed_out() {
                        control.freeze();
                    }
                }
            })
        });
        let exit = loop {
            match self.body.run() {
                Exit::Frozen => {
                    let sealed = self
                        .body
                        .image()
                        .map_err(|e| e.to_string())
                        .and_then(|image| {
                            self.deputy
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .checkpoint()
                                .map_err(|e| e.to_string())
                                .and_then(|state| {
                                    ssi_remote::ghost::seal_checkpoint(
                                        image,
                                        &state.encode(),
                                        &self.wasm,
                                    )
                                    .map_err(|e| e.to_string())
                                })
                        });
                    save(sealed);
                    if let Err(e) = self.body.resume() {
                        break Exit::Failed(e.into());
                    }
                }
                exit => break exit,
            }
        };
        *done.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        done.1.notify_all();
        if let Some(t) = timer {
            let _ = t.join();
        }
        self.node.procs.remove(&self.pid);
        self.node.pids.release(self.pid);
        let signal = *self.table.fatal.lock().unwrap_or_else(|p| p.into_inner());
        Finished {
            pid: self.pid,
            exit,
            signal,
            wall: started.elapsed(),
        }
    }
}
