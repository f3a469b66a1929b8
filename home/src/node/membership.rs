//! Membership: heartbeats to every known peer (each carries this node's
//! status and the nodes it knows of, so one seed peer is enough to join), the
//! view of the peers (`NodeCore::seen`), and marking silent peers down after
//! `DOWN_AFTER`, which kills the bodies whose home went with them.
//!
//! Owns the heartbeat thread and the `up`/`last_seen` of each peer.
//! Must not know: processes beyond killing a lost home's bodies.

use super::state::{NodeCore, PeerState};
use crate::events::Event;
use crate::reports::NodeInfo;
use crate::rpc::{Endpoint, connect, thread_runtime};
use crate::status::{NodeStatus, read_status, write_status};
use crate::{NodeId, home_of};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a node sends a heartbeat to each peer.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

/// A peer that has not answered for this long is down.
pub const DOWN_AFTER: Duration = Duration::from_secs(2);

impl NodeCore {
    pub(crate) fn seen(&self, status: NodeStatus) {
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
            // First seen by this node: it joined; seen again: it is back up.
            let joined = entry.last_seen.is_none();
            tracing::info!(node = id, address = %status.address, "peer is up");
            let (kind, what) = if joined {
                ("joined", "joined the cluster")
            } else {
                ("up", "is up")
            };
            self.record(Event::new(
                kind,
                id,
                format!("node {id} ({}) {what}", status.address),
            ));
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
    pub(crate) fn check_peers(&self) {
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
            let lost = self
                .bodies
                .iter()
                .filter(|b| home_of(*b.key()) == id)
                .count();
            self.record(Event::new(
                "down",
                id,
                format!(
                    "node {id} ({address}) stopped answering: down{}",
                    match lost {
                        0 => String::new(),
                        n => format!("; {n} bodies here whose home it was are killed"),
                    }
                ),
            ));
            self.peer_modules.retain(|(node, _), _| *node != id);
            for b in self.bodies.iter() {
                if home_of(*b.key()) == id {
                    b.slot.kill();
                }
            }
        }
    }

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

pub(crate) fn membership(core: Arc<NodeCore>) {
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

pub(crate) async fn heartbeats(core: Arc<NodeCore>, id: NodeId) {
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
