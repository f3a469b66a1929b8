//! Signals: their numbers (Linux's, as a shell reports them in `128 + n`), their
//! names as `kill(1)` accepts them, and their default actions.

use std::fmt;

/// A signal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(u8);

/// What a signal does to a process that has no handler for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    /// The process ends; its status is `128 + n`.
    Terminate,
    /// Nothing happens.
    Ignore,
    /// The process stops until continued.
    Stop,
    /// A stopped process continues.
    Continue,
}

/// A signal name or number that is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a signal (use a name such as TERM or INT, or a number from 1 to 31)")]
pub struct UnknownSignal(pub String);

const NAMES: [(u8, &str); 31] = [
    (1, "HUP"),
    (2, "INT"),
    (3, "QUIT"),
    (4, "ILL"),
    (5, "TRAP"),
    (6, "ABRT"),
    (7, "BUS"),
    (8, "FPE"),
    (9, "KILL"),
    (10, "USR1"),
    (11, "SEGV"),
    (12, "USR2"),
    (13, "PIPE"),
    (14, "ALRM"),
    (15, "TERM"),
    (16, "STKFLT"),
    (17, "CHLD"),
    (18, "CONT"),
    (19, "STOP"),
    (20, "TSTP"),
    (21, "TTIN"),
    (22, "TTOU"),
    (23, "URG"),
    (24, "XCPU"),
    (25, "XFSZ"),
    (26, "VTALRM"),
    (27, "PROF"),
    (28, "WINCH"),
    (29, "IO"),
    (30, "PWR"),
    (31, "SYS"),
];

impl Signal {
    pub const HUP: Signal = Signal(1);
    pub const INT: Signal = Signal(2);
    pub const QUIT: Signal = Signal(3);
    pub const KILL: Signal = Signal(9);
    pub const USR1: Signal = Signal(10);
    pub const USR2: Signal = Signal(12);
    pub const TERM: Signal = Signal(15);
    pub const CHLD: Signal = Signal(17);
    pub const CONT: Signal = Signal(18);
    pub const STOP: Signal = Signal(19);
    pub const TSTP: Signal = Signal(20);

    /// A signal by number (1 to 31).
    pub fn from_number(n: u8) -> Option<Signal> {
        (1..=31).contains(&n).then_some(Signal(n))
    }

    /// Parses `TERM`, `SIGTERM`, `term` or `15`.
    pub fn parse(s: &str) -> Result<Signal, UnknownSignal> {
        let unknown = || UnknownSignal(s.to_string());
        if let Ok(n) = s.parse::<u8>() {
            return Signal::from_number(n).ok_or_else(unknown);
        }
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(n, _)| Signal(*n))
            .ok_or_else(unknown)
    }

    pub fn number(self) -> u8 {
        self.0
    }

    /// The name without `SIG`.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, name)| *name)
            .unwrap_or("?")
    }

    pub fn default_action(self) -> DefaultAction {
        match self {
            Signal::CHLD | Signal(23) | Signal(28) => DefaultAction::Ignore,
            Signal::CONT => DefaultAction::Continue,
            Signal::STOP | Signal::TSTP | Signal(21) | Signal(22) => DefaultAction::Stop,
            _ => DefaultAction::Terminate,
        }
    }
}

/// What a process does with a signal, as `sigaction` sets it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// The signal's default action.
    #[default]
    Default,
    /// Nothing happens.
    Ignore,
    /// The body runs this export of its module, `(i32) -> ()`, given the signal.
    Handle(String),
}

impl Action {
    /// The code `sigaction` takes and returns: 0 default, 1 ignore, 2 handle.
    pub fn code(&self) -> u32 {
        match self {
            Action::Default => 0,
            Action::Ignore => 1,
            Action::Handle(_) => 2,
        }
    }
}

/// What becomes of a signal that reaches a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Its default action, taken by the home.
    Default(DefaultAction),
    /// It is ignored.
    Ignored,
    /// It is pending for the body's handler: the body must be told.
    Handle,
    /// It is blocked: pending until unblocked.
    Held,
}

