//! Cluster-wide process ids.
//!
//! As in OpenSSI, a pid carries its home node in its high bits: the low
//! [`SEQ_BITS`] bits are a sequence number the home allocates, the bits above are
//! the home's node id. A pid therefore says where its deputy lives, and two homes
//! can never hand out the same pid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A persistent allocator records how far it may go before writing again.
const RESERVE: u32 = 1024;

/// A node's numeric id.
pub type NodeId = u16;
/// A cluster-wide process id.
pub type Pid = u32;

/// Bits of a pid that number processes within one home.
pub const SEQ_BITS: u32 = 22;
/// The largest node id a pid can encode (pids stay positive as `i32`).
pub const MAX_NODE_ID: NodeId = (1 << (31 - SEQ_BITS)) - 1;
const SEQ_MASK: u32 = (1 << SEQ_BITS) - 1;

#[derive(Debug, thiserror::Error)]
pub enum PidError {
    #[error("node id {0} is out of range (1..={MAX_NODE_ID})")]
    BadNode(u32),
    #[error("node {0} has no free pids left")]
    Exhausted(NodeId),
    #[error("cannot record the pid sequence in {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the pid sequence file {0} is corrupt (expected one number)")]
    Corrupt(PathBuf),
}

/// The home node encoded in a pid.
pub fn home_of(pid: Pid) -> NodeId {
    (pid >> SEQ_BITS) as NodeId
}

/// Hands out the pids of one home: increasing, never reusing a pid while it is
/// still held (a live process, or later an image of one).
pub struct PidAllocator {
    node: NodeId,
    state: Mutex<AllocState>,
}

struct AllocState {
    next: u32,
    held: BTreeSet<u32>,
    /// Where the sequence is kept across restarts, and up to where it is recorded.
    store: Option<(PathBuf, u32)>,
}

fn write_atomically(path: &Path, value: u32) -> Result<(), PidError> {
    let err = |source| PidError::Store {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{value}\n")).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl PidAllocator {
    pub fn new(node: NodeId) -> Result<Self, PidError> {
        if node == 0 || node > MAX_NODE_ID {
            return Err(PidError::BadNode(u32::from(node)));
        }
        Ok(PidAllocator {
            node,
            state: Mutex::new(AllocState {
                next: 1,
                held: BTreeSet::new(),
                store: None,
            }),
        })
    }

    /// An allocator whose sequence survives restarts of the node: it continues
    /// after every pid it may have handed out before (recorded in `path` ahead of
    /// use, a block at a time), so a pid that an earlier run gave a process is not
    /// given again soon after a restart.
    pub fn persistent(node: NodeId, path: &Path) -> Result<Self, PidError> {
        let a = PidAllocator::new(node)?;
        let start = match std::fs::read_to_string(path) {
            Ok(text) => text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=SEQ_MASK).contains(n))
                .ok_or_else(|| PidError::Corrupt(path.to_path_buf()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(source) => {
                return Err(PidError::Store {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        {
            let mut st = a.state.lock().unwrap_or_else(|p| p.into_inner());
            st.next = start;
            st.store = Some((path.to_path_buf(), start));
        }
        Ok(a)
    }

    pub fn allocate(&self) -> Result<Pid, PidError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.held.len() as u32 >= SEQ_MASK {
            return Err(PidError::Exhausted(self.node));
        }
        loop {
            let seq = st.next;
            st.next = if st.next >= SEQ_MASK { 1 } else { st.next + 1 };
            if st.held.contains(&seq) {
                continue;
            }
            // Record the next block before handing out a pid beyond the last one.
            if let Some((path, recorded)) = &st.store
                && (seq >= *recorded || seq < recorded.saturating_sub(RESERVE))
            {
                let upto = seq.saturating_add(RESERVE).min(SEQ_MASK);
                write_atomically(path, upto)?;
                let path = path.clone();
                st.store = Some((path, upto));
            }
            st.held.insert(seq);
            return Ok((u32::from(self.node) << SEQ_BITS) | seq);
        }
    }

    /// Takes a given pid of this home (a restarted checkpoint's): false when
    /// it belongs to another home or is held.
    pub fn claim(&self, pid: Pid) -> bool {
        let seq = pid & SEQ_MASK;
        if home_of(pid) != self.node || seq == 0 {
            return false;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.held.insert(seq)
    }

    pub fn release(&self, pid: Pid) {
        if home_of(pid) == self.node {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.held.remove(&(pid & SEQ_MASK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_encode_their_home() {
        let a = PidAllocator::new(3).expect("node 3");
        let p = a.allocate().expect("pid");
        assert_eq!(home_of(p), 3);
        assert!(p as i32 > 0);
        let top = PidAllocator::new(MAX_NODE_ID).expect("top node");
        assert!(top.allocate().expect("pid") as i32 > 0);
        assert!(PidAllocator::new(0).is_err());
        assert!(PidAllocator::new(MAX_NODE_ID + 1).is_err());
    }

    #[test]
    fn a_restarted_node_does_not_hand_out_earlier_pids() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pids");
        let a = PidAllocator::persistent(2, &path).expect("allocator");
        let first: Vec<Pid> = (0..5).map(|_| a.allocate().expect("pid")).collect();
        drop(a);
        let b = PidAllocator::persistent(2, &path).expect("allocator again");
        let next = b.allocate().expect("pid");
        assert!(first.iter().all(|p| *p < next), "{first:?} then {next}");
        assert_eq!(home_of(next), 2);
        std::fs::write(&path, "garbage").expect("write");
        assert!(matches!(
            PidAllocator::persistent(2, &path),
            Err(PidError::Corrupt(_))
        ));
    }

    #[test]
    fn held_pids_are_not_reused() {
        let a = PidAllocator::new(1).expect("node 1");
        let p1 = a.allocate().expect("pid");
        let p2 = a.allocate().expect("pid");
        assert_ne!(p1, p2);
        a.release(p1);
        let p3 = a.allocate().expect("pid");
        assert_ne!(p3, p2);
        // A checkpoint's pid comes back only if it is free and of this home.
        assert!(!a.claim(p2));
        a.release(p2);
        assert!(a.claim(p2));
        assert!(!PidAllocator::new(2).expect("node 2").claim(p2));
    }
}
