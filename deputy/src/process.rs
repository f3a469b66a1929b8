//! A process's identity and its view of the others: what the `ssi` host API's
//! `getpid`, `getppid`, `getpgid`, `getsid`, `setpgid`, `setsid`, `kill`,
//! `spawn` and `waitpid` do.
//!
//! Relationships (parent, group, session) are the home's: its process table
//! keeps them, since a parent's `setpgid` changes its child and a parent's
//! end reparents its children. The home hands the deputy the table as a
//! [`ProcessTable`]; the deputy knows no table, no node and no network. It
//! keeps a copy of its own identity for when it has no table.

use crate::abi::{Errno, Identity};
use crate::signal::Signal;

/// A child process as its parent's deputy sets it up for the home to start.
pub struct Child {
    pub parent: u32,
    /// The module's bytes; `None`: the parent's own module.
    pub module: Option<Vec<u8>>,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    /// Its deputy, with the descriptors it inherits.
    pub deputy: crate::Deputy,
    /// The node to start its body on; 0: the home chooses.
    pub node: u16,
}

/// The home's process table, as a deputy sees it.
pub trait ProcessTable: Send + Sync {
    /// The identity of another process (`ESRCH` if there is none).
    fn identity_of(&self, pid: u32) -> Result<Identity, Errno>;
    /// Sends `signal` from process `from` to `target`: a pid, or a group as
    /// `-pgid`; returns how many processes it reached (`ESRCH` if none). With
    /// `signal` `None` (signal 0), only checks that the target exists.
    fn kill(&self, from: u32, target: i32, signal: Option<Signal>) -> Result<u32, Errno>;
    /// Starts a child of `child.parent` at this home; returns its pid.
    fn spawn(&self, child: Child) -> Result<u32, Errno>;
    /// Waits until a child of `parent` that `target` names (a pid, -1 any,
    /// -pgid a group) has changed state as `options` (`abi::wait`) asks, and
    /// reaps it if it ended: its pid and status word; pid 0 with `WNOHANG`
    /// when none has. `ECHILD` if there is no such child; `EINTR` when the
    /// wait is cut short (the caller is being frozen or ended).
    fn wait(&self, parent: u32, target: i32, options: u32) -> Result<(u32, u32), Errno>;
    /// `setpgid(pid, pgid)` called by `caller` (`pid` and `pgid` already
    /// resolved from 0).
    fn setpgid(&self, caller: u32, pid: u32, pgid: u32) -> Result<(), Errno>;
    /// `setsid()` called by `caller`: the new session's id.
    fn setsid(&self, caller: u32) -> Result<u32, Errno>;
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
        children: Mutex<Vec<Child>>,
        waits: Mutex<Vec<(u32, i32, u32)>>,
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

        fn spawn(&self, child: Child) -> Result<u32, Errno> {
            self.children.lock().expect("lock").push(child);
            Ok(11)
        }

        fn wait(&self, parent: u32, target: i32, options: u32) -> Result<(u32, u32), Errno> {
            self.waits
                .lock()
                .expect("lock")
                .push((parent, target, options));
            Ok((11, crate::abi::wait::exited(3)))
        }

        fn setpgid(&self, _caller: u32, pid: u32, pgid: u32) -> Result<(), Errno> {
            if (pid, pgid) == (10, 10) {
                Ok(())
            } else {
                Err(Errno::Perm)
            }
        }

