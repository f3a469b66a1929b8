//! `Control`, a body's handle for other threads: freeze it, kill it, or tell it
//! that signals are pending for its handlers. It raises the flag the
//! instrumented code's poll points read (in the module's flag memory, shared
//! with the host), and wakes a body sleeping in a clock-only poll.
//!
//! Owns the flag's protocol (`NOTHING`, `FREEZE`, `KILL`, and the bits a
//! handler lowers); must not know the instance beyond that memory.

use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, SharedMemory};

pub(crate) const NOTHING: u8 = 0;

pub(crate) const FREEZE: u8 = 1;

pub(crate) const KILL: u8 = 2;

/// The flag's values (see [`crate::instrument`]).
pub(crate) const FLAG_UNWIND: u32 = 1;

pub(crate) const FLAG_END: u32 = 2;

/// What a body's host asks of it from other threads: to freeze or to end.
///
/// An instrumented body honours either at its next poll point (a loop header
/// or a function entry), or at once if it waits in a system call: the request
/// raises the flag its poll points read (to 1: unwind; to 2: end, where the
/// poll point traps), and wakes a sleep of the body's own.
/// A call waiting at the deputy is the deputy's to cancel (it answers
/// `EINTR`, and the body, seeing the request, freezes or ends instead).
/// A body that cannot be instrumented cannot be frozen; it is stopped at its
/// next epoch check on an interruptible runtime, else at its next system call.
#[derive(Clone)]
pub struct Control(Arc<ControlInner>);

pub(crate) struct ControlInner {
    pub(crate) request: AtomicU8,
    /// Signals are pending for the body's handlers.
    pub(crate) signalled: std::sync::atomic::AtomicBool,
    /// A signal handler runs: requests wait for it to return (but a kill).
    pub(crate) in_handler: std::sync::atomic::AtomicBool,
    /// The body is to move into its program's next tier (see
    /// `Completion::tier_up`): it unwinds at its next poll point and
    /// rewinds there, unseen.
    pub(crate) moving: std::sync::atomic::AtomicBool,
    /// The body waits for its code before it goes on (see
    /// [`Control::waiting_for_code`]).
    pub(crate) waiting: std::sync::atomic::AtomicBool,
    /// The flag memory of the body's instance (another one when the body
    /// moves into the whole module: see `Body::complete`).
    pub(crate) flag: Mutex<Option<SharedMemory>>,
    /// It has a flag: it can be frozen.
    pub(crate) freezable: bool,
    pub(crate) engine: Engine,
    pub(crate) sleeping: Mutex<()>,
    pub(crate) wake: Condvar,
}

impl Control {
    pub(crate) fn new(engine: &Engine, flag: Option<SharedMemory>) -> Self {
        Control(Arc::new(ControlInner {
            request: AtomicU8::new(NOTHING),
            signalled: std::sync::atomic::AtomicBool::new(false),
            in_handler: std::sync::atomic::AtomicBool::new(false),
            moving: std::sync::atomic::AtomicBool::new(false),
            waiting: std::sync::atomic::AtomicBool::new(false),
            freezable: flag.is_some(),
            flag: Mutex::new(flag),
            engine: engine.clone(),
            sleeping: Mutex::new(()),
            wake: Condvar::new(),
        }))
    }

    /// Ends the body: it returns [`Killed`](crate::Killed).
    pub fn kill(&self) {
        self.0.request.store(KILL, Ordering::SeqCst);
        self.set_flag(FLAG_END);
        self.wake();
        self.0.engine.increment_epoch();
    }

    /// Asks the body to freeze: [`Body::run`](crate::Body::run) returns
    /// [`Exit::Frozen`](crate::Exit::Frozen). False if the body cannot be
    /// frozen (see [`Program::not_freezable`](crate::Program::not_freezable)).
    pub fn freeze(&self) -> bool {
        if !self.0.freezable {
            return false;
        }
        let _ =
            self.0
                .request
                .compare_exchange(NOTHING, FREEZE, Ordering::SeqCst, Ordering::SeqCst);
        self.raise();
        true
    }

    /// Tells the body that signals are pending for its handlers: it asks its
    /// deputy for them at its next poll point, or when a sleep or a call
    /// waiting at the deputy is cut short.
    pub fn signal(&self) {
        self.0.signalled.store(true, Ordering::SeqCst);
        self.raise();
    }

    /// Asks the body to move into the next tier of its program's code: it
    /// unwinds at its next poll point (or the next call that waits), and
    /// the rewind puts it into an instance of that tier (see
    /// `Body::complete`). Nothing else of it changes.
    pub(crate) fn move_on(&self) {
        if self.0.freezable {
            self.0.moving.store(true, Ordering::SeqCst);
            self.raise();
        }
    }

