//! `ssirun`: run a WASI program as if it were local.
//!
//! It connects to the local node (`ssid`'s Unix socket, or `--connect`, or
//! `SSI_CONNECT`), which becomes the process's home; its streams are this
//! terminal or these pipes, served to the home as a `Console`. With no node
//! running, the process runs in this process as a one-node cluster (the
//! embedded default): its deputy is here, its body runs here. A program that
//! starts children or handles signals (it imports `ssi` `spawn` or
//! `sigaction`) gets a private node of this process's own instead, for the
//! process table and the signal delivery it needs.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ssi_deputy::{Preopen, Stdio};
use ssi_home::{Endpoint, ExitReport, LaunchSpec, Node, remote_message};
use ssi_remote::{BodySpec, Exit, Runtime};
use ssi_schema::console;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Run a WASI (preview1) program as if it were local: same streams, files and
/// exit status, with its system calls executed by its deputy at home.
#[derive(Parser, Debug)]
#[command(name = "ssirun", version, trailing_var_arg = true)]
struct Args {
    /// Grant access to a host directory: HOST_DIR, or HOST_DIR::GUEST_DIR.
    #[arg(long = "dir", value_name = "HOST_DIR[::GUEST_DIR]")]
    dirs: Vec<String>,
    /// Set an environment variable: NAME=VALUE, or NAME to copy this process's value.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    envs: Vec<String>,
    /// A WASI option, as `wasmtime run -S`: `inherit-env[=y|n]` gives the
    /// program this process's whole environment (`--env` adds to it).
    #[arg(short = 'S', long = "wasi", value_name = "OPT[=VAL]")]
    wasi_options: Vec<String>,
    /// A Wasm option, as `wasmtime run -W`: `unknown-imports-trap[=y|n]` links
    /// a function import nothing provides to one that traps when called
    /// (instead of refusing the module); `max-memory-size=BYTES` bounds each
    /// linear memory of the program (`memory.grow` past it returns -1),
    /// wherever the process moves and in its checkpoints;
    /// `max-wasm-stack=BYTES`, up to 8 MiB: the program recurses at least as
    /// deep as under `wasmtime run` given as much (every body has 16 MiB of
    /// stack wherever it runs).
    #[arg(short = 'W', long = "wasm", value_name = "OPT[=VAL]")]
    wasm_options: Vec<String>,
    /// A compilation option, as `wasmtime run -C`: `cache=n` is --no-cache.
    #[arg(short = 'C', long = "codegen", value_name = "OPT[=VAL]")]
    codegen_options: Vec<String>,
    /// The program's own name, its `argv[0]` (by default the module's file
    /// name), as `wasmtime run --argv0`.
    #[arg(long, value_name = "NAME", conflicts_with = "restore")]
    argv0: Option<String>,
    /// Do not cache compiled code on disk (embedded mode).
    #[arg(long)]
    no_cache: bool,
    /// The node to connect to: a Unix socket path or HOST:PORT (default: the
    /// local node's socket; `SSI_CONNECT` also sets it).
    #[arg(long, value_name = "SOCKET|HOST:PORT")]
    connect: Option<String>,
    /// Start the body on node N (the home stays the node connected to);
    /// without it, the node connected to places it where there is room.
    #[arg(long, value_name = "N")]
    node: Option<u16>,
    /// Keep the process where it starts (at home, or on --node N): the
    /// balancer never moves it (`ssictl unpin` lets it).
    #[arg(long)]
    pin: bool,
    /// Restart a checkpoint (from `ssictl checkpoint` or --checkpoint-every)
    /// instead of starting a module: same pid where it can, files reopened at
    /// their offsets, streams attached to this command.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dirs", "envs", "module"])]
    restore: Option<PathBuf>,
    /// Take a checkpoint every SECONDS (fractions allowed) into --checkpoint-dir.
    #[arg(long, value_name = "SECONDS", requires = "checkpoint_dir")]
    checkpoint_every: Option<f64>,
    /// Where periodic checkpoints go: DIR/PID.ckpt, replaced atomically.
    #[arg(long, value_name = "DIR", requires = "checkpoint_every")]
    checkpoint_dir: Option<PathBuf>,
    /// Compile MODULE's whole instrumented module into the cache and end
    /// (what a run that ended while it compiled leaves to a process of its
    /// own, so that the next launch starts on it).
    #[arg(long, hide = true, conflicts_with_all = ["restore", "connect", "no_cache"])]
    fill_cache: bool,
    /// Run MODULE compiled as it is, not instrumented, on the same engine:
    /// it cannot be frozen (what the instrumentation's cost is measured
    /// against, `ssi-corpus bench`).
    #[arg(long, hide = true, conflicts_with_all = ["restore", "connect", "node", "fill_cache", "checkpoint_every"])]
    as_is: bool,
    /// The WebAssembly module (binary or text) to run.
    #[arg(required_unless_present = "restore")]
    module: Option<PathBuf>,
    /// Arguments passed to the program.
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
    /// An argument of the program's that is not UTF-8 (as shown with `\x`
    /// escapes): refused, as `wasmtime run` refuses it.
    #[arg(skip)]
    not_utf8: Option<String>,
}

