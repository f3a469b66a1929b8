//! Conversions between the deputy's plain values and their Cap'n Proto form.

use capnp::Error;
use ssi_deputy::abi::{
    Dirent, Event, Fdstat, Filestat, Subscription, SubscriptionKind, Whence, errno_from_u16,
};
use ssi_deputy::{Reply, Syscall, SyscallResult};
use ssi_schema::{exit, syscall, syscall_result};

fn bad(what: &str) -> Error {
    Error::failed(format!("malformed message: {what}"))
}

/// Writes `call` into `b`.
pub fn write_syscall(mut b: syscall::Builder<'_>, call: &Syscall) {
    match call {
        Syscall::FdAdvise {
            fd,
            offset,
            len,
            advice,
        } => {
            let mut r = b.init_fd_advise();
            r.set_fd(*fd);
            r.set_offset(*offset);
            r.set_len(*len);
            r.set_advice(*advice);
        }
        Syscall::FdAllocate { fd, offset, len } => {
            let mut r = b.init_fd_allocate();
            r.set_fd(*fd);
            r.set_offset(*offset);
            r.set_len(*len);
        }
        Syscall::FdClose { fd } => b.set_fd_close(*fd),
        Syscall::FdDatasync { fd } => b.set_fd_datasync(*fd),
        Syscall::FdFdstatGet { fd } => b.set_fd_fdstat_get(*fd),
        Syscall::FdFdstatSetFlags { fd, flags } => {
            let mut r = b.init_fd_fdstat_set_flags();
            r.set_fd(*fd);
            r.set_flags(*flags);
        }
        Syscall::FdFdstatSetRights {
            fd,
            rights_base,
            rights_inheriting,
        } => {
            let mut r = b.init_fd_fdstat_set_rights();
            r.set_fd(*fd);
            r.set_base(*rights_base);
            r.set_inheriting(*rights_inheriting);
        }
        Syscall::FdFilestatGet { fd } => b.set_fd_filestat_get(*fd),
        Syscall::FdFilestatSetSize { fd, size } => {
            let mut r = b.init_fd_filestat_set_size();
            r.set_fd(*fd);
            r.set_offset(*size);
        }
        Syscall::FdFilestatSetTimes {
            fd,
            atim,
            mtim,
            fst_flags,
        } => {
            let mut r = b.init_fd_filestat_set_times();
            r.set_fd(*fd);
            r.set_atim(*atim);
            r.set_mtim(*mtim);
            r.set_fst_flags(*fst_flags);
        }
        Syscall::FdPread { fd, len, offset } => {
            let mut r = b.init_fd_pread();
            r.set_fd(*fd);
            r.set_len(*len);
            r.set_offset(*offset);
        }
        Syscall::FdPrestatGet { fd } => b.set_fd_prestat_get(*fd),
        Syscall::FdPrestatDirName { fd } => b.set_fd_prestat_dir_name(*fd),
        Syscall::FdPwrite { fd, data, offset } => {
            let mut r = b.init_fd_pwrite();
            r.set_fd(*fd);
            r.set_data(data);
            r.set_offset(*offset);
        }
        Syscall::FdRead { fd, len } => {
            let mut r = b.init_fd_read();
            r.set_fd(*fd);
            r.set_len(*len);
        }
        Syscall::FdReaddir {
            fd,
            cookie,
            buf_len,
        } => {
            let mut r = b.init_fd_readdir();
            r.set_fd(*fd);
            r.set_offset(*cookie);
            r.set_len(*buf_len);
        }
        Syscall::FdRenumber { from, to } => {
            let mut r = b.init_fd_renumber();
            r.set_from(*from);
            r.set_to(*to);
        }
        Syscall::FdSeek { fd, offset, whence } => {
            let mut r = b.init_fd_seek();
            r.set_fd(*fd);
            r.set_offset(*offset);
            r.set_whence(whence.to_raw());
        }
        Syscall::FdSync { fd } => b.set_fd_sync(*fd),
        Syscall::FdTell { fd } => b.set_fd_tell(*fd),
        Syscall::FdWrite { fd, data } => {
            let mut r = b.init_fd_write();
            r.set_fd(*fd);
            r.set_data(data);
        }
        Syscall::PathCreateDirectory { fd, path } => {
            let mut r = b.init_path_create_directory();
            r.set_fd(*fd);
            r.set_path(path);
        }
        Syscall::PathFilestatGet { fd, flags, path } => {
            let mut r = b.init_path_filestat_get();
            r.set_fd(*fd);
            r.set_lookup_flags(*flags);
            r.set_path(path);
        }
        Syscall::PathFilestatSetTimes {
            fd,
            flags,
            path,
            atim,
            mtim,
            fst_flags,
        } => {
            let mut r = b.init_path_filestat_set_times();
            r.set_fd(*fd);
            r.set_lookup_flags(*flags);
            r.set_path(path);
            r.set_atim(*atim);
            r.set_mtim(*mtim);
            r.set_fst_flags(*fst_flags);
        }
        Syscall::PathLink {
            old_fd,
            old_flags,
            old_path,
            new_fd,
            new_path,
        } => {
            let mut r = b.init_path_link();
            r.set_old_fd(*old_fd);
            r.set_old_flags(*old_flags);
            r.set_old_path(old_path);
            r.set_new_fd(*new_fd);
            r.set_new_path(new_path);
        }
        Syscall::PathOpen {
            fd,
            dirflags,
            path,
            oflags,
            rights_base,
            rights_inheriting,
            fdflags,
        } => {
            let mut r = b.init_path_open();
            r.set_fd(*fd);
            r.set_dirflags(*dirflags);
            r.set_path(path);
            r.set_oflags(*oflags);
            r.set_rights_base(*rights_base);
            r.set_rights_inheriting(*rights_inheriting);
            r.set_fdflags(*fdflags);
        }
        Syscall::PathReadlink { fd, path } => {
            let mut r = b.init_path_readlink();
            r.set_fd(*fd);
            r.set_path(path);
        }
        Syscall::PathRemoveDirectory { fd, path } => {
            let mut r = b.init_path_remove_directory();
            r.set_fd(*fd);
            r.set_path(path);
        }
        Syscall::PathRename {
            old_fd,
            old_path,
            new_fd,
            new_path,
        } => {
            let mut r = b.init_path_rename();
            r.set_old_fd(*old_fd);
            r.set_old_path(old_path);
            r.set_new_fd(*new_fd);
            r.set_new_path(new_path);
        }
        Syscall::PathSymlink {
            old_path,
            fd,
            new_path,
        } => {
            let mut r = b.init_path_symlink();
            r.set_old_path(old_path);
            r.set_new_fd(*fd);
            r.set_new_path(new_path);
        }
        Syscall::PathUnlinkFile { fd, path } => {
            let mut r = b.init_path_unlink_file();
            r.set_fd(*fd);
            r.set_path(path);
        }
        Syscall::PollOneoff { subscriptions } => {
            let mut list = b.init_poll_oneoff(subscriptions.len() as u32);
            for (i, s) in subscriptions.iter().enumerate() {
                let mut r = list.reborrow().get(i as u32);
                r.set_userdata(s.userdata);
                match s.kind {
                    SubscriptionKind::Clock {
                        id,
                        timeout,
                        precision,
                    } => {
                        let mut c = r.init_clock();
                        c.set_id(id);
                        c.set_timeout(timeout);
                        c.set_precision(precision);
                    }
                    SubscriptionKind::FdRead(fd) => r.set_fd_read(fd),
                    SubscriptionKind::FdWrite(fd) => r.set_fd_write(fd),
                }
            }
        }
        Syscall::SockAccept { fd, flags } => {
            let mut r = b.init_sock_accept();
            r.set_fd(*fd);
            r.set_flags(*flags);
        }
        Syscall::SockRecv { fd, len, flags } => {
            let mut r = b.init_sock_recv();
            r.set_fd(*fd);
            r.set_len(*len);
            r.set_flags(*flags);
        }
        Syscall::SockSend { fd, data, flags } => {
            let mut r = b.init_sock_send();
            r.set_fd(*fd);
            r.set_data(data);
            r.set_flags(*flags);
        }
        Syscall::SockShutdown { fd, how } => {
            let mut r = b.init_sock_shutdown();
            r.set_fd(*fd);
            r.set_flags(u16::from(*how));
        }
        Syscall::ProcIdentity { pid } => b.set_proc_identity(*pid),
        Syscall::ProcKill { target, signal } => {
            let mut r = b.init_proc_kill();
            r.set_target(*target);
            r.set_signal(*signal);
        }
        Syscall::ProcSpawn(req) => {
            let mut r = b.init_proc_spawn();
            r.set_module(&req.module);
            let mut args = r.reborrow().init_args(req.args.len() as u32);
            for (i, a) in req.args.iter().enumerate() {
                args.set(i as u32, a);
            }
            let mut env = r.reborrow().init_env(req.env.len() as u32);
            for (i, e) in req.env.iter().enumerate() {
                env.set(i as u32, e);
            }
            let mut fds = r.reborrow().init_fds(req.fds.len() as u32);
            for (i, (child, own)) in req.fds.iter().enumerate() {
                let mut p = fds.reborrow().get(i as u32);
                p.set_from(*own);
                p.set_to(*child);
            }
            r.set_node(req.node);
        }
        Syscall::ProcWait { target, options } => {
            let mut r = b.init_proc_wait();
            r.set_target(*target);
            r.set_options(*options);
        }
        Syscall::ProcSetpgid { pid, pgid } => {
            let mut r = b.init_proc_setpgid();
            r.set_pid(*pid);
            r.set_pgid(*pgid);
        }
        Syscall::ProcSetsid => b.set_proc_setsid(()),
        Syscall::ProcSigaction {
            signal,
            action,
            handler,
        } => {
            let mut r = b.init_proc_sigaction();
            r.set_signal(*signal);
            r.set_action(*action);
            r.set_handler(handler);
        }
        Syscall::ProcSigmask { how, set } => {
            let mut r = b.init_proc_sigmask();
            r.set_how(*how);
            r.set_set(*set);
        }
        Syscall::ProcSignals => b.set_proc_signals(()),
    }
}

