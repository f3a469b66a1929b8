//! The deputy's calls too long to sit in `Deputy::call`'s match: `path_open`
//! (with the rights and flags wasmtime's preview1 gives), `fd_fdstat_get`,
//! `poll_oneoff` over home descriptors and clocks, and what `spawn` needs from
//! a parent's deputy: a module read by guest path (resolved against the
//! preopens as wasi-libc does) and the child's descriptor table.

use crate::abi::Identity;
use crate::abi::*;
use crate::convert::{errno, fdflags_to_raw, filetype_raw, open_at, utf8, wc};
use crate::deputy::{Deputy, MAX_MODULE, PREOPEN_INHERITING, PREOPEN_RIGHTS};
use crate::signal::{Action, Signals};
use crate::table::{FdKind, FdMeta, FdTable, Handle, join_rel};
use wasi_common::dir::OpenResult;
use wasi_common::file::{FdFlags, OFlags};
use wasi_common::sched::{Poll, SubscriptionResult, Userdata};

impl Deputy {
    /// Reads a module for `spawn`: `path` is resolved as the guest's C library
    /// does, against the preopened directory whose name is its longest prefix.
    pub(crate) fn read_module(&self, path: &str) -> Result<Vec<u8>, Errno> {
        use std::io::IoSliceMut;
        let mut best: Option<(usize, &str, usize)> = None;
        for (index, p) in self.preopens.iter().enumerate() {
            let name = p.guest.trim_end_matches('/');
            let rest = if name.is_empty() || name == "." {
                (!path.starts_with('/')).then_some(path)
            } else if path == name {
                Some(".")
            } else {
                path.strip_prefix(name).and_then(|r| r.strip_prefix('/'))
            };
            if let Some(rest) = rest
                && best.is_none_or(|(len, _, _)| name.len() > len)
            {
                best = Some((name.len(), rest, index));
            }
        }
        let (_, rel, index) = best.ok_or(Errno::Noent)?;
        let dir = self.table.dir_of_preopen(index).ok_or(Errno::Noent)?;
        let file =
            match wc(dir.open_file(true, rel, OFlags::empty(), true, false, FdFlags::empty()))? {
                OpenResult::File(f) => f,
                OpenResult::Dir(_) => return Err(Errno::Isdir),
            };
        let size = wc(file.get_filestat())?.size;
        if size > MAX_MODULE {
            return Err(Errno::Fbig);
        }
        let mut bytes = vec![0u8; size as usize];
        let mut got = 0;
        while got < bytes.len() {
            let n = wc(file.read_vectored(&mut [IoSliceMut::new(&mut bytes[got..])]))? as usize;
            if n == 0 {
                bytes.truncate(got);
                break;
            }
            got += n;
        }
        Ok(bytes)
    }

    /// A deputy for a child: the descriptors `fds` names as (child fd, own
    /// fd) pairs, or every one if `fds` is empty, shared with this process
    /// (the same open files and offsets), and the same preopened directories.
    pub(crate) fn for_child(&self, fds: &[(Fd, Fd)]) -> Result<Deputy, Errno> {
        let mut table = FdTable::default();
        if fds.is_empty() {
            for (fd, e) in self.table.iter() {
                table.insert_at(fd, e.clone());
            }
        } else {
            for (i, (child, own)) in fds.iter().enumerate() {
                if fds[..i].iter().any(|(c, _)| c == child) {
                    return Err(Errno::Inval);
                }
                table.insert_at(*child, self.table.get(*own)?.clone());
            }
        }
        // As after fork and exec: the mask and ignored signals are kept,
        // handlers (of the parent's module) are not, nothing is pending.
        let mut signals = self.signals.snapshot();
        for a in &mut signals.actions {
            if matches!(a, Action::Handle(_)) {
                *a = Action::Default;
            }
        }
        signals.pending = 0;
        Ok(Deputy {
            table,
            input_wait: self.input_wait.clone(),
            preopens: self.preopens.clone(),
            clocks: wasi_common::sync::clocks_ctx(),
            sched: wasi_common::sync::sched::sched_ctx(),
            identity: Identity::default(),
            processes: None,
            signals: std::sync::Arc::new(Signals::from_table(signals)),
        })
    }

