//! A process's body as its home holds it: what it is made of (`Source`:
//! module, command line, deputy), where it runs and how to reach it
//! (`Placement`: a slot on this node or a `BodyControl` on a peer), its end
//! (`Running`), and a frozen body held where it was (`Held`) until it is
//! resumed or released.
//!
//! Must not know: orders, sessions, the process table.

use super::image_sink::ImageSinkServer;
use super::slot::{BodySlot, FrozenOrder, Verdict};
use super::stream::{Sending, Ticket};
use crate::NodeId;
use crate::wire::ExitReport;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use ssi_remote::{BodySpec, ImageStats, Program, SharedDeputy};
use ssi_schema::{body_control, progress};
use std::sync::Arc;

/// What a process's body is made of, to start it anywhere.
pub(crate) struct Source {
    pub(crate) program: Program,
    /// The module as launched, for nodes that do not hold it.
    pub(crate) wasm: bytes::Bytes,
    pub(crate) spec: BodySpec,
    pub(crate) deputy: SharedDeputy,
}

/// A body running somewhere, and the report of its end.
pub(crate) struct Running {
    pub(crate) place: Placement,
    pub(crate) end: LocalBoxFuture<'static, ExitReport>,
}

/// Where a process's body runs, and how to reach it.
pub(crate) enum Placement {
    Local(Arc<BodySlot>),
    Remote {
        node: NodeId,
        control: body_control::Client,
    },
}

/// A frozen body, held where it was until it is released or resumed.
pub(crate) enum Held {
    Local(flume::Sender<FrozenOrder>),
    Remote(body_control::Client),
}

impl Held {
    pub(crate) fn decide(self, verdict: Verdict) {
        match self {
            Held::Local(tx) => {
                let _ = tx.send(FrozenOrder::Verdict(verdict));
            }
            Held::Remote(control) => {
                let call = match verdict {
                    Verdict::Release => control
                        .release_request()
                        .send()
                        .promise
                        .map(|_| ())
                        .boxed_local(),
                    Verdict::Resume | Verdict::Kill => control
                        .resume_request()
                        .send()
                        .promise
                        .map(|_| ())
                        .boxed_local(),
                };
                tokio::task::spawn_local(call);
            }
        }
    }

    /// Lets the body go on, and returns once the node that holds it has
    /// done so: for a body on another node, when that node answers.
    pub(crate) async fn resume(self) -> Result<(), String> {
        match self {
            Held::Local(tx) => tx
                .send(FrozenOrder::Verdict(Verdict::Resume))
                .map_err(|_| "the body's thread went away".to_string()),
            Held::Remote(control) => control
                .resume_request()
                .send()
                .promise
                .await
                .map(|_| ())
                .map_err(|e| crate::rpc::remote_message(&e)),
        }
    }

    /// The frozen body's image, whole.
    pub(crate) async fn image(&self) -> Result<(Vec<u8>, ImageStats), String> {
        let gone = "the body's thread went away";
        match self {
            Held::Local(orders) => {
                let (reply, image) = flume::bounded(1);
                orders
                    .send(FrozenOrder::Image(reply))
                    .map_err(|_| gone.to_string())?;
                image.recv_async().await.map_err(|_| gone.to_string())?
            }
            Held::Remote(control) => {
                let image = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                let sink: ssi_schema::image_sink::Client =
                    capnp_rpc::new_client(ImageSinkServer::collecting(image.clone()));
                let mut req = control.image_request();
                req.get().set_sink(sink);
                let reply = req
                    .send()
                    .promise
                    .await
                    .map_err(|e| format!("its node could not write its image: {}", e.extra))?;
                let reply = reply.get().map_err(|e| e.to_string())?;
                let stats = ImageStats {
                    bytes: reply.get_bytes(),
                    memory: reply.get_memory(),
                };
                Ok((image.take(), stats))
            }
        }
    }

    /// Streams the frozen body's image to the node at `address`, which
    /// expects it under `ticket`.
    pub(crate) async fn send_to(
        &self,
        address: &str,
        ticket: Ticket,
        sending: Option<Arc<Sending>>,
    ) -> Result<ImageStats, String> {
        let gone = "the body's thread went away";
        match self {
            Held::Local(orders) => {
                let (reply, sent) = flume::bounded(1);
                orders
                    .send(FrozenOrder::SendTo {
                        address: address.to_string(),
                        ticket,
                        sending: sending.unwrap_or_default(),
                        reply,
                    })
                    .map_err(|_| gone.to_string())?;
                sent.recv_async().await.map_err(|_| gone.to_string())?
            }
            Held::Remote(control) => {
                let mut req = control.send_to_request();
                req.get().set_address(address);
                req.get().set_ticket(&ticket);
                // The body's node tells how far it is; the watcher here reads it.
                if let Some(s) = sending {
                    req.get()
                        .set_progress(capnp_rpc::new_client(SendingServer(s)));
                }
                let reply = req
                    .send()
                    .promise
                    .await
                    .map_err(|e| crate::rpc::remote_message(&e))?;
                let reply = reply.get().map_err(|e| e.to_string())?;
                Ok(ImageStats {
                    bytes: reply.get_bytes(),
                    memory: reply.get_memory(),
                })
            }
        }
    }
}

