//! `Admin`, the administrator's capability (`ssictl`): every process of the
//! cluster (each home's table, with CPU, memory and whether it waits for its
//! code from where each body runs),
//! every node, and kill, migrate and checkpoint by pid from any node; and the
//! client calls that read its answers.
//!
//! Owns nothing; asks peers with a deadline and leaves out those that do not answer.

use super::checkpoint::cluster_checkpoint;
use super::membership::DOWN_AFTER;
use super::signals::{cluster_signal, signal_arg};
use super::state::{BodyStat, NodeCore};
use crate::events::MoveCause;
use crate::reports::{
    NodeInfo, read_node, read_process, write_checkpoint_report, write_migration, write_node,
    write_process,
};
use crate::rpc::{Endpoint, connect};
use crate::wire::{failed, set_texts};
use crate::{Pid, ProcState, ProcessInfo};
use capnp::capability::Rc as CapRc;
use ssi_schema::admin;
use std::future::{Future, ready};
use std::sync::Arc;

pub(crate) struct AdminServer {
    pub(crate) core: Arc<NodeCore>,
}

/// Every process of the cluster: each home's table, with CPU and memory from
/// the node where each body runs. Nodes that do not answer are left out.
pub(crate) async fn cluster_processes(core: Arc<NodeCore>) -> Vec<ProcessInfo> {
    let mut procs = core.home_processes();
    let mut stats: std::collections::HashMap<Pid, BodyStat> =
        core.body_stats().into_iter().map(|s| (s.pid, s)).collect();
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
            let bodies: Vec<BodyStat> = r
                .get_bodies()?
                .iter()
                .map(|b| BodyStat {
                    pid: b.get_pid(),
                    cpu_ns: b.get_cpu_ns(),
                    memory: b.get_memory(),
                    waiting: b.get_waiting(),
                })
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
        stats.extend(b.into_iter().map(|s| (s.pid, s)));
    }
    for p in &mut procs {
        if let Some(s) = stats.get(&p.pid) {
            p.cpu_ns = s.cpu_ns;
            p.memory = s.memory;
            if s.waiting && p.state == ProcState::Running {
                p.state = ProcState::Resuming;
            }
        }
    }
    procs.sort_by_key(|p| p.pid);
    procs
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
            let report = core
                .migrate_anywhere(
                    p.get_pid(),
                    p.get_node(),
                    None,
                    MoveCause::Admin,
                    "asked by an administrator",
                    p.has_progress().then(|| p.get_progress()).transpose()?,
                )
                .await?;
            write_migration(results.get().init_report(), &report);
            Ok(())
        }
    }

    fn events(
        self: CapRc<Self>,
        params: admin::EventsParams,
        _: admin::EventsResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            core.push_cluster_events(p.get_sink()?, p.get_backlog(), p.get_follow())
                .await
        }
    }

    fn drain(
        self: CapRc<Self>,
        params: admin::DrainParams,
        mut results: admin::DrainResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let outcome = core.drain_anywhere(p.get_node(), p.get_draining()).await?;
            let mut r = results.get();
            r.set_moved(outcome.moved);
            set_texts(r.init_stayed(outcome.stayed.len() as u32), &outcome.stayed);
            Ok(())
        }
    }

    fn pin(
        self: CapRc<Self>,
        params: admin::PinParams,
        _: admin::PinResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            core.pin_anywhere(p.get_pid(), p.get_pinned()).await
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
            write_node(list.reborrow().get(i as u32), n);
        }
        ready(Ok(()))
    }
}

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
    reply.get()?.get_nodes()?.iter().map(read_node).collect()
}
