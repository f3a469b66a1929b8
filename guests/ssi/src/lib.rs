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
//! | `spawn` | `(module, module_len, argv, argc, envp, envc, fds, nfds, node: i32) -> i32` | the child's pid; see below |
//! | `waitpid` | `(target: i32, status: *mut u32, options: i32) -> i32` | the pid of a child that changed state (0 with `WNOHANG` if none has); its status word at `status` (unless null) |
//! | `setpgid` | `(pid: i32, pgid: i32) -> i32` | 0; `pid` 0 is the caller, `pgid` 0 is `pid` |
//! | `setsid` | `() -> i32` | the new session's id (the caller's pid) |
//!
//! `spawn` starts a child process. Its home is the caller's home (so its
//! parent, group and session are kept there), its body starts on node `node`
//! (0: the home). `module` is a path under one of the caller's preopened
//! directories, as the guest names it, or empty for the caller's own module;
//! `argv` and `envp` are arrays of `(pointer, length)` pairs (`argv[0]` first,
//! `NAME=value` each); `fds` is an array of `(child fd, caller fd)` pairs, the
//! descriptors the child gets (the same open files, sharing their offsets),
//! or empty for all of the caller's, at the same numbers. Errors: `ENOENT`
//! (no such module), `ENOEXEC` (not a module ssi can run), `EHOSTUNREACH`
//! (the node is down or unknown), `EBADF` (a caller fd is not open).
//!
//! | `sigaction` | `(signal: i32, action: i32, handler: *const u8, len: usize) -> i32` | the previous action; `action` 0 default, 1 ignore, 2 run the export named `handler` (`(i32) -> ()`) |
//! | `sigprocmask` | `(how: i32, set: i32) -> i32` | the previous mask; `how` 0 block, 1 unblock, 2 set; bit n - 1 is signal n |
//!
//! A handler runs in the body, wherever it is, at its next poll point (a loop
//! header or a function entry, so even in a loop without calls) or when a
//! call it waits in (a read, a sleep, `waitpid`) is cut short for it; the
//! call then goes on. Signals blocked by `sigprocmask` wait, and those it
//! unblocks are delivered before it returns. SIGKILL and SIGSTOP cannot be
//! handled, ignored or blocked. A child starts with its parent's mask and
//! ignored signals, and default actions for the rest.
//!
//! `waitpid`'s `target` is a child's pid, -1 for any child, 0 for any child
//! in the caller's group, `-pgid` for any child in that group; `options` are
//! `WNOHANG`, `WUNTRACED` and `WCONTINUED`; the status word is POSIX's (see
//! [`Status`]). A child that ends before its parent waits for it stays a
//! zombie until then; a parent's children outlive it, and are then reaped
//! by their home.
//!
//! The same functions for C are in `ssi.h`, next to this crate.

/// A WASI errno, as the `ssi` imports return it (negated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub u16);

impl Errno {
    pub const BADF: Errno = Errno(8);
    pub const CHILD: Errno = Errno(12);
    pub const HOSTUNREACH: Errno = Errno(23);
    pub const INVAL: Errno = Errno(28);
    pub const NOENT: Errno = Errno(44);
    pub const NOEXEC: Errno = Errno(45);
    pub const NOSYS: Errno = Errno(52);
    pub const NOTSUP: Errno = Errno(58);
    pub const PERM: Errno = Errno(63);
    pub const SRCH: Errno = Errno(71);

    pub fn name(self) -> &'static str {
        match self {
            Errno::BADF => "BADF",
            Errno::CHILD => "CHILD",
            Errno::HOSTUNREACH => "HOSTUNREACH",
            Errno::INVAL => "INVAL",
            Errno::NOENT => "NOENT",
            Errno::NOEXEC => "NOEXEC",
            Errno::NOSYS => "NOSYS",
            Errno::NOTSUP => "NOTSUP",
            Errno::PERM => "PERM",
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
    pub const CONT: i32 = 18;
    pub const STOP: i32 = 19;
    pub const TSTP: i32 = 20;
}

/// A string as the imports take it: `(pointer, length)`.
#[repr(C)]
pub struct Slice {
    ptr: *const u8,
    len: usize,
}

/// A descriptor of a child, and the caller's it is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPair {
    child: u32,
    own: u32,
}

