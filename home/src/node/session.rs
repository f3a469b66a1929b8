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
use std::future::{Future, ready};
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

    fn signal(
        self: CapRc<Self>,
        params: process::SignalParams,
        _: process::SignalResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let sig = Signal::from_number(params.get()?.get_signal())
                .ok_or_else(|| failed("not a signal number"))?;
            // The session's terminal signals its foreground process group.
            let pgid = self
                .core
                .procs
                .get(&self.pid)
                .map(|p| p.info.pgid)
                .unwrap_or(self.pid);
            match self.core.signal(-(pgid as i32), Some(sig)) {
                Ok(_) | Err(SignalError::NoGroup(_)) => Ok(()),
                Err(e) => Err(failed(e)),
            }
        })();
        ready(r)
    }
}

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
