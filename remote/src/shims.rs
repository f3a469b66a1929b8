//! The `wasi_snapshot_preview1` imports of a body.
//!
//! Each shim reads its arguments out of guest memory, answers locally if the call
//! is not tied to home (args, environment, clocks, randomness, `sched_yield`,
//! `poll_oneoff` on clocks alone), and otherwise builds a [`Syscall`], sends it
//! down the body's deputy link, and writes the reply back into guest memory.

use crate::body::{BodyCtx, ProcExit, end_rewind, start_unwind};
use crate::instrument::{REWINDING, UNWINDING};
use ssi_deputy::abi::{self, Dirent, Event, Subscription, SubscriptionKind, Whence};
use ssi_deputy::{Errno, Reply, Syscall};
use wasmtime::{AsContextMut, Caller, Extern, Linker, Memory};

/// The import module every shim lives in.
pub const MODULE: &str = "wasi_snapshot_preview1";

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

type R<T> = Result<T, Fail>;

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

/// As [`finish`], except that a call cut short (`EINTR`) because the body is
/// freezing unwinds the body instead: the call is made again once the body is
/// rewound, so the guest never sees the interruption.
fn finish_or_freeze(c: &mut Caller<'_, BodyCtx>, name: &str, r: R<()>) -> wasmtime::Result<i32> {
    if matches!(r, Err(Fail::Errno(Errno::Intr))) && c.data().control.freezing() {
        start_unwind(c, name)?;
        return Ok(0);
    }
    finish(r)
}

/// A call that waits was cut short (`EINTR`) with no freeze under way: if
/// signals are pending for the body's handlers, they run now and the call is
/// made again (true), as with `SA_RESTART`.
fn restart_after_handlers(c: &mut Caller<'_, BodyCtx>, r: &R<()>) -> wasmtime::Result<bool> {
    if !matches!(r, Err(Fail::Errno(Errno::Intr)))
        || c.data().control.freezing()
        || c.data().in_handler
    {
        return Ok(false);
    }
    c.data().control.take_signalled();
    run_handlers(c)
}

/// Runs the handlers of the signals pending now, as the deputy lists them
/// (lowest signal first); true if any ran. A handler is a call into the
/// guest, from a host function it called or from the host once it has
/// unwound; while it runs, poll points neither unwind nor run handlers.
pub(crate) fn run_handlers(mut c: impl AsContextMut<Data = BodyCtx>) -> wasmtime::Result<bool> {
    let mut ran = false;
    loop {
        let list = match c.as_context_mut().data_mut().syscall(Syscall::ProcSignals) {
            Ok(Reply::Bytes(list)) => list,
            Ok(_) => return Err(wasmtime::Error::msg("the deputy sent a bad signal list")),
            Err(Fail::Errno(_)) => return Ok(ran),
            Err(Fail::Trap(t)) => return Err(t),
        };
        if list.is_empty() {
            return Ok(ran);
        }
        let mut rest = &list[..];
        while let [sig, len, tail @ ..] = rest {
            let len = usize::from(*len);
            let (name, after) = tail.split_at(len.min(tail.len()));
            rest = after;
            let name = String::from_utf8_lossy(name).into_owned();
            let instance = c.as_context().data().instance;
            let handler = instance
                .and_then(|i| i.get_func(&mut c, &name))
                .and_then(|f| f.typed::<i32, ()>(&c).ok())
                .ok_or_else(|| {
                    wasmtime::Error::msg(format!(
                        "signal handler `{name}` is not an exported function (i32) -> ()"
                    ))
                })?;
            let control = c.as_context().data().control.clone();
            control.enter_handler();
            c.as_context_mut().data_mut().in_handler = true;
            let r = call_handler(&mut c, &handler, i32::from(*sig));
            c.as_context_mut().data_mut().in_handler = false;
            control.leave_handler();
            r?;
            ran = true;
        }
    }
}

/// Calls a signal handler. If the flag came up while it ran (a request made
/// just as it started), its poll points unwound it: it is put back at once,
/// with the flag down, and runs on to its end.
fn call_handler(
    mut c: impl AsContextMut<Data = BodyCtx>,
    handler: &wasmtime::TypedFunc<i32, ()>,
    sig: i32,
) -> wasmtime::Result<()> {
    handler.call(&mut c, sig)?;
    let Some(u) = c.as_context().data().unwinder.clone() else {
        return Ok(());
    };
    while u.state(&mut c) == UNWINDING {
        let control = c.as_context().data().control.clone();
        if control.killing() {
            return Err(crate::body::Killed.into());
        }
        control.lower_in_handler();
        let rewind = u.rewind_of_top(&mut c)?.typed::<i32, ()>(&c)?;
        u.set_state(&mut c, REWINDING)?;
        rewind.call(&mut c, sig)?;
    }
    Ok(())
}

fn finish(r: R<()>) -> wasmtime::Result<i32> {
    match r {
        Ok(()) => Ok(0),
        Err(Fail::Errno(e)) => Ok(e as i32),
        Err(Fail::Trap(t)) => Err(t),
    }
}

/// Guest memory, bounds-checked: an out-of-range access is a [`Fault`].
pub(crate) struct Mem<'a>(pub &'a mut [u8]);

