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
mod node;
mod pid;
mod rpc;
mod status;
mod wire;

pub use console::{ConsolePump, Flusher, Ttys, console_stdio};
pub use node::{
    Config, DOWN_AFTER, Daemon, HEARTBEAT_EVERY, MigrationReport, NodeCore, NodeInfo, SignalError,
    StartError, admin_migrate, admin_nodes, admin_processes,
};
pub use pid::{MAX_NODE_ID, NodeId, Pid, PidAllocator, PidError, home_of};
pub use rpc::{
    CONNECT_TIMEOUT, ConnectError, DEPUTY_PREAMBLE, Endpoint, NetLink, connect, remote_message,
    run_connection, thread_runtime,
};
pub use status::NodeStatus;
pub use wire::{ExitReport, read_exit, write_exit};

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

/// The state of a process, as listings show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// Frozen and on its way to another node.
    Migrating,
}

impl ProcState {
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Running => "running",
            ProcState::Migrating => "migrating",
        }
    }
}

/// One row of the process table.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: Pid,
    /// The node where the deputy lives.
    pub home: NodeId,
    /// The node where the body runs now.
    pub node: NodeId,
    pub state: ProcState,
    pub command: String,
    /// When it started: ms since the Unix epoch.
    pub started_ms: u64,
    /// CPU time of the body so far.
    pub cpu_ns: u64,
    /// Bytes of the body's linear memory.
    pub memory: u64,
    /// Its process group.
    pub pgid: Pid,
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
        let program = self.runtime.load(&spec.module)?;
        ssi_remote::check_module(&program.module)?;
        let mut deputy = Deputy::new(spec.stdio, spec.preopens)?;
        let pid = self.pids.allocate()?;
        let table = Arc::new(EmbeddedTable {
            pid,
            killer: std::sync::OnceLock::new(),
            fatal: Mutex::new(None),
        });
        deputy.set_process(ssi_deputy::Identity::leader(pid), table.clone());
        let deputy = Arc::new(Mutex::new(deputy));
        let link = Box::new(LocalLink::new(deputy.clone()));
        let body = match Body::new(&self.runtime, &program, &spec.body, link) {
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
                command: spec.command,
                started_ms: SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                cpu_ns: 0,
                memory: 0,
                pgid: pid,
            },
        );
        Ok(Process {
            node: self,
            pid,
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
    pub fn run(mut self) -> Finished {
        let started = Instant::now();
        let exit = self.body.run();
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
