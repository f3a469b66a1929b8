//! Ghosts across real `ssid` nodes: a running process is frozen wherever it is
//! (deep in recursion, in a loop without calls, or waiting for input), moved
//! to another node, and goes on there as if nothing happened.

use ssi_tests::{Case, Cluster, assert_same, bin, guest, shell_status};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Starts `ssirun GUEST ARGS` through node `home` with its body on `node`.
fn start(cluster: &Cluster, home: usize, node: usize, guest_name: &str, args: &[&str]) -> Child {
    start_module(cluster, home, node, &guest(guest_name), args)
}

/// As [`start`], for the module at `module`.
fn start_module(
    cluster: &Cluster,
    home: usize,
    node: usize,
    module: &std::path::Path,
    args: &[&str],
) -> Child {
    Command::new(bin("ssirun"))
        .arg("--connect")
        .arg(cluster.socket(home))
        .arg("--node")
        .arg(node.to_string())
        .arg(module)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssirun")
}

/// The pid of the one process whose command mentions `what`, once it shows.
fn pid_of(cluster: &Cluster, what: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = cluster
            .ssictl_json(1, "ps")
            .into_iter()
            .find(|p| p["command"].as_str().is_some_and(|c| c.contains(what)));
        if let Some(p) = found {
            return p["pid"].as_u64().expect("pid");
        }
        assert!(Instant::now() < deadline, "no process `{what}` showed up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything an `ssirun` that has ended wrote to its stderr.
fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err).expect("read stderr");
    }
    err
}

fn try_migrate(
    cluster: &Cluster,
    from: usize,
    pid: u64,
    to: usize,
) -> Result<serde_json::Value, String> {
    let out = cluster.ssictl(
        from,
        &["migrate", &pid.to_string(), &to.to_string(), "--json"],
    );
    if !out.status.success() {
        return Err(format!(
            "ssictl migrate {pid} {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout).expect("migration report"))
}

/// Moves a process; if that fails, says how its `ssirun` ended.
fn migrate_or_explain(
    cluster: &Cluster,
    child: &mut Child,
    from: usize,
    pid: u64,
    to: usize,
) -> serde_json::Value {
    match try_migrate(cluster, from, pid, to) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let err = stderr_of(child);
            panic!(
                "{e}\nssirun ended with {status}: {err}\nnode logs:\n{}\n{}\n{}",
                cluster.log(1),
                cluster.log(2),
                cluster.log(3)
            );
        }
    }
}

/// A number field of the process's row in `ssictl ps --json`.
fn ps_field(cluster: &Cluster, pid: u64, field: &str) -> u64 {
    cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .and_then(|p| p[field].as_u64())
        .unwrap_or_else(|| panic!("process {pid} is not listed with its {field}"))
}

fn node_of(cluster: &Cluster, pid: u64) -> u64 {
    ps_field(cluster, pid, "node")
}

/// Moves process `pid`, which runs on node `at`, `moves` times across the
/// three nodes at moments chosen at random (from a seed printed for a rerun),
/// asking a different node each time (`migrate(asked, to)`).
fn move_at_random(
    cluster: &Cluster,
    pid: u64,
    mut at: u64,
    moves: usize,
    mut migrate: impl FnMut(usize, usize) -> serde_json::Value,
) {
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("seed {seed}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..moves {
        std::thread::sleep(Duration::from_millis(next() % 40));
        let to = [1u64, 2, 3]
            .into_iter()
            .filter(|n| *n != at)
            .nth((next() % 2) as usize)
            .expect("another node");
        // Ask any node: the request goes to the process's home.
        let report = migrate(1 + (i % 3), to as usize);
        assert_eq!(report["from"].as_u64(), Some(at), "{report}");
        assert_eq!(report["to"].as_u64(), Some(to), "{report}");
        at = to;
    }
    assert_eq!(node_of(cluster, pid), at, "ps shows the node it moved to");
}

#[test]
fn a_churning_process_moved_fifty_times_prints_what_wasmtime_prints() {
    let cluster = Cluster::start(3);
    let rounds = "15000";
    let reference = Case::new(guest("churn")).args(&[rounds]).run_reference().0;
    let mut child = start(&cluster, 1, 2, "churn", &[rounds]);
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        stdout.read_to_end(&mut all).expect("read stdout");
        all
    });
    let pid = pid_of(&cluster, "churn");
    move_at_random(&cluster, pid, 2, 50, |from, to| {
        migrate_or_explain(&cluster, &mut child, from, pid, to)
    });
    let status = child.wait().expect("wait");
    let out = reader.join().expect("reader");
    let err = stderr_of(&mut child);
    assert_eq!(shell_status(status), reference.status, "{err}");
    assert!(
        out == reference.stdout,
        "the moved process printed something else ({} bytes vs {}): {err}",
        out.len(),
        reference.stdout.len()
    );
}