/// Parses the command line as `wasmtime run` does: what follows the module
/// is the program's, even what looks like an option of ssirun's (a program's
/// own `--help` or `--version`).
fn parse_args(argv: Vec<std::ffi::OsString>) -> Args {
    let split = module_position(&argv);
    let (ours, program) = match split {
        Some(at) => (argv[..=at].to_vec(), argv[at + 1..].to_vec()),
        None => (argv, Vec::new()),
    };
    let mut args = Args::parse_from(ours);
    for a in &program {
        match a.to_str() {
            Some(a) => args.args.push(a.to_string()),
            None => {
                use std::os::unix::ffi::OsStrExt;
                let shown = a.as_bytes().escape_ascii().to_string();
                args.not_utf8.get_or_insert(shown);
            }
        }
    }
    args
}

/// Where the module is on the command line (`argv[0]` is ssirun): the first
/// argument that is neither an option nor an option's value, or the one
/// after `--`.
fn module_position(argv: &[std::ffi::OsString]) -> Option<usize> {
    use clap::CommandFactory;
    let command = Args::command();
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    let long_with_value = |name: &str| {
        command
            .get_arguments()
            .any(|a| a.get_long() == Some(name) && takes_value(a))
    };
    let short_with_value = |c: char| {
        command
            .get_arguments()
            .any(|a| a.get_short() == Some(c) && takes_value(a))
    };
    let mut i = 1;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy();
        if arg == "--" {
            return (i + 1 < argv.len()).then_some(i + 1);
        } else if let Some(long) = arg.strip_prefix("--") {
            if !long.contains('=') && long_with_value(long) {
                i += 1;
            }
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            // `-S VALUE`, or `-SVALUE` with the value attached.
            let mut chars = short.chars();
            if let Some(c) = chars.next()
                && short_with_value(c)
                && chars.next().is_none()
            {
                i += 1;
            }
        } else {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn parse_dir(spec: &str) -> Result<Preopen> {
    let (host, guest) = match spec.split_once("::") {
        Some((h, g)) => (h, g),
        None => (spec, spec),
    };
    anyhow::ensure!(
        !host.is_empty() && !guest.is_empty(),
        "invalid --dir `{spec}`: expected HOST_DIR[::GUEST_DIR]"
    );
    Ok(Preopen {
        host: PathBuf::from(host),
        guest: guest.to_string(),
    })
}

/// A `y`/`n` value of a `-S` or `-W` option, as wasmtime reads it (no
/// value is yes).
fn yes(option: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("y" | "yes" | "true") => Ok(true),
        Some("n" | "no" | "false") => Ok(false),
        Some(v) => bail!("-{option}: `{v}` is not y or n"),
    }
}

/// What the `-S` and `-W` options of wasmtime's that ssirun takes ask for.
#[derive(Debug, Default, PartialEq)]
struct WasmtimeOptions {
    inherit_env: bool,
    unknown_imports_trap: bool,
    max_memory_size: Option<u64>,
}

/// A size as wasmtime reads one: decimal or `0x` hexadecimal, `_` allowed
/// between digits.
fn size(option: &str, value: Option<&str>) -> Result<u64> {
    let Some(v) = value else {
        bail!("-{option}: a number of bytes is needed (-{option}=BYTES)");
    };
    let digits = v.replace('_', "");
    let parsed = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    };
    parsed.map_err(|e| anyhow::anyhow!("-{option}: `{v}` is not a number of bytes: {e}"))
}

