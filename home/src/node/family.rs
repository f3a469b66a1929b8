//! Parents and children at a home: `spawn`, `waitpid`, `setpgid`, `setsid`,
//! zombies, reparenting to the reaper and orphaned process groups.
//!
//! A child's home is its parent's, so a family lives in one home's table:
//! every relationship is answered here without asking another node, wherever
//! the bodies run. The reaper (what `init` is on one machine) is the home
//! itself: a process whose parent has ended has parent 0 and is reaped as
//! soon as it ends.

use super::orders::Order;
use super::state::NodeCore;
use crate::wire::ExitReport;
use crate::{Pid, ProcState};
use ssi_deputy::abi::wait;
use ssi_deputy::{Errno, Signal};
use std::sync::Arc;

/// What becomes of a process once its task is done: a zombie for its parent
/// to wait for, or out of the table with its pid free.
pub(crate) struct Reap {
    core: Arc<NodeCore>,
    pid: Pid,
    status: Option<u32>,
    discard: bool,
}

impl Reap {
    pub(crate) fn new(core: Arc<NodeCore>, pid: Pid) -> Self {
        Reap {
            core,
            pid,
            status: None,
            discard: false,
        }
    }

    /// It never started: it leaves no zombie.
    pub(crate) fn discard(&mut self) {
        self.discard = true;
    }

    /// How it ended.
    pub(crate) fn ended(&mut self, report: &ExitReport) {
        self.status = Some(status_word(report));
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if self.discard {
            self.core.procs.remove(&self.pid);
            self.core.pids.release(self.pid);
        } else {
            let status = self.status.unwrap_or(wait::signaled(Signal::KILL.number()));
            self.core.process_ended(self.pid, status);
        }
    }
}

/// A process's end as its parent's `waitpid` reports it: what a shell would
/// see of the same end at `ssirun` (a trap as SIGABRT, a lost node or a
/// checkpoint-and-stop as SIGKILL, a failure of the host as status 1).
pub(crate) fn status_word(report: &ExitReport) -> u32 {
    const ABRT: u8 = 6;
    match report {
        ExitReport::Status(code) => wait::exited(*code),
        ExitReport::Signaled(n) => wait::signaled(*n),
        ExitReport::Trap(_) => wait::signaled(ABRT),
        ExitReport::Failed(_) => wait::exited(1),
        ExitReport::Lost(_) | ExitReport::Moved | ExitReport::Checkpointed => {
            wait::signaled(Signal::KILL.number())
        }
    }
}

pub(crate) fn is_stop(status: u32) -> bool {
    status & 0xff == 0x7f
}

impl NodeCore {
    /// The identity of a process of this home that has not ended.
    pub(crate) fn live_identity(&self, pid: Pid) -> Option<ssi_deputy::Identity> {
        self.procs
            .get(&pid)
            .filter(|p| p.zombie.is_none())
            .map(|p| p.identity)
    }

    /// A process's task is done: its children go to the reaper (those that
    /// ended are reaped now), it waits as a zombie for its parent if that
    /// lives, and the groups its end orphans get SIGHUP and SIGCONT if they
    /// hold stopped processes (POSIX).
    pub(crate) fn process_ended(&self, pid: Pid, status: u32) {
        let Some(me) = self.procs.get(&pid).map(|p| p.identity) else {
            return;
        };
        let children: Vec<(Pid, Pid, bool)> = self
            .procs
            .iter()
            .filter(|p| p.identity.ppid == pid)
            .map(|p| (*p.key(), p.identity.pgid, p.zombie.is_some()))
            .collect();
        for (child, _, ended) in &children {
            if *ended {
                self.procs.remove(child);
                self.pids.release(*child);
            } else if let Some(mut p) = self.procs.get_mut(child) {
                p.identity.ppid = 0;
                p.info.ppid = 0;
            }
        }
        let parent = (me.ppid != 0)
            .then(|| {
                self.procs
                    .get(&me.ppid)
                    .filter(|p| p.zombie.is_none())
                    .map(|p| (p.notice.clone(), p.orders.clone()))
            })
            .flatten();
        match parent {
            Some((notice, orders)) => {
                if let Some(mut p) = self.procs.get_mut(&pid) {
                    p.zombie = Some(status);
                    p.change = None;
                    p.info.state = ProcState::Zombie;
                    p.info.memory = 0;
                }
                let _ = orders.send(Order::Signal(Signal::CHLD, None));
                notice.notify();
            }
            None => {
                self.procs.remove(&pid);
                self.pids.release(pid);
            }
        }
        let mut groups: Vec<Pid> = children.iter().map(|(_, g, _)| *g).collect();
        groups.push(me.pgid);
        groups.sort_unstable();
        groups.dedup();
        for pgid in groups {
            if self.orphaned_with_stopped(pgid) {
                tracing::debug!(pgid, "orphaned process group: SIGHUP and SIGCONT");
                let _ = self.signal(-(pgid as i32), Some(Signal::HUP));
                let _ = self.signal(-(pgid as i32), Some(Signal::CONT));
            }
        }
    }

    /// Whether group `pgid` is orphaned (no member's parent is in another
    /// group of the same session) and has a stopped member.
    pub(crate) fn orphaned_with_stopped(&self, pgid: Pid) -> bool {
        let members: Vec<(ssi_deputy::Identity, ProcState)> = self
            .procs
            .iter()
            .filter(|p| p.identity.pgid == pgid && p.zombie.is_none())
            .map(|p| (p.identity, p.info.state))
            .collect();
        if !members.iter().any(|(_, s)| *s == ProcState::Stopped) {
            return false;
        }
        !members.iter().any(|(m, _)| {
            m.ppid != 0
                && self
                    .live_identity(m.ppid)
                    .is_some_and(|p| p.pgid != pgid && p.sid == m.sid)
        })
    }

