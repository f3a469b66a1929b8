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
use ssi_schema::{deputy_hello, deputy_request, deputy_welcome, gateway};
use std::collections::HashSet;
use std::fmt;
use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::compat::TokioAsyncReadCompatExt;

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
    /// (The cause is part of the message, not a source of its own: a chain
    /// printed whole would say it twice.)
    #[error("cannot connect to {endpoint}: {cause}")]
    Io {
        endpoint: Endpoint,
        cause: std::io::Error,
    },
    #[error("cannot connect to {0}: no answer within {CONNECT_TIMEOUT:?}")]
    Timeout(Endpoint),
}

pub(crate) fn reader_options() -> capnp::message::ReaderOptions {
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

/// An open connection to a node: its gateway, and the local task driving the
/// connection, which is closed when this is dropped (so the node's thread for
/// it ends too).
pub struct Connection {
    gateway: gateway::Client,
    task: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for Connection {
    type Target = gateway::Client;
    fn deref(&self) -> &gateway::Client {
        &self.gateway
    }
}

impl Connection {
    /// The connection has closed (the node went, or the link broke).
    pub fn is_closed(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to a node. Must run inside a `LocalSet`: the connection is driven
/// by a local task.
pub async fn connect(endpoint: &Endpoint) -> Result<Connection, ConnectError> {
    let io = |cause| ConnectError::Io {
        endpoint: endpoint.clone(),
        cause,
    };
    let connecting = async {
        let (gateway, rpc) = match endpoint {
            Endpoint::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
                s.set_nodelay(true).map_err(io)?;
                let (gateway, rpc) = run_connection(s, Side::Client, None);
                (gateway, rpc.boxed_local())
            }
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(io)?;
                let (gateway, rpc) = run_connection(s, Side::Client, None);
                (gateway, rpc.boxed_local())
            }
        };
        let task = tokio::task::spawn_local(rpc.map(|_| ()));
        Ok(Connection { gateway, task })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(endpoint.clone()))?
}

thread_local! {
    /// Connections to nodes opened from this thread and still in use (a
    /// connection's capabilities live on its thread).
    static POOL: std::cell::RefCell<std::collections::HashMap<String, std::rc::Weak<Connection>>> =
        std::cell::RefCell::default();
}

/// A connection to the node at `address`, from this thread: one already
/// open and in use if there is, else a new one. It closes once nothing
/// holds it. Must run inside a `LocalSet`.
pub async fn pooled(address: &str) -> Result<std::rc::Rc<Connection>, ConnectError> {
    let open = POOL.with(|p| {
        p.borrow()
            .get(address)
            .and_then(std::rc::Weak::upgrade)
            .filter(|c| !c.task.is_finished())
    });
    if let Some(c) = open {
        return Ok(c);
    }
    let c = std::rc::Rc::new(connect(&Endpoint::Tcp(address.to_string())).await?);
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.retain(|_, w| w.strong_count() > 0);
        p.insert(address.to_string(), std::rc::Rc::downgrade(&c));
    });
    Ok(c)
}

/// Whether an error says the connection ended: closed between messages, or
/// in the middle of one (a peer killed while its answer was on the way).
pub fn connection_closed(e: &capnp::Error) -> bool {
    matches!(
        e.kind,
        capnp::ErrorKind::Disconnected | capnp::ErrorKind::PrematureEndOfFile
    )
}

/// The message of an error a node returned, without the protocol's decoration.
pub fn remote_message(e: &capnp::Error) -> String {
    e.extra
        .trim_start_matches("remote exception: ")
        .trim_start_matches("Failed: ")
        .to_string()
}

/// A single-threaded runtime for one connection or one body.
pub fn thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The first bytes of a body's deputy connection (see `DeputyHello` in the schema).
pub const DEPUTY_PREAMBLE: &[u8; 8] = b"ssi-dep1";

