//! Parents and children at a home: `spawn`, `waitpid`, `setpgid`, `setsid`,
//! zombies, reparenting to the reaper and orphaned process groups.
//!
//! A child's home is its parent's, so a family lives in one home's table:
//! every relationship is answered here without asking another node, wherever
//! the bodies run. The reaper (what `init` is on one machine) is the home
//! itself: a process whose parent has ended has parent 0 and is reaped as
//! soon as it ends.

use super::*;
use ssi_deputy::process::Child;
use std::sync::Condvar;

/// Wakes a process blocked in `waitpid` at its deputy: a child changed state,
/// or the waiting process is being frozen or ended (a *cut*: the wait returns
/// `EINTR`, and the body unwinds or stops).
#[derive(Default)]
pub(super) struct Notice {
    state: Mutex<NoticeState>,
    wake: Condvar,
}

#[derive(Default)]
struct NoticeState {
    generation: u64,
    cut: bool,
}

impl Notice {
    /// Something a wait may be looking for happened.
    pub(super) fn notify(&self) {
        lock(&self.state).generation += 1;
        self.wake.notify_all();
    }

    /// Cuts short the wait in progress, or the next one.
    pub(super) fn cut(&self) {
        lock(&self.state).cut = true;
        self.wake.notify_all();
    }

    fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// Blocks until something happens after `seen`; false if cut.
    fn wait_past(&self, seen: u64) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.cut {
                state.cut = false;
                return false;
            }
            if state.generation != seen {
                return true;
            }
            state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What becomes of a process once its task is done: a zombie for its parent
/// to wait for, or out of the table with its pid free.
pub(super) struct Reap {
    core: Arc<NodeCore>,
    pid: Pid,
    status: Option<u32>,
    discard: bool,
}

impl Reap {
    pub(super) fn new(core: Arc<NodeCore>, pid: Pid) -> Self {
        Reap {
            core,
            pid,
            status: None,
            discard: false,
        }
    }

    /// It never started: it leaves no zombie.
    pub(super) fn discard(&mut self) {
        self.discard = true;
    }

    /// How it ended.
    pub(super) fn ended(&mut self, report: &ExitReport) {
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
pub(super) fn status_word(report: &ExitReport) -> u32 {
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

fn is_stop(status: u32) -> bool {
    status & 0xff == 0x7f
}

impl NodeCore {
    /// The identity of a process of this home that has not ended.
    fn live_identity(&self, pid: Pid) -> Option<ssi_deputy::Identity> {
        self.procs
            .get(&pid)
            .filter(|p| p.zombie.is_none())
            .map(|p| p.identity)
    }

    /// A process's task is done: its children go to the reaper (those that
    /// ended are reaped now), it waits as a zombie for its parent if that
    /// lives, and the groups its end orphans get SIGHUP and SIGCONT if they
    /// hold stopped processes (POSIX).
    fn process_ended(&self, pid: Pid, status: u32) {
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
                let _ = orders.send(Order::Signal(Signal::CHLD));
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
    fn orphaned_with_stopped(&self, pgid: Pid) -> bool {
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
    pub(super) fn child_changed(&self, pid: Pid, status: u32) {
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
            let _ = orders.send(Order::Signal(Signal::CHLD));
            notice.notify();
        }
    }

    /// One child of `parent` that `target` names and that has something to
    /// report as `options` asks (reaped if it ended); `ECHILD` if none exists.
    fn take_waitable(
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
    pub(super) fn wait_child(
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
    pub(super) fn set_group(&self, caller: Pid, pid: Pid, pgid: Pid) -> Result<(), Errno> {
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
    pub(super) fn new_session(&self, caller: Pid) -> Result<Pid, Errno> {
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

/// Starts a child at this home (`ssi` `spawn`), from its parent's deputy
/// thread: it shares its parent's console, its body starts where `node`
/// says, and its task runs on a thread of its own. Returns once the body
/// runs, so that a failure to start is the parent's error.
pub(super) fn spawn_child(core: Arc<NodeCore>, child: Child) -> Result<Pid, Errno> {
    let (parent, interrupter, program, wasm) = core
        .procs
        .get(&child.parent)
        .filter(|p| p.zombie.is_none())
        .map(|p| {
            (
                p.identity,
                p.interrupter.clone(),
                p.program.clone(),
                p.wasm.clone(),
            )
        })
        .ok_or(Errno::Srch)?;
    let (program, wasm) = match child.module {
        None => (program, wasm),
        Some(bytes) => {
            let loaded = ssi_remote::assemble(&bytes)
                .map(|w| w.into_owned())
                .map_err(|e| e.to_string())
                .and_then(|w| {
                    let p = core.runtime.load_binary(&w).map_err(|e| e.to_string())?;
                    ssi_remote::check_module(&p.module).map_err(|e| e.to_string())?;
                    Ok((p, Arc::new(w)))
                });
            loaded.map_err(|e| {
                tracing::info!(parent = child.parent, "spawn: not a module it can run: {e}");
                Errno::Noexec
            })?
        }
    };
    let target = if child.node == 0 { core.id } else { child.node };
    if let Err(e) = core.can_host(target) {
        tracing::info!(parent = child.parent, "spawn: {e}");
        return Err(Errno::Hostunreach);
    }
    let pid = core.pids.allocate().map_err(|_| Errno::Again)?;
    let text = |list: Vec<Vec<u8>>| -> Vec<String> {
        list.into_iter()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .collect()
    };
    let args = text(child.args);
    let start = Start {
        pid,
        identity: ssi_deputy::Identity {
            pid,
            ppid: child.parent,
            pgid: parent.pgid,
            sid: parent.sid,
        },
        command: args.join(" "),
        target,
        image: None,
    };
    let source = Source {
        program,
        wasm,
        spec: BodySpec {
            args,
            env: text(child.env),
        },
        deputy: Arc::new(Mutex::new(child.deputy)),
    };
    let (started, outcome) = flume::bounded::<Result<(), Errno>>(1);
    let thread_core = core.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("ssi-proc-{pid}"))
        .spawn(move || {
            let Ok(rt) = thread_runtime() else {
                thread_core.pids.release(pid);
                let _ = started.send(Err(Errno::Again));
                return;
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async {
                let r = run_process(&thread_core, start, source, interrupter, None).await;
                let _ = started.send(r.map(|_| ()).map_err(|e| {
                    tracing::warn!(pid, "spawn: the child's body did not start: {}", e.extra);
                    Errno::Hostunreach
                }));
            });
            // The child's task runs to its end.
            rt.block_on(local);
        });
    if spawned.is_err() {
        core.pids.release(pid);
        return Err(Errno::Again);
    }
    outcome.recv().unwrap_or(Err(Errno::Again))?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_ends_the_wait_in_progress_or_the_next() {
        let notice = Arc::new(Notice::default());
        let seen = notice.generation();
        let n = notice.clone();
        let waiter = std::thread::spawn(move || n.wait_past(seen));
        std::thread::sleep(Duration::from_millis(20));
        notice.cut();
        assert!(!waiter.join().expect("join"), "cut");
        // A notification wakes a wait; a cut made before it starts ends it.
        let seen = notice.generation();
        notice.notify();
        assert!(notice.wait_past(seen));
        notice.cut();
        assert!(!notice.wait_past(notice.generation()));
    }

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
