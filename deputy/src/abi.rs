//! The WASI preview1 vocabulary as plain Rust values.
//!
//! A body turns each guest system call into a [`Syscall`] (no guest pointers: every
//! buffer is copied in, every result is copied out), hands it to its deputy, and
//! gets back a [`Reply`] or an [`Errno`]. These types are what travels over a
//! deputy link, in-process or over the network.

pub use wasi_common::snapshots::preview_1::types::Errno;

/// A guest file descriptor number.
pub type Fd = u32;

/// Converts a raw errno number (as carried over the wire) back into an [`Errno`].
pub fn errno_from_u16(raw: u16) -> Option<Errno> {
    Errno::try_from(raw).ok()
}

/// `filetype` values of WASI preview1.
pub mod filetype {
    pub const UNKNOWN: u8 = 0;
    pub const BLOCK_DEVICE: u8 = 1;
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
    pub const SOCKET_DGRAM: u8 = 5;
    pub const SOCKET_STREAM: u8 = 6;
    pub const SYMBOLIC_LINK: u8 = 7;
}

/// `fdflags` bits of WASI preview1.
pub mod fdflags {
    pub const APPEND: u16 = 1 << 0;
    pub const DSYNC: u16 = 1 << 1;
    pub const NONBLOCK: u16 = 1 << 2;
    pub const RSYNC: u16 = 1 << 3;
    pub const SYNC: u16 = 1 << 4;
    pub const ALL: u16 = 0x1f;
}

/// `oflags` bits of WASI preview1.
pub mod oflags {
    pub const CREAT: u16 = 1 << 0;
    pub const DIRECTORY: u16 = 1 << 1;
    pub const EXCL: u16 = 1 << 2;
    pub const TRUNC: u16 = 1 << 3;
    pub const ALL: u16 = 0xf;
}

/// `lookupflags` bits of WASI preview1.
pub mod lookupflags {
    pub const SYMLINK_FOLLOW: u32 = 1 << 0;
}

/// `fstflags` bits of WASI preview1.
pub mod fstflags {
    pub const ATIM: u16 = 1 << 0;
    pub const ATIM_NOW: u16 = 1 << 1;
    pub const MTIM: u16 = 1 << 2;
    pub const MTIM_NOW: u16 = 1 << 3;
    pub const ALL: u16 = 0xf;
}

/// `rights` bits of WASI preview1.
pub mod rights {
    pub const FD_DATASYNC: u64 = 1 << 0;
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_SEEK: u64 = 1 << 2;
    pub const FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
    pub const FD_SYNC: u64 = 1 << 4;
    pub const FD_TELL: u64 = 1 << 5;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_ADVISE: u64 = 1 << 7;
    pub const FD_ALLOCATE: u64 = 1 << 8;
    pub const PATH_CREATE_DIRECTORY: u64 = 1 << 9;
    pub const PATH_CREATE_FILE: u64 = 1 << 10;
    pub const PATH_LINK_SOURCE: u64 = 1 << 11;
    pub const PATH_LINK_TARGET: u64 = 1 << 12;
    pub const PATH_OPEN: u64 = 1 << 13;
    pub const FD_READDIR: u64 = 1 << 14;
    pub const PATH_READLINK: u64 = 1 << 15;
    pub const PATH_RENAME_SOURCE: u64 = 1 << 16;
    pub const PATH_RENAME_TARGET: u64 = 1 << 17;
    pub const PATH_FILESTAT_GET: u64 = 1 << 18;
    pub const PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
    pub const PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
    pub const FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
    pub const FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
    pub const PATH_SYMLINK: u64 = 1 << 24;
    pub const PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
    pub const PATH_UNLINK_FILE: u64 = 1 << 26;
    pub const POLL_FD_READWRITE: u64 = 1 << 27;
    pub const SOCK_SHUTDOWN: u64 = 1 << 28;
    pub const SOCK_ACCEPT: u64 = 1 << 29;
    pub const ALL: u64 = (1 << 30) - 1;
}

