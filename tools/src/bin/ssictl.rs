//! `ssictl`: the cluster's admin command: every process and every node, from any node.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use serde_json::json;
use ssi_deputy::Signal;
use ssi_home::events::Event;
use ssi_home::{Endpoint, NodeInfo, ProcessInfo};
use ssi_tools::figures::{age, bytes, cpu_time};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Administer an ssi cluster.
#[derive(Parser, Debug)]
#[command(name = "ssictl", version)]
struct Args {
    /// The node to ask: a Unix socket path or HOST:PORT (default: the local
    /// node's socket; `SSI_CONNECT` also sets it).
    #[arg(long, global = true, value_name = "SOCKET|HOST:PORT")]
    connect: Option<String>,
    /// Give up on an answer after SECONDS (0: wait as long as it takes).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 60.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every process in the cluster: pid, process group, home, node, state,
    /// whether it can move (be migrated and checkpointed), CPU time, memory, age, command.
    Ps {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every node: id, address, up or down, cores (its capacity), its own
    /// load (the CPU its bodies use over its capacity), processes, memory.
    Nodes {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a signal, as kill(1): `kill [-SIGNAL | -s SIGNAL] PID` or `-PGID` for a
    /// process group (default SIGTERM; names such as INT or SIGINT, or numbers).
    Kill {
        #[arg(allow_hyphen_values = true, num_args = 1..=3, value_name = "[-SIGNAL] TARGET")]
        args: Vec<String>,
    },
    /// Move a running process to another node, now: it keeps its pid, its open
    /// files and its terminal.
    Migrate {
        pid: u32,
        node: u16,
        /// Print the migration's figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What happened in the cluster: processes started, ended, moved (by
    /// whom, frozen how long), checkpointed, stopped and continued; nodes up,
    /// down, joined, drained; compiled code fetched from a peer. The latest
    /// first, then with `--follow` every
    /// new one as it happens.
    Events {
        /// Keep printing events as they happen (until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// How many of the latest events to print first.
        #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
        last: u32,
        /// One JSON object per line: time, time_ms, kind, pid, node,
        /// message, and from, by, frozen_us, status where they apply.
        #[arg(long)]
        json: bool,
    },
    /// A live, full-screen dashboard of the cluster: nodes, their load and
    /// memory, every process and where it runs, the latest events; migrate,
    /// signal, checkpoint, stop, continue, pin a process, drain a node. `?`
    /// shows the keys.
    Top {
        /// Seconds between refreshes.
        #[arg(short, long, default_value_t = 1.0, value_name = "SECONDS")]
        delay: f64,
    },
    /// Take a node out of service: every body on it that can move goes to
    /// other nodes, and no new work comes to it until `undrain`.
    Drain { node: u16 },
    /// Let a drained node take work again.
    Undrain { node: u16 },
    /// Keep a process where it runs (moved to NODE first, if given): the
    /// balancer never moves it (`migrate` still does).
    Pin { pid: u32, node: Option<u16> },
    /// Let the balancer move a pinned process again.
    Unpin { pid: u32 },
    /// Write a running process's checkpoint to a file (its ghost image, its
    /// open files with their offsets, its pid, arguments and environment, and
    /// its module); `ssirun --restore FILE` restarts it, on any node.
    Checkpoint {
        pid: u32,
        /// The checkpoint file (replaced whole, never left half written).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: std::path::PathBuf,
        /// Stop the process once its checkpoint is taken.
        #[arg(long)]
        stop: bool,
        /// Print the checkpoint's figures as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Reads kill(1)'s arguments: the signal and the target (pid, or -pgid).
fn kill_args(args: &[String]) -> Result<(Signal, i32)> {
    let args: Vec<&str> = args
        .iter()
        .map(|a| a.as_str())
        .filter(|a| *a != "--")
        .collect();
    let (signal, target) = match args.as_slice() {
        ["-s" | "--signal", sig, target] => (*sig, *target),
        [sig, target] if sig.starts_with('-') => (&sig[1..], *target),
        [target] => ("TERM", *target),
        _ => anyhow::bail!("usage: ssictl kill [-SIGNAL | -s SIGNAL] PID|-PGID"),
    };
    let signal = Signal::parse(signal)?;
    let target: i32 = target
        .parse()
        .ok()
        .filter(|t: &i32| *t != 0 && *t != i32::MIN)
        .with_context(|| format!("`{target}` is not a pid (or -pgid for a process group)"))?;
    Ok((signal, target))
}

fn endpoint(args: &Args) -> Endpoint {
    match args
        .connect
        .clone()
        .or_else(|| std::env::var("SSI_CONNECT").ok().filter(|s| !s.is_empty()))
    {
        Some(e) => Endpoint::parse(&e),
        None => Endpoint::Unix(ssi_home::default_socket()),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn print_ps(procs: &[ProcessInfo], as_json: bool) -> Result<()> {
    let now = now_ms();
    if as_json {
        let rows: Vec<_> = procs
            .iter()
            .map(|p| {
                json!({
                    "pid": p.pid,
                    "home": p.home,
                    "node": p.node,
                    "state": p.state.name(),
                    "cpu_ms": p.cpu_ns / 1_000_000,
                    "memory": p.memory,
                    "ppid": p.ppid,
                    "pgid": p.pgid,
                    "migratable": p.pinned.is_none(),
                    "unmovable": p.pinned,
                    "pinned": p.user_pinned,
                    "moves": p.moves,
                    "started_ms": p.started_ms,
                    "age_ms": now.saturating_sub(p.started_ms),
                    "command": p.command,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>10} {:>10} {:>10} {:>4} {:>4} {:<13} {:>4} {:>3} {:>5} {:>9} {:>8} {:>7}  COMMAND",
        "PID",
        "PPID",
        "PGID",
        "HOME",
        "NODE",
        "STATE",
        "MOVE",
        "PIN",
        "MOVES",
        "TIME",
        "MEM",
        "AGE"
    );
    for p in procs {
        println!(
            "{:>10} {:>10} {:>10} {:>4} {:>4} {:<13} {:>4} {:>3} {:>5} {:>9} {:>8} {:>7}  {}",
            p.pid,
            p.ppid,
            p.pgid,
            p.home,
            p.node,
            p.state.name(),
            // Whether it can be migrated and checkpointed (`--json` says why not).
            if p.pinned.is_none() { "yes" } else { "no" },
            if p.user_pinned { "yes" } else { "-" },
            p.moves,
            cpu_time(p.cpu_ns),
            bytes(p.memory),
            age(now.saturating_sub(p.started_ms)),
            p.command
        );
    }
    Ok(())
}

/// A node's own load: the CPU its bodies use over what it runs at once.
fn own_load(s: &ssi_home::NodeStatus) -> f64 {
    if s.capacity > 0.0 {
        s.demand / s.capacity
    } else {
        0.0
    }
}

fn print_nodes(nodes: &[NodeInfo], as_json: bool) -> Result<()> {
    if as_json {
        let rows: Vec<_> = nodes
            .iter()
            .map(|n| {
                let s = n.status.clone().unwrap_or_default();
                // A node that is down runs nothing this node can vouch
                // for: its last word is kept apart.
                let now = |v: serde_json::Value| if n.up { v } else { serde_json::Value::Null };
                json!({
                    "id": n.id,
                    "address": n.address,
                    "state": if n.up { "up" } else { "down" },
                    "cores": s.cores,
                    "capacity": s.capacity,
                    "demand": now(json!(s.demand)),
                    "load": now(json!(own_load(&s))),
                    "balancing": s.balancing,
                    "draining": s.draining,
                    "host_load1": now(json!(s.load1)),
                    "processes": now(json!(s.processes)),
                    "bodies": now(json!(s.bodies)),
                    "last_bodies": n.status.as_ref().map(|s| s.bodies),
                    "mem_total": s.mem_total,
                    "mem_available": now(json!(s.mem_available)),
                    "last_seen_ms": n.last_seen.map(|d| d.as_millis() as u64),
                    "heartbeats_sent": s.heartbeats_sent,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:>4} {:<22} {:<5} {:>5} {:>6} {:>5} {:>6} {:>17}",
        "ID", "ADDRESS", "STATE", "CORES", "LOAD", "PROCS", "BODIES", "MEM AVAIL/TOTAL"
    );
    for n in nodes {
        let state = match (n.up, n.status.as_ref().is_some_and(|s| s.draining)) {
            (false, _) => "down",
            (true, true) => "drain",
            (true, false) => "up",
        };
        match n.status.as_ref().filter(|_| n.up) {
            Some(s) => println!(
                "{:>4} {:<22} {:<5} {:>5} {:>6.2} {:>5} {:>6} {:>17}",
                n.id,
                n.address,
                state,
                format!("{:.0}", s.capacity),
                own_load(s),
                s.processes,
                s.bodies,
                format!("{}/{}", bytes(s.mem_available), bytes(s.mem_total))
            ),
            None => println!(
                "{:>4} {:<22} {:<5} {:>5} {:>6} {:>5} {:>6} {:>17}",
                n.id, n.address, state, "-", "-", "-", "-", "-"
            ),
        }
    }
    Ok(())
}

/// An event as one line: its time (UTC), its kind and what happened.
fn event_line(e: &Event, as_json: bool) -> String {
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(e.time_ms));
    if as_json {
        let mut o = json!({
            "time": time.to_string(),
            "time_ms": e.time_ms,
            "kind": e.kind,
            "pid": e.pid,
            "node": e.node,
            "message": e.message,
        });
        let extra = [
            ("from", e.from.map(|n| json!(n))),
            ("by", e.by.as_ref().map(|b| json!(b))),
            ("frozen_us", e.frozen_micros.map(|m| json!(m))),
            ("status", e.status.map(|s| json!(s))),
        ];
        for (k, v) in extra {
            if let Some(v) = v {
                o[k] = v;
            }
        }
        o.to_string()
    } else {
        format!("{time}  {:<12} {}", e.kind, e.message)
    }
}

fn run(args: Args) -> Result<()> {
    let endpoint = endpoint(&args);
    if let Command::Top { delay } = args.command {
        if !(delay >= 0.1 && delay.is_finite()) {
            bail!("--delay takes a number of seconds, 0.1 or more");
        }
        return ssi_tools::top::run(endpoint, Duration::from_secs_f64(delay));
    }
    if !(args.timeout >= 0.0 && args.timeout.is_finite()) {
        bail!("--timeout takes a number of seconds, 0 or more");
    }
    let limit = (args.timeout > 0.0).then(|| std::time::Duration::from_secs_f64(args.timeout));
    let rt = ssi_home::thread_runtime().context("cannot start the client runtime")?;
    let local = tokio::task::LocalSet::new();
    let asked = endpoint.to_string();
    // Following has no end: its deadline is on the first answer only.
    let first_answer = limit;
    let limit = match args.command {
        Command::Events { follow: true, .. } => None,
        _ => limit,
    };
    let work = async {
        let gateway = ssi_home::connect(&endpoint)
            .await
            .context("is `ssid` running? (give --connect to reach another node)")?;
        let admin = gateway.admin_request().send().pipeline.get_admin();
        match args.command {
            Command::Ps { json } => {
                let procs = ssi_home::admin_processes(&admin)
                    .await
                    .with_context(|| format!("cannot list processes through {endpoint}"))?;
                print_ps(&procs, json)
            }
            Command::Kill { args } => {
                let (signal, target) = kill_args(&args)?;
                let mut req = admin.kill_request();
                req.get().set_target(target);
                req.get().set_signal(signal.number());
                req.send()
                    .promise
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", ssi_home::remote_message(&e)))?;
                Ok(())
            }
            Command::Pin { pid, node } => {
                let said = |e: capnp::Error| anyhow::anyhow!("{}", ssi_home::remote_message(&e));
                if let Some(node) = node {
                    // Where it runs already is where it stays.
                    let at = ssi_home::admin_processes(&admin)
                        .await
                        .map_err(said)?
                        .into_iter()
                        .find(|p| p.pid == pid)
                        .map(|p| p.node);
                    if at != Some(node) {
                        ssi_home::admin_migrate(&admin, pid, node, None)
                            .await
                            .map_err(said)?;
                    }
                }
                ssi_home::admin_pin(&admin, pid, true).await.map_err(said)?;
                println!("process {pid} is pinned");
                Ok(())
            }
            Command::Unpin { pid } => {
                ssi_home::admin_pin(&admin, pid, false)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", ssi_home::remote_message(&e)))?;
                println!("process {pid} is no longer pinned");
                Ok(())
            }
            Command::Migrate { pid, node, json } => {
                // A bar on a terminal; nothing extra for scripts.
                let bar = if json {
                    None
                } else {
                    ssi_tools::progress_bar("migrate")
                };
                let r = ssi_home::admin_migrate(&admin, pid, node, bar)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", ssi_home::remote_message(&e)))?;
                if json {
                    println!(
                        "{}",
                        json!({
                            "pid": pid, "from": r.from, "to": r.to,
                            "image_bytes": r.image_bytes, "memory_bytes": r.memory_bytes,
                            "freeze_us": r.freeze_micros, "total_us": r.total_micros,
                        })
                    );
                } else {
                    println!(
                        "process {pid} moved from node {} to node {} in {:.2} ms (frozen in {:.2} ms; image {} for {} of memory)",
                        r.from,
                        r.to,
                        r.total_micros as f64 / 1000.0,
                        r.freeze_micros as f64 / 1000.0,
                        bytes(r.image_bytes),
                        bytes(r.memory_bytes)
                    );
                }
                Ok(())
            }
            Command::Checkpoint {
                pid,
                output,
                stop,
                json,
            } => {
                let (file, sink) = ssi_tools::CheckpointFile::create(&output, !json)?;
                let r = ssi_home::admin_checkpoint(&admin, pid, stop, sink)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", ssi_home::remote_message(&e)))?;
                let written = file.commit()?;
                if json {
                    println!(
                        "{}",
                        json!({
                            "pid": pid, "node": r.node, "file": output.display().to_string(),
                            "image_bytes": written, "memory_bytes": r.memory_bytes,
                            "freeze_us": r.freeze_micros, "total_us": r.total_micros,
                            "stopped": stop,
                        })
                    );
                } else {
                    println!(
                        "process {pid} checkpointed to {} in {:.2} ms (frozen in {:.2} ms; a {} file, the module included, for {} of memory){}",
                        output.display(),
                        r.total_micros as f64 / 1000.0,
                        r.freeze_micros as f64 / 1000.0,
                        bytes(written),
                        bytes(r.memory_bytes),
                        if stop { "; it is stopped" } else { "" }
                    );
                }
                Ok(())
            }
            Command::Events { follow, last, json } => {
                let asking = ssi_home::admin_events(&admin, last, follow);
                let answer = match first_answer {
                    Some(d) => tokio::time::timeout(d, asking)
                        .await
                        .map_err(|_| anyhow::anyhow!("no answer from {endpoint} within {d:?}"))?,
                    None => asking.await,
                };
                let mut events =
                    answer.with_context(|| format!("cannot read events through {endpoint}"))?;
                let mut out = std::io::stdout().lock();
                // The backlog is in; then, following, each batch as it comes.
                while let Ok(batch) = events.try_recv() {
                    for e in batch {
                        writeln!(out, "{}", event_line(&e, json))?;
                    }
                }
                out.flush()?;
                if !follow {
                    return Ok(());
                }
                while let Some(batch) = events.next().await {
                    for e in batch {
                        writeln!(out, "{}", event_line(&e, json))?;
                    }
                    out.flush()?;
                }
                bail!("{endpoint} stopped sending events (the node went away)")
            }
            Command::Top { .. } => unreachable!("handled before connecting"),
            Command::Drain { node } => {
                let outcome = ssi_home::admin_drain(&admin, node, true)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", ssi_home::remote_message(&e)))?;
                println!(
                    "node {node} is drained: {} bodies moved off, {} stayed",
                    outcome.moved,
                    outcome.stayed.len()
                );
                for why in &outcome.stayed {
                    println!("  {why}");
                }
                Ok(())
            }
            Command::Undrain { node } => {
                ssi_home::admin_drain(&admin, node, false)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", ssi_home::remote_message(&e)))?;
                println!("node {node} takes work again");
                Ok(())
            }
            Command::Nodes { json } => {
                let nodes = ssi_home::admin_nodes(&admin)
                    .await
                    .with_context(|| format!("cannot list nodes through {endpoint}"))?;
                print_nodes(&nodes, json)
            }
        }
    };
    local.block_on(&rt, async {
        match limit {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "no answer from {asked} within {} s (--timeout sets how long to wait)",
                    args.timeout
                ))
            }),
        }
    })
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssictl: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
