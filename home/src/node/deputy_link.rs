//! The deputy link's server side: a remote body's own TCP connection to its
//! home, opened with its deputy's one-time sturdy reference, speaking in
//! lockstep (one `DeputyRequest`, one `SyscallResult`) with blocking I/O, no
//! event loop. Pipelined writes to the session's streams are acknowledged by
//! nothing; a failure is kept and reported at the next call on that descriptor.
//!
//! Owns the connection's thread. Reaches one deputy only.

use super::state::NodeCore;
use crate::wire::{read_syscall, write_result};
use ssi_deputy::{Errno, Fd, Reply, Syscall};
use ssi_remote::SharedDeputy;

/// Serves one process's deputy to its remote body, on the body's own connection
/// and thread (see `DeputyHello` in the schema). A call that blocks (a read of
/// the terminal) holds up this body only.
pub(crate) struct DeputyServer {
    pub(crate) deputy: SharedDeputy,
    /// A failed pipelined write, reported at the next call on its descriptor.
    pub(crate) kept: Option<(Fd, Errno)>,
}

pub(crate) fn syscall_fd(call: &Syscall) -> Option<Fd> {
    match call {
        Syscall::FdWrite { fd, .. }
        | Syscall::FdPwrite { fd, .. }
        | Syscall::FdRead { fd, .. }
        | Syscall::FdPread { fd, .. }
        | Syscall::FdClose { fd }
        | Syscall::FdSync { fd }
        | Syscall::FdDatasync { fd }
        | Syscall::FdFdstatGet { fd }
        | Syscall::FdFdstatSetFlags { fd, .. }
        | Syscall::FdFilestatGet { fd }
        | Syscall::FdSeek { fd, .. }
        | Syscall::FdTell { fd } => Some(*fd),
        Syscall::FdRenumber { from, .. } => Some(*from),
        _ => None,
    }
}

impl DeputyServer {
    pub(crate) fn execute(&self, call: Syscall) -> ssi_deputy::SyscallResult {
        let mut deputy = self.deputy.lock().unwrap_or_else(|p| p.into_inner());
        deputy.call(call)
    }

    pub(crate) fn call(&mut self, call: Syscall) -> ssi_deputy::SyscallResult {
        match self.kept {
            Some((fd, e)) if syscall_fd(&call) == Some(fd) => {
                self.kept = None;
                Err(e)
            }
            _ => self.execute(call),
        }
    }

    /// Input a body read ahead and did not use, given back to its console
    /// (dropped if `fd` is no longer one: the body gives it back before it
    /// closes or renumbers the descriptor).
    pub(crate) fn unread(&mut self, fd: Fd, data: &[u8]) {
        let deputy = self.deputy.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(file) = deputy.input(fd) {
            crate::console::unread(file, data);
        }
    }

    /// A pipelined write: every byte is written, or the failure is kept.
    pub(crate) fn write(&mut self, fd: Fd, mut data: &[u8]) {
        if self.kept.is_some_and(|(f, _)| f == fd) {
            return;
        }
        let mut deputy = self.deputy.lock().unwrap_or_else(|p| p.into_inner());
        while !data.is_empty() {
            match deputy.write(fd, data) {
                Ok(n) if n > 0 => data = &data[(n as usize).min(data.len())..],
                Ok(_) => {
                    self.kept = Some((fd, Errno::Io));
                    return;
                }
                Err(e) => {
                    self.kept = Some((fd, e));
                    return;
                }
            }
        }
    }
}

/// Why a deputy connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeputyConnError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Message(#[from] capnp::Error),
}

/// Serves a body's deputy connection (after its preamble) until it closes.
pub(crate) fn serve_deputy(
    core: &NodeCore,
    stream: std::net::TcpStream,
) -> Result<(), DeputyConnError> {
    use crate::rpc::{read_frame, write_frame};
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, stream);
    let hello = read_frame(&mut reader)?;
    let hello = hello.get_root::<ssi_schema::deputy_hello::Reader<'_>>()?;
    let pid = hello.get_pid();
    let granted = match core.procs.get_mut(&pid) {
        None => Err(format!("no process {pid} at this home")),
        Some(mut entry) => {
            if entry.secret.as_ref().map(|s| &s[..]) == Some(hello.get_secret()?) {
                entry.secret = None;
                Ok(entry.deputy.clone())
            } else {
                Err(format!("not the deputy reference of process {pid}"))
            }
        }
    };
    let mut welcome = capnp::message::Builder::new_default();
    let deputy = {
        let mut w = welcome.init_root::<ssi_schema::deputy_welcome::Builder<'_>>();
        match granted {
            Ok(deputy) => {
                // The session's output streams: their writes always take every byte.
                let mut streams = w.reborrow().init_streams(2);
                streams.set(0, 1);
                streams.set(1, 2);
                // Its input, if a console: what the body reads ahead and
                // does not use, it gives back.
                let console_input = {
                    let d = deputy.lock().unwrap_or_else(|p| p.into_inner());
                    d.input(0).is_ok_and(crate::console::reads_ahead)
                };
                let mut ahead = w.init_read_ahead(u32::from(console_input));
                if console_input {
                    ahead.set(0, 0);
                }
                Some(deputy)
            }
            Err(why) => {
                w.set_refused(&why);
                None
            }
        }
    };
    write_frame(&mut writer, &welcome)?;
    let Some(deputy) = deputy else { return Ok(()) };
    let mut server = DeputyServer { deputy, kept: None };
    loop {
        let msg = match read_frame(&mut reader) {
            Ok(m) => m,
            // The body ended (or its node went down).
            Err(_) => return Ok(()),
        };
        let req = msg.get_root::<ssi_schema::deputy_request::Reader<'_>>()?;
        use ssi_schema::deputy_request::Which;
        let result = match req
            .which()
            .map_err(|_| capnp::Error::failed("unknown request".into()))?
        {
            Which::Call(call) => server.call(read_syscall(call?)?),
            Which::Write(w) => {
                let w = w?;
                server.write(w.get_fd(), w.get_data()?);
                continue;
            }
            Which::Sync(()) => Ok(Reply::Unit),
            Which::Unread(u) => {
                let u = u?;
                server.unread(u.get_fd(), u.get_data()?);
                continue;
            }
        };
        let mut out = capnp::message::Builder::new_default();
        write_result(out.init_root(), &result);
        write_frame(&mut writer, &out)?;
    }
}
