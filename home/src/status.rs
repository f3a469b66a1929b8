//! What a node reports about itself: cores, load and memory (from Linux's /proc).

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
