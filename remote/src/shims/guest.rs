//! The guest's side of a host call, shared by every shim: the guest's memory
//! (`Mem`, every access bounds-checked: a bad pointer stops the guest, as in
//! wasmtime), how a call's outcome reaches the guest (`Fail`: an errno, or a
//! stop; `finish`), and asking the deputy (`BodyCtx::syscall`, `reply!`: a
//! reply of the wrong kind means a broken deputy, which stops the body).
//!
//! Must not know: which calls exist (the tables in `preview1.rs`, `ssi.rs`).

use crate::ctx::BodyCtx;
use ssi_deputy::abi::{self, Event};
use ssi_deputy::{Errno, Reply, Syscall};
use wasmtime::{Caller, Extern, Memory};

/// Sends a call to the deputy and takes the reply that matches `pattern`, as
/// `value`; any other kind of reply stops the body.
macro_rules! reply {
    ($ctx:expr, $call:expr, $pattern:pat => $value:expr) => {
        $crate::shims::guest::ask($ctx, $call, |r| match r {
            $pattern => Some($value),
            _ => None,
        })
    };
}
pub(crate) use reply;

/// Why a shim did not return an errno to the guest.
pub(crate) enum Fail {
    /// The guest sees this errno.
    Errno(Errno),
    /// The guest stops: exit, or a failure of the host (a lost deputy link).
    Trap(wasmtime::Error),
}

impl From<Errno> for Fail {
    fn from(e: Errno) -> Self {
        Fail::Errno(e)
    }
}

pub(crate) type R<T> = Result<T, Fail>;

/// A guest pointer (or length) that falls outside the guest's memory. As in
/// wasmtime, it stops the guest instead of becoming an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault;

impl From<Fault> for Fail {
    fn from(_: Fault) -> Self {
        Fail::Trap(wasmtime::Error::msg(
            "the guest passed a pointer out of the bounds of its memory",
        ))
    }
}

pub(crate) fn finish(r: R<()>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(0),
        Err(Fail::Errno(e)) => Ok(e as i32),
        Err(Fail::Trap(t)) => Err(t),
    }
}

/// Guest memory, bounds-checked: an out-of-range access is a [`Fault`].
pub(crate) struct Mem<'a>(pub &'a mut [u8]);

impl Mem<'_> {
    pub(crate) fn range(&self, ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Fault> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Fault)?;
        if end > self.0.len() {
            return Err(Fault);
        }
        Ok(start..end)
    }
    pub(crate) fn get(&self, ptr: u32, len: u32) -> Result<&[u8], Fault> {
        let r = self.range(ptr, len)?;
        Ok(&self.0[r])
    }
    pub(crate) fn get_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Fault> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.0[r])
    }
    pub(crate) fn bytes<const N: usize>(&self, ptr: u32) -> Result<[u8; N], Fault> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.get(ptr, N as u32)?);
        Ok(out)
    }
    pub(crate) fn u8(&self, ptr: u32) -> Result<u8, Fault> {
        Ok(self.bytes::<1>(ptr)?[0])
    }
    pub(crate) fn u16(&self, ptr: u32) -> Result<u16, Fault> {
        Ok(u16::from_le_bytes(self.bytes(ptr)?))
    }
    pub(crate) fn u32(&self, ptr: u32) -> Result<u32, Fault> {
        Ok(u32::from_le_bytes(self.bytes(ptr)?))
    }
    pub(crate) fn u64(&self, ptr: u32) -> Result<u64, Fault> {
        Ok(u64::from_le_bytes(self.bytes(ptr)?))
    }
    pub(crate) fn put(&mut self, ptr: u32, data: &[u8]) -> Result<(), Fault> {
        self.get_mut(ptr, data.len() as u32)?.copy_from_slice(data);
        Ok(())
    }
    pub(crate) fn put_u8(&mut self, ptr: u32, v: u8) -> Result<(), Fault> {
        self.put(ptr, &[v])
    }
    pub(crate) fn put_u16(&mut self, ptr: u32, v: u16) -> Result<(), Fault> {
        self.put(ptr, &v.to_le_bytes())
    }
    pub(crate) fn put_u32(&mut self, ptr: u32, v: u32) -> Result<(), Fault> {
        self.put(ptr, &v.to_le_bytes())
    }
    pub(crate) fn put_u64(&mut self, ptr: u32, v: u64) -> Result<(), Fault> {
        self.put(ptr, &v.to_le_bytes())
    }
    /// The (pointer, length) pairs of an iovec array.
    pub(crate) fn iovecs(&self, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Fault> {
        let bytes = count.checked_mul(8).ok_or(Fault)?;
        self.range(ptr, bytes)?;
        (0..count)
            .map(|i| {
                let at = ptr + i * 8;
                let (buf, len) = (self.u32(at)?, self.u32(at + 4)?);
                self.range(buf, len)?;
                Ok((buf, len))
            })
            .collect()
    }
    /// The concatenated bytes of a ciovec array.
    pub(crate) fn gather(&self, ptr: u32, count: u32) -> Result<Vec<u8>, Fault> {
        let iovs = self.iovecs(ptr, count)?;
        let total: usize = iovs.iter().map(|(_, l)| *l as usize).sum();
        let mut out = Vec::with_capacity(total);
        for (buf, len) in iovs {
            out.extend_from_slice(self.get(buf, len)?);
        }
        Ok(out)
    }
    /// The first non-empty iovec (reads fill one buffer, as wasmtime's do).
    pub(crate) fn first_iovec(&self, ptr: u32, count: u32) -> Result<Option<(u32, u32)>, Fault> {
        Ok(self.iovecs(ptr, count)?.into_iter().find(|(_, l)| *l > 0))
    }
    pub(crate) fn path(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Fault> {
        Ok(self.get(ptr, len)?.to_vec())
    }
    pub(crate) fn put_filestat(&mut self, ptr: u32, st: &abi::Filestat) -> Result<(), Fault> {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&st.dev.to_le_bytes());
        b[8..16].copy_from_slice(&st.ino.to_le_bytes());
        b[16] = st.filetype;
        b[24..32].copy_from_slice(&st.nlink.to_le_bytes());
        b[32..40].copy_from_slice(&st.size.to_le_bytes());
        b[40..48].copy_from_slice(&st.atim.to_le_bytes());
        b[48..56].copy_from_slice(&st.mtim.to_le_bytes());
        b[56..64].copy_from_slice(&st.ctim.to_le_bytes());
        self.put(ptr, &b)
    }
    pub(crate) fn put_event(&mut self, ptr: u32, ev: &Event) -> Result<(), Fault> {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&ev.userdata.to_le_bytes());
        b[8..10].copy_from_slice(&ev.error.to_le_bytes());
        b[10] = ev.eventtype;
        b[16..24].copy_from_slice(&ev.nbytes.to_le_bytes());
        b[24..26].copy_from_slice(&ev.flags.to_le_bytes());
        self.put(ptr, &b)
    }
}