/// Reads a call written by [`write_syscall`].
pub fn read_syscall(r: syscall::Reader<'_>) -> Result<Syscall, Error> {
    use syscall::Which as W;
    Ok(match r.which().map_err(|_| bad("unknown system call"))? {
        W::FdAdvise(x) => {
            let x = x?;
            Syscall::FdAdvise {
                fd: x.get_fd(),
                offset: x.get_offset(),
                len: x.get_len(),
                advice: x.get_advice(),
            }
        }
        W::FdAllocate(x) => {
            let x = x?;
            Syscall::FdAllocate {
                fd: x.get_fd(),
                offset: x.get_offset(),
                len: x.get_len(),
            }
        }
        W::FdClose(fd) => Syscall::FdClose { fd },
        W::FdDatasync(fd) => Syscall::FdDatasync { fd },
        W::FdFdstatGet(fd) => Syscall::FdFdstatGet { fd },
        W::FdFdstatSetFlags(x) => {
            let x = x?;
            Syscall::FdFdstatSetFlags {
                fd: x.get_fd(),
                flags: x.get_flags(),
            }
        }
        W::FdFdstatSetRights(x) => {
            let x = x?;
            Syscall::FdFdstatSetRights {
                fd: x.get_fd(),
                rights_base: x.get_base(),
                rights_inheriting: x.get_inheriting(),
            }
        }
        W::FdFilestatGet(fd) => Syscall::FdFilestatGet { fd },
        W::FdFilestatSetSize(x) => {
            let x = x?;
            Syscall::FdFilestatSetSize {
                fd: x.get_fd(),
                size: x.get_offset(),
            }
        }
        W::FdFilestatSetTimes(x) => {
            let x = x?;
            Syscall::FdFilestatSetTimes {
                fd: x.get_fd(),
                atim: x.get_atim(),
                mtim: x.get_mtim(),
                fst_flags: x.get_fst_flags(),
            }
        }
        W::FdPread(x) => {
            let x = x?;
            Syscall::FdPread {
                fd: x.get_fd(),
                len: x.get_len(),
                offset: x.get_offset(),
            }
        }
        W::FdPrestatGet(fd) => Syscall::FdPrestatGet { fd },
        W::FdPrestatDirName(fd) => Syscall::FdPrestatDirName { fd },
        W::FdPwrite(x) => {
            let x = x?;
            Syscall::FdPwrite {
                fd: x.get_fd(),
                data: x.get_data()?.to_vec(),
                offset: x.get_offset(),
            }
        }
        W::FdRead(x) => {
            let x = x?;
            Syscall::FdRead {
                fd: x.get_fd(),
                len: x.get_len(),
            }
        }
        W::FdReaddir(x) => {
            let x = x?;
            Syscall::FdReaddir {
                fd: x.get_fd(),
                cookie: x.get_offset(),
                buf_len: x.get_len(),
            }
        }
        W::FdRenumber(x) => {
            let x = x?;
            Syscall::FdRenumber {
                from: x.get_from(),
                to: x.get_to(),
            }
        }
        W::FdSeek(x) => {
            let x = x?;
            Syscall::FdSeek {
                fd: x.get_fd(),
                offset: x.get_offset(),
                whence: Whence::from_raw(x.get_whence()).ok_or_else(|| bad("whence"))?,
            }
        }
        W::FdSync(fd) => Syscall::FdSync { fd },
        W::FdTell(fd) => Syscall::FdTell { fd },
        W::FdWrite(x) => {
            let x = x?;
            Syscall::FdWrite {
                fd: x.get_fd(),
                data: x.get_data()?.to_vec(),
            }
        }
        W::PathCreateDirectory(x) => {
            let x = x?;
            Syscall::PathCreateDirectory {
                fd: x.get_fd(),
                path: x.get_path()?.to_vec(),
            }
        }
        W::PathFilestatGet(x) => {
            let x = x?;
            Syscall::PathFilestatGet {
                fd: x.get_fd(),
                flags: x.get_lookup_flags(),
                path: x.get_path()?.to_vec(),
            }
        }
        W::PathFilestatSetTimes(x) => {
            let x = x?;
            Syscall::PathFilestatSetTimes {
                fd: x.get_fd(),
                flags: x.get_lookup_flags(),
                path: x.get_path()?.to_vec(),
                atim: x.get_atim(),
                mtim: x.get_mtim(),
                fst_flags: x.get_fst_flags(),
            }
        }
        W::PathLink(x) => {
            let x = x?;
            Syscall::PathLink {
                old_fd: x.get_old_fd(),
                old_flags: x.get_old_flags(),
                old_path: x.get_old_path()?.to_vec(),
                new_fd: x.get_new_fd(),
                new_path: x.get_new_path()?.to_vec(),
            }
        }
        W::PathOpen(x) => {
            let x = x?;
            Syscall::PathOpen {
                fd: x.get_fd(),
                dirflags: x.get_dirflags(),
                path: x.get_path()?.to_vec(),
                oflags: x.get_oflags(),
                rights_base: x.get_rights_base(),
                rights_inheriting: x.get_rights_inheriting(),
                fdflags: x.get_fdflags(),
            }
        }
        W::PathReadlink(x) => {
            let x = x?;
            Syscall::PathReadlink {
                fd: x.get_fd(),
                path: x.get_path()?.to_vec(),
            }
        }
        W::PathRemoveDirectory(x) => {
            let x = x?;
            Syscall::PathRemoveDirectory {
                fd: x.get_fd(),
                path: x.get_path()?.to_vec(),
            }
        }
        W::PathRename(x) => {
            let x = x?;
            Syscall::PathRename {
                old_fd: x.get_old_fd(),
                old_path: x.get_old_path()?.to_vec(),
                new_fd: x.get_new_fd(),
                new_path: x.get_new_path()?.to_vec(),
            }
        }
        W::PathSymlink(x) => {
            let x = x?;
            Syscall::PathSymlink {
                old_path: x.get_old_path()?.to_vec(),
                fd: x.get_new_fd(),
                new_path: x.get_new_path()?.to_vec(),
            }
        }
        W::PathUnlinkFile(x) => {
            let x = x?;
            Syscall::PathUnlinkFile {
                fd: x.get_fd(),
                path: x.get_path()?.to_vec(),
            }
        }
        W::PollOneoff(list) => {
            let list = list?;
            let mut subscriptions = Vec::with_capacity(list.len() as usize);
            for s in list.iter() {
                use ssi_schema::subscription::Which as S;
                let kind = match s.which().map_err(|_| bad("subscription"))? {
                    S::Clock(c) => {
                        let c = c?;
                        SubscriptionKind::Clock {
                            id: c.get_id(),
                            timeout: c.get_timeout(),
                            precision: c.get_precision(),
                        }
                    }
                    S::FdRead(fd) => SubscriptionKind::FdRead(fd),
                    S::FdWrite(fd) => SubscriptionKind::FdWrite(fd),
                };
                subscriptions.push(Subscription {
                    userdata: s.get_userdata(),
                    kind,
                });
            }
            Syscall::PollOneoff { subscriptions }
        }
        W::SockAccept(x) => {
            let x = x?;
            Syscall::SockAccept {
                fd: x.get_fd(),
                flags: x.get_flags(),
            }
        }
        W::SockRecv(x) => {
            let x = x?;
            Syscall::SockRecv {
                fd: x.get_fd(),
                len: x.get_len(),
                flags: x.get_flags(),
            }
        }
        W::SockSend(x) => {
            let x = x?;
            Syscall::SockSend {
                fd: x.get_fd(),
                data: x.get_data()?.to_vec(),
                flags: x.get_flags(),
            }
        }
        W::SockShutdown(x) => {
            let x = x?;
            Syscall::SockShutdown {
                fd: x.get_fd(),
                how: u8::try_from(x.get_flags()).map_err(|_| bad("sock_shutdown how"))?,
            }
        }
        W::ProcIdentity(pid) => Syscall::ProcIdentity { pid },
        W::ProcKill(x) => {
            let x = x?;
            Syscall::ProcKill {
                target: x.get_target(),
                signal: x.get_signal(),
            }
        }
        W::ProcSpawn(x) => {
            let x = x?;
            let data = |l: capnp::data_list::Reader<'_>| -> Result<Vec<Vec<u8>>, Error> {
                l.iter().map(|d| Ok(d?.to_vec())).collect()
            };
            Syscall::ProcSpawn(ssi_deputy::abi::SpawnRequest {
                module: x.get_module()?.to_vec(),
                args: data(x.get_args()?)?,
                env: data(x.get_env()?)?,
                fds: x
                    .get_fds()?
                    .iter()
                    .map(|p| (p.get_to(), p.get_from()))
                    .collect(),
                node: x.get_node(),
            })
        }
        W::ProcWait(x) => {
            let x = x?;
            Syscall::ProcWait {
                target: x.get_target(),
                options: x.get_options(),
            }
        }
        W::ProcSetpgid(x) => {
            let x = x?;
            Syscall::ProcSetpgid {
                pid: x.get_pid(),
                pgid: x.get_pgid(),
            }
        }
        W::ProcSetsid(()) => Syscall::ProcSetsid,
        W::ProcSigaction(x) => {
            let x = x?;
            Syscall::ProcSigaction {
                signal: x.get_signal(),
                action: x.get_action(),
                handler: x.get_handler()?.to_vec(),
            }
        }
        W::ProcSigmask(x) => {
            let x = x?;
            Syscall::ProcSigmask {
                how: x.get_how(),
                set: x.get_set(),
            }
        }
        W::ProcSignals(()) => Syscall::ProcSignals,
    })
}

