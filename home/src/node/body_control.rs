//! `BodyControl`, held by a process's home for a body it placed on this node:
//! wait for its end, kill it, tell it signals are pending, freeze it, and then
//! write its image, stream it to another node, resume or release it. Dropping
//! the capability kills the body (its home went away).
//!
//! Owns the frozen body's order channel while it is frozen.

use super::image_sink::send_image;
use super::placement::send_local;
use super::slot::{BodySlot, FrozenOrder, Verdict};
use super::stream::Ticket;
use crate::wire::{ExitReport, failed, text, write_exit};
use capnp::capability::Rc as CapRc;
use futures::FutureExt;
use futures::future::{LocalBoxFuture, Shared};
use ssi_schema::body_control;
use std::future::{Future, ready};
use std::sync::Arc;

pub(crate) struct BodyControlServer {
    pub(crate) slot: Arc<BodySlot>,
    pub(crate) exit: Shared<LocalBoxFuture<'static, ExitReport>>,
    /// Orders for the frozen body's thread, while it is frozen.
    pub(crate) held: std::cell::RefCell<Option<flume::Sender<FrozenOrder>>>,
}

impl BodyControlServer {
    /// For a body running on this node; `held`, if it waits for orders.
    pub(crate) fn new(
        slot: Arc<BodySlot>,
        exit: LocalBoxFuture<'static, ExitReport>,
        held: Option<flume::Sender<FrozenOrder>>,
    ) -> Self {
        BodyControlServer {
            slot,
            exit: exit.shared(),
            held: std::cell::RefCell::new(held),
        }
    }

    pub(crate) fn orders(&self) -> Result<flume::Sender<FrozenOrder>, capnp::Error> {
        self.held
            .borrow()
            .clone()
            .ok_or_else(|| failed("the body is not frozen"))
    }

    pub(crate) fn decide(&self, verdict: Verdict) -> Result<(), capnp::Error> {
        let held = self
            .held
            .borrow_mut()
            .take()
            .ok_or_else(|| failed("the body is not frozen"))?;
        let _ = held.send(FrozenOrder::Verdict(verdict));
        Ok(())
    }
}

impl body_control::Server for BodyControlServer {
    fn wait(
        self: CapRc<Self>,
        _: body_control::WaitParams,
        mut results: body_control::WaitResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let exit = self.exit.clone();
        async move {
            let report = exit.await;
            write_exit(results.get().init_exit(), &report);
            Ok(())
        }
    }

    fn kill(
        self: CapRc<Self>,
        _: body_control::KillParams,
        _: body_control::KillResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        self.slot.kill();
        ready(Ok(()))
    }

    fn signal(
        self: CapRc<Self>,
        _: body_control::SignalParams,
        _: body_control::SignalResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        self.slot.signal();
        ready(Ok(()))
    }

    fn freeze(
        self: CapRc<Self>,
        _: body_control::FreezeParams,
        _: body_control::FreezeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = self.slot.freeze().map_err(failed);
        async move {
            let body = asked?
                .recv_async()
                .await
                .map_err(|_| failed("the body's thread went away"))?
                .map_err(failed)?;
            *self.held.borrow_mut() = Some(body.orders);
            Ok(())
        }
    }

    fn image(
        self: CapRc<Self>,
        params: body_control::ImageParams,
        mut results: body_control::ImageResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = params
            .get()
            .and_then(|p| p.get_sink())
            .and_then(|sink| Ok((sink, self.orders()?)));
        async move {
            let (sink, orders) = asked?;
            let (reply, image) = flume::bounded(1);
            orders
                .send(FrozenOrder::Image(reply))
                .map_err(|_| failed("the body's thread went away"))?;
            let (image, stats) = image
                .recv_async()
                .await
                .map_err(|_| failed("the body's thread went away"))?
                .map_err(failed)?;
            send_image(&sink, &image).await?;
            let mut r = results.get();
            r.set_bytes(stats.bytes);
            r.set_memory(stats.memory);
            Ok(())
        }
    }

    fn send_to(
        self: CapRc<Self>,
        params: body_control::SendToParams,
        mut results: body_control::SendToResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let asked = params.get().and_then(|p| {
            let address = text(p.get_address())?;
            let ticket: Ticket = p
                .get_ticket()?
                .try_into()
                .map_err(|_| failed("a ticket is 16 bytes"))?;
            let progress = if p.has_progress() {
                Some(p.get_progress()?)
            } else {
                None
            };
            Ok((address, ticket, progress, self.orders()?))
        });
        async move {
            let (address, ticket, progress, orders) = asked?;
            let stats = send_local(&orders, &address, ticket, progress)
                .await
                .map_err(failed)?;
            let mut r = results.get();
            r.set_bytes(stats.bytes);
            r.set_memory(stats.memory);
            Ok(())
        }
    }

    fn resume(
        self: CapRc<Self>,
        _: body_control::ResumeParams,
        _: body_control::ResumeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        ready(self.decide(Verdict::Resume))
    }

    fn pin(
        self: CapRc<Self>,
        params: body_control::PinParams,
        _: body_control::PinResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = params.get().map(|p| {
            self.slot
                .pinned
                .store(p.get_pinned(), std::sync::atomic::Ordering::SeqCst)
        });
        ready(r)
    }

    fn release(
        self: CapRc<Self>,
        _: body_control::ReleaseParams,
        _: body_control::ReleaseResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        ready(self.decide(Verdict::Release))
    }
}

impl Drop for BodyControlServer {
    /// The home let go of the body (it went away): the body cannot go on.
    fn drop(&mut self) {
        self.slot.kill();
    }
}
