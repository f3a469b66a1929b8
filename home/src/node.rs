//! A cluster node: its shared state, its membership (heartbeats), the bodies it
//! hosts, and the Cap'n Proto services it offers (see `schema/ssi.capnp`).
//!
//! Threads: one accepts connections and gives each its own thread (a
//! single-threaded runtime; the capabilities served there live there); one runs
//! the heartbeats; each body runs on a thread of its own. They share one
//! [`NodeCore`].

use crate::console::Interrupter;

mod family;
mod transfer;
use crate::console::{Ttys, console_stdio};
use crate::rpc::{
    CONNECT_TIMEOUT, DEPUTY_PREAMBLE, Endpoint, NetLink, connect, run_connection, thread_runtime,
};
use crate::status::{NodeStatus, machine};
use crate::wire::{ExitReport, read_syscall, set_texts, text, texts, write_exit, write_result};
use crate::{NodeId, Pid, PidAllocator, PidError, ProcState, ProcessInfo, home_of};
use capnp::capability::Rc as CapRc;
use capnp_rpc::rpc_twoparty_capnp::Side;
use dashmap::DashMap;
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, Shared};
use ssi_deputy::abi::wait;
use ssi_deputy::{DefaultAction, Delivery, Deputy, Errno, Fd, Preopen, Reply, Signal, Syscall};
use ssi_remote::{
    Body, BodySpec, Control, DeputyLink, Exit, ImageStats, LocalLink, ModuleHash, Program, Runtime,
    SharedDeputy,
};
use ssi_schema::{admin, body_control, console, gateway, peer, process};
use std::future::ready;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a node sends a heartbeat to each peer.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// A peer that has not answered for this long is down.
pub const DOWN_AFTER: Duration = Duration::from_secs(2);

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
    #[error("peer {0} has the id of this node")]
    SelfPeer(NodeId),
    #[error("cannot start the node's threads: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Clone)]
struct PeerState {
    address: String,
    up: bool,
    last_seen: Option<Instant>,
    status: Option<NodeStatus>,
}

/// A process whose home is this node.
struct HomeProc {
    info: ProcessInfo,
    /// Its parent, group and session: the table's, which `setpgid`, `setsid`
    /// and reparenting change.
    identity: ssi_deputy::Identity,
    deputy: SharedDeputy,
    /// To the process's task on its session thread, which acts on signals
    /// and migrations.
    orders: flume::Sender<Order>,
    /// The sturdy reference a remote body redeems (once) for its deputy.
    secret: Option<[u8; 16]>,
    /// It ended while its parent lives: its status word, until the parent
    /// waits for it.
    zombie: Option<u32>,
    /// A stop or continue its parent has not waited for yet: the status word.
    change: Option<u32>,
    /// Wakes a `waitpid` of this process.
    notice: Arc<family::Notice>,
    /// Cuts short a read of its session's console (its children share it).
    interrupter: Interrupter,
    /// Its module, which a child spawned with no module of its own runs.
    program: Program,
    wasm: Arc<Vec<u8>>,
}

/// A body running on this node (whatever its home).
struct HostedBody {
    slot: Arc<BodySlot>,
    memory: Arc<AtomicU64>,
    cpu: ssi_remote::CpuMeter,
}

/// Lets a body be killed before, while and after it is set up, and frozen
/// while it runs.
#[derive(Default)]
struct BodySlot {
    killed: AtomicBool,
    /// The body's thread is done with it.
    ended: AtomicBool,
    control: Mutex<Option<Control>>,
    /// Why the body cannot be frozen, if it cannot.
    not_freezable: Mutex<Option<String>>,
    /// Where the image goes once the body is frozen.
    freezer: Mutex<Option<flume::Sender<Result<FrozenBody, String>>>>,
}

/// A frozen body: where to tell its thread what to do with it.
struct FrozenBody {
    orders: flume::Sender<FrozenOrder>,
}

/// What a frozen body's thread is asked to do.
enum FrozenOrder {
    /// Write the body's image, whole (for a checkpoint).
    Image(flume::Sender<Result<(Vec<u8>, ImageStats), String>>),
    /// Stream the body's image to the node at this address, which expects
    /// it under this ticket (a migration).
    SendTo {
        address: String,
        ticket: transfer::Ticket,
        reply: flume::Sender<Result<ImageStats, String>>,
    },
    /// What becomes of the body.
    Verdict(Verdict),
}

/// What becomes of a frozen body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// It goes on where it was.
    Resume,
    /// It is dropped: it runs elsewhere now.
    Release,
    /// It is killed.
    Kill,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BodySlot {
    /// Signals are pending for the body's handlers.
    fn signal(&self) {
        if let Some(c) = lock(&self.control).as_ref() {
            c.signal();
        }
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(c) = lock(&self.control).as_ref() {
            c.kill();
        }
    }

    /// Asks the body to freeze; its image arrives on the returned channel.
    fn freeze(&self) -> Result<flume::Receiver<Result<FrozenBody, String>>, String> {
        let control = lock(&self.control)
            .clone()
            .ok_or_else(|| "the body has not started".to_string())?;
        if !control.freezable() {
            return Err(lock(&self.not_freezable)
                .clone()
                .unwrap_or_else(|| "the body cannot be frozen".into()));
        }
        let (tx, rx) = flume::bounded(1);
        *lock(&self.freezer) = Some(tx);
        // The body's thread takes the sender when it ends: if it already has,
        // nobody will.
        if self.ended.load(Ordering::SeqCst) {
            lock(&self.freezer).take();
            return Err("the body has ended".into());
        }
        control.freeze();
        Ok(rx)
    }

    /// Waits for the next order on a frozen body (a kill counts as its
    /// verdict; no one left to give orders, as `orphaned`).
    fn order(&self, rx: &flume::Receiver<FrozenOrder>, orphaned: Verdict) -> FrozenOrder {
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(o) => return o,
                Err(flume::RecvTimeoutError::Timeout) => {
                    if self.killed.load(Ordering::SeqCst) {
                        return FrozenOrder::Verdict(Verdict::Kill);
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return FrozenOrder::Verdict(orphaned);
                }
            }
        }
    }

    /// Follows the orders on a frozen body until its verdict.
    fn hold(
        &self,
        body: &mut Body,
        rx: &flume::Receiver<FrozenOrder>,
        orphaned: Verdict,
    ) -> Verdict {
        loop {
            match self.order(rx, orphaned) {
                FrozenOrder::Image(reply) => {
                    let image = body
                        .write_image(Vec::new(), true)
                        .map_err(|e| e.to_string());
                    let _ = reply.send(image);
                }
                FrozenOrder::SendTo {
                    address,
                    ticket,
                    reply,
                } => {
                    let _ = reply.send(transfer::send_body(body, &address, &ticket));
                }
                FrozenOrder::Verdict(v) => return v,
            }
        }
    }
}

/// The state a node's threads share.
pub struct NodeCore {
    id: NodeId,
    address: String,
    runtime: Runtime,
    pids: PidAllocator,
    procs: DashMap<Pid, HomeProc>,
    bodies: DashMap<Pid, HostedBody>,
    modules: DashMap<ModuleHash, Program>,
    /// Checkpoints sent here to be restarted (`Gateway.stage`).
    staged: DashMap<u64, Vec<u8>>,
    /// Bodies expected here, by the ticket their image comes with.
    expected: DashMap<transfer::Ticket, transfer::Expected>,
    /// Modules peers are known to hold (they were sent, or said so).
    peer_modules: DashMap<(NodeId, ModuleHash), ()>,
    peers: DashMap<NodeId, PeerState>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn failed(e: impl std::fmt::Display) -> capnp::Error {
    capnp::Error::failed(e.to_string())
}

impl NodeCore {
    pub fn new(config: &Config, runtime: Runtime) -> Result<Arc<Self>, StartError> {
        let peers = DashMap::new();
        for (id, address) in &config.peers {
            if *id == config.id {
                return Err(StartError::SelfPeer(*id));
            }
            peers.insert(
                *id,
                PeerState {
                    address: address.clone(),
                    up: false,
                    last_seen: None,
                    status: None,
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
            bodies: DashMap::new(),
            modules: DashMap::new(),
            staged: DashMap::new(),
            expected: DashMap::new(),
            peer_modules: DashMap::new(),
            peers,
        }))
    }

    pub fn id(&self) -> NodeId {
        self.id
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
        }
    }

    /// Whether node `id` is known to hold a module.
    fn peer_holds(&self, id: NodeId, hash: &ModuleHash) -> bool {
        self.peer_modules.contains_key(&(id, *hash))
    }

    fn note_holds(&self, id: NodeId, hash: ModuleHash) {
        self.peer_modules.insert((id, hash), ());
    }