/// Writes the outcome of a call into `b`.
pub fn write_result(mut b: syscall_result::Builder<'_>, result: &SyscallResult) {
    let reply = match result {
        Ok(reply) => reply,
        Err(errno) => return b.set_errno(*errno as u16),
    };
    match reply {
        Reply::Unit => b.set_unit(()),
        Reply::Size(n) => b.set_size(*n),
        Reply::Filesize(n) => b.set_filesize(*n),
        Reply::Bytes(data) => b.set_bytes(data),
        Reply::Fd(fd) => b.set_fd(*fd),
        Reply::Fdstat(st) => {
            let mut r = b.init_fdstat();
            r.set_filetype(st.filetype);
            r.set_flags(st.flags);
            r.set_rights_base(st.rights_base);
            r.set_rights_inheriting(st.rights_inheriting);
        }
        Reply::Filestat(st) => {
            let mut r = b.init_filestat();
            r.set_dev(st.dev);
            r.set_ino(st.ino);
            r.set_filetype(st.filetype);
            r.set_nlink(st.nlink);
            r.set_size(st.size);
            r.set_atim(st.atim);
            r.set_mtim(st.mtim);
            r.set_ctim(st.ctim);
        }
        Reply::PrestatDir { name_len } => b.set_prestat_dir(*name_len),
        Reply::Dirents(entries) => {
            let mut list = b.init_dirents(entries.len() as u32);
            for (i, e) in entries.iter().enumerate() {
                let mut r = list.reborrow().get(i as u32);
                r.set_next(e.next);
                r.set_ino(e.ino);
                r.set_filetype(e.filetype);
                r.set_name(&e.name);
            }
        }
        Reply::Events(events) => {
            let mut list = b.init_events(events.len() as u32);
            for (i, e) in events.iter().enumerate() {
                let mut r = list.reborrow().get(i as u32);
                r.set_userdata(e.userdata);
                r.set_error(e.error);
                r.set_eventtype(e.eventtype);
                r.set_nbytes(e.nbytes);
                r.set_flags(e.flags);
            }
        }
        Reply::Recv { data, roflags } => {
            let mut r = b.init_recv();
            r.set_data(data);
            r.set_roflags(*roflags);
        }
        Reply::Terminated(n) => b.set_terminated(*n),
        Reply::Identity(id) => {
            let mut r = b.init_identity();
            r.set_pid(id.pid);
            r.set_ppid(id.ppid);
            r.set_pgid(id.pgid);
            r.set_sid(id.sid);
        }
        Reply::Waited { pid, status } => {
            let mut r = b.init_waited();
            r.set_pid(*pid);
            r.set_status(*status);
        }
    }
}

