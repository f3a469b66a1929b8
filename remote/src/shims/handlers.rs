//! Signal handlers run from inside a host call, and calls cut short: a call
//! that waits (a read, a poll, `waitpid`) and returns `EINTR` either runs the
//! pending handlers and is made again (`made_again`, as with
//! `SA_RESTART`), or, when the body is freezing, unwinds it so that the call
//! is made again after the rewind (`finish_or_freeze`).
//!
//! Must not know: which calls wait (the tables say so).

use super::guest::{Fail, R, finish};
use crate::ctx::{BodyCtx, get_i32, held_for_freeze, set_i32, start_unwind};
use crate::instrument::{REWINDING, UNWINDING};
use ssi_deputy::{Errno, Reply, Syscall};
use wasmtime::{AsContextMut, Caller};

/// As [`finish`], except that a call cut short (`EINTR`) because the body is
/// freezing unwinds the body instead: the call is made again once the body is
/// rewound, so the guest never sees the interruption.
pub(crate) fn finish_or_freeze(
    c: &mut Caller<'_, BodyCtx>,
    name: &str,
    r: R<()>,
) -> wasmtime::Result<i32> {
    if matches!(r, Err(Fail::Errno(Errno::Intr))) && c.data().control.freezing() {
        start_unwind(c, name)?;
        return Ok(0);
    }
    finish(r)
}

/// Whether a call that waits and was cut short (`EINTR`) is made again
/// (true) instead of ending:
///
/// - with a freeze under way, while a pinned call runs (see
///   [`held_for_freeze`]); otherwise the body unwinds ([`finish_or_freeze`]);
/// - with none: the handlers of the signals pending run now, and the call is
///   made again, as with `SA_RESTART`. It is made again too when no handler
///   ran: the cut came before the freeze it was for had reached the body (the
///   home cuts while it asks the body's node to freeze, and goes on cutting
///   until the body is frozen), or was left from a freeze that is over. The
///   guest never sees it.
pub(crate) fn made_again(c: &mut Caller<'_, BodyCtx>, r: &R<()>) -> wasmtime::Result<bool> {
    if !matches!(r, Err(Fail::Errno(Errno::Intr))) {
        return Ok(false);
    }
    if c.data().control.freezing() {
        return Ok(held_for_freeze(c));
    }
    if c.data().in_handler {
        return Ok(false);
    }
    if c.data().control.killing() {
        return Err(crate::ctx::Killed.into());
    }
    c.data().control.take_signalled();
    run_handlers(c)?;
    Ok(true)
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
pub(crate) fn call_handler(
    mut c: impl AsContextMut<Data = BodyCtx>,
    handler: &wasmtime::TypedFunc<i32, ()>,
    sig: i32,
) -> wasmtime::Result<()> {
    let Some(u) = c.as_context().data().unwinder.clone() else {
        return handler.call(&mut c, sig);
    };
    // An instance without rewind copies (a program's runnable part) could
    // not put the handler back: it runs as a pinned call, which nothing
    // under it unwinds (a freeze waits for its end).
    if u.rewind.is_none() {
        let pin = |c: &mut _, by: i32| match &u.nounwind {
            Some(g) => {
                let n = get_i32(&mut *c, g);
                set_i32(&mut *c, g, n + by)
            }
            None => Ok(()),
        };
        pin(&mut c, 1)?;
        let r = handler.call(&mut c, sig);
        pin(&mut c, -1)?;
        return r;
    }
    handler.call(&mut c, sig)?;
    while u.state(&mut c) == UNWINDING {
        let control = c.as_context().data().control.clone();
        if control.killing() {
            return Err(crate::ctx::Killed.into());
        }
        control.lower_in_handler();
        let rewind = u.rewind_of_top(&mut c)?.typed::<i32, ()>(&c)?;
        u.set_state(&mut c, REWINDING)?;
        rewind.call(&mut c, sig)?;
    }
    Ok(())
}
