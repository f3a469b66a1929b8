//! `ssi-topbench`: what `ssictl top` costs. Starts three real `ssid` nodes on
//! loopback, fills them with sleeping processes (2,000 by default: at each
//! home a `family group` parent whose members are spread over the three
//! nodes), then measures, over the same period, the CPU time (user + system,
//! from /proc) of
//!
//! - each node idle (nobody watching), then each node with `ssictl top`
//!   watching through node 1 on a terminal (a pty of 120×40): the nodes'
//!   cost of serving it is the difference;
//! - `ssictl top` itself.
//!
//! It prints both as percentages of one core, against the targets (top
//! ≤ 5 %, each node's serving ≤ 2 %).

use anyhow::{Context, Result, bail};
use clap::Parser;
use ssi_tools::Owned;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "ssi-topbench")]
struct Args {
    /// Directory holding the built guests (family.wasm).
    #[arg(long)]
    guests: PathBuf,
    /// Processes in the cluster.
    #[arg(long, default_value_t = 2000)]
    processes: usize,
    /// Seconds each period measured lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
}

/// A process's CPU time so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read the CPU time of process {pid}"))?;
    // The fields after the command (which may hold spaces) in parentheses.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("an unexpected /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .zip(fields.get(12))
        .and_then(|(u, s)| Some(u.parse::<u64>().ok()? + s.parse::<u64>().ok()?))
        .context("an unexpected /proc/PID/stat")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

fn ctl(bin: &Path, socket: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(bin.join("ssictl"))
        .arg("--connect")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssictl")?;
    if !out.status.success() {
        bail!("ssictl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn start_nodes(bin: &Path, dir: &Path, n: usize) -> Result<(Vec<Owned>, Vec<PathBuf>)> {
    let ports: Vec<u16> = (0..n)
        .map(|_| ssi_tools::free_port())
        .collect::<std::io::Result<_>>()?;
    let mut nodes = Vec::new();
    let mut sockets = Vec::new();
    for id in 1..=n {
        let socket = dir.join(format!("node{id}.sock"));
        let mut cmd = Command::new(bin.join("ssid"));
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports[id - 1]))
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.join(format!("data{id}")))
            .args(["--balance", "off"]);
        for other in (1..=n).filter(|o| *o != id) {
            cmd.arg("--peer")
                .arg(format!("{other}=127.0.0.1:{}", ports[other - 1]));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ssid")?;
        nodes.push(Owned(child));
        sockets.push(socket);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(out) = ctl(bin, &sockets[0], &["nodes", "--json"]) {
            let listed: Vec<serde_json::Value> = serde_json::from_slice(&out)?;
            if listed.len() == n && listed.iter().all(|n| n["state"] == "up") {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not come up");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((nodes, sockets))
}

/// `ssictl top` on a new pty of 120×40, its screen read and dropped.
fn start_top(
    bin: &Path,
    socket: &Path,
) -> Result<(
    Owned,
    OwnedFd,
    std::sync::Arc<std::sync::Mutex<vt100::Parser>>,
)> {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the given places; the
    // name is not asked for and the termios is left as the system's.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if r != 0 {
        bail!("cannot open a pty: {}", std::io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded: both descriptors are open and ours alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = Command::new(bin.join("ssictl"))
        .arg("--connect")
        .arg(socket)
        .arg("top")
        .env("TERM", "xterm-256color")
        .stdin(slave.try_clone()?)
        .stdout(slave.try_clone()?)
        .stderr(slave)
        .spawn()
        .context("cannot start ssictl top")?;
    let mut screen = std::fs::File::from(master.try_clone()?);
    // What it shows, as a terminal would.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vt100::Parser::new(40, 120, 0)));
    let keep = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = screen.read(&mut buf) {
            if n == 0 {
                break;
            }
            keep.lock()
                .unwrap_or_else(|p| p.into_inner())
                .process(&buf[..n]);
        }
    });
    Ok((Owned(child), master, seen))
}

fn percent(used: Duration, period: Duration) -> f64 {
    used.as_secs_f64() / period.as_secs_f64() * 100.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?
        .parent()
        .context("the benchmark's directory")?
        .to_path_buf();
    let family = args.guests.join("family.wasm");
    if !family.is_file() {
        bail!("no {} (build the guests first)", family.display());
    }
    let dir = tempfile::tempdir()?;
    let n = 3;
    let (nodes, sockets) = start_nodes(&bin, dir.path(), n)?;
    // At each home a parent with its share of members, spread over the nodes.
    let per_home = args.processes.div_ceil(n);
    let mut parents = Vec::new();
    let started = Instant::now();
    for home in 1..=n {
        let members: Vec<String> = (0..per_home.saturating_sub(1))
            .map(|i| ((i % n) + 1).to_string())
            .collect();
        let mut child = Command::new(bin.join("ssirun"))
            .arg("--connect")
            .arg(&sockets[home - 1])
            .arg("--node")
            .arg(home.to_string())
            .arg(&family)
            .arg("group")
            .args(&members)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ssirun")?;
        let stdout = child.stdout.take().context("a piped stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        if !first.starts_with("group ") {
            bail!("the family group at node {home} did not start: {first:?}");
        }
        parents.push(Owned(child));
    }
    let total: usize = serde_json::from_slice::<Vec<serde_json::Value>>(&ctl(
        &bin,
        &sockets[0],
        &["ps", "--json"],
    )?)?
    .len();
    println!(
        "{total} processes on {n} nodes (started in {:.1} s); periods of {} s",
        started.elapsed().as_secs_f64(),
        args.seconds
    );
    std::thread::sleep(Duration::from_secs(3));
    let period = Duration::from_secs(args.seconds);
    let node_times =
        || -> Result<Vec<Duration>> { nodes.iter().map(|c| cpu_time(c.0.id())).collect() };

    let before = node_times()?;
    std::thread::sleep(period);
    let idle: Vec<Duration> = node_times()?
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();

    let (top, master, seen) = start_top(&bin, &sockets[0])?;
    // Its first snapshots, then the period.
    std::thread::sleep(Duration::from_secs(3));
    let top_before = cpu_time(top.0.id())?;
    let before = node_times()?;
    std::thread::sleep(period);
    let watched: Vec<Duration> = node_times()?
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let top_used = cpu_time(top.0.id())?.saturating_sub(top_before);
    let screen = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .screen()
        .contents();
    let mut top = top;
    if let Some(status) = top.0.try_wait()? {
        bail!("ssictl top ended during the period ({status})");
    }
    drop(top);
    drop(master);
    // It showed them all (so the period measured it at work).
    let shown = format!("Processes {total}");
    if !screen.contains(&shown) {
        bail!(
            "ssictl top does not show `{shown}`: it did not follow the cluster; it shows:\n{screen}"
        );
    }

    println!(
        "ssictl top: {:.2} % of a core (target ≤ 5 %)",
        percent(top_used, period)
    );
    for (i, (w, idle)) in watched.iter().zip(&idle).enumerate() {
        let serving = w.saturating_sub(*idle);
        println!(
            "node {}: {:.2} % of a core serving it (target ≤ 2 %; {:.2} % idle, {:.2} % watched){}",
            i + 1,
            percent(serving, period),
            percent(*idle, period),
            percent(*w, period),
            if i == 0 { ", the node top asks" } else { "" }
        );
    }
    drop(parents);
    Ok(())
}
