//! Moving a body's image between nodes.
//!
//! The node that will run a body expects it first (`Peer.receive`, or
//! [`NodeCore::expect`] when that node is the home): it hands out a ticket
//! and starts opening the new body's link to its deputy meanwhile. The node
//! that holds the frozen body then streams the image straight to it, on a
//! TCP connection that starts with [`IMAGE_PREAMBLE`](super::stream::IMAGE_PREAMBLE) and the ticket, its
//! pages written from the frozen instance's memory and read into the new
//! instance's memory, with no copy in between. The receiving thread becomes
//! the body's thread; once the body is restored (its checksum checked) the
//! home hears of its arrival, which is a migration's acknowledgement:
//!
//! ```text
//!  home ── receive(body) ──────────────────▶ destination: ticket, Arrival
//!   │   (opens the deputy link)                 ▲
//!   └─ sendTo(address, ticket) ─▶ source ──────┘ "ssi-img1" ticket image…
//!  home ◀── Arrival.wait: control ─────────── destination (restored, runs)
//!  home ── release ─▶ source                  (any failure before: resume)
//! ```

use super::body_control::BodyControlServer;
use super::host::MakeBody;
use super::placement::{Held, Placement, Running, Source};
use super::slot::{BodySlot, FrozenOrder, Verdict};
use super::state::NodeCore;
use super::stream::{Expected, IMAGE_SILENCE, STREAM_BUFFER, Ticket, send_bytes};
use crate::rpc::{ConnectError, Endpoint, NetLink, connect, pooled};
use crate::wire::{ExitReport, failed, read_exit};
use crate::{NodeId, Pid};
use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use ssi_remote::ghost::ImageReader;
use ssi_remote::{Body, DeputyLink, LinkError, LocalLink, NoLink, Program, SharedDeputy};
use ssi_schema::{arrival, body_control, peer};
use std::future::Future;
use std::io::{BufReader, Read};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// What a node says when it lacks a module it is asked to run.
pub(crate) const NO_MODULE: &str = "does not hold module";

/// Where the expected body's deputy link comes from.
pub(crate) enum LinkSource {
    /// Its home is this node.
    Local(SharedDeputy),
    /// Being opened to its home, since the body was expected.
    Remote(std::thread::JoinHandle<Result<NetLink, LinkError>>),
}