#[cfg(target_arch = "wasm32")]
mod raw {
    use super::{FdPair, Slice};
    #[link(wasm_import_module = "ssi")]
    unsafe extern "C" {
        pub fn getpid() -> i32;
        pub fn getppid() -> i32;
        pub fn getpgid(pid: i32) -> i32;
        pub fn getsid(pid: i32) -> i32;
        pub fn kill(target: i32, signal: i32) -> i32;
        #[allow(clippy::too_many_arguments)]
        pub fn spawn(
            module: *const u8,
            module_len: usize,
            argv: *const Slice,
            argc: usize,
            envp: *const Slice,
            envc: usize,
            fds: *const FdPair,
            nfds: usize,
            node: i32,
        ) -> i32;
        pub fn waitpid(target: i32, status: *mut u32, options: i32) -> i32;
        pub fn setpgid(pid: i32, pgid: i32) -> i32;
        pub fn setsid() -> i32;
        pub fn sigaction(signal: i32, action: i32, handler: *const u8, len: usize) -> i32;
        pub fn sigprocmask(how: i32, set: i32) -> i32;
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod raw {
    //! Off WebAssembly there is no ssi host: every call says so.
    use super::{FdPair, Slice};
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
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn spawn(
        _: *const u8,
        _: usize,
        _: *const Slice,
        _: usize,
        _: *const Slice,
        _: usize,
        _: *const FdPair,
        _: usize,
        _: i32,
    ) -> i32 {
        NOTSUP
    }
    pub unsafe fn waitpid(_: i32, _: *mut u32, _: i32) -> i32 {
        NOTSUP
    }
    pub unsafe fn setpgid(_: i32, _: i32) -> i32 {
        NOTSUP
    }
    pub unsafe fn setsid() -> i32 {
        NOTSUP
    }
    pub unsafe fn sigaction(_: i32, _: i32, _: *const u8, _: usize) -> i32 {
        NOTSUP
    }
    pub unsafe fn sigprocmask(_: i32, _: i32) -> i32 {
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

/// How to start a child with [`spawn`].
#[derive(Debug, Clone, Default)]
pub struct Command {
    module: String,
    args: Vec<String>,
    env: Vec<String>,
    fds: Vec<FdPair>,
    node: u16,
}

impl Command {
    /// The module at `path` (under one of the caller's preopened directories).
    pub fn new(path: &str) -> Self {
        Command {
            module: path.to_string(),
            ..Command::default()
        }
    }

    /// The caller's own module: the child runs the same program.
    pub fn this_program() -> Self {
        Command::default()
    }

    /// Arguments, `argv[0]` first.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// One `NAME=value` entry of the child's environment (it inherits none).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push(format!("{name}={value}"));
        self
    }

    /// The child's descriptor `child` is the caller's `own`. Without any,
    /// the child gets all of the caller's descriptors.
    pub fn fd(mut self, child: u32, own: u32) -> Self {
        self.fds.push(FdPair { child, own });
        self
    }

    /// Starts the child's body on node `node` (0: its home).
    pub fn node(mut self, node: u16) -> Self {
        self.node = node;
        self
    }
}

/// Starts a child process; its pid.
pub fn spawn(cmd: &Command) -> Result<Pid, Errno> {
    let pairs = |list: &[String]| -> Vec<Slice> {
        list.iter()
            .map(|s| Slice {
                ptr: s.as_ptr(),
                len: s.len(),
            })
            .collect()
    };
    let argv = pairs(&cmd.args);
    let envp = pairs(&cmd.env);
    // SAFETY: every pointer is to a live buffer of the given length, for the
    // duration of the call.
    check(unsafe {
        raw::spawn(
            cmd.module.as_ptr(),
            cmd.module.len(),
            argv.as_ptr(),
            argv.len(),
            envp.as_ptr(),
            envp.len(),
            cmd.fds.as_ptr(),
            cmd.fds.len(),
            i32::from(cmd.node),
        )
    })
}

/// `waitpid` options.
pub mod wait {
    /// Return at once if no child has changed state.
    pub const WNOHANG: i32 = 1;
    /// Report stopped children too.
    pub const WUNTRACED: i32 = 2;
    /// Report continued children too.
    pub const WCONTINUED: i32 = 8;
}

/// A child's change of state, decoded from POSIX's status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    Stopped(i32),
    Continued,
}

impl Status {
    pub fn from_word(w: u32) -> Status {
        if w == 0xffff {
            Status::Continued
        } else if w & 0xff == 0x7f {
            Status::Stopped(((w >> 8) & 0xff) as i32)
        } else if w & 0x7f == 0 {
            Status::Exited(((w >> 8) & 0xff) as i32)
        } else {
            Status::Signaled((w & 0x7f) as i32)
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Exited(c) => write!(f, "exited {c}"),
            Status::Signaled(s) => write!(f, "killed by signal {s}"),
            Status::Stopped(s) => write!(f, "stopped by signal {s}"),
            Status::Continued => write!(f, "continued"),
        }
    }
}

/// Which children [`waitpid`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    Pid(Pid),
    Any,
    OwnGroup,
    Group(Pid),
}

/// Waits for a child to change state: its pid and what happened, or `None`
/// with `WNOHANG` when no child has.
pub fn waitpid(which: Children, options: i32) -> Result<Option<(Pid, Status)>, Errno> {
    let target = match which {
        Children::Pid(p) => i32::try_from(p).map_err(|_| Errno::INVAL)?,
        Children::Any => -1,
        Children::OwnGroup => 0,
        Children::Group(g) => -i32::try_from(g).map_err(|_| Errno::INVAL)?,
    };
    let mut word = 0u32;
    // SAFETY: `word` is a valid place for the status word.
    let pid = check(unsafe { raw::waitpid(target, &mut word, options) })?;
    Ok((pid != 0).then(|| (pid, Status::from_word(word))))
}

/// Puts process `pid` (0: the caller) into group `pgid` (0: a new group
/// named by `pid`).
pub fn setpgid(pid: Pid, pgid: Pid) -> Result<(), Errno> {
    let pid = i32::try_from(pid).map_err(|_| Errno::INVAL)?;
    let pgid = i32::try_from(pgid).map_err(|_| Errno::INVAL)?;
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::setpgid(pid, pgid) }).map(|_| ())
}

