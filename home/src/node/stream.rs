//! The image connection, sending side: a frozen body's image streamed straight
//! from its memory to the node that will run it, on a TCP connection of its own
//! that starts with `IMAGE_PREAMBLE` and the `Ticket` under which that node
//! expects it (the receiving side is `transfer.rs`).
//!
//! ```text
//!  "ssi-img1" | ticket (16 bytes) | ghost image (remote::ghost format)…
//! ```
//!
//! A moved body's image carries the compiled rewind copies its stack needs
//! that were long to make here (`Body::write_move_image`): the node it
//! goes to takes them rather than compiling them again.
//!
//! Must not know: the process table, Cap'n Proto.

use crate::rpc::CONNECT_TIMEOUT;
use ssi_remote::{Body, ImageStats};
use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The first bytes of a connection that carries a body's image.
pub(crate) const IMAGE_PREAMBLE: &[u8; 8] = b"ssi-img1";

/// Names an expected body on its image connection.
pub(crate) type Ticket = [u8; 16];

/// Buffers of an image connection: small headers are gathered, pages go
/// through whole.
pub(crate) const STREAM_BUFFER: usize = 256 * 1024;

/// How long an image may take to come, or its connection stay silent,
/// before the image counts as lost.
pub(crate) const IMAGE_SILENCE: Duration = Duration::from_secs(30);

/// A body this node expects: its thread waits for the image connection.
pub(crate) struct Expected {
    pub(crate) stream: flume::Sender<TcpStream>,
}

pub(crate) fn open_image_connection(address: &str, ticket: &Ticket) -> Result<TcpStream, String> {
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IMAGE_SILENCE));
    let mut head = [0u8; 24];
    head[..8].copy_from_slice(IMAGE_PREAMBLE);
    head[8..].copy_from_slice(ticket);
    stream
        .write_all(&head)
        .map_err(|e| format!("cannot send to {address}: {e}"))?;
    Ok(stream)
}

/// How far an image's sending is: bytes sent, of about `total` (the
/// body's memory), updated by the body's thread as it writes.
#[derive(Debug, Default)]
pub(crate) struct Sending {
    pub(crate) done: AtomicU64,
    pub(crate) total: AtomicU64,
}

/// A writer that counts what goes through it into a [`Sending`].
struct Counting<W> {
    inner: W,
    sending: Arc<Sending>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sending.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Streams a frozen body's image to the node at `address`, which expects it
/// under `ticket`: its pages straight from the body's memory; `sending`
/// follows how far it is.
pub(crate) fn send_body(
    body: &mut Body,
    address: &str,
    ticket: &Ticket,
    sending: Arc<Sending>,
) -> Result<ImageStats, String> {
    let stream = open_image_connection(address, ticket)?;
    sending.total.store(
        body.memory_gauge().load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let out = Counting {
        inner: BufWriter::with_capacity(STREAM_BUFFER, stream),
        sending,
    };
    let (out, stats) = body
        .write_move_image(out)
        .map_err(|e| format!("cannot send the image to {address}: {e}"))?;
    drop(out);
    Ok(stats)
}

/// Streams an image held whole (a checkpoint restarting on another node).
pub(crate) fn send_bytes(image: &[u8], address: &str, ticket: &Ticket) -> Result<(), String> {
    let mut stream = open_image_connection(address, ticket)?;
    stream
        .write_all(image)
        .map_err(|e| format!("cannot send the image to {address}: {e}"))
}
