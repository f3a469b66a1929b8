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
}
