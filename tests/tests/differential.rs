//! Every guest runs under `ssirun` and under the reference (wasmtime + wasmtime-wasi's
//! preview1), with the same arguments, environment, stdin and a fresh copy of the
//! same directory: stdout, stderr, exit status and the resulting tree must be equal.

use ssi_tests::{Case, comparable_report, guest};

fn same(case: Case) -> ssi_tests::Outcome {
    let (ours, our_tree) = case.run_ssirun();
    let (reference, ref_tree) = case.run_reference();
    assert_eq!(
        ours.stdout_text(),
        reference.stdout_text(),
        "stdout differs for {:?}",
        case.guest
    );
    assert_eq!(
        ours.stderr_text(),
        reference.stderr_text(),
        "stderr differs"
    );
    assert_eq!(ours.status, reference.status, "exit status differs");
    assert_eq!(our_tree, ref_tree, "resulting directory trees differ");
    ours
}

#[test]
fn hello() {
    let out = same(Case::new(guest("hello")));
    assert_eq!(out.stdout_text(), "Hello, world!\n");
    assert_eq!(out.stderr_text(), "hello on stderr\n");
    assert_eq!(out.status, 0);
}

#[test]
fn args_env_and_exit_status() {
    let out = same(
        Case::new(guest("args_env"))
            .args(&["one", "two words", "--exit", "42"])
            .env("GREETING", "hi there")
            .env("EMPTY", ""),
    );
    assert_eq!(out.status, 42);
    assert!(out.stdout_text().contains("arg[2] = \"two words\""));
    assert!(out.stdout_text().contains("env GREETING=\"hi there\""));
}

#[test]
fn stdin_filter() {
    let input: String = (0..500).map(|i| format!("line number {i}\n")).collect();
    let out = same(Case::new(guest("filter")).stdin(input.as_bytes()));
    assert!(out.stdout_text().contains("  500: LINE NUMBER 499"));
    assert_eq!(
        out.stderr_text(),
        format!("500 lines, {} bytes\n", input.len())
    );
}

#[test]
fn file_operations() {
    let out = same(
        Case::new(guest("fileops"))
            .sandbox(&[("input.txt", b"some input\n"), ("nested/keep.txt", b"kept")]),
    );
    assert_eq!(out.status, 0);
    assert!(
        out.stdout_text()
            .contains("escape with ..: PermissionDenied")
    );
    assert!(
        out.stdout_text()
            .contains("escape through symlink: PermissionDenied")
    );
}

#[test]
fn c_guest_with_wasi_libc() {
    let out = same(Case::new(guest("cfiles")).sandbox(&[("existing", b"x")]));
    assert_eq!(out.status, 3);
    assert!(out.stdout_text().contains("first line: line 0"));
    assert!(out.stdout_text().contains("entry: cdir"));
}

#[test]
fn clocks_and_sleeps() {
    let out = same(Case::new(guest("clocks")));
    assert!(
        !out.stdout_text().contains("false"),
        "{}",
        out.stdout_text()
    );
}

#[test]
fn compute_kernel() {
    let out = same(Case::new(guest("compute")));
    assert!(out.stdout_text().contains("primes below 2000000: 148933"));
}

#[test]
fn megabytes_to_stdout() {
    let out = same(Case::new(guest("bigout")).args(&["8"]));
    assert_eq!(out.stdout.len(), 8 << 20);
}

#[test]
fn conformance_transcript() {
    same(
        Case::new(guest("conformance"))
            .args(&["x", "y"])
            .env("A", "1")
            .sandbox(&[("input.txt", b"hello conformance\n")])
            .mount_at("/"),
    );
}

#[test]
fn trap_is_reported_like_wasmtime() {
    let case = Case::new(guest("trap"));
    let (ours, _) = case.run_ssirun();
    let (reference, _) = case.run_reference();
    assert_eq!(ours.status, 134);
    assert_eq!(reference.status, 134);
    assert_eq!(ours.stdout, reference.stdout);
    let err = ours.stderr_text();
    assert!(err.contains("wasm backtrace"), "{err}");
    // The report is wasmtime's, frame by frame (but for the code offsets of
    // an instrumented module).
    assert_eq!(
        comparable_report(&err),
        comparable_report(&reference.stderr_text())
    );
}

/// `ssirun --as-is` (what the instrumentation's overhead is measured
/// against) runs the module uninstrumented under the same deputy, with the
/// same results; it cannot be checkpointed, and says so before it starts.
#[test]
fn a_module_run_as_it_is_gives_the_same_results() {
    let input: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let case = Case::new(guest("filter")).stdin(input.as_bytes());
    let (as_is, _) = case.run_ssirun_with(&["--as-is"]);
    let (reference, _) = case.run_reference();
    assert_eq!(as_is.stdout_text(), reference.stdout_text());
    assert_eq!(as_is.stderr_text(), reference.stderr_text());
    assert_eq!(as_is.status, reference.status);
    let dir = tempfile::tempdir().expect("tmp");
    let dir = dir.path().display().to_string();
    let (refused, _) = case.run_ssirun_with(&[
        "--as-is",
        "--checkpoint-every",
        "1",
        "--checkpoint-dir",
        &dir,
    ]);
    assert_eq!(refused.status, 2, "{}", refused.stderr_text());
    assert!(
        refused.stderr_text().contains("--as-is"),
        "{}",
        refused.stderr_text()
    );
}
