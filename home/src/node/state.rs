//! `NodeCore`, the state every thread of a node shares, and the node's
//! configuration.
//!
//! It owns the process table (`procs`: the processes whose home is this node),
//! the bodies hosted here (`bodies`), the modules held (`modules`), checkpoints
//! staged to be restarted, bodies expected by ticket, the modules peers are known
//! to hold, and the view of the peers. Other rooms add behaviour to it in
//! `impl NodeCore` blocks of their own (membership, hosting, signals, families,
//! moves); this file keeps only its construction and the plain questions about
//! its state (is a node up, can it host a body, what runs here).
//!
//! Must not know: Cap'n Proto services, the per-process task, how bodies run.

use super::slot::HostedBody;
use super::stream::{Expected, Ticket};
use super::table::HomeProc;
use crate::events::{Event, EventLog};
use crate::status::{NodeStatus, machine};
use crate::{NodeId, Pid, PidAllocator, PidError, ProcessInfo};
use dashmap::DashMap;
use ssi_remote::{ModuleHash, Program, Runtime};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// A node's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: NodeId,
    /// `HOST:PORT` for peers and remote clients; also the address peers are told.
    pub listen: String,
    /// Other nodes to join: id and `HOST:PORT`.
    pub peers: Vec<(NodeId, String)>,
    /// The Unix socket for local clients (`ssirun`, `ssictl`).
    pub socket: PathBuf,
    /// Where the node keeps its compiled-module cache.
    pub data_dir: Option<PathBuf>,
    /// What the node runs at once, in cores (`--cpus`; default: the cores it
    /// sees), so that several nodes on one machine can stand for a cluster.
    pub cpus: Option<f64>,
    /// The node moves its bodies by itself, and places new processes.
    pub balance: bool,
    /// The balancer's policy.
    pub policy: crate::policy::Params,
}