impl Placement {
    pub(crate) fn node(&self, home: NodeId) -> NodeId {
        match self {
            Placement::Local(_) => home,
            Placement::Remote { node, .. } => *node,
        }
    }

    /// Tells the body that signals are pending for its handlers.
    pub(crate) fn signal(&self) {
        match self {
            Placement::Local(slot) => slot.signal(),
            Placement::Remote { control, .. } => {
                tokio::task::spawn_local(control.signal_request().send().promise.map(|_| ()));
            }
        }
    }

    /// Tells the node the body runs on whether it is pinned.
    pub(crate) fn pin(&self, pinned: bool) {
        match self {
            Placement::Local(slot) => slot
                .pinned
                .store(pinned, std::sync::atomic::Ordering::SeqCst),
            Placement::Remote { control, .. } => {
                let mut req = control.pin_request();
                req.get().set_pinned(pinned);
                tokio::task::spawn_local(req.send().promise.map(|_| ()));
            }
        }
    }

    pub(crate) fn stop(&self) {
        match self {
            Placement::Local(slot) => slot.kill(),
            Placement::Remote { control, .. } => {
                tokio::task::spawn_local(control.kill_request().send().promise.map(|_| ()));
            }
        }
    }

    /// Freezes the body, held frozen where it is.
    pub(crate) async fn freeze(&self) -> Result<Held, String> {
        match self {
            Placement::Local(slot) => {
                let frozen = slot.freeze()?;
                let body = frozen
                    .recv_async()
                    .await
                    .map_err(|_| "the body's thread went away".to_string())??;
                Ok(Held::Local(body.orders))
            }
            Placement::Remote { node, control } => {
                control
                    .freeze_request()
                    .send()
                    .promise
                    .await
                    .map_err(|e| format!("node {node} could not freeze the body: {}", e.extra))?;
                Ok(Held::Remote(control.clone()))
            }
        }
    }
}

/// A `Progress` that keeps what it is told in a [`Sending`].
pub(crate) struct SendingServer(pub(crate) Arc<Sending>);

impl progress::Server for SendingServer {
    fn update(
        self: capnp::capability::Rc<Self>,
        params: progress::UpdateParams,
        _: progress::UpdateResults,
    ) -> impl std::future::Future<Output = Result<(), capnp::Error>> + 'static {
        let r = params.get().map(|p| {
            let ordering = std::sync::atomic::Ordering::Relaxed;
            self.0.done.store(p.get_done(), ordering);
            self.0.total.store(p.get_total(), ordering);
        });
        std::future::ready(r)
    }
}

/// Tells `progress` how far `sending` is every 100 ms until `work` ends,
/// and once more then; `work`'s result.
pub(crate) async fn reporting<T>(
    work: impl std::future::Future<Output = T>,
    sending: &Sending,
    progress: &progress::Client,
) -> T {
    let tell = || {
        let ordering = std::sync::atomic::Ordering::Relaxed;
        let mut req = progress.update_request();
        req.get().set_done(sending.done.load(ordering));
        req.get().set_total(sending.total.load(ordering));
        req.send().promise
    };
    futures::pin_mut!(work);
    let result = loop {
        let tick = tokio::time::sleep(std::time::Duration::from_millis(100));
        futures::pin_mut!(tick);
        match futures::future::select(&mut work, tick).await {
            futures::future::Either::Left((r, _)) => break r,
            // A watcher that went away does not stop the work.
            futures::future::Either::Right(_) => {
                let _ = tell().await;
            }
        }
    };
    let _ = tell().await;
    result
}

/// Has the body's thread send its frozen body's image, telling `progress`
/// how far it is every 100 ms, and once more at the end.
pub(crate) async fn send_local(
    orders: &flume::Sender<FrozenOrder>,
    address: &str,
    ticket: Ticket,
    progress: Option<progress::Client>,
) -> Result<ImageStats, String> {
    let gone = "the body's thread went away";
    let sending = Arc::new(Sending::default());
    let (reply, sent) = flume::bounded(1);
    orders
        .send(FrozenOrder::SendTo {
            address: address.to_string(),
            ticket,
            sending: sending.clone(),
            reply,
        })
        .map_err(|_| gone.to_string())?;
    let waiting = sent.recv_async();
    let result = match &progress {
        Some(p) => reporting(waiting, &sending, p).await,
        None => waiting.await,
    };
    result.map_err(|_| gone.to_string())?
}
