//! `ssi-netbench`: what forwarding system calls over the network costs.
//!
//! Starts a two-node cluster of real `ssid` daemons on loopback, then, in the
//! same run, measures a body at home (node 1, in-process link to its deputy)
//! and a body on node 2 (Cap'n Proto link to its deputy on node 1):
//! - round-trip latency of a small `fd_write` to a file and of `path_open` +
//!   `fd_close`, timed inside the body, as hdrhistogram percentiles, against
//!   the machine's bare loopback round trip (16 bytes echoed by another
//!   process) measured in the same run;
//! - stream throughput: a program writing to stdout, drained through a pipe;
//! - signal delivery: from `Admin.kill(pid, SIGTERM)` sent to the home until
//!   `ssirun` has exited with 143, for a body looping without calls at home and
//!   on node 2 (an upper bound on delivery: it includes ending the process);
//!   and from `Admin.kill(pid, SIGUSR1)` until the body's handler runs (the
//!   wall clock the handler reads, against the sender's);
//! - migration: a body holding 1 MiB, 64 MiB or 1 GiB, sparse or dense, moved
//!   between the nodes while it loops without calls: its image size, the time
//!   to freeze it, and the time from the request until it runs on the other
//!   node, as the home measures them;
//! - checkpoint and restart: the same bodies checkpointed with `ssictl
//!   checkpoint` (time to take it at the home, and until the file is written
//!   and flushed), then restarted from the file (request to running again);
//! - spawning: a parent (`family bench`) spawns children that exit at once,
//!   its body and theirs at home or on node 2, and times inside the parent
//!   each `spawn` (until the child's body runs) and each spawn until the
//!   child is reaped by `waitpid`.
//! - a silent node: node 2 is stopped (SIGSTOP) and the time until node 1
//!   shows it down is taken; then it is continued.

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use ssi_tools::Owned;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "ssi-netbench")]
struct Args {
    /// Directory holding the built guests (syscalls.wasm, bigout.wasm).
    #[arg(long)]
    guests: PathBuf,
    /// Samples per system call and placement.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// MiB written to stdout per throughput run.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Alternating throughput rounds (median reported).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Migrations per memory size (median reported).
    #[arg(long, default_value_t = 9)]
    moves: usize,
    /// Children spawned per placement.
    #[arg(long, default_value_t = 200)]
    spawns: usize,
    /// Run only these sections (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Internal: be the echo process of the bare loopback reference.
    #[arg(long, hide = true)]
    echo: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Calls,
    Streams,
    Signals,
    Migration,
    Checkpoint,
    Spawn,
    Down,
}