impl Mem<'_> {
    fn range(&self, ptr: u32, len: u32) -> Result<std::ops::Range<usize>, Fault> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(Fault)?;
        if end > self.0.len() {
            return Err(Fault);
        }
        Ok(start..end)
    }
    fn get(&self, ptr: u32, len: u32) -> Result<&[u8], Fault> {
        let r = self.range(ptr, len)?;
        Ok(&self.0[r])
    }
    fn get_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Fault> {
        let r = self.range(ptr, len)?;
        Ok(&mut self.0[r])
    }
    fn bytes<const N: usize>(&self, ptr: u32) -> Result<[u8; N], Fault> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.get(ptr, N as u32)?);
        Ok(out)
    }
    fn u8(&self, ptr: u32) -> Result<u8, Fault> {
        Ok(self.bytes::<1>(ptr)?[0])
    }
    fn u16(&self, ptr: u32) -> Result<u16, Fault> {
        Ok(u16::from_le_bytes(self.bytes(ptr)?))
    }
    fn u32(&self, ptr: u32) -> Result<u32, Fault> {
        Ok(u32::from_le_bytes(self.bytes(ptr)?))
    }
    fn u64(&self, ptr: u32) -> Result<u64, Fault> {
        Ok(u64::from_le_bytes(self.bytes(ptr)?))
    }
    fn put(&mut self, ptr: u32, data: &[u8]) -> Result<(), Fault> {
        self.get_mut(ptr, data.len() as u32)?.copy_from_slice(data);
        Ok(())
    }
    fn put_u8(&mut self, ptr: u32, v: u8) -> Result<(), Fault> {
        self.put(ptr, &[v])
    }
    fn put_u16(&mut self, ptr: u32, v: u16) -> Result<(), Fault> {
        self.put(ptr, &v.to_le_bytes())
    }
    fn put_u32(&mut self, ptr: u32, v: u32) -> Result<(), Fault> {
        self.put(ptr, &v.to_le_bytes())
    }
    fn put_u64(&mut self, ptr: u32, v: u64) -> Result<(), Fault> {
        self.put(ptr, &v.to_le_bytes())
    }
    /// The (pointer, length) pairs of an iovec array.
    fn iovecs(&self, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Fault> {
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
    fn gather(&self, ptr: u32, count: u32) -> Result<Vec<u8>, Fault> {
        let iovs = self.iovecs(ptr, count)?;
        let total: usize = iovs.iter().map(|(_, l)| *l as usize).sum();
        let mut out = Vec::with_capacity(total);
        for (buf, len) in iovs {
            out.extend_from_slice(self.get(buf, len)?);
        }
        Ok(out)
    }
    /// The first non-empty iovec (reads fill one buffer, as wasmtime's do).
    fn first_iovec(&self, ptr: u32, count: u32) -> Result<Option<(u32, u32)>, Fault> {
        Ok(self.iovecs(ptr, count)?.into_iter().find(|(_, l)| *l > 0))
    }
    fn path(&self, ptr: u32, len: u32) -> Result<Vec<u8>, Fault> {
        Ok(self.get(ptr, len)?.to_vec())
    }
    fn put_filestat(&mut self, ptr: u32, st: &abi::Filestat) -> Result<(), Fault> {
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
    fn put_event(&mut self, ptr: u32, ev: &Event) -> Result<(), Fault> {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&ev.userdata.to_le_bytes());
        b[8..10].copy_from_slice(&ev.error.to_le_bytes());
        b[10] = ev.eventtype;
        b[16..24].copy_from_slice(&ev.nbytes.to_le_bytes());
        b[24..26].copy_from_slice(&ev.flags.to_le_bytes());
        self.put(ptr, &b)
    }
}

fn memory(caller: &mut Caller<'_, BodyCtx>) -> Result<Memory, Fail> {
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
fn with<T>(
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
            return Err(Fail::Trap(crate::body::Killed.into()));
        }
        match self.link.call(call) {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(errno)) => Err(Fail::Errno(errno)),
            Err(e) => Err(Fail::Trap(wasmtime::Error::new(e))),
        }
    }
}

fn bad_reply(call: &str) -> Fail {
    Fail::Trap(wasmtime::Error::msg(format!(
        "the deputy sent a reply of the wrong kind to `{call}`"
    )))
}

/// Sends a call and takes the reply of the kind `pick` accepts; any other kind
/// means the deputy is broken, which stops the body.
fn ask<T>(ctx: &mut BodyCtx, call: Syscall, pick: impl FnOnce(Reply) -> Option<T>) -> R<T> {
    let name = call.name();
    pick(ctx.syscall(call)?).ok_or_else(|| bad_reply(name))
}

fn expect_unit(ctx: &mut BodyCtx, call: Syscall) -> R<()> {
    ask(ctx, call, |r| matches!(r, Reply::Unit).then_some(()))
}

fn expect_size(ctx: &mut BodyCtx, call: Syscall) -> R<u32> {
    ask(ctx, call, |r| {
        if let Reply::Size(n) = r {
            Some(n)
        } else {
            None
        }
    })
}

fn expect_bytes(ctx: &mut BodyCtx, call: Syscall) -> R<Vec<u8>> {
    ask(ctx, call, |r| {
        if let Reply::Bytes(b) = r {
            Some(b)
        } else {
            None
        }
    })
}

