//! What a process's home is asked to do with it (`Order`: a signal, a
//! move, a checkpoint, the end of its session), handed to its task
//! (`task.rs`) over a channel, and `Checkpoint`, what a checkpoint order
//! answers: the sealed image and its report, held until the asker says it is
//! safe where it went.
//!
//! Plain values: no service, no I/O.

use crate::NodeId;
use crate::reports::{CheckpointReport, MigrationReport};
use futures::channel::oneshot;
use ssi_deputy::Signal;

/// Where a process's orders come from, to its task. Tokio's channel: its
/// receiver can be closed and drained, so an order sent as the process
/// ends is answered (dropped) rather than kept unanswered in the channel.
pub(crate) type Orders = tokio::sync::mpsc::UnboundedReceiver<Order>;
/// Where a process's orders go.
pub(crate) type OrderSender = tokio::sync::mpsc::UnboundedSender<Order>;

/// What a process's home is asked to do with it.
pub(crate) enum Order {
    /// A signal. The sender is dropped once the task has acted on it — for
    /// a stop, once the body is frozen — so an asker may wait for that.
    Signal(Signal, Option<oneshot::Sender<()>>),
    /// Its session went away.
    Abandon,
    /// It is pinned (or unpinned): the node its body runs on is told.
    Pin(bool),
    Migrate {
        to: NodeId,
        /// For a balancer's move: the load of the node that decided it.
        sender_load: Option<f64>,
        /// Told how far the image's sending is, for a watcher.
        sending: Option<std::sync::Arc<super::stream::Sending>>,
        reply: oneshot::Sender<Result<MigrationReport, String>>,
    },
    Checkpoint {
        stop: bool,
        reply: oneshot::Sender<Result<Checkpoint, String>>,
    },
}

/// A checkpoint: the file's bytes, and what `ssictl checkpoint` reports.
pub struct Checkpoint {
    pub image: Vec<u8>,
    pub report: CheckpointReport,
    /// Told whether the image reached its destination (a process checkpointed
    /// to be stopped stays frozen until then, and goes on if it did not).
    pub(crate) done: Option<oneshot::Sender<bool>>,
}

impl Checkpoint {
    /// Says whether the image is safe where it went.
    pub fn delivered(&mut self, safe: bool) {
        if let Some(done) = self.done.take() {
            let _ = done.send(safe);
        }
    }
}

impl Drop for Checkpoint {
    /// Never said: not delivered.
    fn drop(&mut self) {
        self.delivered(false);
    }
}
