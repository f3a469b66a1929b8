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
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

mod binaries;
mod cluster;
pub mod corpus;
mod moves;
mod wait;

pub use binaries::{bin, bin_dir, repo_root, shell_status, ssirun};
pub use cluster::{Cluster, free_port};
pub use moves::{BRISK, migrate_or_explain, move_until_it_ends, try_migrate, try_migrate_within};
pub use wait::{Proc, Stream, WAIT, nodes_logs, run, wait_until};

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
        let status = build_wasip1(&repo_root().join("guests/rust/Cargo.toml"), &target, None);
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
                let include = repo_root().join("guests/ssi");
                build_c(&src, &wasm, &["-Wall".as_ref(), "-I".as_ref(), include.as_os_str()]);
            }
        }
        out
    })
}

/// Builds the Rust package of `manifest` for `wasm32-wasip1`, in release
/// mode, into `target` (its modules in `wasm32-wasip1/release`); `rustflags`
/// for the compiler, none of this process's.
pub fn build_wasip1(
    manifest: &Path,
    target: &Path,
    rustflags: Option<&str>,
) -> std::process::ExitStatus {
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(flags) = rustflags {
        cargo.env("RUSTFLAGS", flags);
    }
    cargo
        .status()
        .unwrap_or_else(|e| panic!("run cargo to build {}: {e}", manifest.display()))
}

/// Compiles the C program `src` for `wasm32-wasi` with clang and wasi-libc
/// (`-O2` and `flags`) into `wasm`, put in place whole (test processes run
/// side by side).
pub fn build_c(src: &Path, wasm: &Path, flags: &[&std::ffi::OsStr]) {
    let mut partial = wasm.as_os_str().to_owned();
    partial.push(format!(".{}", std::process::id()));
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2"])
        .args(flags)
        .arg("-o")
        .arg(&partial)
        .arg(src)
        .status()
        .expect("run clang (install clang, lld and wasi-libc; tests/run does)");
    assert!(status.success(), "compiling {} failed", src.display());
    std::fs::rename(&partial, wasm)
        .unwrap_or_else(|e| panic!("put {} in place: {e}", wasm.display()));
}

/// Whether `file` exists and was modified after every one of `sources`.
fn is_newer_than(file: &Path, sources: &[&Path]) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match modified(file) {
        Some(t) => sources.iter().all(|s| modified(s).is_some_and(|s| s < t)),
        None => false,
    }
}

/// Writes `started.wat` into `dir`: a module the instrumentation cannot
/// handle (it has a start function, which a restore would run again), so
/// it runs but can never be frozen or moved. Its start function prints
/// `started`; `_start` loops without calls for ever. Its path.
pub fn unfreezable_module(dir: &Path) -> PathBuf {
    let module = dir.join("started.wat");
    std::fs::write(
        &module,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "started\n")
            (func $init
                (i32.store (i32.const 0) (i32.const 100))
                (i32.store (i32.const 4) (i32.const 8))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            (start $init)
            (func (export "_start") (loop $l (br $l))))"#,
    )
    .expect("write the module");
    module
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
    /// Host directories preopened as they are (inputs, not compared).
    pub dirs: Vec<(PathBuf, String)>,
    /// How long `ssirun` may take (None: [`WAIT`]).
    pub limit: Option<std::time::Duration>,
    /// The compiled-code cache `ssirun` uses (None: the user's).
    pub cache_dir: Option<PathBuf>,
    /// As `-W max-wasm-stack`, given to both runners (None: their default).
    pub max_wasm_stack: Option<usize>,
}

