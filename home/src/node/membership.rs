//! Membership, by gossip: every `HEARTBEAT_EVERY` a node exchanges
//! heartbeats with at most `FANOUT` peers (all of them in a cluster that
//! small, else the next ones of a shuffled round), whatever the cluster's
//! size. A heartbeat carries the node's status, the nodes it knows of (so one
//! seed peer is enough to join), and the `WINDOW` freshest statuses it holds
//! of others with their age, so that every node learns of every other's
//! load through a few (MOSIX's load vector). The view of the peers
//! (`NodeCore::seen`) keeps the freshest word of each; a peer with no word
//! for `down_after` is marked down, which kills the bodies whose home went
//! with it.
//!
//! Owns the heartbeat thread and the `up`/`last_seen` of each peer.
//! Must not know: processes beyond killing a lost home's bodies.

use super::state::{NodeCore, PeerState};
use crate::events::Event;
use crate::reports::NodeInfo;
use crate::rpc::{Connection, Endpoint, connect, thread_runtime};
use crate::status::{NodeStatus, read_status, write_status};
use crate::{NodeId, home_of};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often a node sends a heartbeat to each peer.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

/// A peer that has not answered for this long is down (in a cluster of
/// at most `FANOUT + 1` nodes; see `NodeCore::down_after`).
pub const DOWN_AFTER: Duration = Duration::from_secs(2);

/// Peers a node exchanges heartbeats with each round, at most.
pub const FANOUT: usize = 4;

/// Statuses of other nodes a heartbeat carries, at most (the freshest).
pub const WINDOW: usize = 8;

impl NodeCore {
    /// How long a peer may go unheard before it is down: `DOWN_AFTER`, and
    /// the rounds it takes to come back to a peer when there are more than
    /// `FANOUT` of them.
    pub(crate) fn down_after(&self) -> Duration {
        let rounds = self.peers.len().div_ceil(FANOUT).max(1) as u32;
        DOWN_AFTER + HEARTBEAT_EVERY * (rounds - 1)
    }

    /// The freshest statuses this node holds of its peers that are up,
    /// with their age in ms, for its heartbeats.
    pub(crate) fn rumors(&self) -> Vec<(NodeStatus, u32)> {
        let mut fresh: Vec<(NodeStatus, u32)> = self
            .peers
            .iter()
            .filter(|p| p.up)
            .filter_map(|p| {
                let age = p.last_seen?.elapsed().as_millis().min(u32::MAX as u128) as u32;
                let mut s = p.status.clone()?;
                s.rumors.clear();
                s.known.clear();
                Some((s, age))
            })
            .collect();
        fresh.sort_by_key(|(_, age)| *age);
        fresh.truncate(WINDOW);
        fresh
    }

    /// A heartbeat's status: what the peer says of itself, heard now, and
    /// the rumors it passes on, each heard as long ago as it says.
    pub(crate) fn seen(&self, mut status: NodeStatus) {
        let rumors = std::mem::take(&mut status.rumors);
        self.heard(status, Duration::ZERO, true);
        for (s, age_ms) in rumors {
            self.heard(s, Duration::from_millis(u64::from(age_ms)), false);
        }
    }

