//! The load balancer's mechanism (its policy is `crate::policy`). Every
//! `BALANCE_EVERY` a thread of its own measures the CPU each body hosted
//! here used since the last round, which makes the node's own load (its
//! `demand`, sent in its heartbeats); with balancing on, it runs the policy
//! on what the node knows — itself, and the statuses its peers' heartbeats
//! brought, with their age — and carries out the moves it decides through
//! each body's home, which runs the migration protocol as for `ssictl
//! migrate`. New processes are placed by the same picture (`NodeCore::place`).
//!
//! Owns: the balancer's thread, the per-body CPU samples, the count of moves
//! under way out of this node. Must not know: how a move is made.

use super::membership::HEARTBEAT_EVERY;
use super::state::{NodeCore, Sent};
use crate::events::MoveCause;
use crate::policy::{self, BodyLoad, NodeLoad, Picture};
use crate::rpc::thread_runtime;
use crate::status::machine;
use crate::{NodeId, Pid, home_of};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the balancer measures and decides.
pub const BALANCE_EVERY: Duration = Duration::from_millis(250);

/// How long a move taken counts here before its body is measured: one
/// that has not come by then did not happen.
const TAKEN_FOR: Duration = Duration::from_secs(5);

/// How long an imbalance must last before the balancer acts on it: a peer's
/// word can be a heartbeat old, and a body another node just sent there may
/// not be in it yet; an imbalance seen only in such a word is gone by then.
const PERSIST: Duration = Duration::from_millis(750);

/// A body that used at least this share of a core over the last round ran:
/// it counts as one runnable body. On a machine that several nodes share
/// (or that runs other work) the CPU a body gets says little of what it
/// wants; that it got some says it was not waiting (MOSIX counts the run
/// queue the same way).
const RAN: f64 = 0.05;

/// A body's demand on the CPU, in cores, from the share of a core it used.
fn runnable(used: f64) -> f64 {
    if used >= RAN {
        1.0
    } else {
        (used / RAN).clamp(0.0, 1.0)
    }
}

/// The CPUs `bodies` would use: `+0.0` for none (a float sum of nothing is
/// `-0.0`, which `ssictl nodes` printed as a load of `-0.00`).
fn demand_of(bodies: &[BodyLoad]) -> f64 {
    bodies.iter().fold(0.0, |d, b| d + b.cpu_now)
}

impl NodeCore {
    /// The bodies hosted here as the policy sees them, their CPU use now
    /// measured against the previous sample (`last`, kept by the caller).
    fn sample(&self, last: &mut HashMap<Pid, (u64, u64, Instant)>) -> Vec<BodyLoad> {
        let now = Instant::now();
        let mut seen = HashMap::new();
        let bodies = self
            .bodies
            .iter()
            .map(|b| {
                let pid = *b.key();
                let cpu_ns = b.cpu.read_ns();
                let calls = b.calls.load(Ordering::Relaxed);
                // A body not measured yet (it has just started or arrived)
                // is taken to run: it is about to.
                let (cpu_now, calls_per_s) = match last.get(&pid) {
                    Some((cpu_before, calls_before, at)) if now > *at => {
                        let span = now.duration_since(*at);
                        (
                            cpu_ns.saturating_sub(*cpu_before) as f64 / span.as_nanos() as f64,
                            calls.saturating_sub(*calls_before) as f64 / span.as_secs_f64(),
                        )
                    }
                    _ => (1.0, 0.0),
                };
                seen.insert(pid, (cpu_ns, calls, now));
                let not_freezable = b
                    .slot
                    .not_freezable
                    .lock()
                    .map(|n| n.is_some())
                    .unwrap_or(true);
                // One that waits for its code (the rewind copies of its
                // stack, compiling here) stays: moved, it would wait for
                // another node to compile them again.
                let waiting = b.slot.waits_for_code();
                BodyLoad {
                    pid,
                    cpu_now: runnable(cpu_now),
                    cpu_ms: cpu_ns / 1_000_000,
                    memory: b.memory.load(Ordering::Relaxed),
                    since_move_ms: b.since.elapsed().as_millis() as u64,
                    calls_per_s,
                    home: home_of(pid),
                    movable: !not_freezable && !waiting,
                    pinned: b.slot.pinned.load(Ordering::Relaxed),
                }
            })
            .collect();
        *last = seen;
        bodies
    }

