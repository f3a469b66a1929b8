//! `ssi-bench`: measures `ssirun` against the `wasmtime` CLI in one run.
//!
//! Each workload runs alternately under both runners (after one warm-up run each,
//! which also fills both compiled-code caches, `ssirun`'s with the optimised
//! code by `ssirun --fill-cache`), and the median wall times and their
//! ratio are printed. Workloads: launching `hello` with a warm cache, two compute
//! kernels (`compute`: loops; `churn`: deep recursion, stack arrays, a changing
//! heap), and 100 MiB written to stdout (drained through a pipe). Every body of
//! `ssirun` is instrumented to be freezable; each workload also runs under
//! `ssirun --as-is` (the same module compiled as it is, on the same engine,
//! under the same deputy), and the `overhead` column is the price of that
//! instrumentation alone.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "ssi-bench")]
struct Args {
    /// The `wasmtime` CLI to compare against.
    #[arg(long, default_value = "wasmtime")]
    wasmtime: PathBuf,
    /// The `ssirun` binary (default: next to this one).
    #[arg(long)]
    ssirun: Option<PathBuf>,
    /// Directory holding the built guests (hello.wasm, compute.wasm, bigout.wasm).
    #[arg(long)]
    guests: PathBuf,
    /// Alternating rounds per workload.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Only the first-load table, for these modules (paths).
    #[arg(long, num_args = 1..)]
    first_load: Vec<PathBuf>,
    /// Only the shared-code table, for these modules (paths): what a node
    /// that lacks a module's code pays to compile it against taking the
    /// code a peer compiled.
    #[arg(long, num_args = 1..)]
    share: Vec<PathBuf>,
}

/// What a run printed: its length and a digest of its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Printed {
    bytes: u64,
    digest: u64,
}

/// Runs a command to completion, draining stdout through a pipe; returns its
/// wall time and what it printed.
fn time(cmd: &mut Command) -> Result<(Duration, Printed)> {
    use std::hash::Hasher;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut out = child.stdout.take().context("stdout pipe")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    let mut digest = std::hash::DefaultHasher::new();
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        digest.write(&buf[..n]);
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok((
        elapsed,
        Printed {
            bytes: total,
            digest: digest.finish(),
        },
    ))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Workload {
    name: &'static str,
    guest: &'static str,
    args: &'static [&'static str],
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.share.is_empty() {
        return share(&args.share);
    }
    if !args.first_load.is_empty() {
        let paths: Vec<&std::path::Path> = args.first_load.iter().map(PathBuf::as_path).collect();
        return first_load(&paths);
    }
    let ssirun = match &args.ssirun {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("ssirun"),
    };
    let workloads = [
        Workload {
            name: "launch hello (warm cache)",
            guest: "hello",
            args: &[],
        },
        Workload {
            name: "compute kernel",
            guest: "compute",
            args: &["3"],
        },
        Workload {
            name: "compute: churn (recursion)",
            guest: "churn",
            args: &["1000"],
        },
        Workload {
            name: "100 MiB to stdout",
            guest: "bigout",
            args: &["100"],
        },
    ];
    println!("ssirun:   {}", ssirun.display());
    let version = Command::new(&args.wasmtime)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", args.wasmtime.display()))?;
    println!(
        "wasmtime: {} ({})",
        args.wasmtime.display(),
        String::from_utf8_lossy(&version.stdout).trim()
    );
    println!("rounds:   {} alternating, median wall time\n", args.rounds);
    println!(
        "{:<28} {:>12} {:>12} {:>9} {:>12} {:>8}  note",
        "workload", "ssirun", "as is", "overhead", "wasmtime", "ratio"
    );
    for w in &workloads {
        let module = args.guests.join(format!("{}.wasm", w.guest));
        let mut ours = Vec::new();
        let mut as_is = Vec::new();
        let mut theirs = Vec::new();
        let mut bytes = 0;
        // The optimised code cached first, as a first long run leaves it
        // (a short warm-up run would leave only the quick tier's).
        let filled = Command::new(&ssirun)
            .arg("--fill-cache")
            .arg(&module)
            .status()
            .with_context(|| format!("cannot run {}", ssirun.display()))?;
        if !filled.success() {
            bail!("{}: ssirun --fill-cache failed ({filled})", w.name);
        }
        for round in 0..=args.rounds {
            // The embedded default: no node is used even if one is running.
            let (a, n) = time(
                Command::new(&ssirun)
                    .env("SSI_SOCKET", "/nonexistent/ssi-bench.sock")
                    .env_remove("SSI_CONNECT")
                    .arg(&module)
                    .args(w.args),
            )?;
            // The same module compiled as it is, on the same engine, under
            // the same deputy: the instrumentation's overhead alone.
            let (p, plain) = time(
                Command::new(&ssirun)
                    .env("SSI_SOCKET", "/nonexistent/ssi-bench.sock")
                    .env_remove("SSI_CONNECT")
                    .arg("--as-is")
                    .arg(&module)
                    .args(w.args),
            )?;
            let (b, reference) = time(
                Command::new(&args.wasmtime)
                    .arg("run")
                    .arg(&module)
                    .args(w.args),
            )?;
            // A run that skipped work would read as a speed-up: every round
            // must print what wasmtime prints.
            if n != reference || plain != reference {
                bail!(
                    "{}: ssirun printed {} bytes, wasmtime {} (or other bytes): no ratio",
                    w.name,
                    n.bytes,
                    reference.bytes
                );
            }
            if round > 0 {
                ours.push(a);
                as_is.push(p);
                theirs.push(b);
            }
            bytes = n.bytes;
        }
        let (a, p, b) = (median(ours), median(as_is), median(theirs));
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        let note = if w.guest == "bigout" {
            let mib = bytes as f64 / (1 << 20) as f64;
            format!(
                "throughput {:.0} vs {:.0} MiB/s = {:.2}x",
                mib / a.as_secs_f64(),
                mib / b.as_secs_f64(),
                b.as_secs_f64() / a.as_secs_f64()
            )
        } else {
            String::new()
        };
        println!(
            "{:<28} {:>10.2}ms {:>10.2}ms {:>8.3}x {:>10.2}ms {:>7.3}x  {}",
            w.name,
            a.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            a.as_secs_f64() / p.as_secs_f64(),
            b.as_secs_f64() * 1e3,
            ratio,
            note
        );
    }
    let paths: Vec<PathBuf> = ["compute", "churn", "conformance", "family"]
        .iter()
        .map(|n| args.guests.join(format!("{n}.wasm")))
        .collect();
    first_load(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())
}