impl Case {
    pub fn new(guest: PathBuf) -> Self {
        Case {
            guest,
            guest_dir: "/sandbox".into(),
            ..Default::default()
        }
    }
    /// Adds arguments (after those given before).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
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
    /// Lets `ssirun` take up to `limit` (a large module compiles first).
    pub fn within(mut self, limit: std::time::Duration) -> Self {
        self.limit = Some(limit);
        self
    }
    /// Has `ssirun` keep compiled code in `dir` (`SSI_CACHE_DIR`).
    pub fn cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = Some(dir.to_path_buf());
        self
    }
    /// Gives the program `bytes` of Wasm stack, as `-W max-wasm-stack` does,
    /// under both runners.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = Some(bytes);
        self
    }
    /// Preopens host directory `host` as `guest` too.
    pub fn dir(mut self, host: &Path, guest: &str) -> Self {
        self.dirs.push((host.to_path_buf(), guest.into()));
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
        let mut cmd = ssirun();
        cmd.args(options);
        if let Some(bytes) = self.max_wasm_stack {
            cmd.arg("-W").arg(format!("max-wasm-stack={bytes}"));
        }
        if let Some(dir) = &sandbox {
            cmd.arg("--dir")
                .arg(format!("{}::{}", dir.path().display(), self.guest_dir));
        }
        for (host, guest) in &self.dirs {
            cmd.arg("--dir").arg(format!("{}::{guest}", host.display()));
        }
        for (k, v) in &self.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(&self.guest).args(&self.args);
        if let Some(dir) = &self.cache_dir {
            cmd.env("SSI_CACHE_DIR", dir);
        }
        cmd.env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::piped());
        let mut child = Proc::spawn(&mut cmd, "ssirun");
        let mut stdin = child.stdin();
        let data = self.stdin.clone();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_within(self.limit.unwrap_or(WAIT));
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

    /// Runs the case through node `home` of `cluster` with its body on node
    /// `node`, on a thread of its own, whose result is the outcome and tree.
    pub fn spawn_through(
        self,
        cluster: &Cluster,
        home: usize,
        node: usize,
    ) -> std::thread::JoinHandle<(Outcome, Tree)> {
        let options = [
            "--connect".to_string(),
            cluster.socket(home).display().to_string(),
            "--node".into(),
            node.to_string(),
        ];
        std::thread::spawn(move || {
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            self.run_ssirun_with(&options)
        })
    }

    /// Runs the case through the reference: wasmtime + wasmtime-wasi's preview1.
    pub fn run_reference(&self) -> (Outcome, Tree) {
        let Some(bytes) = self.max_wasm_stack else {
            return self.run_reference_here();
        };
        // On a thread with room for the stack asked for.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(bytes + (4 << 20))
                .spawn_scoped(scope, || self.run_reference_here())
                .expect("reference: a thread")
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn run_reference_here(&self) -> (Outcome, Tree) {
        let sandbox = self.make_sandbox();
        let engine = reference_engine(self.max_wasm_stack);
        let module = reference_module(&engine, &self.guest);
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
        for (host, guest) in &self.dirs {
            builder
                .preopened_dir(host, guest, FsPerms::ReadWrite)
                .expect("reference: preopen");
        }
        let ctx = builder.build_p1();
        let mut linker: Linker<wasmtime_wasi::p1::WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |c| c).expect("reference: linker");
        let mut store = Store::new(&engine, ctx);
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

/// The reference's engine, with `max_wasm_stack` bytes of Wasm stack if
/// given: one per size, made once.
fn reference_engine(max_wasm_stack: Option<usize>) -> Engine {
    static ENGINES: OnceLock<std::sync::Mutex<BTreeMap<Option<usize>, Engine>>> = OnceLock::new();
    let mut engines = ENGINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    engines
        .entry(max_wasm_stack)
        .or_insert_with(|| {
            let mut config = wasmtime::Config::new();
            // As `wasmtime run` takes them.
            config.wasm_exceptions(true);
            if let Some(bytes) = max_wasm_stack {
                config
                    .max_wasm_stack(bytes)
                    .async_stack_size(bytes + (1 << 20));
            }
            Engine::new(&config).expect("reference: engine")
        })
        .clone()
}

/// The reference's compiled module, kept in the corpus cache for large
/// modules (a compile of the largest takes half a minute).
fn reference_module(engine: &Engine, path: &Path) -> Module {
    let bytes = std::fs::read(path).expect("reference: read the module");
    if bytes.len() < (1 << 20) {
        return Module::new(engine, &bytes).expect("reference: compile");
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let dir = corpus::corpus_dir().join("reference");
    let cached = dir.join(format!("{digest}-{:016x}.cwasm", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }));
    // SAFETY: written by `Module::serialize` of an engine with the same
    // compatibility hash; wasmtime checks its header.
    if let Ok(module) = unsafe { Module::deserialize_file(engine, &cached) } {
        return module;
    }
    let module = Module::new(engine, &bytes).expect("reference: compile");
    if let Ok(data) = module.serialize() {
        let _ = std::fs::create_dir_all(&dir);
        let partial = cached.with_extension(format!("partial.{}", std::process::id()));
        if std::fs::write(&partial, data).is_ok() {
            let _ = std::fs::rename(&partial, &cached);
        }
    }
    module
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
