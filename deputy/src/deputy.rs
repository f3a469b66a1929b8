//! [`Deputy`]: executes [`Syscall`]s against home resources.
//!
//! It owns the descriptor table (wasi-common's cap-std files and directories,
//! with the metadata a checkpoint needs), the preopens, the process's identity
//! and its signal state; `call` is the one entry point, one arm per call.

use crate::abi::Identity;
use crate::abi::*;
use crate::convert::{errno, fdflags_from_raw, filestat, filetype_raw, times, utf8, wc};
use crate::process::{Child, ProcessTable};
use crate::signal::{Action, Signal, Signals};
use crate::table::{Entry, FdKind, FdMeta, FdTable, Handle};
use std::io::{IoSlice, IoSliceMut, SeekFrom};
use std::path::PathBuf;
use wasi_common::dir::ReaddirCursor;
use wasi_common::file::{Advice as WcAdvice, FileType, RiFlags, SdFlags, SiFlags};
use wasi_common::{WasiClocks, WasiDir, WasiFile, WasiSched};

/// Errors that stop a deputy from being set up (never from executing a call:
/// those become an [`Errno`] for the guest).
#[derive(Debug, thiserror::Error)]
pub enum DeputyError {
    #[error("cannot open directory `{path}` to preopen it as `{guest}`: {error}")]
    Preopen {
        path: PathBuf,
        guest: String,
        error: std::io::Error,
    },
}

/// A host directory made visible to the guest under a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
}

/// The three standard streams of a process, bound to its session.
pub struct Stdio {
    pub stdin: Box<dyn WasiFile>,
    pub stdout: Box<dyn WasiFile>,
    pub stderr: Box<dyn WasiFile>,
}

impl Stdio {
    /// The streams of the calling process itself (for a session that runs in-process).
    pub fn inherit() -> Self {
        Stdio {
            stdin: Box::new(wasi_common::sync::stdio::stdin()),
            stdout: Box::new(wasi_common::sync::stdio::stdout()),
            stderr: Box::new(wasi_common::sync::stdio::stderr()),
        }
    }
}

/// The home half of one process: its descriptor table and the host resources behind it.
/// An input that lives elsewhere (a session's console): the host's poll cannot
/// wait on it, so a poll on it waits here instead.
pub trait InputWait: Send + Sync {
    /// Waits until the input has bytes to read or is at its end (true), or
    /// until `deadline` (false; `None`: no deadline). `Err(Errno::Intr)` if
    /// the wait is cut short (the body freezes, a signal is pending, the
    /// process ends).
    fn wait_readable(&self, deadline: Option<std::time::Instant>) -> Result<bool, Errno>;
}

/// The file that [`Deputy::set_input_wait`] made waitable, and its wait.
pub(crate) type InputWaiter = (std::sync::Arc<dyn WasiFile>, std::sync::Arc<dyn InputWait>);

pub struct Deputy {
    pub(crate) table: FdTable,
    /// Polls on this input (and clocks) wait on it (see [`InputWait`]).
    pub(crate) input_wait: Option<InputWaiter>,
    pub(crate) preopens: Vec<Preopen>,
    pub(crate) clocks: WasiClocks,
    pub(crate) sched: Box<dyn WasiSched>,
    pub(crate) identity: Identity,
    pub(crate) processes: Option<std::sync::Arc<dyn ProcessTable>>,
    /// Its signal dispositions, mask and pending set, shared with the home.
    pub(crate) signals: std::sync::Arc<Signals>,
}

/// Largest buffer a single read is served with; a larger request returns a short
/// read, which every reader of `fd_read` must already handle.
pub(crate) const MAX_READ: u32 = 4 << 20;

/// The largest module `spawn` reads.
pub(crate) const MAX_MODULE: u64 = 1 << 30;

