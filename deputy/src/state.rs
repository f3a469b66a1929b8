//! A deputy's state as a checkpoint keeps it: the process's identity, its
//! preopened directories, and every open descriptor with what reopens it
//! elsewhere (path, flags, rights, offset).
//!
//! The encoding is JSON: small next to a body's memory, readable when a
//! restart fails, and decoded with a typed error.

use crate::abi::Identity;
use crate::abi::{Errno, Fd, oflags};
use crate::convert::{open_at, seek};
use crate::deputy::{Deputy, Stdio};
use crate::table::{FdKind, FdMeta, FdTable, Handle};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Why a deputy's state cannot be taken, read or brought back.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("descriptor {fd} cannot be checkpointed: {why}")]
    Unsupported { fd: Fd, why: String },
    #[error("the deputy state is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot reopen the preopened directory `{host}` (seen as `{guest}`): {error}")]
    Preopen {
        host: PathBuf,
        guest: String,
        error: std::io::Error,
    },
    #[error("cannot reopen descriptor {fd} (`{path}` in `{dir}`): {errno}")]
    Reopen {
        fd: Fd,
        path: String,
        dir: String,
        errno: Errno,
    },
    #[error("cannot restore the offset {offset} of descriptor {fd} (`{path}`): {errno}")]
    Seek {
        fd: Fd,
        path: String,
        offset: u64,
        errno: Errno,
    },
}

/// One open descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdState {
    pub fd: Fd,
    pub meta: FdMeta,
    /// The file position (regular files only).
    pub offset: Option<u64>,
}

/// A preopened directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreopenState {
    pub host: PathBuf,
    pub guest: String,
}

/// Everything a deputy needs to be set up again after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeputyState {
    pub pid: u32,
    pub ppid: u32,
    pub pgid: u32,
    pub sid: u32,
    pub preopens: Vec<PreopenState>,
    /// In descriptor order.
    pub fds: Vec<FdState>,
    /// Closed descriptor numbers that the next opens reuse, as the table had them.
    pub free: Vec<Fd>,
    /// Signal dispositions and the blocked mask.
    #[serde(default)]
    pub signals: crate::signal::SignalTable,
}

impl DeputyState {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data of strings and integers: serialising it cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<DeputyState, StateError> {
        let state: DeputyState =
            serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt(e.to_string()))?;
        for f in &state.fds {
            if let Some(p) = f.meta.preopen
                && p >= state.preopens.len()
            {
                return Err(StateError::Corrupt(format!(
                    "descriptor {} names preopen {p}, and there are {}",
                    f.fd,
                    state.preopens.len()
                )));
            }
        }
        Ok(state)
    }

    pub fn identity(&self) -> Identity {
        Identity {
            pid: self.pid,
            ppid: self.ppid,
            pgid: self.pgid,
            sid: self.sid,
        }
    }
}

impl Deputy {
    /// The deputy's state, for a checkpoint. Descriptors that cannot be reopened
    /// from a path (an accepted socket) make it fail, naming the descriptor.
    pub fn checkpoint(&self) -> Result<DeputyState, StateError> {
        let mut fds = Vec::new();
        for (fd, meta) in self.descriptors() {
            let offset = match meta.kind {
                FdKind::File if meta.preopen.is_none() => {
                    return Err(StateError::Unsupported {
                        fd,
                        why: "it is a socket, which has no path to reopen".into(),
                    });
                }
                // A device or a pipe has no position: it is reopened as it is.
                FdKind::File => self.offset(fd).ok(),
                _ => None,
            };
            fds.push(FdState { fd, meta, offset });
        }
        let id = self.identity();
        Ok(DeputyState {
            pid: id.pid,
            ppid: id.ppid,
            pgid: id.pgid,
            sid: id.sid,
            preopens: self
                .preopens()
                .iter()
                .map(|p| PreopenState {
                    host: p.host.clone(),
                    guest: p.guest.clone(),
                })
                .collect(),
            fds,
            free: self.table.free(),
            signals: self.signals.snapshot(),
        })
    }

