//! What nodes tell about processes and themselves, and the wire form of
//! each: a row of the process table (`ProcessInfo`), a row of the node list
//! (`NodeInfo`), and what a checkpoint and a migration report. Each struct's
//! `write_*` and `read_*` sit beside it.
//!
//! Plain values and their Cap'n Proto form only: no service, no state.

use crate::status::{NodeStatus, read_status, write_status};
use crate::wire::{failed, text};
use crate::{NodeId, Pid};
use std::time::Duration;

/// The state of a process, as listings show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// Frozen and on its way to another node.
    Migrating,
    /// Frozen while its checkpoint is taken.
    Checkpointing,
    /// Stopped by a signal (SIGSTOP, SIGTSTP…): frozen until SIGCONT.
    Stopped,
    /// Ended, and not yet waited for by its parent.
    Zombie,
    /// Launched, its module still being prepared (instrumented, compiled):
    /// it has a pid and a signal that terminates ends it, but no body yet.
    Loading,
    /// Moved, restored or resumed, its body waits for the code it needs to
    /// go on where it was: the rewind copies of the functions on its stack,
    /// which a node makes when first needed (a large module's largest
    /// functions take a minute to compile). It has not run since.
    Resuming,
}

impl ProcState {
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Running => "running",
            ProcState::Migrating => "migrating",
            ProcState::Checkpointing => "checkpointing",
            ProcState::Stopped => "stopped",
            ProcState::Zombie => "zombie",
            ProcState::Loading => "loading",
            ProcState::Resuming => "resuming",
        }
    }
}

/// One row of the process table.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    pub pid: Pid,
    /// The node where the deputy lives.
    pub home: NodeId,
    /// The node where the body runs now.
    pub node: NodeId,
    pub state: ProcState,
    pub command: String,
    /// When it started: ms since the Unix epoch.
    pub started_ms: u64,
    /// CPU time of the body so far.
    pub cpu_ns: u64,
    /// Bytes of the body's linear memory.
    pub memory: u64,
    /// Its process group.
    pub pgid: Pid,
    /// Its parent; 0 for a session's process, or once its parent has ended.
    pub ppid: Pid,
    /// Why it cannot be frozen (so not migrated or checkpointed), if it cannot.
    pub pinned: Option<String>,
    /// How many times it has moved.
    pub moves: u32,
    /// Pinned: the balancer never moves it (`ssirun --pin`, `ssictl pin`).
    pub user_pinned: bool,
}

pub(crate) fn write_process(mut b: ssi_schema::process_info::Builder<'_>, p: &ProcessInfo) {
    b.set_pid(p.pid);
    b.set_home(p.home);
    b.set_node(p.node);
    b.set_state(match p.state {
        ProcState::Running => ssi_schema::ProcState::Running,
        ProcState::Migrating => ssi_schema::ProcState::Migrating,
        ProcState::Checkpointing => ssi_schema::ProcState::Checkpointing,
        ProcState::Stopped => ssi_schema::ProcState::Stopped,
        ProcState::Zombie => ssi_schema::ProcState::Zombie,
        ProcState::Loading => ssi_schema::ProcState::Loading,
        ProcState::Resuming => ssi_schema::ProcState::Resuming,
    });
    b.set_command(&p.command);
    b.set_started_ms(p.started_ms);
    b.set_cpu_ns(p.cpu_ns);
    b.set_memory(p.memory);
    b.set_pgid(p.pgid);
    b.set_ppid(p.ppid);
    b.set_pinned(p.pinned.as_deref().unwrap_or(""));
    b.set_moves(p.moves);
    b.set_user_pinned(p.user_pinned);
}

