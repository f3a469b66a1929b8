//! `ImageSink`, a capability that receives a ghost image in chunks: into a
//! buffer of the caller's (a checkpoint written by a remote body's node) or
//! staged on this node under an id (`Gateway.stage`, before a restore); and
//! `send_image`, the client side that streams an image into a sink.
//!
//! Owns the staged images' arrival; refuses an image larger than any Wasm32 body.

use super::state::NodeCore;
use crate::wire::failed;
use capnp::capability::Rc as CapRc;
use std::future::{Future, ready};
use std::sync::Arc;

/// Largest chunk of a ghost image in one message.
pub(crate) const IMAGE_CHUNK: usize = 4 << 20;

/// Streams a ghost image into `sink`, chunk by chunk, and closes it.
pub(crate) async fn send_image(
    sink: &ssi_schema::image_sink::Client,
    image: &[u8],
) -> Result<(), capnp::Error> {
    for chunk in image.chunks(IMAGE_CHUNK) {
        let mut w = sink.write_request();
        w.get().set_chunk(chunk);
        w.send().await?;
    }
    sink.done_request().send().promise.await?;
    Ok(())
}

/// Receives a ghost image: into a buffer of the caller's, or staged on this
/// node under an id (`Peer.stage`).
pub(crate) struct ImageSinkServer {
    pub(crate) buffer: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
    pub(crate) staged: Option<(Arc<NodeCore>, u64)>,
}

impl ImageSinkServer {
    pub(crate) fn collecting(buffer: std::rc::Rc<std::cell::RefCell<Vec<u8>>>) -> Self {
        ImageSinkServer {
            buffer,
            staged: None,
        }
    }

    /// A sink that stages what it receives on this node, under a fresh id.
    pub(crate) fn staging(core: &Arc<NodeCore>) -> (u64, ssi_schema::image_sink::Client) {
        let id = loop {
            let id: u64 = rand::random();
            if id != 0 && !core.staged.contains_key(&id) {
                break id;
            }
        };
        let sink = capnp_rpc::new_client(ImageSinkServer {
            buffer: std::rc::Rc::new(std::cell::RefCell::new(Vec::new())),
            staged: Some((core.clone(), id)),
        });
        (id, sink)
    }
}

impl ssi_schema::image_sink::Server for ImageSinkServer {
    async fn write(
        self: CapRc<Self>,
        params: ssi_schema::image_sink::WriteParams,
    ) -> Result<(), capnp::Error> {
        let chunk = params.get()?.get_chunk()?;
        let mut buffer = self.buffer.borrow_mut();
        if buffer.len() + chunk.len() > MAX_IMAGE {
            return Err(failed("the image is larger than any Wasm32 body"));
        }
        buffer.extend_from_slice(chunk);
        Ok(())
    }

    fn done(
        self: CapRc<Self>,
        _: ssi_schema::image_sink::DoneParams,
        _: ssi_schema::image_sink::DoneResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        if let Some((core, id)) = &self.staged {
            core.staged.insert(*id, self.buffer.take());
        }
        ready(Ok(()))
    }

    fn size(
        self: CapRc<Self>,
        params: ssi_schema::image_sink::SizeParams,
        _: ssi_schema::image_sink::SizeResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = params.get().and_then(|p| {
            let bytes = usize::try_from(p.get_bytes()).unwrap_or(usize::MAX);
            if bytes > MAX_IMAGE {
                return Err(failed("the image is larger than any Wasm32 body"));
            }
            self.buffer.borrow_mut().reserve(bytes);
            Ok(())
        });
        ready(r)
    }
}

/// No image is larger: 4 GiB of memory, and a little more.
pub(crate) const MAX_IMAGE: usize = (4 << 30) + (64 << 20);
