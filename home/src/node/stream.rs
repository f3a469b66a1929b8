//! The image connection, sending side: a frozen body's image streamed straight
//! from its memory to the node that will run it, on a TCP connection of its own
//! that starts with `IMAGE_PREAMBLE` and the `Ticket` under which that node
//! expects it (the receiving side is `transfer.rs`).
//!
//! ```text
//!  "ssi-img1" | ticket (16 bytes) | ghost image (remote::ghost format)…
//! ```
//!
//! Must not know: the process table, Cap'n Proto.

use crate::rpc::CONNECT_TIMEOUT;
use ssi_remote::{Body, ImageStats};
use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
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

/// Streams a frozen body's image to the node at `address`, which expects it
/// under `ticket`: its pages straight from the body's memory.
pub(crate) fn send_body(
    body: &mut Body,
    address: &str,
    ticket: &Ticket,
) -> Result<ImageStats, String> {
    let stream = open_image_connection(address, ticket)?;
    let out = BufWriter::with_capacity(STREAM_BUFFER, stream);
    let (out, stats) = body
        .write_image(out, false)
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