/// `clockid` values of WASI preview1.
pub mod clockid {
    pub const REALTIME: u32 = 0;
    pub const MONOTONIC: u32 = 1;
    pub const PROCESS_CPUTIME: u32 = 2;
    pub const THREAD_CPUTIME: u32 = 3;
}

/// `eventtype` values of WASI preview1.
pub mod eventtype {
    pub const CLOCK: u8 = 0;
    pub const FD_READ: u8 = 1;
    pub const FD_WRITE: u8 = 2;
}

/// `whence` values of WASI preview1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whence {
    Set,
    Cur,
    End,
}

impl Whence {
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Whence::Set),
            1 => Some(Whence::Cur),
            2 => Some(Whence::End),
            _ => None,
        }
    }

    pub fn to_raw(self) -> u8 {
        match self {
            Whence::Set => 0,
            Whence::Cur => 1,
            Whence::End => 2,
        }
    }
}

/// `advice` values of WASI preview1 (0 = normal … 5 = noreuse).
pub type Advice = u8;

/// File attributes, as `filestat` of WASI preview1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filestat {
    pub dev: u64,
    pub ino: u64,
    pub filetype: u8,
    pub nlink: u64,
    pub size: u64,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

/// Descriptor attributes, as `fdstat` of WASI preview1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fdstat {
    pub filetype: u8,
    pub flags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
}

/// What a `poll_oneoff` subscription waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    /// A relative timeout in nanoseconds (absolute deadlines are turned into
    /// relative ones by the body, whose clocks they refer to).
    Clock {
        id: u32,
        timeout: u64,
        precision: u64,
    },
    FdRead(Fd),
    FdWrite(Fd),
}

/// One `poll_oneoff` subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub userdata: u64,
    pub kind: SubscriptionKind,
}

/// One `poll_oneoff` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub userdata: u64,
    /// `Errno` as its raw number (0 for success).
    pub error: u16,
    pub eventtype: u8,
    pub nbytes: u64,
    pub flags: u16,
}

/// A directory entry as returned by `fd_readdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirent {
    pub next: u64,
    pub ino: u64,
    pub filetype: u8,
    pub name: Vec<u8>,
}

