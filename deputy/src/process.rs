//! A process's identity and its view of the others: what the `ssi` host API's
//! `getpid`, `getppid`, `getpgid`, `getsid` and `kill` answer.
//!
//! The deputy keeps its own process's identity. What concerns other processes
//! (their identities, delivering signals) is answered by the home's process
//! table, which the home hands the deputy as a [`ProcessTable`]: the deputy
//! knows no table, no node and no network.

use crate::abi::Errno;
use crate::signal::Signal;

/// A process's place among processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    pub pid: u32,
    /// 0 when the parent is outside the cluster (the session that launched it).
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
}

impl Identity {
    /// A process launched by a session: it leads its own group and session.
    pub fn leader(pid: u32) -> Self {
        Identity {
            pid,
            ppid: 0,
            pgid: pid,
            sid: pid,
        }
    }
}

/// The home's process table, as a deputy sees it.
pub trait ProcessTable: Send + Sync {
    /// The identity of another process (`ESRCH` if there is none).
    fn identity_of(&self, pid: u32) -> Result<Identity, Errno>;
    /// Sends `signal` from process `from` to `target`: a pid, or a group as
    /// `-pgid`; returns how many processes it reached (`ESRCH` if none). With
    /// `signal` `None` (signal 0), only checks that the target exists.
    fn kill(&self, from: u32, target: i32, signal: Option<Signal>) -> Result<u32, Errno>;
}