/// The network link of a body running away from home: a connection of its own
/// to the home node, on which it redeemed its deputy's sturdy reference.
///
/// A body's calls are strictly sequential, so the link speaks in lockstep with
/// blocking I/O on the body's thread: one message out, one message back, no
/// event loop and no thread switch. Writes to streams (the session's terminal
/// or pipes) are pipelined: their result is known in advance, so they are sent
/// without waiting for a reply; the socket's buffer bounds what is in flight.
pub struct NetLink {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    streams: HashSet<Fd>,
    unsynced: bool,
    /// Writes and bytes pipelined since the last call answered: past
    /// `ASK_EVERY_WRITES` or `ASK_EVERY_BYTES`, a stream's write waits for
    /// its answer, which carries a failure of the writes before it (a
    /// closed pipe): a program that only writes learns of it, as under
    /// wasmtime, instead of writing into nothing for ever.
    pipelined: (usize, usize),
    /// Descriptors the home lets the body read ahead (its session's input):
    /// a read asks for at least `READ_AHEAD` bytes, and the rest of the
    /// answer serves the next reads here, without a round trip (a program
    /// that reads its input a byte at a time is not slowed by the network).
    read_ahead: HashSet<Fd>,
    /// Input read ahead and not yet taken, per descriptor. Given back to the
    /// home (`unread`) before the body freezes or ends (`flush`), and before
    /// a call that changes the descriptor or starts a child.
    ahead: std::collections::HashMap<Fd, std::collections::VecDeque<u8>>,
}

/// What a read of a `read_ahead` descriptor asks for, at least.
const READ_AHEAD: u32 = 64 * 1024;

/// See `NetLink::pipelined`.
const ASK_EVERY_WRITES: usize = 256;
const ASK_EVERY_BYTES: usize = 1 << 20;

/// The largest write sent in one message; larger writes to files are short
/// writes (the guest's libc writes the rest), larger writes to streams are split.
pub const MAX_WRITE: usize = 4 << 20;

fn lost(e: impl fmt::Display) -> LinkError {
    LinkError(e.to_string())
}

/// Reads one framed message.
pub(crate) fn read_frame(
    r: &mut impl std::io::BufRead,
) -> capnp::Result<capnp::message::Reader<capnp::serialize::OwnedSegments>> {
    capnp::serialize::read_message(r, reader_options())
}

/// Writes one framed message and pushes it to the socket.
pub(crate) fn write_frame<A: capnp::message::Allocator>(
    w: &mut BufWriter<TcpStream>,
    msg: &capnp::message::Builder<A>,
) -> std::io::Result<()> {
    capnp::serialize::write_message(&mut *w, msg).map_err(std::io::Error::other)?;
    w.flush()
}

impl NetLink {
    /// Connects to the home at `home` and redeems the deputy of `pid` with `secret`.
    pub fn connect(home: &str, pid: u32, secret: &[u8]) -> Result<Self, LinkError> {
        let cannot = |e: &dyn fmt::Display| lost(format!("cannot reach the home {home}: {e}"));
        let addr = home
            .to_socket_addrs()
            .map_err(|e| cannot(&e))?
            .next()
            .ok_or_else(|| cannot(&"no address"))?;
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| cannot(&e))?;
        stream.set_nodelay(true).map_err(lost)?;
        let mut writer = BufWriter::with_capacity(64 * 1024, stream.try_clone().map_err(lost)?);
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        writer.write_all(DEPUTY_PREAMBLE).map_err(lost)?;
        let mut hello = capnp::message::Builder::new_default();
        {
            let mut h = hello.init_root::<deputy_hello::Builder<'_>>();
            h.set_pid(pid);
            h.set_secret(secret);
        }
        write_frame(&mut writer, &hello).map_err(|e| cannot(&e))?;
        let welcome = read_frame(&mut reader).map_err(|e| cannot(&e))?;
        let welcome = welcome
            .get_root::<deputy_welcome::Reader<'_>>()
            .map_err(lost)?;
        let read_ahead = welcome.get_read_ahead().map_err(lost)?.iter().collect();
        let streams = match welcome.which().map_err(lost)? {
            deputy_welcome::Which::Streams(list) => list.map_err(lost)?.iter().collect(),
            deputy_welcome::Which::Refused(why) => {
                return Err(lost(format!(
                    "the home {home} refused the deputy of process {pid}: {}",
                    why.map_err(lost)?.to_string().map_err(lost)?
                )));
            }
        };
        Ok(NetLink {
            reader,
            writer,
            streams,
            unsynced: false,
            pipelined: (0, 0),
            read_ahead,
            ahead: Default::default(),
        })
    }

    /// Gives back to the home what was read ahead of `fd` and not taken.
    fn give_back(&mut self, fd: Fd) -> Result<(), LinkError> {
        if let Some(data) = self.ahead.remove(&fd).filter(|d| !d.is_empty()) {
            let data: Vec<u8> = data.into();
            self.send(|mut r| {
                let mut u = r.reborrow().init_unread();
                u.set_fd(fd);
                u.set_data(&data);
            })?;
            self.unsynced = true;
        }
        Ok(())
    }

    fn give_back_all(&mut self) -> Result<(), LinkError> {
        let fds: Vec<Fd> = self.ahead.keys().copied().collect();
        for fd in fds {
            self.give_back(fd)?;
        }
        Ok(())
    }

    fn send(&mut self, build: impl FnOnce(deputy_request::Builder<'_>)) -> Result<(), LinkError> {
        let mut msg = capnp::message::Builder::new_default();
        build(msg.init_root());
        write_frame(&mut self.writer, &msg).map_err(lost)
    }

    fn reply(&mut self) -> Result<SyscallResult, LinkError> {
        let msg = read_frame(&mut self.reader).map_err(lost)?;
        read_result(msg.get_root().map_err(lost)?).map_err(lost)
    }
}