/// Reads an outcome written by [`write_result`].
pub fn read_result(r: syscall_result::Reader<'_>) -> Result<SyscallResult, Error> {
    use syscall_result::Which as W;
    Ok(Ok(match r.which().map_err(|_| bad("unknown reply"))? {
        W::Errno(raw) => {
            return Ok(Err(errno_from_u16(raw).ok_or_else(|| bad("unknown errno"))?));
        }
        W::Unit(()) => Reply::Unit,
        W::Size(n) => Reply::Size(n),
        W::Filesize(n) => Reply::Filesize(n),
        W::Bytes(d) => Reply::Bytes(d?.to_vec()),
        W::Fd(fd) => Reply::Fd(fd),
        W::Fdstat(st) => {
            let st = st?;
            Reply::Fdstat(Fdstat {
                filetype: st.get_filetype(),
                flags: st.get_flags(),
                rights_base: st.get_rights_base(),
                rights_inheriting: st.get_rights_inheriting(),
            })
        }
        W::Filestat(st) => {
            let st = st?;
            Reply::Filestat(Filestat {
                dev: st.get_dev(),
                ino: st.get_ino(),
                filetype: st.get_filetype(),
                nlink: st.get_nlink(),
                size: st.get_size(),
                atim: st.get_atim(),
                mtim: st.get_mtim(),
                ctim: st.get_ctim(),
            })
        }
        W::PrestatDir(name_len) => Reply::PrestatDir { name_len },
        W::Dirents(list) => Reply::Dirents(
            list?
                .iter()
                .map(|e| {
                    Ok(Dirent {
                        next: e.get_next(),
                        ino: e.get_ino(),
                        filetype: e.get_filetype(),
                        name: e.get_name()?.to_vec(),
                    })
                })
                .collect::<Result<_, Error>>()?,
        ),
        W::Events(list) => Reply::Events(
            list?
                .iter()
                .map(|e| Event {
                    userdata: e.get_userdata(),
                    error: e.get_error(),
                    eventtype: e.get_eventtype(),
                    nbytes: e.get_nbytes(),
                    flags: e.get_flags(),
                })
                .collect(),
        ),
        W::Recv(x) => {
            let x = x?;
            Reply::Recv {
                data: x.get_data()?.to_vec(),
                roflags: x.get_roflags(),
            }
        }
        W::Terminated(n) => Reply::Terminated(n),
        W::Identity(x) => {
            let x = x?;
            Reply::Identity(ssi_deputy::Identity {
                pid: x.get_pid(),
                ppid: x.get_ppid(),
                pgid: x.get_pgid(),
                sid: x.get_sid(),
            })
        }
        W::Waited(x) => {
            let x = x?;
            Reply::Waited {
                pid: x.get_pid(),
                status: x.get_status(),
            }
        }
    }))
}

