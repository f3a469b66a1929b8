//! The wasmtime engine and the cache of compiled modules.
//!
//! Modules are identified by the SHA-256 of their bytes. The native code wasmtime
//! compiles for a module is kept on disk under that hash (next to a fingerprint of
//! the engine's configuration), so a second launch maps it instead of compiling.

use sha2::{Digest, Sha256};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::{Config, Engine, Module};

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
}

/// The compilation engine of a node, with its module cache.
pub struct Runtime {
    engine: Engine,
    interruptible: bool,
    cache_dir: Option<PathBuf>,
    fingerprint: u64,
}

/// The default cache directory: `$SSI_CACHE_DIR`, else the user's cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SSI_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    directories::ProjectDirs::from("", "", "ssi").map(|d| d.cache_dir().join("modules"))
}

/// One line for an error chain: "outer: inner: root".
fn one_line(e: &wasmtime::Error) -> String {
    let mut s = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            s.push_str(": ");
        }
        s.push_str(&cause.to_string().replace('\n', " "));
    }
    s
}

impl Runtime {
    /// An engine with wasmtime's default code generation, caching compiled code in
    /// `cache_dir` (none: compile every time). Its bodies can be stopped at a
    /// system call only: the embedded default, where the body ends with its
    /// `ssirun`, needs no more and runs exactly wasmtime's code.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        Self::with_config(cache_dir, false)
    }

    /// As [`Runtime::new`], with epoch checks compiled in at loop headers and
    /// function entries, so that a node can stop a body that makes no calls
    /// (see `Body::killer`). They cost a few percent on tight loops.
    pub fn interruptible(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        Self::with_config(cache_dir, true)
    }

    /// Whether bodies of this runtime can be stopped anywhere.
    pub fn is_interruptible(&self) -> bool {
        self.interruptible
    }

    fn with_config(cache_dir: Option<PathBuf>, interruptible: bool) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(interruptible);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(one_line(&e)))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        interruptible.hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Ok(Runtime {
            engine,
            interruptible,
            cache_dir,
            fingerprint: h.finish(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn cache_path(&self, hash: &ModuleHash) -> Option<PathBuf> {
        self.cache_dir
            .as_ref()
            .map(|d| d.join(format!("{}-{:016x}.cwasm", hash.to_hex(), self.fingerprint)))
    }

    /// Turns the bytes of a file into a compiled module: binary Wasm as is, Wasm
    /// text is assembled first. The compiled code comes from the cache when present.
    pub fn load(&self, bytes: &[u8]) -> Result<(ModuleHash, Module), LoadError> {
        self.load_binary(&assemble(bytes)?)
    }

    /// Loads a binary module (compiled code from the cache when present).
    pub fn load_binary(&self, wasm: &[u8]) -> Result<(ModuleHash, Module), LoadError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        let hash = ModuleHash::of(wasm);
        if let Some(path) = self.cache_path(&hash) {
            if path.exists() {
                // SAFETY: the file was written by `Module::serialize` of an engine with
                // the same fingerprint; wasmtime still checks its header and version.
                match unsafe { Module::deserialize_file(&self.engine, &path) } {
                    Ok(module) => return Ok((hash, module)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %one_line(&e), "ignoring unusable cache entry");
                    }
                }
            }
            let module = self.compile(wasm)?;
            if let Err(e) = store_atomically(&path, &module) {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled module");
            }
            return Ok((hash, module));
        }
        Ok((hash, self.compile(wasm)?))
    }

    fn compile(&self, wasm: &[u8]) -> Result<Module, LoadError> {
        Module::from_binary(&self.engine, wasm).map_err(|e| LoadError::Invalid(one_line(&e)))
    }
}

/// The binary form of a module file: binary Wasm as is, Wasm text assembled.
pub fn assemble(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, LoadError> {
    if bytes.starts_with(b"\0asm") {
        Ok(std::borrow::Cow::Borrowed(bytes))
    } else if looks_like_text(bytes) {
        Ok(std::borrow::Cow::Owned(
            wat::parse_bytes(bytes)
                .map_err(|e| LoadError::BadText(e.to_string().replace('\n', " ")))?
                .into_owned(),
        ))
    } else {
        Err(LoadError::NotWasm)
    }
}

/// Whether bytes look like WebAssembly text (a module starts with `(` once leading
/// white space and comments are skipped).
fn looks_like_text(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix(";;") {
            rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
        } else if rest.starts_with("(;") {
            match rest.find(";)") {
                Some(end) => rest = &rest[end + 2..],
                None => return false,
            }
        } else {
            return rest.starts_with('(');
        }
    }
}

fn store_atomically(path: &Path, module: &Module) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let bytes = module
        .serialize()
        .map_err(|e| std::io::Error::other(one_line(&e)))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, &bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_detection() {
        assert!(looks_like_text(b"  ;; hi\n (module)"));
        assert!(looks_like_text(b"(; block ;)(module)"));
        assert!(!looks_like_text(b"hello world"));
        assert!(!looks_like_text(&[0xff, 0xfe, 0x28]));
    }

    #[test]
    fn garbage_is_not_wasm() {
        let rt = Runtime::new(None).expect("engine");
        assert!(matches!(
            rt.load(b"#!/bin/sh\necho hi\n"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            rt.load(b"\0asm\x01\0\0\0\x99"),
            Err(LoadError::Invalid(_))
        ));
        assert!(matches!(
            rt.load(b"(module (func $f (result i32)))"),
            Err(LoadError::BadText(_) | LoadError::Invalid(_))
        ));
    }

    #[test]
    fn cache_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(Some(dir.path().to_path_buf())).expect("engine");
        let (h1, _) = rt
            .load(b"(module (func (export \"_start\")))")
            .expect("compile");
        let entries: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
        assert_eq!(entries.len(), 1);
        let (h2, m) = rt
            .load(b"(module (func (export \"_start\")))")
            .expect("from cache");
        assert_eq!(h1, h2);
        assert!(m.get_export("_start").is_some());
    }
}