/// Each `NAME[=VALUE]` of options given as wasmtime takes them (repeated,
/// or several to an option separated by commas): the item as given, its
/// name and its value.
fn each_option(given: &[String]) -> impl Iterator<Item = (&str, &str, Option<&str>)> {
    given
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .map(|o| match o.split_once('=') {
            Some((n, v)) => (o, n, Some(v)),
            None => (o, o, None),
        })
}

/// Reads `-S` and `-W`; an option ssirun does not take is an error that
/// names it.
fn wasmtime_options(args: &Args) -> Result<WasmtimeOptions> {
    let mut o = WasmtimeOptions::default();
    for (item, name, value) in each_option(&args.wasi_options) {
        match name {
            "inherit-env" => o.inherit_env = yes(&format!("S {item}"), value)?,
            _ => {
                bail!("-S {item}: ssirun does not take this WASI option (it takes -S inherit-env)")
            }
        }
    }
    for (item, name, value) in each_option(&args.wasm_options) {
        match name {
            "unknown-imports-trap" => {
                o.unknown_imports_trap = yes(&format!("W {item}"), value)?;
            }
            "max-memory-size" => {
                o.max_memory_size = Some(size(&format!("W {item}"), value)?);
            }
            "max-wasm-stack" => {
                let bytes = size(&format!("W {item}"), value)?;
                let most = ssi_remote::MAX_WASM_STACK_OPTION as u64;
                if bytes == 0 || bytes > most {
                    bail!(
                        "-W {item}: ssirun takes a Wasm stack of 1 to {most} bytes (every body has {} MiB of native stack wherever it runs, and instrumented frames are larger than the original's)",
                        ssi_remote::WASM_STACK >> 20
                    );
                }
            }
            _ => bail!(
                "-W {item}: ssirun does not take this Wasm option (it takes -W unknown-imports-trap, -W max-memory-size and -W max-wasm-stack)"
            ),
        }
    }
    Ok(o)
}

/// Reads `-C` (an option ssirun does not take is an error that names it):
/// whether compiled code is cached on disk, with `--no-cache`.
fn caches(args: &Args) -> Result<bool> {
    let mut cache = true;
    for (item, name, value) in each_option(&args.codegen_options) {
        match name {
            "cache" => cache = yes(&format!("C {item}"), value)?,
            _ => {
                bail!("-C {item}: ssirun does not take this compilation option (it takes -C cache)")
            }
        }
    }
    Ok(cache && !args.no_cache)
}

fn parse_env(spec: &str) -> Result<String> {
    match spec.split_once('=') {
        Some((name, _)) if !name.is_empty() => Ok(spec.to_string()),
        Some(_) => anyhow::bail!("invalid --env `{spec}`: the name is empty"),
        None => {
            let value = std::env::var(spec).with_context(|| {
                format!("--env {spec}: `{spec}` is not set in this environment")
            })?;
            Ok(format!("{spec}={value}"))
        }
    }
}

enum Outcome {
    Exited(i32),
    /// The error, formatted as `wasmtime run` prints it, and whether it was a Wasm trap.
    Stopped {
        message: String,
        trap: bool,
    },
    /// The node running the body went down.
    Lost(String),
    /// A signal ended the process.
    Signaled(u8),
    /// It was checkpointed and stopped.
    Checkpointed(u32),
}

/// As `wasmtime run` reports a failed run.
fn stopped(e: ssi_remote::Error, module_name: &str, trap: bool) -> Outcome {
    Outcome::Stopped {
        message: format!(
            "{:?}",
            e.context("failed to invoke command default")
                .context(format!("failed to run main module `{module_name}`"))
        ),
        trap,
    }
}

/// The node to use: the explicit one (which must answer), else the local node's
/// socket if a node is listening there, else none (the embedded default).
fn pick_endpoint(args: &Args) -> Result<Option<Endpoint>> {
    let explicit = args
        .connect
        .clone()
        .or_else(|| std::env::var("SSI_CONNECT").ok().filter(|s| !s.is_empty()));
    if let Some(e) = explicit {
        return Ok(Some(Endpoint::parse(&e)));
    }
    let socket = ssi_home::default_socket();
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => return Ok(Some(Endpoint::Unix(socket))),
        // A socket file nobody answers on: a node that did not stop cleanly.
        // Said once, then the program runs here.
        Err(e) if socket.exists() && args.node.is_none_or(|n| n == EMBEDDED_NODE) => {
            eprintln!(
                "ssirun: nobody answers on {} ({e}): a node that did not stop cleanly left it; running here, without a cluster",
                socket.display()
            );
        }
        Err(_) => {}
    }
    if let Some(n) = args.node.filter(|n| *n != EMBEDDED_NODE) {
        bail!(
            "--node {n}: no node is running here (nothing listens on {}); start `ssid` or use --connect",
            socket.display()
        );
    }
    Ok(None)
}