    /// Word of a node, `age` old; `direct` from the node itself.
    fn heard(&self, status: NodeStatus, age: Duration, direct: bool) {
        let id = status.id;
        if id == self.id || id == 0 {
            return;
        }
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        // Taken before any entry is held: it reads every shard of the map,
        // and a second read of a shard this thread holds waits behind a
        // writer waiting for it (a deadlock).
        let down_after = self.down_after();
        if let Some(p) = self.peers.get(&id) {
            // Older than what this node has, or too old to say it is up.
            if p.last_seen.is_some_and(|t| t >= at) || age >= down_after {
                return;
            }
            // A rumor does not bring back a node marked down since: only
            // the node itself, or word from after it was marked down.
            if !direct && !p.up && p.down_at.is_some_and(|d| at <= d) {
                return;
            }
        }
        let mut entry = self.peers.entry(id).or_insert_with(|| PeerState {
            address: status.address.clone(),
            up: false,
            last_seen: None,
            status: None,
            down_at: None,
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
        entry.last_seen = Some(at);
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
                        down_at: None,
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
        let down_after = self.down_after();
        for mut p in self.peers.iter_mut() {
            let silent = p.last_seen.is_none_or(|t| t.elapsed() > down_after);
            if p.up && silent {
                p.up = false;
                p.down_at = Some(Instant::now());
                gone.push((*p.key(), p.address.clone()));
            }
        }
        if !gone.is_empty() {
            self.downs.send_modify(|n| *n += 1);
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
        // Silent peers are looked for more often than heartbeats go.
        let c = core.clone();
        tokio::task::spawn_local(async move {
            loop {
                c.check_peers();
                tokio::time::sleep(HEARTBEAT_EVERY / 4).await;
            }
        });
        let links: Links = Rc::new(RefCell::new(HashMap::new()));
        let mut round = Round::default();
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let known: Vec<NodeId> = core.peers.iter().map(|p| *p.key()).collect();
            for id in round.next(&known, rand::random()) {
                if links.borrow().get(&id).is_some_and(|l| l.busy) {
                    continue;
                }
                tokio::task::spawn_local(heartbeat(core.clone(), id, links.clone()));
            }
            // Connections to peers not talked to for a while are closed.
            links
                .borrow_mut()
                .retain(|_, l| l.busy || l.used.elapsed() < 10 * HEARTBEAT_EVERY);
        }
    });
}

/// The open connection to each peer talked to lately.
type Links = Rc<RefCell<HashMap<NodeId, Link>>>;

struct Link {
    connection: Option<Rc<Connection>>,
    used: Instant,
    /// A heartbeat to it is under way (a slow peer is not asked twice).
    busy: bool,
}

/// Which peers each round talks to: all of them when there are at most
/// `FANOUT`, else the next `FANOUT` of a shuffled order, so that every peer
/// is talked to once every `ceil(peers / FANOUT)` rounds.
#[derive(Default)]
struct Round {
    order: Vec<NodeId>,
    next: usize,
}

impl Round {
    fn next(&mut self, known: &[NodeId], seed: u64) -> Vec<NodeId> {
        if known.len() <= FANOUT {
            return known.to_vec();
        }
        // A new member, or one gone: a new order.
        let mut sorted = known.to_vec();
        sorted.sort_unstable();
        let mut current = self.order.clone();
        current.sort_unstable();
        if current != sorted {
            self.order = shuffled(sorted, seed);
            self.next = 0;
        }
        let mut out = Vec::with_capacity(FANOUT);
        for _ in 0..FANOUT {
            if self.next == self.order.len() {
                self.order = shuffled(std::mem::take(&mut self.order), seed);
                self.next = 0;
            }
            out.push(self.order[self.next]);
            self.next += 1;
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `ids` in an order the seed picks (Fisher–Yates over a splitmix sequence).
fn shuffled(mut ids: Vec<NodeId>, mut seed: u64) -> Vec<NodeId> {
    for i in (1..ids.len()).rev() {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ids.swap(i, (z % (i as u64 + 1)) as usize);
    }
    ids
}

/// One heartbeat exchange with peer `id`, on the connection kept to it.
async fn heartbeat(core: Arc<NodeCore>, id: NodeId, links: Links) {
    let open = {
        let mut l = links.borrow_mut();
        let link = l.entry(id).or_insert(Link {
            connection: None,
            used: Instant::now(),
            busy: false,
        });
        link.busy = true;
        link.used = Instant::now();
        link.connection.clone().filter(|c| !c.is_closed())
    };
    let exchange = async {
        let connection = match open {
            Some(c) => c,
            None => {
                let address = core.peer_address(id)?;
                Rc::new(connect(&Endpoint::Tcp(address)).await.ok()?)
            }
        };
        let peer = connection.peer_request().send().pipeline.get_peer();
        let mut req = peer.heartbeat_request();
        write_status(req.get().init_status(), &core.status());
        core.heartbeats_sent.fetch_add(1, Ordering::Relaxed);
        let reply = tokio::time::timeout(DOWN_AFTER / 2, req.send().promise)
            .await
            .ok()?
            .ok()?;
        let status = reply
            .get()
            .and_then(|r| r.get_status())
            .and_then(read_status)
            .ok()?;
        (status.id == id).then(|| core.seen(status))?;
        Some(connection)
    };
    let kept = exchange.await;
    if let Some(link) = links.borrow_mut().get_mut(&id) {
        link.busy = false;
        // A failed exchange drops the connection: the next one opens anew.
        link.connection = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_cluster_talks_to_everyone_every_round() {
        let mut r = Round::default();
        let known = [2, 3, 4, 5];
        for seed in 0..5 {
            assert_eq!(r.next(&known, seed), known);
        }
    }

    #[test]
    fn a_large_cluster_talks_to_fanout_peers_a_round_and_to_each_once_a_cycle() {
        let mut r = Round::default();
        let known: Vec<NodeId> = (2..=1001).collect();
        let rounds = known.len().div_ceil(FANOUT);
        let mut times = HashMap::new();
        for _ in 0..rounds {
            let targets = r.next(&known, 7);
            assert_eq!(targets.len(), FANOUT);
            for t in targets {
                *times.entry(t).or_insert(0) += 1;
            }
        }
        assert_eq!(times.len(), known.len(), "every peer once a cycle");
        assert!(times.values().all(|n| *n == 1));
        // A member joins: still FANOUT a round.
        let mut more = known.clone();
        more.push(1002);
        assert_eq!(r.next(&more, 8).len(), FANOUT);
    }
}
