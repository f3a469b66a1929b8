//! The cluster's event stream as nodes serve it: a node pushes its own events
//! to whoever follows them (`Peer.events`), and the node an administrator
//! asks gathers every node's into one stream (`Admin.events`): the latest of
//! each, in time order, then every new one as it happens, following a node
//! that comes up later too. Pushes, not polls: the follower hands over an
//! `EventSink`, and a push that fails ends the following.
//!
//! Owns the following tasks. Must not know: what the events mean.

use super::membership::DOWN_AFTER;
use super::state::NodeCore;
use crate::NodeId;
use crate::events::{Event, read_event, write_events};
use crate::rpc::{Connection, Endpoint, connect};
use capnp::capability::Rc as CapRc;
use futures::StreamExt;
use futures::channel::mpsc;
use ssi_schema::event_sink;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// A follower that hears nothing for this long is pushed an empty batch, to
/// learn whether it is still there.
const KEEPALIVE: Duration = Duration::from_secs(3);

/// At most this many events go in one push.
const BATCH: usize = 512;

/// Pushes a batch of events into a sink.
async fn push(sink: &event_sink::Client, events: &[Event]) -> Result<(), capnp::Error> {
    let mut req = sink.push_request();
    write_events(req.get().init_events(events.len() as u32), events);
    req.send().promise.await?;
    Ok(())
}

/// Pushes events in batches of at most [`BATCH`].
async fn push_all(sink: &event_sink::Client, events: &[Event]) -> Result<(), capnp::Error> {
    for chunk in events.chunks(BATCH) {
        push(sink, chunk).await?;
    }
    Ok(())
}

/// The next events a follower is told: one that came, and those right
/// behind it; `None` once the log is gone. A follower too slow to keep
/// up is told how many it missed.
async fn next_batch(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    node: NodeId,
) -> Option<Vec<Event>> {
    let lagged = |n: u64| {
        Event::new(
            "lagged",
            node,
            format!(
                "{n} events of node {node} were missed: they came faster than they could be told"
            ),
        )
    };
    let mut batch = match rx.recv().await {
        Ok(e) => vec![e],
        Err(RecvError::Lagged(n)) => vec![lagged(n)],
        Err(RecvError::Closed) => return None,
    };
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => batch.push(lagged(n)),
            Err(_) => break,
        }
    }
    Some(batch)
}