        fn setsid(&self, _caller: u32) -> Result<u32, Errno> {
            Err(Errno::Perm)
        }
    }

    fn deputy(table: Option<Arc<Table>>) -> Deputy {
        deputy_with(table, Vec::new())
    }

    fn deputy_with(table: Option<Arc<Table>>, preopens: Vec<crate::Preopen>) -> Deputy {
        let null = || Box::new(wasi_common::pipe::WritePipe::new(std::io::sink()));
        let stdio = Stdio {
            stdin: Box::new(wasi_common::pipe::ReadPipe::from(Vec::new())),
            stdout: null(),
            stderr: null(),
        };
        let mut d = Deputy::new(stdio, preopens).expect("deputy");
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

    #[test]
    fn spawn_reads_the_module_by_guest_path_and_shares_the_descriptors_named() {
        use crate::abi::{SpawnRequest, oflags, rights};
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
        std::fs::write(dir.path().join("bin/m.wasm"), b"module bytes").expect("write");
        let table = Arc::new(Table::default());
        let preopen = crate::Preopen {
            host: dir.path().to_path_buf(),
            guest: "/data".into(),
        };
        let mut d = deputy_with(Some(table.clone()), vec![preopen]);
        // A file the child will share with its parent, offset included.
        let Ok(Reply::Fd(file)) = d.call(Syscall::PathOpen {
            fd: 3,
            dirflags: 0,
            path: b"log".to_vec(),
            oflags: oflags::CREAT,
            rights_base: rights::FD_WRITE | rights::FD_SEEK | rights::FD_TELL,
            rights_inheriting: 0,
            fdflags: 0,
        }) else {
            panic!("open")
        };
        let spawn = |d: &mut Deputy, module: &[u8], fds: Vec<(u32, u32)>| {
            d.call(Syscall::ProcSpawn(SpawnRequest {
                module: module.to_vec(),
                args: vec![b"m".to_vec()],
                env: Vec::new(),
                fds,
                node: 2,
            }))
        };
        assert_eq!(
            spawn(&mut d, b"/data/bin/m.wasm", vec![(1, 1), (5, file)]),
            Ok(Reply::Size(11))
        );
        assert_eq!(spawn(&mut d, b"", Vec::new()), Ok(Reply::Size(11)));
        assert_eq!(
            spawn(&mut d, b"/elsewhere/m.wasm", Vec::new()),
            Err(Errno::Noent)
        );
        assert_eq!(
            spawn(&mut d, b"/data/bin/none.wasm", Vec::new()),
            Err(Errno::Noent)
        );
        assert_eq!(spawn(&mut d, b"/data/bin", Vec::new()), Err(Errno::Isdir));
        assert_eq!(spawn(&mut d, b"", vec![(0, 9)]), Err(Errno::Badf));
        assert_eq!(spawn(&mut d, b"", vec![(0, 1), (0, 2)]), Err(Errno::Inval));
        let mut children = std::mem::take(&mut *table.children.lock().expect("lock"));
        assert_eq!(children.len(), 2);
        let mut all = children.pop().expect("second");
        let mut named = children.pop().expect("first");
        assert_eq!(named.module.as_deref(), Some(&b"module bytes"[..]));
        assert_eq!((named.parent, named.node), (10, 2));
        assert_eq!(all.module, None, "its parent's own module");
        // The named child has exactly the descriptors it was given.
        let fds: Vec<u32> = named
            .deputy
            .descriptors()
            .iter()
            .map(|(fd, _)| *fd)
            .collect();
        assert_eq!(fds, [1, 5]);
        let all_fds: Vec<u32> = all.deputy.descriptors().iter().map(|(fd, _)| *fd).collect();
        assert_eq!(all_fds, [0, 1, 2, 3, file]);
        // Its fd 5 is the parent's file: one offset for both.
        assert_eq!(
            named.deputy.call(Syscall::FdWrite {
                fd: 5,
                data: b"abc".to_vec()
            }),
            Ok(Reply::Size(3))
        );
        assert_eq!(d.call(Syscall::FdTell { fd: file }), Ok(Reply::Filesize(3)));
        // Changing the flags of a shared file would change them under the child.
        assert_eq!(
            d.call(Syscall::FdFdstatSetFlags {
                fd: file,
                flags: crate::abi::fdflags::APPEND
            }),
            Err(Errno::Busy)
        );
        drop(all.deputy.call(Syscall::FdClose { fd: 1 }));
        assert_eq!(d.call(Syscall::FdTell { fd: file }), Ok(Reply::Filesize(3)));
    }

    #[test]
    fn wait_setpgid_and_setsid_go_to_the_table_with_zeros_resolved() {
        let table = Arc::new(Table::default());
        let mut d = deputy(Some(table.clone()));
        assert_eq!(
            d.call(Syscall::ProcWait {
                target: 0,
                options: crate::abi::wait::WNOHANG
            }),
            Ok(Reply::Waited {
                pid: 11,
                status: 0x300
            })
        );
        assert_eq!(
            d.call(Syscall::ProcWait {
                target: -1,
                options: 4
            }),
            Err(Errno::Inval),
            "an unknown option"
        );
        assert_eq!(
            table.waits.lock().expect("lock").clone(),
            [(10, -10, 1)],
            "0 is the caller's group"
        );
        assert_eq!(
            d.call(Syscall::ProcSetpgid { pid: 0, pgid: 0 }),
            Ok(Reply::Unit)
        );
        assert_eq!(
            d.call(Syscall::ProcSetpgid { pid: 11, pgid: 0 }),
            Err(Errno::Perm)
        );
        assert_eq!(d.call(Syscall::ProcSetsid), Err(Errno::Perm));
        // Without a table: no children, and a lone process cannot regroup.
        let mut alone = deputy(None);
        assert_eq!(
            alone.call(Syscall::ProcWait {
                target: -1,
                options: 0
            }),
            Err(Errno::Child)
        );
        assert_eq!(alone.call(Syscall::ProcSetsid), Err(Errno::Perm));
        assert_eq!(
            alone.call(Syscall::ProcSpawn(Default::default())),
            Err(Errno::Nosys)
        );
    }
}