impl Config {
    /// A node with the given id, address and socket, and every other setting
    /// at its default (no peers, no data directory, balancing on).
    pub fn new(id: NodeId, listen: String, socket: PathBuf) -> Config {
        Config {
            id,
            listen,
            peers: Vec::new(),
            socket,
            data_dir: None,
            cpus: None,
            balance: true,
            policy: crate::policy::Params::default(),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Pid(#[from] PidError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot create the socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another node is already listening on the socket {0}")]
    SocketInUse(PathBuf),
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("peer {id} has the id of this node but another address ({address}, not {listen})")]
    SelfPeer {
        id: NodeId,
        address: String,
        listen: String,
    },
    #[error("cannot start the node's threads: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Clone)]
pub(crate) struct PeerState {
    pub(crate) address: String,
    pub(crate) up: bool,
    pub(crate) last_seen: Option<Instant>,
    pub(crate) status: Option<NodeStatus>,
    /// When it was last marked down.
    pub(crate) down_at: Option<Instant>,
}

/// A move the balancer ordered: to where, which body, and when the
/// destination said the body runs there (none while under way).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sent {
    pub(crate) to: NodeId,
    pub(crate) pid: Pid,
    pub(crate) done: Option<Instant>,
}

/// The state a node's threads share.
pub struct NodeCore {
    pub(crate) id: NodeId,
    pub(crate) address: String,
    pub(crate) runtime: Runtime,
    pub(crate) pids: PidAllocator,
    pub(crate) procs: DashMap<Pid, HomeProc>,
    /// Processes launched here whose module is still being prepared.
    pub(crate) loading: DashMap<Pid, super::table::Loading>,
    pub(crate) bodies: DashMap<Pid, HostedBody>,
    pub(crate) modules: DashMap<ModuleHash, Program>,
    /// Checkpoints sent here to be restarted (`Gateway.stage`).
    pub(crate) staged: DashMap<u64, Vec<u8>>,
    /// Bodies expected here, by the ticket their image comes with.
    pub(crate) expected: DashMap<Ticket, Expected>,
    /// The modules peers are known to hold (they were sent, or said so),
    /// and whether whole (see `Program`).
    pub(crate) peer_modules: DashMap<(NodeId, ModuleHash), bool>,
    pub(crate) peers: DashMap<NodeId, PeerState>,
    /// What this node runs at once, in cores.
    pub(crate) capacity: f64,
    /// Its bodies' CPU use now, in cores (the balancer measures it).
    pub(crate) demand: std::sync::Mutex<f64>,
    /// Balancers' moves this node took whose bodies its balancer has not
    /// measured yet, and when: they count in its load at once (several
    /// nodes may send at once, before the bodies are measured here).
    pub(crate) taken: std::sync::Mutex<Vec<(Pid, Instant)>>,
    /// Moves this node's balancer sent: a peer's status from before a body
    /// arrived (and was measured there) does not count it yet.
    pub(crate) sent: std::sync::Mutex<Vec<Sent>>,
    /// It balances, and with what policy.
    pub(crate) balance: bool,
    pub(crate) policy: crate::policy::Params,
    /// What happened here: kept, and pushed to those who follow.
    pub(crate) events: EventLog,
    /// Drained: bodies are moved off and no new ones come.
    pub(crate) draining: AtomicBool,
    /// A drain is moving this node's bodies off: the balancer leaves them
    /// to it (both would move the same bodies).
    pub(crate) drain_moving: AtomicBool,
    /// Heartbeats sent, ever.
    pub(crate) heartbeats_sent: AtomicU64,
    /// Counts the times peers were marked down: waits on a peer (a body
    /// there) wake when it changes instead of polling.
    pub(crate) downs: tokio::sync::watch::Sender<u64>,
}

/// A body running on this node, as `ps` reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyStat {
    pub(crate) pid: Pid,
    /// Its CPU time.
    pub(crate) cpu_ns: u64,
    /// Its linear memory's size.
    pub(crate) memory: u64,
    /// It waits for the code it needs to go on (`ps` shows it resuming).
    pub(crate) waiting: bool,
}

impl NodeCore {
    pub fn new(config: &Config, runtime: Runtime) -> Result<Arc<Self>, StartError> {
        let peers = DashMap::new();
        for (id, address) in &config.peers {
            // One member list can serve every node: a node skips its own entry.
            if *id == config.id {
                if *address == config.listen {
                    continue;
                }
                return Err(StartError::SelfPeer {
                    id: *id,
                    address: address.clone(),
                    listen: config.listen.clone(),
                });
            }
            peers.insert(
                *id,
                PeerState {
                    address: address.clone(),
                    up: false,
                    last_seen: None,
                    status: None,
                    down_at: None,
                },
            );
        }
        Ok(Arc::new(NodeCore {
            id: config.id,
            address: config.listen.clone(),
            runtime,
            pids: match &config.data_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
                        path: dir.clone(),
                        source,
                    })?;
                    PidAllocator::persistent(config.id, &dir.join("pid-sequence"))?
                }
                None => PidAllocator::new(config.id)?,
            },
            procs: DashMap::new(),
            loading: DashMap::new(),
            bodies: DashMap::new(),
            modules: DashMap::new(),
            staged: DashMap::new(),
            expected: DashMap::new(),
            peer_modules: DashMap::new(),
            peers,
            capacity: config.cpus.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as f64)
                    .unwrap_or(1.0)
            }),
            demand: std::sync::Mutex::new(0.0),
            taken: std::sync::Mutex::new(Vec::new()),
            sent: std::sync::Mutex::new(Vec::new()),
            balance: config.balance,
            policy: config.policy.clone(),
            events: EventLog::new(config.id),
            draining: AtomicBool::new(false),
            drain_moving: AtomicBool::new(false),
            heartbeats_sent: AtomicU64::new(0),
            downs: tokio::sync::watch::Sender::new(0),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Whether a process of this home is pinned.
    pub(crate) fn is_pinned(&self, pid: Pid) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.info.user_pinned)
    }

    /// This node's status, as sent in heartbeats.
    pub fn status(&self) -> NodeStatus {
        let (cores, load1, mem_total, mem_available) = machine();
        NodeStatus {
            id: self.id,
            address: self.address.clone(),
            cores,
            load1,
            mem_total,
            mem_available,
            bodies: self.bodies.len() as u32,
            processes: self.procs.len() as u32,
            known: self
                .peers
                .iter()
                .map(|p| (*p.key(), p.address.clone()))
                .collect(),
            capacity: self.capacity,
            demand: *self.demand.lock().unwrap_or_else(|p| p.into_inner()),
            balancing: self.balance,
            draining: self.draining.load(Ordering::Relaxed),
            rumors: self.rumors(),
            heartbeats_sent: self.heartbeats_sent.load(Ordering::Relaxed),
        }
    }

    /// Records an event that happened here.
    pub(crate) fn record(&self, event: Event) {
        self.events.record(event);
    }

    /// Whether node `id` is known to hold a module (its whole module, with
    /// `whole`).
    pub(crate) fn peer_holds(&self, id: NodeId, hash: &ModuleHash, whole: bool) -> bool {
        self.peer_modules
            .get(&(id, *hash))
            .is_some_and(|w| *w || !whole)
    }

    /// The nodes that may hold the compiled code of a module, for a node
    /// that lacks it to ask (`Peer.loadModule`): those known to hold it
    /// whole first, then this node if it does, then those known to hold
    /// its runnable part (whose whole one may be done since).
    pub(crate) fn holders(&self, hash: &ModuleHash) -> Vec<NodeId> {
        let mut whole = Vec::new();
        let mut part = Vec::new();
        for known in self.peer_modules.iter() {
            let &(id, h) = known.key();
            if h == *hash && id != self.id {
                if *known.value() {
                    &mut whole
                } else {
                    &mut part
                }
                .push(id);
            }
        }
        whole.sort_unstable();
        part.sort_unstable();
        if self.modules.contains_key(hash) || self.runtime.has_code(hash) {
            whole.push(self.id);
        }
        whole.extend(part);
        whole
    }

    pub(crate) fn note_holds(&self, id: NodeId, hash: ModuleHash, whole: bool) {
        let mut known = self.peer_modules.entry((id, hash)).or_insert(whole);
        *known |= whole;
    }

    pub(crate) fn peer_up(&self, id: NodeId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.up)
    }

    pub(crate) fn peer_address(&self, id: NodeId) -> Option<String> {
        self.peers.get(&id).map(|p| p.address.clone())
    }

    /// Whether a body can be started on node `id` (this node, or a peer that
    /// is up); if not, why.
    pub(crate) fn can_host(&self, id: NodeId) -> Result<(), String> {
        if id == self.id || self.peer_up(id) {
            return Ok(());
        }
        Err(match self.peer_address(id) {
            Some(a) => format!("node {id} ({a}) is down"),
            None => format!("node {id} is not a member of this cluster"),
        })
    }

    pub(crate) fn home_processes(&self) -> Vec<ProcessInfo> {
        self.procs
            .iter()
            .map(|p| p.info.clone())
            .chain(self.loading.iter().map(|l| l.info.clone()))
            .collect()
    }

    /// What `ps` reads of the bodies running here.
    pub(crate) fn body_stats(&self) -> Vec<BodyStat> {
        self.bodies
            .iter()
            .map(|b| BodyStat {
                pid: *b.key(),
                cpu_ns: b.cpu.read_ns(),
                memory: b.memory.load(Ordering::Relaxed),
                waiting: b.slot.waits_for_code(),
            })
            .collect()
    }

    /// The identity of a process whose home is this node.
    pub fn identity_of(&self, pid: Pid) -> Option<ssi_deputy::Identity> {
        self.procs.get(&pid).map(|p| p.identity)
    }
}
