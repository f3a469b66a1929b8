//! Ghost images: a frozen body as one self-contained byte string.
//!
//! ```text
//! ┌──────────────────────────────────────────────────────────────┐
//! │ magic "SSIGHOST" (8) │ major u16 │ minor u16 │ module SHA-256 (32) │
//! ├──────────────────────────────────────────────────────────────┤
//! │ section: kind u8 │ payload length u64 │ payload …               │  × n
//! ├──────────────────────────────────────────────────────────────┤
//! │ end: kind 0 │ length 0                                           │
//! │ checksum: XXH3-64 of every byte before it (u64)               │
//! └──────────────────────────────────────────────────────────────┘
//!
//! memory   (1): index u32 │ size in bytes u64 │ run count u32 │
//!               (first page u64 │ pages u32 │ stored length u32) × count │
//!               the stored bytes of each run, in the same order
//!               (pages are 64 KiB; all-zero pages are not stored; a run is
//!               an LZ4 block, or the pages as they are when its stored
//!               length is exactly pages × 64 KiB: data LZ4 cannot shrink;
//!               the table comes first so that a reader knows where every
//!               page goes before the first one arrives)
//! globals  (2): count u32 │ (type u8 │ 16 bytes of value) …
//! tables   (3): count u32 │ (index u32 │ length u32 │ element u32 …) …
//!               (an element is a function index, or u32::MAX for null)
//! stack    (4): the unwound call stack, as the instrumentation left it
//! clocks   (5): monotonic clock offset u64 (ns)
//! command  (6): argc u32 │ (length u32 │ bytes) … │ envc u32 │ (length u32 │ bytes) …
//! deputy   (7): the deputy's state, for checkpoints (its own encoding)
//! module   (8): the module's bytes, for checkpoints (a restart needs no copy)
//! instrumentation (9): version u32 of the instrumentation the stack was
//!               unwound by (a body of another version cannot rewind it)
//! times   (10): CPU time used so far u64 (ns) │ the deadline of the sleep
//!               the body was frozen in, on its monotonic clock u64 (ns;
//!               u64::MAX when it was not sleeping)   (since 2.2)
//! limits  (11): the most bytes a memory of the guest's may reach u64
//!               (`-W max-memory-size`); absent: no limit   (since 2.3)
//! rewind code (12): count u32 │ (function count u32 │ function u32 … │
//!               cost in ms u64 │ length u64 │ compiled code) …: the rewind
//!               copies of functions on the stack, compiled where the body
//!               was, for a move between the nodes of a cluster alone; a
//!               reader accepts it only when told to, never in an image held
//!               whole (a checkpoint file)   (since 2.4)
//! ```
//!
//! A checkpoint file is an image with the deputy and module sections: the
//! home adds them to the image its body sent ([`seal_checkpoint`]).
//!
//! All integers are little-endian. The major version must match; a minor
//! version may be older than ours (newer minor versions only add section kinds,
//! which an older reader rejects by name). Decoding checks every length against
//! what remains and against fixed limits before it allocates, and every failure
//! is a [`GhostError`] that names the section.
//!
//! The rooms: `format.rs` (sections, limits, errors, values), `pages.rs`
//! (which pages are stored), `writer.rs` and `reader.rs` (streaming), `whole.rs`
//! (images held in memory, checkpoints).

mod format;
mod pages;
mod reader;
mod whole;
mod writer;

pub use format::*;
pub use pages::*;
pub use reader::*;
pub use whole::*;
pub use writer::*;
