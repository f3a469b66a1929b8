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

/// The CPU clock of the calling thread, readable from other threads while it lives.
#[derive(Debug, Clone, Copy)]
pub struct ThreadCpuClock(libc::clockid_t);

impl ThreadCpuClock {
    pub fn current() -> Option<Self> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: pthread_self() is the calling thread; `id` is a valid out pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        (rc == 0).then_some(ThreadCpuClock(id))
    }

    /// CPU time used by the thread, in ns (0 once the thread has ended).
    pub fn read_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out pointer; an invalid clock id returns an error.
        let rc = unsafe { libc::clock_gettime(self.0, &mut ts) };
        if rc != 0 {
            return 0;
        }
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }
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

    #[test]
    fn thread_cpu_clock_advances() {
        let clock = ThreadCpuClock::current().expect("cpu clock");
        let before = clock.read_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(clock.read_ns() > before);
    }
}
