//! Ghosts across real `ssid` nodes: a running process is frozen wherever it is
//! (deep in recursion, in a loop without calls, or waiting for input), moved
//! to another node, and goes on there as if nothing happened.

use ssi_tests::{
    Case, Cluster, Proc, WAIT, assert_same, bin, guest, migrate_or_explain, move_until_it_ends,
    shell_status, try_migrate, wait_until,
};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `ssirun GUEST ARGS` through node `home` with its body on `node`.
fn start(cluster: &Cluster, home: usize, node: usize, guest_name: &str, args: &[&str]) -> Proc {
    start_module(cluster, home, node, &guest(guest_name), args)
}

/// As [`start`], for the module at `module`.
fn start_module(
    cluster: &Cluster,
    home: usize,
    node: usize,
    module: &std::path::Path,
    args: &[&str],
) -> Proc {
    Proc::spawn(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(home))
            .arg("--node")
            .arg(node.to_string())
            .arg(module)
            .args(args)
            .stdin(Stdio::piped()),
        &format!("ssirun {}", module.display()),
    )
}

/// The pid of the one process whose command mentions `what`, once it shows.
fn pid_of(cluster: &Cluster, what: &str) -> u64 {
    cluster.pid_of(1, &format!("a process `{what}`"), |c| c.contains(what))
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

/// Moves made before a program ends, at the least: every move takes a few
/// milliseconds and they come at most 20 ms apart, so the workloads below
/// (seconds of work) see many more on any machine.
const AT_LEAST: usize = 20;

#[test]
fn a_churning_process_moved_until_it_ends_prints_what_wasmtime_prints() {
    let cluster = Cluster::start_unbalanced(3);
    let rounds = "15000";
    let reference = Case::new(guest("churn")).args(&[rounds]).run_reference().0;
    let child = std::cell::RefCell::new(start(&cluster, 1, 2, "churn", &[rounds]));
    let pid = pid_of(&cluster, "churn");
    let moves = move_until_it_ends(
        &cluster,
        pid,
        2,
        || child.borrow_mut().try_wait().is_some(),
        |from, to| try_migrate(&cluster, from, pid, to),
    );
    let out = child.borrow_mut().wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(shell_status(out.status), reference.status, "{err}");
    assert!(
        out.stdout == reference.stdout,
        "the moved process printed something else ({} bytes vs {}): {err}",
        out.stdout.len(),
        reference.stdout.len()
    );
    assert!(moves >= AT_LEAST, "only {moves} moves before it ended");
}

/// A program reading its input a byte at a time, moved at random moments
/// until it ends, with its body at home or elsewhere in turn: it reads every
/// byte once, in order (what a body read ahead of its program goes back to
/// the home before it moves), and finishes within the tests' deadline (a
/// round trip per byte would take the better part of an hour).
#[test]
fn a_program_reading_its_input_a_byte_at_a_time_moved_until_it_ends_reads_it_all() {
    let cluster = Cluster::start_unbalanced(3);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let input: Vec<u8> = (0..16 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut proc = start(&cluster, 1, 2, "bytewise", &[]);
    let mut stdin = proc.stdin();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let child = std::cell::RefCell::new(proc);
    let pid = pid_of(&cluster, "bytewise");
    let moves = move_until_it_ends(
        &cluster,
        pid,
        2,
        || child.borrow_mut().try_wait().is_some(),
        |from, to| try_migrate(&cluster, from, pid, to),
    );
    feeder.join().expect("stdin feeder");
    let out = child.borrow_mut().wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(shell_status(out.status), 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} bytes, hash {hash:016x}\n", 16 << 20),
        "{err}"
    );
    assert!(moves >= AT_LEAST, "only {moves} moves before it ended");
}

/// A program waiting in a poll on its input (with a long deadline) is moved
/// meanwhile, twice; input then comes, and the poll it waits in on the new
/// node says so at once (not its clock, 60 s later).
#[test]
fn a_process_waiting_in_a_poll_on_its_input_is_moved_and_sees_the_input() {
    let cluster = Cluster::start_unbalanced(3);
    let mut proc = start(&cluster, 1, 2, "pollin", &["60"]);
    let mut stdin = proc.stdin();
    let pid = pid_of(&cluster, "pollin");
    // It waits at its home in the poll: moved, it waits there again.
    for to in [3, 1] {
        std::thread::sleep(Duration::from_millis(300));
        migrate_or_explain(&cluster, &mut proc, 1, pid, to);
        assert_eq!(node_of(&cluster, pid), to as u64);
    }
    stdin.write_all(b"here\n").expect("input");
    drop(stdin);
    let out = proc.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "stdin: error SUCCESS\nread 5 bytes\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A C program (qsort through a function pointer, a tree of malloc'd nodes,
/// stack arrays in deep frames) that writes a file, moved at random moments
/// until it ends: its output, its status and the file it wrote are what
/// wasmtime's give.
#[test]
fn a_c_program_writing_a_file_moved_at_random_moments_matches_wasmtime() {
    let cluster = Cluster::start_unbalanced(3);
    let case = Case::new(guest("cwork")).args(&["1000"]).sandbox(&[]);
    let reference = case.run_reference();
    let run = case.spawn_through(&cluster, 1, 2);
    let pid = pid_of(&cluster, "cwork");
    let moves = move_until_it_ends(
        &cluster,
        pid,
        2,
        || run.is_finished(),
        |from, to| try_migrate(&cluster, from, pid, to),
    );
    let ours = run.join().expect("ssirun's thread");
    assert_same("cwork moved until it ended", &ours, &reference);
    assert_eq!(ours.0.status, 7);
    assert!(moves >= AT_LEAST, "only {moves} moves before it ended");
}

#[test]
fn a_process_waiting_for_input_moves_and_reads_the_next_line_there() {
    let cluster = Cluster::start(3);
    let mut child = start(&cluster, 1, 2, "filter", &[]);
    let mut stdin = child.stdin();
    stdin.write_all(b"first\n").expect("write");
    stdin.flush().expect("flush");
    assert_eq!(child.line("the first line"), "    1: FIRST");
    let pid = pid_of(&cluster, "filter");
    // Now it waits in a read at its home: moving it cuts the read short at the
    // deputy and makes it again on node 3.
    let report = migrate_or_explain(&cluster, &mut child, 1, pid, 3);
    assert_eq!(report["to"].as_u64(), Some(3));
    std::thread::sleep(Duration::from_millis(300));
    if child.try_wait().is_some() {
        let ended = child.wait();
        panic!(
            "ssirun ended with {} after the move: {}\n{}",
            ended.status,
            String::from_utf8_lossy(&ended.stderr),
            ssi_tests::nodes_logs()
        );
    }
    assert_eq!(node_of(&cluster, pid), 3);
    stdin.write_all(b"second\n").expect("write");
    stdin.flush().expect("flush");
    assert_eq!(child.line("the second line"), "    2: SECOND");
    // And back home, then the end of input.
    migrate_or_explain(&cluster, &mut child, 2, pid, 1);
    stdin.write_all(b"third\n").expect("write");
    drop(stdin);
    let ended = child.wait();
    assert_eq!(String::from_utf8_lossy(&ended.stdout), "    3: THIRD\n");
    assert_eq!(ended.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ended.stderr),
        "3 lines, 19 bytes\n"
    );
}

#[test]
fn a_loop_without_calls_moves_and_bad_requests_say_why() {
    let cluster = Cluster::start(3);
    let mut child = start(&cluster, 1, 1, "spin", &["0"]);
    assert_eq!(child.line("the first line"), "spinning");
    let pid = pid_of(&cluster, "spin");
    // The CPU time it has used goes with it, as `ssictl ps` shows.
    let mut before = 0;
    wait_until("spin to use 300 ms of CPU", WAIT, || {
        before = ps_field(&cluster, pid, "cpu_ms");
        before >= 300
    });
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
    assert_eq!(shell_status(child.wait().status), 143);
}

/// A move to a node that stopped answering fails, naming it, and the process
/// goes on where it was, once: it still reads and answers, and moves on
/// elsewhere afterwards.
#[test]
fn a_move_to_a_silent_node_fails_and_the_process_goes_on_once() {
    let cluster = Cluster::start(3);
    let mut child = start(&cluster, 1, 1, "filter", &[]);
    let mut stdin = child.stdin();
    let pid = pid_of(&cluster, "filter");
    // Stopped: its connections stay open, nothing answers.
    cluster.signal(2, "STOP");
    let asked = Instant::now();
    let failed = try_migrate(&cluster, 1, pid, 2).expect_err("a move to a stopped node");
    cluster.signal(2, "CONT");
    assert!(failed.contains("node 2"), "{failed}");
    assert!(asked.elapsed() < WAIT, "took {:?}", asked.elapsed());
    let row = cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .expect("listed");
    assert_eq!(row["node"], 1);
    assert_eq!(row["state"], "running");
    stdin.write_all(b"still here\n").expect("write");
    stdin.flush().expect("flush");
    assert_eq!(child.line("the answer"), "    1: STILL HERE");
    // Node 2, answering again, runs no body: the one it was expecting
    // never came, and one that had would not have been let go on.
    cluster.wait_until(2, |nodes| {
        nodes
            .iter()
            .any(|n| n["id"] == 2 && n["state"] == "up" && n["bodies"] == 0)
    });
    migrate_or_explain(&cluster, &mut child, 1, pid, 3);
    drop(stdin);
    let ended = child.wait();
    assert_eq!(String::from_utf8_lossy(&ended.stdout), "");
    assert_eq!(ended.status.code(), Some(0));
}

/// A module the instrumentation cannot handle (here: one with a start
/// function, which a restore would run again) still runs on a node, start
/// function first; `ssictl` shows it cannot move and says why when asked to;
/// a signal still ends it in its loop without calls.
#[test]
fn a_module_that_cannot_be_frozen_runs_stays_and_says_why() {
    let cluster = Cluster::start(3);
    let dir = tempfile::tempdir().expect("tmp");
    let module = ssi_tests::unfreezable_module(dir.path());
    let mut child = start_module(&cluster, 1, 2, &module, &[]);
    assert_eq!(child.line("the start function's line"), "started");
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
    assert_eq!(shell_status(child.wait().status), 130);
}

/// A module with Wasm exception handling (`try_table`, `throw`): it throws
/// and catches `rounds` exceptions (0: for ever), printing `caught N` after
/// the first and after the last.
fn exceptions_module(dir: &std::path::Path) -> std::path::PathBuf {
    let module = dir.join("exceptions.wat");
    std::fs::write(
        &module,
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 100) "caught 42\n")
            (tag $oops (param i32))
            (func $thrower (param i32) (throw $oops (local.get 0)))
            (func $say
                (i32.store (i32.const 0) (i32.const 100))
                (i32.store (i32.const 4) (i32.const 10))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
            (func (export "_start")
                (local $n i32)
                ;; argc: 1 runs one round, more run for ever
                (drop (call $sizes (i32.const 16) (i32.const 20)))
                (loop $l
                    (block $handler (result i32)
                        (try_table (catch $oops $handler)
                            (call $thrower (i32.const 42)))
                        (i32.const 0))
                    (if (i32.ne (i32.const 42)) (then unreachable))
                    (if (i32.eqz (local.get $n)) (then (call $say)))
                    (local.set $n (i32.add (local.get $n) (i32.const 1)))
                    (br_if $l (i32.gt_u (i32.load (i32.const 16)) (i32.const 1))))))"#,
    )
    .expect("write the module");
    module
}

