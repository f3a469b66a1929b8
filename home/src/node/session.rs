//! `Process`, the capability a session (`ssirun`) holds for its own process
//! and no other: wait for its end, send it the terminal's signals (to its
//! foreground group), checkpoint it. A session that lets go of it ends the
//! process.
//!
//! Owns nothing; orders go to the process's task.

use super::checkpoint::cluster_checkpoint;
use super::orders::Order;
use super::signals::SignalError;
use super::state::NodeCore;
use crate::Pid;
use crate::reports::write_checkpoint_report;
use crate::wire::{ExitReport, failed, write_exit};
use capnp::capability::Rc as CapRc;
use futures::future::{LocalBoxFuture, Shared};
use ssi_deputy::Signal;
use ssi_schema::process;
use std::future::Future;
use std::sync::Arc;

pub(crate) struct ProcessServer {
    pub(crate) core: Arc<NodeCore>,
    pub(crate) pid: Pid,
    pub(crate) exit: Shared<LocalBoxFuture<'static, ExitReport>>,
    pub(crate) orders: Option<super::orders::OrderSender>,
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

    /// A signal from the session's terminal (Ctrl-C, Ctrl-Z…) to its
    /// foreground group. Answered once each process's task has acted on it:
    /// after a stop, `ssirun` stops itself, and the process is stopped by
    /// then wherever its body runs (at most `ACT_WITHIN` is waited).
    fn signal(
        self: CapRc<Self>,
        params: process::SignalParams,
        _: process::SignalResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let acted = (|| {
            let sig = Signal::from_number(params.get()?.get_signal())
                .ok_or_else(|| failed("not a signal number"))?;
            // The session's terminal signals its foreground process group.
            let pgid = self
                .core
                .procs
                .get(&self.pid)
                .map(|p| p.info.pgid)
                .unwrap_or(self.pid);
            match self.core.signal_acted(-(pgid as i32), Some(sig)) {
                Ok(acted) => Ok(acted),
                Err(SignalError::NoGroup(_)) => Ok(Vec::new()),
                Err(e) => Err(failed(e)),
            }
        })();
        async move {
            let acted = futures::future::join_all(acted?);
            // Past the bound (a body held in a call that cannot be cut), the
            // answer goes anyway: the stop still happens, later.
            let _ = tokio::time::timeout(ACT_WITHIN, acted).await;
            Ok(())
        }
    }
}

/// How long a terminal's signal waits for the processes to act on it.
const ACT_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

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