/// A process's signal dispositions, blocked mask and pending set. The
/// deputy's (it changes them for `sigaction` and `sigprocmask`), and shared
/// with the home's task that delivers signals: never locked across a call.
#[derive(Debug, Default)]
pub struct Signals(std::sync::Mutex<SignalTable>);

/// The dispositions and mask, as a checkpoint keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignalTable {
    /// Index n - 1 for signal n.
    pub actions: Vec<Action>,
    pub blocked: u32,
    #[serde(skip)]
    pub pending: u32,
}

fn bit(sig: Signal) -> u32 {
    1 << (sig.0 - 1)
}

/// Neither caught, ignored nor blocked.
fn fixed(sig: Signal) -> bool {
    sig == Signal::KILL || sig == Signal::STOP
}

/// `sigprocmask`'s `how`.
pub const SIG_BLOCK: u8 = 0;
pub const SIG_UNBLOCK: u8 = 1;
pub const SIG_SETMASK: u8 = 2;

impl Signals {
    fn table(&self) -> std::sync::MutexGuard<'_, SignalTable> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn from_table(table: SignalTable) -> Self {
        Signals(std::sync::Mutex::new(table))
    }

    /// The dispositions and mask (for a checkpoint).
    pub fn snapshot(&self) -> SignalTable {
        self.table().clone()
    }

    fn action(t: &SignalTable, sig: Signal) -> &Action {
        t.actions
            .get(usize::from(sig.0) - 1)
            .unwrap_or(&Action::Default)
    }

    /// A signal reached the process: what happens to it.
    pub fn deliver(&self, sig: Signal) -> Delivery {
        if fixed(sig) {
            return Delivery::Default(sig.default_action());
        }
        let mut t = self.table();
        if t.blocked & bit(sig) != 0 {
            t.pending |= bit(sig);
            return Delivery::Held;
        }
        match Self::action(&t, sig) {
            Action::Default => Delivery::Default(sig.default_action()),
            Action::Ignore => Delivery::Ignored,
            Action::Handle(_) => {
                t.pending |= bit(sig);
                Delivery::Handle
            }
        }
    }

    /// Sets what `sig` does; the previous action. KILL and STOP cannot change.
    pub fn set_action(&self, sig: Signal, action: Action) -> Option<Action> {
        if fixed(sig) {
            return None;
        }
        let mut t = self.table();
        if t.actions.len() < 31 {
            t.actions.resize(31, Action::Default);
        }
        let slot = &mut t.actions[usize::from(sig.0) - 1];
        let old = std::mem::replace(slot, action);
        // A signal pending for a handler that is gone, or ignored now, is dropped.
        if !matches!(slot, Action::Handle(_)) && t.blocked & bit(sig) == 0 {
            t.pending &= !bit(sig);
        }
        Some(old)
    }

    /// `sigprocmask(how, set)`: the old mask, and the signals unblocked that
    /// were pending (taken out of the pending set when they take their
    /// default action, which the caller has delivered again).
    pub fn set_mask(&self, how: u8, set: u32) -> Option<(u32, Vec<Signal>)> {
        let mut t = self.table();
        let old = t.blocked;
        let set = set & !(bit(Signal::KILL) | bit(Signal::STOP));
        t.blocked = match how {
            SIG_BLOCK => old | set,
            SIG_UNBLOCK => old & !set,
            SIG_SETMASK => set,
            _ => return None,
        };
        let freed = t.pending & old & !t.blocked;
        let mut redo = Vec::new();
        for n in 1..=31u8 {
            let sig = Signal(n);
            if freed & bit(sig) != 0 && !matches!(Self::action(&t, sig), Action::Handle(_)) {
                t.pending &= !bit(sig);
                redo.push(sig);
            }
        }
        Some((old, redo))
    }

    /// Whether the body has handlers to run now.
    pub fn deliverable(&self) -> bool {
        let t = self.table();
        t.pending & !t.blocked != 0
    }

    /// Takes the signals the body must run handlers for now, with their
    /// handlers, lowest number first.
    pub fn take(&self) -> Vec<(Signal, String)> {
        let mut t = self.table();
        let ready = t.pending & !t.blocked;
        let mut out = Vec::new();
        for n in 1..=31u8 {
            let sig = Signal(n);
            if ready & bit(sig) != 0 {
                t.pending &= !bit(sig);
                if let Action::Handle(export) = Self::action(&t, sig) {
                    out.push((sig, export.clone()));
                }
            }
        }
        out
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_parse_as_kill_accepts_them() {
        assert_eq!(Signal::parse("TERM"), Ok(Signal::TERM));
        assert_eq!(Signal::parse("SIGINT"), Ok(Signal::INT));
        assert_eq!(Signal::parse("kill"), Ok(Signal::KILL));
        assert_eq!(Signal::parse("10"), Ok(Signal::USR1));
        assert!(Signal::parse("0").is_err());
        assert!(Signal::parse("32").is_err());
        assert!(Signal::parse("BOGUS").is_err());
        assert_eq!(Signal::TERM.to_string(), "SIGTERM");
    }

    #[test]
    fn default_actions() {
        for s in [
            Signal::HUP,
            Signal::INT,
            Signal::QUIT,
            Signal::KILL,
            Signal::USR1,
            Signal::USR2,
            Signal::TERM,
        ] {
            assert_eq!(s.default_action(), DefaultAction::Terminate, "{s}");
        }
        assert_eq!(Signal::CHLD.default_action(), DefaultAction::Ignore);
        assert_eq!(Signal::TSTP.default_action(), DefaultAction::Stop);
        assert_eq!(Signal::CONT.default_action(), DefaultAction::Continue);
    }

    #[test]
    fn handled_blocked_and_ignored_signals() {
        let s = Signals::default();
        let usr1 = Signal::USR1;
        assert_eq!(s.deliver(usr1), Delivery::Default(DefaultAction::Terminate));
        assert_eq!(
            s.set_action(usr1, Action::Handle("h".into())),
            Some(Action::Default)
        );
        assert_eq!(s.deliver(usr1), Delivery::Handle);
        // Two before the body asks: one delivery, as POSIX merges them.
        assert_eq!(s.deliver(usr1), Delivery::Handle);
        assert!(s.deliverable());
        assert_eq!(s.take(), vec![(usr1, "h".to_string())]);
        assert!(s.take().is_empty());
        // Blocked: held, then runnable once unblocked.
        assert_eq!(
            s.set_mask(SIG_BLOCK, bit(usr1) | bit(Signal::KILL)),
            Some((0, vec![]))
        );
        assert_eq!(s.deliver(usr1), Delivery::Held);
        assert!(!s.deliverable());
        // SIGKILL and SIGSTOP are never blocked, handled or ignored.
        assert_eq!(
            s.deliver(Signal::KILL),
            Delivery::Default(DefaultAction::Terminate)
        );
        assert_eq!(s.set_action(Signal::STOP, Action::Ignore), None);
        assert_eq!(
            s.set_mask(SIG_UNBLOCK, bit(usr1)),
            Some((bit(usr1), vec![]))
        );
        assert_eq!(s.take(), vec![(usr1, "h".to_string())]);
        // A blocked signal with its default action is handed back to be
        // delivered again when unblocked.
        s.set_mask(SIG_SETMASK, bit(Signal::TERM));
        assert_eq!(s.deliver(Signal::TERM), Delivery::Held);
        assert_eq!(
            s.set_mask(SIG_SETMASK, 0),
            Some((bit(Signal::TERM), vec![Signal::TERM]))
        );
        assert!(!s.deliverable());
        assert_eq!(s.set_mask(7, 0), None);
        // Ignored, and a pending signal whose handler goes is dropped.
        s.set_action(Signal::HUP, Action::Ignore);
        assert_eq!(s.deliver(Signal::HUP), Delivery::Ignored);
        assert_eq!(s.deliver(usr1), Delivery::Handle);
        s.set_action(usr1, Action::Default);
        assert!(s.take().is_empty());
        // The table a checkpoint keeps leaves out what is pending.
        let snap = s.snapshot();
        let json = serde_json::to_string(&snap).expect("json");
        let back: SignalTable = serde_json::from_str(&json).expect("back");
        assert_eq!(back.actions[0], Action::Ignore);
        assert_eq!(back.pending, 0);
    }
}