fn expect_filesize(ctx: &mut BodyCtx, call: Syscall) -> R<u64> {
    ask(ctx, call, |r| {
        if let Reply::Filesize(n) = r {
            Some(n)
        } else {
            None
        }
    })
}

fn expect_fd(ctx: &mut BodyCtx, call: Syscall) -> R<u32> {
    ask(ctx, call, |r| {
        if let Reply::Fd(fd) = r {
            Some(fd)
        } else {
            None
        }
    })
}

fn expect_filestat(ctx: &mut BodyCtx, call: Syscall) -> R<abi::Filestat> {
    ask(ctx, call, |r| {
        if let Reply::Filestat(st) = r {
            Some(st)
        } else {
            None
        }
    })
}

/// Writes a list of NUL-terminated strings the way `args_get`/`environ_get` do.
fn put_strings(m: &mut Mem<'_>, list: &[Vec<u8>], ptrs: u32, buf: u32) -> R<()> {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        m.put_u32(ptrs + 4 * i as u32, at)?;
        m.put(at, s)?;
        m.put_u8(at + s.len() as u32, 0)?;
        at += s.len() as u32 + 1;
    }
    Ok(())
}

fn put_sizes(m: &mut Mem<'_>, list: &[Vec<u8>], count_ptr: u32, size_ptr: u32) -> R<()> {
    let size: usize = list.iter().map(|s| s.len() + 1).sum();
    m.put_u32(count_ptr, list.len() as u32)?;
    m.put_u32(size_ptr, u32::try_from(size).map_err(|_| Errno::Overflow)?)?;
    Ok(())
}

fn read_subscription(m: &Mem<'_>, at: u32) -> R<(Subscription, bool)> {
    let userdata = m.u64(at)?;
    let tag = m.u8(at + 8)?;
    let (kind, abstime) = match tag {
        0 => {
            let id = m.u32(at + 16)?;
            let timeout = m.u64(at + 24)?;
            let precision = m.u64(at + 32)?;
            let flags = m.u16(at + 40)?;
            (
                SubscriptionKind::Clock {
                    id,
                    timeout,
                    precision,
                },
                flags & 1 != 0,
            )
        }
        1 => (SubscriptionKind::FdRead(m.u32(at + 16)?), false),
        2 => (SubscriptionKind::FdWrite(m.u32(at + 16)?), false),
        _ => return Err(Errno::Inval.into()),
    };
    Ok((Subscription { userdata, kind }, abstime))
}

/// `poll_oneoff`: clock-only polls are served by the body's own clocks; anything
/// with a descriptor goes home, with absolute deadlines turned into relative ones.
fn poll_oneoff(m: &mut Mem<'_>, ctx: &mut BodyCtx, subs: u32, events: u32, n: u32) -> R<u32> {
    if n == 0 {
        return Err(Errno::Inval.into());
    }
    let mut list = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = subs
            .checked_add(i.checked_mul(48).ok_or(Fault)?)
            .ok_or(Fault)?;
        let (mut sub, abstime) = read_subscription(m, at)?;
        if let SubscriptionKind::Clock { id, timeout, .. } = &mut sub.kind {
            if abstime {
                let now = ctx.clock_now(*id)?;
                *timeout = timeout.saturating_sub(now);
            } else if *id != abi::clockid::MONOTONIC && *id != abi::clockid::REALTIME {
                return Err(Errno::Inval.into());
            }
        }
        list.push(sub);
    }
    let clocks_only = list
        .iter()
        .all(|s| matches!(s.kind, SubscriptionKind::Clock { .. }));
    let fired = if clocks_only {
        let shortest = list
            .iter()
            .filter_map(|s| match s.kind {
                SubscriptionKind::Clock { timeout, .. } => Some(timeout),
                _ => None,
            })
            .min()
            .unwrap_or(0);
        // A sleep cut short by a signal goes on after its handlers until
        // the same deadline; one cut short by a freeze, where the body
        // resumes (its image carries the deadline).
        let now = ctx.clock.monotonic_ns();
        // (A handler's own sleep is its own.)
        let until = if ctx.in_handler {
            now.saturating_add(shortest)
        } else {
            *ctx.sleep_until
                .get_or_insert_with(|| now.saturating_add(shortest))
        };
        let left = std::time::Duration::from_nanos(until.saturating_sub(now));
        if !ctx.control.sleep(left) {
            // A freeze (the call is made again after the rewind) or a kill.
            if ctx.control.killing() {
                return Err(Fail::Trap(crate::body::Killed.into()));
            }
            return Err(Errno::Intr.into());
        }
        list.iter()
            .filter(|s| matches!(s.kind, SubscriptionKind::Clock { timeout, .. } if timeout <= shortest))
            .map(|s| Event {
                userdata: s.userdata,
                error: 0,
                eventtype: abi::eventtype::CLOCK,
                nbytes: 0,
                flags: 0,
            })
            .collect()
    } else {
        match ctx.syscall(Syscall::PollOneoff {
            subscriptions: list,
        })? {
            Reply::Events(ev) => ev,
            _ => return Err(bad_reply("poll_oneoff")),
        }
    };
    for (i, ev) in fired.iter().take(n as usize).enumerate() {
        m.put_event(events + 32 * i as u32, ev)?;
    }
    Ok(fired.len().min(n as usize) as u32)
}