impl Args {
    fn runs(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}

fn start_cluster(bin: &Path, dir: &Path) -> Result<(Vec<Owned>, PathBuf)> {
    let ports = [ssi_tools::free_port()?, ssi_tools::free_port()?];
    let mut nodes = Vec::new();
    for id in 1..=2usize {
        let other = 3 - id;
        let child = Command::new(bin.join("ssid"))
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports[id - 1]))
            .arg("--peer")
            .arg(format!("{other}=127.0.0.1:{}", ports[other - 1]))
            .arg("--socket")
            .arg(dir.join(format!("node{id}.sock")))
            .arg("--data-dir")
            .arg(dir.join(format!("data{id}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ssid")?;
        nodes.push(Owned(child));
    }
    let socket = dir.join("node1.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(bin.join("ssictl"))
            .arg("--connect")
            .arg(&socket)
            .args(["nodes", "--json"])
            .output()?;
        if out.status.success() {
            let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
            if nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "up") {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not come up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((nodes, socket))
}

/// `ssirun` through the node at `socket`, its body on node `node` and kept
/// there (the balancer would bring a body that makes calls home: what is
/// measured is the body where it was put).
fn ssirun(bin: &Path, socket: &Path, node: u16) -> Command {
    let mut cmd = Command::new(bin.join("ssirun"));
    cmd.arg("--connect")
        .arg(socket)
        .arg("--node")
        .arg(node.to_string())
        .arg("--pin");
    cmd
}

fn latencies(
    bin: &Path,
    socket: &Path,
    node: u16,
    guest: &Path,
    samples: usize,
) -> Result<[Histogram<u64>; 2]> {
    let dir = tempfile::tempdir()?;
    let out = ssirun(bin, socket, node)
        .arg("--dir")
        .arg(format!("{}::/", dir.path().display()))
        .arg(guest)
        .arg(samples.to_string())
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "syscalls guest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut write = Histogram::<u64>::new(3)?;
    let mut open = Histogram::<u64>::new(3)?;
    for line in String::from_utf8(out.stdout)?.lines() {
        let (kind, ns) = line.split_once(' ').context("sample line")?;
        let ns: u64 = ns.parse()?;
        match kind {
            "write" => write.record(ns)?,
            "open" => open.record(ns)?,
            _ => bail!("unexpected line {line}"),
        }
    }
    Ok([write, open])
}

/// `family bench COUNT NODE` at home: each spawn's time and each spawn to
/// reaped, in ns.
fn spawn_latencies(
    bin: &Path,
    socket: &Path,
    guest: &Path,
    node: u16,
    count: usize,
) -> Result<[Histogram<u64>; 2]> {
    let out = ssirun(bin, socket, 1)
        .arg(guest)
        .args(["bench", &count.to_string(), &node.to_string()])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "family guest failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut spawn = Histogram::<u64>::new(3)?;
    let mut reaped = Histogram::<u64>::new(3)?;
    for line in String::from_utf8(out.stdout)?.lines() {
        let mut words = line.split_whitespace();
        let mut field = |name: &str| -> Result<u64> {
            match (words.next(), words.next()) {
                (Some(n), Some(v)) if n == name => Ok(v.parse::<u64>()? * 1000),
                _ => bail!("unexpected line {line}"),
            }
        };
        spawn.record(field("spawn_us")?)?;
        reaped.record(field("reaped_us")?)?;
    }
    Ok([spawn, reaped])
}

/// Runs the stream workload; returns MiB/s.
fn throughput(bin: &Path, socket: &Path, node: u16, guest: &Path, mib: usize) -> Result<f64> {
    let start = Instant::now();
    let mut child = ssirun(bin, socket, node)
        .arg(guest)
        .arg(mib.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let status = child.wait()?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() || total != mib << 20 {
        bail!("stream run failed: {status}, {total} bytes");
    }
    Ok(mib as f64 / secs)
}

/// MiB/s at which `bytewise` reads `mib` MiB of stdin a byte at a time (one
/// `fd_read` per byte), its body on `node` of the cluster or, with `None`,
/// in `ssirun` itself (the embedded runner, which reads stdin in-process).
fn bytewise_rate(
    bin: &Path,
    socket: &Path,
    node: Option<u16>,
    guest: &Path,
    mib: usize,
) -> Result<f64> {
    let mut cmd = match node {
        Some(n) => ssirun(bin, socket, n),
        None => {
            let mut c = Command::new(bin.join("ssirun"));
            c.env("SSI_SOCKET", "/nonexistent/ssi-netbench.sock")
                .env_remove("SSI_CONNECT");
            c
        }
    };
    let input: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    let start = Instant::now();
    let mut child = cmd
        .arg(guest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let secs = start.elapsed().as_secs_f64();
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("stdin feeder panicked"))??;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.starts_with(&format!("{} bytes", mib << 20)) {
        bail!("bytewise run failed: {}, {text}", out.status);
    }
    Ok(mib as f64 / secs)
}

/// Times `rounds` signals, each to a fresh `spin` process with its body on `node`.
/// Send to handler entry: `sigs bench` loops without calls until its
/// SIGUSR1 handler has run and prints the wall clock at the handler's
/// entry; the signal is sent with `Admin.kill` to the home. In ns.
fn handler_latencies(
    bin: &Path,
    socket: &Path,
    node: u16,
    sigs: &Path,
    rounds: usize,
) -> Result<Histogram<u64>> {
    use std::io::BufRead;
    let rt = ssi_home::thread_runtime()?;
    let local = tokio::task::LocalSet::new();
    let endpoint = ssi_home::Endpoint::Unix(socket.to_path_buf());
    local.block_on(&rt, async {
        let gateway = ssi_home::connect(&endpoint).await?;
        let admin = gateway.admin_request().send().pipeline.get_admin();
        let mut child = ssirun(bin, socket, node)
            .arg(sigs)
            .args(["bench", &rounds.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let pid = ssi_home::admin_processes(&admin)
            .await?
            .iter()
            .find(|p| p.command.starts_with("sigs.wasm bench"))
            .context("the signalled process is not listed")?
            .pid;
        let mut h = Histogram::<u64>::new(3)?;
        for i in 0..rounds {
            if line.trim() != format!("ready {i}") {
                bail!("expected `ready {i}`, got {line:?}");
            }
            let sent = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            let mut req = admin.kill_request();
            req.get().set_target(pid as i32);
            req.get().set_signal(10);
            req.send().promise.await?;
            line.clear();
            out.read_line(&mut line)?;
            let entered: u64 = line
                .trim()
                .strip_prefix("entered ")
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("expected `entered NS`, got {line:?}"))?;
            h.record(entered.saturating_sub(sent.as_nanos() as u64).max(1))?;
            line.clear();
            out.read_line(&mut line)?;
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("sigs bench ended with {status}");
        }
        Ok(h)
    })
}

fn signal_latencies(
    bin: &Path,
    socket: &Path,
    node: u16,
    spin: &Path,
    rounds: usize,
) -> Result<Histogram<u64>> {
    use std::io::BufRead;
    let rt = ssi_home::thread_runtime()?;
    let local = tokio::task::LocalSet::new();
    let endpoint = ssi_home::Endpoint::Unix(socket.to_path_buf());
    local.block_on(&rt, async {
        let gateway = ssi_home::connect(&endpoint).await?;
        let admin = gateway.admin_request().send().pipeline.get_admin();
        let mut h = Histogram::<u64>::new(3)?;
        for _ in 0..rounds {
            let mut child = ssirun(bin, socket, node)
                .arg(spin)
                .arg("0")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.as_mut().context("stdout")?)
                .read_line(&mut line)?;
            let procs = ssi_home::admin_processes(&admin).await?;
            let pid = procs
                .iter()
                .find(|p| p.command.starts_with("spin.wasm"))
                .context("the spinning process is not listed")?
                .pid;
            let start = Instant::now();
            let mut req = admin.kill_request();
            req.get().set_target(pid as i32);
            req.get().set_signal(15);
            req.send().promise.await?;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                std::thread::sleep(Duration::from_micros(50));
            };
            let took = start.elapsed();
            if std::os::unix::process::ExitStatusExt::signal(&status) != Some(15) {
                bail!("ssirun ended with {status}, not by SIGTERM");
            }
            h.record(took.as_nanos() as u64)?;
            // Let the home reap it before the next round lists processes.
            while ssi_home::admin_processes(&admin)
                .await?
                .iter()
                .any(|p| p.pid == pid)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(h)
    })
}

/// Medians of a series of migrations of one `hold` process.
struct Moves {
    image: u64,
    memory: u64,
    /// µs
    freeze: u64,
    /// µs
    total: u64,
}

/// A `hold` process started through node 1 with its body on `node`, and its pid.
fn start_hold(
    bin: &Path,
    socket: &Path,
    node: u16,
    hold: &Path,
    mib: usize,
    dense: bool,
) -> Result<(Child, String)> {
    let mut child = ssirun(bin, socket, node)
        .arg(hold)
        .arg(mib.to_string())
        .arg(if dense { "dense" } else { "sparse" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    if line != "ready\n" {
        bail!("hold did not start: {line:?}");
    }
    let procs: Vec<serde_json::Value> =
        serde_json::from_slice(&ctl(bin, socket, &["ps", "--json"])?)?;
    let pid = procs
        .iter()
        .filter(|p| p["command"].as_str().is_some_and(|c| c.contains("hold")))
        .filter_map(|p| p["pid"].as_u64())
        .max()
        .context("the hold process is not listed")?
        .to_string();
    Ok((child, pid))
}

/// `ssictl ARGS` through node 1: its output.
fn ctl(bin: &Path, socket: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(bin.join("ssictl"))
        .arg("--connect")
        .arg(socket)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("ssictl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// A number field of a JSON report; a report without it is an error, not a 0.
fn field(report: &serde_json::Value, name: &str) -> Result<u64> {
    report[name]
        .as_u64()
        .with_context(|| format!("the report has no number `{name}`: {report}"))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn migrations(
    bin: &Path,
    socket: &Path,
    hold: &Path,
    mib: usize,
    dense: bool,
    moves: usize,
) -> Result<Moves> {
    let (mut child, pid) = start_hold(bin, socket, 1, hold, mib, dense)?;
    let ctl = |args: &[&str]| ctl(bin, socket, args);
    let (mut image, mut memory, mut freeze, mut total) = (0, 0, Vec::new(), Vec::new());
    for i in 0..moves {
        let to = if i % 2 == 0 { "2" } else { "1" };
        let r: serde_json::Value = serde_json::from_slice(&ctl(&["migrate", &pid, to, "--json"])?)?;
        image = field(&r, "image_bytes")?;
        memory = field(&r, "memory_bytes")?;
        freeze.push(field(&r, "freeze_us")?);
        total.push(field(&r, "total_us")?);
    }
    ctl(&["kill", "-KILL", &pid])?;
    let _ = child.wait();
    Ok(Moves {
        image,
        memory,
        freeze: median(freeze),
        total: median(total),
    })
}

/// Medians of checkpoints and restarts of one `hold` process.
struct Checkpoints {
    image: u64,
    memory: u64,
    /// µs: request to checkpoint taken, at the home.
    taken: u64,
    /// µs: `ssictl checkpoint` until the file is written and flushed.
    written: u64,
    /// µs: request to the body running again, staging the file included.
    restarted: u64,
}

/// A console that reads nothing and drops what is written.
struct NullConsole;

impl ssi_schema::console::Server for NullConsole {
    async fn read(
        self: capnp::capability::Rc<Self>,
        _: ssi_schema::console::ReadParams,
        _: ssi_schema::console::ReadResults,
    ) -> Result<(), capnp::Error> {
        Ok(())
    }

    async fn write(
        self: capnp::capability::Rc<Self>,
        _: ssi_schema::console::WriteParams,
        _: ssi_schema::console::WriteResults,
    ) -> Result<(), capnp::Error> {
        Ok(())
    }
}

fn checkpoints(
    bin: &Path,
    socket: &Path,
    hold: &Path,
    mib: usize,
    dense: bool,
    rounds: usize,
) -> Result<Checkpoints> {
    let (mut child, pid) = start_hold(bin, socket, 1, hold, mib, dense)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hold.ckpt");
    let file_arg = file.display().to_string();
    let (mut taken, mut written) = (Vec::new(), Vec::new());
    let (mut image, mut memory) = (0, 0);
    for i in 0..rounds {
        let mut args = vec!["checkpoint", pid.as_str(), "-o", &file_arg, "--json"];
        if i + 1 == rounds {
            args.push("--stop");
        }
        let t = Instant::now();
        let r: serde_json::Value = serde_json::from_slice(&ctl(bin, socket, &args)?)?;
        written.push(t.elapsed().as_micros() as u64);
        taken.push(field(&r, "total_us")?);
        image = field(&r, "image_bytes")?;
        memory = field(&r, "memory_bytes")?;
    }
    let _ = child.wait();
    let bytes = std::fs::read(&file)?;
    let rt = ssi_home::thread_runtime()?;
    let local = tokio::task::LocalSet::new();
    let restarted = local.block_on(&rt, async {
        let endpoint = ssi_home::Endpoint::Unix(socket.to_path_buf());
        let gateway = ssi_home::connect(&endpoint).await?;
        let admin = gateway.admin_request().send().pipeline.get_admin();
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let (_process, pid) = ssi_home::restore_request(
                &gateway,
                &bytes,
                0,
                ssi_home::Ttys::default(),
                capnp_rpc::new_client(NullConsole),
            )
            .await
            .map_err(|e| anyhow::anyhow!("restart: {}", ssi_home::remote_message(&e)))?;
            times.push(t.elapsed().as_micros() as u64);
            let mut kill = admin.kill_request();
            kill.get().set_target(pid as i32);
            kill.get().set_signal(9);
            kill.send().promise.await?;
            // The pid comes free once the process has ended.
            let deadline = Instant::now() + Duration::from_secs(10);
            while ssi_home::admin_processes(&admin)
                .await?
                .iter()
                .any(|p| p.pid == pid)
            {
                if Instant::now() > deadline {
                    bail!("process {pid} did not end");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok::<_, anyhow::Error>(median(times))
    })?;
    Ok(Checkpoints {
        image,
        memory,
        taken: median(taken),
        written: median(written),
        restarted,
    })
}

/// The machine's own loopback round trip, the floor of a forwarded call: 16
/// bytes to an echoing process and back, on a TCP connection with Nagle off
/// (the deputy link's setting), timed as the calls are.
fn loopback_round_trips(samples: usize) -> Result<Histogram<u64>> {
    use std::io::{BufRead, Write};
    // A process of its own, as the home is: this binary with `--echo`.
    let mut echo = Command::new(std::env::current_exe()?)
        .args(["--echo", "--guests", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("start the echo process")?;
    let result = (|| -> Result<Histogram<u64>> {
        let mut line = String::new();
        std::io::BufReader::new(echo.stdout.take().context("echo's stdout")?)
            .read_line(&mut line)?;
        let port: u16 = line.trim().parse().context("the echo process's port")?;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port))
            .context("connect to the echo process")?;
        c.set_nodelay(true)?;
        let mut h = Histogram::<u64>::new(3)?;
        let mut buf = [0u8; 16];
        for i in 0..samples + 1000 {
            let t = Instant::now();
            c.write_all(&[7u8; 16])?;
            c.read_exact(&mut buf)?;
            if i >= 1000 {
                h.record(t.elapsed().as_nanos() as u64)?;
            }
        }
        Ok(h)
    })();
    let _ = echo.kill();
    let _ = echo.wait();
    result
}

/// `--echo`: prints a loopback port, then echoes 16-byte messages on it
/// until the peer goes.
fn echo_server() -> Result<()> {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let (mut c, _) = listener.accept()?;
    c.set_nodelay(true)?;
    let mut buf = [0u8; 16];
    while c.read_exact(&mut buf).is_ok() {
        c.write_all(&buf)?;
    }
    Ok(())
}

fn us(ns: u64) -> String {
    format!("{:.1}µs", ns as f64 / 1e3)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.echo {
        return echo_server();
    }
    let bin = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let dir = tempfile::tempdir()?;
    let (nodes, socket) = start_cluster(&bin, dir.path())?;
    let syscalls = args.guests.join("syscalls.wasm");
    let bigout = args.guests.join("bigout.wasm");
    println!(
        "two ssid nodes on loopback; home = node 1; {} samples per call\n",
        args.samples
    );
    if args.runs(Section::Calls) {
        println!(
            "{:<22} {:<8} {:>9} {:>9} {:>9} {:>9}",
            "system call", "body", "p50", "p99", "p99.9", "max"
        );
        let home = latencies(&bin, &socket, 1, &syscalls, args.samples)?;
        let remote = latencies(&bin, &socket, 2, &syscalls, args.samples)?;
        for (i, name) in ["fd_write 16 B (file)", "path_open + fd_close"]
            .iter()
            .enumerate()
        {
            for (place, h) in [("home", &home[i]), ("node 2", &remote[i])] {
                println!(
                    "{:<22} {:<8} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    place,
                    us(h.value_at_quantile(0.5)),
                    us(h.value_at_quantile(0.99)),
                    us(h.value_at_quantile(0.999)),
                    us(h.max())
                );
            }
        }
        let w = &remote[0];
        let bare = loopback_round_trips(args.samples)?;
        println!(
            "{:<22} {:<8} {:>9} {:>9} {:>9} {:>9}",
            "bare TCP, 16 B echo",
            "2 procs",
            us(bare.value_at_quantile(0.5)),
            us(bare.value_at_quantile(0.99)),
            us(bare.value_at_quantile(0.999)),
            us(bare.max())
        );
        println!(
            "\nremote fd_write round trip: p50 {} (target ≤ 30µs), p99 {} (target ≤ 150µs); {:.2}x the bare loopback round trip at p50",
            us(w.value_at_quantile(0.5)),
            us(w.value_at_quantile(0.99)),
            w.value_at_quantile(0.5) as f64 / bare.value_at_quantile(0.5).max(1) as f64
        );
    }
    if args.runs(Section::Streams) {
        let mut at_home = Vec::new();
        let mut away = Vec::new();
        for round in 0..=args.rounds {
            let a = throughput(&bin, &socket, 1, &bigout, args.mib)?;
            let b = throughput(&bin, &socket, 2, &bigout, args.mib)?;
            if round > 0 {
                at_home.push(a);
                away.push(b);
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (median(at_home), median(away));
        println!(
            "stream throughput ({} MiB to stdout, median of {}): home {:.0} MiB/s, node 2 {:.0} MiB/s = {:.2}x (target ≥ 0.8x)",
            args.mib,
            args.rounds,
            a,
            b,
            b / a
        );
        // Input read a byte at a time, against the embedded runner's.
        let bytewise = args.guests.join("bytewise.wasm");
        let mib = 8;
        let (mut local, mut at_home, mut away) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..=args.rounds {
            let l = bytewise_rate(&bin, &socket, None, &bytewise, mib)?;
            let a = bytewise_rate(&bin, &socket, Some(1), &bytewise, mib)?;
            let b = bytewise_rate(&bin, &socket, Some(2), &bytewise, mib)?;
            if round > 0 {
                local.push(l);
                at_home.push(a);
                away.push(b);
            }
        }
        let (l, a, b) = (median(local), median(at_home), median(away));
        println!(
            "stdin a byte at a time ({mib} MiB, median of {}): embedded {l:.1} MiB/s, home {a:.1} MiB/s = {:.2}x, node 2 {b:.1} MiB/s = {:.2}x",
            args.rounds,
            a / l,
            b / l
        );
    }
    if args.runs(Section::Signals) {
        let spin = args.guests.join("spin.wasm");
        println!();
        for node in [1u16, 2] {
            let h = signal_latencies(&bin, &socket, node, &spin, 30)?;
            println!(
                "SIGTERM to a looping body on node {node} until ssirun exits: p50 {}, p99 {}, max {} (target p99 ≤ 5ms)",
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.99)),
                us(h.max())
            );
        }
        let sigs = args.guests.join("sigs.wasm");
        let mut p99 = [0u64; 2];
        for (i, node) in [1u16, 2].into_iter().enumerate() {
            let h = handler_latencies(&bin, &socket, node, &sigs, 200)?;
            p99[i] = h.value_at_quantile(0.99);
            println!(
                "SIGUSR1 sent to the home until its handler runs in a looping body on node {node}: p50 {}, p99 {}, max {} (target p99 ≤ 5ms)",
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.99)),
                us(h.max())
            );
        }
        println!(
            "handler entry p99, remote/home: {:.2}x",
            p99[1] as f64 / p99[0].max(1) as f64
        );
    }
    let hold = args.guests.join("hold.wasm");
    if args.runs(Section::Migration) {
        println!(
            "\nmigration between node 1 (home) and node 2, body looping without calls, median of {} moves:",
            args.moves
        );
        println!(
            "{:>9} {:<7} {:>11} {:>11} {:>11} {:>10}",
            "memory", "pages", "image", "freeze", "moved in", "rate"
        );
        for mib in [1usize, 64, 1024] {
            for dense in [false, true] {
                let m = migrations(&bin, &socket, &hold, mib, dense, args.moves)?;
                println!(
                    "{:>6} MiB {:<7} {:>9.1} MiB {:>11} {:>11} {:>7.2} GB/s",
                    mib,
                    if dense { "dense" } else { "sparse" },
                    m.image as f64 / (1 << 20) as f64,
                    us(m.freeze * 1000),
                    us(m.total * 1000),
                    m.memory as f64 / (m.total as f64 * 1e3)
                );
            }
        }
        println!("(targets: ≤ 1 MiB moved in ≤ 2 ms; dense ≥ 1 GB/s)");
    }
    if args.runs(Section::Checkpoint) {
        println!(
            "\ncheckpoint and restart of a body on node 1 looping without calls, median of {} rounds:",
            args.rounds
        );
        println!(
            "{:>9} {:<7} {:>11} {:>11} {:>13} {:>11}",
            "memory", "pages", "image", "taken", "file written", "restarted"
        );
        for mib in [1usize, 64, 1024] {
            for dense in [false, true] {
                let c = checkpoints(&bin, &socket, &hold, mib, dense, args.rounds)?;
                println!(
                    "{:>6} MiB {:<7} {:>9.2} MiB {:>11} {:>13} {:>11}   (memory {:.0} MiB)",
                    mib,
                    if dense { "dense" } else { "sparse" },
                    c.image as f64 / (1 << 20) as f64,
                    us(c.taken * 1000),
                    us(c.written * 1000),
                    us(c.restarted * 1000),
                    c.memory as f64 / (1 << 20) as f64,
                );
            }
        }
        println!(
            "(targets: a small process checkpointed in ≤ 5 ms and restarted in ≤ 20 ms; image size follows touched pages)"
        );
    }
    if args.runs(Section::Spawn) {
        let family = args.guests.join("family.wasm");
        println!(
            "\nspawn of a child that exits at once, by a parent at home on node 1, {} children each:",
            args.spawns
        );
        println!(
            "{:<18} {:>9} {:>9} {:>9} {:>16} {:>16}",
            "child's body", "p50", "p99", "max", "to reaped p50", "to reaped p99"
        );
        let mut p99 = [0u64; 2];
        for (i, node) in [1u16, 2].into_iter().enumerate() {
            // The first spawn on a node compiles the module there: not measured.
            spawn_latencies(&bin, &socket, &family, node, 1)?;
            let [spawn, reaped] = spawn_latencies(&bin, &socket, &family, node, args.spawns)?;
            p99[i] = spawn.value_at_quantile(0.99);
            println!(
                "{:<18} {:>9} {:>9} {:>9} {:>16} {:>16}",
                if node == 1 {
                    "home (node 1)"
                } else {
                    "remote (node 2)"
                },
                us(spawn.value_at_quantile(0.5)),
                us(spawn.value_at_quantile(0.99)),
                us(spawn.max()),
                us(reaped.value_at_quantile(0.5)),
                us(reaped.value_at_quantile(0.99)),
            );
        }
        println!(
            "remote spawn p99 {} = {:.2}x the spawn at home (target ≤ 20ms)",
            us(p99[1]),
            p99[1] as f64 / p99[0].max(1) as f64
        );
    }
    if args.runs(Section::Down) {
        let rounds = 5;
        let mut down = Vec::new();
        for _ in 0..rounds {
            down.push(silent_until_down(&bin, &socket, &nodes[1])?);
        }
        down.sort();
        println!(
            "\nnode 2 stopped (SIGSTOP: silent, its connections open) until node 1 shows it down, {rounds} rounds: p50 {:.2}s, max {:.2}s (target ≤ 3s)",
            down[down.len() / 2].as_secs_f64(),
            down[down.len() - 1].as_secs_f64()
        );
    }
    Ok(())
}

/// The state node 1 shows for node 2.
fn state_of_node_2(bin: &Path, socket: &Path) -> Result<String> {
    let nodes: Vec<serde_json::Value> =
        serde_json::from_slice(&ctl(bin, socket, &["nodes", "--json"])?)?;
    nodes
        .iter()
        .find(|n| n["id"] == 2)
        .and_then(|n| n["state"].as_str())
        .map(str::to_string)
        .context("node 1 does not list node 2")
}

/// Stops node 2 (it goes silent) and times until node 1 shows it down; then
/// continues it and waits until it is up again.
fn silent_until_down(bin: &Path, socket: &Path, node: &Owned) -> Result<Duration> {
    let signal = |sig: &str| -> Result<()> {
        let status = Command::new("kill")
            .args([sig, &node.0.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {sig} failed");
        }
        Ok(())
    };
    signal("-STOP")?;
    let stopped = Instant::now();
    let took = loop {
        if state_of_node_2(bin, socket)? == "down" {
            break stopped.elapsed();
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            let _ = signal("-CONT");
            bail!("node 2 was not shown down within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    signal("-CONT")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while state_of_node_2(bin, socket)? != "up" {
        if Instant::now() > deadline {
            bail!("node 2 did not come back up within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(took)
}
