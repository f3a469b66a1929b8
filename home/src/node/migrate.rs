//! Migration, as the process's home drives it: the destination is sent the
//! module first (`NodeCore::migrate`), expects the body while it freezes, the
//! image streams from where the body is straight to it, and the frozen body is
//! dropped only after the destination has restored it (its acknowledgement);
//! any failure before resumes it where it was. Also `ssictl migrate`'s client
//! call.
//!
//! Must not know: the image format, the transport (`transfer.rs`, `stream.rs`).

use super::orders::Order;
use super::placement::reporting;
use super::placement::{Held, Running};
use super::slot::Verdict;
use super::state::NodeCore;
use super::stream::Sending;
use super::task::ProcessTask;
use super::transfer::{expect_at, home_peer, send_module};
use crate::events::{Event, MoveCause};
use crate::reports::{MigrationReport, read_migration};
use crate::wire::failed;
use crate::{NodeId, Pid, ProcState, home_of};
use ssi_schema::{admin, progress};
use std::sync::Arc;
use std::time::Instant;

impl ProcessTask {
    /// The migration protocol: the destination expects the body (and opens
    /// its deputy link) while the body freezes; the image streams from where
    /// the body is straight to the destination, which restores it (its
    /// acknowledgement); only then is the frozen body dropped. Any failure
    /// before the acknowledgement resumes the body where it was.
    pub(crate) async fn migrate(
        &self,
        running: &mut Running,
        to: NodeId,
        sender_load: Option<f64>,
        sending: Option<Arc<Sending>>,
    ) -> Result<MigrationReport, String> {
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
            futures::join!(freeze, expect_at(core, pid, to, &self.source, sender_load));
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
        let stats = match held
            .send_to(&expecting.address, expecting.ticket, sending)
            .await
        {
            Ok(stats) => stats,
            Err(e) => return Err(gave_up(e, held)),
        };
        match expecting.arrival.await {
            Ok((moved, arrived)) => {
                // The frozen body is dropped, then the new one goes on.
                held.decide(Verdict::Release);
                // The move is done when the destination says the body goes
                // on there: the report's time ends then.
                if let Err(e) = arrived.resume().await {
                    tracing::warn!(pid, "the moved body's node did not confirm it goes on: {e}");
                }
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

impl NodeCore {
    /// Moves a process whose home is this node to node `to` (see
    /// `ProcessTask::migrate`); `sender_load`, for a balancer's move, is
    /// checked by the destination.
    pub async fn migrate(
        &self,
        pid: Pid,
        to: NodeId,
        sender_load: Option<f64>,
        cause: MoveCause,
        why: &str,
        progress: Option<progress::Client>,
    ) -> Result<MigrationReport, capnp::Error> {
        let moved = match progress {
            None => self.migrate_here(pid, to, sender_load, None).await,
            Some(p) => {
                let sending = Arc::new(Sending::default());
                let moving = self.migrate_here(pid, to, sender_load, Some(sending.clone()));
                reporting(moving, &sending, &p).await
            }
        };
        let by = cause.name();
        match &moved {
            Ok(r) => {
                let mut e = Event::new(
                    "moved",
                    r.to,
                    format!(
                        "process {pid} moved from node {} to node {} by the {by} ({why}): frozen {:.1} ms, {:.1} ms in all, {} KiB sent",
                        r.from,
                        r.to,
                        r.freeze_micros as f64 / 1000.0,
                        r.total_micros as f64 / 1000.0,
                        r.image_bytes / 1024
                    ),
                )
                .of(pid);
                e.from = Some(r.from);
                e.by = Some(by.to_string());
                e.frozen_micros = Some(r.freeze_micros);
                self.record(e);
            }
            Err(err) => {
                let mut e = Event::new(
                    "refused",
                    to,
                    format!(
                        "process {pid} did not move to node {to} (asked by the {by}: {why}): {}",
                        crate::rpc::remote_message(err)
                    ),
                )
                .of(pid);
                e.by = Some(by.to_string());
                self.record(e);
            }
        }
        moved
    }

    async fn migrate_here(
        &self,
        pid: Pid,
        to: NodeId,
        sender_load: Option<f64>,
        sending: Option<Arc<Sending>>,
    ) -> Result<MigrationReport, capnp::Error> {
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
            // Its whole module, compiled there before the body freezes.
            send_module(self, to, &hash, &wasm, true)
                .await
                .map_err(|e| failed(format!("cannot move process {pid} to node {to}: {e}")))?;
        }
        self.order(pid, "moved", |reply| Order::Migrate {
            to,
            sender_load,
            sending,
            reply,
        })
        .await
    }
}

impl NodeCore {
    /// Moves a process of the cluster, asking its home, which may be this
    /// node (`ssictl migrate` from any node, and the balancer).
    pub(crate) async fn migrate_anywhere(
        &self,
        pid: Pid,
        to: NodeId,
        sender_load: Option<f64>,
        cause: MoveCause,
        why: &str,
        progress: Option<progress::Client>,
    ) -> Result<MigrationReport, capnp::Error> {
        let home = home_of(pid);
        if home == self.id {
            return self
                .migrate(pid, to, sender_load, cause, why, progress)
                .await;
        }
        let (_connection, peer) = home_peer(self, home, &format!("process {pid}")).await?;
        let mut req = peer.migrate_request();
        req.get().set_pid(pid);
        req.get().set_node(to);
        req.get().set_sender_load(sender_load.unwrap_or(0.0));
        req.get().set_cause(cause.to_wire());
        req.get().set_why(why);
        if let Some(p) = progress {
            req.get().set_progress(p);
        }
        let reply = req.send().promise.await?;
        Ok(read_migration(reply.get()?.get_report()?))
    }
}

impl NodeCore {
    /// Pins or unpins a process whose home is this node: the balancer of the
    /// node its body runs on leaves a pinned body where it is.
    pub(crate) fn pin(&self, pid: Pid, pinned: bool) -> Result<(), capnp::Error> {
        let orders = {
            let mut p = self
                .procs
                .get_mut(&pid)
                .ok_or_else(|| failed(format!("no process {pid}")))?;
            p.info.user_pinned = pinned;
            p.orders.clone()
        };
        let (kind, what) = if pinned {
            ("pinned", "is pinned: the balancer leaves it where it runs")
        } else {
            ("unpinned", "is no longer pinned")
        };
        let node = self.procs.get(&pid).map_or(self.id, |p| p.info.node);
        self.record(Event::new(kind, node, format!("process {pid} {what}")).of(pid));
        orders
            .send(Order::Pin(pinned))
            .map_err(|_| failed(format!("process {pid} is ending")))
    }

    /// Pins or unpins a process of the cluster, at its home.
    pub(crate) async fn pin_anywhere(&self, pid: Pid, pinned: bool) -> Result<(), capnp::Error> {
        let home = home_of(pid);
        if home == self.id {
            return self.pin(pid, pinned);
        }
        let (_connection, peer) = home_peer(self, home, &format!("process {pid}")).await?;
        let mut req = peer.pin_request();
        req.get().set_pid(pid);
        req.get().set_pinned(pinned);
        req.send().promise.await?;
        Ok(())
    }
}

/// Asks any node to pin or unpin a process (`ssictl pin`, `ssictl unpin`).
pub async fn admin_pin(admin: &admin::Client, pid: Pid, pinned: bool) -> Result<(), capnp::Error> {
    let mut req = admin.pin_request();
    req.get().set_pid(pid);
    req.get().set_pinned(pinned);
    req.send().promise.await?;
    Ok(())
}

/// Asks any node to move a process (`ssictl migrate`).
/// `progress`, if given, is told how much of the image is sent as it goes.
pub async fn admin_migrate(
    admin: &admin::Client,
    pid: Pid,
    to: NodeId,
    progress: Option<ssi_schema::progress::Client>,
) -> Result<MigrationReport, capnp::Error> {
    let mut req = admin.migrate_request();
    req.get().set_pid(pid);
    req.get().set_node(to);
    if let Some(p) = progress {
        req.get().set_progress(p);
    }
    let reply = req.send().promise.await?;
    Ok(read_migration(reply.get()?.get_report()?))
}