impl LinkSource {
    pub(crate) fn open(self) -> Result<Box<dyn DeputyLink>, String> {
        match self {
            LinkSource::Local(deputy) => Ok(Box::new(LocalLink::new(deputy))),
            LinkSource::Remote(connecting) => match connecting.join() {
                Ok(Ok(link)) => Ok(Box::new(link)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the link to the home could not be opened".into()),
            },
        }
    }
}

/// A body that is expected: its slot, when it is restored (and held), and
/// its end.
pub(crate) struct Arrived {
    pub(crate) slot: Arc<BodySlot>,
    pub(crate) started: oneshot::Receiver<Result<(), String>>,
    pub(crate) orders: oneshot::Receiver<flume::Sender<FrozenOrder>>,
    pub(crate) end: oneshot::Receiver<ExitReport>,
}

/// A restored body, held: its slot, its end, and orders for it (it goes on
/// when told to).
pub(crate) type Restored = (
    Arc<BodySlot>,
    LocalBoxFuture<'static, ExitReport>,
    flume::Sender<FrozenOrder>,
);

impl Arrived {
    /// Once the body is restored, and held.
    pub(crate) async fn restored(self) -> Result<Restored, String> {
        let gone = || "the body's thread went away".to_string();
        self.started.await.map_err(|_| gone())??;
        let orders = self.orders.await.map_err(|_| gone())?;
        let end = self.end.map(|r| {
            r.unwrap_or_else(|_| {
                ExitReport::Failed(vec!["the body's thread ended without a report".into()])
            })
        });
        Ok((self.slot, end.boxed_local(), orders))
    }
}

impl NodeCore {
    /// Expects a body: the ticket its image is to come with, and its
    /// arrival. Its thread starts now and sets the body up (an instance of
    /// its module, its deputy link) while the image is on its way.
    pub(crate) fn expect(
        self: &Arc<Self>,
        pid: Pid,
        program: Program,
        link: LinkSource,
    ) -> Result<(Ticket, Arrived), String> {
        let ticket = loop {
            let t: Ticket = rand::random();
            if !self.expected.contains_key(&t) {
                break t;
            }
        };
        let (stream, image) = flume::bounded::<TcpStream>(1);
        self.expected.insert(ticket, Expected { stream });
        let slot = Arc::new(BodySlot::default());
        let (started_tx, started) = oneshot::channel();
        let (orders_tx, orders) = oneshot::channel();
        let (end_tx, end) = oneshot::channel();
        let core = self.clone();
        let thread_slot = slot.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("body-{pid}"))
            .stack_size(ssi_remote::BODY_THREAD_STACK)
            .spawn(move || {
                let hash = program.hash;
                let made = program.clone();
                let make: MakeBody = Box::new(move |runtime| {
                    let mut body = Body::vessel(runtime, &made, Box::new(NoLink))
                        .map_err(|e| e.to_string())?;
                    body.set_link(link.open()?);
                    let stream = image
                        .recv_timeout(IMAGE_SILENCE)
                        .map_err(|_| "the image never came".to_string())?;
                    let _ = stream.set_read_timeout(Some(IMAGE_SILENCE));
                    let reader = BufReader::with_capacity(STREAM_BUFFER, stream);
                    // (From a node of the cluster: with the compiled
                    // rewind copies it sends along.)
                    let reader = ImageReader::new(reader, Some(&hash))
                        .map_err(|e| e.to_string())?
                        .accepting_code();
                    body.fill(reader).map_err(|e| e.to_string())?;
                    Ok(body)
                });
                let report = core.run_body(
                    pid,
                    &program,
                    make,
                    &thread_slot,
                    started_tx,
                    Some(orders_tx),
                );
                let _ = end_tx.send(report);
            });
        if let Err(e) = spawned {
            self.expected.remove(&ticket);
            return Err(format!("cannot start the body's thread: {e}"));
        }
        Ok((
            ticket,
            Arrived {
                slot,
                started,
                orders,
                end,
            },
        ))
    }

    /// Serves a connection that carries an image (its preamble read): it
    /// goes to the thread of the body it is for.
    pub(crate) fn serve_image(&self, mut stream: TcpStream) {
        let mut ticket = Ticket::default();
        if stream.read_exact(&mut ticket).is_err() {
            return;
        }
        match self.expected.remove(&ticket) {
            Some((_, expected)) => {
                let _ = expected.stream.send(stream);
            }
            None => tracing::warn!("an image came with a ticket this node did not give"),
        }
    }
}

/// How long a node may take to answer that it expects a body.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// How long a node sent a module may take to load it (instrument and compile
/// it, which for a large module on a busy node takes many seconds), as long
/// as it is seen up; the body runs on meanwhile.
pub(crate) const LOAD_WITHIN: Duration = Duration::from_secs(600);

/// Node `to` (which must be up): its address, this thread's pooled
/// connection to it, and its `Peer`.
pub(crate) async fn peer_at(
    core: &NodeCore,
    to: NodeId,
) -> Result<(String, std::rc::Rc<crate::rpc::Connection>, peer::Client), String> {
    core.can_host(to)?;
    let address = core.peer_address(to).unwrap_or_default();
    let gateway = pooled(&address)
        .await
        .map_err(|e: ConnectError| format!("node {to}: {e}"))?;
    let peer = gateway.peer_request().send().pipeline.get_peer();
    Ok((address, gateway, peer))
}

