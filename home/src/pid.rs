//! Cluster-wide process ids.
//!
//! As in OpenSSI, a pid carries its home node in its high bits: the low
//! [`SEQ_BITS`] bits are a sequence number the home allocates, the bits above are
//! the home's node id. A pid therefore says where its deputy lives, and two homes
//! can never hand out the same pid.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// A node's numeric id.
pub type NodeId = u16;
/// A cluster-wide process id.
pub type Pid = u32;

/// Bits of a pid that number processes within one home.
pub const SEQ_BITS: u32 = 22;
/// The largest node id a pid can encode (pids stay positive as `i32`).
pub const MAX_NODE_ID: NodeId = (1 << (31 - SEQ_BITS)) - 1;
const SEQ_MASK: u32 = (1 << SEQ_BITS) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidError {
    #[error("node id {0} is out of range (1..={MAX_NODE_ID})")]
    BadNode(u32),
    #[error("node {0} has no free pids left")]
    Exhausted(NodeId),
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
            }),
        })
    }

    pub fn allocate(&self) -> Result<Pid, PidError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.held.len() as u32 >= SEQ_MASK {
            return Err(PidError::Exhausted(self.node));
        }
        loop {
            let seq = st.next;
            st.next = if st.next >= SEQ_MASK { 1 } else { st.next + 1 };
            if st.held.insert(seq) {
                return Ok((u32::from(self.node) << SEQ_BITS) | seq);
            }
        }
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
    fn held_pids_are_not_reused() {
        let a = PidAllocator::new(1).expect("node 1");
        let p1 = a.allocate().expect("pid");
        let p2 = a.allocate().expect("pid");
        assert_ne!(p1, p2);
        a.release(p1);
        let p3 = a.allocate().expect("pid");
        assert_ne!(p3, p2);
    }
}