    /// A deputy set up again from a checkpoint's state: the standard streams
    /// are `stdio` (the restarting session's), the preopened directories and
    /// every file are opened again by path with the flags and rights they had
    /// (never created or truncated again), and files are put back at their
    /// offsets. The identity is the state's; the home sets it with
    /// [`Deputy::set_process`].
    pub fn restore(stdio: Stdio, state: &DeputyState) -> Result<Deputy, StateError> {
        let preopens = state
            .preopens
            .iter()
            .map(|p| crate::Preopen {
                host: p.host.clone(),
                guest: p.guest.clone(),
            })
            .collect::<Vec<_>>();
        let mut deputy = Deputy::new(stdio, preopens).map_err(|e| match e {
            crate::DeputyError::Preopen { path, guest, error } => StateError::Preopen {
                host: path,
                guest,
                error,
            },
        })?;
        // Fresh standard streams at 0–2 and preopens from 3, as at a launch:
        // taken from there to where the process had them.
        let mut fresh = std::mem::take(&mut deputy.table);
        let mut table = FdTable::default();
        for f in &state.fds {
            let entry = match f.meta.kind {
                FdKind::Stdio(n) => fresh.take(Fd::from(n)),
                FdKind::Preopen => f.meta.preopen.and_then(|i| fresh.take(3 + i as Fd)),
                FdKind::File | FdKind::Dir => {
                    let index = f.meta.preopen.ok_or_else(|| {
                        StateError::Corrupt(format!("descriptor {} has no directory", f.fd))
                    })?;
                    let guest = state.preopens[index].guest.clone();
                    let reopen = |errno| StateError::Reopen {
                        fd: f.fd,
                        path: f.meta.path.clone(),
                        dir: guest.clone(),
                        errno,
                    };
                    // Opened from the preopen itself, even if the process has
                    // closed that descriptor since.
                    let root = fresh
                        .dir_of_preopen(index)
                        .or_else(|| table.dir_of_preopen(index))
                        .ok_or(reopen(Errno::Badf))?;
                    let meta = FdMeta {
                        oflags: f.meta.oflags & !(oflags::CREAT | oflags::TRUNC | oflags::EXCL),
                        ..f.meta.clone()
                    };
                    let entry = open_at(root, true, &f.meta.path, meta).map_err(reopen)?;
                    if let (Some(offset), Handle::File(file)) = (f.offset, &entry.handle) {
                        seek(file.as_ref(), offset).map_err(|errno| StateError::Seek {
                            fd: f.fd,
                            path: f.meta.path.clone(),
                            offset,
                            errno,
                        })?;
                    }
                    Some(entry)
                }
            };
            let mut entry = entry.ok_or_else(|| {
                StateError::Corrupt(format!(
                    "descriptor {} is a standard stream or preopen that appears twice",
                    f.fd
                ))
            })?;
            entry.meta = f.meta.clone();
            table.insert_at(f.fd, entry);
        }
        table.set_free(&state.free);
        deputy.table = table;
        deputy.signals =
            std::sync::Arc::new(crate::signal::Signals::from_table(state.signals.clone()));
        Ok(deputy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Reply, Syscall, fdflags, rights};
    use crate::{Preopen, Stdio};

    fn stdio() -> Stdio {
        let null = || Box::new(wasi_common::pipe::WritePipe::new(std::io::sink()));
        Stdio {
            stdin: Box::new(wasi_common::pipe::ReadPipe::from(Vec::new())),
            stdout: null(),
            stderr: null(),
        }
    }

    fn open(d: &mut Deputy, path: &str, oflags: u16, fdflags: u16, rights: u64) -> Fd {
        match d.call(Syscall::PathOpen {
            fd: 3,
            dirflags: 0,
            path: path.as_bytes().to_vec(),
            oflags,
            rights_base: rights,
            rights_inheriting: 0,
            fdflags,
        }) {
            Ok(Reply::Fd(fd)) => fd,
            other => panic!("path_open {path}: {other:?}"),
        }
    }

    fn write(d: &mut Deputy, fd: Fd, data: &str) {
        let r = d.call(Syscall::FdWrite {
            fd,
            data: data.as_bytes().to_vec(),
        });
        assert_eq!(r, Ok(Reply::Size(data.len() as u32)));
    }

    #[test]
    fn files_are_reopened_at_their_offsets_and_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("input"), "0123456789").expect("input");
        let mut d = Deputy::new(
            stdio(),
            vec![Preopen {
                host: dir.path().to_path_buf(),
                guest: "/data".into(),
            }],
        )
        .expect("deputy");
        let rw = rights::FD_READ | rights::FD_WRITE | rights::FD_SEEK | rights::FD_TELL;
        let input = open(&mut d, "input", 0, 0, rights::FD_READ | rights::FD_SEEK);
        let gap = open(&mut d, "input", 0, 0, rights::FD_READ);
        let log = open(&mut d, "log", oflags::CREAT, fdflags::APPEND, rw);
        let out = open(&mut d, "out", oflags::CREAT | oflags::TRUNC, 0, rw);
        assert_eq!(
            d.call(Syscall::FdRead { fd: input, len: 4 }),
            Ok(Reply::Bytes(b"0123".to_vec()))
        );
        write(&mut d, log, "one\n");
        write(&mut d, out, "abcdef");
        d.call(Syscall::FdClose { fd: gap }).expect("close");

        let state =
            DeputyState::decode(&d.checkpoint().expect("checkpoint").encode()).expect("decode");
        drop(d);
        let mut r = Deputy::restore(stdio(), &state).expect("restore");
        // The read goes on where it was, the truncated file is not truncated
        // again, and appends still append.
        assert_eq!(
            r.call(Syscall::FdRead { fd: input, len: 3 }),
            Ok(Reply::Bytes(b"456".to_vec()))
        );
        write(&mut r, out, "gh");
        write(&mut r, log, "two\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).expect("out"),
            "abcdefgh"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).expect("log"),
            "one\ntwo\n"
        );
        // The closed number is the next one handed out, as before.
        assert_eq!(open(&mut r, "input", 0, 0, rights::FD_READ), gap);
    }

    #[test]
    fn a_missing_file_is_named_and_never_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut d = Deputy::new(
            stdio(),
            vec![Preopen {
                host: dir.path().to_path_buf(),
                guest: "/data".into(),
            }],
        )
        .expect("deputy");
        open(
            &mut d,
            "./gone",
            oflags::CREAT,
            0,
            rights::FD_WRITE | rights::FD_READ,
        );
        let state = d.checkpoint().expect("checkpoint");
        std::fs::remove_file(dir.path().join("gone")).expect("rm");
        let e = Deputy::restore(stdio(), &state).err().expect("must fail");
        let text = e.to_string();
        assert!(text.contains("descriptor 4 (`gone` in `/data`)"), "{text}");
        assert!(!dir.path().join("gone").exists());
    }

    #[test]
    fn corrupt_state_is_an_error() {
        assert!(matches!(
            DeputyState::decode(b"{\"pid\": 1"),
            Err(StateError::Corrupt(_))
        ));
    }
}
