//! Compiled code, below the engines: a module's name (the hash of its
//! bytes), why it could not be loaded, and a compile that gives its memory
//! back to the system.
//!
//! Must not know: engines' configurations, the cache, programs and their
//! tiers (`engine.rs`, `cache.rs`, `program.rs`).

use sha2::{Digest, Sha256};
use std::fmt;
use wasmtime::{Engine, Module};

/// The content hash of a module's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleHash(pub [u8; 32]);

impl ModuleHash {
    pub fn of(bytes: &[u8]) -> Self {
        ModuleHash(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleHash({})", self.to_hex())
    }
}

impl fmt::Display for ModuleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly module (no `\\0asm` header, and not WebAssembly text)")]
    NotWasm,
    #[error("invalid WebAssembly text: {0}")]
    BadText(String),
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot use the compiled-code cache: {0}")]
    Cache(String),
    #[error("cannot use the code a peer compiled: {0}")]
    Shared(String),
}

/// One line for an error chain: "outer: inner: root".
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let mut s = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            s.push_str(": ");
        }
        s.push_str(&cause.to_string().replace('\n', " "));
    }
    s
}

/// `wasm` compiled by `engine`.
pub(crate) fn compile(engine: &Engine, wasm: &[u8]) -> Result<Module, LoadError> {
    let module = Module::from_binary(engine, wasm).map_err(|e| LoadError::Invalid(one_line(&e)));
    if wasm.len() > RELEASE_AFTER {
        release_freed_memory();
    }
    module
}

/// How large a module's Wasm is past which its compile's memory is given
/// back to the system at once.
const RELEASE_AFTER: usize = 1 << 20;

/// Gives the memory freed by a compile or an instrumentation back to the
/// system. The C allocator keeps what its threads freed in its arenas for
/// later: after compiling a large module (gigabytes at the peak, on
/// several threads), a node would otherwise keep that peak for good, and
/// three nodes on one machine, each compiling rewind copies now and then,
/// would grow until the machine runs out of memory.
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free memory of the allocator's
    // arenas to the system; it touches nothing in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