/// A C program (qsort through a function pointer, a tree of malloc'd nodes,
/// stack arrays in deep frames) that writes a file, moved 25 times at random
/// moments: its output, its status and the file it wrote are what wasmtime's
/// give.
#[test]
fn a_c_program_writing_a_file_moved_at_random_moments_matches_wasmtime() {
    let cluster = Cluster::start(3);
    let case = Case::new(guest("cwork")).args(&["500"]).sandbox(&[]);
    let reference = case.run_reference();
    let options = [
        "--connect".to_string(),
        cluster.socket(1).display().to_string(),
        "--node".into(),
        "2".into(),
    ];
    let run = std::thread::spawn(move || {
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        case.run_ssirun_with(&options)
    });
    let pid = pid_of(&cluster, "cwork");
    move_at_random(&cluster, pid, 2, 25, |from, to| {
        try_migrate(&cluster, from, pid, to).unwrap_or_else(|e| {
            panic!(
                "{e}\nnode logs:\n{}\n{}\n{}",
                cluster.log(1),
                cluster.log(2),
                cluster.log(3)
            )
        })
    });
    let ours = run.join().expect("ssirun's thread");
    assert_same("cwork moved 25 times", &ours, &reference);
    assert_eq!(ours.0.status, 7);
}

#[test]
fn a_process_waiting_for_input_moves_and_reads_the_next_line_there() {
    let cluster = Cluster::start(3);
    let mut child = start(&cluster, 1, 2, "filter", &[]);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdin.write_all(b"first\n").expect("write");
    stdin.flush().expect("flush");
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "    1: FIRST\n");
    let pid = pid_of(&cluster, "filter");
    // Now it waits in a read at its home: moving it cuts the read short at the
    // deputy and makes it again on node 3.
    let report = migrate_or_explain(&cluster, &mut child, 1, pid, 3);
    assert_eq!(report["to"].as_u64(), Some(3));
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = child.try_wait().expect("try_wait") {
        let err = stderr_of(&mut child);
        panic!(
            "ssirun ended with {status} after the move: {err}\n{}\n{}",
            cluster.log(1),
            cluster.log(3)
        );
    }
    assert_eq!(node_of(&cluster, pid), 3);
    stdin.write_all(b"second\n").expect("write");
    stdin.flush().expect("flush");
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "    2: SECOND\n");
    // And back home, then the end of input.
    migrate_or_explain(&cluster, &mut child, 2, pid, 1);
    stdin.write_all(b"third\n").expect("write");
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "    3: THIRD\n");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let err = stderr_of(&mut child);
    assert_eq!(err, "3 lines, 19 bytes\n");
}

