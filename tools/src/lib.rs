//! ssi-tools: the command-line programs (`ssid`, `ssirun`, `ssictl`, the
//! benchmarks) and what more than one of them needs: writing a checkpoint to
//! a file as it arrives ([`CheckpointFile`]), and `ssictl top`'s dashboard
//! ([`top`]).

pub mod figures;
pub mod top;

use capnp::capability::Rc as CapRc;
use ssi_schema::image_sink;
use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointFileError {
    #[error("cannot create a file next to `{path}`: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the checkpoint `{path}`: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

struct Receiving {
    file: Option<tempfile::NamedTempFile>,
    /// The checkpoint is whole and in place.
    committed: bool,
    written: u64,
    /// The size announced, if it was.
    total: Option<u64>,
    error: Option<String>,
    progress: Option<indicatif::ProgressBar>,
}

/// A checkpoint being received into a file: written to a temporary file in
/// the same directory and put in place only by [`CheckpointFile::commit`],
/// so the file at `path` is always a whole checkpoint (the new one, or the
/// one it had before), whatever fails on the way.
pub struct CheckpointFile {
    path: PathBuf,
    state: Rc<RefCell<Receiving>>,
}

/// The sink the checkpoint's home writes into.
struct Sink {
    path: PathBuf,
    state: Rc<RefCell<Receiving>>,
}

impl CheckpointFile {
    /// A file to receive a checkpoint at `path`, and the sink to give the home.
    /// With `progress`, a progress bar is drawn on standard error (when it is a
    /// terminal) once the size is known.
    pub fn create(
        path: &Path,
        progress: bool,
    ) -> Result<(CheckpointFile, image_sink::Client), CheckpointFileError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file = tempfile::Builder::new()
            .prefix(".ssi-checkpoint-")
            .tempfile_in(dir)
            .map_err(|source| CheckpointFileError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        let show = progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let state = Rc::new(RefCell::new(Receiving {
            file: Some(file),
            committed: false,
            written: 0,
            total: None,
            error: None,
            progress: show.then(indicatif::ProgressBar::hidden),
        }));
        let sink = capnp_rpc::new_client(Sink {
            path: path.to_path_buf(),
            state: state.clone(),
        });
        Ok((
            CheckpointFile {
                path: path.to_path_buf(),
                state,
            },
            sink,
        ))
    }

    /// How much has arrived, and of how much (once the sender said).
    pub fn progress(&self) -> (u64, Option<u64>) {
        let st = self.state.borrow();
        (st.written, st.total)
    }

    /// Puts the received checkpoint in place (flushed to disk first), if the
    /// sender's `done` has not already: its size.
    pub fn commit(self) -> Result<u64, CheckpointFileError> {
        let mut st = self.state.borrow_mut();
        if let Some(p) = st.progress.take() {
            p.finish_and_clear();
        }
        put_in_place(&mut st, &self.path)
    }
}

/// Flushes the received file and renames it over `path`.
fn put_in_place(st: &mut Receiving, path: &Path) -> Result<u64, CheckpointFileError> {
    if st.committed {
        return Ok(st.written);
    }
    let err = |source| CheckpointFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(e) = st.error.take() {
        return Err(err(std::io::Error::other(e)));
    }
    let file = st
        .file
        .take()
        .ok_or_else(|| err(std::io::Error::other("nothing was received")))?;
    file.as_file().sync_all().map_err(err)?;
    file.persist(path).map_err(|e| err(e.error))?;
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    st.committed = true;
    Ok(st.written)
}

/// Writes a whole checkpoint at `path` as [`CheckpointFile`] does: to a
/// temporary file, flushed, then renamed over the old one.
pub fn write_checkpoint(path: &Path, image: &[u8]) -> Result<u64, CheckpointFileError> {
    let (file, _sink) = CheckpointFile::create(path, false)?;
    {
        let mut st = file.state.borrow_mut();
        let st = &mut *st;
        if let Some(f) = st.file.as_mut() {
            f.write_all(image)
                .map_err(|source| CheckpointFileError::Write {
                    path: path.to_path_buf(),
                    source,
                })?;
            st.written = image.len() as u64;
        }
    }
    file.commit()
}

impl Drop for CheckpointFile {
    /// An uncommitted checkpoint leaves nothing behind (the temporary file is
    /// removed), even while the home still holds the sink.
    fn drop(&mut self) {
        let mut st = self.state.borrow_mut();
        if let Some(p) = st.progress.take() {
            p.finish_and_clear();
        }
        st.file.take();
    }
}

impl image_sink::Server for Sink {
    async fn write(self: CapRc<Self>, params: image_sink::WriteParams) -> Result<(), capnp::Error> {
        let chunk = params.get()?.get_chunk()?;
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let file = st
            .file
            .as_mut()
            .ok_or_else(|| capnp::Error::failed("the checkpoint is complete".into()))?;
        if let Err(e) = file.write_all(chunk) {
            let message = format!("cannot write the checkpoint `{}`: {e}", self.path.display());
            st.error = Some(e.to_string());
            return Err(capnp::Error::failed(message));
        }
        st.written += chunk.len() as u64;
        if let Some(p) = &st.progress {
            p.set_position(st.written);
        }
        Ok(())
    }

    /// The checkpoint is whole: it is put in place before `done` answers, so
    /// that the sender knows it is safe (a process checkpointed to be stopped
    /// is only stopped then).
    async fn done(
        self: CapRc<Self>,
        _: image_sink::DoneParams,
        _: image_sink::DoneResults,
    ) -> Result<(), capnp::Error> {
        let mut st = self.state.borrow_mut();
        put_in_place(&mut st, &self.path)
            .map(|_| ())
            .map_err(|e| capnp::Error::failed(e.to_string()))
    }

    async fn size(
        self: CapRc<Self>,
        params: image_sink::SizeParams,
        _: image_sink::SizeResults,
    ) -> Result<(), capnp::Error> {
        let bytes = params.get()?.get_bytes();
        let mut st = self.state.borrow_mut();
        st.total = Some(bytes);
        // Only a checkpoint that takes a while is worth a bar.
        if st.progress.is_some() && bytes >= 64 << 20 {
            let bar = indicatif::ProgressBar::new(bytes).with_style(
                indicatif::ProgressStyle::with_template(
                    "checkpoint {bar:40} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            st.progress = Some(bar);
        }
        Ok(())
    }
}

/// A child process that is killed and reaped when dropped (the benchmarks'
/// nodes and clients).
#[derive(Debug)]
pub struct Owned(pub std::process::Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on loopback now, for a node to listen on.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Only a transfer that takes a while is worth a bar.
const BAR_FROM: u64 = 64 << 20;

/// A `Progress` drawn as a bar on standard error, for a transfer of at
/// least 64 MiB: none when standard error is not a terminal.
pub fn progress_bar(what: &'static str) -> Option<ssi_schema::progress::Client> {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return None;
    }
    Some(capnp_rpc::new_client(Bar {
        what,
        bar: RefCell::new(None),
    }))
}

struct Bar {
    what: &'static str,
    bar: RefCell<Option<indicatif::ProgressBar>>,
}

impl ssi_schema::progress::Server for Bar {
    async fn update(
        self: CapRc<Self>,
        params: ssi_schema::progress::UpdateParams,
        _: ssi_schema::progress::UpdateResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let (done, total) = (p.get_done(), p.get_total());
        let mut bar = self.bar.borrow_mut();
        if bar.is_none() && total >= BAR_FROM {
            let template = format!(
                "{} {{bar:40}} {{binary_bytes}}/{{binary_total_bytes}} {{binary_bytes_per_sec}} {{eta}}",
                self.what
            );
            *bar = Some(
                indicatif::ProgressBar::new(total).with_style(
                    indicatif::ProgressStyle::with_template(&template)
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                ),
            );
        }
        if let Some(b) = bar.as_ref() {
            b.set_position(done.min(total));
        }
        Ok(())
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.bar.get_mut().take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_in_place_only_once_committed() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.ckpt");
        std::fs::write(&path, b"the previous checkpoint").expect("old");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            // Abandoned half way: the old file stays, no temporary is left.
            let (file, sink) = CheckpointFile::create(&path, false).expect("create");
            let mut w = sink.write_request();
            w.get().set_chunk(b"half");
            w.send().await.expect("write");
            drop(file);
            assert_eq!(
                std::fs::read(&path).expect("read"),
                b"the previous checkpoint"
            );
            assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
            // Committed: replaced whole.
            let (file, sink) = CheckpointFile::create(&path, true).expect("create");
            for chunk in [&b"new "[..], b"checkpoint"] {
                let mut w = sink.write_request();
                w.get().set_chunk(chunk);
                w.send().await.expect("write");
            }
            assert_eq!(file.commit().expect("commit"), 14);
            assert_eq!(std::fs::read(&path).expect("read"), b"new checkpoint");
        });
    }
}
