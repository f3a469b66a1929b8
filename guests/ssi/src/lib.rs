//! The `ssi` host API for WASI programs running on ssi: process identity and
//! signals, cluster-wide. A program that does not use it stays a plain WASI
//! program; one that does runs on ssi only.
//!
//! The imports (module `ssi`) return a value, or a negated WASI errno:
//!
//! | import | signature | result |
//! | --- | --- | --- |
//! | `getpid` | `() -> i32` | the caller's pid (its home node is in the high bits) |
//! | `getppid` | `() -> i32` | its parent's pid; 0 when launched by a session |
//! | `getpgid` | `(pid: i32) -> i32` | the process group of `pid` (0: the caller) |
//! | `getsid` | `(pid: i32) -> i32` | the session of `pid` (0: the caller) |
//! | `kill` | `(target: i32, signal: i32) -> i32` | 0; `target` is a pid, `-pgid` for a group, 0 for the caller's group; signal 0 only checks the target exists |
//!
//! The same functions for C are in `ssi.h`, next to this crate.

/// A WASI errno, as the `ssi` imports return it (negated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u16);

impl Errno {
    pub const INVAL: Errno = Errno(28);
    pub const NOTSUP: Errno = Errno(58);
    pub const SRCH: Errno = Errno(71);

    pub fn name(self) -> &'static str {
        match self {
            Errno::INVAL => "INVAL",
            Errno::NOTSUP => "NOTSUP",
            Errno::SRCH => "SRCH",
            _ => "errno",
        }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl std::error::Error for Errno {}

/// A cluster-wide process id.
pub type Pid = u32;

/// Signal numbers, as a shell reports them in `128 + n`.
pub mod signal {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const KILL: i32 = 9;
    pub const USR1: i32 = 10;
    pub const USR2: i32 = 12;
    pub const TERM: i32 = 15;
    pub const CHLD: i32 = 17;
}

#[cfg(target_arch = "wasm32")]
mod raw {
    #[link(wasm_import_module = "ssi")]
    unsafe extern "C" {
        pub fn getpid() -> i32;
        pub fn getppid() -> i32;
        pub fn getpgid(pid: i32) -> i32;
        pub fn getsid(pid: i32) -> i32;
        pub fn kill(target: i32, signal: i32) -> i32;
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod raw {
    //! Off WebAssembly there is no ssi host: every call says so.
    const NOTSUP: i32 = -58;
    pub unsafe fn getpid() -> i32 {
        NOTSUP
    }
    pub unsafe fn getppid() -> i32 {
        NOTSUP
    }
    pub unsafe fn getpgid(_: i32) -> i32 {
        NOTSUP
    }
    pub unsafe fn getsid(_: i32) -> i32 {
        NOTSUP
    }
    pub unsafe fn kill(_: i32, _: i32) -> i32 {
        NOTSUP
    }
}

fn check(r: i32) -> Result<u32, Errno> {
    if r < 0 {
        Err(Errno(r.unsigned_abs() as u16))
    } else {
        Ok(r as u32)
    }
}

/// The caller's pid.
pub fn getpid() -> Result<Pid, Errno> {
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::getpid() })
}

/// The parent's pid; 0 when the process was launched by a session.
pub fn getppid() -> Result<Pid, Errno> {
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::getppid() })
}

/// The process group of `pid` (0: the caller).
pub fn getpgid(pid: Pid) -> Result<Pid, Errno> {
    let pid = i32::try_from(pid).map_err(|_| Errno::INVAL)?;
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::getpgid(pid) })
}

/// The session of `pid` (0: the caller).
pub fn getsid(pid: Pid) -> Result<Pid, Errno> {
    let pid = i32::try_from(pid).map_err(|_| Errno::INVAL)?;
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::getsid(pid) })
}

/// Where a signal goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Process(Pid),
    Group(Pid),
    /// The caller's own process group.
    OwnGroup,
}

/// Sends `signal` (0: only check that the target exists).
pub fn kill(target: Target, signal: i32) -> Result<(), Errno> {
    let t = match target {
        Target::Process(pid) => i32::try_from(pid).map_err(|_| Errno::INVAL)?,
        Target::Group(pgid) => -i32::try_from(pgid).map_err(|_| Errno::INVAL)?,
        Target::OwnGroup => 0,
    };
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::kill(t, signal) }).map(|_| ())
}