pub(crate) fn read_process(
    r: ssi_schema::process_info::Reader<'_>,
) -> Result<ProcessInfo, capnp::Error> {
    Ok(ProcessInfo {
        pid: r.get_pid(),
        home: r.get_home(),
        node: r.get_node(),
        state: match r.get_state() {
            Ok(ssi_schema::ProcState::Running) => ProcState::Running,
            Ok(ssi_schema::ProcState::Migrating) => ProcState::Migrating,
            Ok(ssi_schema::ProcState::Checkpointing) => ProcState::Checkpointing,
            Ok(ssi_schema::ProcState::Stopped) => ProcState::Stopped,
            Ok(ssi_schema::ProcState::Zombie) => ProcState::Zombie,
            Ok(ssi_schema::ProcState::Loading) => ProcState::Loading,
            Ok(ssi_schema::ProcState::Resuming) => ProcState::Resuming,
            Err(_) => return Err(failed("unknown process state")),
        },
        command: text(r.get_command())?,
        started_ms: r.get_started_ms(),
        cpu_ns: r.get_cpu_ns(),
        memory: r.get_memory(),
        pgid: r.get_pgid(),
        ppid: r.get_ppid(),
        pinned: Some(text(r.get_pinned())?).filter(|t| !t.is_empty()),
        moves: r.get_moves(),
        user_pinned: r.get_user_pinned(),
    })
}

/// One row of `ssictl nodes`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub id: NodeId,
    pub address: String,
    pub up: bool,
    pub status: Option<NodeStatus>,
    /// Since the last answer (none for the node itself or one never heard from).
    pub last_seen: Option<Duration>,
}

pub(crate) fn write_node(mut b: ssi_schema::node_info::Builder<'_>, n: &NodeInfo) {
    b.set_id(n.id);
    b.set_address(&n.address);
    b.set_up(n.up);
    if let Some(s) = &n.status {
        write_status(b.reborrow().init_status(), s);
    }
    b.set_last_seen_ms(n.last_seen.map(|d| d.as_millis() as u64).unwrap_or(0));
}

pub(crate) fn read_node(n: ssi_schema::node_info::Reader<'_>) -> Result<NodeInfo, capnp::Error> {
    Ok(NodeInfo {
        id: n.get_id(),
        address: text(n.get_address())?,
        up: n.get_up(),
        status: if n.has_status() {
            Some(read_status(n.get_status()?)?)
        } else {
            None
        },
        last_seen: match n.get_last_seen_ms() {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
    })
}

/// One checkpoint, as `ssictl checkpoint` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    pub pid: Pid,
    /// Where the body ran.
    pub node: NodeId,
    pub image_bytes: u64,
    pub memory_bytes: u64,
    pub freeze_micros: u64,
    /// Request to the checkpoint taken, before it is written anywhere.
    pub total_micros: u64,
}

pub(crate) fn write_checkpoint_report(
    mut b: ssi_schema::checkpoint_report::Builder<'_>,
    r: &CheckpointReport,
) {
    b.set_pid(r.pid);
    b.set_node(r.node);
    b.set_image_bytes(r.image_bytes);
    b.set_memory_bytes(r.memory_bytes);
    b.set_freeze_micros(r.freeze_micros);
    b.set_total_micros(r.total_micros);
}

pub fn read_checkpoint_report(r: ssi_schema::checkpoint_report::Reader<'_>) -> CheckpointReport {
    CheckpointReport {
        pid: r.get_pid(),
        node: r.get_node(),
        image_bytes: r.get_image_bytes(),
        memory_bytes: r.get_memory_bytes(),
        freeze_micros: r.get_freeze_micros(),
        total_micros: r.get_total_micros(),
    }
}

/// One migration, as `ssictl migrate` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub from: NodeId,
    pub to: NodeId,
    pub image_bytes: u64,
    pub memory_bytes: u64,
    pub freeze_micros: u64,
    pub total_micros: u64,
}

pub(crate) fn write_migration(
    mut b: ssi_schema::migration_report::Builder<'_>,
    r: &MigrationReport,
) {
    b.set_from(r.from);
    b.set_to(r.to);
    b.set_image_bytes(r.image_bytes);
    b.set_memory_bytes(r.memory_bytes);
    b.set_freeze_micros(r.freeze_micros);
    b.set_total_micros(r.total_micros);
}

pub fn read_migration(r: ssi_schema::migration_report::Reader<'_>) -> MigrationReport {
    MigrationReport {
        from: r.get_from(),
        to: r.get_to(),
        image_bytes: r.get_image_bytes(),
        memory_bytes: r.get_memory_bytes(),
        freeze_micros: r.get_freeze_micros(),
        total_micros: r.get_total_micros(),
    }
}