    /// What this node knows of the cluster's load: itself, and every peer
    /// that has said how loaded it is (a peer that is down, or does not
    /// balance, takes no work).
    pub(crate) fn load_picture(&self) -> Vec<NodeLoad> {
        let (_, _, _, mem_available) = machine();
        let sent = {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            sent.retain(|s| {
                s.done
                    .is_none_or(|done| done.elapsed() < 2 * (HEARTBEAT_EVERY + BALANCE_EVERY))
            });
            sent.clone()
        };
        let mut nodes = vec![NodeLoad {
            id: self.id,
            capacity: self.capacity,
            demand: *self.demand.lock().unwrap_or_else(|p| p.into_inner()),
            free_memory: mem_available,
            age_ms: 0,
            closed: self.is_draining(),
        }];
        nodes.extend(self.peers.iter().filter_map(|p| {
            let s = p.status.as_ref()?;
            // Bodies sent there that its last word may not count yet (a
            // body counts there from its first measure, a round after it
            // arrives).
            let arriving = sent
                .iter()
                .filter(|s| {
                    s.to == *p.key()
                        && s.done.is_none_or(|done| {
                            p.last_seen
                                .is_none_or(|seen| seen < done + 2 * BALANCE_EVERY)
                        })
                })
                .count() as f64;
            Some(NodeLoad {
                id: *p.key(),
                capacity: if s.capacity > 0.0 {
                    s.capacity
                } else {
                    f64::from(s.cores)
                },
                demand: s.demand + arriving,
                free_memory: s.mem_available,
                age_ms: p
                    .last_seen
                    .map(|t| t.elapsed().as_millis() as u64)
                    .unwrap_or(u64::MAX),
                closed: !p.up || !s.balancing || s.draining,
            })
        }));
        nodes
    }

    /// Whether this node takes a body a move brings: not while it is
    /// drained; a balancer's, with balancing on, not if it would be more
    /// loaded than the sender (`sender_load`; `None` for an administrator's
    /// move).
    pub(crate) fn accepts(&self, pid: Pid, sender_load: Option<f64>) -> Result<(), String> {
        if self.is_draining() {
            return Err(format!(
                "node {} is drained (`ssictl undrain {}` lets it take work again)",
                self.id, self.id
            ));
        }
        let Some(sender_load) = sender_load else {
            return Ok(());
        };
        let mut me = self.load_picture().swap_remove(0);
        me.closed = !self.balance;
        // Bodies other balancers sent that were not measured here yet are
        // not in it: several nodes that chose this one at once must not
        // swamp it.
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        me.demand += taken.len() as f64;
        policy::accept(&me, 0, sender_load)?;
        taken.push((pid, Instant::now()));
        Ok(())
    }

    /// Where a new process starts when its launcher does not say: by the
    /// balancer's picture, or here with balancing off (unless drained).
    pub(crate) fn place(&self) -> NodeId {
        if !self.balance && !self.is_draining() {
            return self.id;
        }
        policy::place(
            self.id,
            &self.load_picture(),
            0,
            &self.policy,
            rand::random(),
        )
    }
}

