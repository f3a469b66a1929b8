//! The corpus (`ssi_tests::corpus`) outside the tests.
//!
//! - `ssi-corpus` fetches it and prints each program's name, language and
//!   module path, one per line, tab-separated (what `tools/coldstart.sh`
//!   starts from);
//! - `ssi-corpus bench [RUNS [NAME]]` times each program's long case (the
//!   one the tests move ten times and more), or NAME's alone, under
//!   `ssirun`, embedded, its compiled code cached, against the same module
//!   compiled as it is, not instrumented, on the same engine and under the
//!   same deputy (`ssirun --as-is`): the instrumentation's overhead; and
//!   against the reference the tests compare with, the module as it is on
//!   wasmtime with `wasmtime-wasi`'s preview1 in this process. The three
//!   take turns; each run must give the same results; it prints the medians
//!   and their ratios;
//! - `ssi-corpus case NAME DIR` writes the files of program NAME's long case
//!   into DIR and prints the arguments that run it (after `ssirun` or
//!   `wasmtime run`), to run or profile it by hand.

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
            // A name: that program alone.
            let only = args.next();
            if let Some(name) = &only
                && !programs.iter().any(|(p, _)| p.name == name.as_str())
            {
                eprintln!("ssi-corpus: bench RUNS NAME: `{name}` is no program of the corpus");
                return ExitCode::FAILURE;
            }
            let chosen: Vec<_> = programs
                .into_iter()
                .filter(|(p, _)| only.as_deref().is_none_or(|n| p.name == n))
                .collect();
            bench(&chosen, runs)
        }
        Some("case") => match (args.next(), args.next()) {
            (Some(name), Some(dir)) => write_case(&programs, &name, std::path::Path::new(&dir)),
            _ => {
                eprintln!("ssi-corpus: case NAME DIR: a program's name and a directory");
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!(
                "ssi-corpus: `{other}`: the commands are none (list), `bench [RUNS [NAME]]` and `case NAME DIR`"
            );
            ExitCode::FAILURE
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(programs: &[(ssi_tests::corpus::Program, std::path::PathBuf)], runs: usize) -> ExitCode {
    println!(
        "| program | ssirun (instrumented) | ssirun --as-is | overhead | wasmtime-wasi (in process) | ratio |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (program, _) in programs {
        let case = case(program, Size::Long);
        // Warm all three: ssirun's cache (its whole module, compiled at
        // once rather than left to a process of its own by a run that
        // ended first), the module's code as it is, and the reference's.
        let expected = case.run_reference();
        let filled = std::process::Command::new(ssi_tests::bin("ssirun"))
            .arg("--fill-cache")
            .arg(&case.guest)
            .status();
        if !filled.is_ok_and(|s| s.success()) {
            eprintln!(
                "ssi-corpus: ssirun --fill-cache {} failed",
                case.guest.display()
            );
            return ExitCode::FAILURE;
        }
        let _ = case.run_ssirun();
        let _ = case.run_ssirun_with(&["--as-is"]);
        let (mut ours, mut as_is, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let got = case.run_ssirun();
            ours.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let plain = case.run_ssirun_with(&["--as-is"]);
            as_is.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let reference = case.run_reference();
            theirs.push(t.elapsed().as_secs_f64());
            for (runner, outcome) in [
                ("ssirun", &got),
                ("ssirun --as-is", &plain),
                ("the reference", &reference),
            ] {
                if *outcome != expected {
                    eprintln!(
                        "ssi-corpus: {} under {runner} gave other results (status {} against {})",
                        program.name, outcome.0.status, expected.0.status
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        let (a, p, r) = (median(ours), median(as_is), median(theirs));
        println!(
            "| {} | {a:.3} s | {p:.3} s | {:.3}× | {r:.3} s | {:.3}× |",
            program.name,
            a / p,
            a / r
        );
    }
    ExitCode::SUCCESS
}

/// Writes program `name`'s long case into `dir`; prints its arguments.
fn write_case(
    programs: &[(ssi_tests::corpus::Program, std::path::PathBuf)],
    name: &str,
    dir: &std::path::Path,
) -> ExitCode {
    let Some((program, _)) = programs.iter().find(|(p, _)| p.name == name) else {
        let names: Vec<&str> = programs.iter().map(|(p, _)| p.name).collect();
        eprintln!(
            "ssi-corpus: no program `{name}` (there are {})",
            names.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let case = case(program, Size::Long);
    let mut line = Vec::new();
    if let Some(files) = &case.sandbox {
        for (file, data) in files {
            let path = dir.join(file);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, data));
            if let Err(e) = written {
                eprintln!("ssi-corpus: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
        line.push(format!("--dir {}::{}", dir.display(), case.guest_dir));
    }
    for (host, guest) in &case.dirs {
        line.push(format!("--dir {}::{guest}", host.display()));
    }
    for (k, v) in &case.env {
        line.push(format!("--env {k}={v}"));
    }
    line.push(case.guest.display().to_string());
    line.extend(case.args.iter().cloned());
    println!("{}", line.join(" "));
    if !case.stdin.is_empty() {
        let path = dir.join("stdin");
        if let Err(e) = std::fs::write(&path, &case.stdin) {
            eprintln!("ssi-corpus: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("(its input is in {})", path.display());
    }
    ExitCode::SUCCESS
}
