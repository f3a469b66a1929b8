//! Cluster events: what happened to a process or a node, as a node records it
//! ([`EventLog`]: the latest events kept, and every new one told to whoever
//! follows), and its wire form (`ClusterEvent` in `schema/ssi.capnp`).
//!
//! Must not know: who pushes events where (`node/events.rs`).

use crate::wire::text;
use crate::{NodeId, Pid};
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many events a node keeps for those who ask later.
pub const KEPT: usize = 4096;

/// Who decided a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveCause {
    /// `ssictl migrate`, `ssictl pin NODE`, the dashboard.
    Admin,
    Balancer,
    /// `ssictl drain`.
    Drain,
}

impl MoveCause {
    pub fn name(self) -> &'static str {
        match self {
            MoveCause::Admin => "admin",
            MoveCause::Balancer => "balancer",
            MoveCause::Drain => "drain",
        }
    }

    pub(crate) fn to_wire(self) -> ssi_schema::MoveCause {
        match self {
            MoveCause::Admin => ssi_schema::MoveCause::Admin,
            MoveCause::Balancer => ssi_schema::MoveCause::Balancer,
            MoveCause::Drain => ssi_schema::MoveCause::Drain,
        }
    }

    pub(crate) fn from_wire(c: ssi_schema::MoveCause) -> Self {
        match c {
            ssi_schema::MoveCause::Admin => MoveCause::Admin,
            ssi_schema::MoveCause::Balancer => MoveCause::Balancer,
            ssi_schema::MoveCause::Drain => MoveCause::Drain,
        }
    }
}

/// Something that happened to a process or a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Wall clock, ms since the Unix epoch.
    pub time_ms: u64,
    /// started, exited, killed, trapped, lost, failed, moved, refused,
    /// checkpointed, stopped, continued, pinned, unpinned, up, down, joined,
    /// drained, undrained, fetched (a module's compiled code, from a peer).
    pub kind: String,
    /// The process, if it is a process's event.
    pub pid: Option<Pid>,
    /// Where it happened (a move: where the body went).
    pub node: NodeId,
    /// What happened, for people.
    pub message: String,
    /// A move: where from.
    pub from: Option<NodeId>,
    /// A move: who decided it.
    pub by: Option<String>,
    /// A move or a checkpoint: how long the body was frozen, in µs.
    pub frozen_micros: Option<u64>,
    /// exited: its status; killed: its signal.
    pub status: Option<i32>,
    /// The node that recorded it, and its place in that node's sequence.
    pub recorder: NodeId,
    pub seq: u64,
}

impl Event {
    /// An event of `kind` at `node`, now.
    pub fn new(kind: &str, node: NodeId, message: String) -> Event {
        Event {
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            kind: kind.to_string(),
            node,
            message,
            ..Event::default()
        }
    }

    pub fn of(mut self, pid: Pid) -> Event {
        self.pid = Some(pid);
        self
    }

    /// An event about another node, as this one saw it: not passed on to
    /// those who gather every node's events (each node says it of itself).
    pub fn observed(&self) -> bool {
        matches!(self.kind.as_str(), "up" | "down" | "joined") && self.node != self.recorder
    }
}

/// A node's events: the latest [`KEPT`], and a channel to those who follow.
pub struct EventLog {
    node: NodeId,
    kept: Mutex<(u64, VecDeque<Event>)>,
    follow: tokio::sync::broadcast::Sender<Event>,
}

impl EventLog {
    pub fn new(node: NodeId) -> EventLog {
        EventLog {
            node,
            kept: Mutex::new((0, VecDeque::with_capacity(KEPT))),
            follow: tokio::sync::broadcast::channel(KEPT).0,
        }
    }

    /// Records an event: kept, and told to those who follow.
    pub fn record(&self, mut event: Event) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.0 += 1;
        event.recorder = self.node;
        event.seq = kept.0;
        tracing::debug!(kind = %event.kind, pid = ?event.pid, "{}", event.message);
        if kept.1.len() == KEPT {
            kept.1.pop_front();
        }
        kept.1.push_back(event.clone());
        // Told while the lock is held: a follower that took the latest
        // events and then subscribed misses nothing and sees nothing twice.
        let _ = self.follow.send(event);
    }

    /// The latest `n` events, oldest first, and a receiver of every later one.
    pub fn latest(&self, n: usize) -> (Vec<Event>, tokio::sync::broadcast::Receiver<Event>) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let skip = kept.1.len().saturating_sub(n);
        let events = kept.1.iter().skip(skip).cloned().collect();
        (events, self.follow.subscribe())
    }
}

