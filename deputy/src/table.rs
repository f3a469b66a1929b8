//! The deputy's descriptor table: the open files and directories of one process,
//! each with the metadata a checkpoint needs to reopen it elsewhere.

use crate::abi::{Errno, Fd};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wasi_common::{WasiDir, WasiFile};

/// What a descriptor refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FdKind {
    /// One of the session's standard streams (0, 1 or 2).
    Stdio(u8),
    /// A directory preopened at launch.
    Preopen,
    /// A directory opened with `path_open`.
    Dir,
    /// A regular file (or device) opened with `path_open`.
    File,
}

/// Everything about a descriptor that is not the open handle itself: enough to
/// reopen it after a restart (the offset is read from the handle when needed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdMeta {
    pub kind: FdKind,
    /// Index of the preopen the path is relative to (`None` for standard streams).
    pub preopen: Option<usize>,
    /// Path relative to that preopen, lexically normalised; empty for the preopen itself.
    pub path: String,
    /// The `oflags` it was opened with.
    pub oflags: u16,
    /// The `fdflags` it was opened with (or last set).
    pub fdflags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
    pub read: bool,
    pub write: bool,
}

/// An open file or directory. Shared (a descriptor a child inherits is the same
/// open file, with the same offset, as POSIX has it).
#[derive(Clone)]
pub(crate) enum Handle {
    File(Arc<dyn WasiFile>),
    Dir(Arc<dyn WasiDir>),
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub handle: Handle,
    pub meta: FdMeta,
}

/// Descriptor numbers are handed out as wasmtime's preview1 does: the most
/// recently freed number first, otherwise one past the highest in use.
#[derive(Default)]
pub(crate) struct FdTable {
    used: BTreeMap<Fd, Entry>,
    free: BTreeSet<Fd>,
}

impl FdTable {
    pub fn insert_at(&mut self, fd: Fd, entry: Entry) {
        self.free.remove(&fd);
        self.used.insert(fd, entry);
    }

    pub fn push(&mut self, entry: Entry) -> Result<Fd, Errno> {
        let fd = match self.free.pop_last() {
            Some(fd) => fd,
            None => match self.used.last_key_value() {
                Some((last, _)) => last.checked_add(1).ok_or(Errno::Nfile)?,
                None => 0,
            },
        };
        self.used.insert(fd, entry);
        Ok(fd)
    }

    pub fn get(&self, fd: Fd) -> Result<&Entry, Errno> {
        self.used.get(&fd).ok_or(Errno::Badf)
    }

    pub fn get_mut(&mut self, fd: Fd) -> Result<&mut Entry, Errno> {
        self.used.get_mut(&fd).ok_or(Errno::Badf)
    }

    pub fn remove(&mut self, fd: Fd) -> Result<Entry, Errno> {
        let entry = self.used.remove(&fd).ok_or(Errno::Badf)?;
        self.free.insert(fd);
        Ok(entry)
    }

    /// Moves `from` onto `to`, closing what `to` held.
    pub fn renumber(&mut self, from: Fd, to: Fd) -> Result<(), Errno> {
        if !self.used.contains_key(&from) || !self.used.contains_key(&to) {
            return Err(Errno::Badf);
        }
        if from == to {
            return Ok(());
        }
        let entry = self.remove(from)?;
        self.used.insert(to, entry);
        Ok(())
    }

    /// Takes an entry out without freeing its number.
    pub fn take(&mut self, fd: Fd) -> Option<Entry> {
        self.used.remove(&fd)
    }

    /// The directory of preopen `index`, if its descriptor is in this table.
    pub fn dir_of_preopen(&self, index: usize) -> Option<&dyn WasiDir> {
        self.used
            .values()
            .find_map(|e| match (&e.handle, e.meta.kind) {
                (Handle::Dir(d), FdKind::Preopen) if e.meta.preopen == Some(index) => {
                    Some(d.as_ref())
                }
                _ => None,
            })
    }

    /// The freed numbers the next opens reuse.
    pub fn free(&self) -> Vec<Fd> {
        self.free.iter().copied().collect()
    }

    pub fn set_free(&mut self, free: &[Fd]) {
        self.free = free
            .iter()
            .copied()
            .filter(|fd| !self.used.contains_key(fd))
            .collect();
    }

    pub fn iter(&self) -> impl Iterator<Item = (Fd, &Entry)> {
        self.used.iter().map(|(fd, e)| (*fd, e))
    }
}

/// Joins `rel` onto `base` lexically ("." dropped, ".." pops), for metadata only:
/// the sandbox itself is enforced by cap-std when the path is resolved.
pub(crate) fn join_rel(base: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = if rel.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_rel_normalises() {
        assert_eq!(join_rel("", "a/b"), "a/b");
        assert_eq!(join_rel("a", "./b/../c"), "a/c");
        assert_eq!(join_rel("a/b", ".."), "a");
        assert_eq!(join_rel("", "x//y/"), "x/y");
    }
}