    /// A child stopped or continued: its parent may wait for that, and gets
    /// SIGCHLD.
    pub(crate) fn child_changed(&self, pid: Pid, status: u32) {
        let ppid = match self.procs.get_mut(&pid) {
            Some(mut p) if p.zombie.is_none() => {
                p.change = Some(status);
                p.identity.ppid
            }
            _ => return,
        };
        if ppid == 0 {
            return;
        }
        if let Some((notice, orders)) = self
            .procs
            .get(&ppid)
            .map(|p| (p.notice.clone(), p.orders.clone()))
        {
            let _ = orders.send(Order::Signal(Signal::CHLD, None));
            notice.notify();
        }
    }

    /// One child of `parent` that `target` names and that has something to
    /// report as `options` asks (reaped if it ended); `ECHILD` if none exists.
    pub(crate) fn take_waitable(
        &self,
        parent: Pid,
        target: i32,
        options: u32,
    ) -> Result<Option<(Pid, u32)>, Errno> {
        let mut exists = false;
        let mut found = None;
        for p in self.procs.iter() {
            let named = match target {
                -1 => true,
                t if t > 0 => *p.key() == t as Pid,
                t => p.identity.pgid == t.unsigned_abs(),
            };
            if p.identity.ppid != parent || !named {
                continue;
            }
            exists = true;
            if let Some(status) = p.zombie {
                found = Some((*p.key(), status, true));
                break;
            }
            if let Some(change) = p.change {
                let wanted = if is_stop(change) {
                    options & wait::WUNTRACED != 0
                } else {
                    options & wait::WCONTINUED != 0
                };
                if wanted {
                    found = Some((*p.key(), change, false));
                    break;
                }
            }
        }
        if !exists {
            return Err(Errno::Child);
        }
        Ok(match found {
            Some((pid, status, true)) => {
                self.procs
                    .remove_if(&pid, |_, p| p.zombie.is_some())
                    .map(|_| {
                        self.pids.release(pid);
                        (pid, status)
                    })
            }
            Some((pid, _, false)) => self
                .procs
                .get_mut(&pid)
                .and_then(|mut p| p.change.take())
                .map(|status| (pid, status)),
            None => None,
        })
    }

    /// `waitpid` for `parent`, blocking unless `WNOHANG`.
    pub(crate) fn wait_child(
        &self,
        parent: Pid,
        target: i32,
        options: u32,
    ) -> Result<(Pid, u32), Errno> {
        let notice = self
            .procs
            .get(&parent)
            .map(|p| p.notice.clone())
            .ok_or(Errno::Srch)?;
        loop {
            let seen = notice.generation();
            if let Some(found) = self.take_waitable(parent, target, options)? {
                return Ok(found);
            }
            if options & wait::WNOHANG != 0 {
                return Ok((0, 0));
            }
            if !notice.wait_past(seen) {
                return Err(Errno::Intr);
            }
        }
    }

    /// `setpgid(pid, pgid)` by `caller`, as POSIX: the caller itself or one
    /// of its children, in its session and not a session leader, into a new
    /// group named by its pid or an existing group of the same session.
    pub(crate) fn set_group(&self, caller: Pid, pid: Pid, pgid: Pid) -> Result<(), Errno> {
        let me = self.live_identity(caller).ok_or(Errno::Srch)?;
        let target = self.live_identity(pid).ok_or(Errno::Srch)?;
        if pid != caller && target.ppid != caller {
            return Err(Errno::Srch);
        }
        if target.sid != me.sid || target.sid == pid {
            return Err(Errno::Perm);
        }
        let exists = || {
            self.procs.iter().any(|p| {
                p.zombie.is_none() && p.identity.pgid == pgid && p.identity.sid == target.sid
            })
        };
        if pgid != pid && !exists() {
            return Err(Errno::Perm);
        }
        let mut p = self.procs.get_mut(&pid).ok_or(Errno::Srch)?;
        p.identity.pgid = pgid;
        p.info.pgid = pgid;
        Ok(())
    }

    /// `setsid()` by `caller`: it leads a new session and a new group, unless
    /// a group already bears its pid.
    pub(crate) fn new_session(&self, caller: Pid) -> Result<Pid, Errno> {
        if self.procs.iter().any(|p| p.identity.pgid == caller) {
            return Err(Errno::Perm);
        }
        let mut p = self.procs.get_mut(&caller).ok_or(Errno::Srch)?;
        p.identity.sid = caller;
        p.identity.pgid = caller;
        p.info.pgid = caller;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_reported_as_a_shell_would_see_them() {
        assert_eq!(status_word(&ExitReport::Status(3)), 0x300);
        assert_eq!(status_word(&ExitReport::Signaled(15)), 15);
        assert_eq!(status_word(&ExitReport::Trap(Vec::new())), 6);
        assert_eq!(status_word(&ExitReport::Failed(Vec::new())), 0x100);
        assert_eq!(status_word(&ExitReport::Lost("gone".into())), 9);
        assert!(is_stop(wait::stopped(19)));
        assert!(!is_stop(wait::CONTINUED));
        assert!(!is_stop(wait::exited(0x7f)));
    }
}