    fn peer_up(&self, id: NodeId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.up)
    }

    fn peer_address(&self, id: NodeId) -> Option<String> {
        self.peers.get(&id).map(|p| p.address.clone())
    }

    /// Whether a body can be started on node `id` (this node, or a peer that
    /// is up); if not, why.
    fn can_host(&self, id: NodeId) -> Result<(), String> {
        if id == self.id || self.peer_up(id) {
            return Ok(());
        }
        Err(match self.peer_address(id) {
            Some(a) => format!("node {id} ({a}) is down"),
            None => format!("node {id} is not a member of this cluster"),
        })
    }

    fn seen(&self, status: NodeStatus) {
        let id = status.id;
        if id == self.id || id == 0 {
            return;
        }
        let mut entry = self.peers.entry(id).or_insert_with(|| PeerState {
            address: status.address.clone(),
            up: false,
            last_seen: None,
            status: None,
        });
        if !entry.up {
            tracing::info!(node = id, address = %status.address, "peer is up");
        }
        entry.up = true;
        entry.last_seen = Some(Instant::now());
        if !status.address.is_empty() {
            entry.address = status.address.clone();
        }
        drop(entry);
        // Nodes the peer knows of and this node does not: heartbeats start soon.
        for (other, address) in &status.known {
            if *other != self.id && *other != 0 && !self.peers.contains_key(other) {
                tracing::info!(node = other, %address, via = id, "learned of a node");
                self.peers.insert(
                    *other,
                    PeerState {
                        address: address.clone(),
                        up: false,
                        last_seen: None,
                        status: None,
                    },
                );
            }
        }
        if let Some(mut entry) = self.peers.get_mut(&id) {
            entry.status = Some(status);
        }
    }

    /// Marks silent peers down; a home that went down takes its bodies with it.
    fn check_peers(&self) {
        let mut gone = Vec::new();
        for mut p in self.peers.iter_mut() {
            let silent = p.last_seen.is_none_or(|t| t.elapsed() > DOWN_AFTER);
            if p.up && silent {
                p.up = false;
                gone.push((*p.key(), p.address.clone()));
            }
        }
        for (id, address) in gone {
            tracing::warn!(node = id, %address, "peer stopped answering: marked down");
            self.peer_modules.retain(|(node, _), _| *node != id);
            for b in self.bodies.iter() {
                if home_of(*b.key()) == id {
                    b.slot.kill();
                }
            }
        }
    }

    fn home_processes(&self) -> Vec<ProcessInfo> {
        self.procs.iter().map(|p| p.info.clone()).collect()
    }

    fn body_stats(&self) -> Vec<(Pid, u64, u64)> {
        self.bodies
            .iter()
            .map(|b| (*b.key(), b.cpu.read_ns(), b.memory.load(Ordering::Relaxed)))
            .collect()
    }

    /// Starts a body on a thread of its own, made there by `make` (a
    /// network link's connection lives on that thread). `started` says when
    /// the body runs, or why it could not start; the report arrives when it
    /// ends.
    #[allow(clippy::type_complexity)]
    fn spawn_body(
        self: &Arc<Self>,
        pid: Pid,
        program: Program,
        make: MakeBody,
    ) -> Result<
        (
            Arc<BodySlot>,
            oneshot::Receiver<Result<(), String>>,
            impl Future<Output = ExitReport> + 'static + use<>,
        ),
        std::io::Error,
    > {
        let slot = Arc::new(BodySlot::default());
        let (tx, rx) = oneshot::channel();
        let (started_tx, started) = oneshot::channel();
        let core = self.clone();
        let thread_slot = slot.clone();
        std::thread::Builder::new()
            .name(format!("body-{pid}"))
            .stack_size(ssi_remote::BODY_THREAD_STACK)
            .spawn(move || {
                let report = core.run_body(pid, &program, make, &thread_slot, started_tx, None);
                let _ = tx.send(report);
            })?;
        let end = async move {
            rx.await.unwrap_or_else(|_| {
                ExitReport::Failed(vec!["the body's thread ended without a report".into()])
            })
        };
        Ok((slot, started, end))
    }

    /// Makes a body and runs it on this thread until it ends or moves. With
    /// `held`, a body restored from an image is held until it is told to go
    /// on (orders for it go out there): a migration's destination waits for
    /// the source to be dropped, so that a body never runs twice.
    fn run_body(
        &self,
        pid: Pid,
        program: &Program,
        make: MakeBody,
        slot: &Arc<BodySlot>,
        started: oneshot::Sender<Result<(), String>>,
        held: Option<oneshot::Sender<flume::Sender<FrozenOrder>>>,
    ) -> ExitReport {
        let mut body = match make(&self.runtime) {
            Ok(b) => b,
            Err(e) => {
                let _ = started.send(Err(e.clone()));
                return ExitReport::Failed(vec![e]);
            }
        };
        *lock(&slot.not_freezable) = program.not_freezable.clone();
        *lock(&slot.control) = Some(body.control());
        if slot.killed.load(Ordering::SeqCst) {
            let _ = started.send(Err("killed".into()));
            return ExitReport::Failed(vec!["killed".into()]);
        }
        self.bodies.insert(
            pid,
            HostedBody {
                slot: slot.clone(),
                memory: body.memory_gauge(),
                cpu: body.cpu_meter(),
            },
        );
        let _ = started.send(Ok(()));
        if let Some(held) = held {
            let (tx, rx) = flume::unbounded();
            let verdict = if held.send(tx).is_ok() {
                // No one to say it may go on: it does not.
                slot.hold(&mut body, &rx, Verdict::Kill)
            } else {
                Verdict::Kill
            };
            if verdict != Verdict::Resume {
                self.bodies.remove(&pid);
                slot.ended.store(true, Ordering::SeqCst);
                return ExitReport::Failed(vec!["it was not let go on".into()]);
            }
        }
        let report = loop {
            match body.run() {
                Exit::Frozen => {
                    let (tx, rx) = flume::unbounded();
                    let asked = lock(&slot.freezer).take();
                    let verdict = match asked {
                        Some(f) if f.send(Ok(FrozenBody { orders: tx })).is_ok() => {
                            slot.hold(&mut body, &rx, Verdict::Resume)
                        }
                        _ => Verdict::Resume,
                    };
                    match verdict {
                        Verdict::Resume => {
                            if let Err(e) = body.resume() {
                                break ExitReport::Failed(vec![e.to_string()]);
                            }
                        }
                        Verdict::Release => break ExitReport::Moved,
                        Verdict::Kill => break ExitReport::Failed(vec!["killed".into()]),
                    }
                }
                exit => {
                    if let Some(f) = lock(&slot.freezer).take() {
                        let _ = f.send(Err("the process ended before it froze".into()));
                    }
                    break ExitReport::from_exit(&exit);
                }
            }
        };
        self.bodies.remove(&pid);
        slot.ended.store(true, Ordering::SeqCst);
        if let Some(f) = lock(&slot.freezer).take() {
            let _ = f.send(Err("the body has ended".into()));
        }
        report
    }
}

/// How a body is made, on the thread it runs on.
type MakeBody = Box<dyn FnOnce(&Runtime) -> Result<Body, String> + Send>;

// ---------------------------------------------------------------------------
// Serving connections

/// A running node: its listeners and heartbeats run on their own threads.
pub struct Daemon {
    core: Arc<NodeCore>,
    socket: PathBuf,
}

impl Daemon {
    /// Binds the TCP address and the Unix socket, then starts serving and
    /// sending heartbeats.
    pub fn start(config: Config, runtime: Runtime) -> Result<Daemon, StartError> {
        let core = NodeCore::new(&config, runtime)?;
        let tcp =
            std::net::TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
                address: config.listen.clone(),
                source,
            })?;
        let unix = bind_socket(&config.socket)?;
        let c = core.clone();
        std::thread::Builder::new()
            .name("accept-tcp".into())
            .spawn(move || {
                for stream in tcp.incoming().flatten() {
                    let _ = stream.set_nodelay(true);
                    let c = c.clone();
                    let _ = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve_tcp_or_deputy(c, stream));
                }
            })
            .map_err(StartError::Thread)?;
        let c = core.clone();
        std::thread::Builder::new()
            .name("accept-unix".into())
            .spawn(move || {
                for stream in unix.incoming().flatten() {
                    let c = c.clone();
                    let _ = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve_unix(c, stream));
                }
            })
            .map_err(StartError::Thread)?;
        let c = core.clone();
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || membership(c))
            .map_err(StartError::Thread)?;
        Ok(Daemon {
            core,
            socket: config.socket,
        })
    }

    pub fn core(&self) -> &Arc<NodeCore> {
        &self.core
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn bind_socket(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, StartError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| StartError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(StartError::SocketInUse(path.to_path_buf()));
        }
        // Left behind by a node that did not stop cleanly.
        std::fs::remove_file(path).map_err(err)?;
    }
    std::os::unix::net::UnixListener::bind(path).map_err(err)
}

fn serve_on_thread<S>(core: Arc<NodeCore>, make: impl FnOnce() -> std::io::Result<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let Ok(rt) = thread_runtime() else { return };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let Ok(stream) = make() else { return };
        let gateway: gateway::Client = capnp_rpc::new_client(GatewayServer { core });
        let (_, rpc) = run_connection(stream, Side::Server, Some(gateway.client));
        let _ = rpc.await;
    });
    // The client is gone; what it started here (a process it launched being
    // stopped and reaped) still runs to its end.
    rt.block_on(local);
}

fn serve_tcp(core: Arc<NodeCore>, stream: std::net::TcpStream) {
    serve_on_thread(core, move || {
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    });
}

/// A TCP connection is either the Cap'n Proto RPC protocol or, when it starts
/// with [`DEPUTY_PREAMBLE`], a body's deputy link, or with
/// [`transfer::IMAGE_PREAMBLE`], a body's image coming to run here.
fn serve_tcp_or_deputy(core: Arc<NodeCore>, stream: std::net::TcpStream) {
    let mut head = [0u8; DEPUTY_PREAMBLE.len()];
    let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
    let mut got = 0;
    // An RPC client's first message (its bootstrap) is longer than the preamble.
    while got < head.len() {
        match stream.peek(&mut head) {
            Ok(0) | Err(_) => return,
            Ok(n) if n == got => std::thread::yield_now(),
            Ok(n) => got = n,
        }
    }
    let _ = stream.set_read_timeout(None);
    if &head == transfer::IMAGE_PREAMBLE {
        let mut stream = stream;
        if std::io::Read::read_exact(&mut stream, &mut head).is_ok() {
            core.serve_image(stream);
        }
    } else if &head == DEPUTY_PREAMBLE {
        let mut stream = stream;
        if std::io::Read::read_exact(&mut stream, &mut head).is_ok()
            && let Err(e) = serve_deputy(&core, stream)
        {
            tracing::warn!(error = %e, "deputy connection failed");
        }
    } else {
        serve_tcp(core, stream);
    }
}

fn serve_unix(core: Arc<NodeCore>, stream: std::os::unix::net::UnixStream) {
    serve_on_thread(core, move || {
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    });
}

// ---------------------------------------------------------------------------
// Membership

fn membership(core: Arc<NodeCore>) {
    let Ok(rt) = thread_runtime() else { return };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut running = std::collections::HashSet::new();
        loop {
            let ids: Vec<NodeId> = core.peers.iter().map(|p| *p.key()).collect();
            for id in ids {
                if running.insert(id) {
                    tokio::task::spawn_local(heartbeats(core.clone(), id));
                }
            }
            core.check_peers();
            tokio::time::sleep(HEARTBEAT_EVERY / 4).await;
        }
    });
}

