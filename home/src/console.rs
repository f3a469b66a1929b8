//! The standard streams of a process whose session is remote: its `ssirun`
//! serves a `Console` capability and the deputy's descriptors 0, 1 and 2 are
//! files that talk to it.
//!
//! The deputy runs on another thread than the session's connection, so the files
//! and the connection meet through channels: writes are queued (bounded, so a
//! fast writer waits for a slow terminal) and forwarded in order by the [`ConsolePump`];
//! a read asks the console for what it has (up to `MAX_READ`), and what the
//! program does not take is kept for its next reads (as `wasmtime run`, which
//! reads its stdin in blocks too). A body elsewhere reads ahead the same way
//! and gives back what it did not use before it moves ([`unread`]).

use futures::channel::oneshot;
use ssi_deputy::{Stdio, WasiFile};
use ssi_schema::console;
use std::any::Any;
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wasi_common::file::FileType;
use wasi_common::{Error, ErrorExt};

/// How many writes may wait for the console before a writer blocks.
const QUEUE: usize = 64;

/// Queued writes to one stream are merged into messages of up to this size.
const COALESCE: usize = 1 << 20;

/// The largest single read asked of the console.
const MAX_READ: usize = 64 * 1024;

pub(crate) enum Request {
    Write {
        stream: u8,
        data: Vec<u8>,
    },
    Read {
        max: u32,
        reply: flume::Sender<Result<Vec<u8>, String>>,
    },
    /// Answered once every earlier write has reached the console; then the pump
    /// lets go of the console and ends.
    Close(oneshot::Sender<()>),
}

/// Bytes of writes sent to the console and not yet answered, past which the
/// pump waits for answers (as a streaming call's flow control would): two
/// merged messages, so that the next is on its way while one is written out.
const WINDOW: usize = 2 * COALESCE;

/// Writes sent to the console, oldest first: each stream's failure is known
/// from its own answers, so that a stdout closed early does not cost the
/// program its stderr.
#[derive(Default)]
struct InFlight {
    writes: std::collections::VecDeque<(
        u8,
        usize,
        capnp::capability::Promise<WriteAnswer, capnp::Error>,
    )>,
    bytes: usize,
}

type WriteAnswer = capnp::capability::Response<console::write_results::Owned>;

impl InFlight {
    /// Waits for the oldest write's answer; a failure marks its stream broken.
    async fn settle_one(&mut self, broken: &[AtomicBool; 3]) {
        if let Some((stream, len, answer)) = self.writes.pop_front() {
            self.bytes -= len;
            if answer.await.is_err() {
                broken[usize::from(stream) % 3].store(true, Ordering::SeqCst);
            }
        }
    }
}

/// The end of the channel that stays with the session.
pub struct ConsolePump {
    rx: flume::Receiver<Request>,
    tx: flume::Sender<Request>,
    interrupt: Interrupter,
    /// A stream (1 stdout, 2 stderr) the console could not write: the
    /// program's next write to it fails (EIO, as under `wasmtime run`).
    broken: Arc<[AtomicBool; 3]>,
    /// The console input, which a poll of the deputy waits on.
    input: Arc<InputState>,
}

/// Cuts short a read of the console that is waiting, which returns `EINTR`.
#[derive(Clone)]
pub struct Interrupter {
    tx: flume::Sender<()>,
    ending: Arc<AtomicBool>,
}

impl Interrupter {
    /// Cuts short the read waiting now, if one is (a body is freezing). Input
    /// that arrives for it later is kept for the next read: nothing is lost.
    pub fn interrupt(&self) {
        let _ = self.tx.send(());
    }

    /// The process is ending: this read and every later one return `EINTR`.
    pub fn end(&self) {
        self.ending.store(true, Ordering::SeqCst);
        let _ = self.tx.send(());
    }
}

/// Whether each of the session's streams is a terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ttys {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// Creates the deputy's standard streams, bound to a console through the returned pump.
pub fn console_stdio(ttys: Ttys) -> (Stdio, ConsolePump) {
    let (tx, rx) = flume::bounded(QUEUE);
    let (interrupt, interrupted) = flume::unbounded();
    let ending = Arc::new(AtomicBool::new(false));
    let broken: Arc<[AtomicBool; 3]> = Arc::new(Default::default());
    let input = Arc::new(InputState {
        tx: tx.clone(),
        tty: ttys.stdin,
        interrupted,
        ending: ending.clone(),
        pending: Mutex::new(None),
        leftover: Mutex::new(VecDeque::new()),
        at_end: AtomicBool::new(false),
    });
    let stdio = Stdio {
        stdin: Box::new(ConsoleIn(input.clone())),
        stdout: Box::new(ConsoleOut {
            tx: tx.clone(),
            stream: 1,
            tty: ttys.stdout,
            broken: broken.clone(),
        }),
        stderr: Box::new(ConsoleOut {
            tx: tx.clone(),
            stream: 2,
            broken: broken.clone(),
            tty: ttys.stderr,
        }),
    };
    let interrupt = Interrupter {
        tx: interrupt,
        ending,
    };
    (
        stdio,
        ConsolePump {
            rx,
            tx,
            interrupt,
            broken,
            input,
        },
    )
}