/// Makes sure node `to` holds the module `wasm` (of `hash`) compiled: a node
/// not known to hold it is asked, and sent it if it lacks it, with the nodes
/// that may have its compiled code for it to fetch; it loads the module on a
/// thread of its own, while whatever waits for it goes on.
pub(crate) async fn send_module(
    core: &NodeCore,
    to: NodeId,
    hash: &ssi_remote::ModuleHash,
    wasm: &[u8],
    whole: bool,
) -> Result<(), String> {
    if to == core.id {
        return match core.modules.get(hash).map(|p| p.clone()) {
            Some(program) if whole => whole_program(program).await,
            _ => Ok(()),
        };
    }
    if core.peer_holds(to, hash, whole) {
        return Ok(());
    }
    let (_, _gateway, peer) = peer_at(core, to).await?;
    let mut has = peer.has_module_request();
    has.get().set_hash(&hash.0);
    has.get().set_whole(whole);
    // Waiting for a whole module can take as long as compiling it.
    let within = if whole { LOAD_WITHIN } else { ANSWER_WITHIN };
    let present = while_up(core, to, tokio::time::timeout(within, has.send().promise))
        .await?
        .map_err(|_| format!("node {to} did not answer within {within:?}"))?
        .and_then(|r| Ok(r.get()?.get_present()))
        .map_err(|e| format!("node {to}: {}", crate::rpc::remote_message(&e)))?;
    if !present {
        let holders = core.holders(hash);
        let mut load = peer.load_module_request();
        load.get().set_module(wasm);
        load.get().set_whole(whole);
        let mut list = load.get().init_holders(holders.len() as u32);
        for (i, id) in holders.into_iter().enumerate() {
            list.set(i as u32, id);
        }
        while_up(
            core,
            to,
            tokio::time::timeout(LOAD_WITHIN, load.send().promise),
        )
        .await?
        .map_err(|_| format!("node {to} did not load the module within {LOAD_WITHIN:?}"))?
        .map_err(|e| format!("node {to}: {}", crate::rpc::remote_message(&e)))?;
    }
    core.note_holds(to, *hash, whole);
    Ok(())
}

/// Returns once `program`'s whole module is compiled (see `Program`),
/// waited for on a thread of its own.
pub(crate) async fn whole_program(program: Program) -> Result<(), String> {
    if program.is_complete() {
        return Ok(());
    }
    let (done, whole) = oneshot::channel();
    std::thread::Builder::new()
        .name("whole-module".into())
        .spawn(move || {
            let _ = done.send(program.complete().map(|_| ()).map_err(|e| e.to_string()));
        })
        .map_err(|e| format!("cannot wait for the module: {e}"))?;
    whole
        .await
        .map_err(|_| "the module's compilation went away".to_string())?
}

