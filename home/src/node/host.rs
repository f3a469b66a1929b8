//! Running bodies on this node: each body on a thread of its own
//! (`NodeCore::spawn_body`), which makes it there (`MakeBody`: a network link's
//! connection lives on that thread), runs it, and when it is frozen holds it
//! for orders until its verdict (`NodeCore::run_body`).
//!
//! Owns the thread of each hosted body and its entry in `NodeCore::bodies`.
//! Must not know: whose process it is beyond its pid, sessions, Cap'n Proto.

use super::common::lock;
use super::slot::{BodySlot, FrozenBody, FrozenOrder, HostedBody, Verdict};
use super::state::NodeCore;
use crate::Pid;
use crate::wire::ExitReport;
use futures::channel::oneshot;
use ssi_remote::{Body, Exit, Program, Runtime};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl NodeCore {
    /// Starts a body on a thread of its own, made there by `make` (a
    /// network link's connection lives on that thread). `started` says when
    /// the body runs, or why it could not start; the report arrives when it
    /// ends.
    #[allow(clippy::type_complexity)]
    pub(crate) fn spawn_body(
        self: &Arc<Self>,
        pid: Pid,
        program: Program,
        make: MakeBody,
    ) -> Result<
        (
            Arc<BodySlot>,
            oneshot::Receiver<Result<(), String>>,
            impl Future<Output = ExitReport> + 'static + use<>,
        ),
        std::io::Error,
    > {
        let slot = Arc::new(BodySlot::default());
        let (tx, rx) = oneshot::channel();
        let (started_tx, started) = oneshot::channel();
        let core = self.clone();
        let thread_slot = slot.clone();
        std::thread::Builder::new()
            .name(format!("body-{pid}"))
            .stack_size(ssi_remote::BODY_THREAD_STACK)
            .spawn(move || {
                let report = core.run_body(pid, &program, make, &thread_slot, started_tx, None);
                let _ = tx.send(report);
            })?;
        let end = async move {
            rx.await.unwrap_or_else(|_| {
                ExitReport::Failed(vec!["the body's thread ended without a report".into()])
            })
        };
        Ok((slot, started, end))
    }

    /// Makes a body and runs it on this thread until it ends or moves. With
    /// `held`, a body restored from an image is held until it is told to go
    /// on (orders for it go out there): a migration's destination waits for
    /// the source to be dropped, so that a body never runs twice.
    pub(crate) fn run_body(
        &self,
        pid: Pid,
        program: &Program,
        make: MakeBody,
        slot: &Arc<BodySlot>,
        started: oneshot::Sender<Result<(), String>>,
        held: Option<oneshot::Sender<flume::Sender<FrozenOrder>>>,
    ) -> ExitReport {
        let mut body = match make(&self.runtime) {
            Ok(b) => b,
            Err(e) => {
                let _ = started.send(Err(e.clone()));
                return ExitReport::Failed(vec![e]);
            }
        };
        *lock(&slot.not_freezable) = program.not_freezable.clone();
        *lock(&slot.control) = Some(body.control());
        if slot.killed.load(Ordering::SeqCst) {
            let _ = started.send(Err("killed".into()));
            return ExitReport::Failed(vec!["killed".into()]);
        }
        self.bodies.insert(
            pid,
            HostedBody {
                slot: slot.clone(),
                memory: body.memory_gauge(),
                cpu: body.cpu_meter(),
                calls: body.call_counter(),
                since: std::time::Instant::now(),
            },
        );
        let _ = started.send(Ok(()));
        if let Some(held) = held {
            let (tx, rx) = flume::unbounded();
            let verdict = if held.send(tx).is_ok() {
                // No one to say it may go on: it does not.
                slot.hold(&mut body, &rx, Verdict::Kill)
            } else {
                Verdict::Kill
            };
            if verdict != Verdict::Resume {
                self.bodies.remove(&pid);
                slot.ended.store(true, Ordering::SeqCst);
                return ExitReport::Failed(vec!["it was not let go on".into()]);
            }
        }
        let report = loop {
            match body.run() {
                Exit::Frozen => {
                    let (tx, rx) = flume::unbounded();
                    let asked = lock(&slot.freezer).take();
                    let verdict = match asked {
                        Some(f) if f.send(Ok(FrozenBody { orders: tx })).is_ok() => {
                            slot.hold(&mut body, &rx, Verdict::Resume)
                        }
                        _ => Verdict::Resume,
                    };
                    match verdict {
                        Verdict::Resume => {
                            if let Err(e) = body.resume() {
                                break ExitReport::Failed(vec![e.to_string()]);
                            }
                        }
                        Verdict::Release => break ExitReport::Moved,
                        Verdict::Kill => break ExitReport::Failed(vec!["killed".into()]),
                    }
                }
                exit => {
                    if let Some(f) = lock(&slot.freezer).take() {
                        let _ = f.send(Err("the process ended before it froze".into()));
                    }
                    break ExitReport::from_exit(&exit);
                }
            }
        };
        self.bodies.remove(&pid);
        slot.ended.store(true, Ordering::SeqCst);
        if let Some(f) = lock(&slot.freezer).take() {
            let _ = f.send(Err("the body has ended".into()));
        }
        report
    }
}

/// How a body is made, on the thread it runs on.
pub(crate) type MakeBody = Box<dyn FnOnce(&Runtime) -> Result<Body, String> + Send>;
