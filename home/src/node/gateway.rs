//! `Gateway`, the bootstrap capability every connection gets: it launches a
//! process (handing the session a `Process` for it alone), stages and restores
//! checkpoints, and hands out `Admin` and `Peer`.
//!
//! Owns nothing: it reads requests and calls `launch.rs`, `admin.rs`,
//! `peer.rs` and `image_sink.rs`.

use super::admin::AdminServer;
use super::image_sink::ImageSinkServer;
use super::launch::{LaunchRequest, launch, restore};
use super::peer::PeerServer;
use super::state::NodeCore;
use crate::console::Ttys;
use crate::wire::failed;
use capnp::capability::Rc as CapRc;
use ssi_schema::gateway;
use std::future::{Future, ready};
use std::sync::Arc;

pub(crate) struct GatewayServer {
    pub(crate) core: Arc<NodeCore>,
}

impl gateway::Server for GatewayServer {
    fn launch(
        self: CapRc<Self>,
        params: gateway::LaunchParams,
        mut results: gateway::LaunchResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let spec = LaunchRequest::read(p.get_spec()?)?;
            let console = p.get_console()?;
            let (process, pid) = launch(core, spec, console).await?;
            let mut r = results.get();
            r.set_process(process);
            r.set_pid(pid);
            Ok(())
        }
    }

    fn admin(
        self: CapRc<Self>,
        _: gateway::AdminParams,
        mut results: gateway::AdminResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        results.get().set_admin(capnp_rpc::new_client(AdminServer {
            core: self.core.clone(),
        }));
        ready(Ok(()))
    }

    fn peer(
        self: CapRc<Self>,
        _: gateway::PeerParams,
        mut results: gateway::PeerResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        results.get().set_peer(capnp_rpc::new_client(PeerServer {
            core: self.core.clone(),
        }));
        ready(Ok(()))
    }

    fn stage(
        self: CapRc<Self>,
        _: gateway::StageParams,
        mut results: gateway::StageResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let (id, sink) = ImageSinkServer::staging(&self.core);
        let mut r = results.get();
        r.set_id(id);
        r.set_sink(sink);
        ready(Ok(()))
    }

    fn restore(
        self: CapRc<Self>,
        params: gateway::RestoreParams,
        mut results: gateway::RestoreResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let core = self.core.clone();
        async move {
            let p = params.get()?;
            let spec = p.get_spec()?;
            let console = p.get_console()?;
            let image = core
                .staged
                .remove(&spec.get_image())
                .map(|(_, image)| image)
                .ok_or_else(|| failed("no staged checkpoint with that id"))?;
            let ttys = Ttys {
                stdin: spec.get_stdin_tty(),
                stdout: spec.get_stdout_tty(),
                stderr: spec.get_stderr_tty(),
            };
            let (process, pid) = restore(core, image, spec.get_node(), ttys, console).await?;
            let mut r = results.get();
            r.set_process(process);
            r.set_pid(pid);
            Ok(())
        }
    }
}