/// How a process ended, as it travels between nodes and to `ssirun`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReport {
    Status(i32),
    /// A Wasm trap: the error chain, outermost first.
    Trap(Vec<String>),
    /// The host stopped the body: the error chain, outermost first.
    Failed(Vec<String>),
    /// The node running the body went down.
    Lost(String),
    /// A signal ended the process.
    Signaled(u8),
    /// The body left this node: it runs elsewhere now (a migration). Only a
    /// body's own node sees this; its home follows the body instead.
    Moved,
    /// It was checkpointed and stopped, to be restarted from its checkpoint.
    Checkpointed,
}

impl ExitReport {
    pub fn from_exit(exit: &ssi_remote::Exit) -> Self {
        let chain = |e: &ssi_remote::Error| e.chain().map(|c| c.to_string()).collect();
        match exit {
            ssi_remote::Exit::Status(s) => ExitReport::Status(*s),
            ssi_remote::Exit::Trap(e) => ExitReport::Trap(chain(e)),
            ssi_remote::Exit::Failed(e) => ExitReport::Failed(chain(e)),
            ssi_remote::Exit::Signaled(n) => ExitReport::Signaled(*n),
            ssi_remote::Exit::Frozen => ExitReport::Moved,
        }
    }

    /// Rebuilds an error with the same chain (and so the same report) as the original.
    pub fn rebuild(chain: &[String]) -> ssi_remote::Error {
        let mut links = chain.iter().rev();
        let mut err = ssi_remote::Error::msg(links.next().cloned().unwrap_or_default());
        for outer in links {
            err = err.context(outer.clone());
        }
        err
    }
}