/// The caller leads a new session (and group); its id.
pub fn setsid() -> Result<Pid, Errno> {
    // SAFETY: the import takes no pointers.
    check(unsafe { raw::setsid() })
}

/// Ends the calling process with `status` (WASI's `proc_exit`).
pub fn exit(status: i32) -> ! {
    std::process::exit(status)
}

/// Signal handlers and the blocked mask.
pub mod signals {
    use super::{Errno, check, raw};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The handlers [`handle`] registered, by signal number.
    static HANDLERS: [AtomicUsize; 32] = [const { AtomicUsize::new(0) }; 32];

    /// The export the host calls for a handled signal: it runs the function
    /// registered for it.
    #[unsafe(no_mangle)]
    pub extern "C" fn ssi_on_signal(signal: i32) {
        let Some(slot) = usize::try_from(signal).ok().and_then(|n| HANDLERS.get(n)) else {
            return;
        };
        let f = slot.load(Ordering::SeqCst);
        if f != 0 {
            // SAFETY: only `handle` stores here, and only `fn(i32)` pointers.
            let f: fn(i32) = unsafe { std::mem::transmute::<usize, fn(i32)>(f) };
            f(signal);
        }
    }

    const EXPORT: &str = "ssi_on_signal";

    fn action(signal: i32, action: i32, handler: &str) -> Result<i32, Errno> {
        // SAFETY: the name is a live buffer of the given length.
        check(unsafe { raw::sigaction(signal, action, handler.as_ptr(), handler.len()) })
            .map(|a| a as i32)
    }

    /// Runs `f` for `signal` from now on; the previous action (0 default,
    /// 1 ignore, 2 a handler).
    pub fn handle(signal: i32, f: fn(i32)) -> Result<i32, Errno> {
        let slot = usize::try_from(signal)
            .ok()
            .and_then(|n| HANDLERS.get(n))
            .ok_or(Errno::INVAL)?;
        slot.store(f as usize, Ordering::SeqCst);
        action(signal, 2, EXPORT)
    }

    /// Ignores `signal`.
    pub fn ignore(signal: i32) -> Result<i32, Errno> {
        action(signal, 1, "")
    }

    /// Gives `signal` its default action again.
    pub fn default(signal: i32) -> Result<i32, Errno> {
        action(signal, 0, "")
    }

    fn mask(how: i32, signals: &[i32]) -> Result<u32, Errno> {
        let mut set = 0u32;
        for s in signals {
            if !(1..=31).contains(s) {
                return Err(Errno::INVAL);
            }
            set |= 1 << (s - 1);
        }
        // SAFETY: the import takes no pointers.
        check(unsafe { raw::sigprocmask(how, set as i32) })
    }

    /// Blocks `signals`; the previous mask.
    pub fn block(signals: &[i32]) -> Result<u32, Errno> {
        mask(0, signals)
    }

    /// Unblocks `signals` (those pending are delivered before it returns);
    /// the previous mask.
    pub fn unblock(signals: &[i32]) -> Result<u32, Errno> {
        mask(1, signals)
    }

    /// Blocks exactly `signals`; the previous mask.
    pub fn set_mask(signals: &[i32]) -> Result<u32, Errno> {
        mask(2, signals)
    }
}
