//! Bad input to `ssirun`: a one-line error naming the problem, status 1, no panic.

use ssi_tests::{Outcome, run};

fn ssirun(args: &[&str]) -> Outcome {
    let out = run(
        ssi_tests::ssirun()
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .stdin(std::process::Stdio::null()),
        "ssirun with bad input",
    );
    Outcome {
        status: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, data).expect("write input");
    p.display().to_string()
}

fn one_line_error(out: &Outcome, needle: &str) {
    let err = out.stderr_text();
    assert_eq!(out.status, 1, "status; stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_module_file() {
    one_line_error(
        &ssirun(&["/nonexistent/prog.wasm"]),
        "cannot read module `/nonexistent/prog.wasm`",
    );
}

#[test]
fn file_that_is_not_wasm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(&dir, "script.wasm", b"#!/bin/sh\necho not wasm\n");
    one_line_error(&ssirun(&[&p]), "not a WebAssembly module");
    let p = write(&dir, "broken.wasm", b"\0asm\x01\0\0\0\x01\xff\xff");
    one_line_error(&ssirun(&[&p]), "invalid WebAssembly module");
    let p = write(
        &dir,
        "broken.wat",
        b"(module (func (export \"_start\") (i32.add)))",
    );
    one_line_error(&ssirun(&[&p]), "invalid WebAssembly");
}

#[test]
fn module_without_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "lib.wat",
        b"(module (memory (export \"memory\") 1) (func (export \"f\")))",
    );
    one_line_error(&ssirun(&[&p]), "has no `_start` function");
}

#[test]
fn import_nothing_provides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "imp.wat",
        b"(module (import \"env\" \"mystery\" (func)) (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    one_line_error(
        &ssirun(&[&p]),
        "imports `env::mystery` (function), which is not provided",
    );
    let p = write(
        &dir,
        "imp2.wat",
        b"(module (import \"wasi_snapshot_preview1\" \"fd_teleport\" (func)) (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    one_line_error(&ssirun(&[&p]), "`wasi_snapshot_preview1::fd_teleport`");
    let p = write(
        &dir,
        "imp3.wat",
        b"(module (import \"ssi\" \"teleport\" (func)) (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    one_line_error(&ssirun(&[&p]), "`ssi::teleport`");
}

/// A module that cannot run is refused before it is compiled (which takes
/// minutes for the largest): nothing of it is in the cache after.
#[test]
fn a_module_that_cannot_run_is_refused_before_it_is_compiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "imp.wat",
            b"(module (import \"env\" \"mystery\" (func)) (memory (export \"memory\") 1) (func (export \"_start\") (loop (br 0))))",
            "imports `env::mystery` (function), which is not provided",
        ),
        (
            "lib.wat",
            b"(module (memory (export \"memory\") 1) (func (export \"f\") (loop (br 0))))",
            "has no `_start` function",
        ),
        (
            "start.wat",
            b"(module (memory (export \"memory\") 1) (func (export \"_start\") (param i32) (loop (br 0))))",
            "`_start` has the wrong type",
        ),
    ];
    for (name, text, needle) in cases {
        let p = write(&dir, name, text);
        let out = ssirun_embedded(
            &[&p],
            &[("XDG_CACHE_HOME", &cache.path().display().to_string())],
        );
        let out = Outcome {
            status: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        };
        one_line_error(&out, needle);
        let cached = files(cache.path());
        assert!(
            cached.is_empty(),
            "{name}: compiled before it was refused: {cached:?}"
        );
    }
    // With `-W unknown-imports-trap=y` the first one runs: it is compiled.
    let p = dir.path().join("imp.wat").display().to_string();
    let out = ssirun_embedded(
        &["-W", "unknown-imports-trap=y", "--fill-cache", &p],
        &[("XDG_CACHE_HOME", &cache.path().display().to_string())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !files(cache.path()).is_empty(),
        "the cache is where the test looks"
    );
}

/// The files under `dir`, at any depth.
fn files(dir: &std::path::Path) -> Vec<String> {
    ssi_tests::Tree::of(dir)
        .0
        .into_iter()
        .filter(|(_, node)| matches!(node, ssi_tests::Node::File(_)))
        .map(|(path, _)| path)
        .collect()
}

#[test]
fn bad_dir_and_env_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "ok.wat",
        b"(module (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    let out = ssirun(&["--dir", "/nonexistent-dir", &p]);
    one_line_error(&out, "cannot open directory `/nonexistent-dir`");
    // The cause is said once.
    assert_eq!(
        out.stderr_text()
            .matches("No such file or directory")
            .count(),
        1
    );
    one_line_error(&ssirun(&["--env", "=x", &p]), "invalid --env `=x`");
    one_line_error(
        &ssirun(&["--env", "SSI_SURELY_UNSET_VAR", &p]),
        "SSI_SURELY_UNSET_VAR",
    );
}

