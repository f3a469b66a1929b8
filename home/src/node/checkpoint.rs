//! Checkpoints: the task's side (freeze, the image sealed with the deputy's
//! state and the module, then resume, or release once the file is safe with
//! `--stop`), the cluster's (`cluster_checkpoint`: at the process's home,
//! which may be another node, into the asker's sink), and the client calls of
//! `ssictl checkpoint`, `ssirun --checkpoint-every` and `ssirun --restore`.
//!
//! Must not know: files (the sink writes them), how an image is encoded.

use super::common::lock;
use super::image_sink::send_image;
use super::orders::{Checkpoint, Order};
use super::placement::Running;
use super::slot::Verdict;
use super::state::NodeCore;
use super::task::ProcessTask;
use super::transfer::home_peer;
use crate::console::Ttys;
use crate::reports::{CheckpointReport, read_checkpoint_report};
use crate::{NodeId, Pid, ProcState, home_of};
use futures::channel::oneshot;
use ssi_schema::{admin, console, gateway, process};
use std::sync::Arc;
use std::time::Instant;

impl ProcessTask {
    /// A checkpoint: the frozen body's image sealed with the deputy's state
    /// and the module. Then the body goes on, or with `stop` is dropped and
    /// the process ends as checkpointed.
    /// With `stop`, the body stays frozen until the asker says the checkpoint
    /// is safe where it went (`Checkpoint::delivered`), and only then is
    /// dropped; if it is not, the body goes on. True if the process stopped.
    pub(crate) async fn checkpoint(
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
        let mut e = crate::events::Event::new(
            "checkpointed",
            checkpoint.report.node,
            format!(
                "process {pid} checkpointed on node {}: a {} KiB image, frozen {:.1} ms{}",
                checkpoint.report.node,
                checkpoint.report.image_bytes / 1024,
                freeze_micros as f64 / 1000.0,
                if stop { ", to stop" } else { "" }
            ),
        )
        .of(pid);
        e.frozen_micros = Some(freeze_micros);
        self.core.record(e);
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
}

impl NodeCore {
    /// Checkpoints a process whose home is this node (see
    /// `ProcessTask::checkpoint`).
    pub async fn checkpoint(&self, pid: Pid, stop: bool) -> Result<Checkpoint, capnp::Error> {
        self.order(pid, "was checkpointed", |reply| Order::Checkpoint {
            stop,
            reply,
        })
        .await
    }
}

/// Checkpoints a process of the cluster into `sink`: at its home, which may
/// be this node (then the image is written from here) or another (asked to
/// write it into the same sink).
pub(crate) async fn cluster_checkpoint(
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
