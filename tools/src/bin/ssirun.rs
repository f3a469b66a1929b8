//! `ssirun`: run a WASI program as if it were local.
//!
//! With no cluster running, the process runs in this process as a one-node
//! cluster (the embedded default): its deputy is here, its body runs here.

use anyhow::{Context, Result};
use clap::Parser;
use ssi_deputy::{Preopen, Stdio};
use ssi_home::{LaunchSpec, Node};
use ssi_remote::{BodySpec, Exit, Runtime};
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Do not cache compiled code on disk.
    #[arg(long)]
    no_cache: bool,
    /// The WebAssembly module (binary or text) to run.
    module: PathBuf,
    /// Arguments passed to the program.
    #[arg(allow_hyphen_values = true)]
    args: Vec<String>,
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
}

fn run(args: Args) -> Result<Outcome> {
    let module_name = args.module.display().to_string();
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module `{module_name}`"))?;
    let preopens = args
        .dirs
        .iter()
        .map(|d| parse_dir(d))
        .collect::<Result<Vec<_>>>()?;
    let env = args
        .envs
        .iter()
        .map(|e| parse_env(e))
        .collect::<Result<Vec<_>>>()?;
    // As `wasmtime run`: argv[0] is the module's file name.
    let argv0 = args
        .module
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| module_name.clone());
    let mut argv = vec![argv0];
    argv.extend(args.args.iter().cloned());
    let cache = if args.no_cache {
        None
    } else {
        ssi_remote::default_cache_dir()
    };
    let runtime = Runtime::new(cache).context("cannot start the embedded node")?;
    let node = Node::new(1, runtime).context("cannot start the embedded node")?;
    let process = node
        .launch(LaunchSpec {
            module: bytes,
            command: argv.join(" "),
            body: BodySpec { args: argv, env },
            preopens,
            stdio: Stdio::inherit(),
        })
        .with_context(|| format!("cannot run `{module_name}`"))?;
    let finished = process.run();
    Ok(match finished.exit {
        Exit::Status(code) => Outcome::Exited(code),
        Exit::Trap(e) | Exit::Failed(e) => {
            let trap = e.is::<ssi_remote::Trap>();
            Outcome::Stopped {
                message: format!(
                    "{:?}",
                    e.context("failed to invoke command default")
                        .context(format!("failed to run main module `{module_name}`"))
                ),
                trap,
            }
        }
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
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
        Err(e) => {
            eprintln!("ssirun: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