async fn heartbeats(core: Arc<NodeCore>, id: NodeId) {
    loop {
        if let Some(address) = core.peer_address(id)
            && let Ok(gateway) = connect(&Endpoint::Tcp(address)).await
        {
            let peer = gateway.peer_request().send().pipeline.get_peer();
            loop {
                let mut req = peer.heartbeat_request();
                write_status(req.get().init_status(), &core.status());
                let answer = tokio::time::timeout(DOWN_AFTER / 2, req.send().promise).await;
                let status = match answer {
                    Ok(Ok(reply)) => reply
                        .get()
                        .and_then(|r| r.get_status())
                        .and_then(read_status),
                    _ => break,
                };
                match status {
                    Ok(s) if s.id == id => core.seen(s),
                    _ => break,
                }
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
        }
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

fn write_status(mut b: ssi_schema::node_status::Builder<'_>, s: &NodeStatus) {
    b.set_id(s.id);
    b.set_address(&s.address);
    b.set_cores(s.cores);
    b.set_load1(s.load1);
    b.set_mem_total(s.mem_total);
    b.set_mem_available(s.mem_available);
    b.set_bodies(s.bodies);
    b.set_processes(s.processes);
    let mut known = b.init_known(s.known.len() as u32);
    for (i, (id, address)) in s.known.iter().enumerate() {
        let mut m = known.reborrow().get(i as u32);
        m.set_id(*id);
        m.set_address(address);
    }
}

fn read_status(r: ssi_schema::node_status::Reader<'_>) -> Result<NodeStatus, capnp::Error> {
    Ok(NodeStatus {
        id: r.get_id(),
        address: text(r.get_address())?,
        cores: r.get_cores(),
        load1: r.get_load1(),
        mem_total: r.get_mem_total(),
        mem_available: r.get_mem_available(),
        bodies: r.get_bodies(),
        processes: r.get_processes(),
        known: r
            .get_known()?
            .iter()
            .map(|m| Ok((m.get_id(), text(m.get_address())?)))
            .collect::<Result<_, capnp::Error>>()?,
    })
}

// ---------------------------------------------------------------------------
// Gateway

struct GatewayServer {
    core: Arc<NodeCore>,
}

impl gateway::Server for GatewayServer {
    fn launch(
        self: CapRc<Self>,
        params: gateway::LaunchParams,
        mut results: gateway::LaunchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let spec = LaunchRequest::read(p.get_spec()?)?;
            let console = p.get_console()?;
            let (process, pid) = launch(core, spec, console).await?;
            let mut r = results.get();
            r.set_process(process);
            r.set_pid(pid);
            Ok(())
        }
    }

    fn admin(
        self: CapRc<Self>,
        _: gateway::AdminParams,
        mut results: gateway::AdminResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        results.get().set_admin(capnp_rpc::new_client(AdminServer {
            core: self.core.clone(),
        }));
        ready(Ok(()))
    }

    fn peer(
        self: CapRc<Self>,
        _: gateway::PeerParams,
        mut results: gateway::PeerResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        results.get().set_peer(capnp_rpc::new_client(PeerServer {
            core: self.core.clone(),
        }));
        ready(Ok(()))
    }

    fn stage(
        self: CapRc<Self>,
        _: gateway::StageParams,
        mut results: gateway::StageResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let (id, sink) = ImageSinkServer::staging(&self.core);
        let mut r = results.get();
        r.set_id(id);
        r.set_sink(sink);
        ready(Ok(()))
    }

    fn restore(
        self: CapRc<Self>,
        params: gateway::RestoreParams,
        mut results: gateway::RestoreResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let spec = p.get_spec()?;
            let console = p.get_console()?;
            let image = core
                .staged
                .remove(&spec.get_image())
                .map(|(_, image)| image)
                .ok_or_else(|| failed("no staged checkpoint with that id"))?;
            let ttys = Ttys {
                stdin: spec.get_stdin_tty(),
                stdout: spec.get_stdout_tty(),
                stderr: spec.get_stderr_tty(),
            };
            let (process, pid) = restore(core, image, spec.get_node(), ttys, console).await?;
            let mut r = results.get();
            r.set_process(process);
            r.set_pid(pid);
            Ok(())
        }
    }
}

/// A launch request, read out of its message.
struct LaunchRequest {
    module: Vec<u8>,
    module_name: String,
    command: String,
    args: Vec<String>,
    env: Vec<String>,
    preopens: Vec<Preopen>,
    node: NodeId,
    ttys: Ttys,
}

impl LaunchRequest {
    fn read(r: ssi_schema::launch_spec::Reader<'_>) -> Result<Self, capnp::Error> {
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
        })
    }
}

/// Removes a process from the table and frees its pid when dropped.
/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("no process {0}")]
    NoProcess(Pid),
    #[error("no process group {0}")]
    NoGroup(Pid),
    #[error("{0} is not a process or a process group")]
    BadTarget(i32),
}

async fn launch(
    core: Arc<NodeCore>,
    spec: LaunchRequest,
    console: console::Client,
) -> Result<(process::Client, Pid), capnp::Error> {
    let what = &spec.module_name;
    let wasm = ssi_remote::assemble(&spec.module)
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")))?
        .into_owned();
    let program = core
        .runtime
        .load_binary(&wasm)
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")))?;
    ssi_remote::check_module(&program.module)
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")))?;
    let target = if spec.node == 0 { core.id } else { spec.node };
    // Checked before the process is set up, as well as when its body starts.
    core.can_host(target).map_err(failed)?;
    let (stdio, pump) = console_stdio(spec.ttys);
    let deputy = Deputy::new(stdio, spec.preopens)
        .map_err(|e| failed(format!("cannot run `{what}`: {e}")))?;
    let pid = core.pids.allocate().map_err(failed)?;
    let source = Source {
        program,
        wasm: Arc::new(wasm),
        spec: BodySpec {
            args: spec.args,
            env: spec.env,
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
    };
    start_process(core, start, source, pump, console).await
}

/// Restarts a checkpoint with this node as its home (`ssirun --restore`).
async fn restore(
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
    let program = core
        .runtime
        .load_binary(wasm)
        .map_err(|e| bad(format!("its module: {e}")))?;
    if ghost.module != Some(program.hash) {
        return Err(bad(
            "its module section is not the module its image was taken from".into(),
        ));
    }
    let target = if node == 0 { core.id } else { node };
    core.can_host(target).map_err(failed)?;
    let (stdio, pump) = console_stdio(ttys);
    let deputy = Deputy::restore(stdio, &state).map_err(|e| bad(e.to_string()))?;
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
    };
    let source = Source {
        program,
        wasm: Arc::new(wasm.clone()),
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
    };
    start_process(core, start, source, pump, console).await
}

/// How a process starts: from the beginning or from an image.
struct Start {
    /// Held by the caller; freed if the start fails.
    pid: Pid,
    identity: ssi_deputy::Identity,
    command: String,
    target: NodeId,
    image: Option<Vec<u8>>,
}