/// The balancer's thread: measure, decide, move; for ever.
pub(crate) fn balancer(core: Arc<NodeCore>) {
    let Ok(rt) = thread_runtime() else { return };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut last = HashMap::new();
        let moving = Rc::new(Cell::new(0usize));
        let mut wanted_since: Option<Instant> = None;
        loop {
            tokio::time::sleep(BALANCE_EVERY).await;
            let bodies = core.sample(&mut last);
            // A body taken is in the demand once it has been measured (at
            // first as runnable); one that never came is let go after a while.
            core.taken
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|(pid, at)| {
                    !bodies.iter().any(|b| b.pid == *pid) && at.elapsed() < TAKEN_FOR
                });
            // A process still loading its module to run here is about to:
            // a node whose processes all load must not look idle.
            let loading = core
                .loading
                .iter()
                .filter(|l| l.info.node == core.id)
                .count() as f64;
            let demand = demand_of(&bodies) + loading;
            *core.demand.lock().unwrap_or_else(|p| p.into_inner()) = demand;
            if !core.balance || core.drain_moving.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let nodes = core.load_picture();
            // A body with a move under way is not a candidate again.
            let moving_pids: Vec<Pid> = core
                .sent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|s| s.done.is_none())
                .map(|s| s.pid)
                .collect();
            let candidates: Vec<BodyLoad> = bodies
                .into_iter()
                .filter(|b| !moving_pids.contains(&b.pid))
                .collect();
            // Bodies on their way out count no more here.
            let mut nodes = nodes;
            if let Some(me) = nodes.iter_mut().find(|n| n.id == core.id) {
                me.demand = demand_of(&candidates) + loading;
            }
            let picture = Picture {
                me: core.id,
                nodes: &nodes,
                bodies: &candidates,
                moving_out: moving.get(),
            };
            let moves = policy::decide(&picture, &core.policy, rand::random());
            if moves.is_empty() {
                wanted_since = None;
                continue;
            }
            match wanted_since {
                None => {
                    wanted_since = Some(Instant::now());
                    continue;
                }
                Some(since) if since.elapsed() < PERSIST => continue,
                Some(_) => wanted_since = None,
            }
            let my_load = nodes
                .iter()
                .find(|n| n.id == core.id)
                .map(|n| n.demand / n.capacity.max(1e-9))
                .unwrap_or(0.0);
            for m in moves {
                let known: Vec<String> = nodes
                    .iter()
                    .map(|n| format!("{}:{:.1}/{}@{}ms", n.id, n.demand, n.capacity, n.age_ms))
                    .collect();
                tracing::info!(
                    pid = m.pid,
                    to = m.to,
                    why = %m.why,
                    known = %known.join(" "),
                    "balancer: moving a process"
                );
                core.sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Sent {
                        to: m.to,
                        pid: m.pid,
                        done: None,
                    });
                moving.set(moving.get() + 1);
                let (core, moving) = (core.clone(), moving.clone());
                tokio::task::spawn_local(async move {
                    let moved = core
                        .migrate_anywhere(
                            m.pid,
                            m.to,
                            Some(my_load),
                            MoveCause::Balancer,
                            &m.why,
                            None,
                        )
                        .await;
                    {
                        let mut sent = core.sent.lock().unwrap_or_else(|p| p.into_inner());
                        match &moved {
                            Ok(_) => {
                                for s in sent
                                    .iter_mut()
                                    .filter(|s| s.pid == m.pid && s.to == m.to && s.done.is_none())
                                {
                                    s.done = Some(Instant::now());
                                }
                            }
                            Err(_) => sent.retain(|s| s.pid != m.pid || s.done.is_some()),
                        }
                    }
                    match moved {
                        Ok(r) => tracing::info!(
                            pid = m.pid,
                            from = r.from,
                            to = r.to,
                            frozen_us = r.freeze_micros,
                            "balancer: moved"
                        ),
                        Err(e) => tracing::info!(
                            pid = m.pid,
                            to = m.to,
                            "balancer: the move did not happen: {}",
                            crate::rpc::remote_message(&e)
                        ),
                    }
                    moving.set(moving.get().saturating_sub(1));
                });
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_node_without_bodies_demands_plus_zero() {
        let d = super::demand_of(&[]);
        assert!(d == 0.0 && d.is_sign_positive(), "{d}");
        assert_eq!(format!("{d:.2}"), "0.00");
    }
}