const EMBEDDED_NODE: u16 = 1;

/// Serves this process's standard streams to the home node.
struct Console;

impl console::Server for Console {
    async fn read(
        self: capnp::capability::Rc<Self>,
        params: console::ReadParams,
        mut results: console::ReadResults,
    ) -> Result<(), capnp::Error> {
        let max = params.get()?.get_max() as usize;
        let data = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; max];
            let n = std::io::stdin().lock().read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .map_err(|e| capnp::Error::failed(e.to_string()))?
        .map_err(|e| capnp::Error::failed(format!("reading standard input: {e}")))?;
        results.get().set_data(&data);
        Ok(())
    }

    fn write(
        self: capnp::capability::Rc<Self>,
        params: console::WriteParams,
        _: console::WriteResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let r = (|| {
            let p = params.get()?;
            let data = p.get_data()?;
            // Flushed at once, as the program's own write would be: a prompt
            // without a newline must show before the program waits for input.
            let written = match p.get_stream() {
                2 => std::io::stderr().lock().write_all(data),
                _ => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(data).and_then(|()| out.flush())
                }
            };
            written.map_err(|e| capnp::Error::failed(format!("writing output: {e}")))
        })();
        std::future::ready(r)
    }

    fn flush(
        self: capnp::capability::Rc<Self>,
        _: console::FlushParams,
        _: console::FlushResults,
    ) -> impl Future<Output = Result<(), capnp::Error>> + 'static {
        let _ = std::io::stdout().lock().flush();
        std::future::ready(Ok(()))
    }
}

/// Catches the signals a terminal or `kill` sends to `ssirun` and queues their
/// numbers, to be sent on to the process. Must run inside a `LocalSet`.
fn catch_signals() -> flume::Receiver<u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = flume::unbounded::<u8>();
    for (kind, number) in [
        (SignalKind::interrupt(), 2u8),
        (SignalKind::quit(), 3),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
        (SignalKind::user_defined1(), 10),
        (SignalKind::user_defined2(), 12),
        // Ctrl-Z, and the shell's `fg`/`bg`: job control.
        (SignalKind::from_raw(libc::SIGTSTP), 20),
        (SignalKind::from_raw(libc::SIGCONT), 18),
    ] {
        let Ok(mut stream) = signal(kind) else {
            continue;
        };
        let tx = tx.clone();
        tokio::task::spawn_local(async move {
            while stream.recv().await.is_some() {
                let _ = tx.send(number);
            }
        });
    }
    rx
}

struct Program {
    bytes: Vec<u8>,
    module_name: String,
    argv: Vec<String>,
    env: Vec<String>,
    preopens: Vec<Preopen>,
    pin: bool,
    unknown_imports_trap: bool,
    max_memory_size: Option<u64>,
}

/// What to start: a module, or a checkpoint to restart.
enum Start {
    Launch(Program),
    Restore { image: Vec<u8>, name: String },
}

/// Periodic checkpoints: how often, and into which directory.
#[derive(Clone)]
struct Periodic {
    every: Duration,
    dir: PathBuf,
}

fn periodic(args: &Args) -> Result<Option<Periodic>> {
    let (Some(every), Some(dir)) = (args.checkpoint_every, &args.checkpoint_dir) else {
        return Ok(None);
    };
    let every = Duration::try_from_secs_f64(every)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| {
            format!("--checkpoint-every {every}: expected a positive number of seconds")
        })?;
    // A directory that does not exist yet is made (as `mkdir -p`); one
    // that is a file is an error that says so.
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--checkpoint-dir {}: cannot create it", dir.display()))?;
    }
    anyhow::ensure!(
        dir.is_dir(),
        "--checkpoint-dir {}: it is a file, not a directory",
        dir.display()
    );
    Ok(Some(Periodic {
        every,
        dir: dir.clone(),
    }))
}