/// Enters a process into this home's table, starts its body and the task that
/// follows it, and serves its session the process.
async fn start_process(
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
type ExitFuture = Shared<LocalBoxFuture<'static, ExitReport>>;

/// Enters a process into this home's table and starts its body; the task that
/// follows it to its end runs on the calling thread's `LocalSet`. On failure
/// the process is out of the table and its pid free again.
async fn run_process(
    core: &Arc<NodeCore>,
    start: Start,
    source: Source,
    interrupter: Interrupter,
    flusher: Option<crate::console::Flusher>,
) -> Result<(ExitFuture, flume::Sender<Order>), capnp::Error> {
    let pid = start.pid;
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
    let (orders_tx, orders) = flume::unbounded::<Order>();
    let notice = Arc::new(family::Notice::default());
    core.procs.insert(
        pid,
        HomeProc {
            info: ProcessInfo {
                pid,
                home: core.id,
                node: start.target,
                state: ProcState::Running,
                command: start.command,
                started_ms: now_ms(),
                cpu_ns: 0,
                memory: 0,
                pgid: start.identity.pgid,
                ppid: start.identity.ppid,
                pinned: source.program.not_freezable.clone(),
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
        },
    );
    let mut reap = family::Reap::new(core.clone(), pid);
    let first = match start_body(core, pid, start.target, &source, start.image).await {
        Ok(first) => first,
        Err(e) => {
            reap.discard();
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
    tokio::task::spawn_local(async move {
        let report = task.run(first, orders).await;
        tracing::debug!(pid, ?report, "process ended");
        // Everything the program wrote reaches the session before its end does;
        // then the session's console is let go.
        if let Some(flusher) = flusher {
            flusher.close().await;
            tracing::debug!(pid, "its output reached its session");
        }
        reap.ended(&report);
        drop(reap);
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

/// What a process's body is made of, to start it anywhere.
struct Source {
    program: Program,
    /// The module as launched, for nodes that do not hold it.
    wasm: Arc<Vec<u8>>,
    spec: BodySpec,
    deputy: SharedDeputy,
}

/// A body running somewhere, and the report of its end.
struct Running {
    place: Placement,
    end: LocalBoxFuture<'static, ExitReport>,
}

/// Where a process's body runs, and how to reach it.
enum Placement {
    Local(Arc<BodySlot>),
    Remote {
        node: NodeId,
        control: body_control::Client,
    },
}

/// A frozen body, held where it was until it is released or resumed.
enum Held {
    Local(flume::Sender<FrozenOrder>),
    Remote(body_control::Client),
}

impl Held {
    fn decide(self, verdict: Verdict) {
        match self {
            Held::Local(tx) => {
                let _ = tx.send(FrozenOrder::Verdict(verdict));
            }
            Held::Remote(control) => {
                let call = match verdict {
                    Verdict::Release => control
                        .release_request()
                        .send()
                        .promise
                        .map(|_| ())
                        .boxed_local(),
                    Verdict::Resume | Verdict::Kill => control
                        .resume_request()
                        .send()
                        .promise
                        .map(|_| ())
                        .boxed_local(),
                };
                tokio::task::spawn_local(call);
            }
        }
    }

    /// The frozen body's image, whole.
    async fn image(&self) -> Result<(Vec<u8>, ImageStats), String> {
        let gone = "the body's thread went away";
        match self {
            Held::Local(orders) => {
                let (reply, image) = flume::bounded(1);
                orders
                    .send(FrozenOrder::Image(reply))
                    .map_err(|_| gone.to_string())?;
                image.recv_async().await.map_err(|_| gone.to_string())?
            }
            Held::Remote(control) => {
                let image = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                let sink: ssi_schema::image_sink::Client =
                    capnp_rpc::new_client(ImageSinkServer::collecting(image.clone()));
                let mut req = control.image_request();
                req.get().set_sink(sink);
                let reply = req
                    .send()
                    .promise
                    .await
                    .map_err(|e| format!("its node could not write its image: {}", e.extra))?;
                let reply = reply.get().map_err(|e| e.to_string())?;
                let stats = ImageStats {
                    bytes: reply.get_bytes(),
                    memory: reply.get_memory(),
                };
                Ok((image.take(), stats))
            }
        }
    }

    /// Streams the frozen body's image to the node at `address`, which
    /// expects it under `ticket`.
    async fn send_to(&self, address: &str, ticket: transfer::Ticket) -> Result<ImageStats, String> {
        let gone = "the body's thread went away";
        match self {
            Held::Local(orders) => {
                let (reply, sent) = flume::bounded(1);
                orders
                    .send(FrozenOrder::SendTo {
                        address: address.to_string(),
                        ticket,
                        reply,
                    })
                    .map_err(|_| gone.to_string())?;
                sent.recv_async().await.map_err(|_| gone.to_string())?
            }
            Held::Remote(control) => {
                let mut req = control.send_to_request();
                req.get().set_address(address);
                req.get().set_ticket(&ticket);
                let reply = req
                    .send()
                    .promise
                    .await
                    .map_err(|e| crate::rpc::remote_message(&e))?;
                let reply = reply.get().map_err(|e| e.to_string())?;
                Ok(ImageStats {
                    bytes: reply.get_bytes(),
                    memory: reply.get_memory(),
                })
            }
        }
    }
}

impl Placement {
    fn node(&self, home: NodeId) -> NodeId {
        match self {
            Placement::Local(_) => home,
            Placement::Remote { node, .. } => *node,
        }
    }

    /// Tells the body that signals are pending for its handlers.
    fn signal(&self) {
        match self {
            Placement::Local(slot) => slot.signal(),
            Placement::Remote { control, .. } => {
                tokio::task::spawn_local(control.signal_request().send().promise.map(|_| ()));
            }
        }
    }

    fn stop(&self) {
        match self {
            Placement::Local(slot) => slot.kill(),
            Placement::Remote { control, .. } => {
                tokio::task::spawn_local(control.kill_request().send().promise.map(|_| ()));
            }
        }
    }

    /// Freezes the body, held frozen where it is.
    async fn freeze(&self) -> Result<Held, String> {
        match self {
            Placement::Local(slot) => {
                let frozen = slot.freeze()?;
                let body = frozen
                    .recv_async()
                    .await
                    .map_err(|_| "the body's thread went away".to_string())??;
                Ok(Held::Local(body.orders))
            }
            Placement::Remote { node, control } => {
                control
                    .freeze_request()
                    .send()
                    .promise
                    .await
                    .map_err(|e| format!("node {node} could not freeze the body: {}", e.extra))?;
                Ok(Held::Remote(control.clone()))
            }
        }
    }
}

/// Largest chunk of a ghost image in one message.
const IMAGE_CHUNK: usize = 4 << 20;

/// Streams a ghost image into `sink`, chunk by chunk, and closes it.
async fn send_image(
    sink: &ssi_schema::image_sink::Client,
    image: &[u8],
) -> Result<(), capnp::Error> {
    for chunk in image.chunks(IMAGE_CHUNK) {
        let mut w = sink.write_request();
        w.get().set_chunk(chunk);
        w.send().await?;
    }
    sink.done_request().send().promise.await?;
    Ok(())
}

/// Starts a process's body on node `target` (this node or a peer), from the
/// start or from a ghost image held whole (a checkpoint). Returns once the
/// body runs (for an image: once it is restored).
async fn start_body(
    core: &Arc<NodeCore>,
    pid: Pid,
    target: NodeId,
    source: &Source,
    image: Option<Vec<u8>>,
) -> Result<Running, capnp::Error> {
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
        return transfer::restore_at(core, pid, target, source, image)
            .await
            .map_err(failed);
    }
    let (address, gateway, peer) = transfer::peer_at(core, target).await.map_err(failed)?;
    let hash = source.program.hash;
    transfer::send_module(core, target, &hash, &source.wasm)
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
        b.set_home(&core.address);
        b.set_secret(&secret);
        b.set_clock_offset(0);
        req.send().promise
    };
    // A node that held the module may have restarted since: then it is sent.
    let started = transfer::while_up(core, target, async {
        match run(false).await {
            Err(e) if crate::rpc::remote_message(&e).contains(transfer::NO_MODULE) => {
                run(true).await
            }
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
    core.note_holds(target, hash);
    Ok(transfer::remote_running(
        core.clone(),
        target,
        address,
        gateway,
        control,
    ))
}

/// What a process's home is asked to do with it.
pub(crate) enum Order {
    Signal(Signal),
    /// Its session went away.
    Abandon,
    Migrate {
        to: NodeId,
        reply: oneshot::Sender<Result<MigrationReport, String>>,
    },
    Checkpoint {
        stop: bool,
        reply: oneshot::Sender<Result<Checkpoint, String>>,
    },
}

/// A checkpoint: the file's bytes, and what `ssictl checkpoint` reports.
pub struct Checkpoint {
    pub image: Vec<u8>,
    pub report: CheckpointReport,
    /// Told whether the image reached its destination (a process checkpointed
    /// to be stopped stays frozen until then, and goes on if it did not).
    done: Option<oneshot::Sender<bool>>,
}

impl Checkpoint {
    /// Says whether the image is safe where it went.
    pub fn delivered(&mut self, safe: bool) {
        if let Some(done) = self.done.take() {
            let _ = done.send(safe);
        }
    }
}

impl Drop for Checkpoint {
    /// Never said: not delivered.
    fn drop(&mut self) {
        self.delivered(false);
    }
}

/// One checkpoint, as `ssictl checkpoint` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    pub pid: Pid,
    /// Where the body ran.
    pub node: NodeId,
    pub image_bytes: u64,
    pub memory_bytes: u64,
    pub freeze_micros: u64,
    /// Request to the checkpoint taken, before it is written anywhere.
    pub total_micros: u64,
}

/// One migration, as `ssictl migrate` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub from: NodeId,
    pub to: NodeId,
    pub image_bytes: u64,
    pub memory_bytes: u64,
    pub freeze_micros: u64,
    pub total_micros: u64,
}

/// The home's side of one process, on its session's thread: it follows the
/// body wherever it runs and acts on signals and migrations until the end.
struct ProcessTask {
    core: Arc<NodeCore>,
    pid: Pid,
    source: Source,
    interrupter: Interrupter,
    /// The console is its session's own (not a parent's it shares).
    own_console: bool,
    notice: Arc<family::Notice>,
    /// The deputy's signal dispositions, mask and pending set.
    signals: Arc<ssi_deputy::Signals>,
    /// Connections to the nodes its body moved to, kept while it lives.
    links:
        std::cell::RefCell<std::collections::HashMap<NodeId, std::rc::Rc<crate::rpc::Connection>>>,
}

impl ProcessTask {
    async fn run(self, first: Running, orders: flume::Receiver<Order>) -> ExitReport {
        let mut running = first;
        // The signal that ended the process, if one did.
        let mut fatal: Option<Signal> = None;
        // It was checkpointed and stopped.
        let mut checkpointed = false;
        // Stopped (SIGSTOP, SIGTSTP…): the body is frozen, held until SIGCONT.
        let mut stopped: Option<Held> = None;
        // A signal that ends the process, sent while it was stopped: it takes
        // effect when the process continues (SIGKILL at once), as in POSIX.
        let mut pending: Option<Signal> = None;
        let report = loop {
            let next = futures::future::select(&mut running.end, orders.recv_async()).await;
            let order = match next {
                futures::future::Either::Left((report, _)) => break report,
                futures::future::Either::Right((Ok(order), _)) => order,
                futures::future::Either::Right((Err(_), _)) => break (&mut running.end).await,
            };
            // Ends the process: a frozen body is let go on to be killed.
            let end =
                |sig: Option<Signal>, fatal: &mut Option<Signal>, stopped: &mut Option<Held>| {
                    if let Some(sig) = sig {
                        tracing::debug!(pid = self.pid, signal = %sig, "ending the process");
                        fatal.get_or_insert(sig);
                    }
                    self.end_waits();
                    running.place.stop();
                    if let Some(held) = stopped.take() {
                        held.decide(Verdict::Resume);
                    }
                };
            match order {
                // A signal the process handles runs its handler in the body
                // (a stopped body runs it once continued); one it blocks
                // waits; the others take their default action here.
                Order::Signal(sig) => match self.signals.deliver(sig) {
                    Delivery::Held | Delivery::Ignored => {}
                    Delivery::Handle => {
                        if stopped.is_none() && fatal.is_none() {
                            self.post_signals(&running);
                        }
                    }
                    Delivery::Default(action) => match action {
                        DefaultAction::Terminate if fatal.is_some() => {}
                        DefaultAction::Terminate if stopped.is_some() && sig != Signal::KILL => {
                            pending.get_or_insert(sig);
                        }
                        DefaultAction::Terminate => end(Some(sig), &mut fatal, &mut stopped),
                        DefaultAction::Stop if stopped.is_none() && fatal.is_none() => {
                            match self.freeze(&running, ProcState::Stopped).await {
                                Ok(held) => {
                                    stopped = Some(held);
                                    self.core
                                        .child_changed(self.pid, wait::stopped(sig.number()));
                                }
                                Err(e) => {
                                    tracing::warn!(pid = self.pid, signal = %sig, "cannot stop: {e}")
                                }
                            }
                        }
                        DefaultAction::Continue => {
                            if let Some(held) = stopped.take() {
                                self.set_state(ProcState::Running, None);
                                held.decide(Verdict::Resume);
                                self.core.child_changed(self.pid, wait::CONTINUED);
                                if let Some(sig) = pending.take() {
                                    end(Some(sig), &mut fatal, &mut stopped);
                                } else if self.signals.deliverable() {
                                    self.post_signals(&running);
                                }
                            }
                        }
                        DefaultAction::Stop | DefaultAction::Ignore => {}
                    },
                },
                Order::Abandon => end(None, &mut fatal, &mut stopped),
                Order::Migrate { reply, .. } if stopped.is_some() => {
                    let _ = reply.send(Err(self.is_stopped()));
                }
                Order::Checkpoint { reply, .. } if stopped.is_some() => {
                    let _ = reply.send(Err(self.is_stopped()));
                }
                Order::Migrate { to, reply } => {
                    let r = self.migrate(&mut running, to).await;
                    let _ = reply.send(r);
                }
                Order::Checkpoint { stop, reply } => {
                    checkpointed |= self.checkpoint(&running, stop, reply).await;
                }
            }
        };
        match fatal {
            _ if checkpointed => ExitReport::Checkpointed,
            Some(sig) => ExitReport::Signaled(sig.number()),
            None => report,
        }
    }

    /// Signals are pending for the body's handlers: the body is told, and a
    /// read or a `waitpid` it waits in is cut short for them to run.
    fn post_signals(&self, running: &Running) {
        running.place.signal();
        self.interrupter.interrupt();
        self.notice.cut();
    }

    /// The process is ending: a read of its console or a `waitpid` it is
    /// blocked in returns. A child shares its session's console, which goes
    /// on serving the others: only the read waiting now is cut.
    fn end_waits(&self) {
        if self.own_console {
            self.interrupter.end();
        } else {
            self.interrupter.interrupt();
        }
        self.notice.cut();
    }

    fn is_stopped(&self) -> String {
        format!(
            "process {} is stopped: continue it first (ssictl kill -CONT {})",
            self.pid, self.pid
        )
    }

    fn set_state(&self, state: ProcState, node: Option<NodeId>) {
        if let Some(mut p) = self.core.procs.get_mut(&self.pid) {
            p.info.state = state;
            if let Some(n) = node {
                p.info.node = n;
            }
        }
    }

    /// Freezes the body where it runs, showing `state` meanwhile: the body
    /// held frozen. A failure leaves it running.
    async fn freeze(&self, running: &Running, state: ProcState) -> Result<Held, String> {
        if let Some(why) = &self.source.program.not_freezable {
            return Err(why.clone());
        }
        self.set_state(state, None);
        // A body waiting in a read at its deputy is freed by cutting the read
        // short; the read is made again where the body resumes. Until the body
        // is frozen, such a read may begin at any moment: keep cutting.
        let freeze = running.place.freeze();
        let poke = async {
            loop {
                self.interrupter.interrupt();
                self.notice.cut();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        futures::pin_mut!(freeze, poke);
        let frozen = futures::future::select(freeze, poke).await.factor_first().0;
        if frozen.is_err() {
            self.set_state(ProcState::Running, None);
        }
        frozen
    }

    /// A checkpoint: the frozen body's image sealed with the deputy's state
    /// and the module. Then the body goes on, or with `stop` is dropped and
    /// the process ends as checkpointed.
    /// With `stop`, the body stays frozen until the asker says the checkpoint
    /// is safe where it went (`Checkpoint::delivered`), and only then is
    /// dropped; if it is not, the body goes on. True if the process stopped.
    async fn checkpoint(
        &self,
        running: &Running,
        stop: bool,
        reply: oneshot::Sender<Result<Checkpoint, String>>,
    ) -> bool {
        let pid = self.pid;
        let t0 = Instant::now();
        let held = match self.freeze(running, ProcState::Checkpointing).await {
            Ok(frozen) => frozen,
            Err(e) => {
                let _ = reply.send(Err(format!("cannot checkpoint process {pid}: {e}")));
                return false;
            }
        };
        let freeze_micros = t0.elapsed().as_micros() as u64;
        let (image, stats) = match held.image().await {
            Ok(image) => image,
            Err(e) => {
                self.set_state(ProcState::Running, None);
                held.decide(Verdict::Resume);
                let _ = reply.send(Err(format!(
                    "cannot checkpoint process {pid}: {e}; it goes on"
                )));
                return false;
            }
        };
        let memory_bytes = stats.memory;
        let sealed = lock(&self.source.deputy)
            .checkpoint()
            .map_err(|e| e.to_string())
            .and_then(|state| {
                ssi_remote::ghost::seal_checkpoint(image, &state.encode(), &self.source.wasm)
                    .map_err(|e| e.to_string())
            });
        let image = match sealed {
            Ok(image) => image,
            Err(e) => {
                self.set_state(ProcState::Running, None);
                held.decide(Verdict::Resume);
                let _ = reply.send(Err(format!(
                    "cannot checkpoint process {pid}: {e}; it goes on"
                )));
                return false;
            }
        };
        let (done, delivered) = oneshot::channel();
        let checkpoint = Checkpoint {
            report: CheckpointReport {
                pid,
                node: running.place.node(self.core.id),
                image_bytes: image.len() as u64,
                memory_bytes,
                freeze_micros,
                total_micros: t0.elapsed().as_micros() as u64,
            },
            image,
            done: Some(done),
        };
        if !stop {
            self.set_state(ProcState::Running, None);
            held.decide(Verdict::Resume);
            let _ = reply.send(Ok(checkpoint));
            return false;
        }
        if reply.send(Ok(checkpoint)).is_err() {
            self.set_state(ProcState::Running, None);
            held.decide(Verdict::Resume);
            return false;
        }
        let safe = delivered.await.unwrap_or(false);
        self.set_state(ProcState::Running, None);
        if safe {
            self.end_waits();
            held.decide(Verdict::Release);
        } else {
            tracing::warn!(
                pid,
                "the checkpoint did not reach its file: the process goes on"
            );
            held.decide(Verdict::Resume);
        }
        safe
    }

    /// The migration protocol: the destination expects the body (and opens
    /// its deputy link) while the body freezes; the image streams from where
    /// the body is straight to the destination, which restores it (its
    /// acknowledgement); only then is the frozen body dropped. Any failure
    /// before the acknowledgement resumes the body where it was.
    async fn migrate(&self, running: &mut Running, to: NodeId) -> Result<MigrationReport, String> {
        let (core, pid) = (&self.core, self.pid);
        let from = running.place.node(core.id);
        if to == from {
            return Err(format!("process {pid} already runs on node {to}"));
        }
        core.can_host(to)?;
        if let Some(why) = &self.source.program.not_freezable {
            return Err(format!("cannot migrate process {pid}: {why}"));
        }
        let t0 = Instant::now();
        let freeze = async {
            let t = Instant::now();
            let held = self.freeze(running, ProcState::Migrating).await;
            (held, t.elapsed().as_micros() as u64)
        };
        // The destination is made ready while the body freezes: it holds the
        // module already (`NodeCore::migrate` sent it before this order), so a
        // pause never includes its compilation.
        let ((frozen, freeze_micros), expecting) =
            futures::join!(freeze, transfer::expect_at(core, pid, to, &self.source));
        let held = frozen.map_err(|e| format!("cannot migrate process {pid}: {e}"))?;
        let gave_up = |e: String, held: Held| {
            held.decide(Verdict::Resume);
            self.set_state(ProcState::Running, None);
            format!("cannot move process {pid} to node {to}: {e}; it goes on on node {from}")
        };
        let expecting = match expecting {
            Ok(e) => e,
            Err(e) => return Err(gave_up(e, held)),
        };
        // The process may well come back there: its home keeps the way.
        if let Some(c) = &expecting.connection {
            self.links.borrow_mut().insert(to, c.clone());
        }
        let stats = match held.send_to(&expecting.address, expecting.ticket).await {
            Ok(stats) => stats,
            Err(e) => return Err(gave_up(e, held)),
        };
        match expecting.arrival.await {
            Ok((moved, arrived)) => {
                // The frozen body is dropped, then the new one goes on.
                held.decide(Verdict::Release);
                arrived.decide(Verdict::Resume);
                *running = moved;
                self.set_state(ProcState::Running, Some(to));
                // Signals that came for the old body are the new one's.
                if self.signals.deliverable() {
                    self.post_signals(running);
                }
                Ok(MigrationReport {
                    from,
                    to,
                    image_bytes: stats.bytes,
                    memory_bytes: stats.memory,
                    freeze_micros,
                    total_micros: t0.elapsed().as_micros() as u64,
                })
            }
            Err(e) => Err(gave_up(e, held)),
        }
    }
}

struct ProcessServer {
    core: Arc<NodeCore>,
    pid: Pid,
    exit: Shared<LocalBoxFuture<'static, ExitReport>>,
    orders: Option<flume::Sender<Order>>,
}

impl process::Server for ProcessServer {
    fn checkpoint(
        self: CapRc<Self>,
        params: process::CheckpointParams,
        mut results: process::CheckpointResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let (core, pid) = (self.core.clone(), self.pid);
        async move {
            let p = params.get()?;
            let report = cluster_checkpoint(core, pid, p.get_stop(), p.get_sink()?).await?;
            write_checkpoint_report(results.get().init_report(), &report);
            Ok(())
        }
    }

    fn wait(
        self: CapRc<Self>,
        _: process::WaitParams,
        mut results: process::WaitResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let exit = self.exit.clone();
        async move {
            let report = exit.await;
            write_exit(results.get().init_exit(), &report);
            Ok(())
        }
    }

    fn signal(
        self: CapRc<Self>,
        params: process::SignalParams,
        _: process::SignalResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let sig = Signal::from_number(params.get()?.get_signal())
                .ok_or_else(|| failed("not a signal number"))?;
            // The session's terminal signals its foreground process group.
            let pgid = self
                .core
                .procs
                .get(&self.pid)
                .map(|p| p.info.pgid)
                .unwrap_or(self.pid);
            match self.core.signal(-(pgid as i32), Some(sig)) {
                Ok(_) | Err(SignalError::NoGroup(_)) => Ok(()),
                Err(e) => Err(failed(e)),
            }
        })();
        ready(r)
    }
}

impl Drop for ProcessServer {
    /// The session let go of its process (`ssirun` went away): stop it.
    fn drop(&mut self) {
        if self.exit.peek().is_some() {
            return;
        }
        if let Some(orders) = self.orders.take() {
            let _ = orders.send(Order::Abandon);
        }
    }
}

impl NodeCore {
    /// The identity of a process whose home is this node.
    pub fn identity_of(&self, pid: Pid) -> Option<ssi_deputy::Identity> {
        self.procs.get(&pid).map(|p| p.identity)
    }

    /// Sends a signal to a process whose home is this node (`target` > 0) or to
    /// every member of a process group (`target` = -pgid); returns how many.
    /// With `sig` `None` (signal 0), only counts the processes it would reach.
    pub fn signal(&self, target: i32, sig: Option<Signal>) -> Result<u32, SignalError> {
        let send = |p: &HomeProc| match sig {
            Some(sig) => u32::from(p.orders.send(Order::Signal(sig)).is_ok()),
            None => 1,
        };
        match target {
            t if t > 0 => {
                let pid = t as Pid;
                let p = self.procs.get(&pid).ok_or(SignalError::NoProcess(pid))?;
                Ok(send(&p))
            }
            t if t < 0 && t != i32::MIN => {
                let pgid = t.unsigned_abs();
                let n: u32 = self
                    .procs
                    .iter()
                    .filter(|p| p.info.pgid == pgid)
                    .map(|p| send(&p))
                    .sum();
                if n == 0 {
                    return Err(SignalError::NoGroup(pgid));
                }
                Ok(n)
            }
            t => Err(SignalError::BadTarget(t)),
        }
    }
}

// ---------------------------------------------------------------------------
// Peer

struct PeerServer {
    core: Arc<NodeCore>,
}

impl PeerServer {
    /// The module a body is to run: held here, or sent with the request.
    fn program_of(&self, b: ssi_schema::body_launch::Reader<'_>) -> Result<Program, capnp::Error> {
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
            return Err(failed(format!(
                "node {} {} {hash}",
                core.id,
                transfer::NO_MODULE
            )));
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
        let r = (|| {
            let hash: [u8; 32] = params
                .get()?
                .get_hash()?
                .try_into()
                .map_err(|_| failed("a module hash is 32 bytes"))?;
            let present = self.core.modules.contains_key(&ModuleHash(hash));
            results.get().set_present(present);
            Ok(())
        })();
        ready(r)
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
            };
            let home = text(b.get_home())?;
            let secret = b.get_secret()?.to_vec();
            let made = program.clone();
            let make: MakeBody = Box::new(move |runtime| {
                let link = NetLink::connect(&home, pid, &secret).map_err(|e| e.to_string())?;
                Body::new(runtime, &made, &spec, Box::new(link)).map_err(|e| e.to_string())
            });
            core.spawn_body(pid, program, make).map_err(failed)
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
            let program = self.program_of(b)?;
            let home = text(b.get_home())?;
            let secret = b.get_secret()?.to_vec();
            // The link to the home opens while the image comes.
            let connecting = std::thread::Builder::new()
                .name(format!("link-{pid}"))
                .spawn(move || NetLink::connect(&home, pid, &secret))
                .map_err(failed)?;
            let (ticket, arrival) = core
                .expect(pid, program, transfer::LinkSource::Remote(connecting))
                .map_err(failed)?;
            let mut r = results.get();
            r.set_ticket(&ticket);
            r.set_arrival(capnp_rpc::new_client(transfer::ArrivalServer::new(
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

    fn load_module(
        self: CapRc<Self>,
        params: peer::LoadModuleParams,
        _: peer::LoadModuleResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        let bytes = params.get().and_then(|p| Ok(p.get_module()?.to_vec()));
        async move {
            let bytes = bytes?;
            // Compiled on a thread of its own: this connection goes on
            // answering meanwhile.
            let (done, loaded) = futures::channel::oneshot::channel();
            std::thread::Builder::new()
                .name("load-module".into())
                .spawn(move || {
                    let r = core.runtime.load_binary(&bytes).map(|program| {
                        core.modules.insert(program.hash, program);
                    });
                    let _ = done.send(r.map_err(|e| e.to_string()));
                })
                .map_err(failed)?;
            loaded
                .await
                .map_err(|_| failed("the module's loader went away"))?
                .map_err(failed)
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
            let report = core.migrate(p.get_pid(), p.get_node()).await?;
            write_migration(results.get().init_report(), &report);
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
        for (i, (pid, cpu, mem)) in bodies.iter().enumerate() {
            let mut b = list.reborrow().get(i as u32);
            b.set_pid(*pid);
            b.set_cpu_ns(*cpu);
            b.set_memory(*mem);
        }
        ready(Ok(()))
    }
}

fn write_process(mut b: ssi_schema::process_info::Builder<'_>, p: &ProcessInfo) {
    b.set_pid(p.pid);
    b.set_home(p.home);
    b.set_node(p.node);
    b.set_state(match p.state {
        ProcState::Running => ssi_schema::ProcState::Running,
        ProcState::Migrating => ssi_schema::ProcState::Migrating,
        ProcState::Checkpointing => ssi_schema::ProcState::Checkpointing,
        ProcState::Stopped => ssi_schema::ProcState::Stopped,
        ProcState::Zombie => ssi_schema::ProcState::Zombie,
    });
    b.set_command(&p.command);
    b.set_started_ms(p.started_ms);
    b.set_cpu_ns(p.cpu_ns);
    b.set_memory(p.memory);
    b.set_pgid(p.pgid);
    b.set_ppid(p.ppid);
    b.set_pinned(p.pinned.as_deref().unwrap_or(""));
}

fn read_process(r: ssi_schema::process_info::Reader<'_>) -> Result<ProcessInfo, capnp::Error> {
    Ok(ProcessInfo {
        pid: r.get_pid(),
        home: r.get_home(),
        node: r.get_node(),
        state: match r.get_state() {
            Ok(ssi_schema::ProcState::Running) => ProcState::Running,
            Ok(ssi_schema::ProcState::Migrating) => ProcState::Migrating,
            Ok(ssi_schema::ProcState::Checkpointing) => ProcState::Checkpointing,
            Ok(ssi_schema::ProcState::Stopped) => ProcState::Stopped,
            Ok(ssi_schema::ProcState::Zombie) => ProcState::Zombie,
            Err(_) => return Err(failed("unknown process state")),
        },
        command: text(r.get_command())?,
        started_ms: r.get_started_ms(),
        cpu_ns: r.get_cpu_ns(),
        memory: r.get_memory(),
        pgid: r.get_pgid(),
        ppid: r.get_ppid(),
        pinned: Some(text(r.get_pinned())?).filter(|t| !t.is_empty()),
    })
}

struct BodyControlServer {
    slot: Arc<BodySlot>,
    exit: Shared<LocalBoxFuture<'static, ExitReport>>,
    /// Orders for the frozen body's thread, while it is frozen.
    held: std::cell::RefCell<Option<flume::Sender<FrozenOrder>>>,
}

impl BodyControlServer {
    /// For a body running on this node; `held`, if it waits for orders.
    fn new(
        slot: Arc<BodySlot>,
        exit: LocalBoxFuture<'static, ExitReport>,
        held: Option<flume::Sender<FrozenOrder>>,
    ) -> Self {
        BodyControlServer {
            slot,
            exit: exit.shared(),
            held: std::cell::RefCell::new(held),
        }
    }

    fn orders(&self) -> Result<flume::Sender<FrozenOrder>, capnp::Error> {
        self.held
            .borrow()
            .clone()
            .ok_or_else(|| failed("the body is not frozen"))
    }

    fn decide(&self, verdict: Verdict) -> Result<(), capnp::Error> {
        let held = self
            .held
            .borrow_mut()
            .take()
            .ok_or_else(|| failed("the body is not frozen"))?;
        let _ = held.send(FrozenOrder::Verdict(verdict));
        Ok(())
    }
}

/// Receives a ghost image: into a buffer of the caller's, or staged on this
/// node under an id (`Peer.stage`).
struct ImageSinkServer {
    buffer: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    staged: Option<(Arc<NodeCore>, u64)>,
}

impl ImageSinkServer {
    fn collecting(buffer: std::rc::Rc<std::cell::RefCell<Vec<u8>>>) -> Self {
        ImageSinkServer {
            buffer,
            staged: None,
        }
    }

    /// A sink that stages what it receives on this node, under a fresh id.
    fn staging(core: &Arc<NodeCore>) -> (u64, ssi_schema::image_sink::Client) {
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 && !core.staged.contains_key(&id) {
                break id;
            }
        };
        let sink = capnp_rpc::new_client(ImageSinkServer {
            buffer: std::rc::Rc::new(std::cell::RefCell::new(Vec::new())),
            staged: Some((core.clone(), id)),
        });
        (id, sink)
    }
}

impl ssi_schema::image_sink::Server for ImageSinkServer {
    async fn write(
        self: CapRc<Self>,
        params: ssi_schema::image_sink::WriteParams,
    ) -> Result<(), capnp::Error> {
        let chunk = params.get()?.get_chunk()?;
        let mut buffer = self.buffer.borrow_mut();
        if buffer.len() + chunk.len() > MAX_IMAGE {
            return Err(failed("the image is larger than any Wasm32 body"));
        }
        buffer.extend_from_slice(chunk);
        Ok(())
    }

    fn done(
        self: CapRc<Self>,
        _: ssi_schema::image_sink::DoneParams,
        _: ssi_schema::image_sink::DoneResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        if let Some((core, id)) = &self.staged {
            core.staged.insert(*id, self.buffer.take());
        }
        ready(Ok(()))
    }

    fn size(
        self: CapRc<Self>,
        params: ssi_schema::image_sink::SizeParams,
        _: ssi_schema::image_sink::SizeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = params.get().and_then(|p| {
            let bytes = usize::try_from(p.get_bytes()).unwrap_or(usize::MAX);
            if bytes > MAX_IMAGE {
                return Err(failed("the image is larger than any Wasm32 body"));
            }
            self.buffer.borrow_mut().reserve(bytes);
            Ok(())
        });
        ready(r)
    }
}

/// No image is larger: 4 GiB of memory, and a little more.
const MAX_IMAGE: usize = (4 << 30) + (64 << 20);

impl body_control::Server for BodyControlServer {
    fn wait(
        self: CapRc<Self>,
        _: body_control::WaitParams,
        mut results: body_control::WaitResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let exit = self.exit.clone();
        async move {
            let report = exit.await;
            write_exit(results.get().init_exit(), &report);
            Ok(())
        }
    }

    fn kill(
        self: CapRc<Self>,
        _: body_control::KillParams,
        _: body_control::KillResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        self.slot.kill();
        ready(Ok(()))
    }

    fn signal(
        self: CapRc<Self>,
        _: body_control::SignalParams,
        _: body_control::SignalResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        self.slot.signal();
        ready(Ok(()))
    }

    fn freeze(
        self: CapRc<Self>,
        _: body_control::FreezeParams,
        _: body_control::FreezeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = self.slot.freeze().map_err(failed);
        async move {
            let body = asked?
                .recv_async()
                .await
                .map_err(|_| failed("the body's thread went away"))?
                .map_err(failed)?;
            *self.held.borrow_mut() = Some(body.orders);
            Ok(())
        }
    }

    fn image(
        self: CapRc<Self>,
        params: body_control::ImageParams,
        mut results: body_control::ImageResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = params
            .get()
            .and_then(|p| p.get_sink())
            .and_then(|sink| Ok((sink, self.orders()?)));
        async move {
            let (sink, orders) = asked?;
            let (reply, image) = flume::bounded(1);
            orders
                .send(FrozenOrder::Image(reply))
                .map_err(|_| failed("the body's thread went away"))?;
            let (image, stats) = image
                .recv_async()
                .await
                .map_err(|_| failed("the body's thread went away"))?
                .map_err(failed)?;
            send_image(&sink, &image).await?;
            let mut r = results.get();
            r.set_bytes(stats.bytes);
            r.set_memory(stats.memory);
            Ok(())
        }
    }

    fn send_to(
        self: CapRc<Self>,
        params: body_control::SendToParams,
        mut results: body_control::SendToResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = params.get().and_then(|p| {
            let address = text(p.get_address())?;
            let ticket: transfer::Ticket = p
                .get_ticket()?
                .try_into()
                .map_err(|_| failed("a ticket is 16 bytes"))?;
            Ok((address, ticket, self.orders()?))
        });
        async move {
            let (address, ticket, orders) = asked?;
            let (reply, sent) = flume::bounded(1);
            orders
                .send(FrozenOrder::SendTo {
                    address,
                    ticket,
                    reply,
                })
                .map_err(|_| failed("the body's thread went away"))?;
            let stats = sent
                .recv_async()
                .await
                .map_err(|_| failed("the body's thread went away"))?
                .map_err(failed)?;
            let mut r = results.get();
            r.set_bytes(stats.bytes);
            r.set_memory(stats.memory);
            Ok(())
        }
    }

    fn resume(
        self: CapRc<Self>,
        _: body_control::ResumeParams,
        _: body_control::ResumeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        ready(self.decide(Verdict::Resume))
    }

    fn release(
        self: CapRc<Self>,
        _: body_control::ReleaseParams,
        _: body_control::ReleaseResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        ready(self.decide(Verdict::Release))
    }
}

impl Drop for BodyControlServer {
    /// The home let go of the body (it went away): the body cannot go on.
    fn drop(&mut self) {
        self.slot.kill();
    }
}

// ---------------------------------------------------------------------------
// Deputy

/// Serves one process's deputy to its remote body, on the body's own connection
/// and thread (see `DeputyHello` in the schema). A call that blocks (a read of
/// the terminal) holds up this body only.
struct DeputyServer {
    deputy: SharedDeputy,
    /// A failed pipelined write, reported at the next call on its descriptor.
    kept: Option<(Fd, Errno)>,
}

fn syscall_fd(call: &Syscall) -> Option<Fd> {
    match call {
        Syscall::FdWrite { fd, .. }
        | Syscall::FdPwrite { fd, .. }
        | Syscall::FdRead { fd, .. }
        | Syscall::FdPread { fd, .. }
        | Syscall::FdClose { fd }
        | Syscall::FdSync { fd }
        | Syscall::FdDatasync { fd }
        | Syscall::FdFdstatGet { fd }
        | Syscall::FdFdstatSetFlags { fd, .. }
        | Syscall::FdFilestatGet { fd }
        | Syscall::FdSeek { fd, .. }
        | Syscall::FdTell { fd } => Some(*fd),
        Syscall::FdRenumber { from, .. } => Some(*from),
        _ => None,
    }
}

impl DeputyServer {
    fn execute(&self, call: Syscall) -> ssi_deputy::SyscallResult {
        let mut deputy = self.deputy.lock().unwrap_or_else(|p| p.into_inner());
        deputy.call(call)
    }

    fn call(&mut self, call: Syscall) -> ssi_deputy::SyscallResult {
        match self.kept {
            Some((fd, e)) if syscall_fd(&call) == Some(fd) => {
                self.kept = None;
                Err(e)
            }
            _ => self.execute(call),
        }
    }

    /// A pipelined write: every byte is written, or the failure is kept.
    fn write(&mut self, fd: Fd, mut data: &[u8]) {
        if self.kept.is_some_and(|(f, _)| f == fd) {
            return;
        }
        let mut deputy = self.deputy.lock().unwrap_or_else(|p| p.into_inner());
        while !data.is_empty() {
            match deputy.write(fd, data) {
                Ok(n) if n > 0 => data = &data[(n as usize).min(data.len())..],
                Ok(_) => {
                    self.kept = Some((fd, Errno::Io));
                    return;
                }
                Err(e) => {
                    self.kept = Some((fd, e));
                    return;
                }
            }
        }
    }
}

/// Why a deputy connection ended early.
#[derive(Debug, thiserror::Error)]
enum DeputyConnError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Message(#[from] capnp::Error),
}

/// Serves a body's deputy connection (after its preamble) until it closes.
fn serve_deputy(core: &NodeCore, stream: std::net::TcpStream) -> Result<(), DeputyConnError> {
    use crate::rpc::{read_frame, write_frame};
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, stream);
    let hello = read_frame(&mut reader)?;
    let hello = hello.get_root::<ssi_schema::deputy_hello::Reader<'_>>()?;
    let pid = hello.get_pid();
    let granted = match core.procs.get_mut(&pid) {
        None => Err(format!("no process {pid} at this home")),
        Some(mut entry) => {
            if entry.secret.as_ref().map(|s| &s[..]) == Some(hello.get_secret()?) {
                entry.secret = None;
                Ok(entry.deputy.clone())
            } else {
                Err(format!("not the deputy reference of process {pid}"))
            }
        }
    };
    let mut welcome = capnp::message::Builder::new_default();
    let deputy = {
        let mut w = welcome.init_root::<ssi_schema::deputy_welcome::Builder<'_>>();
        match granted {
            Ok(deputy) => {
                // The session's output streams: their writes always take every byte.
                let mut streams = w.init_streams(2);
                streams.set(0, 1);
                streams.set(1, 2);
                Some(deputy)
            }
            Err(why) => {
                w.set_refused(&why);
                None
            }
        }
    };
    write_frame(&mut writer, &welcome)?;
    let Some(deputy) = deputy else { return Ok(()) };
    let mut server = DeputyServer { deputy, kept: None };
    loop {
        let msg = match read_frame(&mut reader) {
            Ok(m) => m,
            // The body ended (or its node went down).
            Err(_) => return Ok(()),
        };
        let req = msg.get_root::<ssi_schema::deputy_request::Reader<'_>>()?;
        use ssi_schema::deputy_request::Which;
        let result = match req
            .which()
            .map_err(|_| capnp::Error::failed("unknown request".into()))?
        {
            Which::Call(call) => server.call(read_syscall(call?)?),
            Which::Write(w) => {
                let w = w?;
                server.write(w.get_fd(), w.get_data()?);
                continue;
            }
            Which::Sync(()) => Ok(Reply::Unit),
        };
        let mut out = capnp::message::Builder::new_default();
        write_result(out.init_root(), &result);
        write_frame(&mut writer, &out)?;
    }
}

// ---------------------------------------------------------------------------
// Admin

/// One row of `ssictl nodes`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: NodeId,
    pub address: String,
    pub up: bool,
    pub status: Option<NodeStatus>,
    /// Since the last answer (none for the node itself or one never heard from).
    pub last_seen: Option<Duration>,
}

struct AdminServer {
    core: Arc<NodeCore>,
}

/// Every process of the cluster: each home's table, with CPU and memory from
/// the node where each body runs. Nodes that do not answer are left out.
async fn cluster_processes(core: Arc<NodeCore>) -> Vec<ProcessInfo> {
    let mut procs = core.home_processes();
    let mut stats: std::collections::HashMap<Pid, (u64, u64)> = core
        .body_stats()
        .into_iter()
        .map(|(p, c, m)| (p, (c, m)))
        .collect();
    let peers: Vec<String> = core
        .peers
        .iter()
        .filter(|p| p.up)
        .map(|p| p.address.clone())
        .collect();
    let asks = peers.into_iter().map(|address| async move {
        let ask = async {
            let gateway = connect(&Endpoint::Tcp(address)).await.map_err(failed)?;
            let peer = gateway.peer_request().send().pipeline.get_peer();
            let reply = peer.processes_request().send().promise.await?;
            let r = reply.get()?;
            let procs = r
                .get_processes()?
                .iter()
                .map(read_process)
                .collect::<Result<Vec<_>, _>>()?;
            let bodies: Vec<(Pid, u64, u64)> = r
                .get_bodies()?
                .iter()
                .map(|b| (b.get_pid(), b.get_cpu_ns(), b.get_memory()))
                .collect();
            Ok::<_, capnp::Error>((procs, bodies))
        };
        tokio::time::timeout(DOWN_AFTER, ask)
            .await
            .ok()
            .and_then(|r| r.ok())
    });
    for (p, b) in futures::future::join_all(asks).await.into_iter().flatten() {
        procs.extend(p);
        stats.extend(b.into_iter().map(|(p, c, m)| (p, (c, m))));
    }
    for p in &mut procs {
        if let Some((cpu, mem)) = stats.get(&p.pid) {
            p.cpu_ns = *cpu;
            p.memory = *mem;
        }
    }
    procs.sort_by_key(|p| p.pid);
    procs
}

impl NodeCore {
    /// This node and every peer it knows of, in id order.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut list = vec![NodeInfo {
            id: self.id,
            address: self.address.clone(),
            up: true,
            status: Some(self.status()),
            last_seen: None,
        }];
        list.extend(self.peers.iter().map(|p| NodeInfo {
            id: *p.key(),
            address: p.address.clone(),
            up: p.up,
            status: p.status.clone(),
            last_seen: p.last_seen.map(|t| t.elapsed()),
        }));
        list.sort_by_key(|n| n.id);
        list
    }
}

/// A signal number from the wire: 0 means "only check".
fn signal_arg(n: u8) -> Result<Option<Signal>, capnp::Error> {
    match n {
        0 => Ok(None),
        n => Signal::from_number(n)
            .map(Some)
            .ok_or_else(|| failed(format!("{n} is not a signal number"))),
    }
}

/// Signals a process or process group anywhere: at its home, which may be here.
/// Connects to node `home`, the home of `what` (a process or a group), to
/// forward a request there; errors name what was sought.
async fn home_peer(
    core: &NodeCore,
    home: NodeId,
    what: &str,
) -> Result<(crate::rpc::Connection, peer::Client), capnp::Error> {
    if !core.peer_up(home) {
        return Err(failed(match core.peer_address(home) {
            Some(a) => format!("node {home} ({a}), the home of {what}, is down"),
            None => format!("no {what}: its home, node {home}, is not a member of this cluster"),
        }));
    }
    let address = core.peer_address(home).unwrap_or_default();
    let connection = connect(&Endpoint::Tcp(address)).await.map_err(failed)?;
    let peer = connection.peer_request().send().pipeline.get_peer();
    Ok((connection, peer))
}

async fn cluster_signal(
    core: Arc<NodeCore>,
    target: i32,
    sig: Option<Signal>,
) -> Result<u32, capnp::Error> {
    let home = home_of(target.unsigned_abs());
    if home == core.id {
        return core.signal(target, sig).map_err(failed);
    }
    let what = if target < 0 {
        format!("process group {}", target.unsigned_abs())
    } else {
        format!("process {target}")
    };
    let (_connection, peer) = home_peer(&core, home, &what).await?;
    let mut req = peer.signal_request();
    req.get().set_target(target);
    req.get().set_signal(sig.map(|s| s.number()).unwrap_or(0));
    let reply = req.send().promise.await?;
    Ok(reply.get()?.get_count())
}

impl NodeCore {
    /// Moves a process whose home is this node to node `to` (see
    /// `ProcessTask::migrate`).
    pub async fn migrate(&self, pid: Pid, to: NodeId) -> Result<MigrationReport, capnp::Error> {
        // A node that may lack the module is sent it first, the process going
        // on meanwhile and taking its signals: only the move itself waits on
        // the process's task.
        // (One that cannot be frozen is not: its task says why it stays.)
        let module = self
            .procs
            .get(&pid)
            .filter(|p| p.program.not_freezable.is_none())
            .map(|p| (p.program.hash, p.wasm.clone()));
        if let Some((hash, wasm)) = module
            && self.can_host(to).is_ok()
        {
            transfer::send_module(self, to, &hash, &wasm)
                .await
                .map_err(|e| failed(format!("cannot move process {pid} to node {to}: {e}")))?;
        }
        self.order(pid, "moved", |reply| Order::Migrate { to, reply })
            .await
    }

    /// Checkpoints a process whose home is this node (see
    /// `ProcessTask::checkpoint`).
    pub async fn checkpoint(&self, pid: Pid, stop: bool) -> Result<Checkpoint, capnp::Error> {
        self.order(pid, "was checkpointed", |reply| Order::Checkpoint {
            stop,
            reply,
        })
        .await
    }

    /// Gives a process's task an order and waits for its answer.
    async fn order<T>(
        &self,
        pid: Pid,
        doing: &str,
        order: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Order,
    ) -> Result<T, capnp::Error> {
        let orders = self
            .procs
            .get(&pid)
            .map(|p| p.orders.clone())
            .ok_or_else(|| failed(format!("no process {pid}")))?;
        let (reply, answer) = oneshot::channel();
        orders
            .send(order(reply))
            .map_err(|_| failed(format!("process {pid} is ending")))?;
        answer
            .await
            .map_err(|_| failed(format!("process {pid} ended while it {doing}")))?
            .map_err(failed)
    }
}

fn write_checkpoint_report(
    mut b: ssi_schema::checkpoint_report::Builder<'_>,
    r: &CheckpointReport,
) {
    b.set_pid(r.pid);
    b.set_node(r.node);
    b.set_image_bytes(r.image_bytes);
    b.set_memory_bytes(r.memory_bytes);
    b.set_freeze_micros(r.freeze_micros);
    b.set_total_micros(r.total_micros);
}

pub fn read_checkpoint_report(r: ssi_schema::checkpoint_report::Reader<'_>) -> CheckpointReport {
    CheckpointReport {
        pid: r.get_pid(),
        node: r.get_node(),
        image_bytes: r.get_image_bytes(),
        memory_bytes: r.get_memory_bytes(),
        freeze_micros: r.get_freeze_micros(),
        total_micros: r.get_total_micros(),
    }
}

/// Checkpoints a process of the cluster into `sink`: at its home, which may
/// be this node (then the image is written from here) or another (asked to
/// write it into the same sink).
async fn cluster_checkpoint(
    core: Arc<NodeCore>,
    pid: Pid,
    stop: bool,
    sink: ssi_schema::image_sink::Client,
) -> Result<CheckpointReport, capnp::Error> {
    let home = home_of(pid);
    if home != core.id {
        let (_connection, peer) = home_peer(&core, home, &format!("process {pid}")).await?;
        let mut req = peer.checkpoint_request();
        req.get().set_pid(pid);
        req.get().set_stop(stop);
        req.get().set_sink(sink);
        let reply = req.send().promise.await?;
        return Ok(read_checkpoint_report(reply.get()?.get_report()?));
    }
    let mut checkpoint = core.checkpoint(pid, stop).await?;
    let sent = async {
        let mut size = sink.size_request();
        size.get().set_bytes(checkpoint.image.len() as u64);
        size.send().promise.await?;
        // The sink's `done` answers once the file is whole and in place.
        send_image(&sink, &checkpoint.image).await
    }
    .await;
    checkpoint.delivered(sent.is_ok());
    sent?;
    Ok(checkpoint.report)
}

/// Asks any node to checkpoint a process into `sink` (`ssictl checkpoint`).
pub async fn admin_checkpoint(
    admin: &admin::Client,
    pid: Pid,
    stop: bool,
    sink: ssi_schema::image_sink::Client,
) -> Result<CheckpointReport, capnp::Error> {
    let mut req = admin.checkpoint_request();
    req.get().set_pid(pid);
    req.get().set_stop(stop);
    req.get().set_sink(sink);
    let reply = req.send().promise.await?;
    Ok(read_checkpoint_report(reply.get()?.get_report()?))
}

/// Asks a session's own process for a checkpoint (`ssirun --checkpoint-every`).
pub async fn process_checkpoint(
    process: &process::Client,
    stop: bool,
    sink: ssi_schema::image_sink::Client,
) -> Result<CheckpointReport, capnp::Error> {
    let mut req = process.checkpoint_request();
    req.get().set_stop(stop);
    req.get().set_sink(sink);
    let reply = req.send().promise.await?;
    Ok(read_checkpoint_report(reply.get()?.get_report()?))
}

/// Stages a checkpoint at a node and asks it to restart it (`ssirun
/// --restore`): the new process, and its pid.
pub async fn restore_request(
    gateway: &gateway::Client,
    image: &[u8],
    node: NodeId,
    ttys: Ttys,
    console: console::Client,
) -> Result<(process::Client, Pid), capnp::Error> {
    let staged = gateway.stage_request().send().promise.await?;
    let staged = staged.get()?;
    send_image(&staged.get_sink()?, image).await?;
    let mut req = gateway.restore_request();
    {
        let mut p = req.get();
        p.set_console(console);
        let mut s = p.init_spec();
        s.set_image(staged.get_id());
        s.set_node(node);
        s.set_stdin_tty(ttys.stdin);
        s.set_stdout_tty(ttys.stdout);
        s.set_stderr_tty(ttys.stderr);
    }
    let reply = req.send().promise.await?;
    let reply = reply.get()?;
    Ok((reply.get_process()?, reply.get_pid()))
}

pub(crate) fn write_migration(
    mut b: ssi_schema::migration_report::Builder<'_>,
    r: &MigrationReport,
) {
    b.set_from(r.from);
    b.set_to(r.to);
    b.set_image_bytes(r.image_bytes);
    b.set_memory_bytes(r.memory_bytes);
    b.set_freeze_micros(r.freeze_micros);
    b.set_total_micros(r.total_micros);
}

pub fn read_migration(r: ssi_schema::migration_report::Reader<'_>) -> MigrationReport {
    MigrationReport {
        from: r.get_from(),
        to: r.get_to(),
        image_bytes: r.get_image_bytes(),
        memory_bytes: r.get_memory_bytes(),
        freeze_micros: r.get_freeze_micros(),
        total_micros: r.get_total_micros(),
    }
}

/// Asks any node to move a process (`ssictl migrate`).
pub async fn admin_migrate(
    admin: &admin::Client,
    pid: Pid,
    to: NodeId,
) -> Result<MigrationReport, capnp::Error> {
    let mut req = admin.migrate_request();
    req.get().set_pid(pid);
    req.get().set_node(to);
    let reply = req.send().promise.await?;
    Ok(read_migration(reply.get()?.get_report()?))
}

/// The home's process table, as its deputies see it (`ssi` API).
struct HomeTable {
    core: std::sync::Weak<NodeCore>,
}

impl ssi_deputy::ProcessTable for HomeTable {
    fn identity_of(&self, pid: u32) -> Result<ssi_deputy::Identity, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        if home_of(pid) == core.id {
            return core.identity_of(pid).ok_or(Errno::Srch);
        }
        // Another home: ask it, from this (body or deputy) thread.
        let home = home_of(pid);
        let address = core
            .peer_address(home)
            .filter(|_| core.peer_up(home))
            .ok_or(Errno::Srch)?;
        on_this_thread(async {
            let gateway = connect(&Endpoint::Tcp(address))
                .await
                .map_err(|_| Errno::Io)?;
            let peer = gateway.peer_request().send().pipeline.get_peer();
            let mut req = peer.identity_request();
            req.get().set_pid(pid);
            let reply = req.send().promise.await.map_err(|_| Errno::Srch)?;
            let id = reply
                .get()
                .and_then(|r| r.get_identity())
                .map_err(|_| Errno::Io)?;
            Ok(ssi_deputy::Identity {
                pid: id.get_pid(),
                ppid: id.get_ppid(),
                pgid: id.get_pgid(),
                sid: id.get_sid(),
            })
        })
    }

    fn spawn(&self, child: ssi_deputy::process::Child) -> Result<u32, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        family::spawn_child(core, child)
    }

    fn wait(&self, parent: u32, target: i32, options: u32) -> Result<(u32, u32), Errno> {
        let core = self.core.upgrade().ok_or(Errno::Child)?;
        core.wait_child(parent, target, options)
    }

    fn setpgid(&self, caller: u32, pid: u32, pgid: u32) -> Result<(), Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        core.set_group(caller, pid, pgid)
    }

    fn setsid(&self, caller: u32) -> Result<u32, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        core.new_session(caller)
    }

    fn kill(&self, _from: u32, target: i32, signal: Option<Signal>) -> Result<u32, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        let to_errno = |e: SignalError| match e {
            SignalError::NoProcess(_) | SignalError::NoGroup(_) => Errno::Srch,
            SignalError::BadTarget(_) => Errno::Inval,
        };
        if home_of(target.unsigned_abs()) == core.id {
            return core.signal(target, signal).map_err(to_errno);
        }
        on_this_thread(async {
            cluster_signal(core, target, signal).await.map_err(|e| {
                if e.extra.contains("no process") || e.extra.contains("not a member") {
                    Errno::Srch
                } else {
                    Errno::Io
                }
            })
        })
    }
}