impl ConsolePump {
    /// A handle to end the pump, later, after every write queued so far.
    pub fn flusher(&self) -> Flusher {
        Flusher(self.tx.clone())
    }

    /// A handle to interrupt a read that waits for the console.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupt.clone()
    }

    /// Lets a poll of `deputy` on this console's input (its fd 0, if that is
    /// still this input: a restored process may have closed it) wait for
    /// input or a deadline, as a poll on a local terminal or pipe does.
    pub fn attach_input(&self, deputy: &mut ssi_deputy::Deputy) {
        let ours = deputy
            .input(0)
            .ok()
            .and_then(|f| f.as_any().downcast_ref::<ConsoleIn>())
            .is_some_and(|c| Arc::ptr_eq(&c.0, &self.input));
        if ours {
            deputy.set_input_wait(self.input.clone());
        }
    }

    /// Forwards the streams to `console` until every file is dropped. Runs on the
    /// session's connection thread.
    pub async fn run(self, console: console::Client) {
        let ConsolePump { rx, tx, broken, .. } = self;
        // The pump's own sender must not keep the channel open.
        drop(tx);
        let mut next = None;
        let mut in_flight = InFlight::default();
        loop {
            let req = match next.take() {
                Some(r) => r,
                None => match rx.recv_async().await {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            match req {
                Request::Write { stream, mut data } => {
                    // Writes already queued for the same stream go out as one message.
                    while data.len() < COALESCE {
                        match rx.try_recv() {
                            Ok(Request::Write {
                                stream: s,
                                data: more,
                            }) if s == stream => data.extend_from_slice(&more),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if broken[usize::from(stream) % 3].load(Ordering::SeqCst) {
                        continue;
                    }
                    let mut call = console.write_request();
                    call.get().set_stream(stream);
                    call.get().set_data(&data);
                    in_flight.bytes += data.len();
                    in_flight
                        .writes
                        .push_back((stream, data.len(), call.send().promise));
                    while in_flight.bytes > WINDOW {
                        in_flight.settle_one(&broken).await;
                    }
                }
                Request::Read { max, reply } => {
                    // A read may wait for the user for ever: writes (and the end
                    // of the process) must not queue behind it.
                    let mut call = console.read_request();
                    call.get().set_max(max);
                    tokio::task::spawn_local(async move {
                        let result = match call.send().promise.await {
                            Ok(r) => r
                                .get()
                                .and_then(|r| r.get_data())
                                .map(|d| d.to_vec())
                                .map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        };
                        let _ = reply.send(result);
                    });
                }
                Request::Close(done) => {
                    // Calls on one capability are delivered in order: once the
                    // writes sent are answered, every earlier write has been
                    // done (a console that is gone answers at once).
                    while !in_flight.writes.is_empty() {
                        in_flight.settle_one(&broken).await;
                    }
                    let _ = console.flush_request().send().promise.await;
                    let _ = done.send(());
                    break;
                }
            }
        }
    }
}

/// Ends a pump once every write queued before the call has reached the console.
#[derive(Clone)]
pub struct Flusher(flume::Sender<Request>);

impl Flusher {
    /// Flushes, then ends the pump: the process is over.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.0.send_async(Request::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// As wasmtime reports a process's streams: a terminal, or a pipe (unknown).
fn stream_type(tty: bool) -> FileType {
    if tty {
        FileType::CharacterDevice
    } else {
        FileType::Unknown
    }
}

fn broken_pipe() -> Error {
    std::io::Error::from(std::io::ErrorKind::BrokenPipe).into()
}

struct ConsoleOut {
    tx: flume::Sender<Request>,
    stream: u8,
    tty: bool,
    broken: Arc<[AtomicBool; 3]>,
}

#[async_trait::async_trait]
impl WasiFile for ConsoleOut {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(stream_type(self.tty))
    }

    fn isatty(&self) -> bool {
        self.tty
    }

    async fn write_vectored<'a>(&self, bufs: &[IoSlice<'a>]) -> Result<u64, Error> {
        let mut data = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            data.extend_from_slice(b);
        }
        let n = data.len() as u64;
        if self.broken[usize::from(self.stream) % 3].load(Ordering::SeqCst) {
            return Err(broken_pipe());
        }
        if n > 0 {
            self.tx
                .send(Request::Write {
                    stream: self.stream,
                    data,
                })
                .map_err(|_| broken_pipe())?;
        }
        Ok(n)
    }

    async fn writable(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn write_vectored_at<'a>(
        &self,
        _bufs: &[IoSlice<'a>],
        _offset: u64,
    ) -> Result<u64, Error> {
        Err(Error::seek_pipe())
    }

    async fn seek(&self, _pos: std::io::SeekFrom) -> Result<u64, Error> {
        Err(Error::seek_pipe())
    }

    async fn peek(&self, _buf: &mut [u8]) -> Result<u64, Error> {
        Err(Error::seek_pipe())
    }
}

type Answer = flume::Receiver<Result<Vec<u8>, String>>;

/// Whether `file` is a session's console input, which a body may read ahead
/// of what its program asks, since what it did not use can be given back
/// ([`unread`]).
pub(crate) fn reads_ahead(file: &dyn WasiFile) -> bool {
    file.as_any().is::<ConsoleIn>()
}

/// Gives back to a console input bytes a body read ahead and its program
/// did not use (the body is moving, or ends): the next reads take them
/// first, in order. Nothing if `file` is not a console input.
pub(crate) fn unread(file: &dyn WasiFile, data: &[u8]) {
    if let Some(input) = file.as_any().downcast_ref::<ConsoleIn>() {
        let mut leftover = input.leftover.lock().unwrap_or_else(|p| p.into_inner());
        for b in data.iter().rev() {
            leftover.push_front(*b);
        }
    }
}

/// A session's console input, as the deputy's descriptor 0 (its state is
/// shared with the deputy's wait for it, [`ssi_deputy::InputWait`]).
struct ConsoleIn(Arc<InputState>);

impl std::ops::Deref for ConsoleIn {
    type Target = InputState;

    fn deref(&self) -> &InputState {
        &self.0
    }
}

pub(crate) struct InputState {
    tx: flume::Sender<Request>,
    tty: bool,
    interrupted: flume::Receiver<()>,
    ending: Arc<AtomicBool>,
    /// The console's answer to an ask not yet taken (the wait for it was
    /// cut short, or ended at a poll's deadline): the next wait's.
    pending: Mutex<Option<Answer>>,
    /// Bytes of an answer larger than the read that took it.
    leftover: Mutex<VecDeque<u8>>,
    /// A poll saw the input at its end: the next read returns 0 (once).
    at_end: AtomicBool,
}

impl InputState {
    /// Asks the console for input: as much as it has, up to `MAX_READ`.
    /// What the program does not take now is its next reads' (a program
    /// reading a byte at a time makes one call to the console per
    /// `MAX_READ` bytes, not one per byte). `None` once the pump is gone.
    fn ask(&self) -> Option<Answer> {
        let (reply, answer) = flume::bounded(1);
        self.tx
            .send(Request::Read {
                max: MAX_READ as u32,
                reply,
            })
            .ok()?;
        Some(answer)
    }
}

/// How a wait for console input ended ([`InputState::wait_input`]).
enum Waited {
    /// Bytes are kept (`leftover`), or the input is at its end (`at_end`).
    Ready,
    /// The deadline came first.
    Late,
    /// Cut short (a freeze, a signal, the end): the answer, when it comes,
    /// is the next wait's.
    Cut,
    /// The pump is gone: the console cannot be asked.
    Gone,
    /// The console answered with a failure.
    Failed(Error),
}

impl InputState {
    /// Waits until input is kept here or the input is at its end, asking
    /// the console if nothing is (or taking the answer to an earlier ask),
    /// until `deadline`. What comes is kept for the reads: a read waits
    /// here without a deadline, a poll with its own.
    fn wait_input(&self, deadline: Option<std::time::Instant>) -> Waited {
        if self.ending.load(Ordering::SeqCst) {
            return Waited::Cut;
        }
        if self.at_end.load(Ordering::SeqCst)
            || !self
                .leftover
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        {
            return Waited::Ready;
        }
        // Interruptions meant for an earlier wait are stale.
        while self.interrupted.try_recv().is_ok() {}
        let answer = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match &*pending {
                Some(answer) => answer.clone(),
                None => {
                    let Some(answer) = self.ask() else {
                        return Waited::Gone;
                    };
                    *pending = Some(answer.clone());
                    answer
                }
            }
        };
        let selector = flume::Selector::new()
            .recv(&answer, Some)
            .recv(&self.interrupted, |_| None);
        let got = match deadline {
            Some(at) => match selector.wait_deadline(at) {
                Ok(got) => got,
                Err(_) => return Waited::Late,
            },
            None => selector.wait(),
        };
        let Some(got) = got else {
            return Waited::Cut;
        };
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = None;
        match got {
            Ok(Ok(data)) if data.is_empty() => self.at_end.store(true, Ordering::SeqCst),
            Ok(Ok(data)) => self
                .leftover
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(data),
            Ok(Err(e)) => return Waited::Failed(Error::from(std::io::Error::other(e))),
            Err(_) => return Waited::Failed(broken_pipe()),
        }
        Waited::Ready
    }
}