/// A WASI preview1 call that touches home state, with every argument by value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Syscall {
    FdAdvise {
        fd: Fd,
        offset: u64,
        len: u64,
        advice: Advice,
    },
    FdAllocate {
        fd: Fd,
        offset: u64,
        len: u64,
    },
    FdClose {
        fd: Fd,
    },
    FdDatasync {
        fd: Fd,
    },
    FdFdstatGet {
        fd: Fd,
    },
    FdFdstatSetFlags {
        fd: Fd,
        flags: u16,
    },
    FdFdstatSetRights {
        fd: Fd,
        rights_base: u64,
        rights_inheriting: u64,
    },
    FdFilestatGet {
        fd: Fd,
    },
    FdFilestatSetSize {
        fd: Fd,
        size: u64,
    },
    FdFilestatSetTimes {
        fd: Fd,
        atim: u64,
        mtim: u64,
        fst_flags: u16,
    },
    FdPread {
        fd: Fd,
        len: u32,
        offset: u64,
    },
    FdPrestatGet {
        fd: Fd,
    },
    FdPrestatDirName {
        fd: Fd,
    },
    FdPwrite {
        fd: Fd,
        data: Vec<u8>,
        offset: u64,
    },
    FdRead {
        fd: Fd,
        len: u32,
    },
    FdReaddir {
        fd: Fd,
        cookie: u64,
        /// The guest's buffer size: the deputy returns at most enough entries to fill it.
        buf_len: u32,
    },
    FdRenumber {
        from: Fd,
        to: Fd,
    },
    FdSeek {
        fd: Fd,
        offset: i64,
        whence: Whence,
    },
    FdSync {
        fd: Fd,
    },
    FdTell {
        fd: Fd,
    },
    FdWrite {
        fd: Fd,
        data: Vec<u8>,
    },
    PathCreateDirectory {
        fd: Fd,
        path: Vec<u8>,
    },
    PathFilestatGet {
        fd: Fd,
        flags: u32,
        path: Vec<u8>,
    },
    PathFilestatSetTimes {
        fd: Fd,
        flags: u32,
        path: Vec<u8>,
        atim: u64,
        mtim: u64,
        fst_flags: u16,
    },
    PathLink {
        old_fd: Fd,
        old_flags: u32,
        old_path: Vec<u8>,
        new_fd: Fd,
        new_path: Vec<u8>,
    },
    PathOpen {
        fd: Fd,
        dirflags: u32,
        path: Vec<u8>,
        oflags: u16,
        rights_base: u64,
        rights_inheriting: u64,
        fdflags: u16,
    },
    PathReadlink {
        fd: Fd,
        path: Vec<u8>,
    },
    PathRemoveDirectory {
        fd: Fd,
        path: Vec<u8>,
    },
    PathRename {
        old_fd: Fd,
        old_path: Vec<u8>,
        new_fd: Fd,
        new_path: Vec<u8>,
    },
    PathSymlink {
        old_path: Vec<u8>,
        fd: Fd,
        new_path: Vec<u8>,
    },
    PathUnlinkFile {
        fd: Fd,
        path: Vec<u8>,
    },
    PollOneoff {
        subscriptions: Vec<Subscription>,
    },
    SockAccept {
        fd: Fd,
        flags: u16,
    },
    SockRecv {
        fd: Fd,
        len: u32,
        flags: u16,
    },
    SockSend {
        fd: Fd,
        data: Vec<u8>,
        flags: u16,
    },
    SockShutdown {
        fd: Fd,
        how: u8,
    },
    /// `ssi` API: the identity of process `pid` (0: the caller).
    ProcIdentity {
        pid: u32,
    },
    /// `ssi` API: send `signal` (0: only check) to a pid, or to a group as `-pgid`
    /// (0: the caller's group).
    ProcKill {
        target: i32,
        signal: u8,
    },
    /// `ssi` API: start a child process (its home is the caller's).
    ProcSpawn(SpawnRequest),
    /// `ssi` API: wait for a child (`target`: a pid, -1 any child, 0 the
    /// caller's group, -pgid a group) to change state, as `waitpid`.
    ProcWait {
        target: i32,
        options: u32,
    },
    /// `ssi` API: put process `pid` (0: the caller) into group `pgid` (0: its pid).
    ProcSetpgid {
        pid: u32,
        pgid: u32,
    },
    /// `ssi` API: the caller leads a new session and group.
    ProcSetsid,
    /// `ssi` API: what `signal` does: 0 its default action, 1 ignored, 2 the
    /// export `handler` of the body's module runs.
    ProcSigaction {
        signal: u8,
        action: u8,
        handler: Vec<u8>,
    },
    /// `ssi` API: block (`how` 0), unblock (1) or set (2) the signals in `set`
    /// (bit n - 1 for signal n).
    ProcSigmask {
        how: u8,
        set: u32,
    },
    /// `ssi` API: the signals whose handlers the body runs now (taken out of
    /// the pending set), as `Reply::Bytes`: for each, its number, the length
    /// of its handler's name, and the name.
    ProcSignals,
}

/// What `ssi` `spawn` is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpawnRequest {
    /// The module: a path in the caller's namespace (under one of its
    /// preopened directories), or empty for the caller's own module.
    pub module: Vec<u8>,
    /// The child's arguments, `argv[0]` first.
    pub args: Vec<Vec<u8>>,
    /// The child's environment, `NAME=value` each.
    pub env: Vec<Vec<u8>>,
    /// Descriptors of the child as (child fd, caller fd) pairs; empty: the
    /// child inherits every descriptor at the same number.
    pub fds: Vec<(Fd, Fd)>,
    /// The node to start its body on; 0: the home chooses.
    pub node: u16,
}

