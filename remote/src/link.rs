//! The link from a body to its deputy.
//!
//! A body never touches home state itself: every home-bound call goes through a
//! [`DeputyLink`]. A body running on its home node holds a [`LocalLink`] (a direct
//! call, no serialisation); a body on another node holds a network link.

use ssi_deputy::{Deputy, Syscall, SyscallResult};
use std::sync::{Arc, Mutex};

/// The link failed: the deputy cannot be reached, so the call was not executed
/// (or its outcome is unknown). The body cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("lost the link to the process's deputy: {0}")]
pub struct LinkError(pub String);

/// How a body reaches its deputy.
pub trait DeputyLink {
    /// Executes one system call at the deputy and returns its outcome.
    fn call(&mut self, call: Syscall) -> Result<SyscallResult, LinkError>;

    /// Returns once every call made so far has been executed at the deputy. A
    /// link that sends some calls without waiting for them (writes to streams)
    /// must wait here; the body calls it before it reports its end.
    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

/// A deputy shared between its home node and the body's link.
pub type SharedDeputy = Arc<Mutex<Deputy>>;

/// The in-process link: the body runs on its home node and calls its deputy directly.
pub struct LocalLink {
    deputy: SharedDeputy,
}

impl LocalLink {
    pub fn new(deputy: SharedDeputy) -> Self {
        LocalLink { deputy }
    }
}

impl DeputyLink for LocalLink {
    fn call(&mut self, call: Syscall) -> Result<SyscallResult, LinkError> {
        let mut deputy = self
            .deputy
            .lock()
            .map_err(|_| LinkError("the deputy panicked while serving a call".into()))?;
        Ok(deputy.call(call))
    }
}

/// A link for a body being set up, before its own is open (or between two
/// instances of it): every call fails.
pub struct NoLink;

impl DeputyLink for NoLink {
    fn call(&mut self, _: Syscall) -> Result<SyscallResult, LinkError> {
        Err(LinkError("the body has no link yet".into()))
    }
}
