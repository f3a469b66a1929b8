//! Cap'n Proto plumbing: endpoints, connections, and the network deputy link.
//!
//! Every connection is served by one thread running a single-threaded tokio
//! runtime (Cap'n Proto capabilities are not `Send`); state shared between
//! connections lives in [`crate::NodeCore`].

use crate::wire::{read_result, write_syscall};
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{RpcSystem, twoparty};
use futures::{AsyncReadExt, FutureExt};
use ssi_deputy::{Fd, Reply, Syscall, SyscallResult};
use ssi_remote::{DeputyLink, LinkError};
use ssi_schema::{deputy, gateway};
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

/// How long connecting to a node may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest message a connection accepts (module transfers are the big ones).
const MAX_MESSAGE_WORDS: usize = 1 << 27;

/// Where a node listens: TCP for peers and remote clients, a Unix socket for
/// local clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

impl Endpoint {
    /// `HOST:PORT` is TCP; anything with a `/` (or not of that form) is a socket path.
    pub fn parse(s: &str) -> Endpoint {
        let looks_tcp = !s.contains('/')
            && s.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if looks_tcp {
            Endpoint::Tcp(s.to_string())
        } else {
            Endpoint::Unix(PathBuf::from(s))
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => f.write_str(a),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why a node could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {endpoint}: {source}")]
    Io {
        endpoint: Endpoint,
        source: std::io::Error,
    },
    #[error("cannot connect to {0}: no answer within {CONNECT_TIMEOUT:?}")]
    Timeout(Endpoint),
}

fn reader_options() -> capnp::message::ReaderOptions {
    let mut o = capnp::message::ReaderOptions::new();
    o.traversal_limit_in_words(Some(MAX_MESSAGE_WORDS));
    o
}

/// Runs the Cap'n Proto protocol over a byte stream on the current `LocalSet`:
/// `bootstrap` is what this side offers; the returned gateway is what the other
/// side offers (when it offers one). The connection lives until the returned
/// future ends.
pub fn run_connection<S>(
    stream: S,
    side: Side,
    bootstrap: Option<capnp::capability::Client>,
) -> (
    gateway::Client,
    impl std::future::Future<Output = Result<(), capnp::Error>>,
)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (r, w) = stream.compat().split();
    let network = twoparty::VatNetwork::new(r, w, side, reader_options());
    let mut rpc = RpcSystem::new(Box::new(network), bootstrap);
    let other = if side == Side::Client {
        Side::Server
    } else {
        Side::Client
    };
    let gateway: gateway::Client = rpc.bootstrap(other);
    (gateway, rpc)
}

/// Connects to a node and returns its gateway. Must run inside a `LocalSet`: the
/// connection is driven by a local task that ends when it closes.
pub async fn connect(endpoint: &Endpoint) -> Result<gateway::Client, ConnectError> {
    let io = |source| ConnectError::Io {
        endpoint: endpoint.clone(),
        source,
    };
    let connecting = async {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
                s.set_nodelay(true).map_err(io)?;
                let (gateway, rpc) = run_connection(s, Side::Client, None);
                tokio::task::spawn_local(rpc.map(|_| ()));
                Ok(gateway)
            }
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(io)?;
                let (gateway, rpc) = run_connection(s, Side::Client, None);
                tokio::task::spawn_local(rpc.map(|_| ()));
                Ok(gateway)
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(endpoint.clone()))?
}

/// A single-threaded runtime for one connection or one body.
pub fn thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The network link of a body running away from home: a connection of its own
/// to the home node, on which it redeemed its deputy's sturdy reference.
///
/// The link drives its connection from the body's thread, only while the body
/// waits for a reply, so a call costs one round trip and no thread switch.
/// Writes to streams (the session's terminal or pipes) are pipelined: their
/// result is known in advance, so they are sent without waiting, in order, with
/// Cap'n Proto's flow control bounding what is in flight.
pub struct RpcLink {
    rt: tokio::runtime::Runtime,
    local: tokio::task::LocalSet,
    deputy: deputy::Client,
    streams: HashSet<Fd>,
    unsynced: bool,
    socket: Rc<SocketState>,
}

/// What the body's side of its connection has handed to the kernel.
#[derive(Default)]
struct SocketState {
    /// The last write or flush found the socket's buffer full.
    blocked: Cell<bool>,
    /// Bytes the kernel has accepted.
    sent: Cell<u64>,
}

/// The write half of a body's connection, watched so that the body knows when a
/// pipelined write has left the process: the connection is driven only while the
/// body is in a call, and the body may compute for a long time after a write.
struct WatchedWriter<W> {
    inner: W,
    state: Rc<SocketState>,
}

impl<W: futures::AsyncWrite + Unpin> futures::AsyncWrite for WatchedWriter<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.state.blocked.set(r.is_pending());
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.state.sent.set(self.state.sent.get() + *n as u64);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.state.blocked.set(r.is_pending());
        r
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The largest write sent in one message; larger writes to files are short
/// writes (the guest's libc writes the rest), larger writes to streams are split.
pub const MAX_WRITE: usize = 4 << 20;

