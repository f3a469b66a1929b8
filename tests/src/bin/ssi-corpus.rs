//! The corpus (`ssi_tests::corpus`) outside the tests.
//!
//! - `ssi-corpus` fetches it and prints each program's name, language and
//!   module path, one per line, tab-separated (what `tools/coldstart.sh`
//!   starts from);
//! - `ssi-corpus bench [RUNS]` times each program's long case (the one the
//!   tests move ten times and more) under `ssirun`, embedded, its compiled
//!   code cached, against the reference the tests compare with: the same
//!   module uninstrumented, on wasmtime with `wasmtime-wasi`'s preview1 in
//!   this process. Each run of both must give the same results; it prints
//!   the medians and their ratio.

use ssi_tests::corpus::cases::{Size, case};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let programs = match ssi_tests::corpus::fetch_all() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ssi-corpus: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {
            for (p, module) in programs {
                println!("{}\t{}\t{}", p.name, p.language, module.display());
            }
            ExitCode::SUCCESS
        }
        Some("bench") => {
            let runs = match args.next().map(|r| r.parse::<usize>()) {
                None => 5,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    eprintln!("ssi-corpus: bench RUNS: a positive number");
                    return ExitCode::FAILURE;
                }
            };
            bench(&programs, runs)
        }
        Some(other) => {
            eprintln!("ssi-corpus: `{other}`: the commands are none (list) and `bench [RUNS]`");
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(programs: &[(ssi_tests::corpus::Program, std::path::PathBuf)], runs: usize) -> ExitCode {
    println!("| program | ssirun (instrumented) | reference (as is) | ratio |");
    println!("| --- | --- | --- | --- |");
    for (program, _) in programs {
        let case = case(program, Size::Long);
        // Warm both: ssirun's cache and the reference's compiled module.
        let expected = case.run_reference();
        let _ = case.run_ssirun();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let got = case.run_ssirun();
            ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let reference = case.run_reference();
            theirs.push(t.elapsed().as_secs_f64());
            if got != expected || reference != expected {
                eprintln!(
                    "ssi-corpus: {} gave other results (status {} against {})",
                    program.name, got.0.status, expected.0.status
                );
                return ExitCode::FAILURE;
            }
        }
        let (a, b) = (median(ours), median(theirs));
        println!("| {} | {a:.3} s | {b:.3} s | {:.3}× |", program.name, a / b);
    }
    ExitCode::SUCCESS
}