#[test]
fn a_module_with_exception_handling_moves_and_still_catches_what_it_throws() {
    let dir = tempfile::tempdir().expect("tmp");
    let module = exceptions_module(dir.path());
    let case = Case::new(module.clone());
    let ours = case.run_ssirun();
    assert_eq!(
        ours.0.stdout_text(),
        "caught 42\n",
        "{}",
        ours.0.stderr_text()
    );
    assert_same("exceptions", &ours, &case.run_reference());
    // On a node: it throws and catches in a loop; moved there and back, it
    // goes on catching (an exception it failed to catch would trap it).
    let cluster = Cluster::start(2);
    let mut child = start_module(&cluster, 1, 2, &module, &["forever"]);
    assert_eq!(child.line("its first line"), "caught 42");
    let pid = pid_of(&cluster, "exceptions.wat");
    let row = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .expect("listed");
    assert!(row["unmovable"].is_null(), "{row}");
    for to in [1, 2, 1] {
        let report = migrate_or_explain(&cluster, &mut child, 1, pid, to);
        assert_eq!(report["to"].as_u64(), Some(to as u64), "{report}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().is_none(), "it ended after a move");
    }
    let kill = cluster.ssictl(1, &["kill", &pid.to_string()]);
    assert!(kill.status.success());
    assert_eq!(shell_status(child.wait().status), 143);
}

/// Moves asked from three nodes at once while the process ends (its input
/// closes among them, 30 times at moments a few ms apart): every one is answered — a report,
/// or that the process ended — none waits for ever. (An order queued as the
/// process's end was seen used to stay unanswered in its channel.)
#[test]
fn moves_asked_as_a_process_ends_are_all_answered() {
    let cluster = Cluster::start(3);
    for round in 0..30 {
        let mut child = start(&cluster, 1, 2, "filter", &[]);
        let mut stdin = child.stdin();
        stdin.write_all(b"first\n").expect("write");
        stdin.flush().expect("flush");
        assert_eq!(child.line("the first line"), "    1: FIRST");
        let pid = cluster.pid_of(1, "filter", |c| c.contains("filter"));
        let (done, answers) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        std::thread::scope(|s| {
            for asker in 1..=3usize {
                let (cluster, done, stop) = (&cluster, done.clone(), stop.clone());
                s.spawn(move || {
                    let mut answered = 0;
                    for i in 0usize.. {
                        let to = 1 + (asker + i) % 3;
                        let r = try_migrate(cluster, asker, pid, to);
                        answered += 1;
                        if r.is_err() && stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                    }
                    let _ = done.send(answered);
                });
            }
            std::thread::sleep(Duration::from_millis(20 + 7 * round));
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(30);
            for _ in 1..=3 {
                let left = deadline.saturating_duration_since(Instant::now());
                if answers.recv_timeout(left).is_err() {
                    panic!(
                        "round {round}: a move asked as process {pid} ended was not answered within 30 s\n{}",
                        ssi_tests::nodes_logs()
                    );
                }
            }
        });
        let out = child.wait();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
