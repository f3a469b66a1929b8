//! The options of `wasmtime run` that `ssirun` takes mean what they mean to
//! wasmtime, wherever the body runs and after it moves; the others are
//! refused by name.

use ssi_tests::{Case, Cluster, Proc, bin, shell_status, try_migrate};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A program that imports two functions nothing provides, calls one of them
/// when a line read from stdin starts with `c`, echoes other lines, and ends
/// at the end of its input.
fn unknown_imports_module(dir: &Path) -> PathBuf {
    let module = dir.join("unknown_imports.wat");
    std::fs::write(
        &module,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "env" "never_called" (func $never))
            (import "env" "called" (func $called))
            (memory (export "memory") 1)
            (data (i32.const 200) "ready\n")
            (func $say (param $at i32) (param $len i32)
                (i32.store (i32.const 0) (local.get $at))
                (i32.store (i32.const 4) (local.get $len))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            (func (export "_start")
                (call $say (i32.const 200) (i32.const 6))
                (loop $l
                    (i32.store (i32.const 16) (i32.const 300))
                    (i32.store (i32.const 20) (i32.const 100))
                    (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
                    (if (i32.eqz (i32.load (i32.const 24))) (then return))
                    (if (i32.eq (i32.load8_u (i32.const 300)) (i32.const 99)) (then (call $called)))
                    (call $say (i32.const 300) (i32.load (i32.const 24)))
                    (br $l)))
            (func (export "unused") (call $never)))"#,
    )
    .expect("write the module");
    module
}

#[test]
fn unknown_imports_trap_lets_a_module_run_and_traps_only_when_one_is_called() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = unknown_imports_module(dir.path());
    // As wasmtime: refused by default, naming the import.
    let (refused, _) = Case::new(module.clone()).stdin(b"x\n").run_ssirun();
    assert_eq!(refused.status, 1, "{}", refused.stderr_text());
    assert!(
        refused.stderr_text().contains("env::never_called"),
        "{}",
        refused.stderr_text()
    );
    // With the option it runs, and `=n` is the default again.
    let (ran, _) = Case::new(module.clone())
        .stdin(b"x\n")
        .run_ssirun_with(&["-W", "unknown-imports-trap=y"]);
    assert_eq!(ran.stdout_text(), "ready\nx\n", "{}", ran.stderr_text());
    assert_eq!(ran.status, 0);
    let (off, _) = Case::new(module.clone())
        .stdin(b"x\n")
        .run_ssirun_with(&["-W", "unknown-imports-trap=n"]);
    assert_eq!(off.status, 1, "{}", off.stderr_text());
    // Calling one stops the program, naming it (with wasmtime's status for
    // an error that is not a trap code).
    let (trapped, _) = Case::new(module)
        .stdin(b"c\n")
        .run_ssirun_with(&["-W", "unknown-imports-trap"]);
    assert_eq!(trapped.stdout_text(), "ready\n");
    assert_eq!(trapped.status, 1, "{}", trapped.stderr_text());
    assert!(
        trapped.stderr_text().contains("env::called"),
        "{}",
        trapped.stderr_text()
    );
}

/// Launched on another node with the option, the process moves (the node it
/// goes to links it the same way) and traps there when it calls one.
#[test]
fn unknown_imports_trap_goes_with_a_process_that_moves() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = unknown_imports_module(dir.path());
    let cluster = Cluster::start(3);
    let launch = |extra: &[&str]| {
        Proc::spawn(
            Command::new(bin("ssirun"))
                .arg("--connect")
                .arg(cluster.socket(1))
                .args(["--node", "2"])
                .args(extra)
                .arg(&module)
                .stdin(Stdio::piped()),
            "ssirun unknown_imports.wat",
        )
    };
    // Refused at the node too, without it.
    let refused = launch(&[]).wait();
    assert_eq!(shell_status(refused.status), 1);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("env::never_called"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut child = launch(&["-W", "unknown-imports-trap=y"]);
    let mut stdin = child.stdin();
    assert_eq!(child.line("its first line"), "ready");
    let pid = cluster.pid_of(1, "unknown_imports.wat", |c| c.contains("unknown_imports"));
    for (line, to) in [("a", 3), ("b", 1)] {
        let report = match try_migrate(&cluster, 1, pid, to) {
            Ok(r) => r,
            Err(e) => {
                let out = child.wait();
                panic!(
                    "{e}\nssirun ended with {}: {}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        };
        assert_eq!(report["to"].as_u64(), Some(to as u64), "{report}");
        writeln!(stdin, "{line}").expect("write");
        stdin.flush().expect("flush");
        assert_eq!(child.line("the echo after a move"), line);
    }
    writeln!(stdin, "c").expect("write");
    stdin.flush().expect("flush");
    let out = child.wait();
    assert_eq!(shell_status(out.status), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("env::called"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wasmtime_options_ssirun_does_not_take_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = unknown_imports_module(dir.path());
    for (options, named) in [
        (&["-W", "max-memory-size=65536"][..], "max-memory-size"),
        (&["-W", "fuel=10"][..], "fuel"),
        (&["-W", "unknown-imports-trap=maybe"][..], "maybe"),
        (&["-S", "tcp"][..], "tcp"),
        (&["-W", "unknown-imports-trap,bogus"][..], "bogus"),
    ] {
        let (out, _) = Case::new(module.clone()).run_ssirun_with(options);
        assert_eq!(out.status, 1, "{options:?}: {}", out.stderr_text());
        assert!(
            out.stderr_text().contains(named),
            "{options:?}: {}",
            out.stderr_text()
        );
    }
}

/// As under `wasmtime run`, everything after the module is the program's,
/// even what ssirun would take as its own option.
#[test]
fn what_follows_the_module_is_the_programs_even_help_and_version() {
    let (out, _) = Case::new(ssi_tests::guest("args_env"))
        .args(&["--version", "--help", "-W", "x", "--dir", "/"])
        .run_ssirun();
    let text = out.stdout_text();
    assert_eq!(out.status, 0, "{}", out.stderr_text());
    for (i, a) in ["--version", "--help", "-W", "x", "--dir", "/"]
        .iter()
        .enumerate()
    {
        assert!(
            text.contains(&format!("arg[{}] = \"{a}\"", i + 1)),
            "{text}"
        );
    }
}
