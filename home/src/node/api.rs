//! The home's process table as a deputy sees it (`ssi_deputy::ProcessTable`):
//! the `ssi` host API's calls that reach beyond one process — identities of
//! others (asking another home if need be), spawn, waitpid, setpgid, setsid,
//! kill — answered on the calling body's or deputy's thread.
//!
//! Owns nothing; the work is in `family.rs`, `spawn.rs` and `signals.rs`.

use super::signals::{SignalError, cluster_signal};
use super::state::NodeCore;
use crate::home_of;
use crate::rpc::{Endpoint, connect, thread_runtime};
use ssi_deputy::{Errno, Signal};
use std::future::Future;

/// The home's process table, as its deputies see it (`ssi` API).
pub(crate) struct HomeTable {
    pub(crate) core: std::sync::Weak<NodeCore>,
}

impl ssi_deputy::ProcessTable for HomeTable {
    fn identity_of(&self, pid: u32) -> Result<ssi_deputy::Identity, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        if home_of(pid) == core.id {
            return core.identity_of(pid).ok_or(Errno::Srch);
        }
        // Another home: ask it, from this (body or deputy) thread.
        let home = home_of(pid);
        let address = core
            .peer_address(home)
            .filter(|_| core.peer_up(home))
            .ok_or(Errno::Srch)?;
        on_this_thread(async {
            let gateway = connect(&Endpoint::Tcp(address))
                .await
                .map_err(|_| Errno::Io)?;
            let peer = gateway.peer_request().send().pipeline.get_peer();
            let mut req = peer.identity_request();
            req.get().set_pid(pid);
            let reply = req.send().promise.await.map_err(|_| Errno::Srch)?;
            let id = reply
                .get()
                .and_then(|r| r.get_identity())
                .map_err(|_| Errno::Io)?;
            Ok(ssi_deputy::Identity {
                pid: id.get_pid(),
                ppid: id.get_ppid(),
                pgid: id.get_pgid(),
                sid: id.get_sid(),
            })
        })
    }

    fn spawn(&self, child: ssi_deputy::process::Child) -> Result<u32, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        core.spawn_child(child)
    }

    fn wait(&self, parent: u32, target: i32, options: u32) -> Result<(u32, u32), Errno> {
        let core = self.core.upgrade().ok_or(Errno::Child)?;
        core.wait_child(parent, target, options)
    }

    fn setpgid(&self, caller: u32, pid: u32, pgid: u32) -> Result<(), Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        core.set_group(caller, pid, pgid)
    }

    fn setsid(&self, caller: u32) -> Result<u32, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        core.new_session(caller)
    }

    fn kill(&self, _from: u32, target: i32, signal: Option<Signal>) -> Result<u32, Errno> {
        let core = self.core.upgrade().ok_or(Errno::Srch)?;
        let to_errno = |e: SignalError| match e {
            SignalError::NoProcess(_) | SignalError::NoGroup(_) => Errno::Srch,
            SignalError::BadTarget(_) => Errno::Inval,
        };
        if home_of(target.unsigned_abs()) == core.id {
            return core.signal(target, signal).map_err(to_errno);
        }
        on_this_thread(async {
            cluster_signal(core, target, signal).await.map_err(|e| {
                if e.extra.contains("no process") || e.extra.contains("not a member") {
                    Errno::Srch
                } else {
                    Errno::Io
                }
            })
        })
    }
}

/// Asks another home from the calling thread (a body's or a deputy's, which
/// runs no event loop): a runtime for the one request.
pub(crate) fn on_this_thread<T>(
    request: impl Future<Output = Result<T, Errno>>,
) -> Result<T, Errno> {
    let rt = thread_runtime().map_err(|_| Errno::Io)?;
    tokio::task::LocalSet::new().block_on(&rt, request)
}
