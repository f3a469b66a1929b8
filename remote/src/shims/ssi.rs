//! The `ssi` host API, for programs that import it: identities, signals
//! (`kill`, `sigaction`, `sigprocmask`), and families (`spawn`, `waitpid`,
//! `setpgid`, `setsid`). Results are values (≥ 0) or a negated WASI errno.
//!
//! Must not know: process tables (the deputy answers every call).

use super::guest::{Fail, Fault, Mem, R, ask, reply, with};
use super::handlers::run_handlers;
use crate::ctx::{BodyCtx, end_rewind, held_for_freeze, start_unwind};
use ssi_deputy::{Errno, Reply, Syscall};
use wasmtime::{Caller, Extern, Linker};

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

pub(crate) fn add_ssi(l: &mut Linker<BodyCtx>) -> wasmtime::Result<()> {
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
                    Some(n) => Err(Fail::Trap(crate::ctx::Terminated(n).into())),
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
                let pid = reply!(ctx, Syscall::ProcSpawn(req), Reply::Size(n) => n)?;
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
                        if !c.data().in_handler && held_for_freeze(&mut c) {
                            continue;
                        }
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
                reply!(c.data_mut(), Syscall::ProcSetpgid { pid, pgid }, Reply::Unit => ())?;
                Ok(0)
            })())
        },
    )?;
    l.func_wrap(SSI_MODULE, "setsid", |mut c: Caller<'_, BodyCtx>| {
        value(reply!(c.data_mut(), Syscall::ProcSetsid, Reply::Size(n) => n).and_then(as_i32))
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
                // (Of the body's instance: the caller may be a module of
                // rewind copies linked to it.)
                let instance = c.data().instance;
                let callable = std::str::from_utf8(&handler)
                    .ok()
                    .zip(instance)
                    .and_then(|(n, i)| i.get_export(&mut c, n))
                    .and_then(Extern::into_func)
                    .is_some_and(|f| f.typed::<i32, ()>(&c).is_ok());
                if !callable {
                    return Ok(-(Errno::Inval as i32));
                }
            }
            value((|| {
                let signal = u8::try_from(signal).map_err(|_| Errno::Inval)?;
                let action = u8::try_from(action).map_err(|_| Errno::Inval)?;
                let call = Syscall::ProcSigaction {
                    signal,
                    action,
                    handler,
                };
                let old = reply!(c.data_mut(), call, Reply::Size(n) => n)?;
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
                Ok(Err(n)) => Err(crate::ctx::Terminated(n).into()),
                Err(e) => value(Err(e)),
            }
        },
    )?;
    Ok(())
}
