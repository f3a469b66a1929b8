//! `ProcessTask`, the home's side of one process, on its session's thread: it
//! follows the body wherever it runs to its end and acts on the process's
//! orders — signals (handled in the body, held, or their default action:
//! terminate, stop, continue), and the moves and checkpoints whose steps are in
//! `migrate.rs` and `checkpoint.rs`. `NodeCore::order` hands it an order and
//! waits for its answer.
//!
//! Owns the process's run state (stopped, a pending fatal signal).
//! Must not know: Cap'n Proto servers (it is given a `Placement`).

use super::orders::{Order, Orders};
use super::placement::{Held, Running, Source};
use super::slot::Verdict;
use super::state::NodeCore;
use super::table::Notice;
use crate::console::Interrupter;
use crate::wire::{ExitReport, failed};
use crate::{NodeId, Pid, ProcState};
use futures::channel::oneshot;
use ssi_deputy::abi::wait;
use ssi_deputy::{DefaultAction, Delivery, Signal};
use std::sync::Arc;
use std::time::Duration;

/// The home's side of one process, on its session's thread: it follows the
/// body wherever it runs and acts on signals and migrations until the end.
pub(crate) struct ProcessTask {
    pub(crate) core: Arc<NodeCore>,
    pub(crate) pid: Pid,
    pub(crate) source: Source,
    pub(crate) interrupter: Interrupter,
    /// The console is its session's own (not a parent's it shares).
    pub(crate) own_console: bool,
    pub(crate) notice: Arc<Notice>,
    /// The deputy's signal dispositions, mask and pending set.
    pub(crate) signals: Arc<ssi_deputy::Signals>,
    /// Connections to the nodes its body moved to, kept while it lives.
    pub(crate) links:
        std::cell::RefCell<std::collections::HashMap<NodeId, std::rc::Rc<crate::rpc::Connection>>>,
}

impl ProcessTask {
    pub(crate) async fn run(self, first: Running, mut orders: Orders) -> ExitReport {
        let mut running = first;
        // The signal that ended the process, if one did.
        let mut fatal: Option<Signal> = None;
        // It was checkpointed and stopped.
        let mut checkpointed = false;
        // Stopped (SIGSTOP, SIGTSTP…): the body is frozen, held until SIGCONT.
        let mut stopped: Option<Held> = None;
        // A signal that ends the process, sent while it was stopped: it takes
        // effect when the process continues (SIGKILL at once), as in POSIX.
        let mut pending: Option<Signal> = None;
        let report = loop {
            // (The future left over is dropped here: it borrows both.)
            let next = {
                let order = std::pin::pin!(orders.recv());
                match futures::future::select(&mut running.end, order).await {
                    futures::future::Either::Left((report, _)) => Err(Some(report)),
                    futures::future::Either::Right((Some(order), _)) => Ok(order),
                    futures::future::Either::Right((None, _)) => Err(None),
                }
            };
            let order = match next {
                Ok(order) => order,
                Err(Some(report)) => break report,
                Err(None) => break (&mut running.end).await,
            };
            // Ends the process: a frozen body is let go on to be killed.
            let end =
                |sig: Option<Signal>, fatal: &mut Option<Signal>, stopped: &mut Option<Held>| {
                    if let Some(sig) = sig {
                        tracing::debug!(pid = self.pid, signal = %sig, "ending the process");
                        fatal.get_or_insert(sig);
                    }
                    self.end_waits();
                    running.place.stop();
                    if let Some(held) = stopped.take() {
                        held.decide(Verdict::Resume);
                    }
                };
            match order {
                // A signal the process handles runs its handler in the body
                // (a stopped body runs it once continued); one it blocks
                // waits; the others take their default action here.
                // (`_acted` is dropped, telling the asker, once it is done.)
                Order::Signal(sig, _acted) => match self.signals.deliver(sig) {
                    // SIGCONT continues a stopped process whatever its
                    // disposition (POSIX): handled, ignored or blocked, it
                    // goes on, and a handler runs then.
                    _ if sig == Signal::CONT && stopped.is_some() => {
                        if let Some(held) = stopped.take() {
                            self.set_state(ProcState::Running, None);
                            held.decide(Verdict::Resume);
                            self.core.child_changed(self.pid, wait::CONTINUED);
                            self.note("continued", "continued (SIGCONT)".into());
                            if let Some(sig) = pending.take() {
                                end(Some(sig), &mut fatal, &mut stopped);
                            } else if self.signals.deliverable() {
                                self.post_signals(&running);
                            }
                        }
                    }
                    Delivery::Held | Delivery::Ignored => {}
                    Delivery::Handle => {
                        if stopped.is_none() && fatal.is_none() {
                            self.post_signals(&running);
                        }
                    }
                    Delivery::Default(action) => match action {
                        DefaultAction::Terminate if fatal.is_some() => {}
                        DefaultAction::Terminate if stopped.is_some() && sig != Signal::KILL => {
                            pending.get_or_insert(sig);
                        }
                        DefaultAction::Terminate => end(Some(sig), &mut fatal, &mut stopped),
                        DefaultAction::Stop if stopped.is_none() && fatal.is_none() => {
                            match self.freeze(&running, ProcState::Stopped).await {
                                Ok(held) => {
                                    stopped = Some(held);
                                    self.core
                                        .child_changed(self.pid, wait::stopped(sig.number()));
                                    self.note("stopped", format!("stopped ({sig})"));
                                }
                                Err(e) => {
                                    tracing::warn!(pid = self.pid, signal = %sig, "cannot stop: {e}")
                                }
                            }
                        }
                        // A running process: nothing to continue.
                        DefaultAction::Continue | DefaultAction::Stop | DefaultAction::Ignore => {}
                    },
                },
                Order::Abandon => end(None, &mut fatal, &mut stopped),
                Order::Pin(pinned) => running.place.pin(pinned),
                Order::Migrate { reply, .. } if stopped.is_some() => {
                    let _ = reply.send(Err(self.is_stopped()));
                }
                Order::Checkpoint { reply, .. } if stopped.is_some() => {
                    let _ = reply.send(Err(self.is_stopped()));
                }
                Order::Migrate {
                    to,
                    sender_load,
                    sending,
                    reply,
                } => {
                    let r = self.migrate(&mut running, to, sender_load, sending).await;
                    let _ = reply.send(r);
                }
                Order::Checkpoint { stop, reply } => {
                    checkpointed |= self.checkpoint(&running, stop, reply).await;
                }
            }
        };
        // Orders given as it ended (sent before the end was seen, or since)
        // are answered that it ended: their replies are dropped. Closed
        // first, so none can come after the last is taken.
        orders.close();
        while orders.try_recv().is_ok() {}
        match fatal {
            _ if checkpointed => ExitReport::Checkpointed,
            Some(sig) => ExitReport::Signaled(sig.number()),
            None => report,
        }
    }

