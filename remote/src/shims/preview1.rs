//! The `wasi_snapshot_preview1` imports of a body, as one table.
//!
//! Each shim reads its arguments out of guest memory, answers locally if the call
//! is not tied to home (args, environment, clocks, randomness, `sched_yield`,
//! `poll_oneoff` on clocks alone), and otherwise builds a [`Syscall`], sends it
//! down the body's deputy link, and writes the reply back into guest memory.
//! Adding or fixing a call touches its one entry in `preview1!`.

use super::guest::{Fail, Fault, Mem, R, bad_reply, finish, reply, with};
use super::handlers::{finish_or_freeze, made_again};
use crate::ctx::{BodyCtx, ProcExit, end_rewind};
use ssi_deputy::abi::{self, Dirent, Event, Subscription, SubscriptionKind, Whence};
use ssi_deputy::{Errno, Reply, Syscall};
use wasmtime::{Caller, Linker};

/// The import module every shim lives in.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// The functions of `wasi_snapshot_preview1`, one entry each: how it waits
/// (`calls` answer at once; `waits` can be cut short, for signal handlers,
/// which run before the call is made again, or for a freeze, which unwinds
/// the body and makes the call again after the rewind), its name, its
/// parameters as the guest passes them, and its work on the guest's memory
/// `m` and the body's context `ctx`, whose `Err` becomes the guest's errno
/// (or stops it). The few that cannot take this shape (`poll_oneoff`,
/// `proc_exit`, `proc_raise`, `sched_yield`) follow, written out.
macro_rules! preview1 {
    ($( $mode:ident $name:ident ( $($arg:ident : $ty:ty),* ) |$m:pat_param, $ctx:pat_param| $body:block )*) => {
        /// Every function of `wasi_snapshot_preview1`, for checking a module's imports.
        pub const FUNCTIONS: &[&str] = &[
            $(stringify!($name),)* "poll_oneoff", "proc_exit", "proc_raise", "sched_yield",
        ];

        fn add_table(l: &mut Linker<BodyCtx>) -> wasmtime::Result<()> {
            $( preview1!(@$mode l, $name ($($arg: $ty),*) |$m, $ctx| $body); )*
            Ok(())
        }
    };
    (@calls $l:ident, $name:ident ($($arg:ident : $ty:ty),*) |$m:pat_param, $ctx:pat_param| $body:block) => {
        $l.func_wrap(MODULE, stringify!($name), |mut c: Caller<'_, BodyCtx>, $($arg: $ty),*| {
            finish(with(&mut c, |$m, $ctx| $body))
        })?;
    };
    (@waits $l:ident, $name:ident ($($arg:ident : $ty:ty),*) |$m:pat_param, $ctx:pat_param| $body:block) => {
        $l.func_wrap(MODULE, stringify!($name), |mut c: Caller<'_, BodyCtx>, $($arg: $ty),*| {
            end_rewind(&mut c, stringify!($name))?;
            loop {
                let r = with(&mut c, |$m, $ctx| $body);
                if made_again(&mut c, &r)? {
                    continue;
                }
                return finish_or_freeze(&mut c, stringify!($name), r);
            }
        })?;
    };
}

/// A flags argument the guest passes as `u32` and the call takes narrower.
fn narrow<T: TryFrom<u32>>(v: u32) -> Result<T, Errno> {
    T::try_from(v).map_err(|_| Errno::Inval)
}

