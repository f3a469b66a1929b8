//! The imports a body's module may have: `wasi_snapshot_preview1`
//! (`preview1.rs`, one table entry per function) and the `ssi` host API
//! (`ssi.rs`), over the guest's memory and the deputy link (`guest.rs`), with
//! signal handlers run from inside a call (`handlers.rs`).

mod guest;
mod handlers;
mod preview1;
mod ssi;

pub(crate) use handlers::run_handlers;
pub use preview1::{FUNCTIONS, MODULE};
pub use ssi::{SSI_FUNCTIONS, SSI_MODULE};

/// Registers every function of `wasi_snapshot_preview1` and of `ssi` in `linker`.
pub fn add_to_linker(linker: &mut wasmtime::Linker<crate::ctx::BodyCtx>) -> wasmtime::Result<()> {
    preview1::add_to_linker(linker)?;
    ssi::add_ssi(linker)
}