    /// Signals are pending for the body's handlers: the body is told, and a
    /// read or a `waitpid` it waits in is cut short for them to run.
    pub(crate) fn post_signals(&self, running: &Running) {
        running.place.signal();
        self.interrupter.interrupt();
        self.notice.cut();
    }

    /// The process is ending: a read of its console or a `waitpid` it is
    /// blocked in returns. A child shares its session's console, which goes
    /// on serving the others: only the read waiting now is cut.
    pub(crate) fn end_waits(&self) {
        if self.own_console {
            self.interrupter.end();
        } else {
            self.interrupter.interrupt();
        }
        self.notice.cut();
    }

    pub(crate) fn is_stopped(&self) -> String {
        format!(
            "process {} is stopped: continue it first (ssictl kill -CONT {})",
            self.pid, self.pid
        )
    }

    /// Records an event of this process, where its body is.
    pub(crate) fn note(&self, kind: &str, what: String) {
        let node = self
            .core
            .procs
            .get(&self.pid)
            .map_or(self.core.id, |p| p.info.node);
        self.core.record(
            crate::events::Event::new(kind, node, format!("process {} {what}", self.pid))
                .of(self.pid),
        );
    }

    /// Shows `state`, and with `node`, that the body moved there.
    pub(crate) fn set_state(&self, state: ProcState, node: Option<NodeId>) {
        if let Some(mut p) = self.core.procs.get_mut(&self.pid) {
            p.info.state = state;
            if let Some(n) = node {
                p.info.node = n;
                p.info.moves += 1;
            }
        }
    }

    /// Freezes the body where it runs, showing `state` meanwhile: the body
    /// held frozen. A failure leaves it running.
    pub(crate) async fn freeze(&self, running: &Running, state: ProcState) -> Result<Held, String> {
        if let Some(why) = &self.source.program.not_freezable {
            return Err(why.clone());
        }
        self.set_state(state, None);
        // A body waiting in a read at its deputy is freed by cutting the read
        // short; the read is made again where the body resumes. Until the body
        // is frozen, such a read may begin at any moment: keep cutting.
        let freeze = running.place.freeze();
        let poke = async {
            loop {
                self.interrupter.interrupt();
                self.notice.cut();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        futures::pin_mut!(freeze, poke);
        let frozen = futures::future::select(freeze, poke).await.factor_first().0;
        if frozen.is_err() {
            self.set_state(ProcState::Running, None);
        }
        frozen
    }
}

impl NodeCore {
    /// Gives a process's task an order and waits for its answer.
    pub(crate) async fn order<T>(
        &self,
        pid: Pid,
        doing: &str,
        order: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Order,
    ) -> Result<T, capnp::Error> {
        if self.loading.contains_key(&pid) {
            return Err(failed(format!(
                "process {pid} is still loading its module: it runs, and can be moved or checkpointed, once it is loaded"
            )));
        }
        let orders = self
            .procs
            .get(&pid)
            .map(|p| p.orders.clone())
            .ok_or_else(|| failed(format!("no process {pid}")))?;
        let (reply, answer) = oneshot::channel();
        orders
            .send(order(reply))
            .map_err(|_| failed(format!("process {pid} is ending")))?;
        answer
            .await
            .map_err(|_| failed(format!("process {pid} ended while it {doing}")))?
            .map_err(failed)
    }
}