/// What instrumentation costs when a node first loads a module (afterwards
/// the result comes from the cache): rewriting it, compiling its runnable
/// part by the quick tier (what a first launch waits for) and by the
/// optimising engine, and its whole module (compiled later, on a thread of
/// its own), against compiling it as it is with the optimising engine (as
/// `wasmtime run` does); and the sizes of each.
fn first_load(modules: &[&std::path::Path]) -> Result<()> {
    use ssi_remote::{
        Module, Runtime,
        instrument::{instrument, instrument_runnable},
    };
    let runtime = Runtime::new(None)?;
    let engine = runtime.engine();
    let quick_engine = runtime
        .quick_engine()
        .context("this runtime has no quick tier")?;
    println!(
        "\nfirst load (best of 3): rewrite (the runnable part alone, or both) + compile the runnable part by the quick tier (launch) or the whole module, vs compile as is, optimised"
    );
    println!(
        "{:<14} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>9} {:>9} {:>9}",
        "module",
        "rewrite",
        "both",
        "quick",
        "runnable",
        "whole",
        "as is",
        "launch",
        "whole",
        "wasm run",
        "wasm all",
        "as is"
    );
    for path in modules {
        let (name, wasm) = read_module(path)?;
        let (mut rewrite, mut rewrite_all, mut runnable, mut whole, mut plain) =
            (f64::MAX, f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        let mut quick = f64::MAX;
        let mut sizes = (0, 0, 0);
        for _ in 0..3 {
            let t = Instant::now();
            instrument_runnable(&wasm).with_context(|| format!("instrument {name}"))?;
            rewrite = rewrite.min(t.elapsed().as_secs_f64());
            // A module whose rewind copies are made on demand has no
            // whole module: its runnable part is all a node compiles.
            let (runnable_wasm, whole_wasm) = if ssi_remote::instrument::rewinds_on_demand(&wasm) {
                let r = instrument_runnable(&wasm).with_context(|| format!("instrument {name}"))?;
                (r, Vec::new())
            } else {
                let t = Instant::now();
                let done = instrument(&wasm).with_context(|| format!("instrument {name}"))?;
                rewrite_all = rewrite_all.min(t.elapsed().as_secs_f64());
                (done.runnable, done.wasm)
            };
            let t = Instant::now();
            Module::new(quick_engine, &runnable_wasm).map_err(wasmtime_error)?;
            quick = quick.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            Module::new(engine, &runnable_wasm).map_err(wasmtime_error)?;
            runnable = runnable.min(t.elapsed().as_secs_f64());
            if !whole_wasm.is_empty() {
                let t = Instant::now();
                Module::new(engine, &whole_wasm).map_err(wasmtime_error)?;
                whole = whole.min(t.elapsed().as_secs_f64());
            }
            let t = Instant::now();
            Module::new(engine, &wasm).map_err(wasmtime_error)?;
            plain = plain.min(t.elapsed().as_secs_f64());
            sizes = (runnable_wasm.len(), whole_wasm.len(), wasm.len());
        }
        let kib = |b: usize| format!("{:.0} KiB", b as f64 / 1024.0);
        // (No whole module: its rewind copies are made on demand.)
        let (both, whole_ms, whole_ratio) = if sizes.1 == 0 {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            (
                format!("{:.1}ms", rewrite_all * 1e3),
                format!("{:.1}ms", whole * 1e3),
                format!("{:.2}x", (rewrite_all + whole) / plain),
            )
        };
        println!(
            "{:<14} {:>7.1}ms {:>9} {:>8.1}ms {:>8.1}ms {:>10} {:>8.1}ms {:>6.2}x {:>7} {:>9} {:>9} {:>9}",
            name,
            rewrite * 1e3,
            both,
            quick * 1e3,
            runnable * 1e3,
            whole_ms,
            plain * 1e3,
            (rewrite + quick) / plain,
            whole_ratio,
            kib(sizes.0),
            kib(sizes.1),
            kib(sizes.2),
        );
    }
    Ok(())
}

/// What a node that lacks a module's compiled code pays for it: compiling
/// it (instrumenting, compiling the whole module, caching it) against taking
/// the code a node of the same fingerprint compiled (read from that node's
/// cache, loaded and checked here, cached), in one process; over a network
/// the code's size crosses the link too.
fn share(modules: &[PathBuf]) -> Result<()> {
    use ssi_remote::{ModuleHash, Runtime};
    println!(
        "\nshared code (best of 3): a node compiles the whole module, or takes a peer's compiled code"
    );
    println!(
        "{:<22} {:>10} {:>10} {:>9} {:>10}",
        "module", "compile", "take", "ratio", "code"
    );
    for path in modules {
        let (name, wasm) = read_module(path)?;
        let hash = ModuleHash::of(&wasm);
        let (mut compile, mut take, mut size) = (f64::MAX, f64::MAX, 0);
        for _ in 0..3 {
            let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
            let holder = Runtime::interruptible(Some(a.path().to_path_buf()))?;
            let taker = Runtime::interruptible(Some(b.path().to_path_buf()))?;
            let t = Instant::now();
            holder
                .load_whole(&wasm)
                .with_context(|| format!("compile {name}"))?;
            compile = compile.min(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let shared = holder
                .shared_code(&hash, None)
                .with_context(|| format!("{name}: no code in the holder's cache"))?;
            taker
                .adopt(hash, &shared, wasm.clone().into())
                .with_context(|| format!("adopt {name}"))?;
            take = take.min(t.elapsed().as_secs_f64());
            size = shared.code.len();
        }
        println!(
            "{:<22} {:>8.0}ms {:>8.0}ms {:>8.0}x {:>7.1} MB",
            name,
            compile * 1e3,
            take * 1e3,
            compile / take,
            size as f64 / 1e6
        );
    }
    Ok(())
}

/// A module file's bytes, and its name for a table (the file's stem).
fn read_module(path: &std::path::Path) -> Result<(String, Vec<u8>)> {
    let name = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wasm = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    Ok((name, wasm))
}

fn wasmtime_error(e: ssi_remote::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#}")
}
