//! `ssi-bench`: measures `ssirun` against the `wasmtime` CLI in one run.
//!
//! Each workload runs alternately under both runners (after one warm-up run each,
//! which also fills both compiled-code caches), and the median wall times and their
//! ratio are printed. Workloads: launching `hello` with a warm cache, two compute
//! kernels (`compute`: loops; `churn`: deep recursion, stack arrays, a changing
//! heap), and 100 MiB written to stdout (drained through a pipe). Every body of
//! `ssirun` is instrumented to be freezable, so the kernels' ratios are the
//! price of that instrumentation.

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
}

/// Runs a command to completion, draining stdout through a pipe; returns its wall time.
fn time(cmd: &mut Command) -> Result<(Duration, u64)> {
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
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok((elapsed, total))
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
        "{:<28} {:>12} {:>12} {:>8}  note",
        "workload", "ssirun", "wasmtime", "ratio"
    );
    for w in &workloads {
        let module = args.guests.join(format!("{}.wasm", w.guest));
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut bytes = 0;
        for round in 0..=args.rounds {
            // The embedded default: no node is used even if one is running.
            let (a, n) = time(
                Command::new(&ssirun)
                    .env("SSI_SOCKET", "/nonexistent/ssi-bench.sock")
                    .env_remove("SSI_CONNECT")
                    .arg(&module)
                    .args(w.args),
            )?;
            let (b, _) = time(
                Command::new(&args.wasmtime)
                    .arg("run")
                    .arg(&module)
                    .args(w.args),
            )?;
            if round > 0 {
                ours.push(a);
                theirs.push(b);
            }
            bytes = n;
        }
        let (a, b) = (median(ours), median(theirs));
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
            "{:<28} {:>10.2}ms {:>10.2}ms {:>7.3}x  {}",
            w.name,
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            ratio,
            note
        );
    }
    Ok(())
}