fn lost(e: impl fmt::Display) -> LinkError {
    LinkError(e.to_string())
}

impl RpcLink {
    /// Connects to the home at `home` and redeems the deputy of `pid` with `secret`.
    pub fn connect(home: &str, pid: u32, secret: &[u8]) -> Result<Self, LinkError> {
        let rt = thread_runtime().map_err(lost)?;
        let local = tokio::task::LocalSet::new();
        let socket = Rc::new(SocketState::default());
        let watch = socket.clone();
        let (deputy, streams) = local.block_on(&rt, async {
            let stream =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(home))
                    .await
                    .map_err(|_| lost(format!("cannot connect to the home {home}: no answer")))?
                    .map_err(|e| lost(format!("cannot connect to the home {home}: {e}")))?;
            stream.set_nodelay(true).map_err(lost)?;
            let (r, w) = stream.into_split();
            let w = WatchedWriter {
                inner: w.compat_write(),
                state: watch,
            };
            let network = twoparty::VatNetwork::new(r.compat(), w, Side::Client, reader_options());
            let mut rpc = RpcSystem::new(Box::new(network), None);
            let gateway: gateway::Client = rpc.bootstrap(Side::Server);
            tokio::task::spawn_local(rpc.map(|_| ()));
            let peer = gateway.peer_request().send().pipeline.get_peer();
            let mut req = peer.attach_request();
            req.get().set_pid(pid);
            req.get().set_secret(secret);
            let reply = req.send().promise.await.map_err(lost)?;
            let reply = reply.get().map_err(lost)?;
            let deputy = reply.get_deputy().map_err(lost)?;
            let streams: HashSet<Fd> = reply.get_streams().map_err(lost)?.iter().collect();
            Ok::<_, LinkError>((deputy, streams))
        })?;
        Ok(RpcLink {
            rt,
            local,
            deputy,
            streams,
            unsynced: false,
            socket,
        })
    }

    /// Drives the connection until what was sent has been handed to the kernel
    /// (waiting while the socket is full: the home is slower than the body).
    fn push_out(&self) {
        let state = &self.socket;
        self.local.block_on(&self.rt, async {
            let mut idle_rounds = 0;
            loop {
                let before = state.sent.get();
                tokio::task::yield_now().await;
                if state.blocked.get() {
                    tokio::time::sleep(Duration::from_micros(20)).await;
                    idle_rounds = 0;
                } else if state.sent.get() == before {
                    idle_rounds += 1;
                    if idle_rounds >= 2 {
                        break;
                    }
                }
            }
        });
    }

    fn pipelined_write(&mut self, fd: Fd, data: &[u8]) -> Result<SyscallResult, LinkError> {
        for chunk in data.chunks(MAX_WRITE) {
            let mut req = self.deputy.write_request();
            req.get().set_fd(fd);
            req.get().set_data(chunk);
            // Resolves at once unless the flow-control window is full.
            self.local.block_on(&self.rt, req.send()).map_err(lost)?;
        }
        self.push_out();
        self.unsynced = true;
        Ok(Ok(Reply::Size(data.len() as u32)))
    }
}

impl DeputyLink for RpcLink {
    fn call(&mut self, mut call: Syscall) -> Result<SyscallResult, LinkError> {
        match &mut call {
            Syscall::FdWrite { fd, data } if self.streams.contains(fd) => {
                let (fd, data) = (*fd, std::mem::take(data));
                return self.pipelined_write(fd, &data);
            }
            Syscall::FdWrite { data, .. }
            | Syscall::FdPwrite { data, .. }
            | Syscall::SockSend { data, .. } => data.truncate(MAX_WRITE),
            // The descriptor may stop being the stream it was.
            Syscall::FdClose { fd } => {
                self.streams.remove(fd);
            }
            Syscall::FdRenumber { from, to } => {
                self.streams.remove(from);
                self.streams.remove(to);
            }
            _ => {}
        }
        let mut req = self.deputy.call_request();
        write_syscall(req.get().init_call(), &call);
        let result = self.local.block_on(&self.rt, async {
            let reply = req.send().promise.await?;
            read_result(reply.get()?.get_result()?)
        });
        self.unsynced = false;
        result.map_err(lost)
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        if self.unsynced {
            let req = self.deputy.sync_request();
            self.local
                .block_on(&self.rt, req.send().promise)
                .map_err(lost)?;
            self.unsynced = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:7001"),
            Endpoint::Tcp("127.0.0.1:7001".into())
        );
        assert_eq!(
            Endpoint::parse("localhost:7001"),
            Endpoint::Tcp("localhost:7001".into())
        );
        assert_eq!(
            Endpoint::parse("/run/user/1/ssi/node.sock"),
            Endpoint::Unix("/run/user/1/ssi/node.sock".into())
        );
        assert_eq!(
            Endpoint::parse("node.sock"),
            Endpoint::Unix("node.sock".into())
        );
    }
}