#[test]
fn a_loop_without_calls_moves_and_bad_requests_say_why() {
    let cluster = Cluster::start(3);
    let mut child = start(&cluster, 1, 1, "spin", &["0"]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    let pid = pid_of(&cluster, "spin");
    // The CPU time it has used goes with it, as `ssictl ps` shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let used = ps_field(&cluster, pid, "cpu_ms");
        if used >= 300 {
            break used;
        }
        assert!(
            Instant::now() < deadline,
            "spin used {used} ms of CPU in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = migrate_or_explain(&cluster, &mut child, 2, pid, 2);
    assert_eq!(report["from"].as_u64(), Some(1));
    let after = ps_field(&cluster, pid, "cpu_ms");
    assert!(
        after >= before,
        "CPU time {before} ms before the move, {after} ms after"
    );
    // Errors name what was wrong, and the process goes on where it was.
    for (args, says) in [
        (
            vec!["migrate", &*pid.to_string(), "2"],
            "already runs on node 2",
        ),
        (vec!["migrate", &*pid.to_string(), "9"], "not a member"),
        (vec!["migrate", "12345", "2"], "no process"),
    ] {
        let out = cluster.ssictl(1, &args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(node_of(&cluster, pid), 2);
    let kill = cluster.ssictl(3, &["kill", "-TERM", &pid.to_string()]);
    assert!(kill.status.success());
    let status = child.wait().expect("wait");
    assert_eq!(shell_status(status), 143);
}

/// A move to a node that stopped answering fails, naming it, and the process
/// goes on where it was, once: it still reads and answers, and moves on
/// elsewhere afterwards.
#[test]
fn a_move_to_a_silent_node_fails_and_the_process_goes_on_once() {
    let cluster = Cluster::start(3);
    let mut child = start(&cluster, 1, 1, "filter", &[]);
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let pid = pid_of(&cluster, "filter");
    // Stopped: its connections stay open, nothing answers.
    cluster.signal(2, "STOP");
    let asked = Instant::now();
    let failed = try_migrate(&cluster, 1, pid, 2).expect_err("a move to a stopped node");
    cluster.signal(2, "CONT");
    assert!(failed.contains("node 2"), "{failed}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "took {:?}",
        asked.elapsed()
    );
    let row = cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .expect("listed");
    assert_eq!(row["node"], 1);
    assert_eq!(row["state"], "running");
    let mut line = String::new();
    stdin.write_all(b"still here\n").expect("write");
    stdin.flush().expect("flush");
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "    1: STILL HERE\n");
    // Node 2, answering again, runs no body: the one it was expecting
    // never came, and one that had would not have been let go on.
    cluster.wait_until(2, |nodes| {
        nodes
            .iter()
            .any(|n| n["id"] == 2 && n["state"] == "up" && n["bodies"] == 0)
    });
    migrate_or_explain(&cluster, &mut child, 1, pid, 3);
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).expect("read");
    assert_eq!(rest, "");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

/// A module the instrumentation cannot handle (here: one with a start
/// function, which a restore would run again) still runs on a node, start
/// function first; `ssictl` shows it cannot move and says why when asked to;
/// a signal still ends it in its loop without calls.
#[test]
fn a_module_that_cannot_be_frozen_runs_stays_and_says_why() {
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().expect("tmp");
    let module = dir.path().join("started.wat");
    std::fs::write(
        &module,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "started\n")
            (func $init
                (i32.store (i32.const 0) (i32.const 100))
                (i32.store (i32.const 4) (i32.const 8))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            (start $init)
            (func (export "_start") (loop $l (br $l))))"#,
    )
    .expect("write the module");
    let mut child = start_module(&cluster, 1, 2, &module, &[]);
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert_eq!(line, "started\n", "{}", stderr_of(&mut child));
    let pid = pid_of(&cluster, "started.wat");
    let row = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .expect("listed");
    assert_eq!(row["migratable"], false, "{row}");
    let failed = try_migrate(&cluster, 1, pid, 1).expect_err("it cannot move");
    assert!(
        failed.contains("cannot migrate process") && failed.contains("start function"),
        "{failed}"
    );
    assert!(!failed.contains("frozen: it cannot be frozen"), "{failed}");
    assert_eq!(node_of(&cluster, pid), 2);
    let kill = cluster.ssictl(1, &["kill", "-INT", &pid.to_string()]);
    assert!(kill.status.success());
    assert_eq!(shell_status(child.wait().expect("wait")), 130);
}