impl ssi_deputy::InputWait for InputState {
    fn wait_readable(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<bool, ssi_deputy::Errno> {
        use ssi_deputy::Errno;
        match self.wait_input(deadline) {
            // A failure is the read's to say: the input counts as readable.
            Waited::Ready | Waited::Failed(_) => Ok(true),
            Waited::Late => Ok(false),
            Waited::Cut => Err(Errno::Intr),
            Waited::Gone => Err(Errno::Pipe),
        }
    }
}

/// `EINTR` (an OS error code, so that the guest sees `intr`, not `io`).
fn interrupted() -> Error {
    std::io::Error::from_raw_os_error(libc::EINTR).into()
}

#[async_trait::async_trait]
impl WasiFile for ConsoleIn {
    fn as_any(&self) -> &dyn Any {
        self
    }

    async fn get_filetype(&self) -> Result<FileType, Error> {
        Ok(stream_type(self.tty))
    }

    fn isatty(&self) -> bool {
        self.tty
    }

    async fn read_vectored<'a>(&self, bufs: &mut [IoSliceMut<'a>]) -> Result<u64, Error> {
        let Some(buf) = bufs.iter_mut().find(|b| !b.is_empty()) else {
            return Ok(0);
        };
        let max = buf.len().min(MAX_READ);
        match self.wait_input(None) {
            Waited::Ready => {}
            // (No deadline: `Late` does not happen.)
            Waited::Cut | Waited::Late => return Err(interrupted()),
            Waited::Gone => return Err(broken_pipe()),
            Waited::Failed(e) => return Err(e),
        }
        let mut leftover = self.leftover.lock().unwrap_or_else(|p| p.into_inner());
        if leftover.is_empty() {
            // At its end.
            self.at_end.store(false, Ordering::SeqCst);
            return Ok(0);
        }
        let n = leftover.len().min(max);
        for (to, from) in buf[..n].iter_mut().zip(leftover.drain(..n)) {
            *to = from;
        }
        Ok(n as u64)
    }

    fn num_ready_bytes(&self) -> Result<u64, Error> {
        Ok(self
            .leftover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len() as u64)
    }

    async fn readable(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn read_vectored_at<'a>(
        &self,
        _bufs: &mut [IoSliceMut<'a>],
        _offset: u64,
    ) -> Result<u64, Error> {
        Err(Error::seek_pipe())
    }

    async fn seek(&self, _pos: std::io::SeekFrom) -> Result<u64, Error> {
        Err(Error::seek_pipe())
    }

    async fn peek(&self, _buf: &mut [u8]) -> Result<u64, Error> {
        Err(Error::seek_pipe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What a console was given: (stream, bytes) per write.
    type Written = Rc<RefCell<Vec<(u8, Vec<u8>)>>>;

    /// A console that records what it is given; its reads never answer.
    /// Writes to `closed` fail, as to a pipe whose reader is gone.
    #[derive(Default)]
    struct Recorder {
        writes: Written,
        closed: Option<u8>,
    }

    impl console::Server for Recorder {
        fn read(
            self: capnp::capability::Rc<Self>,
            _: console::ReadParams,
            _: console::ReadResults,
        ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
            futures::future::pending()
        }

        fn write(
            self: capnp::capability::Rc<Self>,
            params: console::WriteParams,
            _: console::WriteResults,
        ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
            let r = (|| {
                let p = params.get()?;
                if Some(p.get_stream()) == self.closed {
                    return Err(capnp::Error::failed("writing output: Broken pipe".into()));
                }
                self.writes
                    .borrow_mut()
                    .push((p.get_stream(), p.get_data()?.to_vec()));
                Ok(())
            })();
            std::future::ready(r)
        }
    }

    fn stream(writes: &[(u8, Vec<u8>)], which: u8) -> String {
        writes
            .iter()
            .filter(|(s, _)| *s == which)
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .collect()
    }

    #[test]
    fn writes_reach_the_console_in_order_before_close_returns() {
        let rt = crate::thread_runtime().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let writes = Rc::new(RefCell::new(Vec::new()));
            let console: console::Client = capnp_rpc::new_client(Recorder {
                writes: writes.clone(),
                ..Default::default()
            });
            let (stdio, pump) = console_stdio(Ttys::default());
            let flusher = pump.flusher();
            let pumping = tokio::task::spawn_local(pump.run(console));
            // The deputy writes from its own thread, far more than the queue holds.
            let (done, finished) = oneshot::channel();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let file = if i % 10 == 9 {
                        &stdio.stderr
                    } else {
                        &stdio.stdout
                    };
                    let text = format!("{i};");
                    let n = futures::executor::block_on(
                        file.write_vectored(&[IoSlice::new(text.as_bytes())]),
                    )
                    .expect("write");
                    assert_eq!(n as usize, text.len());
                }
                let _ = done.send(stdio);
            });
            let stdio = finished.await.expect("writer");
            flusher.close().await;
            pumping.await.expect("pump");
            let writes = writes.borrow();
            let out: String = (0..1000)
                .filter(|i| i % 10 != 9)
                .map(|i| format!("{i};"))
                .collect();
            let err: String = (0..1000)
                .filter(|i| i % 10 == 9)
                .map(|i| format!("{i};"))
                .collect();
            assert_eq!(stream(&writes, 1), out);
            assert_eq!(stream(&writes, 2), err);
            assert!(writes.len() <= 1000);
            // After close the console is let go: writes fail as on a closed pipe.
            let late =
                futures::executor::block_on(stdio.stdout.write_vectored(&[IoSlice::new(b"x")]));
            assert!(late.is_err());
        });
    }

    #[test]
    fn a_stream_the_console_cannot_write_fails_alone() {
        let rt = crate::thread_runtime().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let writes = Rc::new(RefCell::new(Vec::new()));
            let console: console::Client = capnp_rpc::new_client(Recorder {
                writes: writes.clone(),
                closed: Some(1),
            });
            let (stdio, pump) = console_stdio(Ttys::default());
            let flusher = pump.flusher();
            let pumping = tokio::task::spawn_local(pump.run(console));
            let (done, finished) = oneshot::channel();
            std::thread::spawn(move || {
                let write = |file: &dyn WasiFile, text: &str| {
                    futures::executor::block_on(
                        file.write_vectored(&[IoSlice::new(text.as_bytes())]),
                    )
                };
                // The program writes stdout until a write fails (the pump
                // learns of it from the console's answer, a moment later)…
                let mut tries = 0;
                while write(stdio.stdout.as_ref(), "line\n").is_ok() {
                    tries += 1;
                    assert!(tries < 1_000_000, "stdout never failed");
                    std::thread::yield_now();
                }
                // …then says so on stderr, which still reaches the console.
                let n = write(stdio.stderr.as_ref(), "stdout failed\n").expect("stderr");
                let _ = done.send((n, stdio));
            });
            let (n, _stdio) = finished.await.expect("writer");
            assert_eq!(n, 14);
            flusher.close().await;
            pumping.await.expect("pump");
            let writes = writes.borrow();
            assert_eq!(stream(&writes, 2), "stdout failed\n");
            assert_eq!(stream(&writes, 1), "");
        });
    }

    #[test]
    fn a_read_waiting_for_the_console_is_interrupted() {
        let rt = crate::thread_runtime().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let console: console::Client = capnp_rpc::new_client(Recorder::default());
            let (stdio, pump) = console_stdio(Ttys::default());
            let interrupter = pump.interrupter();
            tokio::task::spawn_local(pump.run(console));
            let (done, finished) = oneshot::channel();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                let r = futures::executor::block_on(
                    stdio.stdin.read_vectored(&mut [IoSliceMut::new(&mut buf)]),
                );
                let _ = done.send(r.map_err(|e| e.to_string()));
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            interrupter.interrupt();
            let r = finished.await.expect("reader");
            assert!(r.is_err(), "{r:?}");
        });
    }
}