    /// Whether the body is to move into the next tier.
    pub(crate) fn moving(&self) -> bool {
        self.0.moving.load(Ordering::SeqCst)
    }

    /// Whether the body, unwound (moved, restored or resumed), waits for the
    /// code it needs to go on: the rewind copies of the functions on its
    /// stack, made on demand (a large module's largest take a minute to
    /// compile), or its program's next step. `ssictl ps` shows it
    /// `resuming`: it has not run since.
    pub fn waiting_for_code(&self) -> bool {
        self.0.waiting.load(Ordering::SeqCst)
    }

    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.0.waiting.store(waiting, Ordering::SeqCst);
    }

    /// The body has moved into the next tier: its flag comes down unless
    /// something else is asked of it.
    pub(crate) fn moved(&self) {
        self.0.moving.store(false, Ordering::SeqCst);
        self.settle();
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<ControlInner> {
        Arc::downgrade(&self.0)
    }

    pub(crate) fn upgrade(inner: &std::sync::Weak<ControlInner>) -> Option<Control> {
        inner.upgrade().map(Control)
    }

    /// Takes the note that signals are pending.
    pub(crate) fn take_signalled(&self) -> bool {
        self.0.signalled.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn pending(&self) -> bool {
        self.0.request.load(Ordering::SeqCst) != NOTHING || self.0.signalled.load(Ordering::SeqCst)
    }

    /// Lowers the flag once nothing is asked of the body any more, and
    /// raises it if something is.
    pub(crate) fn settle(&self) {
        if !self.pending() && !self.killing() && !self.moving() {
            self.set_flag(0);
        }
        // A request that came meanwhile raises it again.
        if self.pending() || self.moving() {
            self.raise();
        }
    }

    /// A signal handler starts: until it returns, the flag stays down (but
    /// for a kill), so that the handler runs to its end.
    pub(crate) fn enter_handler(&self) {
        self.0.in_handler.store(true, Ordering::SeqCst);
        self.lower_in_handler();
    }

    /// The flag came up while a handler ran (a request just before it
    /// started): down again.
    pub(crate) fn lower_in_handler(&self) {
        if !self.killing() {
            self.set_flag(0);
        }
    }

    /// The handler returned: requests made meanwhile raise the flag.
    pub(crate) fn leave_handler(&self) {
        self.0.in_handler.store(false, Ordering::SeqCst);
        self.settle();
    }

    /// Whether the body can be frozen.
    pub fn freezable(&self) -> bool {
        self.0.freezable
    }

    /// Takes the flag memory away (from the control of an instance the body
    /// moves into, whose own control it does not keep).
    pub(crate) fn take_flag(&self) -> Option<SharedMemory> {
        self.0.flag.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The body now reads `flag` (its new instance's): it is set from what
    /// is asked of the body now, a request made meanwhile included.
    pub(crate) fn adopt_flag(&self, flag: Option<SharedMemory>) {
        *self.0.flag.lock().unwrap_or_else(|p| p.into_inner()) = flag;
        if self.killing() {
            self.set_flag(FLAG_END);
        } else {
            self.settle();
        }
    }

    /// Sets the word the body's poll points read.
    pub(crate) fn set_flag(&self, value: u32) {
        let flag = self.0.flag.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flag) = flag.as_ref() {
            let cells = flag.data();
            if cells.len() >= 4 {
                // SAFETY: the flag memory is a live, page-aligned shared memory
                // (kept alive by `flag`); Wasm reads it with plain loads, which
                // is how shared memories are meant to be used across threads.
                let word = unsafe { AtomicU32::from_ptr(cells.as_ptr() as *mut u32) };
                word.store(value, Ordering::SeqCst);
            }
        }
    }

    pub(crate) fn raise(&self) {
        if !self.killing() && !self.0.in_handler.load(Ordering::SeqCst) {
            self.set_flag(FLAG_UNWIND);
        }
        self.wake();
    }

    pub(crate) fn wake(&self) {
        let _guard = self.0.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        self.0.wake.notify_all();
    }

    /// Takes back a freeze request (the body resumes).
    pub(crate) fn clear_freeze(&self) {
        let cleared = self
            .0
            .request
            .compare_exchange(FREEZE, NOTHING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if cleared {
            self.settle();
        }
    }

    pub(crate) fn killing(&self) -> bool {
        self.0.request.load(Ordering::SeqCst) == KILL
    }

    pub(crate) fn freezing(&self) -> bool {
        self.0.request.load(Ordering::SeqCst) == FREEZE
    }

    /// Sleeps for `d`, or less if a request comes: then false.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut guard = self.0.sleeping.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.0.request.load(Ordering::SeqCst) != NOTHING
                || self.0.signalled.load(Ordering::SeqCst)
            {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .0
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
