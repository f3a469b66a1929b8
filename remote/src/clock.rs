//! A body's clocks: its monotonic clock, which carries an offset so that it
//! never goes backwards when the body moves (`BodyClock`), and the CPU time of
//! the thread that runs it, read from that thread (`ThreadCpuClock`) or from
//! any other (`CpuMeter`).
//!
//! Must not know: the instance, the deputy.

use std::time::Instant;

/// The monotonic clock of a body: it starts at an offset carried by the body, so
/// that it never goes backwards when the body moves.
#[derive(Debug, Clone, Copy)]
pub struct BodyClock {
    pub(crate) base: Instant,
    pub(crate) offset_ns: u64,
}

impl BodyClock {
    pub fn starting_at(offset_ns: u64) -> Self {
        BodyClock {
            base: Instant::now(),
            offset_ns,
        }
    }

    pub fn monotonic_ns(&self) -> u64 {
        let elapsed = self.base.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.offset_ns.saturating_add(elapsed)
    }
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

/// The CPU time a body has used, readable from any thread: what it had used
/// before it came to this instance (its image says), and what the thread
/// that made this instance has used since.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pub(crate) clock: Option<ThreadCpuClock>,
    pub(crate) start_ns: u64,
    pub(crate) before_ns: u64,
}

impl CpuMeter {
    pub(crate) fn here() -> Self {
        let clock = ThreadCpuClock::current();
        CpuMeter {
            clock,
            start_ns: clock.map(|c| c.read_ns()).unwrap_or(0),
            before_ns: 0,
        }
    }

    pub fn read_ns(&self) -> u64 {
        let here = self
            .clock
            .map(|c| c.read_ns().saturating_sub(self.start_ns))
            .unwrap_or(0);
        self.before_ns.saturating_add(here)
    }
}
