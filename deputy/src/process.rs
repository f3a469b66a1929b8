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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Reply, Syscall};
    use crate::{Deputy, Stdio};
    use std::sync::{Arc, Mutex};

    /// A table of two processes, 10 (the caller, group 10) and 11 (group 10).
    #[derive(Default)]
    struct Table {
        sent: Mutex<Vec<(i32, Option<Signal>)>>,
    }

    impl ProcessTable for Table {
        fn identity_of(&self, pid: u32) -> Result<Identity, Errno> {
            match pid {
                11 => Ok(Identity {
                    pid: 11,
                    ppid: 10,
                    pgid: 10,
                    sid: 10,
                }),
                _ => Err(Errno::Srch),
            }
        }

        fn kill(&self, _from: u32, target: i32, signal: Option<Signal>) -> Result<u32, Errno> {
            self.sent.lock().expect("lock").push((target, signal));
            match target {
                10 | 11 => Ok(1),
                -10 => Ok(2),
                _ => Err(Errno::Srch),
            }
        }
    }

    fn deputy(table: Option<Arc<Table>>) -> Deputy {
        let null = || Box::new(wasi_common::pipe::WritePipe::new(std::io::sink()));
        let stdio = Stdio {
            stdin: Box::new(wasi_common::pipe::ReadPipe::from(Vec::new())),
            stdout: null(),
            stderr: null(),
        };
        let mut d = Deputy::new(stdio, Vec::new()).expect("deputy");
        if let Some(t) = table {
            d.set_process(Identity::leader(10), t);
        }
        d
    }

    #[test]
    fn identity_is_the_deputys_own_and_others_come_from_the_table() {
        let table = Arc::new(Table::default());
        let mut d = deputy(Some(table));
        assert_eq!(
            d.call(Syscall::ProcIdentity { pid: 0 }),
            Ok(Reply::Identity(Identity::leader(10)))
        );
        assert!(matches!(
            d.call(Syscall::ProcIdentity { pid: 11 }),
            Ok(Reply::Identity(Identity { ppid: 10, .. }))
        ));
        assert_eq!(d.call(Syscall::ProcIdentity { pid: 12 }), Err(Errno::Srch));
        // Without a table a deputy knows only itself.
        let mut alone = deputy(None);
        assert_eq!(
            alone.call(Syscall::ProcIdentity { pid: 12 }),
            Err(Errno::Srch)
        );
    }

    #[test]
    fn kill_targets_and_self_termination() {
        let table = Arc::new(Table::default());
        let mut d = deputy(Some(table.clone()));
        let kill = |d: &mut Deputy, target, signal| d.call(Syscall::ProcKill { target, signal });
        // Another process: delivered, the caller goes on.
        assert_eq!(kill(&mut d, 11, 15), Ok(Reply::Size(1)));
        // Its own group (0 or -pgid) with a terminating signal: it ends now.
        assert_eq!(kill(&mut d, 0, 15), Ok(Reply::Terminated(15)));
        assert_eq!(kill(&mut d, -10, 2), Ok(Reply::Terminated(2)));
        // An ignored signal to itself, or signal 0: it goes on.
        assert_eq!(kill(&mut d, 10, 17), Ok(Reply::Size(1)));
        assert_eq!(kill(&mut d, 10, 0), Ok(Reply::Size(1)));
        assert_eq!(kill(&mut d, 99, 15), Err(Errno::Srch));
        assert_eq!(kill(&mut d, 11, 32), Err(Errno::Inval));
        assert_eq!(kill(&mut d, -1, 15), Err(Errno::Notsup));
        let sent = table.sent.lock().expect("lock").clone();
        assert_eq!(
            sent[1],
            (-10, Some(Signal::TERM)),
            "0 is the caller's group"
        );
        assert_eq!(sent[4], (10, None), "signal 0 only checks");
    }
}
