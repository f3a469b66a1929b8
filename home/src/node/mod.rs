//! A cluster node: the state its threads share, its membership, the bodies it
//! hosts, the processes whose home it is, and the Cap'n Proto services it
//! offers (see `schema/ssi.capnp`). One room per service or role:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `common.rs` | small helpers: a lock through poisoning, the wall clock |
//! | `state.rs` | `NodeCore`, the shared state, and the node's `Config` |
//! | `table.rs` | an entry of the home's process table; `Notice` for `waitpid` |
//! | `orders.rs` | what a process's task is asked to do (`Order`), `Checkpoint` |
//! | `slot.rs` | a hosted body's control: kill, freeze, orders while frozen |
//! | `host.rs` | a hosted body's thread: make, run, hold when frozen |
//! | `stream.rs` | the image connection, sending side |
//! | `transfer.rs` | the image connection, receiving side; reaching peers, sending modules |
//! | `code.rs` | compiled code taken from the peers that hold it (for a module sent here or launched here), or compiled here |
//! | `placement.rs` | where a process's body runs and a frozen body held |
//! | `membership.rs` | heartbeats, the view of the peers, silent peers marked down |
//! | `events.rs` | the event stream: a node's own (`Peer.events`), every node's (`Admin.events`) |
//! | `balancer.rs` | the balancer's mechanism: each body's CPU, the node's load, the policy's moves, placement |
//! | `daemon.rs` | the `ssid` daemon: listeners, threads, which protocol a connection speaks |
//! | `launch.rs` | starting a process at its home, from a module or a checkpoint |
//! | `task.rs` | `ProcessTask`: the home's side of a process, signals and orders |
//! | `migrate.rs` | moving a process (the task's side and the client call) |
//! | `drain.rs` | draining a node: its bodies moved off, no new ones |
//! | `checkpoint.rs` | checkpointing a process (the task's side, the cluster's, the client calls) |
//! | `signals.rs` | who gets a signal: here, a group, or another home |
//! | `family.rs` | parents and children: `waitpid`, zombies, reparenting, groups |
//! | `spawn.rs` | `ssi spawn`: a child at its parent's home |
//! | `api.rs` | the process table as deputies see it (`ssi` host API) |
//! | `gateway.rs` | service `Gateway`, the bootstrap capability |
//! | `session.rs` | service `Process`, a session's own process |
//! | `peer.rs` | service `Peer`, node to node |
//! | `body_control.rs` | service `BodyControl`, a home's hold on a body it placed here |
//! | `image_sink.rs` | service `ImageSink`, images received in chunks |
//! | `admin.rs` | service `Admin`, the administrator's view and actions |
//! | `deputy_link.rs` | a remote body's deputy link, served in lockstep |
//!
//! Threads: one accepts connections and gives each its own thread (a
//! single-threaded runtime; the capabilities served there live there); one runs
//! the heartbeats; each body runs on a thread of its own. They share one
//! [`NodeCore`]. Rooms import only rooms listed above them in the table, or
//! add methods to `NodeCore` in `impl` blocks of their own.

mod admin;
mod api;
mod balancer;
mod body_control;
mod checkpoint;
mod code;
mod common;
mod daemon;
mod deputy_link;
mod drain;
mod events;
mod family;
mod gateway;
mod host;
mod image_sink;
mod launch;
mod membership;
mod migrate;
mod orders;
mod peer;
mod placement;
mod session;
mod signals;
mod slot;
mod spawn;
mod state;
mod stream;
mod table;
mod task;
mod transfer;

pub use admin::{admin_nodes, admin_processes};
pub use checkpoint::{admin_checkpoint, process_checkpoint, restore_request};
pub use daemon::Daemon;
pub use drain::{DrainOutcome, admin_drain};
pub use events::admin_events;
pub use membership::{DOWN_AFTER, HEARTBEAT_EVERY};

pub use migrate::{admin_migrate, admin_pin};
pub use orders::Checkpoint;
pub use signals::SignalError;
pub use state::{Config, NodeCore, StartError};