/// `waitpid` options and status words, as POSIX (and Linux) encode them.
pub mod wait {
    /// Return at once when no child has changed state.
    pub const WNOHANG: u32 = 1;
    /// Report children that stopped.
    pub const WUNTRACED: u32 = 2;
    /// Report children that continued.
    pub const WCONTINUED: u32 = 8;
    /// The status word of a child that exited with `code`.
    pub fn exited(code: i32) -> u32 {
        ((code as u32) & 0xff) << 8
    }
    /// The status word of a child a signal ended.
    pub fn signaled(sig: u8) -> u32 {
        u32::from(sig & 0x7f)
    }
    /// The status word of a child a signal stopped.
    pub fn stopped(sig: u8) -> u32 {
        (u32::from(sig) << 8) | 0x7f
    }
    /// The status word of a child that continued.
    pub const CONTINUED: u32 = 0xffff;
}

impl Syscall {
    /// The WASI function name of this call, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Syscall::FdAdvise { .. } => "fd_advise",
            Syscall::FdAllocate { .. } => "fd_allocate",
            Syscall::FdClose { .. } => "fd_close",
            Syscall::FdDatasync { .. } => "fd_datasync",
            Syscall::FdFdstatGet { .. } => "fd_fdstat_get",
            Syscall::FdFdstatSetFlags { .. } => "fd_fdstat_set_flags",
            Syscall::FdFdstatSetRights { .. } => "fd_fdstat_set_rights",
            Syscall::FdFilestatGet { .. } => "fd_filestat_get",
            Syscall::FdFilestatSetSize { .. } => "fd_filestat_set_size",
            Syscall::FdFilestatSetTimes { .. } => "fd_filestat_set_times",
            Syscall::FdPread { .. } => "fd_pread",
            Syscall::FdPrestatGet { .. } => "fd_prestat_get",
            Syscall::FdPrestatDirName { .. } => "fd_prestat_dir_name",
            Syscall::FdPwrite { .. } => "fd_pwrite",
            Syscall::FdRead { .. } => "fd_read",
            Syscall::FdReaddir { .. } => "fd_readdir",
            Syscall::FdRenumber { .. } => "fd_renumber",
            Syscall::FdSeek { .. } => "fd_seek",
            Syscall::FdSync { .. } => "fd_sync",
            Syscall::FdTell { .. } => "fd_tell",
            Syscall::FdWrite { .. } => "fd_write",
            Syscall::PathCreateDirectory { .. } => "path_create_directory",
            Syscall::PathFilestatGet { .. } => "path_filestat_get",
            Syscall::PathFilestatSetTimes { .. } => "path_filestat_set_times",
            Syscall::PathLink { .. } => "path_link",
            Syscall::PathOpen { .. } => "path_open",
            Syscall::PathReadlink { .. } => "path_readlink",
            Syscall::PathRemoveDirectory { .. } => "path_remove_directory",
            Syscall::PathRename { .. } => "path_rename",
            Syscall::PathSymlink { .. } => "path_symlink",
            Syscall::PathUnlinkFile { .. } => "path_unlink_file",
            Syscall::PollOneoff { .. } => "poll_oneoff",
            Syscall::SockAccept { .. } => "sock_accept",
            Syscall::SockRecv { .. } => "sock_recv",
            Syscall::SockSend { .. } => "sock_send",
            Syscall::SockShutdown { .. } => "sock_shutdown",
            Syscall::ProcIdentity { .. } => "ssi identity",
            Syscall::ProcKill { .. } => "ssi kill",
            Syscall::ProcSpawn(_) => "ssi spawn",
            Syscall::ProcWait { .. } => "ssi waitpid",
            Syscall::ProcSetpgid { .. } => "ssi setpgid",
            Syscall::ProcSetsid => "ssi setsid",
            Syscall::ProcSigaction { .. } => "ssi sigaction",
            Syscall::ProcSigmask { .. } => "ssi sigprocmask",
            Syscall::ProcSignals => "ssi signals",
        }
    }
}