/// An event in its wire form.
pub(crate) fn write_event(mut b: ssi_schema::cluster_event::Builder<'_>, e: &Event) {
    b.set_time_ms(e.time_ms);
    b.set_kind(&e.kind);
    b.set_pid(e.pid.unwrap_or(0));
    b.set_node(e.node);
    b.set_message(&e.message);
    b.set_from(e.from.unwrap_or(0));
    b.set_by(e.by.as_deref().unwrap_or(""));
    b.set_frozen_micros(e.frozen_micros.unwrap_or(u64::MAX));
    b.set_status(e.status.unwrap_or(i32::MIN));
    b.set_recorder(e.recorder);
    b.set_seq(e.seq);
}

/// An event read from its wire form.
pub(crate) fn read_event(r: ssi_schema::cluster_event::Reader<'_>) -> Result<Event, capnp::Error> {
    let by = text(r.get_by())?;
    Ok(Event {
        time_ms: r.get_time_ms(),
        kind: text(r.get_kind())?,
        pid: Some(r.get_pid()).filter(|p| *p != 0),
        node: r.get_node(),
        message: text(r.get_message())?,
        from: Some(r.get_from()).filter(|n| *n != 0),
        by: Some(by).filter(|b| !b.is_empty()),
        frozen_micros: Some(r.get_frozen_micros()).filter(|m| *m != u64::MAX),
        status: Some(r.get_status()).filter(|s| *s != i32::MIN),
        recorder: r.get_recorder(),
        seq: r.get_seq(),
    })
}

/// Writes a batch of events into a push request's list.
pub(crate) fn write_events(
    mut list: capnp::struct_list::Builder<'_, ssi_schema::cluster_event::Owned>,
    events: &[Event],
) {
    for (i, e) in events.iter().enumerate() {
        write_event(list.reborrow().get(i as u32), e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_latest_and_tells_followers_the_rest() {
        let log = EventLog::new(3);
        for i in 0..(KEPT + 10) {
            log.record(Event::new("started", 3, format!("{i}")).of(i as Pid + 1));
        }
        let (latest, mut rx) = log.latest(5);
        assert_eq!(latest.len(), 5);
        assert_eq!(latest[4].message, format!("{}", KEPT + 9));
        assert_eq!(latest[4].seq, KEPT as u64 + 10);
        assert!(latest.iter().all(|e| e.recorder == 3));
        let (all, _) = log.latest(usize::MAX);
        assert_eq!(all.len(), KEPT);
        log.record(Event::new("up", 3, "next".into()));
        assert_eq!(
            rx.try_recv().map(|e| e.message).ok().as_deref(),
            Some("next")
        );
    }

    #[test]
    fn events_round_trip_their_wire_form() {
        let mut e = Event::new("moved", 2, "moved".into()).of(0x10005);
        e.from = Some(1);
        e.by = Some("balancer".into());
        e.frozen_micros = Some(0);
        e.status = Some(-3);
        e.recorder = 1;
        e.seq = 7;
        let mut m = capnp::message::Builder::new_default();
        write_event(m.init_root(), &e);
        let r = m
            .get_root_as_reader::<ssi_schema::cluster_event::Reader<'_>>()
            .expect("a root");
        assert_eq!(read_event(r).expect("an event"), e);
        let bare = Event::new("up", 4, "node 4 is up".into());
        let mut m = capnp::message::Builder::new_default();
        write_event(m.init_root(), &bare);
        let r = m
            .get_root_as_reader::<ssi_schema::cluster_event::Reader<'_>>()
            .expect("a root");
        assert_eq!(read_event(r).expect("an event"), bare);
    }

    #[test]
    fn what_a_node_saw_of_another_stays_with_it() {
        let mut e = Event::new("down", 3, "node 3 is down".into());
        e.recorder = 1;
        assert!(e.observed());
        e.recorder = 3;
        assert!(!e.observed());
        let mut m = Event::new("moved", 3, String::new());
        m.recorder = 1;
        assert!(!m.observed());
    }
}