/// The rights wasmtime reports for a preopened directory (many userlands expect them).
pub(crate) const PREOPEN_RIGHTS: u64 = rights::PATH_CREATE_DIRECTORY
    | rights::PATH_CREATE_FILE
    | rights::PATH_LINK_SOURCE
    | rights::PATH_LINK_TARGET
    | rights::PATH_OPEN
    | rights::FD_READDIR
    | rights::PATH_READLINK
    | rights::PATH_RENAME_SOURCE
    | rights::PATH_RENAME_TARGET
    | rights::PATH_SYMLINK
    | rights::PATH_REMOVE_DIRECTORY
    | rights::PATH_UNLINK_FILE
    | rights::PATH_FILESTAT_GET
    | rights::PATH_FILESTAT_SET_TIMES
    | rights::FD_FILESTAT_GET
    | rights::FD_FILESTAT_SET_TIMES;

pub(crate) const PREOPEN_INHERITING: u64 = PREOPEN_RIGHTS
    | rights::FD_DATASYNC
    | rights::FD_READ
    | rights::FD_SEEK
    | rights::FD_FDSTAT_SET_FLAGS
    | rights::FD_SYNC
    | rights::FD_TELL
    | rights::FD_WRITE
    | rights::FD_ADVISE
    | rights::FD_ALLOCATE
    | rights::FD_FILESTAT_GET
    | rights::FD_FILESTAT_SET_SIZE
    | rights::FD_FILESTAT_SET_TIMES
    | rights::POLL_FD_READWRITE;

impl Deputy {
    /// A deputy whose process sees `stdio` as fds 0–2 and `preopens` from fd 3 on.
    pub fn new(stdio: Stdio, preopens: Vec<Preopen>) -> Result<Self, DeputyError> {
        let mut table = FdTable::default();
        for (n, file) in [stdio.stdin, stdio.stdout, stdio.stderr]
            .into_iter()
            .enumerate()
        {
            let read = n == 0;
            table.insert_at(
                n as Fd,
                Entry {
                    handle: Handle::File(file.into()),
                    meta: FdMeta {
                        kind: FdKind::Stdio(n as u8),
                        preopen: None,
                        path: String::new(),
                        oflags: 0,
                        fdflags: 0,
                        rights_base: if read {
                            rights::FD_READ
                        } else {
                            rights::FD_WRITE
                        },
                        rights_inheriting: 0,
                        read,
                        write: !read,
                    },
                },
            );
        }
        for (index, p) in preopens.iter().enumerate() {
            let dir = cap_std::fs::Dir::open_ambient_dir(&p.host, cap_std::ambient_authority())
                .map_err(|error| DeputyError::Preopen {
                    path: p.host.clone(),
                    guest: p.guest.clone(),
                    error,
                })?;
            let fd = 3 + index as Fd;
            table.insert_at(
                fd,
                Entry {
                    handle: Handle::Dir(std::sync::Arc::new(
                        wasi_common::sync::dir::Dir::from_cap_std(dir),
                    )),
                    meta: FdMeta {
                        kind: FdKind::Preopen,
                        preopen: Some(index),
                        path: String::new(),
                        oflags: oflags::DIRECTORY,
                        fdflags: 0,
                        rights_base: PREOPEN_RIGHTS,
                        rights_inheriting: PREOPEN_INHERITING,
                        read: true,
                        write: false,
                    },
                },
            );
        }
        Ok(Deputy {
            table,
            input_wait: None,
            preopens,
            clocks: wasi_common::sync::clocks_ctx(),
            sched: wasi_common::sync::sched::sched_ctx(),
            identity: Identity::default(),
            processes: None,
            signals: Default::default(),
        })
    }

    /// Makes a poll on the file now at fd 0 (wherever it goes: renumbered,
    /// or inherited by a child) wait on `wait`, where the host's poll could
    /// not: without it, such an input counts as readable at once.
    pub fn set_input_wait(&mut self, wait: std::sync::Arc<dyn InputWait>) {
        if let Ok(Entry {
            handle: Handle::File(file),
            ..
        }) = self.table.get(0)
        {
            self.input_wait = Some((file.clone(), wait));
        }
    }

    /// The process's signal state, which the home reads to deliver signals.
    pub fn signals(&self) -> std::sync::Arc<Signals> {
        self.signals.clone()
    }

