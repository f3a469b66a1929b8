//! Signals at the cluster's scale: `NodeCore::signal` hands a signal to the
//! task of a process (or every member of a group) whose home is this node, and
//! `cluster_signal` forwards it to the home of a pid that lives elsewhere.
//!
//! What a signal does to a process is the task's (`task.rs`) and the deputy's
//! dispositions'; this room only finds who gets it.

use super::orders::Order;
use super::state::NodeCore;
use super::table::{HomeProc, Loading};
use super::transfer::home_peer;
use crate::wire::failed;
use crate::{Pid, home_of};
use futures::channel::oneshot;
use ssi_deputy::Signal;
use std::sync::Arc;

/// Why a signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("no process {0}")]
    NoProcess(Pid),
    #[error("no process group {0}")]
    NoGroup(Pid),
    #[error("{0} is not a process or a process group")]
    BadTarget(i32),
}

impl NodeCore {
    /// Sends a signal to a process whose home is this node (`target` > 0) or to
    /// every member of a process group (`target` = -pgid); returns how many.
    /// With `sig` `None` (signal 0), only counts the processes it would reach.
    pub fn signal(&self, target: i32, sig: Option<Signal>) -> Result<u32, SignalError> {
        self.signal_acted(target, sig)
            .map(|acted| acted.len() as u32)
    }

    /// As [`NodeCore::signal`]; one receiver for each process reached, which
    /// ends once its task has acted on the signal (a stop: once the body is
    /// frozen where it runs).
    pub(crate) fn signal_acted(
        &self,
        target: i32,
        sig: Option<Signal>,
    ) -> Result<Vec<oneshot::Receiver<()>>, SignalError> {
        let send = |p: &HomeProc| {
            let (acted, told) = oneshot::channel();
            match sig {
                Some(sig) => p
                    .orders
                    .send(Order::Signal(sig, Some(acted)))
                    .ok()
                    .map(|_| told),
                None => Some(told),
            }
        };
        // A process still loading takes it at once (nothing runs to act on
        // it later): its receiver is done.
        let loading = |l: &Loading| {
            let (_, told) = oneshot::channel();
            if let Some(sig) = sig {
                l.signal(sig);
            }
            told
        };
        match target {
            t if t > 0 => {
                let pid = t as Pid;
                if let Some(l) = self.loading.get(&pid) {
                    return Ok(vec![loading(&l)]);
                }
                let p = self.procs.get(&pid).ok_or(SignalError::NoProcess(pid))?;
                Ok(send(&p).into_iter().collect())
            }
            t if t < 0 && t != i32::MIN => {
                let pgid = t.unsigned_abs();
                let reached: Vec<_> = self
                    .procs
                    .iter()
                    .filter(|p| p.info.pgid == pgid)
                    .filter_map(|p| send(&p))
                    .chain(
                        self.loading
                            .iter()
                            .filter(|l| l.info.pgid == pgid)
                            .map(|l| loading(&l)),
                    )
                    .collect();
                if reached.is_empty() {
                    return Err(SignalError::NoGroup(pgid));
                }
                Ok(reached)
            }
            t => Err(SignalError::BadTarget(t)),
        }
    }
}

/// A signal number from the wire: 0 means "only check".
pub(crate) fn signal_arg(n: u8) -> Result<Option<Signal>, capnp::Error> {
    match n {
        0 => Ok(None),
        n => Signal::from_number(n)
            .map(Some)
            .ok_or_else(|| failed(format!("{n} is not a signal number"))),
    }
}

pub(crate) async fn cluster_signal(
    core: Arc<NodeCore>,
    target: i32,
    sig: Option<Signal>,
) -> Result<u32, capnp::Error> {
    let home = home_of(target.unsigned_abs());
    if home == core.id {
        return core.signal(target, sig).map_err(failed);
    }
    let what = if target < 0 {
        format!("process group {}", target.unsigned_abs())
    } else {
        format!("process {target}")
    };
    let (_connection, peer) = home_peer(&core, home, &what).await?;
    let mut req = peer.signal_request();
    req.get().set_target(target);
    req.get().set_signal(sig.map(|s| s.number()).unwrap_or(0));
    let reply = req.send().promise.await?;
    Ok(reply.get()?.get_count())
}