impl NodeCore {
    /// `Peer.events`: pushes this node's latest `backlog` events (without
    /// what it saw of other nodes) and, with `follow`, every later one from
    /// a task of its own until a push fails.
    pub(crate) async fn push_own_events(
        self: Arc<Self>,
        sink: event_sink::Client,
        backlog: u32,
        follow: bool,
    ) -> Result<(), capnp::Error> {
        let (latest, mut rx) = self.events.latest(backlog as usize);
        let own: Vec<Event> = latest.into_iter().filter(|e| !e.observed()).collect();
        push_all(&sink, &own).await?;
        if follow {
            let node = self.id;
            tokio::task::spawn_local(async move {
                loop {
                    let next = tokio::time::timeout(KEEPALIVE, next_batch(&mut rx, node)).await;
                    let batch = match next {
                        Ok(Some(batch)) => batch.into_iter().filter(|e| !e.observed()).collect(),
                        Ok(None) => return,
                        Err(_) => Vec::new(),
                    };
                    if push(&sink, &batch).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    /// `Admin.events`: every node's latest `backlog` events (this node's
    /// with what it saw of the others), the last `backlog` of them in time
    /// order; with `follow`, every later one of every node, until a push
    /// to `sink` fails.
    pub(crate) async fn push_cluster_events(
        self: Arc<Self>,
        sink: event_sink::Client,
        backlog: u32,
        follow: bool,
    ) -> Result<(), capnp::Error> {
        let (latest, mut rx) = self.events.latest(backlog as usize);
        let (tx, mut gathered) = mpsc::unbounded::<Vec<Event>>();
        let forward: event_sink::Client = capnp_rpc::new_client(Forward { tx });
        let peers: Vec<(NodeId, String)> = self
            .peers
            .iter()
            .filter(|p| p.up)
            .map(|p| (*p.key(), p.address.clone()))
            .collect();
        let asks = peers.into_iter().map(|(id, address)| {
            let forward = forward.clone();
            async move {
                follow_peer(address, forward, backlog, follow)
                    .await
                    .map(|c| (id, c))
            }
        });
        let mut followed: HashMap<NodeId, Connection> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        // Every answered peer's backlog has been pushed to `forward` by now.
        let mut all = latest;
        while let Ok(batch) = gathered.try_recv() {
            all.extend(batch);
        }
        all.sort_by_key(|e| (e.time_ms, e.recorder, e.seq));
        let skip = all.len().saturating_sub(backlog as usize);
        push_all(&sink, &all[skip..]).await?;
        if !follow {
            return Ok(());
        }
        let core = self.clone();
        tokio::task::spawn_local(async move {
            loop {
                let batch = tokio::select! {
                    mine = next_batch(&mut rx, core.id) => match mine {
                        Some(batch) => batch,
                        None => return,
                    },
                    theirs = gathered.next() => match theirs {
                        Some(batch) => batch,
                        None => return,
                    },
                    _ = tokio::time::sleep(KEEPALIVE) => Vec::new(),
                };
                // A node that came up (again) is followed from now on; one
                // followed that went down is let go.
                followed.retain(|id, c| core.peer_up(*id) && !c.is_closed());
                for e in &batch {
                    if matches!(e.kind.as_str(), "up" | "joined")
                        && e.node != core.id
                        && !followed.contains_key(&e.node)
                        && let Some(address) = core.peer_address(e.node)
                        && let Some(c) = follow_peer(address, forward.clone(), 0, true).await
                    {
                        followed.insert(e.node, c);
                    }
                }
                if push(&sink, &batch).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

/// Asks a peer to push its events into `forward`; with `follow`, the
/// connection it pushes on is kept (its following ends when it is dropped).
async fn follow_peer(
    address: String,
    forward: event_sink::Client,
    backlog: u32,
    follow: bool,
) -> Option<Connection> {
    let ask = async {
        let connection = connect(&Endpoint::Tcp(address)).await.ok()?;
        let peer = connection.peer_request().send().pipeline.get_peer();
        let mut req = peer.events_request();
        req.get().set_sink(forward);
        req.get().set_backlog(backlog);
        req.get().set_follow(follow);
        req.send().promise.await.ok()?;
        Some(connection)
    };
    tokio::time::timeout(DOWN_AFTER, ask).await.ok().flatten()
}

/// An `EventSink` that hands what it is pushed to a channel.
pub(crate) struct Forward {
    pub(crate) tx: mpsc::UnboundedSender<Vec<Event>>,
}

impl event_sink::Server for Forward {
    fn push(
        self: CapRc<Self>,
        params: event_sink::PushParams,
        _: event_sink::PushResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let events = params
                .get()?
                .get_events()?
                .iter()
                .map(read_event)
                .collect::<Result<Vec<_>, _>>()?;
            if !events.is_empty() {
                self.tx
                    .unbounded_send(events)
                    .map_err(|_| capnp::Error::disconnected("no one follows".into()))?;
            }
            Ok(())
        })();
        std::future::ready(r)
    }
}

/// Asks any node for the cluster's events (`ssictl events`, `ssictl top`):
/// answers once the latest `backlog` are in the receiver, and with `follow`
/// every later batch comes after them, for as long as the receiver and the
/// connection are kept.
pub async fn admin_events(
    admin: &ssi_schema::admin::Client,
    backlog: u32,
    follow: bool,
) -> Result<mpsc::UnboundedReceiver<Vec<Event>>, capnp::Error> {
    let (tx, rx) = mpsc::unbounded();
    let mut req = admin.events_request();
    req.get().set_sink(capnp_rpc::new_client(Forward { tx }));
    req.get().set_backlog(backlog);
    req.get().set_follow(follow);
    req.send().promise.await?;
    Ok(rx)
}
