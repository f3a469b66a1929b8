//! The node daemon run by `ssid`: binding its TCP address and Unix socket,
//! the threads that accept connections (each served on a thread of its own with a
//! single-threaded runtime, since capabilities are not `Send`), and which
//! protocol a TCP connection speaks (Cap'n Proto RPC, a body's deputy link, or an
//! image coming to run here).
//!
//! Owns the listeners and the socket file. Hands every RPC connection a
//! `Gateway` (`gateway.rs`). Must not know: what the services do.

use super::balancer::balancer;
use super::deputy_link::serve_deputy;
use super::gateway::GatewayServer;
use super::membership::membership;
use super::state::{Config, NodeCore, StartError};
use super::stream::IMAGE_PREAMBLE;
use crate::rpc::{CONNECT_TIMEOUT, DEPUTY_PREAMBLE, run_connection, thread_runtime};
use capnp_rpc::rpc_twoparty_capnp::Side;
use ssi_remote::Runtime;
use ssi_schema::gateway;
use std::path::PathBuf;
use std::sync::Arc;

/// A running node: its listeners and heartbeats run on their own threads.
pub struct Daemon {
    pub(crate) core: Arc<NodeCore>,
    pub(crate) socket: PathBuf,
}

impl Daemon {
    /// Binds the TCP address and the Unix socket, then starts serving and
    /// sending heartbeats.
    pub fn start(config: Config, runtime: Runtime) -> Result<Daemon, StartError> {
        let core = NodeCore::new(&config, runtime)?;
        let tcp =
            std::net::TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
                address: config.listen.clone(),
                source,
            })?;
        let unix = bind_socket(&config.socket)?;
        let c = core.clone();
        std::thread::Builder::new()
            .name("accept-tcp".into())
            .spawn(move || {
                for stream in tcp.incoming().flatten() {
                    let _ = stream.set_nodelay(true);
                    let c = c.clone();
                    let _ = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve_tcp_or_deputy(c, stream));
                }
            })
            .map_err(StartError::Thread)?;
        let c = core.clone();
        std::thread::Builder::new()
            .name("accept-unix".into())
            .spawn(move || {
                for stream in unix.incoming().flatten() {
                    let c = c.clone();
                    let _ = std::thread::Builder::new()
                        .name("conn".into())
                        .spawn(move || serve_unix(c, stream));
                }
            })
            .map_err(StartError::Thread)?;
        core.record(crate::events::Event::new(
            "up",
            core.id,
            format!("node {} ({}) is up", core.id, core.address),
        ));
        let c = core.clone();
        std::thread::Builder::new()
            .name("heartbeat".into())
            .spawn(move || membership(c))
            .map_err(StartError::Thread)?;
        let c = core.clone();
        std::thread::Builder::new()
            .name("balancer".into())
            .spawn(move || balancer(c))
            .map_err(StartError::Thread)?;
        Ok(Daemon {
            core,
            socket: config.socket,
        })
    }

    pub fn core(&self) -> &Arc<NodeCore> {
        &self.core
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

pub(crate) fn bind_socket(
    path: &std::path::Path,
) -> Result<std::os::unix::net::UnixListener, StartError> {
    use std::os::unix::fs::DirBuilderExt;
    let err = |source| StartError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(StartError::SocketInUse(path.to_path_buf()));
        }
        // Left behind by a node that did not stop cleanly.
        std::fs::remove_file(path).map_err(err)?;
    }
    std::os::unix::net::UnixListener::bind(path).map_err(err)
}

pub(crate) fn serve_on_thread<S>(core: Arc<NodeCore>, make: impl FnOnce() -> std::io::Result<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let Ok(rt) = thread_runtime() else { return };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let Ok(stream) = make() else { return };
        let gateway: gateway::Client = capnp_rpc::new_client(GatewayServer { core });
        let (_, rpc) = run_connection(stream, Side::Server, Some(gateway.client));
        let _ = rpc.await;
    });
    // The client is gone; what it started here (a process it launched being
    // stopped and reaped) still runs to its end.
    rt.block_on(local);
}

pub(crate) fn serve_tcp(core: Arc<NodeCore>, stream: std::net::TcpStream) {
    serve_on_thread(core, move || {
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    });
}

/// A TCP connection is either the Cap'n Proto RPC protocol or, when it starts
/// with [`DEPUTY_PREAMBLE`], a body's deputy link, or with
/// [`IMAGE_PREAMBLE`], a body's image coming to run here.
pub(crate) fn serve_tcp_or_deputy(core: Arc<NodeCore>, stream: std::net::TcpStream) {
    let mut head = [0u8; DEPUTY_PREAMBLE.len()];
    let _ = stream.set_read_timeout(Some(CONNECT_TIMEOUT));
    let mut got = 0;
    // An RPC client's first message (its bootstrap) is longer than the preamble.
    while got < head.len() {
        match stream.peek(&mut head) {
            Ok(0) | Err(_) => return,
            Ok(n) if n == got => std::thread::yield_now(),
            Ok(n) => got = n,
        }
    }
    let _ = stream.set_read_timeout(None);
    if &head == IMAGE_PREAMBLE {
        let mut stream = stream;
        if std::io::Read::read_exact(&mut stream, &mut head).is_ok() {
            core.serve_image(stream);
        }
    } else if &head == DEPUTY_PREAMBLE {
        let mut stream = stream;
        if std::io::Read::read_exact(&mut stream, &mut head).is_ok()
            && let Err(e) = serve_deputy(&core, stream)
        {
            tracing::warn!(error = %e, "deputy connection failed");
        }
    } else {
        serve_tcp(core, stream);
    }
}

pub(crate) fn serve_unix(core: Arc<NodeCore>, stream: std::os::unix::net::UnixStream) {
    serve_on_thread(core, move || {
        stream.set_nonblocking(true)?;
        tokio::net::UnixStream::from_std(stream)
    });
}
