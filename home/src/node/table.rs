//! Entries of the home's process table: `HomeProc`, what this home keeps
//! about each process whose home it is, and `Notice`, what wakes a process
//! blocked in `waitpid` at its deputy.
//!
//! Owns no behaviour beyond those values: families (`family.rs`), signals
//! (`signals.rs`) and the per-process task (`task.rs`) act on them.

use super::common::lock;
use super::orders::OrderSender;
use crate::ProcessInfo;
use crate::console::Interrupter;
use ssi_remote::{Program, SharedDeputy};
use std::sync::{Arc, Condvar, Mutex};

/// A process launched here whose module is still being prepared: listed,
/// and ended by a signal that terminates (told through `ended`).
pub(crate) struct Loading {
    pub(crate) info: ProcessInfo,
    pub(crate) ended: Mutex<Option<futures::channel::oneshot::Sender<ssi_deputy::Signal>>>,
}

impl Loading {
    /// Takes a signal: one whose default action terminates ends the load
    /// (nothing of the program runs yet to handle or block it).
    pub(crate) fn signal(&self, sig: ssi_deputy::Signal) {
        if sig.default_action() == ssi_deputy::DefaultAction::Terminate
            && let Some(end) = lock(&self.ended).take()
        {
            let _ = end.send(sig);
        }
    }
}

/// A process whose home is this node.
pub(crate) struct HomeProc {
    pub(crate) info: ProcessInfo,
    /// Its parent, group and session: the table's, which `setpgid`, `setsid`
    /// and reparenting change.
    pub(crate) identity: ssi_deputy::Identity,
    pub(crate) deputy: SharedDeputy,
    /// To the process's task on its session thread, which acts on signals
    /// and migrations.
    pub(crate) orders: OrderSender,
    /// The sturdy reference a remote body redeems (once) for its deputy.
    pub(crate) secret: Option<[u8; 16]>,
    /// It ended while its parent lives: its status word, until the parent
    /// waits for it.
    pub(crate) zombie: Option<u32>,
    /// A stop or continue its parent has not waited for yet: the status word.
    pub(crate) change: Option<u32>,
    /// Wakes a `waitpid` of this process.
    pub(crate) notice: Arc<Notice>,
    /// Cuts short a read of its session's console (its children share it).
    pub(crate) interrupter: Interrupter,
    /// Its module, which a child spawned with no module of its own runs.
    pub(crate) program: Program,
    pub(crate) wasm: bytes::Bytes,
    /// Its memory limit (`BodySpec::max_memory_size`), which its children
    /// inherit, as a Unix process's resource limits.
    pub(crate) max_memory: Option<u64>,
}

/// Wakes a process blocked in `waitpid` at its deputy: a child changed state,
/// or the waiting process is being frozen or ended (a *cut*: the wait returns
/// `EINTR`, and the body unwinds or stops).
#[derive(Default)]
pub(crate) struct Notice {
    state: Mutex<NoticeState>,
    wake: Condvar,
}

#[derive(Default)]
pub(crate) struct NoticeState {
    pub(crate) generation: u64,
    pub(crate) cut: bool,
}

impl Notice {
    /// Something a wait may be looking for happened.
    pub(crate) fn notify(&self) {
        lock(&self.state).generation += 1;
        self.wake.notify_all();
    }

    /// Cuts short the wait in progress, or the next one.
    pub(crate) fn cut(&self) {
        lock(&self.state).cut = true;
        self.wake.notify_all();
    }

    pub(crate) fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// Blocks until something happens after `seen`; false if cut.
    pub(crate) fn wait_past(&self, seen: u64) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}