/// Takes a checkpoint of the session's process every period, each replacing
/// the one before; a failure is reported and the next one tried.
async fn checkpoint_periodically(process: ssi_schema::process::Client, pid: u32, p: Periodic) {
    let path = p.dir.join(format!("{pid}.ckpt"));
    loop {
        tokio::time::sleep(p.every).await;
        let taken = async {
            let (file, sink) = ssi_tools::CheckpointFile::create(&path, false)?;
            ssi_home::process_checkpoint(&process, false, sink)
                .await
                .map_err(|e| anyhow::anyhow!("{}", remote_message(&e)))?;
            file.commit()?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = taken.await {
            eprintln!("ssirun: checkpoint of process {pid} failed: {e:#}");
        }
    }
}

fn ttys() -> ssi_home::Ttys {
    ssi_home::Ttys {
        stdin: std::io::stdin().is_terminal(),
        stdout: std::io::stdout().is_terminal(),
        stderr: std::io::stderr().is_terminal(),
    }
}

fn run_on_node(
    endpoint: &Endpoint,
    node: Option<u16>,
    start: Start,
    periodic: Option<Periodic>,
) -> Result<Outcome> {
    let rt = ssi_home::thread_runtime().context("cannot start the client runtime")?;
    let local = tokio::task::LocalSet::new();
    let module_name = match &start {
        Start::Launch(p) => p.module_name.clone(),
        Start::Restore { name, .. } => name.clone(),
    };
    let outcome = local.block_on(&rt, async move {
        // Caught from before the launch, so none is lost (nor kills ssirun).
        let caught = catch_signals();
        let gateway = ssi_home::connect(endpoint).await?;
        let program = match start {
            Start::Launch(program) => program,
            Start::Restore { image, name } => {
                let (process, pid) = match ssi_home::restore_request(
                    &gateway,
                    &image,
                    node.unwrap_or(0),
                    ttys(),
                    capnp_rpc::new_client(Console),
                )
                .await
                {
                    Ok(started) => started,
                    Err(e) => {
                        return Err(anyhow::anyhow!(
                            "`{name}`: {}",
                            remote_message(&e)
                        ));
                    }
                };
                return follow(endpoint, process, pid, caught, periodic).await;
            }
        };
        let mut req = gateway.launch_request();
        {
            let mut p = req.get();
            p.set_console(capnp_rpc::new_client(Console));
            let mut s = p.init_spec();
            s.set_module(&program.bytes);
            s.set_module_name(&program.module_name);
            s.set_command(program.argv.join(" "));
            let mut l = s.reborrow().init_args(program.argv.len() as u32);
            for (i, a) in program.argv.iter().enumerate() {
                l.set(i as u32, a);
            }
            let mut l = s.reborrow().init_env(program.env.len() as u32);
            for (i, a) in program.env.iter().enumerate() {
                l.set(i as u32, a);
            }
            let mut l = s.reborrow().init_preopens(program.preopens.len() as u32);
            for (i, p) in program.preopens.iter().enumerate() {
                // The home resolves directories; it gets absolute paths.
                let host = std::path::absolute(&p.host).unwrap_or_else(|_| p.host.clone());
                let mut e = l.reborrow().get(i as u32);
                e.set_host(host.to_string_lossy());
                e.set_guest(&p.guest);
            }
            s.set_node(node.unwrap_or(0));
            s.set_pin(program.pin);
            s.set_unknown_imports_trap(program.unknown_imports_trap);
            s.set_max_memory_size(ssi_home::memory_limit_wire(program.max_memory_size));
            let ttys = ttys();
            s.set_stdin_tty(ttys.stdin);
            s.set_stdout_tty(ttys.stdout);
            s.set_stderr_tty(ttys.stderr);
        }
        let reply = match req.send().promise.await {
            Ok(reply) => reply,
            // The home went away while launching: the process, if it started,
            // is gone with it.
            Err(e) if ssi_home::connection_closed(&e) => {
                return Ok(Report::Lost(format!(
                    "the process was lost with its home node {endpoint}, which went down while launching it"
                )));
            }
            Err(e) => return Err(anyhow::anyhow!(remote_message(&e))),
        };
        let reply = reply.get()?;
        follow(endpoint, reply.get_process()?, reply.get_pid(), caught, periodic).await
    });
    // A read of standard input may still be blocked; it must not hold up the exit.
    rt.shutdown_background();
    let report = outcome?;
    Ok(match report {
        Report::Ended(pid, report) => match report {
            ExitReport::Status(code) => Outcome::Exited(code),
            ExitReport::Trap(chain) => stopped(ExitReport::rebuild(&chain), &module_name, true),
            ExitReport::Failed(chain) => stopped(ExitReport::rebuild(&chain), &module_name, false),
            ExitReport::Lost(why) => Outcome::Lost(format!("process {pid} was lost: {why}")),
            ExitReport::Signaled(n) => Outcome::Signaled(n),
            ExitReport::Moved => Outcome::Lost(format!("process {pid} was lost while it moved")),
            ExitReport::Checkpointed => Outcome::Checkpointed(pid),
        },
        Report::Lost(why) => Outcome::Lost(why),
    })
}

/// How a session's process ended, as its home told.
enum Report {
    Ended(u32, ExitReport),
    Lost(String),
}

/// Follows the session's process to its end: forwards the signals caught
/// here, takes the periodic checkpoints, and waits for its exit.
async fn follow(
    endpoint: &Endpoint,
    process: ssi_schema::process::Client,
    pid: u32,
    caught: flume::Receiver<u8>,
    periodic: Option<Periodic>,
) -> Result<Report> {
    {
        // The terminal's keys and `kill` aimed at this command reach the process
        // (its process group) wherever its body runs.
        let forward = process.clone();
        tokio::task::spawn_local(async move {
            while let Ok(number) = caught.recv_async().await {
                let mut req = forward.signal_request();
                req.get().set_signal(number);
                let _ = req.send().promise.await;
                if number == 20 {
                    // The process is stopped (the home answers once its body
                    // is frozen, wherever it runs): so is this command, for the
                    // shell's job control; the shell's `fg` continues both.
                    // SAFETY: raise has no preconditions.
                    unsafe { libc::raise(libc::SIGSTOP) };
                }
            }
        });
        if let Some(p) = periodic {
            tokio::task::spawn_local(checkpoint_periodically(process.clone(), pid, p));
        }
    }
    let done = match process.wait_request().send().promise.await {
        Ok(done) => done,
        // The home holds the process: without it the process is gone.
        Err(e) => {
            return Ok(Report::Lost(format!(
                "process {pid} was lost with its home node {endpoint}: {}",
                remote_message(&e)
            )));
        }
    };
    Ok(Report::Ended(
        pid,
        ssi_home::read_exit(done.get()?.get_exit()?)?,
    ))
}

fn run(args: Args) -> Result<Outcome> {
    if let Some(arg) = &args.not_utf8 {
        bail!(
            "the program's argument \"{arg}\" is not valid UTF-8 (WASI programs are given UTF-8 arguments; wasmtime refuses it too)"
        );
    }
    let cache_on_disk = caches(&args)?;
    if args.fill_cache {
        let module = args
            .module
            .as_ref()
            .context("--fill-cache: give a module")?;
        let (name, bytes) = read_module(module)?;
        let wasm = ssi_remote::assemble(&bytes).with_context(|| format!("`{name}`"))?;
        let runtime =
            Runtime::new(ssi_remote::default_cache_dir()).context("cannot start the compiler")?;
        runtime
            .fill_cache(&wasm)
            .with_context(|| format!("cannot compile `{name}`"))?;
        return Ok(Outcome::Exited(0));
    }
    let periodic = periodic(&args)?;
    let start = match (&args.restore, &args.module) {
        (Some(file), _) => {
            let name = file.display().to_string();
            let image =
                std::fs::read(file).with_context(|| format!("cannot read checkpoint `{name}`"))?;
            Start::Restore { image, name }
        }
        (None, Some(module)) => Start::Launch(program(&args, module)?),
        (None, None) => bail!("give a module to run, or --restore FILE"),
    };
    // (Code compiled as it is runs here: a node instruments what it runs.)
    if !args.as_is
        && let Some(endpoint) = pick_endpoint(&args)?
    {
        return run_on_node(&endpoint, args.node, start, periodic);
    }
    let cache = if !cache_on_disk {
        None
    } else {
        ssi_remote::default_cache_dir()
    };
    // Children and signal handlers need a node's process table and signal
    // delivery: such a program gets a private node instead.
    if let Start::Launch(p) = &start
        && ["spawn", "sigaction"]
            .iter()
            .any(|f| ssi_remote::imports(&p.bytes, "ssi", f))
    {
        return run_on_private_node(runtime(cache, args.as_is)?, start, periodic);
    }
    // The body runs on a thread with room for its Wasm stack, as on a node
    // (the main thread has the system's 8 MiB); it is made there too, so
    // that its CPU clock is that thread's.
    std::thread::scope(|scope| {
        let body = std::thread::Builder::new()
            .name("body".into())
            .stack_size(ssi_remote::BODY_THREAD_STACK)
            .spawn_scoped(scope, || run_embedded(&args, cache, start, periodic))
            .context("cannot start the body's thread")?;
        body.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The runtime of this process's node, caching in `cache`; with `as_is`,
/// compiling modules as they are.
fn runtime(cache: Option<PathBuf>, as_is: bool) -> Result<Runtime> {
    let runtime = Runtime::new(cache).context("cannot start the compiler")?;
    Ok(if as_is { runtime.as_is() } else { runtime })
}

/// Runs the process in this process: on an embedded node, without a daemon.
fn run_embedded(
    args: &Args,
    cache: Option<PathBuf>,
    start: Start,
    periodic: Option<Periodic>,
) -> Result<Outcome> {
    let caching = cache.is_some();
    let runtime = runtime(cache, args.as_is).context("cannot start the embedded node")?;
    let node = Node::new(EMBEDDED_NODE, runtime).context("cannot start the embedded node")?;
    let (process, module_name) = match start {
        Start::Launch(p) => {
            let process = node
                .launch(LaunchSpec {
                    module: p.bytes,
                    command: p.argv.join(" "),
                    body: BodySpec {
                        args: p.argv,
                        env: p.env,
                        unknown_imports_trap: p.unknown_imports_trap,
                        max_memory_size: p.max_memory_size,
                    },
                    preopens: p.preopens,
                    stdio: Stdio::inherit(),
                })
                .with_context(|| format!("cannot run `{}`", p.module_name))?;
            (process, p.module_name)
        }
        Start::Restore { image, name } => {
            let process = node
                .restore(&image, Stdio::inherit())
                .with_context(|| format!("`{name}`"))?;
            (process, name)
        }
    };
    let pid = process.pid();
    let every = periodic.as_ref().map(|p| p.every);
    let finished = process.run_checkpointing(every, |taken| {
        let Some(p) = &periodic else { return };
        let path = p.dir.join(format!("{pid}.ckpt"));
        let written = taken
            .map_err(anyhow::Error::msg)
            .and_then(|image| Ok(ssi_tools::write_checkpoint(&path, &image)?));
        if let Err(e) = written {
            eprintln!("ssirun: checkpoint of process {pid} failed: {e:#}");
        }
    });
    // A program that ended before its optimised code was compiled (it ran
    // past its warm-up, or it started on the quick tier): the compilation
    // goes on in a process of its own, and the next launch starts on it.
    if caching
        && node.runtime().code_to_come()
        && let Some(module) = &args.module
    {
        fill_cache_later(module);
    }
    if let Some(signal) = finished.signal {
        return Ok(Outcome::Signaled(signal.number()));
    }
    Ok(match finished.exit {
        Exit::Status(code) => Outcome::Exited(code),
        Exit::Trap(e) => stopped(e, &module_name, true),
        Exit::Failed(e) => stopped(e, &module_name, false),
        Exit::Signaled(n) => Outcome::Signaled(n),
        // Frozen bodies are resumed by `run_checkpointing`.
        Exit::Frozen => Outcome::Lost("the process was frozen with nowhere to go".into()),
    })
}

/// Starts `ssirun --fill-cache MODULE` on its own: detached from this
/// terminal and its streams, in a process group of its own, not waited for.
fn fill_cache_later(module: &std::path::Path) {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let started = std::process::Command::new(exe)
        .arg("--fill-cache")
        .arg(module)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    // It outlives this process, whose end hands it to the system's reaper.
    drop(started);
}

/// Runs the process on a node of this process's own, reached through a Unix
/// socket in a private directory and gone with it: its children are the
/// node's too (they end with `ssirun`).
fn run_on_private_node(
    runtime: Runtime,
    start: Start,
    periodic: Option<Periodic>,
) -> Result<Outcome> {
    let dir = tempfile::Builder::new()
        .prefix("ssirun-")
        .tempdir()
        .context("cannot make a directory for the private node")?;
    let socket = dir.path().join("node.sock");
    let config = ssi_home::Config::new(EMBEDDED_NODE, "127.0.0.1:0".into(), socket.clone());
    let daemon =
        ssi_home::Daemon::start(config, runtime).context("cannot start the private node")?;
    let outcome = run_on_node(&Endpoint::Unix(socket), None, start, periodic);
    drop(daemon);
    outcome
}

/// A module file's name, for messages, and its bytes.
fn read_module(module: &std::path::Path) -> Result<(String, Vec<u8>)> {
    let name = module.display().to_string();
    let bytes = std::fs::read(module).with_context(|| format!("cannot read module `{name}`"))?;
    Ok((name, bytes))
}

/// The module to launch, with its arguments, environment and directories.
fn program(args: &Args, module: &std::path::Path) -> Result<Program> {
    let (module_name, bytes) = read_module(module)?;
    let preopens = args
        .dirs
        .iter()
        .map(|d| parse_dir(d))
        .collect::<Result<Vec<_>>>()?;
    let options = wasmtime_options(args)?;
    // As `wasmtime run -S inherit-env`: this environment, then `--env`.
    let mut env: Vec<String> = if options.inherit_env {
        use std::os::unix::ffi::OsStrExt;
        std::env::vars_os()
            .map(|(k, v)| match (k.to_str(), v.to_str()) {
                (Some(k), Some(v)) => Ok(format!("{k}={v}")),
                _ => Err(anyhow::anyhow!(
                    "-S inherit-env: the environment variable \"{}\" (value \"{}\") is not valid UTF-8 (WASI programs are given a UTF-8 environment; wasmtime refuses it too)",
                    k.as_bytes().escape_ascii(),
                    v.as_bytes().escape_ascii()
                )),
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    for e in &args.envs {
        let e = parse_env(e)?;
        let name = e.split_once('=').map_or(e.as_str(), |(n, _)| n).to_string();
        env.retain(|old| old.split_once('=').map_or(old.as_str(), |(n, _)| n) != name);
        env.push(e);
    }
    // As `wasmtime run`: argv[0] is the module's file name, or --argv0.
    let argv0 = args.argv0.clone().unwrap_or_else(|| {
        module
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| module_name.clone())
    });
    let mut argv = vec![argv0];
    argv.extend(args.args.iter().cloned());
    Ok(Program {
        bytes,
        module_name,
        argv,
        env,
        preopens,
        pin: args.pin,
        unknown_imports_trap: options.unknown_imports_trap,
        max_memory_size: options.max_memory_size,
    })
}

fn main() -> ExitCode {
    let args = parse_args(std::env::args_os().collect());
    match run(args) {
        Ok(Outcome::Exited(code)) => {
            // The status is in [0, 126) by then (larger ones are refused as a trap).
            ExitCode::from(code as u8)
        }
        Ok(Outcome::Stopped { message, trap }) => {
            // As `wasmtime run`: the error with its Wasm backtrace; a trap exits with
            // the status of a process killed by SIGABRT, any other failure with 1.
            eprintln!("Error: {message}");
            ExitCode::from(if trap { 134 } else { 1 })
        }
        // The signal that ended the process ends this command too, so that
        // a shell sees what it sees of a native process (`$?` = 128 + n,
        // "Terminated", a loop that Ctrl-C breaks).
        Ok(Outcome::Signaled(n)) => die_of(n),
        Ok(Outcome::Checkpointed(pid)) => {
            // As a process killed by SIGKILL: it goes on only from its checkpoint.
            eprintln!("ssirun: process {pid} was checkpointed and stopped");
            ExitCode::from(137)
        }
        Ok(Outcome::Lost(message)) => {
            // As a process killed by SIGKILL: its node is gone.
            eprintln!("ssirun: error: {message}");
            ExitCode::from(137)
        }
        Err(e) => {
            eprintln!("ssirun: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Ends this process by signal `n`, its default action restored; a signal
/// whose default action is a core dump dumps none (the core would be this
/// command's, not the program's). Returns only if the signal did not end it:
/// then the status is the one a shell would report, 128 + n.
fn die_of(n: u8) -> ExitCode {
    let _ = std::io::stdout().lock().flush();
    let _ = std::io::stderr().lock().flush();
    let sig = libc::c_int::from(n);
    // SAFETY: plain calls on this process's own signal state and limits, with
    // valid pointers to locals.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    ExitCode::from(128u8.saturating_add(n))
}
