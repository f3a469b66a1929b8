//! ssi-tests: the harness of ssi's end-to-end tests.
//!
//! It builds the guests in `guests/` (Rust for `wasm32-wasip1`, C with clang and
//! wasi-libc), runs them through the real `ssirun` binary, and runs them through a
//! reference: wasmtime with `wasmtime-wasi`'s own preview1 implementation, in this
//! process. Both get the same arguments, environment, stdin and a fresh copy of
//! the same directory, so their outputs, statuses and resulting trees can be compared.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

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

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding the workspace's binaries (next to the test executable).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// The path of a workspace binary, which must have been built first.
/// A command's status as a shell reports it (`$?`): its exit code, or
/// 128 + the number of the signal that ended it.
pub fn shell_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|n| 128 + n))
        .unwrap_or(-1)
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --release --bins`; tests/run does)",
        path.display()
    );
    path
}

/// The guests are built inside this checkout (`target/guests`), whatever
/// `CARGO_TARGET_DIR` says: a target directory shared by several checkouts
/// (a CI cache) must not hand one checkout another's guests.
fn guests_target() -> PathBuf {
    repo_root().join("target/guests")
}

/// Builds every guest once per test process and returns the directory of the `.wasm` files.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = guests_target();
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1"])
            .arg("--manifest-path")
            .arg(repo_root().join("guests/rust/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("run cargo to build the guests");
        assert!(
            status.success(),
            "building the Rust guests failed (is the wasm32-wasip1 target installed? `rustup target add wasm32-wasip1`)"
        );
        let out = target.join("wasm32-wasip1/release");
        let c_src = repo_root().join("guests/c");
        for entry in std::fs::read_dir(&c_src).expect("guests/c") {
            let src = entry.expect("entry").path();
            if src.extension().is_some_and(|e| e == "c") {
                let stem = src.file_stem().expect("stem").to_string_lossy().into_owned();
                let wasm = out.join(format!("{stem}.wasm"));
                // Test processes run side by side: one that finds the module
                // up to date leaves it, and a new one is put in place whole.
                let header = repo_root().join("guests/ssi/ssi.h");
                if is_newer_than(&wasm, &[&src, &header]) {
                    continue;
                }
                let partial = out.join(format!("{stem}.wasm.{}", std::process::id()));
                let status = Command::new("clang")
                    .args(["--target=wasm32-wasi", "-O2", "-Wall"])
                    .arg("-I")
                    .arg(repo_root().join("guests/ssi"))
                    .arg("-o")
                    .arg(&partial)
                    .arg(&src)
                    .status()
                    .expect("run clang (install clang, lld and wasi-libc; tests/run does)");
                assert!(status.success(), "compiling {} failed", src.display());
                std::fs::rename(&partial, &wasm).expect("put the C guest in place");
            }
        }
        out
    })
}

/// Whether `file` exists and was modified after every one of `sources`.
fn is_newer_than(file: &Path, sources: &[&Path]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match modified(file) {
        Some(t) => sources.iter().all(|s| modified(s).is_some_and(|s| s < t)),
        None => false,
    }
}

/// The path of a built guest, by name (`hello`, `cfiles`, …).
pub fn guest(name: &str) -> PathBuf {
    let p = guests_dir().join(format!("{name}.wasm"));
    assert!(p.exists(), "no guest named {name}");
    p
}

/// One run of a program, by either runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// What to run and with what.
#[derive(Debug, Clone, Default)]
pub struct Case {
    pub guest: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// Files to place in a fresh directory preopened as `/sandbox` (None: no preopen).
    pub sandbox: Option<BTreeMap<String, Vec<u8>>>,
    pub guest_dir: String,
}

impl Case {
    pub fn new(guest: PathBuf) -> Self {
        Case {
            guest,
            guest_dir: "/sandbox".into(),
            ..Default::default()
        }
    }
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = data.to_vec();
        self
    }
    pub fn sandbox(mut self, files: &[(&str, &[u8])]) -> Self {
        self.sandbox = Some(
            files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        );
        self
    }
    pub fn mount_at(mut self, guest_dir: &str) -> Self {
        self.guest_dir = guest_dir.into();
        self
    }

    fn make_sandbox(&self) -> Option<tempfile::TempDir> {
        let files = self.sandbox.as_ref()?;
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, data) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, data).expect("write sandbox file");
        }
        Some(dir)
    }

    fn argv0(&self) -> String {
        self.guest
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned()
    }

    /// Runs the case through `ssirun`; returns the outcome and the resulting tree.
    pub fn run_ssirun(&self) -> (Outcome, Tree) {
        self.run_ssirun_with(&[])
    }

    /// As [`Case::run_ssirun`], with extra `ssirun` options before the module.
    pub fn run_ssirun_with(&self, options: &[&str]) -> (Outcome, Tree) {
        let sandbox = self.make_sandbox();
        let mut cmd = Command::new(bin("ssirun"));
        cmd.args(options);
        if let Some(dir) = &sandbox {
            cmd.arg("--dir")
                .arg(format!("{}::{}", dir.path().display(), self.guest_dir));
        }
        for (k, v) in &self.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(&self.guest).args(&self.args);
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env_remove("SSI_CONNECT")
            // No node of the developer's is used unless a test asks for one.
            .env("SSI_SOCKET", "/nonexistent/ssi-tests/node.sock")
            .stdin(Stdio::piped());
        let mut child = Proc::spawn(&mut cmd, "ssirun");
        let mut stdin = child.stdin();
        let data = self.stdin.clone();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait();
        feeder.join().expect("stdin feeder");
        let outcome = Outcome {
            status: shell_status(out.status),
            stdout: out.stdout,
            stderr: out.stderr,
        };
        (
            outcome,
            sandbox.map(|d| Tree::of(d.path())).unwrap_or_default(),
        )
    }

    /// Runs the case through the reference: wasmtime + wasmtime-wasi's preview1.
    pub fn run_reference(&self) -> (Outcome, Tree) {
        let sandbox = self.make_sandbox();
        let engine = reference_engine();
        let module = Module::from_file(engine, &self.guest).expect("reference: compile");
        let stdout = MemoryOutputPipe::new(usize::MAX);
        let stderr = MemoryOutputPipe::new(usize::MAX);
        let mut builder = WasiCtxBuilder::new();
        let mut argv = vec![self.argv0()];
        argv.extend(self.args.iter().cloned());
        builder
            .args(&argv)
            .stdin(MemoryInputPipe::new(self.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        for (k, v) in &self.env {
            builder.env(k, v);
        }
        if let Some(dir) = &sandbox {
            builder
                .preopened_dir(dir.path(), &self.guest_dir, FsPerms::ReadWrite)
                .expect("reference: preopen");
        }
        let ctx = builder.build_p1();
        let mut linker: Linker<wasmtime_wasi::p1::WasiP1Ctx> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c).expect("reference: linker");
        let mut store = Store::new(engine, ctx);
        // What `wasmtime run` prints when the program stops with an error.
        let mut report = String::new();
        let status = match linker
            .instantiate(&mut store, &module)
            .and_then(|i| i.get_typed_func::<(), ()>(&mut store, "_start"))
            .and_then(|start| start.call(&mut store, ()))
        {
            Ok(()) => 0,
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    exit.0
                } else {
                    let trap = e.is::<wasmtime::Trap>();
                    report = format!(
                        "Error: {:?}\n",
                        e.context("failed to invoke command default")
                            .context(format!(
                                "failed to run main module `{}`",
                                self.guest.display()
                            ))
                    );
                    if trap { 134 } else { 1 }
                }
            }
        };
        drop(store);
        let mut err = stderr.contents().to_vec();
        err.extend_from_slice(report.as_bytes());
        let outcome = Outcome {
            status,
            stdout: stdout.contents().to_vec(),
            stderr: err,
        };
        (
            outcome,
            sandbox.map(|d| Tree::of(d.path())).unwrap_or_default(),
        )
    }
}

fn reference_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// A directory tree as data: every entry's relative path and what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Node>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

impl Tree {
    pub fn of(root: &Path) -> Tree {
        let mut map = BTreeMap::new();
        walk(root, root, &mut map);
        Tree(map)
    }
}

fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<String, Node>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let ft = entry.file_type().expect("file type");
        if ft.is_symlink() {
            map.insert(
                rel,
                Node::Symlink(std::fs::read_link(&path).expect("readlink")),
            );
        } else if ft.is_dir() {
            map.insert(rel, Node::Dir);
            walk(root, &path, map);
        } else {
            map.insert(rel, Node::File(std::fs::read(&path).expect("read")));
        }
    }
}

/// The cases of the differential test, by name: every guest with its
/// arguments, environment, input and directory.
pub fn standard_cases() -> Vec<(&'static str, Case)> {
    let input: String = (0..500).map(|i| format!("line number {i}\n")).collect();
    vec![
        ("hello", Case::new(guest("hello"))),
        (
            "args_env",
            Case::new(guest("args_env"))
                .args(&["one", "two words", "--exit", "42"])
                .env("GREETING", "hi there")
                .env("EMPTY", ""),
        ),
        ("filter", Case::new(guest("filter")).stdin(input.as_bytes())),
        (
            "fileops",
            Case::new(guest("fileops"))
                .sandbox(&[("input.txt", b"some input\n"), ("nested/keep.txt", b"kept")]),
        ),
        (
            "cfiles",
            Case::new(guest("cfiles")).sandbox(&[("existing", b"x")]),
        ),
        ("clocks", Case::new(guest("clocks"))),
        ("compute", Case::new(guest("compute"))),
        ("bigout", Case::new(guest("bigout")).args(&["8"])),
        (
            "conformance",
            Case::new(guest("conformance"))
                .args(&["x", "y"])
                .env("A", "1")
                .sandbox(&[("input.txt", b"hello conformance\n")])
                .mount_at("/"),
        ),
    ]
}

/// An error report as `wasmtime run` prints it, less what cannot be the same
/// for an instrumented module: the code offsets in its Wasm backtrace (the
/// functions are the same, their code is not), and a host backtrace.
pub fn comparable_report(stderr: &str) -> String {
    let mut out = String::new();
    for line in stderr.lines() {
        if line.starts_with("Stack backtrace:") {
            break;
        }
        // `   12:   0x12c5 - trap.wasm!main` → `   12: trap.wasm!main`
        let line = match line.find(": ").zip(line.find(" - ")) {
            Some((colon, dash)) if line[colon + 2..dash].trim_start().starts_with("0x") => {
                format!("{}: {}", &line[..colon], &line[dash + 3..])
            }
            _ => line.to_string(),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// Asserts that two runs are the same: streams, status and resulting tree.
pub fn assert_same(what: &str, ours: &(Outcome, Tree), reference: &(Outcome, Tree)) {
    assert_eq!(
        ours.0.stdout_text(),
        reference.0.stdout_text(),
        "{what}: stdout differs"
    );
    assert_eq!(
        ours.0.stderr_text(),
        reference.0.stderr_text(),
        "{what}: stderr differs"
    );
    assert_eq!(
        ours.0.status, reference.0.status,
        "{what}: exit status differs"
    );
    assert_eq!(
        ours.1, reference.1,
        "{what}: resulting directory trees differ"
    );
}

/// Real `ssid` daemons on loopback ports, each with its own socket and data
/// directory in a temporary directory. They are killed when this is dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<std::process::Child>>,
    ports: Vec<u16>,
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so that
/// no outgoing connection takes it between this choice and the daemon's bind.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts at its own place in 20000..32000.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1200) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let candidate = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + candidate.wrapping_sub(20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n), each configured with all the others, and
    /// waits until every node sees every other as up.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, |_| Vec::new())
    }

    /// As [`Cluster::start`], with `options(id)` added to node `id`'s
    /// command line (`--cpus 1`, `--balance off`…).
    pub fn start_with(n: usize, options: impl Fn(usize) -> Vec<String>) -> Cluster {
        Self::start_joined(n, |id| (1..=n).filter(|o| *o != id).collect(), options)
    }

    /// Starts `n` nodes where each node but the first knows only node 1, and
    /// waits until they have all learned of each other.
    pub fn start_seeded(n: usize) -> Cluster {
        Self::start_joined(
            n,
            |id| if id == 1 { vec![] } else { vec![1] },
            |_| Vec::new(),
        )
    }

    /// Starts one more node, with `options`, that joins through node 1, and
    /// waits until every node sees every other up; its id.
    pub fn add_node(&mut self, options: &[&str]) -> usize {
        let id = self.ports.len() + 1;
        self.ports.push(free_port());
        LOGS.with(|l| {
            l.borrow_mut()
                .push(self.dir.path().join(format!("ssid{id}.log")))
        });
        let options: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        let child = self.spawn_node(id, &[1], &options);
        self.nodes.push(Some(child));
        for node in 1..=id {
            self.wait_until(node, |nodes| {
                nodes.len() == id && nodes.iter().all(|v| v["state"] == "up")
            });
        }
        id
    }

    fn start_joined(
        n: usize,
        peers_of: impl Fn(usize) -> Vec<usize>,
        options: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        LOGS.with(|l| {
            l.borrow_mut()
                .extend((1..=n).map(|id| dir.path().join(format!("ssid{id}.log"))))
        });
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
            ports,
        };
        for id in 1..=n {
            let child = cluster.spawn_node(id, &peers_of(id), &options(id));
            cluster.nodes.push(Some(child));
        }
        for id in 1..=n {
            cluster.wait_until(id, |nodes| {
                nodes.len() == n && nodes.iter().all(|v| v["state"] == "up")
            });
        }
        cluster
    }

    fn spawn_node(&self, id: usize, peers: &[usize], options: &[String]) -> std::process::Child {
        let mut cmd = Command::new(bin("ssid"));
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.address(id))
            .arg("--socket")
            .arg(self.socket(id))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("data{id}")));
        for other in peers {
            cmd.arg("--peer")
                .arg(format!("{other}={}", self.address(*other)));
        }
        cmd.args(options);
        let log =
            std::fs::File::create(self.dir.path().join(format!("ssid{id}.log"))).expect("log file");
        // A failing test shows the logs: with each process's end in them.
        cmd.env("SSI_LOG", "info,ssi_home=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ssid")
    }

    pub fn address(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1])
    }

    pub fn socket(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.sock"))
    }

    /// The node's pid (of its `ssid` process).
    pub fn daemon_pid(&self, id: usize) -> u32 {
        self.nodes[id - 1].as_ref().expect("node running").id()
    }

    /// Kills a node's daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to a node's daemon (SIGSTOP makes it silent without closing
    /// its connections, as a hung or unreachable machine).
    pub fn signal(&self, id: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.daemon_pid(id).to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// `ssirun` connected to node `home`, its standard streams pipes (the
    /// caller adds the module and its arguments).
    pub fn ssirun(&self, home: usize) -> Command {
        let mut cmd = Command::new(bin("ssirun"));
        cmd.arg("--connect")
            .arg(self.socket(home))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `ssictl` against node `id`.
    #[track_caller]
    pub fn ssictl(&self, id: usize, args: &[&str]) -> std::process::Output {
        run(
            Command::new(bin("ssictl"))
                .arg("--connect")
                .arg(self.socket(id))
                .args(args)
                .stdin(Stdio::null()),
            &format!("`ssictl {}` on node {id}", args.join(" ")),
        )
    }

    /// Waits until `ssictl ps` on node `id` lists a process whose command
    /// `matches` (`what` names it in a failure), and returns its pid.
    #[track_caller]
    pub fn pid_of(&self, id: usize, what: &str, matches: impl Fn(&str) -> bool) -> u64 {
        let mut pid = None;
        wait_until(&format!("{what} to be listed"), WAIT, || {
            pid = self
                .ssictl_json(id, "ps")
                .into_iter()
                .find(|p| p["command"].as_str().is_some_and(&matches))
                .and_then(|p| p["pid"].as_u64());
            pid.is_some()
        });
        pid.expect("a pid")
    }

    /// `ssictl ARGS --json` against node `id`, parsed.
    pub fn ssictl_json(&self, id: usize, what: &str) -> Vec<serde_json::Value> {
        let out = self.ssictl(id, &[what, "--json"]);
        assert!(
            out.status.success(),
            "ssictl {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ssictl prints JSON")
    }

    /// Polls `ssictl nodes --json` on node `id` until `ok` holds (at most 10 s).
    pub fn wait_until(&self, id: usize, ok: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = self.ssictl(id, &["nodes", "--json"]);
            if out.status.success() {
                let nodes: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).expect("JSON");
                if ok(&nodes) {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {id} did not reach the expected state; the logs:\n{}",
                (1..=self.ports.len())
                    .map(|n| format!("--- node {n}\n{}", self.log(n)))
                    .collect::<String>()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A daemon's log so far.
    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("ssid{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let dir = self.dir.path().to_path_buf();
        LOGS.with(|l| l.borrow_mut().retain(|p| !p.starts_with(&dir)));
        for id in 1..=self.nodes.len() {
            // A stopped daemon must be continued to die of SIGKILL's cleanup.
            if self.nodes[id - 1].is_some() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.daemon_pid(id).to_string())
                    .status();
            }
            self.kill(id);
        }
    }
}
