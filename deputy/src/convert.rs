//! Between wasi-common and preview1's values: wasi-common's async calls run to
//! completion on the calling thread (`run`: they never wait on this
//! configuration), its errors as errnos, its file types, stats, flags and times
//! as preview1 encodes them, and opening a path under a directory with the
//! rights it asks for.
//!
//! Must not know: descriptor tables, processes.

use crate::abi::*;
use crate::table::{Entry, FdKind, FdMeta, Handle};
use std::future::Future;
use std::io::SeekFrom;
use std::pin::pin;
use std::task::{Context, Poll as TaskPoll, Waker};
use wasi_common::dir::OpenResult;
use wasi_common::file::{FdFlags, FileType, OFlags};
use wasi_common::{SystemTimeSpec, WasiDir, WasiFile};

/// Drives one of wasi-common's synchronous operations to completion. They never
/// wait on a waker (they block the calling thread instead), so one poll is enough.
pub(crate) fn run<F: Future>(f: F) -> Result<F::Output, Errno> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        TaskPoll::Ready(v) => Ok(v),
        TaskPoll::Pending => Err(Errno::Io),
    }
}

pub(crate) fn errno(e: wasi_common::Error) -> Errno {
    e.downcast().unwrap_or(Errno::Io)
}

/// Runs a wasi-common operation and turns its error into the guest's errno.
pub(crate) fn wc<T, F: Future<Output = Result<T, wasi_common::Error>>>(f: F) -> Result<T, Errno> {
    run(f)?.map_err(errno)
}

/// Opens `path` under `dir` as `meta` describes (its oflags, fdflags, read
/// and write); the entry is a file, or a directory if that is what opened.
pub(crate) fn open_at(
    dir: &dyn WasiDir,
    follow: bool,
    path: &str,
    meta: FdMeta,
) -> Result<Entry, Errno> {
    let oflags = OFlags::from_bits_truncate(u32::from(meta.oflags));
    let fdflags = fdflags_from_raw(meta.fdflags);
    // O_TRUNC with O_APPEND is valid POSIX (and `wasmtime run` takes it), but
    // the file system layer refuses the pair: the file is opened for
    // appending, then truncated.
    let trunc_append = oflags.contains(OFlags::TRUNCATE) && fdflags.contains(FdFlags::APPEND);
    let opened = wc(dir.open_file(
        follow,
        path,
        if trunc_append {
            oflags - OFlags::TRUNCATE
        } else {
            oflags
        },
        meta.read,
        meta.write,
        fdflags,
    ))?;
    if trunc_append && let OpenResult::File(file) = &opened {
        if !meta.write {
            return Err(Errno::Inval);
        }
        wc(file.set_filestat_size(0))?;
    }
    Ok(match opened {
        OpenResult::File(file) => Entry {
            handle: Handle::File(file.into()),
            meta,
        },
        OpenResult::Dir(_) if meta.write => return Err(Errno::Isdir),
        OpenResult::Dir(d) => Entry {
            handle: Handle::Dir(d.into()),
            meta: FdMeta {
                kind: FdKind::Dir,
                ..meta
            },
        },
    })
}

/// Puts a file at `offset`.
pub(crate) fn seek(file: &dyn WasiFile, offset: u64) -> Result<u64, Errno> {
    wc(file.seek(SeekFrom::Start(offset)))
}

pub(crate) fn utf8(path: &[u8]) -> Result<&str, Errno> {
    std::str::from_utf8(path).map_err(|_| Errno::Ilseq)
}

pub(crate) fn filetype_raw(ft: FileType) -> u8 {
    match ft {
        FileType::Unknown | FileType::Pipe => filetype::UNKNOWN,
        FileType::BlockDevice => filetype::BLOCK_DEVICE,
        FileType::CharacterDevice => filetype::CHARACTER_DEVICE,
        FileType::Directory => filetype::DIRECTORY,
        FileType::RegularFile => filetype::REGULAR_FILE,
        FileType::SocketDgram => filetype::SOCKET_DGRAM,
        FileType::SocketStream => filetype::SOCKET_STREAM,
        FileType::SymbolicLink => filetype::SYMBOLIC_LINK,
    }
}

pub(crate) fn nanos(t: Option<std::time::SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

pub(crate) fn filestat(st: wasi_common::file::Filestat) -> Filestat {
    Filestat {
        dev: st.device_id,
        ino: st.inode,
        filetype: filetype_raw(st.filetype),
        nlink: st.nlink,
        size: st.size,
        atim: nanos(st.atim),
        mtim: nanos(st.mtim),
        ctim: nanos(st.ctim),
    }
}

pub(crate) fn fdflags_from_raw(raw: u16) -> FdFlags {
    FdFlags::from_bits_truncate(u32::from(raw))
}

pub(crate) fn fdflags_to_raw(flags: FdFlags) -> u16 {
    flags.bits() as u16
}

pub(crate) fn time_spec(set: bool, now: bool, ns: u64) -> Result<Option<SystemTimeSpec>, Errno> {
    match (set, now) {
        (true, true) => Err(Errno::Inval),
        (true, false) => Ok(Some(SystemTimeSpec::Absolute(
            cap_std::time::SystemTime::from_std(
                std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns),
            ),
        ))),
        (false, true) => Ok(Some(SystemTimeSpec::SymbolicNow)),
        (false, false) => Ok(None),
    }
}

pub(crate) fn times(
    atim: u64,
    mtim: u64,
    fst: u16,
) -> Result<(Option<SystemTimeSpec>, Option<SystemTimeSpec>), Errno> {
    if fst & !fstflags::ALL != 0 {
        return Err(Errno::Inval);
    }
    let a = time_spec(
        fst & fstflags::ATIM != 0,
        fst & fstflags::ATIM_NOW != 0,
        atim,
    )?;
    let m = time_spec(
        fst & fstflags::MTIM != 0,
        fst & fstflags::MTIM_NOW != 0,
        mtim,
    )?;
    Ok((a, m))
}