preview1! {
    // Answered by the body.
    calls args_get(argv: u32, buf: u32) |m, ctx| { put_strings(m, &ctx.args, argv, buf) }
    calls args_sizes_get(n: u32, size: u32) |m, ctx| { put_sizes(m, &ctx.args, n, size) }
    calls environ_get(envp: u32, buf: u32) |m, ctx| { put_strings(m, &ctx.env, envp, buf) }
    calls environ_sizes_get(n: u32, size: u32) |m, ctx| { put_sizes(m, &ctx.env, n, size) }
    calls clock_res_get(id: u32, out: u32) |m, ctx| {
        let res = ctx.clock_res(id)?;
        Ok(m.put_u64(out, res)?)
    }
    calls clock_time_get(id: u32, _precision: u64, out: u32) |m, ctx| {
        let now = ctx.clock_now(id)?;
        Ok(m.put_u64(out, now)?)
    }
    calls random_get(buf: u32, len: u32) |m, _| {
        rand::RngCore::fill_bytes(&mut rand::rng(), m.get_mut(buf, len)?);
        Ok(())
    }

    // Descriptors: everything below goes home.
    calls fd_advise(fd: u32, offset: u64, len: u64, advice: u32) |_, ctx| {
        let advice = narrow(advice)?;
        reply!(ctx, Syscall::FdAdvise { fd, offset, len, advice }, Reply::Unit => ())
    }
    calls fd_allocate(fd: u32, offset: u64, len: u64) |_, ctx| {
        reply!(ctx, Syscall::FdAllocate { fd, offset, len }, Reply::Unit => ())
    }
    calls fd_close(fd: u32) |_, ctx| { reply!(ctx, Syscall::FdClose { fd }, Reply::Unit => ()) }
    calls fd_datasync(fd: u32) |_, ctx| { reply!(ctx, Syscall::FdDatasync { fd }, Reply::Unit => ()) }
    calls fd_sync(fd: u32) |_, ctx| { reply!(ctx, Syscall::FdSync { fd }, Reply::Unit => ()) }
    calls fd_fdstat_get(fd: u32, out: u32) |m, ctx| {
        let st = reply!(ctx, Syscall::FdFdstatGet { fd }, Reply::Fdstat(st) => st)?;
        let mut b = [0u8; 24];
        b[0] = st.filetype;
        b[2..4].copy_from_slice(&st.flags.to_le_bytes());
        b[8..16].copy_from_slice(&st.rights_base.to_le_bytes());
        b[16..24].copy_from_slice(&st.rights_inheriting.to_le_bytes());
        Ok(m.put(out, &b)?)
    }
    calls fd_fdstat_set_flags(fd: u32, flags: u32) |_, ctx| {
        let flags = narrow(flags)?;
        reply!(ctx, Syscall::FdFdstatSetFlags { fd, flags }, Reply::Unit => ())
    }
    calls fd_fdstat_set_rights(fd: u32, base: u64, inheriting: u64) |_, ctx| {
        let call = Syscall::FdFdstatSetRights { fd, rights_base: base, rights_inheriting: inheriting };
        reply!(ctx, call, Reply::Unit => ())
    }
    calls fd_filestat_get(fd: u32, out: u32) |m, ctx| {
        let st = reply!(ctx, Syscall::FdFilestatGet { fd }, Reply::Filestat(st) => st)?;
        Ok(m.put_filestat(out, &st)?)
    }
    calls fd_filestat_set_size(fd: u32, size: u64) |_, ctx| {
        reply!(ctx, Syscall::FdFilestatSetSize { fd, size }, Reply::Unit => ())
    }
    calls fd_filestat_set_times(fd: u32, atim: u64, mtim: u64, fst: u32) |_, ctx| {
        let fst_flags = narrow(fst)?;
        reply!(ctx, Syscall::FdFilestatSetTimes { fd, atim, mtim, fst_flags }, Reply::Unit => ())
    }
    waits fd_read(fd: u32, iovs: u32, n: u32, nread: u32) |m, ctx| {
        let (buf, len) = m.first_iovec(iovs, n)?.unwrap_or((0, 0));
        let data = reply!(ctx, Syscall::FdRead { fd, len }, Reply::Bytes(b) => b)?;
        let k = data.len().min(len as usize);
        m.put(buf, &data[..k])?;
        Ok(m.put_u32(nread, k as u32)?)
    }
    calls fd_pread(fd: u32, iovs: u32, n: u32, offset: u64, nread: u32) |m, ctx| {
        let (buf, len) = m.first_iovec(iovs, n)?.unwrap_or((0, 0));
        let data = reply!(ctx, Syscall::FdPread { fd, len, offset }, Reply::Bytes(b) => b)?;
        let k = data.len().min(len as usize);
        m.put(buf, &data[..k])?;
        Ok(m.put_u32(nread, k as u32)?)
    }
    calls fd_write(fd: u32, iovs: u32, n: u32, nwritten: u32) |m, ctx| {
        let data = m.gather(iovs, n)?;
        let k = reply!(ctx, Syscall::FdWrite { fd, data }, Reply::Size(k) => k)?;
        Ok(m.put_u32(nwritten, k)?)
    }
    calls fd_pwrite(fd: u32, iovs: u32, n: u32, offset: u64, nwritten: u32) |m, ctx| {
        let data = m.gather(iovs, n)?;
        let k = reply!(ctx, Syscall::FdPwrite { fd, data, offset }, Reply::Size(k) => k)?;
        Ok(m.put_u32(nwritten, k)?)
    }
    calls fd_prestat_get(fd: u32, out: u32) |m, ctx| {
        let call = Syscall::FdPrestatGet { fd };
        let name_len = reply!(ctx, call, Reply::PrestatDir { name_len } => name_len)?;
        m.put_u32(out, 0)?;
        Ok(m.put_u32(out + 4, name_len)?)
    }
    calls fd_prestat_dir_name(fd: u32, path: u32, len: u32) |m, ctx| {
        let name = reply!(ctx, Syscall::FdPrestatDirName { fd }, Reply::Bytes(b) => b)?;
        if name.len() > len as usize {
            return Err(Errno::Nametoolong.into());
        }
        Ok(m.put(path, &name)?)
    }
    calls fd_readdir(fd: u32, buf: u32, len: u32, cookie: u64, used: u32) |m, ctx| {
        m.range(buf, len)?;
        let call = Syscall::FdReaddir { fd, cookie, buf_len: len };
        let entries: Vec<Dirent> = reply!(ctx, call, Reply::Dirents(d) => d)?;
        let bytes = abi::encode_dirents(&entries, len as usize);
        m.put(buf, &bytes)?;
        Ok(m.put_u32(used, bytes.len() as u32)?)
    }
    calls fd_renumber(from: u32, to: u32) |_, ctx| {
        reply!(ctx, Syscall::FdRenumber { from, to }, Reply::Unit => ())
    }
    calls fd_seek(fd: u32, offset: i64, whence: u32, out: u32) |m, ctx| {
        let whence = u8::try_from(whence)
            .ok()
            .and_then(Whence::from_raw)
            .ok_or(Errno::Inval)?;
        let pos = reply!(ctx, Syscall::FdSeek { fd, offset, whence }, Reply::Filesize(p) => p)?;
        Ok(m.put_u64(out, pos)?)
    }
    calls fd_tell(fd: u32, out: u32) |m, ctx| {
        let pos = reply!(ctx, Syscall::FdTell { fd }, Reply::Filesize(p) => p)?;
        Ok(m.put_u64(out, pos)?)
    }

    // Paths.
    calls path_create_directory(fd: u32, p: u32, pl: u32) |m, ctx| {
        let path = m.path(p, pl)?;
        reply!(ctx, Syscall::PathCreateDirectory { fd, path }, Reply::Unit => ())
    }
    calls path_filestat_get(fd: u32, flags: u32, p: u32, pl: u32, out: u32) |m, ctx| {
        let path = m.path(p, pl)?;
        let call = Syscall::PathFilestatGet { fd, flags, path };
        let st = reply!(ctx, call, Reply::Filestat(st) => st)?;
        Ok(m.put_filestat(out, &st)?)
    }
    calls path_filestat_set_times(
        fd: u32, flags: u32, p: u32, pl: u32, atim: u64, mtim: u64, fst: u32
    ) |m, ctx| {
        let path = m.path(p, pl)?;
        let fst_flags = narrow(fst)?;
        let call = Syscall::PathFilestatSetTimes { fd, flags, path, atim, mtim, fst_flags };
        reply!(ctx, call, Reply::Unit => ())
    }
    calls path_link(
        old_fd: u32, old_flags: u32, op: u32, opl: u32, new_fd: u32, np: u32, npl: u32
    ) |m, ctx| {
        let old_path = m.path(op, opl)?;
        let new_path = m.path(np, npl)?;
        let call = Syscall::PathLink { old_fd, old_flags, old_path, new_fd, new_path };
        reply!(ctx, call, Reply::Unit => ())
    }
    calls path_open(
        fd: u32, dirflags: u32, p: u32, pl: u32, oflags: u32, base: u64, inheriting: u64,
        fdflags: u32, out: u32
    ) |m, ctx| {
        let path = m.path(p, pl)?;
        let oflags = narrow(oflags)?;
        let fdflags = narrow(fdflags)?;
        let call = Syscall::PathOpen {
            fd,
            dirflags,
            path,
            oflags,
            rights_base: base,
            rights_inheriting: inheriting,
            fdflags,
        };
        let new = reply!(ctx, call, Reply::Fd(fd) => fd)?;
        Ok(m.put_u32(out, new)?)
    }
    calls path_readlink(fd: u32, p: u32, pl: u32, buf: u32, len: u32, used: u32) |m, ctx| {
        let path = m.path(p, pl)?;
        let target = reply!(ctx, Syscall::PathReadlink { fd, path }, Reply::Bytes(b) => b)?;
        let k = target.len().min(len as usize);
        m.put(buf, &target[..k])?;
        Ok(m.put_u32(used, k as u32)?)
    }
    calls path_remove_directory(fd: u32, p: u32, pl: u32) |m, ctx| {
        let path = m.path(p, pl)?;
        reply!(ctx, Syscall::PathRemoveDirectory { fd, path }, Reply::Unit => ())
    }
    calls path_rename(old_fd: u32, op: u32, opl: u32, new_fd: u32, np: u32, npl: u32) |m, ctx| {
        let old_path = m.path(op, opl)?;
        let new_path = m.path(np, npl)?;
        let call = Syscall::PathRename { old_fd, old_path, new_fd, new_path };
        reply!(ctx, call, Reply::Unit => ())
    }
    calls path_symlink(op: u32, opl: u32, fd: u32, np: u32, npl: u32) |m, ctx| {
        let old_path = m.path(op, opl)?;
        let new_path = m.path(np, npl)?;
        let call = Syscall::PathSymlink { old_path, fd, new_path };
        reply!(ctx, call, Reply::Unit => ())
    }
    calls path_unlink_file(fd: u32, p: u32, pl: u32) |m, ctx| {
        let path = m.path(p, pl)?;
        reply!(ctx, Syscall::PathUnlinkFile { fd, path }, Reply::Unit => ())
    }

    // Sockets (only ever preopened ones; the guest cannot create them).
    calls sock_accept(fd: u32, flags: u32, out: u32) |m, ctx| {
        let flags = narrow(flags)?;
        let new = reply!(ctx, Syscall::SockAccept { fd, flags }, Reply::Fd(fd) => fd)?;
        Ok(m.put_u32(out, new)?)
    }
    calls sock_recv(fd: u32, iovs: u32, n: u32, flags: u32, nread: u32, roflags: u32) |m, ctx| {
        let (buf, len) = m.first_iovec(iovs, n)?.unwrap_or((0, 0));
        let flags = narrow(flags)?;
        let call = Syscall::SockRecv { fd, len, flags };
        let (data, ro) = reply!(ctx, call, Reply::Recv { data, roflags } => (data, roflags))?;
        let k = data.len().min(len as usize);
        m.put(buf, &data[..k])?;
        m.put_u32(nread, k as u32)?;
        Ok(m.put_u16(roflags, ro)?)
    }
    calls sock_send(fd: u32, iovs: u32, n: u32, flags: u32, nwritten: u32) |m, ctx| {
        let data = m.gather(iovs, n)?;
        let flags = narrow(flags)?;
        let k = reply!(ctx, Syscall::SockSend { fd, data, flags }, Reply::Size(k) => k)?;
        Ok(m.put_u32(nwritten, k)?)
    }
    calls sock_shutdown(fd: u32, how: u32) |_, ctx| {
        let how = narrow(how)?;
        reply!(ctx, Syscall::SockShutdown { fd, how }, Reply::Unit => ())
    }
}

/// Registers every `wasi_snapshot_preview1` function in `linker`.
pub(crate) fn add_to_linker(l: &mut Linker<BodyCtx>) -> wasmtime::Result<()> {
    add_table(l)?;
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
                if made_again(&mut c, &r)? {
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
    Ok(())
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
                return Err(Fail::Trap(crate::ctx::Killed.into()));
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
