//! One way to wait: every child process, its output, and every state a test
//! polls for, with a deadline ([`WAIT`]); a wait that times out fails naming
//! what it waited for, with the logs of the nodes the test started.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long a test waits, at most, for anything a process does: a line, its
/// end, an answer. Far above what any of them takes on a loaded two-core
/// machine; a wait that reaches it is a hang, and fails saying what it
/// waited for, with the nodes' logs.
pub const WAIT: Duration = Duration::from_secs(60);

std::thread_local! {
    /// The log files of the clusters this test thread runs, for failures.
    static LOGS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The logs of the nodes this test runs, to add to a failure's message.
pub fn nodes_logs() -> String {
    LOGS.with(|l| {
        l.borrow()
            .iter()
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    })
}

/// Fails the test: `what` was not seen within `limit`.
#[track_caller]
fn hung(what: &str, limit: Duration, seen: &str) -> ! {
    let logs = nodes_logs();
    panic!(
        "timed out after {limit:?} waiting for {what}{}{}",
        if seen.is_empty() {
            String::new()
        } else {
            format!("\n{seen}")
        },
        if logs.is_empty() {
            String::new()
        } else {
            format!("\nthe nodes' logs:\n{logs}")
        }
    )
}

/// A stream of a child process, read on a thread of its own as it comes, so
/// that every read has a deadline.
pub struct Stream {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Read, not yet taken.
    buf: Vec<u8>,
    /// Everything read so far (for failure messages).
    all: Vec<u8>,
    closed: bool,
}

impl Stream {
    pub fn of(mut source: impl std::io::Read + Send + 'static) -> Stream {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match source.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Stream {
            rx,
            buf: Vec::new(),
            all: Vec::new(),
            closed: false,
        }
    }

    /// Waits until `deadline` for more bytes; false at the end of the stream.
    fn more(&mut self, deadline: std::time::Instant) -> Result<bool, ()> {
        if self.closed {
            return Ok(false);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(bytes) => {
                self.all.extend_from_slice(&bytes);
                self.buf.extend_from_slice(&bytes);
                Ok(true)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                self.closed = true;
                Ok(false)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(()),
        }
    }

    /// The next line (without its newline), within `limit`; `None` at the
    /// end of the stream.
    #[track_caller]
    pub fn line_within(&mut self, limit: Duration, what: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            match self.more(deadline) {
                Ok(true) => {}
                Ok(false) if self.buf.is_empty() => return None,
                Ok(false) => {
                    let line = std::mem::take(&mut self.buf);
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                Err(()) => hung(what, limit, &format!("read so far: {:?}", self.text())),
            }
        }
    }

    /// The next line, within [`WAIT`]; the stream must not end first.
    #[track_caller]
    pub fn line(&mut self, what: &str) -> String {
        match self.line_within(WAIT, what) {
            Some(l) => l,
            None => panic!(
                "the stream ended while waiting for {what}; read: {:?}{}",
                self.text(),
                nodes_logs()
            ),
        }
    }

    /// Lines until one for which `found` holds, within [`WAIT`] in all.
    #[track_caller]
    pub fn until(&mut self, what: &str, found: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.line_within(left, what) {
                Some(l) if found(&l) => return l,
                Some(_) => {}
                None => panic!(
                    "the stream ended while waiting for {what}; read: {:?}{}",
                    self.text(),
                    nodes_logs()
                ),
            }
        }
    }

    /// Waits until `text` has come, whether or not a line ends after it, and
    /// takes what came up to its end; within [`WAIT`].
    #[track_caller]
    pub fn through(&mut self, text: &str, what: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        let needle = text.as_bytes();
        loop {
            if let Some(i) = self.buf.windows(needle.len()).position(|w| w == needle) {
                let taken: Vec<u8> = self.buf.drain(..i + needle.len()).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            match self.more(deadline) {
                Ok(true) => {}
                Ok(false) => panic!(
                    "the stream ended while waiting for {what}; read: {:?}{}",
                    self.text(),
                    nodes_logs()
                ),
                Err(()) => hung(what, WAIT, &format!("read so far: {:?}", self.text())),
            }
        }
    }

    /// What is left, up to the end of the stream, within `limit`.
    #[track_caller]
    pub fn rest_within(&mut self, limit: Duration, what: &str) -> Vec<u8> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.more(deadline) {
                Ok(true) => {}
                Ok(false) => return std::mem::take(&mut self.buf),
                Err(()) => hung(what, limit, &format!("read so far: {:?}", self.text())),
            }
        }
    }

    /// Everything read from the stream so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.all).into_owned()
    }
}

/// A child process under watch: its stdout and stderr (when piped) read as
/// they come, and every wait on it bounded. Dropped, it is killed.
pub struct Proc {
    child: std::process::Child,
    what: String,
    pub out: Stream,
    pub err: Stream,
}

impl Proc {
    /// Starts `cmd` with its stdout and stderr piped (stdin as `cmd` has it);
    /// `what` names it in failures.
    #[track_caller]
    pub fn spawn(cmd: &mut Command, what: &str) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let out = Stream::of(child.stdout.take().expect("stdout is piped"));
        let err = Stream::of(child.stderr.take().expect("stderr is piped"));
        Proc {
            child,
            what: what.to_string(),
            out,
            err,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its standard input, if piped (taken: dropping it closes it).
    pub fn stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().expect("stdin is piped")
    }

    /// The next line of its stdout, within [`WAIT`].
    #[track_caller]
    pub fn line(&mut self, what: &str) -> String {
        let what = format!("{what} from {}", self.what);
        self.out.line(&what)
    }

    /// Whether it has ended, without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for its end, within `limit`, and reads the rest of its output.
    #[track_caller]
    pub fn wait_within(&mut self, limit: Duration) -> Output {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                hung(
                    &format!("{} to end", self.what),
                    limit,
                    &format!(
                        "its stdout: {:?}\nits stderr: {:?}",
                        self.out.text(),
                        self.err.text()
                    ),
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_secs(5));
        let what = format!("the output of {}", self.what);
        let stdout = self.out.rest_within(left, &what);
        let stderr = self.err.rest_within(left, &what);
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Waits for its end, within [`WAIT`].
    #[track_caller]
    pub fn wait(&mut self) -> Output {
        self.wait_within(WAIT)
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// Runs `cmd` to its end (its stdin as `cmd` has it, else none) and returns
/// its output, within [`WAIT`].
#[track_caller]
pub fn run(cmd: &mut Command, what: &str) -> Output {
    Proc::spawn(cmd, what).wait()
}

/// Waits until `ok` holds, checking every 20 ms, at most `limit`; `what`
/// names the state in the failure.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !ok() {
        if std::time::Instant::now() >= deadline {
            hung(what, limit, "");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds node logs to what this test thread's failures show.
pub(crate) fn watch_logs(paths: impl IntoIterator<Item = PathBuf>) {
    LOGS.with(|l| l.borrow_mut().extend(paths));
}

/// Takes the logs under `dir` out of what failures show.
pub(crate) fn forget_logs(dir: &std::path::Path) {
    LOGS.with(|l| l.borrow_mut().retain(|p| !p.starts_with(dir)));
}