    /// A poll on the input that waits itself ([`crate::InputWait`]) and on
    /// clocks only: it waits there for input or the first deadline, as the
    /// host's poll would on a descriptor. `None` for any other poll (one
    /// that also waits on another descriptor counts that input as readable
    /// at once, below).
    fn poll_waitable_input(&self, subs: &[Subscription]) -> Result<Option<Vec<Event>>, Errno> {
        let Some((input, wait)) = &self.input_wait else {
            return Ok(None);
        };
        let mut reads = Vec::new();
        let mut shortest: Option<u64> = None;
        for sub in subs {
            match sub.kind {
                SubscriptionKind::FdRead(fd) => match &self.entry(fd)?.handle {
                    Handle::File(f)
                        if std::ptr::addr_eq(
                            std::sync::Arc::as_ptr(f),
                            std::sync::Arc::as_ptr(input),
                        ) =>
                    {
                        reads.push(sub.userdata)
                    }
                    _ => return Ok(None),
                },
                SubscriptionKind::Clock { id, timeout, .. } => {
                    if id != clockid::MONOTONIC && id != clockid::REALTIME {
                        return Err(Errno::Inval);
                    }
                    shortest = Some(shortest.map_or(timeout, |s| s.min(timeout)));
                }
                SubscriptionKind::FdWrite(_) => return Ok(None),
            }
        }
        if reads.is_empty() {
            return Ok(None);
        }
        let deadline = shortest.and_then(|ns| {
            std::time::Instant::now().checked_add(std::time::Duration::from_nanos(ns))
        });
        let events = if wait.wait_readable(deadline)? {
            let nbytes = input.num_ready_bytes().unwrap_or(0);
            reads
                .into_iter()
                .map(|userdata| Event {
                    userdata,
                    error: 0,
                    eventtype: eventtype::FD_READ,
                    nbytes,
                    flags: 0,
                })
                .collect()
        } else {
            subs.iter()
                .filter(|s| matches!(s.kind, SubscriptionKind::Clock { timeout, .. } if Some(timeout) == shortest))
                .map(|s| Event {
                    userdata: s.userdata,
                    error: 0,
                    eventtype: eventtype::CLOCK,
                    nbytes: 0,
                    flags: 0,
                })
                .collect()
        };
        Ok(Some(events))
    }