/// The successful result of a [`Syscall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The call has no result besides success.
    Unit,
    /// A byte count (`fd_write`, `fd_pwrite`, `sock_send`).
    Size(u32),
    /// A file offset or size (`fd_seek`, `fd_tell`).
    Filesize(u64),
    /// Bytes read, a link target or a preopen name.
    Bytes(Vec<u8>),
    /// A new descriptor (`path_open`, `sock_accept`).
    Fd(Fd),
    Fdstat(Fdstat),
    Filestat(Filestat),
    /// `fd_prestat_get`: a preopened directory whose name has this length.
    PrestatDir {
        name_len: u32,
    },
    /// `fd_readdir`: entries from the cookie on, enough to fill the guest's buffer.
    Dirents(Vec<Dirent>),
    Events(Vec<Event>),
    /// `sock_recv`: the bytes and the `roflags`.
    Recv {
        data: Vec<u8>,
        roflags: u16,
    },
    /// `ssi` API: a process's identity.
    Identity(Identity),
    /// `ssi` API: the caller's own signal (this number) ends it, now: the body
    /// must not run on.
    Terminated(u8),
    /// `ssi` API: a child that changed state, and its status word (pid 0: none
    /// yet, with `WNOHANG`).
    Waited {
        pid: u32,
        status: u32,
    },
}

/// The outcome of a [`Syscall`]: a reply, or the errno the guest sees.
pub type SyscallResult = Result<Reply, Errno>;

/// Encodes `fd_readdir` entries into the byte layout the guest expects, truncated
/// to `buf_len` exactly as preview1 specifies (a full buffer tells the guest to call again).
pub fn encode_dirents(entries: &[Dirent], buf_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf_len.min(64 * 1024));
    for e in entries {
        let mut head = [0u8; 24];
        head[0..8].copy_from_slice(&e.next.to_le_bytes());
        head[8..16].copy_from_slice(&e.ino.to_le_bytes());
        head[16..20].copy_from_slice(&(e.name.len() as u32).to_le_bytes());
        head[20] = e.filetype;
        for chunk in [&head[..], &e.name[..]] {
            let room = buf_len - out.len();
            if chunk.len() > room {
                out.extend_from_slice(&chunk[..room]);
                return out;
            }
            out.extend_from_slice(chunk);
        }
    }
    out
}

/// A process's place among processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Identity {
    pub pid: u32,
    /// 0 when the parent is outside the cluster (the session that launched it).
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
}

impl Identity {
    /// A process launched by a session: it leads its own group and session.
    pub fn leader(pid: u32) -> Self {
        Identity {
            pid,
            ppid: 0,
            pgid: pid,
            sid: pid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_truncate_at_buffer_end() {
        let entries = vec![
            Dirent {
                next: 1,
                ino: 7,
                filetype: filetype::REGULAR_FILE,
                name: b"a.txt".to_vec(),
            },
            Dirent {
                next: 2,
                ino: 8,
                filetype: filetype::DIRECTORY,
                name: b"sub".to_vec(),
            },
        ];
        let full = encode_dirents(&entries, 1024);
        assert_eq!(full.len(), 24 + 5 + 24 + 3);
        assert_eq!(&full[24..29], b"a.txt");
        assert_eq!(full[20], filetype::REGULAR_FILE);
        let cut = encode_dirents(&entries, 30);
        assert_eq!(cut.len(), 30);
        assert_eq!(&cut[..30], &full[..30]);
    }

    #[test]
    fn errno_round_trips_through_u16() {
        for e in [Errno::Badf, Errno::Noent, Errno::Notcapable, Errno::Success] {
            assert_eq!(errno_from_u16(e as u16), Some(e));
        }
        assert_eq!(errno_from_u16(9999), None);
    }
}
