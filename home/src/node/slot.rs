//! A body hosted on this node, as the node's other threads see it: `BodySlot`
//! lets a body be killed before, while and after it is set up, and frozen while
//! it runs; once frozen, its thread follows `FrozenOrder`s (write the image,
//! stream it to another node) until a `Verdict` (resume, release, kill).
//!
//! Owns the per-body control state; the body's thread itself is `host.rs`'s.
//! Must not know: process tables, sessions, Cap'n Proto.

use super::common::lock;
use super::stream::{Ticket, send_body};
use ssi_remote::{Body, Control, ImageStats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A body running on this node (whatever its home).
pub(crate) struct HostedBody {
    pub(crate) slot: Arc<BodySlot>,
    pub(crate) memory: Arc<AtomicU64>,
    pub(crate) cpu: ssi_remote::CpuMeter,
    /// Calls it has sent its deputy.
    pub(crate) calls: Arc<AtomicU64>,
    /// When it started or arrived here (a move's residency counts from it).
    pub(crate) since: std::time::Instant,
}

/// Lets a body be killed before, while and after it is set up, and frozen
/// while it runs.
#[derive(Default)]
pub(crate) struct BodySlot {
    pub(crate) killed: AtomicBool,
    /// The body's thread is done with it.
    pub(crate) ended: AtomicBool,
    pub(crate) control: Mutex<Option<Control>>,
    /// Its home pinned it: the balancer leaves it here.
    pub(crate) pinned: AtomicBool,
    /// Why the body cannot be frozen, if it cannot.
    pub(crate) not_freezable: Mutex<Option<String>>,
    /// Where the image goes once the body is frozen.
    pub(crate) freezer: Mutex<Option<flume::Sender<Result<FrozenBody, String>>>>,
}

/// A frozen body: where to tell its thread what to do with it.
pub(crate) struct FrozenBody {
    pub(crate) orders: flume::Sender<FrozenOrder>,
}

/// What a frozen body's thread is asked to do.
pub(crate) enum FrozenOrder {
    /// Write the body's image, whole (for a checkpoint).
    Image(flume::Sender<Result<(Vec<u8>, ImageStats), String>>),
    /// Stream the body's image to the node at this address, which expects
    /// it under this ticket (a migration).
    SendTo {
        address: String,
        ticket: Ticket,
        sending: std::sync::Arc<super::stream::Sending>,
        reply: flume::Sender<Result<ImageStats, String>>,
    },
    /// What becomes of the body.
    Verdict(Verdict),
}

/// What becomes of a frozen body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It goes on where it was.
    Resume,
    /// It is dropped: it runs elsewhere now.
    Release,
    /// It is killed.
    Kill,
}

impl BodySlot {
    /// Its body waits for the code it needs to go on (`ps` shows it
    /// resuming).
    pub(crate) fn waits_for_code(&self) -> bool {
        lock(&self.control)
            .as_ref()
            .is_some_and(|c| c.waiting_for_code())
    }

    /// Signals are pending for the body's handlers.
    pub(crate) fn signal(&self) {
        if let Some(c) = lock(&self.control).as_ref() {
            c.signal();
        }
    }

    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        if let Some(c) = lock(&self.control).as_ref() {
            c.kill();
        }
    }

    /// Asks the body to freeze; its image arrives on the returned channel.
    pub(crate) fn freeze(&self) -> Result<flume::Receiver<Result<FrozenBody, String>>, String> {
        let control = lock(&self.control)
            .clone()
            .ok_or_else(|| "the body has not started".to_string())?;
        if !control.freezable() {
            return Err(lock(&self.not_freezable)
                .clone()
                .unwrap_or_else(|| "the body cannot be frozen".into()));
        }
        let (tx, rx) = flume::bounded(1);
        *lock(&self.freezer) = Some(tx);
        // The body's thread takes the sender when it ends: if it already has,
        // nobody will.
        if self.ended.load(Ordering::SeqCst) {
            lock(&self.freezer).take();
            return Err("the body has ended".into());
        }
        control.freeze();
        Ok(rx)
    }

    /// Waits for the next order on a frozen body (a kill counts as its
    /// verdict; no one left to give orders, as `orphaned`).
    pub(crate) fn order(
        &self,
        rx: &flume::Receiver<FrozenOrder>,
        orphaned: Verdict,
    ) -> FrozenOrder {
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(o) => return o,
                Err(flume::RecvTimeoutError::Timeout) => {
                    if self.killed.load(Ordering::SeqCst) {
                        return FrozenOrder::Verdict(Verdict::Kill);
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return FrozenOrder::Verdict(orphaned);
                }
            }
        }
    }

    /// Follows the orders on a frozen body until its verdict.
    pub(crate) fn hold(
        &self,
        body: &mut Body,
        rx: &flume::Receiver<FrozenOrder>,
        orphaned: Verdict,
    ) -> Verdict {
        loop {
            match self.order(rx, orphaned) {
                FrozenOrder::Image(reply) => {
                    let image = body
                        .write_image(Vec::new(), true)
                        .map_err(|e| e.to_string());
                    let _ = reply.send(image);
                }
                FrozenOrder::SendTo {
                    address,
                    ticket,
                    sending,
                    reply,
                } => {
                    let _ = reply.send(send_body(body, &address, &ticket, sending));
                }
                FrozenOrder::Verdict(v) => return v,
            }
        }
    }
}
