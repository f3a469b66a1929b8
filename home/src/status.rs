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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_reports_cores_and_memory() {
        let (cores, _load, total, avail) = machine();
        assert!(cores >= 1);
        assert!(total > 0 && avail <= total);
    }
}
