//! The on-disk cache of compiled modules: its entries read (and marked as
//! used), written atomically, and kept under a size bound by evicting the
//! entries used least recently.

use crate::code::one_line;
use std::path::{Path, PathBuf};
use wasmtime::{Engine, Module};

/// A compiled module from the cache, if it holds a usable one.
pub(crate) fn cached(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.exists() {
        return None;
    }
    // SAFETY: the file was written by `Module::serialize` of an engine with
    // the same fingerprint; wasmtime still checks its header and version.
    match unsafe { Module::deserialize_file(engine, path) } {
        Ok(module) => {
            // Used now: the last to go when the cache is bounded.
            let _ = std::fs::File::options()
                .append(true)
                .open(path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            Some(module)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %one_line(&e), "ignoring unusable cache entry");
            None
        }
    }
}

/// Keeps a compiled module in the cache, if there is one.
pub(crate) fn cache_module(path: Option<&Path>, module: &Module, max: Option<u64>) {
    let Some(path) = path else { return };
    match module.serialize() {
        Ok(bytes) => store_atomically(path, &bytes, max),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %one_line(&e), "cannot cache compiled module")
        }
    }
}

/// Keeps a program's whole module in the cache, where it replaces its
/// runnable parts (which a later launch no longer needs).
pub(crate) fn cache_whole(
    whole: &Option<PathBuf>,
    parts: &[Option<PathBuf>],
    module: &Module,
    max: Option<u64>,
) {
    cache_module(whole.as_deref(), module, None);
    if let Some(whole) = whole
        && whole.exists()
    {
        for part in parts.iter().flatten() {
            let _ = std::fs::remove_file(part);
        }
        // (Bounded once the part it replaces is gone.)
        if let (Some(max), Some(dir)) = (max, whole.parent()) {
            evict(dir, max, whole);
        }
    }
}

/// Writes a cache entry; a failure only costs a later recompilation. Then
/// the cache is brought back under `max`.
pub(crate) fn store_atomically(path: &Path, bytes: &[u8], max: Option<u64>) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, bytes)?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled module");
    }
    if let Some(max) = max {
        evict(dir, max, path);
    }
}

/// Removes the entries of the cache in `dir` used least recently (their
/// modification time: written, or loaded) until it holds at most `max`
/// bytes; `keep`, just written, stays. Files being written (temporary,
/// hidden) are not entries.
pub(crate) fn evict(dir: &Path, max: u64, keep: &Path) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = read
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        if path == keep {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                total = total.saturating_sub(len);
                tracing::info!(path = %path.display(), bytes = len, "evicted from the module cache");
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot evict a cache entry")
            }
        }
    }
}