impl DeputyLink for NetLink {
    fn call(&mut self, mut call: Syscall) -> Result<SyscallResult, LinkError> {
        // A read ahead of the program's: the descriptor, and what it asked for.
        let mut keep_rest = None;
        match &mut call {
            Syscall::FdWrite { fd, data }
                if self.streams.contains(fd)
                    && self.pipelined.0 < ASK_EVERY_WRITES
                    && self.pipelined.1 < ASK_EVERY_BYTES =>
            {
                let fd = *fd;
                self.pipelined.0 += 1;
                self.pipelined.1 += data.len();
                for chunk in data.chunks(MAX_WRITE) {
                    self.send(|mut r| {
                        let mut w = r.reborrow().init_write();
                        w.set_fd(fd);
                        w.set_data(chunk);
                    })?;
                }
                self.unsynced = true;
                return Ok(Ok(Reply::Size(data.len() as u32)));
            }
            // A read of a `read_ahead` descriptor: from what was read ahead,
            // or from the home, asking for more than `len` (the rest is kept).
            Syscall::FdRead { fd, len } if *len > 0 && self.read_ahead.contains(fd) => {
                if let Some(buf) = self.ahead.get_mut(fd).filter(|b| !b.is_empty()) {
                    let n = buf.len().min(*len as usize);
                    return Ok(Ok(Reply::Bytes(buf.drain(..n).collect())));
                }
                keep_rest = Some((*fd, *len as usize));
                *len = (*len).max(READ_AHEAD);
            }
            Syscall::FdWrite { data, .. }
            | Syscall::FdPwrite { data, .. }
            | Syscall::SockSend { data, .. } => data.truncate(MAX_WRITE),
            // The descriptor may stop being the stream it was.
            Syscall::FdClose { fd } => {
                let fd = *fd;
                self.give_back(fd)?;
                self.streams.remove(&fd);
                self.read_ahead.remove(&fd);
            }
            Syscall::FdRenumber { from, to } => {
                let (from, to) = (*from, *to);
                self.give_back(from)?;
                self.give_back(to)?;
                for fd in [from, to] {
                    self.streams.remove(&fd);
                    self.read_ahead.remove(&fd);
                }
            }
            // A child shares the input: what was read ahead is the home's again.
            Syscall::ProcSpawn(_) => self.give_back_all()?,
            _ => {}
        }
        self.send(|r| write_syscall(r.init_call(), &call))?;
        self.unsynced = false;
        self.pipelined = (0, 0);
        let mut result = self.reply()?;
        if let (Some((fd, len)), Ok(Reply::Bytes(data))) = (keep_rest, &mut result)
            && data.len() > len
        {
            let rest = data.split_off(len);
            self.ahead.insert(fd, rest.into());
        }
        Ok(result)
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        self.give_back_all()?;
        if self.unsynced {
            self.send(|mut r| r.set_sync(()))?;
            self.reply()?
                .map_err(|e| lost(format!("the home failed to sync: {e:?}")))?;
            self.unsynced = false;
            self.pipelined = (0, 0);
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