#[test]
fn pointer_out_of_bounds_stops_the_guest() {
    // As wasmtime: a guest handing the host a pointer outside its memory is stopped
    // with an error (status 1), not answered with an errno.
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "oob.wat",
        b"(module (import \"wasi_snapshot_preview1\" \"fd_write\" (func $w (param i32 i32 i32 i32) (result i32)))
          (memory (export \"memory\") 1)
          (func (export \"_start\") (drop (call $w (i32.const 1) (i32.const 70000) (i32.const 1) (i32.const 0)))))",
    );
    let out = ssirun(&[&p]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_text().contains("pointer out of the bounds"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn exit_status_out_of_range_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(
        &dir,
        "exit.wat",
        b"(module (import \"wasi_snapshot_preview1\" \"proc_exit\" (func $e (param i32)))
          (memory (export \"memory\") 1)
          (func (export \"_start\") (call $e (i32.const 200))))",
    );
    let out = ssirun(&[&p]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_text().contains("exit with invalid exit status"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn a_checkpoint_dir_that_does_not_exist_is_made_and_a_file_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let hello = ssi_tests::guest("hello").display().to_string();
    let missing = dir.path().join("new/checkpoints");
    let missing_arg = missing.display().to_string();
    let started = std::time::Instant::now();
    let out = ssirun(&[
        "--checkpoint-every",
        "30",
        "--checkpoint-dir",
        &missing_arg,
        &hello,
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr_text());
    // It ends when the program does, not a checkpoint period later.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "ssirun lingered {:?} after its program ended",
        started.elapsed()
    );
    assert!(missing.is_dir(), "the directory was made");
    let file = write(&dir, "a-file", b"x");
    let out = ssirun(&[
        "--checkpoint-every",
        "10",
        "--checkpoint-dir",
        &file,
        &hello,
    ]);
    one_line_error(&out, "it is a file, not a directory");
}

/// `ssirun` with no node, its arguments, the environment given.
fn ssirun_embedded(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = ssi_tests::ssirun();
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    ssi_tests::run(&mut cmd, &format!("ssirun {}", args.join(" ")))
}

/// An argument or (with `-S inherit-env`) an environment variable that is not
/// UTF-8 is refused by name, as `wasmtime run` refuses it: never passed on
/// altered.
#[test]
fn arguments_and_an_environment_that_are_not_utf8_are_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let guest = ssi_tests::guest("args_env");
    let odd = std::ffi::OsStr::from_bytes(b"a\xffb");
    let out = ssi_tests::run(
        ssi_tests::ssirun()
            .arg(&guest)
            .arg("fine")
            .arg(odd)
            .stdin(std::process::Stdio::null()),
        "ssirun args_env with an argument not UTF-8",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a\\xffb") && err.contains("UTF-8"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "it ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = ssi_tests::run(
        ssi_tests::ssirun()
            .env("SSI_ODD", odd)
            .args(["-S", "inherit-env=y"])
            .arg(&guest)
            .stdin(std::process::Stdio::null()),
        "ssirun -S inherit-env with a variable not UTF-8",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SSI_ODD") && err.contains("UTF-8"), "{err}");
}

#[test]
fn wasmtime_options_scripts_pass_mean_what_they_mean_to_wasmtime() {
    let guest = ssi_tests::guest("args_env");
    let guest = guest.to_str().expect("a UTF-8 path");
    // -S inherit-env: the whole environment, --env on top of it.
    let out = ssirun_embedded(
        &["-S", "inherit-env=y", "--env", "SSI_T2=given", guest],
        &[("SSI_T1", "inherited"), ("SSI_T2", "overridden")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("env SSI_T1=\"inherited\""), "{text}");
    assert_eq!(text.matches("env SSI_T2=").count(), 1, "{text}");
    assert!(text.contains("env SSI_T2=\"given\""), "{text}");
    // Without it, nothing but --env.
    let out = ssirun_embedded(&[guest], &[("SSI_T1", "inherited")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SSI_T1"));
    let out = ssirun_embedded(&["-S", "inherit-env=n", guest], &[("SSI_T1", "x")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("SSI_T1"));
    // `--` ends ssirun's options; what follows the module is the program's.
    let out = ssirun_embedded(&["--", guest, "--", "-S"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("arg[1] = \"--\"") && text.contains("arg[2] = \"-S\""),
        "{text}"
    );
    // An option ssirun does not take is named.
    for (args, named) in [
        (vec!["-S", "nope=1"], "-S nope=1"),
        (vec!["-S", "inherit-env=maybe"], "maybe"),
        (vec!["-W", "max-memory-size=64k"], "-W max-memory-size=64k"),
        (vec!["-W", "bogus"], "-W bogus"),
    ] {
        let mut all = args.clone();
        all.push(guest);
        let out = ssirun_embedded(&all, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
}