    pub(crate) fn fdstat(&self, fd: Fd) -> Result<Fdstat, Errno> {
        let e = self.entry(fd)?;
        match (&e.handle, e.meta.kind) {
            (Handle::File(f), FdKind::Stdio(_)) => Ok(Fdstat {
                filetype: if f.isatty() {
                    filetype::CHARACTER_DEVICE
                } else {
                    filetype::UNKNOWN
                },
                flags: 0,
                rights_base: e.meta.rights_base,
                rights_inheriting: e.meta.rights_base,
            }),
            (Handle::Dir(_), FdKind::Preopen) => Ok(Fdstat {
                filetype: filetype::DIRECTORY,
                flags: 0,
                rights_base: PREOPEN_RIGHTS,
                rights_inheriting: PREOPEN_INHERITING,
            }),
            (Handle::Dir(_), _) => {
                let r = rights::ALL
                    & !(rights::FD_SEEK
                        | rights::FD_FILESTAT_SET_SIZE
                        | rights::PATH_FILESTAT_SET_SIZE
                        | rights::FD_WRITE);
                Ok(Fdstat {
                    filetype: filetype::DIRECTORY,
                    flags: 0,
                    rights_base: r,
                    rights_inheriting: r,
                })
            }
            (Handle::File(f), _) => {
                let mut r = rights::ALL;
                if !e.meta.read {
                    r &= !(rights::FD_READ | rights::FD_READDIR);
                }
                if !e.meta.write {
                    r &= !rights::FD_WRITE;
                }
                Ok(Fdstat {
                    filetype: filetype_raw(wc(f.get_filetype())?),
                    flags: fdflags_to_raw(wc(f.get_fdflags())?),
                    rights_base: r,
                    rights_inheriting: r,
                })
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_open(
        &mut self,
        fd: Fd,
        dirflags: u32,
        path: &[u8],
        raw_oflags: u16,
        rights_base: u64,
        rights_inheriting: u64,
        raw_fdflags: u16,
    ) -> SyscallResult {
        let (dir, parent) = self.dir(fd)?;
        if raw_oflags & !oflags::ALL != 0 || raw_fdflags & !fdflags::ALL != 0 {
            return Err(Errno::Inval);
        }
        let path = utf8(path)?;
        let follow = dirflags & lookupflags::SYMLINK_FOLLOW != 0;
        let read = rights_base & (rights::FD_READ | rights::FD_READDIR) != 0;
        // Opened for writing only with FD_WRITE, as under `wasmtime run`: Go's
        // O_RDONLY asks for every right of a file but the writes, and
        // FD_FILESTAT_SET_SIZE among them.
        let write = rights_base & rights::FD_WRITE != 0;
        let meta = FdMeta {
            kind: FdKind::File,
            preopen: parent.preopen,
            path: join_rel(&parent.path, path),
            oflags: raw_oflags,
            fdflags: raw_fdflags,
            rights_base,
            rights_inheriting,
            read,
            write,
        };
        let entry = open_at(dir, follow, path, meta)?;
        Ok(Reply::Fd(self.table.push(entry)?))
    }

    pub(crate) fn poll_oneoff(&self, subs: &[Subscription]) -> Result<Vec<Event>, Errno> {
        if subs.is_empty() {
            return Err(Errno::Inval);
        }
        if let Some(events) = self.poll_waitable_input(subs)? {
            return Ok(events);
        }
        // Streams that live elsewhere (a session's console) have no host descriptor
        // to wait on: they count as ready at once, as a regular file does.
        let mut ready = Vec::new();
        for sub in subs {
            let (fd, eventtype) = match sub.kind {
                SubscriptionKind::FdRead(fd) => (fd, eventtype::FD_READ),
                SubscriptionKind::FdWrite(fd) => (fd, eventtype::FD_WRITE),
                SubscriptionKind::Clock { .. } => continue,
            };
            let file = self.file(fd)?;
            // An input whose pending bytes cannot be counted (/dev/null, as
            // under cron or `nohup … < /dev/null`) is at its end: readable,
            // as `wasmtime run` says, where the host's poll would fail.
            let uncountable = eventtype == eventtype::FD_READ && file.num_ready_bytes().is_err();
            if file.pollable().is_none() || uncountable {
                ready.push(Event {
                    userdata: sub.userdata,
                    error: 0,
                    eventtype,
                    nbytes: if eventtype == eventtype::FD_READ {
                        file.num_ready_bytes().unwrap_or(0)
                    } else {
                        0
                    },
                    flags: 0,
                });
            }
        }
        if !ready.is_empty() {
            return Ok(ready);
        }
        let clock = self.clocks.monotonic().map_err(errno)?;
        let mut poll = Poll::new();
        for sub in subs {
            let ud = Userdata::from(sub.userdata);
            match sub.kind {
                SubscriptionKind::Clock {
                    id,
                    timeout,
                    precision,
                } => {
                    if id != clockid::MONOTONIC && id != clockid::REALTIME {
                        return Err(Errno::Inval);
                    }
                    let precision = std::time::Duration::from_nanos(precision);
                    let deadline = clock
                        .abs_clock
                        .now(precision)
                        .checked_add(std::time::Duration::from_nanos(timeout))
                        .ok_or(Errno::Overflow)?;
                    poll.subscribe_monotonic_clock(&*clock.abs_clock, deadline, precision, ud);
                }
                SubscriptionKind::FdRead(fd) => poll.subscribe_read(self.file(fd)?, ud),
                SubscriptionKind::FdWrite(fd) => poll.subscribe_write(self.file(fd)?, ud),
            }
        }
        wc(self.sched.poll_oneoff(&mut poll))?;
        let mut events = Vec::new();
        for (result, ud) in poll.results() {
            let userdata = u64::from(ud);
            let (eventtype, r) = match result {
                SubscriptionResult::Read(r) => (eventtype::FD_READ, r.map(Some)),
                SubscriptionResult::Write(r) => (eventtype::FD_WRITE, r.map(Some)),
                SubscriptionResult::MonotonicClock(r) => (eventtype::CLOCK, r.map(|()| None)),
            };
            events.push(match r {
                Ok(rw) => Event {
                    userdata,
                    error: 0,
                    eventtype,
                    nbytes: rw.map(|(n, _)| n).unwrap_or(0),
                    flags: rw.map(|(_, f)| f.bits() as u16).unwrap_or(0),
                },
                Err(e) => Event {
                    userdata,
                    error: errno(e) as u16,
                    eventtype,
                    nbytes: 0,
                    flags: 0,
                },
            });
        }
        Ok(events)
    }
}