    /// The preopened directories, in fd order from 3.
    pub fn preopens(&self) -> &[Preopen] {
        &self.preopens
    }

    /// The metadata of every open descriptor, in fd order.
    pub fn descriptors(&self) -> Vec<(Fd, FdMeta)> {
        self.table
            .iter()
            .map(|(fd, e)| (fd, e.meta.clone()))
            .collect()
    }

    /// The current offset of an open regular file, as a checkpoint records it.
    pub fn offset(&self, fd: Fd) -> Result<u64, Errno> {
        let file = self.file(fd)?;
        wc(file.seek(SeekFrom::Current(0)))
    }

    pub(crate) fn entry(&self, fd: Fd) -> Result<&Entry, Errno> {
        self.table.get(fd)
    }

    pub(crate) fn file(&self, fd: Fd) -> Result<&dyn WasiFile, Errno> {
        match &self.entry(fd)?.handle {
            Handle::File(f) => Ok(f.as_ref()),
            Handle::Dir(_) => Err(Errno::Badf),
        }
    }

    /// A descriptor the `sock_*` calls accept: `ENOTSOCK` for anything but a socket.
    pub(crate) fn socket(&self, fd: Fd) -> Result<&dyn WasiFile, Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::File(f) => match wc(f.get_filetype())? {
                FileType::SocketStream | FileType::SocketDgram => Ok(f.as_ref()),
                _ => Err(Errno::Notsock),
            },
            Handle::Dir(_) => Err(Errno::Notsock),
        }
    }

    /// The file `fd` reads from (`EBADF` if it is not open for reading): for
    /// the home to recognise its own kinds of file (a session's console).
    pub fn input(&self, fd: Fd) -> Result<&dyn WasiFile, Errno> {
        self.readable(fd)
    }

    pub(crate) fn readable(&self, fd: Fd) -> Result<&dyn WasiFile, Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::File(f) if e.meta.read => Ok(f.as_ref()),
            _ => Err(Errno::Badf),
        }
    }

    pub(crate) fn writable(&self, fd: Fd) -> Result<&dyn WasiFile, Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::File(f) if e.meta.write => Ok(f.as_ref()),
            _ => Err(Errno::Badf),
        }
    }

    pub(crate) fn dir(&self, fd: Fd) -> Result<(&dyn WasiDir, &FdMeta), Errno> {
        let e = self.entry(fd)?;
        match &e.handle {
            Handle::Dir(d) => Ok((d.as_ref(), &e.meta)),
            Handle::File(_) if matches!(e.meta.kind, FdKind::Stdio(_)) => Err(Errno::Badf),
            Handle::File(_) => Err(Errno::Notdir),
        }
    }

    /// Executes one system call. Never panics on guest input: every failure is an errno.
    /// `fd_write` from borrowed bytes (what `call` does for `Syscall::FdWrite`,
    /// without the bytes having to be owned): the number of bytes written.
    pub fn write(&mut self, fd: Fd, data: &[u8]) -> Result<u32, Errno> {
        let f = self.writable(fd)?;
        // A stream whose reader went away is EIO, as `wasmtime run` says
        // (the host's EPIPE is not what a WASI program sees there).
        let n = wc(f.write_vectored(&[IoSlice::new(data)])).map_err(|e| match e {
            Errno::Pipe => Errno::Io,
            e => e,
        })?;
        u32::try_from(n).map_err(|_| Errno::Overflow)
    }

    pub fn call(&mut self, call: Syscall) -> SyscallResult {
        use Syscall as S;
        match call {
            S::FdAdvise {
                fd,
                offset,
                len,
                advice,
            } => {
                let advice = match advice {
                    0 => WcAdvice::Normal,
                    1 => WcAdvice::Sequential,
                    2 => WcAdvice::Random,
                    3 => WcAdvice::WillNeed,
                    4 => WcAdvice::DontNeed,
                    5 => WcAdvice::NoReuse,
                    _ => return Err(Errno::Inval),
                };
                wc(self.file(fd)?.advise(offset, len, advice))?;
                Ok(Reply::Unit)
            }
            S::FdAllocate { fd, .. } => {
                self.file(fd)?;
                Err(Errno::Notsup)
            }
            S::FdClose { fd } => {
                self.table.remove(fd)?;
                Ok(Reply::Unit)
            }
            S::FdDatasync { fd } => {
                wc(self.file(fd)?.datasync())?;
                Ok(Reply::Unit)
            }
            S::FdSync { fd } => {
                wc(self.file(fd)?.sync())?;
                Ok(Reply::Unit)
            }
            S::FdFdstatGet { fd } => self.fdstat(fd).map(Reply::Fdstat),
            S::FdFdstatSetFlags { fd, flags } => {
                if flags & !fdflags::ALL != 0 {
                    return Err(Errno::Inval);
                }
                let entry = self.table.get_mut(fd)?;
                match &mut entry.handle {
                    Handle::File(f) if !matches!(entry.meta.kind, FdKind::Stdio(_)) => {
                        // The flags of a file a child shares cannot change
                        // under it.
                        let f = std::sync::Arc::get_mut(f).ok_or(Errno::Busy)?;
                        wc(f.set_fdflags(fdflags_from_raw(flags)))?;
                        entry.meta.fdflags = flags;
                        Ok(Reply::Unit)
                    }
                    _ => Err(Errno::Badf),
                }
            }
            S::FdFdstatSetRights { fd, .. } => {
                self.entry(fd)?;
                Err(Errno::Notsup)
            }
            S::FdFilestatGet { fd } => {
                let st = match &self.entry(fd)?.handle {
                    Handle::File(f) => wc(f.get_filestat())?,
                    Handle::Dir(d) => wc(d.get_filestat())?,
                };
                Ok(Reply::Filestat(filestat(st)))
            }
            S::FdFilestatSetSize { fd, size } => {
                // A file opened without FD_WRITE is the host's to refuse
                // (EINVAL, as under `wasmtime run`); a stream is no file.
                let e = self.entry(fd)?;
                match &e.handle {
                    Handle::File(f) if !matches!(e.meta.kind, FdKind::Stdio(_)) => {
                        wc(f.set_filestat_size(size))?
                    }
                    _ => return Err(Errno::Badf),
                }
                Ok(Reply::Unit)
            }
            S::FdFilestatSetTimes {
                fd,
                atim,
                mtim,
                fst_flags,
            } => {
                let (a, m) = times(atim, mtim, fst_flags)?;
                match &self.entry(fd)?.handle {
                    Handle::File(f) => wc(f.set_times(a, m))?,
                    Handle::Dir(d) => wc(d.set_times(".", a, m, false))?,
                }
                Ok(Reply::Unit)
            }
            S::FdRead { fd, len } => {
                let f = self.readable(fd)?;
                let mut buf = vec![0u8; len.min(MAX_READ) as usize];
                let n = wc(f.read_vectored(&mut [IoSliceMut::new(&mut buf)]))?;
                buf.truncate(n as usize);
                Ok(Reply::Bytes(buf))
            }
            S::FdPread { fd, len, offset } => {
                let f = self.readable(fd)?;
                let mut buf = vec![0u8; len.min(MAX_READ) as usize];
                let n = wc(f.read_vectored_at(&mut [IoSliceMut::new(&mut buf)], offset))?;
                buf.truncate(n as usize);
                Ok(Reply::Bytes(buf))
            }
            S::FdWrite { fd, data } => self.write(fd, &data).map(Reply::Size),
            S::FdPwrite { fd, data, offset } => {
                let f = self.writable(fd)?;
                let n = wc(f.write_vectored_at(&[IoSlice::new(&data)], offset))?;
                Ok(Reply::Size(u32::try_from(n).map_err(|_| Errno::Overflow)?))
            }
            S::FdPrestatGet { fd } => {
                let name = self.preopen_name(fd)?;
                Ok(Reply::PrestatDir {
                    name_len: name.len() as u32,
                })
            }
            S::FdPrestatDirName { fd } => {
                self.entry(fd)?;
                // As wasmtime: an open descriptor that is not a preopen is "not a directory".
                let name = self.preopen_name(fd).map_err(|_| Errno::Notdir)?;
                Ok(Reply::Bytes(name.into()))
            }
            S::FdRenumber { from, to } => {
                self.table.renumber(from, to)?;
                Ok(Reply::Unit)
            }
            S::FdSeek { fd, offset, whence } => {
                let pos = match whence {
                    Whence::Set => {
                        SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::Inval)?)
                    }
                    Whence::Cur => SeekFrom::Current(offset),
                    Whence::End => SeekFrom::End(offset),
                };
                Ok(Reply::Filesize(wc(self.file(fd)?.seek(pos))?))
            }
            S::FdTell { fd } => Ok(Reply::Filesize(wc(self
                .file(fd)?
                .seek(SeekFrom::Current(0)))?)),
            S::FdReaddir {
                fd,
                cookie,
                buf_len,
            } => {
                let (dir, _) = self.dir(fd)?;
                let mut out = Vec::new();
                let mut used = 0usize;
                for entity in wc(dir.readdir(ReaddirCursor::from(cookie)))? {
                    if used >= buf_len as usize {
                        break;
                    }
                    let entity = entity.map_err(errno)?;
                    used += 24 + entity.name.len();
                    out.push(Dirent {
                        next: entity.next.into(),
                        ino: entity.inode,
                        filetype: filetype_raw(entity.filetype),
                        name: entity.name.into_bytes(),
                    });
                }
                Ok(Reply::Dirents(out))
            }
            S::PathCreateDirectory { fd, path } => {
                let (dir, _) = self.dir(fd)?;
                wc(dir.create_dir(utf8(&path)?))?;
                Ok(Reply::Unit)
            }
            S::PathFilestatGet { fd, flags, path } => {
                let (dir, _) = self.dir(fd)?;
                let follow = flags & lookupflags::SYMLINK_FOLLOW != 0;
                let st = wc(dir.get_path_filestat(utf8(&path)?, follow))?;
                Ok(Reply::Filestat(filestat(st)))
            }
            S::PathFilestatSetTimes {
                fd,
                flags,
                path,
                atim,
                mtim,
                fst_flags,
            } => {
                let (a, m) = times(atim, mtim, fst_flags)?;
                let (dir, _) = self.dir(fd)?;
                let follow = flags & lookupflags::SYMLINK_FOLLOW != 0;
                wc(dir.set_times(utf8(&path)?, a, m, follow))?;
                Ok(Reply::Unit)
            }
            S::PathLink {
                old_fd,
                old_flags,
                old_path,
                new_fd,
                new_path,
            } => {
                let (src, _) = self.dir(old_fd)?;
                let (dst, _) = self.dir(new_fd)?;
                if old_flags & lookupflags::SYMLINK_FOLLOW != 0 {
                    return Err(Errno::Inval);
                }
                wc(src.hard_link(utf8(&old_path)?, dst, utf8(&new_path)?))?;
                Ok(Reply::Unit)
            }
            S::PathOpen {
                fd,
                dirflags,
                path,
                oflags: raw_oflags,
                rights_base,
                rights_inheriting,
                fdflags: raw_fdflags,
            } => self.path_open(
                fd,
                dirflags,
                &path,
                raw_oflags,
                rights_base,
                rights_inheriting,
                raw_fdflags,
            ),
            S::PathReadlink { fd, path } => {
                let (dir, _) = self.dir(fd)?;
                let target = wc(dir.read_link(utf8(&path)?))?;
                let target = target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| Errno::Ilseq)?;
                Ok(Reply::Bytes(target.into_bytes()))
            }
            S::PathRemoveDirectory { fd, path } => {
                let (dir, _) = self.dir(fd)?;
                wc(dir.remove_dir(utf8(&path)?))?;
                Ok(Reply::Unit)
            }
            S::PathRename {
                old_fd,
                old_path,
                new_fd,
                new_path,
            } => {
                let (src, _) = self.dir(old_fd)?;
                let (dst, _) = self.dir(new_fd)?;
                wc(src.rename(utf8(&old_path)?, dst, utf8(&new_path)?))?;
                Ok(Reply::Unit)
            }
            S::PathSymlink {
                old_path,
                fd,
                new_path,
            } => {
                let (dir, _) = self.dir(fd)?;
                wc(dir.symlink(utf8(&old_path)?, utf8(&new_path)?))?;
                Ok(Reply::Unit)
            }
            S::PathUnlinkFile { fd, path } => {
                let (dir, _) = self.dir(fd)?;
                wc(dir.unlink_file(utf8(&path)?))?;
                Ok(Reply::Unit)
            }
            S::PollOneoff { subscriptions } => self.poll_oneoff(&subscriptions).map(Reply::Events),
            S::SockAccept { fd, flags } => {
                let f = self.socket(fd)?;
                let file = wc(f.sock_accept(fdflags_from_raw(flags)))?;
                let new = self.table.push(Entry {
                    handle: Handle::File(file.into()),
                    meta: FdMeta {
                        kind: FdKind::File,
                        preopen: None,
                        path: String::new(),
                        oflags: 0,
                        fdflags: flags,
                        rights_base: rights::FD_READ | rights::FD_WRITE,
                        rights_inheriting: 0,
                        read: true,
                        write: true,
                    },
                })?;
                Ok(Reply::Fd(new))
            }
            S::SockRecv { fd, len, flags } => {
                let f = self.socket(fd)?;
                let mut buf = vec![0u8; len.min(MAX_READ) as usize];
                let (n, ro) = wc(f.sock_recv(
                    &mut [IoSliceMut::new(&mut buf)],
                    RiFlags::from_bits_truncate(u32::from(flags)),
                ))?;
                buf.truncate(n as usize);
                Ok(Reply::Recv {
                    data: buf,
                    roflags: ro.bits() as u16,
                })
            }
            S::SockSend { fd, data, .. } => {
                let f = self.socket(fd)?;
                let n = wc(f.sock_send(&[IoSlice::new(&data)], SiFlags::empty()))?;
                Ok(Reply::Size(u32::try_from(n).map_err(|_| Errno::Overflow)?))
            }
            S::SockShutdown { fd, how } => {
                let f = self.socket(fd)?;
                let how = SdFlags::from_bits(u32::from(how)).ok_or(Errno::Inval)?;
                wc(f.sock_shutdown(how))?;
                Ok(Reply::Unit)
            }
            S::ProcIdentity { pid } => {
                if pid == 0 || pid == self.identity.pid {
                    return Ok(Reply::Identity(self.identity()));
                }
                let table = self.processes.as_ref().ok_or(Errno::Srch)?;
                table.identity_of(pid).map(Reply::Identity)
            }
            S::ProcKill { target, signal } => {
                let signal = match signal {
                    0 => None,
                    n => Some(Signal::from_number(n).ok_or(Errno::Inval)?),
                };
                let me = self.identity();
                let target = match target {
                    0 => -(me.pgid as i32),
                    i32::MIN => return Err(Errno::Inval),
                    // -1 (every process one may signal) is not supported.
                    -1 => return Err(Errno::Notsup),
                    t => t,
                };
                let table = self.processes.as_ref().ok_or(Errno::Srch)?;
                let n = table.kill(self.identity.pid, target, signal)?;
                // As POSIX has it, a signal the caller sends itself is delivered
                // before the call returns: a terminating one ends it here.
                let me = target == me.pid as i32 || target == -(me.pgid as i32);
                match signal {
                    Some(s) if me && s.default_action() == crate::DefaultAction::Terminate => {
                        Ok(Reply::Terminated(s.number()))
                    }
                    _ => Ok(Reply::Size(n)),
                }
            }
            S::ProcSpawn(req) => {
                let table = self.processes.clone().ok_or(Errno::Nosys)?;
                let module = if req.module.is_empty() {
                    None
                } else {
                    Some(self.read_module(utf8(&req.module)?)?)
                };
                let deputy = self.for_child(&req.fds)?;
                let pid = table.spawn(Child {
                    parent: self.identity.pid,
                    module,
                    args: req.args,
                    env: req.env,
                    deputy,
                    node: req.node,
                })?;
                Ok(Reply::Size(pid))
            }
            S::ProcWait { target, options } => {
                use crate::abi::wait::{WCONTINUED, WNOHANG, WUNTRACED};
                if options & !(WNOHANG | WUNTRACED | WCONTINUED) != 0 || target == i32::MIN {
                    return Err(Errno::Inval);
                }
                let table = self.processes.clone().ok_or(Errno::Child)?;
                let target = match target {
                    0 => -(self.identity().pgid as i32),
                    t => t,
                };
                let (pid, status) = table.wait(self.identity.pid, target, options)?;
                Ok(Reply::Waited { pid, status })
            }
            S::ProcSetpgid { pid, pgid } => {
                let table = self.processes.clone().ok_or(Errno::Perm)?;
                let pid = if pid == 0 { self.identity.pid } else { pid };
                let pgid = if pgid == 0 { pid } else { pgid };
                if pgid > i32::MAX as u32 {
                    return Err(Errno::Inval);
                }
                table.setpgid(self.identity.pid, pid, pgid)?;
                Ok(Reply::Unit)
            }
            S::ProcSetsid => {
                let table = self.processes.clone().ok_or(Errno::Perm)?;
                table.setsid(self.identity.pid).map(Reply::Size)
            }
            S::ProcSigaction {
                signal,
                action,
                handler,
            } => {
                let sig = Signal::from_number(signal).ok_or(Errno::Inval)?;
                let action = match action {
                    0 => Action::Default,
                    1 => Action::Ignore,
                    2 if !handler.is_empty() && handler.len() <= 255 => {
                        Action::Handle(utf8(&handler)?.to_string())
                    }
                    _ => return Err(Errno::Inval),
                };
                let old = self.signals.set_action(sig, action).ok_or(Errno::Inval)?;
                Ok(Reply::Size(old.code()))
            }
            S::ProcSigmask { how, set } => {
                let (old, redo) = self.signals.set_mask(how, set).ok_or(Errno::Inval)?;
                // Signals that were blocked take their default action now,
                // delivered again through the home; one that ends the
                // process ends it before the call returns, as POSIX has it.
                if let Some(table) = self.processes.clone() {
                    for sig in redo {
                        table.kill(self.identity.pid, self.identity.pid as i32, Some(sig))?;
                        if sig.default_action() == crate::DefaultAction::Terminate {
                            return Ok(Reply::Terminated(sig.number()));
                        }
                    }
                }
                Ok(Reply::Size(old))
            }
            S::ProcSignals => {
                let mut out = Vec::new();
                for (sig, handler) in self.signals.take() {
                    out.push(sig.number());
                    out.push(handler.len() as u8);
                    out.extend_from_slice(handler.as_bytes());
                }
                Ok(Reply::Bytes(out))
            }
        }
    }

    /// Sets the process's identity and the home's table it asks about others.
    pub fn set_process(&mut self, identity: Identity, table: std::sync::Arc<dyn ProcessTable>) {
        self.identity = identity;
        self.processes = Some(table);
    }

    /// The process's identity: as the home's table has it now (a parent may
    /// have moved it to another group, or its parent may have ended), else
    /// as it was set.
    pub fn identity(&self) -> Identity {
        self.processes
            .as_ref()
            .and_then(|t| t.identity_of(self.identity.pid).ok())
            .unwrap_or(self.identity)
    }

    pub(crate) fn preopen_name(&self, fd: Fd) -> Result<&str, Errno> {
        let e = self.entry(fd)?;
        match (e.meta.kind, e.meta.preopen) {
            (FdKind::Preopen, Some(i)) => Ok(self.preopens[i].guest.as_str()),
            _ => Err(Errno::Badf),
        }
    }
}
