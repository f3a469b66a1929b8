//! The ghost image format's vocabulary (drawn in `mod.rs`): its magic, versions
//! and limits, its sections, the errors every decoder reports (each names its
//! section), and the values an image holds besides memory (`Ghost`, `GlobalValue`,
//! `TableImage`, `Times`).
//!
//! Plain values: no reading, no writing.

use crate::code::ModuleHash;
use std::fmt;

pub(crate) const MAGIC: &[u8; 8] = b"SSIGHOST";

pub const MAJOR: u16 = 2;

pub const MINOR: u16 = 4;

/// A Wasm page.
pub const PAGE: usize = 64 * 1024;

/// Pages per stored run: bounds what one run decompresses into.
pub(crate) const RUN_PAGES: usize = 64;

/// Bytes of a run tried first to see whether compressing it pays.
pub(crate) const SAMPLE: usize = 8 * 1024;

/// Wasm32's largest memory: 4 GiB.
pub(crate) const MAX_MEMORY: u64 = 1 << 32;

pub(crate) const MAX_MEMORIES: usize = 16;

pub(crate) const MAX_GLOBALS: u32 = 1 << 20;

pub(crate) const MAX_TABLE: u32 = 1 << 24;

pub(crate) const MAX_STRINGS: u32 = 1 << 20;

/// The most modules of compiled rewind copies an image carries.
pub(crate) const MAX_REWIND_MODULES: u32 = 4096;

/// The sections of an image, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Header,
    Memory,
    Globals,
    Tables,
    Stack,
    Clocks,
    Command,
    Deputy,
    Module,
    Instrumentation,
    Times,
    Limits,
    RewindCode,
    Checksum,
}

impl Section {
    pub(crate) fn kind(self) -> u8 {
        match self {
            Section::Memory => 1,
            Section::Globals => 2,
            Section::Tables => 3,
            Section::Stack => 4,
            Section::Clocks => 5,
            Section::Command => 6,
            Section::Deputy => 7,
            Section::Module => 8,
            Section::Instrumentation => 9,
            Section::Times => 10,
            Section::Limits => 11,
            Section::RewindCode => 12,
            Section::Header | Section::Checksum => 0,
        }
    }

    pub(crate) fn of_kind(kind: u8) -> Option<Section> {
        Some(match kind {
            1 => Section::Memory,
            2 => Section::Globals,
            3 => Section::Tables,
            4 => Section::Stack,
            5 => Section::Clocks,
            6 => Section::Command,
            7 => Section::Deputy,
            8 => Section::Module,
            9 => Section::Instrumentation,
            10 => Section::Times,
            11 => Section::Limits,
            12 => Section::RewindCode,
            _ => return None,
        })
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Memory => "memory",
            Section::Globals => "globals",
            Section::Tables => "tables",
            Section::Stack => "stack",
            Section::Clocks => "clocks",
            Section::Command => "command",
            Section::Deputy => "deputy",
            Section::Module => "module",
            Section::Instrumentation => "instrumentation",
            Section::Times => "times",
            Section::Limits => "limits",
            Section::RewindCode => "rewind code",
            Section::Checksum => "checksum",
        })
    }
}

/// Why an image cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GhostError {
    #[error("the image is empty")]
    Empty,
    #[error("not a ghost image (bad magic)")]
    BadMagic,
    #[error(
        "ghost image version {major}.{minor} is not readable by this version ({MAJOR}.{MINOR})"
    )]
    Version { major: u16, minor: u16 },
    #[error("the image is truncated in its {0} section")]
    Truncated(Section),
    #[error("the image is corrupt: its checksum does not match")]
    Checksum,
    #[error(
        "the image is truncated: {found} bytes of {}{expected}",
        if *exact { "" } else { "at least " }
    )]
    Short {
        expected: u64,
        found: u64,
        exact: bool,
    },
    #[error("the image's {section} section is corrupt: {what}")]
    Corrupt { section: Section, what: String },
    #[error("unknown section kind {0} (written by a newer version?)")]
    UnknownSection(u8),
    #[error(
        "the image was taken under instrumentation version {found:?}, and this version needs {expected}"
    )]
    WrongInstrumentation { expected: u32, found: Option<u32> },
    #[error("the image is of module {found}, not {expected}")]
    WrongModule {
        expected: ModuleHash,
        found: ModuleHash,
    },
    #[error("the image could not be read in its {section} section: {what}")]
    Io { section: Section, what: String },
}

pub(crate) fn corrupt(section: Section, what: impl Into<String>) -> GhostError {
    GhostError::Corrupt {
        section,
        what: what.into(),
    }
}

/// The value of one global, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalValue {
    I32(i32),
    I64(i64),
    /// The bits of an f32.
    F32(u32),
    /// The bits of an f64.
    F64(u64),
    V128(u128),
}

impl GlobalValue {
    pub(crate) fn tagged(&self) -> (u8, u128) {
        match *self {
            GlobalValue::I32(v) => (0, v as u32 as u128),
            GlobalValue::I64(v) => (1, v as u64 as u128),
            GlobalValue::F32(v) => (2, v as u128),
            GlobalValue::F64(v) => (3, v as u128),
            GlobalValue::V128(v) => (4, v),
        }
    }
}

/// One table: function indices, `None` for null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableImage {
    pub index: u32,
    pub elements: Vec<Option<u32>>,
}

/// Compiled rewind copies that go with a body moved between nodes (see
/// [`crate::Body::write_move_image`]): the functions they are the copies
/// of, the milliseconds their compilation took where it was made, and the
/// code (`Module::serialize`, for the engine of the body that sent it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewindCode {
    pub functions: Vec<u32>,
    pub cost_ms: u64,
    pub code: Vec<u8>,
}

/// The body's times that go with it: CPU time used, and a sleep it was
/// frozen in (to end at the same moment of its monotonic clock).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Times {
    pub cpu_ns: u64,
    pub sleep_until_ns: Option<u64>,
}
