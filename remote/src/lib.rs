//! ssi-remote: the body of a process.
//!
//! A body is the Wasm instance that computes. This crate owns the wasmtime engine
//! and the on-disk cache of compiled modules ([`Runtime`]), the shims that turn
//! the guest's `wasi_snapshot_preview1` calls into [`ssi_deputy::Syscall`]s, and
//! the [`DeputyLink`] trait through which those calls reach the deputy at home.
//!
//! It knows nothing of process tables, clusters or terminals: it is handed a
//! module, the program's arguments and environment, and a link.

mod body;
mod cache;
mod clock;
mod code;
mod control;
mod ctx;
mod engine;
pub mod ghost;
mod image;
pub mod instrument;
mod link;
mod program;
mod rewinds;
mod shims;

pub use body::{Body, BodyError, BodySpec, Exit, check_bytes};
pub use clock::{BodyClock, CpuMeter, ThreadCpuClock};
pub use code::{LoadError, ModuleHash};
pub use control::Control;
pub use ctx::{Killed, ProcExit};
pub use engine::{
    AS_IS, BODY_THREAD_STACK, MAX_WASM_STACK_OPTION, Runtime, SharedCode, WASM_STACK, assemble,
    default_cache_dir, imports,
};
pub use image::ImageStats;
pub use link::{DeputyLink, LinkError, LocalLink, NoLink, SharedDeputy};
pub use program::{Program, WARM_UP};
pub use shims::{FUNCTIONS as WASI_FUNCTIONS, MODULE as WASI_MODULE};
/// The error type of a trapped or failed body, and the marker of a Wasm trap.
pub use wasmtime::{Error, Module, Trap};