pub fn write_exit(mut b: exit::Builder<'_>, report: &ExitReport) {
    match report {
        ExitReport::Status(s) => b.set_status(*s),
        ExitReport::Trap(chain) => set_texts(b.init_trap(chain.len() as u32), chain),
        ExitReport::Failed(chain) => set_texts(b.init_failed(chain.len() as u32), chain),
        ExitReport::Lost(why) => b.set_lost(why),
        ExitReport::Signaled(n) => b.set_signaled(*n),
        ExitReport::Moved => {
            set_texts(b.init_failed(1), &["the body moved to another node".into()])
        }
        ExitReport::Checkpointed => b.set_checkpointed(()),
    }
}

pub fn read_exit(r: exit::Reader<'_>) -> Result<ExitReport, Error> {
    Ok(match r.which().map_err(|_| bad("unknown exit"))? {
        exit::Which::Status(s) => ExitReport::Status(s),
        exit::Which::Trap(l) => ExitReport::Trap(texts(l?)?),
        exit::Which::Failed(l) => ExitReport::Failed(texts(l?)?),
        exit::Which::Lost(t) => ExitReport::Lost(text(t)?),
        exit::Which::Signaled(n) => ExitReport::Signaled(n),
        exit::Which::Checkpointed(()) => ExitReport::Checkpointed,
    })
}

