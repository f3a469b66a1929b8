//! The WASI preview1 tests of the public WASI test suite
//! (`tests/wasi-testsuite/`, see its README): its Rust and C tests built
//! from their sources, its AssemblyScript tests as the suite ships them.
//! Each runs as the suite's own runner runs it (its arguments, environment,
//! and a fresh copy of its directory preopened as `/`) and must end with the
//! status and print what its configuration says: under `ssirun` embedded,
//! and with its body on another node than its home, whose deputy answers
//! every call that touches a file or a stream.
//!
//! The Rust tests check errno values strictly (`ERRNO_MODE_UNIX`, as for a
//! Linux host), not with the suite's default leniency.

use ssi_tests::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// One test of the suite.
#[derive(Debug)]
struct Test {
    name: String,
    wasm: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The directory preopened as `/`, copied afresh for each run.
    root: Option<PathBuf>,
    exit_code: i32,
    stdout: Option<String>,
}

fn suite() -> PathBuf {
    repo_root().join("tests/wasi-testsuite")
}

/// Builds the Rust and C tests (once per test process) into
/// `target/wasi-testsuite`, inside this checkout as the guests are.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = repo_root().join("target/wasi-testsuite");
        // The suite's code is its own: its warnings are not ours.
        let status = ssi_tests::build_wasip1(
            &suite().join("rust/Cargo.toml"),
            &target,
            Some("-Awarnings"),
        );
        assert!(status.success(), "building the suite's Rust tests failed");
        let c_out = target.join("c");
        std::fs::create_dir_all(&c_out).expect("create the C tests' directory");
        for src in files(&suite().join("c"), "c") {
            let stem = src
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            ssi_tests::build_c(&src, &c_out.join(format!("{stem}.wasm")), &[]);
        }
        target
    })
}

/// The files of `dir` ending in `.ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The tests of one language: each `.wasm` in `modules`, configured by the
/// `.json` of the same name in `configs` (none: no arguments, no directory,
/// status 0).
fn tests_of(language: &str, modules: &Path, configs: &Path) -> Vec<Test> {
    // Built from sources: one test per source file; else one per module.
    let (dir, ext) = match language {
        "rust" => (configs, "rs"),
        "c" => (configs, "c"),
        _ => (modules, "wasm"),
    };
    let names: Vec<String> = files(dir, ext)
        .iter()
        .map(|p| p.file_stem().expect("stem").to_string_lossy().into_owned())
        .collect();
    names
        .into_iter()
        .map(|name| {
            let wasm = modules.join(format!("{name}.wasm"));
            assert!(wasm.exists(), "no module for {language} test {name}");
            let config: serde_json::Value =
                match std::fs::read(configs.join(format!("{name}.json"))) {
                    Ok(text) => serde_json::from_slice(&text)
                        .unwrap_or_else(|e| panic!("{language} test {name}'s configuration: {e}")),
                    Err(_) => serde_json::json!({}),
                };
            let strings = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut env: Vec<(String, String)> = config["env"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if language == "rust" {
                env.push(("ERRNO_MODE_UNIX".into(), "1".into()));
            }
            Test {
                name: format!("{language}/{name}"),
                wasm,
                args: strings(&config["args"]),
                env,
                root: config["root"].as_str().map(|r| configs.join(r)),
                exit_code: config["exit_code"].as_i64().unwrap_or(0) as i32,
                stdout: config["stdout"].as_str().map(String::from),
            }
        })
        .collect()
}

fn all_tests() -> Vec<Test> {
    let built = built();
    let mut all = tests_of(
        "rust",
        &built.join("wasm32-wasip1/release"),
        &suite().join("rust/src/bin"),
    );
    all.extend(tests_of("c", &built.join("c"), &suite().join("c")));
    all.extend(tests_of(
        "assemblyscript",
        &suite().join("assemblyscript"),
        &suite().join("assemblyscript"),
    ));
    all
}

/// Copies the tree at `from` into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a directory");
    for entry in std::fs::read_dir(from).expect("read a directory") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// Runs every test with `ssirun` as `runner` makes it; returns the
/// failures, described.
fn failures(runner: impl Fn() -> Command) -> Vec<String> {
    let tests = all_tests();
    // Rust's 46, C's 14, AssemblyScript's 12: all of them were found.
    assert_eq!(
        tests.len(),
        72,
        "{:?}",
        tests.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    let mut failed = Vec::new();
    for t in &tests {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = runner();
        for (k, v) in &t.env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        if let Some(root) = &t.root {
            copy_tree(root, dir.path());
            cmd.arg("--dir").arg(format!("{}::/", dir.path().display()));
        }
        cmd.arg(&t.wasm).args(&t.args).stdin(Stdio::null());
        let out = ssi_tests::run(&mut cmd, &t.name);
        let status = out.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if status != t.exit_code || t.stdout.as_ref().is_some_and(|s| *s != stdout) {
            failed.push(format!(
                "{}: status {status} (expected {}), stdout {stdout:?}{}, stderr {}",
                t.name,
                t.exit_code,
                t.stdout
                    .as_ref()
                    .map(|s| format!(" (expected {s:?})"))
                    .unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    failed
}

#[test]
fn the_suites_preview1_tests_pass_embedded() {
    let failed = failures(ssi_tests::ssirun);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn the_suites_preview1_tests_pass_with_the_body_away_from_its_home() {
    let cluster = ssi_tests::Cluster::start(2);
    let failed = failures(|| {
        let mut cmd = cluster.ssirun(1);
        cmd.args(["--node", "2"]);
        cmd
    });
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
