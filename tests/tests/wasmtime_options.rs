//! The options of `wasmtime run` that `ssirun` takes mean what they mean to
//! wasmtime, wherever the body runs and after it moves; the others are
//! refused by name.

use ssi_tests::{Case, Cluster, Proc, bin, migrate_or_explain, shell_status};
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
        let report = migrate_or_explain(&cluster, &mut child, 1, pid, to);
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
        (&["-W", "max-memory-size=lots"][..], "lots"),
        (&["-W", "max-memory-size"][..], "max-memory-size"),
        (&["-W", "fuel=10"][..], "fuel"),
        (&["-W", "unknown-imports-trap=maybe"][..], "maybe"),
        (&["-S", "tcp"][..], "tcp"),
        (&["-W", "unknown-imports-trap,bogus"][..], "bogus"),
        (&["--wasm", "fuel=10"][..], "fuel"),
        (&["--wasi", "tcp"][..], "tcp"),
        (&["-C", "cache-config=/etc/x.toml"][..], "cache-config"),
        (&["--codegen", "cache=perhaps"][..], "perhaps"),
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

/// `--argv0`, `-C cache=n` and the long names of `-W` and `-S` (`--wasm`,
/// `--wasi`), as scripts written for `wasmtime run` pass them.
#[test]
fn argv0_cache_and_the_long_names_of_options_mean_what_they_mean_to_wasmtime() {
    let case = Case::new(ssi_tests::guest("args_env")).args(&["x"]);
    let (plain, _) = case.run_ssirun();
    assert!(
        plain.stdout_text().contains("arg[0] = \"args_env.wasm\""),
        "{}",
        plain.stdout_text()
    );
    let (named, _) = case.run_ssirun_with(&["--argv0", "tool"]);
    let text = named.stdout_text();
    assert!(text.contains("arg[0] = \"tool\"\narg[1] = \"x\""), "{text}");
    // Through a node, the body elsewhere: the same name.
    let cluster = Cluster::start(2);
    let socket = cluster.socket(1).display().to_string();
    let (remote, _) =
        case.run_ssirun_with(&["--connect", &socket, "--node", "2", "--argv0", "tool"]);
    assert_eq!(remote.stdout_text(), text, "{}", remote.stderr_text());
    // `--wasi`/`--wasm` are `-S`/`-W`; `-C cache=n` runs without the cache.
    let cache = tempfile::tempdir().expect("tmp");
    let (long, _) = case.clone().cache_dir(cache.path()).run_ssirun_with(&[
        "--wasi",
        "inherit-env=n",
        "--wasm",
        "max-memory-size=0x1000000",
        "-C",
        "cache=n",
        "--argv0",
        "tool",
    ]);
    assert_eq!(long.stdout_text(), text, "{}", long.stderr_text());
    assert_eq!(
        std::fs::read_dir(cache.path()).expect("cache dir").count(),
        0,
        "-C cache=n wrote to the cache"
    );
    let (cached, _) = case.clone().cache_dir(cache.path()).run_ssirun();
    assert_eq!(cached.status, 0, "{}", cached.stderr_text());
    assert!(
        std::fs::read_dir(cache.path()).expect("cache dir").count() > 0,
        "without -C cache=n, nothing was cached"
    );
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

/// A program whose memory starts at two pages and grows by one for each `g`
/// of its input, saying `grew` or `full` (`memory.grow` gave -1); it says
/// `ready` first and ends at the end of its input.
fn grower_module(dir: &Path) -> PathBuf {
    let module = dir.join("grower.wat");
    std::fs::write(
        &module,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (data (i32.const 200) "grew\n")
            (data (i32.const 208) "full\n")
            (data (i32.const 216) "ready\n")
            (func $say (param $at i32) (param $len i32)
                (i32.store (i32.const 0) (local.get $at))
                (i32.store (i32.const 4) (local.get $len))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            (func (export "_start") (local $i i32)
                (call $say (i32.const 216) (i32.const 6))
                (loop $l
                    (i32.store (i32.const 16) (i32.const 300))
                    (i32.store (i32.const 20) (i32.const 100))
                    (drop (call $read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
                    (if (i32.eqz (i32.load (i32.const 24))) (then return))
                    (local.set $i (i32.const 0))
                    (loop $each
                        (if (i32.eq (i32.load8_u (i32.add (i32.const 300) (local.get $i))) (i32.const 103))
                            (then
                                (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
                                    (then (call $say (i32.const 208) (i32.const 5)))
                                    (else (call $say (i32.const 200) (i32.const 5))))))
                        (local.set $i (i32.add (local.get $i) (i32.const 1)))
                        (br_if $each (i32.lt_u (local.get $i) (i32.load (i32.const 24)))))
                    (br $l))))"#,
    )
    .expect("write the module");
    module
}

/// As `wasmtime run -W max-memory-size`: no memory grows past the limit
/// (`memory.grow` gives -1, the program goes on), a module that starts
/// with more is refused, and the size is read as wasmtime reads it.
#[test]
fn max_memory_size_bounds_memory_as_wasmtime_does() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = grower_module(dir.path());
    let (free, _) = Case::new(module.clone()).stdin(b"ggg").run_ssirun();
    assert_eq!(free.stdout_text(), "ready\ngrew\ngrew\ngrew\n");
    for limit in ["196608", "0x3_0000", "196_608"] {
        let option = format!("max-memory-size={limit}");
        let (bounded, _) = Case::new(module.clone())
            .stdin(b"ggg")
            .run_ssirun_with(&["-W", &option]);
        assert_eq!(
            bounded.stdout_text(),
            "ready\ngrew\nfull\nfull\n",
            "{limit}: {}",
            bounded.stderr_text()
        );
        assert_eq!(bounded.status, 0);
    }
    let (refused, _) = Case::new(module)
        .stdin(b"g")
        .run_ssirun_with(&["-W", "max-memory-size=65536"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr_text());
    assert_eq!(refused.stdout_text(), "");
    assert!(
        refused.stderr_text().contains("exceeds memory limits"),
        "{}",
        refused.stderr_text()
    );
}

/// The limit goes with the process: after it moves to another node, and
/// once its checkpoint restarts, its memory is bounded as it was.
#[test]
fn max_memory_size_goes_with_a_process_that_moves_and_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = grower_module(dir.path());
    let cluster = Cluster::start(3);
    let mut child = Proc::spawn(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--node", "2", "-W", "max-memory-size=262144"])
            .arg(&module)
            .stdin(Stdio::piped()),
        "ssirun grower.wat",
    );
    let mut stdin = child.stdin();
    assert_eq!(child.line("its first line"), "ready");
    let pid = cluster.pid_of(1, "grower.wat", |c| c.contains("grower"));
    writeln!(stdin, "g").expect("write");
    assert_eq!(child.line("the first growth, on node 2"), "grew");
    migrate_or_explain(&cluster, &mut child, 1, pid, 3);
    writeln!(stdin, "g").expect("write");
    assert_eq!(child.line("the second growth, on node 3"), "grew");
    writeln!(stdin, "g").expect("write");
    assert_eq!(child.line("a growth past the limit, on node 3"), "full");
    // A checkpoint of it, stopped, restarts bounded as it was.
    let file = dir.path().join("grower.ckpt");
    let out = cluster.ssictl(
        3,
        &[
            "checkpoint",
            &pid.to_string(),
            "-o",
            &file.display().to_string(),
            "--stop",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(stdin);
    child.wait();
    let mut restarted = Proc::spawn(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--node", "1", "--restore"])
            .arg(&file)
            .stdin(Stdio::piped()),
        "ssirun --restore grower.ckpt",
    );
    let mut stdin = restarted.stdin();
    writeln!(stdin, "gg").expect("write");
    assert_eq!(restarted.line("a growth after the restart"), "full");
    assert_eq!(restarted.line("another one"), "full");
    drop(stdin);
    let out = restarted.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `deep.wat` into `dir`: `_start` recurses 250,000 calls deep,
/// past the 512 KiB of stack `wasmtime run` gives by default and within the
/// 8 MiB Go's wasip1 runner asks for (`-W max-wasm-stack=8388608`). Its path.
fn deep_module(dir: &Path) -> PathBuf {
    let module = dir.join("deep.wat");
    std::fs::write(
        &module,
        r#"(module
            (memory (export "memory") 1)
            (func $r (param $d i32) (param $x i64) (result i64) (local $y i64) (local $z i64)
                (local.set $y (i64.mul (local.get $x) (i64.const 31)))
                (local.set $z (i64.add (local.get $x) (i64.const 7)))
                (if (result i64) (i32.eqz (local.get $d))
                    (then (local.get $x))
                    (else (i64.add (i64.xor (call $r (i32.sub (local.get $d) (i32.const 1))
                        (local.get $y)) (local.get $z)) (local.get $y)))))
            (func (export "_start") (drop (call $r (i32.const 250000) (i64.const 1)))))"#,
    )
    .expect("write the module");
    module
}

/// As `wasmtime run -W max-wasm-stack=8388608` (what Go's wasip1 runner
/// passes): a program recursing as deep as 8 MiB allows runs to its end,
/// embedded (on the quick tier's code too) and with its body on another node; a size past what every
/// node gives is refused by name.
#[test]
fn max_wasm_stack_lets_a_program_recurse_as_deep_as_under_wasmtime() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = deep_module(dir.path());
    // wasmtime's default stack is too small for it.
    let (reference, _) = Case::new(module.clone()).run_reference();
    assert_ne!(reference.status, 0, "the recursion fits wasmtime's default");
    let (ours, _) = Case::new(module.clone()).run_ssirun_with(&["-W", "max-wasm-stack=8388608"]);
    assert_eq!(ours.status, 0, "embedded: {}", ours.stderr_text());
    let given = Case::new(module.clone()).max_wasm_stack(8 << 20);
    let (reference, _) = given.run_reference();
    assert_eq!(
        reference.status,
        0,
        "wasmtime, given 8 MiB: {}",
        reference.stderr_text()
    );
    // A first launch runs the quick tier's code, whose frames are larger
    // still (Cranelift's single-pass allocator gives values slots of their
    // own).
    let (quick, _) = given.run_ssirun_with(&["--no-cache"]);
    assert_eq!(quick.status, 0, "quick tier: {}", quick.stderr_text());
    let cluster = Cluster::start(2);
    let out = ssi_tests::run(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--node", "2", "-W", "max-wasm-stack=0x80_0000"])
            .arg(&module)
            .stdin(Stdio::null()),
        "ssirun deep.wat on node 2",
    );
    assert!(
        out.status.success(),
        "body on node 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (option, named) in [
        ("max-wasm-stack=0", "max-wasm-stack=0"),
        ("max-wasm-stack=16777216", "16777216"),
        ("max-wasm-stack=deep", "deep"),
    ] {
        let (out, _) = Case::new(module.clone()).run_ssirun_with(&["-W", option]);
        assert_eq!(out.status, 1, "{option}: {}", out.stderr_text());
        assert!(
            out.stderr_text().contains(named),
            "{option}: {}",
            out.stderr_text()
        );
    }
}