/// Reads a list of texts.
pub fn texts(l: capnp::text_list::Reader<'_>) -> Result<Vec<String>, Error> {
    l.iter()
        .map(|t| t?.to_string().map_err(|_| bad("text is not UTF-8")))
        .collect()
}

/// Reads a text.
pub fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, Error> {
    t?.to_string().map_err(|_| bad("text is not UTF-8"))
}

/// A memory limit on the wire (`maxMemorySize`): all ones is none.
pub fn memory_limit(wire: u64) -> Option<u64> {
    (wire != u64::MAX).then_some(wire)
}

/// A memory limit as the wire carries it.
pub fn memory_limit_wire(limit: Option<u64>) -> u64 {
    limit.unwrap_or(u64::MAX)
}

/// Fills a list of texts.
pub fn set_texts(mut l: capnp::text_list::Builder<'_>, items: &[String]) {
    for (i, s) in items.iter().enumerate() {
        l.set(i as u32, s);
    }
}

/// A failure with a message, as a Cap'n Proto error.
pub(crate) fn failed(e: impl std::fmt::Display) -> capnp::Error {
    capnp::Error::failed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssi_deputy::Errno;
    use ssi_deputy::abi::fdflags;

    fn round_trip(call: Syscall) {
        let mut msg = capnp::message::Builder::new_default();
        write_syscall(msg.init_root(), &call);
        let back = read_syscall(msg.get_root_as_reader().expect("root")).expect("decodes");
        assert_eq!(back, call);
    }

    #[test]
    fn syscalls_round_trip() {
        round_trip(Syscall::FdWrite {
            fd: 1,
            data: b"hi".to_vec(),
        });
        round_trip(Syscall::PathOpen {
            fd: 3,
            dirflags: 1,
            path: b"a/b".to_vec(),
            oflags: 9,
            rights_base: 77,
            rights_inheriting: 88,
            fdflags: fdflags::APPEND,
        });
        round_trip(Syscall::FdSeek {
            fd: 4,
            offset: -3,
            whence: Whence::End,
        });
        round_trip(Syscall::PathSymlink {
            old_path: b"x".to_vec(),
            fd: 3,
            new_path: b"y".to_vec(),
        });
        round_trip(Syscall::SockShutdown { fd: 5, how: 2 });
        round_trip(Syscall::ProcIdentity { pid: 7 });
        round_trip(Syscall::ProcKill {
            target: -9,
            signal: 15,
        });
        round_trip(Syscall::ProcSpawn(ssi_deputy::abi::SpawnRequest {
            module: b"/d/child.wasm".to_vec(),
            args: vec![b"child".to_vec(), b"1".to_vec()],
            env: vec![b"A=b".to_vec()],
            fds: vec![(0, 4), (1, 1)],
            node: 3,
        }));
        round_trip(Syscall::ProcWait {
            target: -7,
            options: 3,
        });
        round_trip(Syscall::ProcSetpgid { pid: 5, pgid: 6 });
        round_trip(Syscall::ProcSetsid);
        round_trip(Syscall::ProcSigaction {
            signal: 10,
            action: 2,
            handler: b"on_usr1".to_vec(),
        });
        round_trip(Syscall::ProcSigmask {
            how: 1,
            set: 1 << 9,
        });
        round_trip(Syscall::ProcSignals);
        round_trip(Syscall::PollOneoff {
            subscriptions: vec![
                Subscription {
                    userdata: 1,
                    kind: SubscriptionKind::Clock {
                        id: 1,
                        timeout: 5,
                        precision: 0,
                    },
                },
                Subscription {
                    userdata: 2,
                    kind: SubscriptionKind::FdRead(0),
                },
            ],
        });
    }

    #[test]
    fn results_round_trip() {
        for result in [
            Err(Errno::Badf),
            Ok(Reply::Unit),
            Ok(Reply::Size(9)),
            Ok(Reply::Bytes(b"abc".to_vec())),
            Ok(Reply::Dirents(vec![Dirent {
                next: 1,
                ino: 2,
                filetype: 4,
                name: b"f".to_vec(),
            }])),
            Ok(Reply::Recv {
                data: vec![1],
                roflags: 1,
            }),
            Ok(Reply::Identity(ssi_deputy::Identity {
                pid: 1,
                ppid: 2,
                pgid: 3,
                sid: 4,
            })),
            Ok(Reply::Terminated(15)),
            Ok(Reply::Waited {
                pid: 9,
                status: 0x0300,
            }),
        ] {
            let mut msg = capnp::message::Builder::new_default();
            write_result(msg.init_root(), &result);
            let back = read_result(msg.get_root_as_reader().expect("root")).expect("decodes");
            assert_eq!(back, result);
        }
    }

    #[test]
    fn exit_chain_rebuilds_the_same_report() {
        let original = ssi_remote::Error::msg("wasm trap: unreachable").context("at backtrace");
        let report = ExitReport::from_exit(&ssi_remote::Exit::Trap(original));
        let ExitReport::Trap(chain) = &report else {
            panic!("not a trap")
        };
        let rebuilt = ExitReport::rebuild(chain);
        // What follows the chain (a Rust backtrace, with RUST_BACKTRACE set)
        // is where each error was made.
        let chain_of = |e: ssi_remote::Error| {
            let text = format!("{e:?}");
            text.split("\n\nStack backtrace:")
                .next()
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(
            chain_of(rebuilt.context("outer")),
            chain_of(
                ssi_remote::Error::msg("wasm trap: unreachable")
                    .context("at backtrace")
                    .context("outer")
            )
        );
    }
}
