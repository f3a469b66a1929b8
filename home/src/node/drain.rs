//! Draining a node, as an administrator takes it out of service: every body
//! it hosts that can be frozen moves to the node the balancer's placement
//! picks among the others (a pinned one too: the administrator asked), and
//! while it is drained it takes no body a move brings, its own new processes
//! start elsewhere, and its heartbeats tell the other nodes to keep away.
//! Undraining takes work again. Also `ssictl drain`'s client call.
//!
//! Owns the node's `draining` flag. Must not know: how a move is made.

use super::state::NodeCore;
use crate::events::{Event, MoveCause};
use crate::rpc::{Endpoint, connect};
use crate::wire::{set_texts, texts};
use crate::{NodeId, Pid, policy};
use ssi_schema::admin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What a drain did: how many bodies moved off, and why each other stayed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrainOutcome {
    pub moved: u32,
    pub stayed: Vec<String>,
}

impl DrainOutcome {
    pub(crate) fn write(&self, mut b: ssi_schema::peer::drain_results::Builder<'_>) {
        b.set_moved(self.moved);
        set_texts(b.init_stayed(self.stayed.len() as u32), &self.stayed);
    }
}

impl NodeCore {
    /// Whether the node is drained.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Drains this node (moves its bodies off) or undrains it.
    pub(crate) async fn drain(self: &Arc<Self>, on: bool) -> DrainOutcome {
        let was = self.draining.swap(on, Ordering::SeqCst);
        if !on {
            if was {
                self.record(Event::new(
                    "undrained",
                    self.id,
                    format!("node {} is undrained: it takes work again", self.id),
                ));
            }
            return DrainOutcome::default();
        }
        if !was {
            self.record(Event::new(
                "drained",
                self.id,
                format!(
                    "node {} is drained: its bodies move off and new work goes elsewhere",
                    self.id
                ),
            ));
        }
        let bodies: Vec<(Pid, Option<String>, u64)> = self
            .bodies
            .iter()
            .map(|b| {
                let not_freezable = b
                    .slot
                    .not_freezable
                    .lock()
                    .map(|n| n.clone())
                    .unwrap_or_else(|_| Some("its body's state is unknown".into()));
                (*b.key(), not_freezable, b.memory.load(Ordering::Relaxed))
            })
            .collect();
        let mut picture = self.load_picture();
        let why = format!("node {} is drained", self.id);
        let mut outcome = DrainOutcome::default();
        self.drain_moving.store(true, Ordering::SeqCst);
        // (Lowered however the drain ends, its future dropped included.)
        let _moving = scopeguard::guard((), |()| self.drain_moving.store(false, Ordering::SeqCst));
        for (pid, not_freezable, memory) in bodies {
            if let Some(reason) = not_freezable {
                outcome.stayed.push(format!("process {pid}: {reason}"));
                continue;
            }
            let to = policy::place(self.id, &picture, memory, &self.policy, rand::random());
            if to == self.id {
                outcome
                    .stayed
                    .push(format!("process {pid}: no other node is up to take it"));
                continue;
            }
            match self
                .migrate_anywhere(pid, to, None, MoveCause::Drain, &why, None)
                .await
            {
                Ok(_) => {
                    outcome.moved += 1;
                    if let Some(n) = picture.iter_mut().find(|n| n.id == to) {
                        n.demand += 1.0;
                        n.free_memory = n.free_memory.saturating_sub(memory);
                    }
                }
                // It ended meanwhile: nothing stays.
                Err(_) if !self.bodies.contains_key(&pid) => {}
                Err(e) => outcome
                    .stayed
                    .push(format!("process {pid}: {}", crate::rpc::remote_message(&e))),
            }
        }
        outcome
    }

    /// Drains or undrains node `node`, which may be this one.
    pub(crate) async fn drain_anywhere(
        self: &Arc<Self>,
        node: NodeId,
        on: bool,
    ) -> Result<DrainOutcome, capnp::Error> {
        if node == self.id {
            return Ok(self.drain(on).await);
        }
        self.can_host(node).map_err(crate::wire::failed)?;
        let address = self.peer_address(node).unwrap_or_default();
        let connection = connect(&Endpoint::Tcp(address))
            .await
            .map_err(crate::wire::failed)?;
        let peer = connection.peer_request().send().pipeline.get_peer();
        let mut req = peer.drain_request();
        req.get().set_draining(on);
        let reply = req.send().promise.await?;
        let r = reply.get()?;
        Ok(DrainOutcome {
            moved: r.get_moved(),
            stayed: texts(r.get_stayed()?)?,
        })
    }
}

/// Asks any node to drain or undrain node `node` (`ssictl drain`, `ssictl undrain`).
pub async fn admin_drain(
    admin: &admin::Client,
    node: NodeId,
    on: bool,
) -> Result<DrainOutcome, capnp::Error> {
    let mut req = admin.drain_request();
    req.get().set_node(node);
    req.get().set_draining(on);
    let reply = req.send().promise.await?;
    let r = reply.get()?;
    Ok(DrainOutcome {
        moved: r.get_moved(),
        stayed: texts(r.get_stayed()?)?,
    })
}
