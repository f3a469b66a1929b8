//! `ssid`: the node daemon. Every node is both a home (it launches processes
//! and keeps their deputies) and a host (it runs bodies for any home).

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Deserialize;
use ssi_home::{Config, Daemon, MAX_NODE_ID, NodeId};
use ssi_remote::Runtime;
use std::path::PathBuf;

/// Run an ssi node.
#[derive(Parser, Debug)]
#[command(name = "ssid", version)]
struct Args {
    /// This node's id, 1 to 511; it is the high bits of the pids it allocates.
    #[arg(long)]
    node_id: Option<u16>,
    /// The TCP address peers and remote clients connect to (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Another node to join, as ID=HOST:PORT (repeatable).
    #[arg(long = "peer", value_name = "ID=HOST:PORT")]
    peers: Vec<String>,
    /// Where the node keeps its state (its compiled-module cache).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The Unix socket for local clients (default: $XDG_RUNTIME_DIR/ssi/node.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// What this node runs at once, in cores (default: the cores it sees):
    /// several nodes on one machine can stand for a real cluster.
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Whether the node moves its bodies by itself and places new
    /// processes (default: on).
    #[arg(long, value_name = "on|off")]
    balance: Option<OnOff>,
    /// The most its compiled-module cache may hold (as `2GiB`, `500 MB`):
    /// past it, the modules used least recently are removed (default: no bound).
    #[arg(long, value_name = "SIZE")]
    cache_max: Option<String>,
    /// A TOML file with the same settings (`node-id`, `listen`, `peers`,
    /// `data-dir`, `socket`, `cpus`, `balance`, `cache-max`, and a `[policy]`
    /// table); options given on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum OnOff {
    On,
    Off,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node_id: Option<u16>,
    listen: Option<String>,
    #[serde(default)]
    peers: Vec<String>,
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    cpus: Option<f64>,
    balance: Option<OnOff>,
    cache_max: Option<String>,
    #[serde(default)]
    policy: PolicyConfig,
}

/// The balancer's policy, as the `[policy]` table of the configuration file
/// gives it; what it leaves out keeps its default.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct PolicyConfig {
    residency_ms: Option<u64>,
    min_cpu_ms: Option<u64>,
    hysteresis: Option<f64>,
    relative: Option<f64>,
    max_moves: Option<usize>,
    rate: Option<f64>,
    gain_over_cost: Option<f64>,
    io_calls_per_s: Option<f64>,
    stale_ms: Option<u64>,
    swamped: Option<f64>,
}

impl PolicyConfig {
    fn params(&self) -> ssi_home::policy::Params {
        let mut p = ssi_home::policy::Params::default();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { p.$f = v; } )* };
        }
        set!(
            residency_ms,
            min_cpu_ms,
            hysteresis,
            relative,
            max_moves,
            rate,
            gain_over_cost,
            io_calls_per_s,
            stale_ms,
            swamped
        );
        p
    }
}

fn parse_peer(spec: &str) -> Result<(NodeId, String)> {
    let (id, addr) = spec
        .split_once('=')
        .with_context(|| format!("invalid peer `{spec}`: expected ID=HOST:PORT"))?;
    let id: NodeId = id
        .trim()
        .parse()
        .with_context(|| format!("invalid peer `{spec}`: `{id}` is not a node id"))?;
    if id == 0 || id > MAX_NODE_ID {
        bail!("invalid peer `{spec}`: node ids go from 1 to {MAX_NODE_ID}");
    }
    let addr = addr.trim();
    if !addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        bail!("invalid peer `{spec}`: `{addr}` is not HOST:PORT");
    }
    Ok((id, addr.to_string()))
}

/// A size as `--cache-max` takes it.
fn parse_size(size: &str) -> Result<u64> {
    size.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            anyhow::anyhow!(
                "invalid --cache-max `{size}`: {e} (sizes read as 2GiB, 500MB, 1000000)"
            )
        })
}

/// The node's settings, and its cache's bound.
fn config(args: Args) -> Result<(Config, Option<u64>)> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("invalid configuration file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let id = args
        .node_id
        .or(file.node_id)
        .context("no node id: give --node-id N (or `node-id` in the --config file)")?;
    if id == 0 || id > MAX_NODE_ID {
        bail!("invalid node id {id}: node ids go from 1 to {MAX_NODE_ID}");
    }
    let listen = args
        .listen
        .or(file.listen)
        .context("no address: give --listen HOST:PORT (or `listen` in the --config file)")?;
    let peer_specs = if args.peers.is_empty() {
        file.peers
    } else {
        args.peers
    };
    let peers = peer_specs
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<Vec<_>>>()?;
    let cpus = args.cpus.or(file.cpus);
    if let Some(n) = cpus
        && !(n > 0.0 && n.is_finite())
    {
        bail!("invalid --cpus {n}: a node runs more than 0 cores");
    }
    let socket = args
        .socket
        .or(file.socket)
        .unwrap_or_else(ssi_home::default_socket);
    let mut config = Config::new(id, listen, socket);
    config.peers = peers;
    config.data_dir = args.data_dir.or(file.data_dir);
    config.cpus = cpus;
    config.balance = args.balance.or(file.balance) != Some(OnOff::Off);
    config.policy = file.policy.params();
    let cache_max = args
        .cache_max
        .or(file.cache_max)
        .map(|s| parse_size(&s))
        .transpose()?;
    Ok((config, cache_max))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ssid: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SSI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (config, cache_max) = config(Args::parse())?;
    let cache = match &config.data_dir {
        Some(dir) => Some(dir.join("modules")),
        None => ssi_remote::default_cache_dir(),
    };
    // Optimised code at once: the peers that run the node's programs take
    // it from the node rather than compile it again (the quick tier's code
    // is not shared).
    let mut runtime = Runtime::interruptible(cache)
        .context("cannot start the WebAssembly engine")?
        .without_quick_tier();
    if let Some(max) = cache_max {
        runtime = runtime.with_cache_max(max);
    }
    let (id, listen, socket) = (config.id, config.listen.clone(), config.socket.clone());
    let daemon = Daemon::start(config, runtime).context("cannot start the node")?;
    tracing::info!(node = id, %listen, socket = %socket.display(), "node is up");
    let rt = ssi_home::thread_runtime().context("cannot start the signal handler")?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok::<_, std::io::Error>(())
    })
    .context("cannot wait for signals")?;
    tracing::info!(node = id, "stopping");
    drop(daemon);
    // Bodies hosted here end with the process.
    std::process::exit(0)
}
