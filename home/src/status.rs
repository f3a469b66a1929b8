//! What a node reports about itself: cores, load and memory (from Linux's /proc).

use crate::wire::text;

/// A node's liveness and load, as exchanged in heartbeats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStatus {
    pub id: u16,
    pub address: String,
    pub cores: u32,
    /// One-minute load average.
    pub load1: f64,
    pub mem_total: u64,
    pub mem_available: u64,
    /// Bodies running on the node.
    pub bodies: u32,
    /// Processes whose home is the node.
    pub processes: u32,
    /// The other nodes it knows of: id and address.
    pub known: Vec<(u16, String)>,
    /// What it runs at once, in cores (`ssid --cpus`, else the cores it sees).
    pub capacity: f64,
    /// The CPU its bodies use now, in cores: its own load.
    pub demand: f64,
    /// It moves bodies by itself.
    pub balancing: bool,
    /// It is drained: no new bodies go there.
    pub draining: bool,
    /// The freshest statuses it holds of other nodes, each with how long
    /// ago it was heard (gossip).
    pub rumors: Vec<(NodeStatus, u32)>,
    /// Heartbeats it has sent, ever.
    pub heartbeats_sent: u64,
}

/// The machine's cores, one-minute load and memory; zero where unknown.
pub fn machine() -> (u32, f64, u64, u64) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
        .unwrap_or(0.0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (cores, load1, field("MemTotal:"), field("MemAvailable:"))
}

/// A status in its wire form (heartbeats and `Admin.nodes`).
pub(crate) fn write_status(mut b: ssi_schema::node_status::Builder<'_>, s: &NodeStatus) {
    write_plain(b.reborrow(), s, true);
    b.set_heartbeats_sent(s.heartbeats_sent);
    let mut rumors = b.init_rumors(s.rumors.len() as u32);
    for (i, (status, age)) in s.rumors.iter().enumerate() {
        let mut r = rumors.reborrow().get(i as u32);
        r.set_age_ms(*age);
        // A rumor carries no rumors of its own, nor the nodes it knows.
        write_plain(r.init_status(), status, false);
    }
}

/// A status's own fields, without its rumors (and with `known`, the nodes
/// it knows).
fn write_plain(mut b: ssi_schema::node_status::Builder<'_>, s: &NodeStatus, known: bool) {
    b.set_id(s.id);
    b.set_address(&s.address);
    b.set_cores(s.cores);
    b.set_load1(s.load1);
    b.set_mem_total(s.mem_total);
    b.set_mem_available(s.mem_available);
    b.set_bodies(s.bodies);
    b.set_processes(s.processes);
    b.set_capacity(s.capacity);
    b.set_demand(s.demand);
    b.set_balancing(s.balancing);
    b.set_draining(s.draining);
    if !known {
        return;
    }
    let mut known = b.init_known(s.known.len() as u32);
    for (i, (id, address)) in s.known.iter().enumerate() {
        let mut m = known.reborrow().get(i as u32);
        m.set_id(*id);
        m.set_address(address);
    }
}

/// A status read from its wire form.
pub(crate) fn read_status(
    r: ssi_schema::node_status::Reader<'_>,
) -> Result<NodeStatus, capnp::Error> {
    let mut s = read_plain(r)?;
    s.rumors = r
        .get_rumors()?
        .iter()
        .map(|m| Ok((read_plain(m.get_status()?)?, m.get_age_ms())))
        .collect::<Result<_, capnp::Error>>()?;
    Ok(s)
}

/// A status's own fields, without its rumors.
fn read_plain(r: ssi_schema::node_status::Reader<'_>) -> Result<NodeStatus, capnp::Error> {
    Ok(NodeStatus {
        id: r.get_id(),
        address: text(r.get_address())?,
        cores: r.get_cores(),
        load1: r.get_load1(),
        mem_total: r.get_mem_total(),
        mem_available: r.get_mem_available(),
        bodies: r.get_bodies(),
        processes: r.get_processes(),
        known: r
            .get_known()?
            .iter()
            .map(|m| Ok((m.get_id(), text(m.get_address())?)))
            .collect::<Result<_, capnp::Error>>()?,
        capacity: r.get_capacity(),
        demand: r.get_demand(),
        balancing: r.get_balancing(),
        draining: r.get_draining(),
        heartbeats_sent: r.get_heartbeats_sent(),
        rumors: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_its_rumors_without_theirs() {
        let other = NodeStatus {
            id: 3,
            address: "10.0.0.3:7000".into(),
            demand: 1.5,
            known: vec![(4, "x".into())],
            ..NodeStatus::default()
        };
        let mut with_rumor = other.clone();
        with_rumor.rumors = vec![(other.clone(), 0)];
        let s = NodeStatus {
            id: 1,
            known: vec![(3, "10.0.0.3:7000".into())],
            rumors: vec![(with_rumor, 250)],
            heartbeats_sent: 42,
            ..NodeStatus::default()
        };
        let mut m = capnp::message::Builder::new_default();
        write_status(m.init_root(), &s);
        let r = m
            .get_root_as_reader::<ssi_schema::node_status::Reader<'_>>()
            .expect("a root");
        let back = read_status(r).expect("a status");
        let plain = NodeStatus {
            known: Vec::new(),
            ..other
        };
        assert_eq!(back.rumors, vec![(plain, 250)]);
        assert_eq!(back.heartbeats_sent, 42);
        assert_eq!(back.known, s.known);
    }

    #[test]
    fn machine_reports_cores_and_memory() {
        let (cores, _load, total, avail) = machine();
        assert!(cores >= 1);
        assert!(total > 0 && avail <= total);
    }
}