/// Registers every `wasi_snapshot_preview1` function in `linker`.
pub fn add_to_linker(linker: &mut Linker<BodyCtx>) -> wasmtime::Result<()> {
    let l = linker;

    l.func_wrap(
        MODULE,
        "args_get",
        |mut c: Caller<'_, BodyCtx>, argv: u32, buf: u32| {
            finish(with(&mut c, |m, ctx| put_strings(m, &ctx.args, argv, buf)))
        },
    )?;
    l.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: Caller<'_, BodyCtx>, n: u32, size: u32| {
            finish(with(&mut c, |m, ctx| put_sizes(m, &ctx.args, n, size)))
        },
    )?;
    l.func_wrap(
        MODULE,
        "environ_get",
        |mut c: Caller<'_, BodyCtx>, envp: u32, buf: u32| {
            finish(with(&mut c, |m, ctx| put_strings(m, &ctx.env, envp, buf)))
        },
    )?;
    l.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: Caller<'_, BodyCtx>, n: u32, size: u32| {
            finish(with(&mut c, |m, ctx| put_sizes(m, &ctx.env, n, size)))
        },
    )?;
    l.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: Caller<'_, BodyCtx>, id: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let res = ctx.clock_res(id)?;
                Ok(m.put_u64(out, res)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, BodyCtx>, id: u32, _precision: u64, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let now = ctx.clock_now(id)?;
                Ok(m.put_u64(out, now)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "random_get",
        |mut c: Caller<'_, BodyCtx>, buf: u32, len: u32| {
            finish(with(&mut c, |m, _| {
                rand::RngCore::fill_bytes(&mut rand::rng(), m.get_mut(buf, len)?);
                Ok(())
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "sched_yield",
        |_c: Caller<'_, BodyCtx>| -> wasmtime::Result<i32> {
            std::thread::yield_now();
            Ok(0)
        },
    )?;
    l.func_wrap(
        MODULE,
        "proc_exit",
        |_c: Caller<'_, BodyCtx>, code: u32| -> wasmtime::Result<()> {
            if code >= 126 {
                return Err(wasmtime::Error::msg(
                    "exit with invalid exit status outside of [0..126)",
                ));
            }
            Err(wasmtime::Error::new(ProcExit(code as i32)))
        },
    )?;
    l.func_wrap(
        MODULE,
        "proc_raise",
        |_c: Caller<'_, BodyCtx>, _sig: u32| -> wasmtime::Result<i32> { Ok(Errno::Notsup as i32) },
    )?;
    l.func_wrap(
        MODULE,
        "poll_oneoff",
        |mut c: Caller<'_, BodyCtx>, subs: u32, events: u32, n: u32, nevents: u32| {
            end_rewind(&mut c, "poll_oneoff")?;
            loop {
                let r = with(&mut c, |m, ctx| {
                    let k = poll_oneoff(m, ctx, subs, events, n)?;
                    Ok(m.put_u32(nevents, k)?)
                });
                if restart_after_handlers(&mut c, &r)? {
                    continue;
                }
                let frozen =
                    matches!(r, Err(Fail::Errno(Errno::Intr))) && c.data().control.freezing();
                if !frozen && !c.data().in_handler {
                    c.data_mut().sleep_until = None;
                }
                return finish_or_freeze(&mut c, "poll_oneoff", r);
            }
        },
    )?;

    // Descriptors: everything below goes home.
    l.func_wrap(
        MODULE,
        "fd_advise",
        |mut c: Caller<'_, BodyCtx>, fd: u32, offset: u64, len: u64, advice: u32| {
            finish(with(&mut c, |_, ctx| {
                let advice = u8::try_from(advice).map_err(|_| Errno::Inval)?;
                expect_unit(
                    ctx,
                    Syscall::FdAdvise {
                        fd,
                        offset,
                        len,
                        advice,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_allocate",
        |mut c: Caller<'_, BodyCtx>, fd: u32, offset: u64, len: u64| {
            finish(with(&mut c, |_, ctx| {
                expect_unit(ctx, Syscall::FdAllocate { fd, offset, len })
            }))
        },
    )?;
    l.func_wrap(MODULE, "fd_close", |mut c: Caller<'_, BodyCtx>, fd: u32| {
        finish(with(&mut c, |_, ctx| {
            expect_unit(ctx, Syscall::FdClose { fd })
        }))
    })?;
    l.func_wrap(
        MODULE,
        "fd_datasync",
        |mut c: Caller<'_, BodyCtx>, fd: u32| {
            finish(with(&mut c, |_, ctx| {
                expect_unit(ctx, Syscall::FdDatasync { fd })
            }))
        },
    )?;
    l.func_wrap(MODULE, "fd_sync", |mut c: Caller<'_, BodyCtx>, fd: u32| {
        finish(with(&mut c, |_, ctx| {
            expect_unit(ctx, Syscall::FdSync { fd })
        }))
    })?;
    l.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, BodyCtx>, fd: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                match ctx.syscall(Syscall::FdFdstatGet { fd })? {
                    Reply::Fdstat(st) => {
                        let mut b = [0u8; 24];
                        b[0] = st.filetype;
                        b[2..4].copy_from_slice(&st.flags.to_le_bytes());
                        b[8..16].copy_from_slice(&st.rights_base.to_le_bytes());
                        b[16..24].copy_from_slice(&st.rights_inheriting.to_le_bytes());
                        Ok(m.put(out, &b)?)
                    }
                    _ => Err(bad_reply("fd_fdstat_get")),
                }
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, BodyCtx>, fd: u32, flags: u32| {
            finish(with(&mut c, |_, ctx| {
                let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
                expect_unit(ctx, Syscall::FdFdstatSetFlags { fd, flags })
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_fdstat_set_rights",
        |mut c: Caller<'_, BodyCtx>, fd: u32, base: u64, inheriting: u64| {
            finish(with(&mut c, |_, ctx| {
                expect_unit(
                    ctx,
                    Syscall::FdFdstatSetRights {
                        fd,
                        rights_base: base,
                        rights_inheriting: inheriting,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_filestat_get",
        |mut c: Caller<'_, BodyCtx>, fd: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let st = expect_filestat(ctx, Syscall::FdFilestatGet { fd })?;
                Ok(m.put_filestat(out, &st)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_filestat_set_size",
        |mut c: Caller<'_, BodyCtx>, fd: u32, size: u64| {
            finish(with(&mut c, |_, ctx| {
                expect_unit(ctx, Syscall::FdFilestatSetSize { fd, size })
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_filestat_set_times",
        |mut c: Caller<'_, BodyCtx>, fd: u32, atim: u64, mtim: u64, fst: u32| {
            finish(with(&mut c, |_, ctx| {
                let fst_flags = u16::try_from(fst).map_err(|_| Errno::Inval)?;
                expect_unit(
                    ctx,
                    Syscall::FdFilestatSetTimes {
                        fd,
                        atim,
                        mtim,
                        fst_flags,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, BodyCtx>, fd: u32, iovs: u32, n: u32, nread: u32| {
            end_rewind(&mut c, "fd_read")?;
            loop {
                let r = with(&mut c, |m, ctx| {
                    let (buf, len) = m.first_iovec(iovs, n)?.unwrap_or((0, 0));
                    let data = expect_bytes(ctx, Syscall::FdRead { fd, len })?;
                    let k = data.len().min(len as usize);
                    m.put(buf, &data[..k])?;
                    Ok(m.put_u32(nread, k as u32)?)
                });
                if restart_after_handlers(&mut c, &r)? {
                    continue;
                }
                return finish_or_freeze(&mut c, "fd_read", r);
            }
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_pread",
        |mut c: Caller<'_, BodyCtx>, fd: u32, iovs: u32, n: u32, offset: u64, nread: u32| {
            finish(with(&mut c, |m, ctx| {
                let (buf, len) = m.first_iovec(iovs, n)?.unwrap_or((0, 0));
                let data = expect_bytes(ctx, Syscall::FdPread { fd, len, offset })?;
                let k = data.len().min(len as usize);
                m.put(buf, &data[..k])?;
                Ok(m.put_u32(nread, k as u32)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, BodyCtx>, fd: u32, iovs: u32, n: u32, nwritten: u32| {
            finish(with(&mut c, |m, ctx| {
                let data = m.gather(iovs, n)?;
                let k = expect_size(ctx, Syscall::FdWrite { fd, data })?;
                Ok(m.put_u32(nwritten, k)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_pwrite",
        |mut c: Caller<'_, BodyCtx>, fd: u32, iovs: u32, n: u32, offset: u64, nwritten: u32| {
            finish(with(&mut c, |m, ctx| {
                let data = m.gather(iovs, n)?;
                let k = expect_size(ctx, Syscall::FdPwrite { fd, data, offset })?;
                Ok(m.put_u32(nwritten, k)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_prestat_get",
        |mut c: Caller<'_, BodyCtx>, fd: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                match ctx.syscall(Syscall::FdPrestatGet { fd })? {
                    Reply::PrestatDir { name_len } => {
                        m.put_u32(out, 0)?;
                        Ok(m.put_u32(out + 4, name_len)?)
                    }
                    _ => Err(bad_reply("fd_prestat_get")),
                }
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |mut c: Caller<'_, BodyCtx>, fd: u32, path: u32, len: u32| {
            finish(with(&mut c, |m, ctx| {
                let name = expect_bytes(ctx, Syscall::FdPrestatDirName { fd })?;
                if name.len() > len as usize {
                    return Err(Errno::Nametoolong.into());
                }
                Ok(m.put(path, &name)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_readdir",
        |mut c: Caller<'_, BodyCtx>, fd: u32, buf: u32, len: u32, cookie: u64, used: u32| {
            finish(with(&mut c, |m, ctx| {
                m.range(buf, len)?;
                let entries: Vec<Dirent> = match ctx.syscall(Syscall::FdReaddir {
                    fd,
                    cookie,
                    buf_len: len,
                })? {
                    Reply::Dirents(d) => d,
                    _ => return Err(bad_reply("fd_readdir")),
                };
                let bytes = abi::encode_dirents(&entries, len as usize);
                m.put(buf, &bytes)?;
                Ok(m.put_u32(used, bytes.len() as u32)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_renumber",
        |mut c: Caller<'_, BodyCtx>, from: u32, to: u32| {
            finish(with(&mut c, |_, ctx| {
                expect_unit(ctx, Syscall::FdRenumber { from, to })
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_seek",
        |mut c: Caller<'_, BodyCtx>, fd: u32, offset: i64, whence: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let whence = u8::try_from(whence)
                    .ok()
                    .and_then(Whence::from_raw)
                    .ok_or(Errno::Inval)?;
                let pos = expect_filesize(ctx, Syscall::FdSeek { fd, offset, whence })?;
                Ok(m.put_u64(out, pos)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "fd_tell",
        |mut c: Caller<'_, BodyCtx>, fd: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let pos = expect_filesize(ctx, Syscall::FdTell { fd })?;
                Ok(m.put_u64(out, pos)?)
            }))
        },
    )?;

    // Paths.
    l.func_wrap(
        MODULE,
        "path_create_directory",
        |mut c: Caller<'_, BodyCtx>, fd: u32, p: u32, pl: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                expect_unit(ctx, Syscall::PathCreateDirectory { fd, path })
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_filestat_get",
        |mut c: Caller<'_, BodyCtx>, fd: u32, flags: u32, p: u32, pl: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                let st = expect_filestat(ctx, Syscall::PathFilestatGet { fd, flags, path })?;
                Ok(m.put_filestat(out, &st)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_filestat_set_times",
        |mut c: Caller<'_, BodyCtx>,
         fd: u32,
         flags: u32,
         p: u32,
         pl: u32,
         atim: u64,
         mtim: u64,
         fst: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                let fst_flags = u16::try_from(fst).map_err(|_| Errno::Inval)?;
                expect_unit(
                    ctx,
                    Syscall::PathFilestatSetTimes {
                        fd,
                        flags,
                        path,
                        atim,
                        mtim,
                        fst_flags,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_link",
        |mut c: Caller<'_, BodyCtx>,
         old_fd: u32,
         old_flags: u32,
         op: u32,
         opl: u32,
         new_fd: u32,
         np: u32,
         npl: u32| {
            finish(with(&mut c, |m, ctx| {
                let old_path = m.path(op, opl)?;
                let new_path = m.path(np, npl)?;
                expect_unit(
                    ctx,
                    Syscall::PathLink {
                        old_fd,
                        old_flags,
                        old_path,
                        new_fd,
                        new_path,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_open",
        |mut c: Caller<'_, BodyCtx>,
         fd: u32,
         dirflags: u32,
         p: u32,
         pl: u32,
         oflags: u32,
         base: u64,
         inheriting: u64,
         fdflags: u32,
         out: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                let oflags = u16::try_from(oflags).map_err(|_| Errno::Inval)?;
                let fdflags = u16::try_from(fdflags).map_err(|_| Errno::Inval)?;
                let new = expect_fd(
                    ctx,
                    Syscall::PathOpen {
                        fd,
                        dirflags,
                        path,
                        oflags,
                        rights_base: base,
                        rights_inheriting: inheriting,
                        fdflags,
                    },
                )?;
                Ok(m.put_u32(out, new)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_readlink",
        |mut c: Caller<'_, BodyCtx>, fd: u32, p: u32, pl: u32, buf: u32, len: u32, used: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                let target = expect_bytes(ctx, Syscall::PathReadlink { fd, path })?;
                let k = target.len().min(len as usize);
                m.put(buf, &target[..k])?;
                Ok(m.put_u32(used, k as u32)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_remove_directory",
        |mut c: Caller<'_, BodyCtx>, fd: u32, p: u32, pl: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                expect_unit(ctx, Syscall::PathRemoveDirectory { fd, path })
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_rename",
        |mut c: Caller<'_, BodyCtx>,
         old_fd: u32,
         op: u32,
         opl: u32,
         new_fd: u32,
         np: u32,
         npl: u32| {
            finish(with(&mut c, |m, ctx| {
                let old_path = m.path(op, opl)?;
                let new_path = m.path(np, npl)?;
                expect_unit(
                    ctx,
                    Syscall::PathRename {
                        old_fd,
                        old_path,
                        new_fd,
                        new_path,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_symlink",
        |mut c: Caller<'_, BodyCtx>, op: u32, opl: u32, fd: u32, np: u32, npl: u32| {
            finish(with(&mut c, |m, ctx| {
                let old_path = m.path(op, opl)?;
                let new_path = m.path(np, npl)?;
                expect_unit(
                    ctx,
                    Syscall::PathSymlink {
                        old_path,
                        fd,
                        new_path,
                    },
                )
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "path_unlink_file",
        |mut c: Caller<'_, BodyCtx>, fd: u32, p: u32, pl: u32| {
            finish(with(&mut c, |m, ctx| {
                let path = m.path(p, pl)?;
                expect_unit(ctx, Syscall::PathUnlinkFile { fd, path })
            }))
        },
    )?;

    // Sockets (only ever preopened ones; the guest cannot create them).
    l.func_wrap(
        MODULE,
        "sock_accept",
        |mut c: Caller<'_, BodyCtx>, fd: u32, flags: u32, out: u32| {
            finish(with(&mut c, |m, ctx| {
                let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
                let new = expect_fd(ctx, Syscall::SockAccept { fd, flags })?;
                Ok(m.put_u32(out, new)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "sock_recv",
        |mut c: Caller<'_, BodyCtx>,
         fd: u32,
         iovs: u32,
         n: u32,
         flags: u32,
         nread: u32,
         roflags: u32| {
            finish(with(&mut c, |m, ctx| {
                let (buf, len) = m.first_iovec(iovs, n)?.unwrap_or((0, 0));
                let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
                match ctx.syscall(Syscall::SockRecv { fd, len, flags })? {
                    Reply::Recv { data, roflags: ro } => {
                        let k = data.len().min(len as usize);
                        m.put(buf, &data[..k])?;
                        m.put_u32(nread, k as u32)?;
                        Ok(m.put_u16(roflags, ro)?)
                    }
                    _ => Err(bad_reply("sock_recv")),
                }
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "sock_send",
        |mut c: Caller<'_, BodyCtx>, fd: u32, iovs: u32, n: u32, flags: u32, nwritten: u32| {
            finish(with(&mut c, |m, ctx| {
                let data = m.gather(iovs, n)?;
                let flags = u16::try_from(flags).map_err(|_| Errno::Inval)?;
                let k = expect_size(ctx, Syscall::SockSend { fd, data, flags })?;
                Ok(m.put_u32(nwritten, k)?)
            }))
        },
    )?;
    l.func_wrap(
        MODULE,
        "sock_shutdown",
        |mut c: Caller<'_, BodyCtx>, fd: u32, how: u32| {
            finish(with(&mut c, |_, ctx| {
                let how = u8::try_from(how).map_err(|_| Errno::Inval)?;
                expect_unit(ctx, Syscall::SockShutdown { fd, how })
            }))
        },
    )?;
    add_ssi(l)
}

/// The `ssi` host API: results are values (≥ 0) or a negated WASI errno.
pub const SSI_MODULE: &str = "ssi";

/// Every function of the `ssi` host API.
pub const SSI_FUNCTIONS: &[&str] = &[
    "getpid",
    "getppid",
    "getpgid",
    "getsid",
    "kill",
    "spawn",
    "waitpid",
    "setpgid",
    "setsid",
    "sigaction",
    "sigprocmask",
];

/// A value, or `-errno` for the guest; a host failure stops it.
fn value(r: R<i32>) -> wasmtime::Result<i32> {
    match r {
        Ok(v) => Ok(v),
        Err(Fail::Errno(e)) => Ok(-(e as i32)),
        Err(Fail::Trap(t)) => Err(t),
    }
}

fn identity(ctx: &mut BodyCtx, pid: i32) -> R<ssi_deputy::Identity> {
    let pid = u32::try_from(pid).map_err(|_| Errno::Inval)?;
    ask(ctx, Syscall::ProcIdentity { pid }, |r| match r {
        Reply::Identity(i) => Some(i),
        _ => None,
    })
}

/// Pids are below 2^31, so they are positive as `i32`.
fn as_i32(pid: u32) -> R<i32> {
    i32::try_from(pid).map_err(|_| Fail::Errno(Errno::Overflow))
}

fn add_ssi(l: &mut Linker<BodyCtx>) -> wasmtime::Result<()> {
    l.func_wrap(SSI_MODULE, "getpid", |mut c: Caller<'_, BodyCtx>| {
        value(identity(c.data_mut(), 0).and_then(|i| as_i32(i.pid)))
    })?;
    l.func_wrap(SSI_MODULE, "getppid", |mut c: Caller<'_, BodyCtx>| {
        value(identity(c.data_mut(), 0).and_then(|i| as_i32(i.ppid)))
    })?;
    l.func_wrap(
        SSI_MODULE,
        "getpgid",
        |mut c: Caller<'_, BodyCtx>, pid: i32| {
            value(identity(c.data_mut(), pid).and_then(|i| as_i32(i.pgid)))
        },
    )?;
    l.func_wrap(
        SSI_MODULE,
        "getsid",
        |mut c: Caller<'_, BodyCtx>, pid: i32| {
            value(identity(c.data_mut(), pid).and_then(|i| as_i32(i.sid)))
        },
    )?;
    l.func_wrap(
        SSI_MODULE,
        "kill",
        |mut c: Caller<'_, BodyCtx>, target: i32, signal: i32| {
            value((|| {
                let signal = u8::try_from(signal)
                    .ok()
                    .filter(|s| *s <= 31)
                    .ok_or(Errno::Inval)?;
                let ended = ask(
                    c.data_mut(),
                    Syscall::ProcKill { target, signal },
                    |r| match r {
                        Reply::Size(_) => Some(None),
                        Reply::Terminated(n) => Some(Some(n)),
                        _ => None,
                    },
                )?;
                match ended {
                    Some(n) => Err(Fail::Trap(crate::body::Terminated(n).into())),
                    None => Ok(0),
                }
            })())
        },
    )?;
    l.func_wrap(
        SSI_MODULE,
        "spawn",
        |mut c: Caller<'_, BodyCtx>,
         module: u32,
         module_len: u32,
         argv: u32,
         argc: u32,
         envp: u32,
         envc: u32,
         fds: u32,
         nfds: u32,
         node: i32|
         -> wasmtime::Result<i32> {
            value(with(&mut c, |m, ctx| {
                let list = |m: &Mem<'_>, ptr, count| -> Result<Vec<Vec<u8>>, Fault> {
                    m.iovecs(ptr, count)?
                        .into_iter()
                        .map(|(p, n)| Ok(m.get(p, n)?.to_vec()))
                        .collect()
                };
                // (child fd, caller fd) pairs, laid out as iovecs are.
                let pairs = m.iovecs(fds, nfds)?;
                let req = ssi_deputy::abi::SpawnRequest {
                    module: m.get(module, module_len)?.to_vec(),
                    args: list(m, argv, argc)?,
                    env: list(m, envp, envc)?,
                    fds: pairs,
                    node: u16::try_from(node).map_err(|_| Errno::Inval)?,
                };
                let pid = expect_size(ctx, Syscall::ProcSpawn(req))?;
                as_i32(pid)
            }))
        },
    )?;
    l.func_wrap(
        SSI_MODULE,
        "waitpid",
        |mut c: Caller<'_, BodyCtx>, target: i32, status: u32, options: i32| {
            end_rewind(&mut c, "waitpid")?;
            loop {
                let r = with(&mut c, |m, ctx| {
                    let options = u32::try_from(options).map_err(|_| Errno::Inval)?;
                    let (pid, word) =
                        ask(ctx, Syscall::ProcWait { target, options }, |r| match r {
                            Reply::Waited { pid, status } => Some((pid, status)),
                            _ => None,
                        })?;
                    if pid != 0 && status != 0 {
                        m.put_u32(status, word)?;
                    }
                    as_i32(pid)
                });
                match r {
                    // Cut short for a freeze: unwind, and wait again after the
                    // rewind. For signals: run their handlers, and wait again.
                    // A cut left over from a freeze that is over: wait again
                    // (a kill stops the body at the next call).
                    Err(Fail::Errno(Errno::Intr)) => {
                        if c.data().control.freezing() && !c.data().in_handler {
                            start_unwind(&mut c, "waitpid")?;
                            return Ok(0);
                        }
                        if !c.data().in_handler {
                            c.data().control.take_signalled();
                            run_handlers(&mut c)?;
                        }
                    }
                    r => return value(r),
                }
            }
        },
    )?;
    l.func_wrap(
        SSI_MODULE,
        "setpgid",
        |mut c: Caller<'_, BodyCtx>, pid: i32, pgid: i32| {
            value((|| {
                let pid = u32::try_from(pid).map_err(|_| Errno::Inval)?;
                let pgid = u32::try_from(pgid).map_err(|_| Errno::Inval)?;
                expect_unit(c.data_mut(), Syscall::ProcSetpgid { pid, pgid })?;
                Ok(0)
            })())
        },
    )?;
    l.func_wrap(SSI_MODULE, "setsid", |mut c: Caller<'_, BodyCtx>| {
        value(expect_size(c.data_mut(), Syscall::ProcSetsid).and_then(as_i32))
    })?;
    l.func_wrap(
        SSI_MODULE,
        "sigaction",
        |mut c: Caller<'_, BodyCtx>, signal: i32, action: i32, name: u32, len: u32| {
            let handler = match with(&mut c, |m, _| Ok(m.get(name, len)?.to_vec())) {
                Ok(h) => h,
                Err(e) => return value(Err(e)),
            };
            // A handler must be an export the body can call with the signal.
            if action == 2 {
                let callable = std::str::from_utf8(&handler)
                    .ok()
                    .and_then(|n| c.get_export(n))
                    .and_then(Extern::into_func)
                    .is_some_and(|f| f.typed::<i32, ()>(&c).is_ok());
                if !callable {
                    return Ok(-(Errno::Inval as i32));
                }
            }
            value((|| {
                let signal = u8::try_from(signal).map_err(|_| Errno::Inval)?;
                let action = u8::try_from(action).map_err(|_| Errno::Inval)?;
                let old = expect_size(
                    c.data_mut(),
                    Syscall::ProcSigaction {
                        signal,
                        action,
                        handler,
                    },
                )?;
                as_i32(old)
            })())
        },
    )?;
    l.func_wrap(
        SSI_MODULE,
        "sigprocmask",
        |mut c: Caller<'_, BodyCtx>, how: i32, set: i32| -> wasmtime::Result<i32> {
            let r = (|| {
                let how = u8::try_from(how).map_err(|_| Errno::Inval)?;
                ask(
                    c.data_mut(),
                    Syscall::ProcSigmask {
                        how,
                        set: set as u32,
                    },
                    |r| match r {
                        Reply::Size(old) => Some(Ok(old)),
                        Reply::Terminated(n) => Some(Err(n)),
                        _ => None,
                    },
                )
            })();
            match r {
                Ok(Ok(old)) => {
                    // Signals it unblocked that were pending run before it returns.
                    if !c.data().in_handler {
                        run_handlers(&mut c)?;
                    }
                    Ok(old as i32)
                }
                Ok(Err(n)) => Err(crate::body::Terminated(n).into()),
                Err(e) => value(Err(e)),
            }
        },
    )?;
    Ok(())
}

/// Every function of `wasi_snapshot_preview1`, for checking a module's imports.
pub const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

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