pub(crate) fn memory(caller: &mut Caller<'_, BodyCtx>) -> Result<Memory, Fail> {
    if let Some(m) = caller.data().memory {
        return Ok(m);
    }
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => {
            caller.data_mut().memory = Some(m);
            Ok(m)
        }
        _ => Err(Fail::Trap(wasmtime::Error::msg(
            "the module does not export a memory named `memory`",
        ))),
    }
}

/// Runs `f` with the guest's memory and the body's context.
pub(crate) fn with<T>(
    caller: &mut Caller<'_, BodyCtx>,
    f: impl FnOnce(&mut Mem<'_>, &mut BodyCtx) -> R<T>,
) -> R<T> {
    let m = memory(caller)?;
    let (data, ctx) = m.data_and_store_mut(caller);
    f(&mut Mem(data), ctx)
}

impl BodyCtx {
    /// Sends a call to the deputy; a lost link stops the body.
    pub(crate) fn syscall(&mut self, call: Syscall) -> R<Reply> {
        // A body that cannot be instrumented (and has no epoch checks) is
        // stopped at its next system call.
        if self.control.killing() {
            return Err(Fail::Trap(crate::ctx::Killed.into()));
        }
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.link.call(call) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(errno)) => Err(Fail::Errno(errno)),
            Err(e) => Err(Fail::Trap(wasmtime::Error::new(e))),
        }
    }
}

pub(crate) fn bad_reply(call: &str) -> Fail {
    Fail::Trap(wasmtime::Error::msg(format!(
        "the deputy sent a reply of the wrong kind to `{call}`"
    )))
}

/// Sends a call and takes the reply of the kind `pick` accepts; any other kind
/// means the deputy is broken, which stops the body.
pub(crate) fn ask<T>(
    ctx: &mut BodyCtx,
    call: Syscall,
    pick: impl FnOnce(Reply) -> Option<T>,
) -> R<T> {
    let name = call.name();
    pick(ctx.syscall(call)?).ok_or_else(|| bad_reply(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_bounds_are_faults() {
        let mut buf = vec![0u8; 16];
        let mut m = Mem(&mut buf);
        assert!(m.put_u64(8, 1).is_ok());
        assert_eq!(m.put_u64(9, 1), Err(Fault));
        assert_eq!(m.get(u32::MAX, 2), Err(Fault));
        assert_eq!(m.iovecs(0, u32::MAX), Err(Fault));
    }

    #[test]
    fn gather_concatenates_iovecs() {
        let mut buf = vec![0u8; 64];
        buf[32..35].copy_from_slice(b"abc");
        buf[40..42].copy_from_slice(b"de");
        let mut m = Mem(&mut buf);
        m.put_u32(0, 32).expect("in bounds");
        m.put_u32(4, 3).expect("in bounds");
        m.put_u32(8, 40).expect("in bounds");
        m.put_u32(12, 2).expect("in bounds");
        assert_eq!(m.gather(0, 2), Ok(b"abcde".to_vec()));
        assert_eq!(m.first_iovec(0, 2), Ok(Some((32, 3))));
    }
}