/// Asks another home from the calling thread (a body's or a deputy's, which
/// runs no event loop): a runtime for the one request.
fn on_this_thread<T>(request: impl Future<Output = Result<T, Errno>>) -> Result<T, Errno> {
    let rt = thread_runtime().map_err(|_| Errno::Io)?;
    tokio::task::LocalSet::new().block_on(&rt, request)
}

impl admin::Server for AdminServer {
    fn checkpoint(
        self: CapRc<Self>,
        params: admin::CheckpointParams,
        mut results: admin::CheckpointResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let report = cluster_checkpoint(core, p.get_pid(), p.get_stop(), p.get_sink()?).await?;
            write_checkpoint_report(results.get().init_report(), &report);
            Ok(())
        }
    }

    fn migrate(
        self: CapRc<Self>,
        params: admin::MigrateParams,
        mut results: admin::MigrateResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let (pid, to) = (p.get_pid(), p.get_node());
            let home = home_of(pid);
            let report = if home == core.id {
                core.migrate(pid, to).await?
            } else {
                let (_connection, peer) = home_peer(&core, home, &format!("process {pid}")).await?;
                let mut req = peer.migrate_request();
                req.get().set_pid(pid);
                req.get().set_node(to);
                let reply = req.send().promise.await?;
                read_migration(reply.get()?.get_report()?)
            };
            write_migration(results.get().init_report(), &report);
            Ok(())
        }
    }

    fn kill(
        self: CapRc<Self>,
        params: admin::KillParams,
        mut results: admin::KillResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let sig = signal_arg(p.get_signal())?;
            let n = cluster_signal(core, p.get_target(), sig).await?;
            results.get().set_count(n);
            Ok(())
        }
    }

    fn processes(
        self: CapRc<Self>,
        _: admin::ProcessesParams,
        mut results: admin::ProcessesResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let procs = cluster_processes(core).await;
            let mut list = results.get().init_processes(procs.len() as u32);
            for (i, p) in procs.iter().enumerate() {
                write_process(list.reborrow().get(i as u32), p);
            }
            Ok(())
        }
    }

    fn nodes(
        self: CapRc<Self>,
        _: admin::NodesParams,
        mut results: admin::NodesResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let nodes = self.core.nodes();
        let mut list = results.get().init_nodes(nodes.len() as u32);
        for (i, n) in nodes.iter().enumerate() {
            let mut b = list.reborrow().get(i as u32);
            b.set_id(n.id);
            b.set_address(&n.address);
            b.set_up(n.up);
            if let Some(s) = &n.status {
                write_status(b.reborrow().init_status(), s);
            }
            b.set_last_seen_ms(n.last_seen.map(|d| d.as_millis() as u64).unwrap_or(0));
        }
        ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------
// Client side of the admin interface (for `ssictl`)

/// Reads `Admin.processes` replies.
pub async fn admin_processes(admin: &admin::Client) -> Result<Vec<ProcessInfo>, capnp::Error> {
    let reply = admin.processes_request().send().promise.await?;
    reply
        .get()?
        .get_processes()?
        .iter()
        .map(read_process)
        .collect()
}

/// Reads `Admin.nodes` replies.
pub async fn admin_nodes(admin: &admin::Client) -> Result<Vec<NodeInfo>, capnp::Error> {
    let reply = admin.nodes_request().send().promise.await?;
    reply
        .get()?
        .get_nodes()?
        .iter()
        .map(|n| {
            Ok(NodeInfo {
                id: n.get_id(),
                address: text(n.get_address())?,
                up: n.get_up(),
                status: if n.has_status() {
                    Some(read_status(n.get_status()?)?)
                } else {
                    None
                },
                last_seen: match n.get_last_seen_ms() {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                },
            })
        })
        .collect()
}
