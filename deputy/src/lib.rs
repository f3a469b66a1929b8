//! ssi-deputy: the home half of a process.
//!
//! A deputy executes a process's WASI preview1 system calls, given as plain Rust
//! values ([`Syscall`] in, [`Reply`] or [`Errno`] out — never guest pointers),
//! against the resources of its home node: the session's standard streams and the
//! preopened directories, sandboxed by cap-std through `wasi-common`. It keeps the
//! descriptor table with the metadata ([`FdMeta`]) a checkpoint needs, and
//! takes and brings back its state for checkpoints ([`DeputyState`]).
//!
//! It knows nothing of wasmtime, of the network or of Cap'n Proto: a body reaches
//! its deputy through a link that lives elsewhere.

pub mod abi;
mod calls;
mod convert;
mod deputy;
pub mod process;
pub mod signal;
mod state;
mod table;

pub use abi::{Errno, Fd, Identity, Reply, Syscall, SyscallResult};
pub use deputy::{Deputy, DeputyError, InputWait, Preopen, Stdio};
pub use process::ProcessTable;
pub use signal::{Action, DefaultAction, Delivery, Signal, SignalTable, Signals, UnknownSignal};
pub use state::{DeputyState, FdState, PreopenState, StateError};
pub use table::{FdKind, FdMeta};
/// Re-exported so that embedders can bind standard streams to their own files.
pub use wasi_common::WasiFile;