/// `answer`, unless node `id` is marked down first.
pub(crate) async fn while_up<T>(
    core: &NodeCore,
    id: NodeId,
    answer: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    // Woken when a peer is marked down, not polled: a home with many
    // bodies away would otherwise wake for each of them several times a
    // second. (Subscribed before the first look, so no change is missed.)
    let mut downs = core.downs.subscribe();
    let down = async move {
        while core.peer_up(id) {
            if downs.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    futures::pin_mut!(answer, down);
    match futures::future::select(answer, down).await {
        futures::future::Either::Left((answer, _)) => Ok(answer),
        futures::future::Either::Right(_) => Err(format!("node {id} went down")),
    }
}

/// `Arrival`, served to the home by the node that expects a body.
pub(crate) struct ArrivalServer {
    pub(crate) core: Arc<NodeCore>,
    pub(crate) ticket: Ticket,
    pub(crate) arrival: std::cell::RefCell<Option<Arrived>>,
}

impl ArrivalServer {
    pub(crate) fn new(core: Arc<NodeCore>, ticket: Ticket, arrival: Arrived) -> Self {
        ArrivalServer {
            core,
            ticket,
            arrival: std::cell::RefCell::new(Some(arrival)),
        }
    }
}

impl arrival::Server for ArrivalServer {
    fn wait(
        self: capnp::capability::Rc<Self>,
        _: arrival::WaitParams,
        mut results: arrival::WaitResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let arrival = self.arrival.borrow_mut().take();
        async move {
            let arrived = arrival.ok_or_else(|| failed("the arrival was already awaited"))?;
            let (slot, end, orders) = arrived.restored().await.map_err(failed)?;
            let control = BodyControlServer::new(slot, end, Some(orders));
            results.get().set_control(capnp_rpc::new_client(control));
            Ok(())
        }
    }
}

impl Drop for ArrivalServer {
    /// The home went away (or gave up): the ticket is withdrawn, and a body
    /// that came meanwhile is not let go on.
    fn drop(&mut self) {
        self.core.expected.remove(&self.ticket);
        if let Some(arrived) = self.arrival.borrow_mut().take() {
            arrived.slot.kill();
        }
    }
}

/// A body expected somewhere, as its home sees it.
pub(crate) struct Expecting {
    pub(crate) ticket: Ticket,
    /// Where to stream its image.
    pub(crate) address: String,
    /// Once it is restored there: where it runs, and the body held until
    /// it is told to go on.
    pub(crate) arrival: LocalBoxFuture<'static, Result<(Running, Held), String>>,
    /// The connection to that node, which its home may keep for next time.
    pub(crate) connection: Option<std::rc::Rc<crate::rpc::Connection>>,
}

/// Has node `to` expect the body of process `pid` of this home.
pub(crate) async fn expect_at(
    core: &Arc<NodeCore>,
    pid: Pid,
    to: NodeId,
    source: &Source,
    sender_load: Option<f64>,
) -> Result<Expecting, String> {
    if to == core.id {
        core.accepts(pid, sender_load)?;
        let (ticket, arrived) = core.expect(
            pid,
            source.program.clone(),
            LinkSource::Local(source.deputy.clone()),
        )?;
        arrived
            .slot
            .pinned
            .store(core.is_pinned(pid), std::sync::atomic::Ordering::SeqCst);
        // Until it arrives, the ticket stands; a migration given up drops
        // this future, and the ticket with it.
        let withdraw = Withdraw {
            core: core.clone(),
            ticket,
        };
        // Given up (this future dropped) before it is taken, the body is not
        // let go on: no one is left to give it orders.
        let arrival = async move {
            let restored = arrived.restored().await;
            drop(withdraw);
            let (slot, end, orders) = restored?;
            Ok((
                Running {
                    place: Placement::Local(slot),
                    end,
                },
                Held::Local(orders),
            ))
        };
        return Ok(Expecting {
            ticket,
            address: core.address.clone(),
            arrival: arrival.boxed_local(),
            connection: None,
        });
    }
    let (address, gateway, peer) = peer_at(core, to).await?;
    let hash = source.program.hash;
    let secret: [u8; 16] = rand::random();
    if let Some(mut p) = core.procs.get_mut(&pid) {
        p.secret = Some(secret);
    }
    let receive = |with_module: bool| {
        let mut req = peer.receive_request();
        let mut b = req.get().init_body();
        b.set_pid(pid);
        b.set_hash(&hash.0);
        if with_module {
            b.set_module(&source.wasm);
        }
        b.set_home(&core.address);
        b.set_secret(&secret);
        b.set_pinned(core.is_pinned(pid));
        b.set_sender_load(sender_load.unwrap_or(0.0));
        req.send().promise
    };
    // The node holds the module, or is sent it first; one that no longer
    // holds it (restarted since) is sent it with the body.
    send_module(core, to, &hash, &source.wasm, false).await?;
    let ask = |with_module: bool| {
        let sent = receive(with_module);
        async move {
            if with_module {
                let loaded = while_up(core, to, tokio::time::timeout(LOAD_WITHIN, sent)).await?;
                loaded.map_err(|_| {
                    format!("node {to} did not load the module within {LOAD_WITHIN:?}")
                })
            } else {
                tokio::time::timeout(ANSWER_WITHIN, sent)
                    .await
                    .map_err(|_| format!("node {to} did not answer within {ANSWER_WITHIN:?}"))
            }
        }
    };
    let reply = match ask(false).await? {
        Err(e) if crate::rpc::remote_message(&e).contains(NO_MODULE) => ask(true).await?,
        r => r,
    }
    .map_err(|e| format!("node {to}: {}", crate::rpc::remote_message(&e)))?;
    core.note_holds(to, hash, false);
    let reply = reply.get().map_err(|e| e.to_string())?;
    let ticket: Ticket = reply
        .get_ticket()
        .map_err(|e| e.to_string())?
        .try_into()
        .map_err(|_| format!("node {to} gave a ticket of the wrong size"))?;
    let arrival = reply.get_arrival().map_err(|e| e.to_string())?;
    let watch = core.clone();
    let image_address = address.clone();
    let kept = gateway.clone();
    let arrival = async move {
        let control = tokio::time::timeout(IMAGE_SILENCE, arrival.wait_request().send().promise)
            .await
            .map_err(|_| format!("node {to} did not restore the body within {IMAGE_SILENCE:?}"))?
            .and_then(|r| r.get()?.get_control())
            .map_err(|e| format!("node {to}: {}", crate::rpc::remote_message(&e)))?;
        let held = Held::Remote(control.clone());
        Ok((remote_running(watch, to, address, gateway, control), held))
    };
    Ok(Expecting {
        ticket,
        address: image_address,
        arrival: arrival.boxed_local(),
        connection: Some(kept),
    })
}

/// Withdraws a ticket of this node's when dropped.
pub(crate) struct Withdraw {
    pub(crate) core: Arc<NodeCore>,
    pub(crate) ticket: Ticket,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.core.expected.remove(&self.ticket);
    }
}

/// A body running on node `target`, followed through its `control` on
/// `connection` (kept open while it runs): its end, or the node's loss.
pub(crate) fn remote_running(
    core: Arc<NodeCore>,
    target: NodeId,
    address: String,
    connection: std::rc::Rc<crate::rpc::Connection>,
    control: body_control::Client,
) -> Running {
    let waiting = control.clone();
    let end = async move {
        let lost = |why: String| ExitReport::Lost(format!("node {target} ({address}) {why}"));
        let wait = async {
            match waiting.wait_request().send().promise.await {
                Ok(reply) => match reply.get().and_then(|r| read_exit(r.get_exit()?)) {
                    Ok(report) => report,
                    Err(e) => lost(format!("sent a bad report: {e}")),
                },
                Err(e) if crate::connection_closed(&e) => {
                    lost("went down (its connection closed)".into())
                }
                Err(e) => lost(format!("went down: {}", e.extra)),
            }
        };
        let report = while_up(&core, target, wait).await.unwrap_or_else(|_| {
            tracing::warn!(
                node = target,
                "a body's node stopped answering: its process is lost"
            );
            lost("stopped answering".into())
        });
        drop(connection);
        report
    };
    Running {
        place: Placement::Remote {
            node: target,
            control,
        },
        end: end.boxed_local(),
    }
}

/// Restarts an image held whole (a checkpoint) on node `to`: expected
/// there, then streamed from this node.
pub(crate) async fn restore_at(
    core: &Arc<NodeCore>,
    pid: Pid,
    to: NodeId,
    source: &Source,
    image: Vec<u8>,
) -> Result<Running, String> {
    // The node there accepts compiled code on an image connection: a file
    // may not bring any.
    if ssi_remote::ghost::carries_code(&image) {
        return Err(
            "the image carries compiled code, which only a move between nodes may: \
                    it is no checkpoint"
                .into(),
        );
    }
    let expecting = expect_at(core, pid, to, source, None).await?;
    let (done, sent) = oneshot::channel();
    let (address, ticket) = (expecting.address.clone(), expecting.ticket);
    std::thread::Builder::new()
        .name(format!("image-{pid}"))
        .spawn(move || {
            let _ = done.send(send_bytes(&image, &address, &ticket));
        })
        .map_err(|e| format!("cannot start sending the image: {e}"))?;
    sent.await
        .map_err(|_| "the image's sender went away".to_string())??;
    let (running, held) = expecting.arrival.await?;
    held.decide(Verdict::Resume);
    Ok(running)
}

/// Signals a process or process group anywhere: at its home, which may be here.
/// Connects to node `home`, the home of `what` (a process or a group), to
/// forward a request there; errors name what was sought.
pub(crate) async fn home_peer(
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
