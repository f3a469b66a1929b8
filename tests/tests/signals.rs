//! Signals with their default actions, on real `ssid` nodes: sent with `ssictl
//! kill` from any node, or by the terminal to `ssirun` (Ctrl-C is SIGINT to its
//! process group), they end the process wherever its body runs, even one in a
//! loop without calls or one blocked reading its input; `ssirun` exits with
//! 128 + the signal number, as a shell reports it.

use ssi_tests::{Cluster, Proc, WAIT, bin, guest, run, shell_status, wait_until};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `guest ARGS` with its home on node 1 and its body on `node`, stdin a
/// pipe kept open; returns once the process is listed, with its pid.
fn start(cluster: &Cluster, node: usize, name: &str, args: &[&str]) -> (Proc, u64) {
    let mut child = Proc::spawn(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--node", &node.to_string()])
            .arg(guest(name))
            .args(args)
            .stdin(Stdio::piped()),
        &format!("{name} on node {node}"),
    );
    if name == "spin" {
        assert_eq!(child.line("its first line"), "spinning");
    }
    let pid = cluster.pid_of(1, name, |c| c.starts_with(&format!("{name}.wasm")));
    (child, pid)
}

/// How `ssirun` ended, as a shell reports it.
fn status(child: &mut Proc) -> i32 {
    shell_status(child.wait().status)
}

fn ssictl_ok(cluster: &Cluster, node: usize, args: &[&str]) {
    let out = cluster.ssictl(node, args);
    assert!(
        out.status.success(),
        "ssictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ssictl_err(cluster: &Cluster, node: usize, args: &[&str]) -> String {
    let out = cluster.ssictl(node, args);
    assert_eq!(out.status.code(), Some(1), "ssictl {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn ssictl_kill_ends_a_looping_remote_body_with_128_plus_the_signal() {
    let cluster = Cluster::start(3);
    // From node 3, for a process of node 1 running on node 2.
    for (signal, status) in [
        ("-TERM", 143),
        ("-KILL", 137),
        ("-s USR1", 138),
        ("-2", 130),
    ] {
        let (mut child, pid) = start(&cluster, 2, "spin", &["0"]);
        let mut args: Vec<&str> = vec!["kill"];
        args.extend(signal.split(' '));
        let pid_text = pid.to_string();
        args.push(&pid_text);
        ssictl_ok(&cluster, 3, &args);
        let ended = child.wait().status;
        assert_eq!(shell_status(ended), status, "{signal}");
        // Ended by that signal, as a native process is: a shell says
        // "Terminated", and a loop it runs in stops at Ctrl-C.
        assert_eq!(ended.signal(), Some(status - 128), "{signal}: {ended}");
        assert!(
            !cluster.ssictl_json(3, "ps").iter().any(|p| p["pid"] == pid),
            "the process is reaped"
        );
    }
    // With no signal given, SIGTERM, as kill(1).
    let (mut child, pid) = start(&cluster, 1, "spin", &["0"]);
    ssictl_ok(&cluster, 2, &["kill", &pid.to_string()]);
    assert_eq!(Some(status(&mut child)), Some(143));
}

#[test]
fn a_signal_to_a_process_group_reaches_its_members() {
    let cluster = Cluster::start(2);
    let (mut child, pid) = start(&cluster, 2, "spin", &["0"]);
    let row = cluster
        .ssictl_json(2, "ps")
        .into_iter()
        .find(|p| p["pid"] == pid)
        .expect("listed");
    assert_eq!(row["pgid"], pid, "a launched process leads its own group");
    ssictl_ok(&cluster, 2, &["kill", "-HUP", "--", &format!("-{pid}")]);
    assert_eq!(Some(status(&mut child)), Some(129));
}

#[test]
fn the_terminal_interrupt_reaches_the_process_wherever_it_runs() {
    let cluster = Cluster::start(2);
    // A loop without calls on node 2, and programs blocked reading their input
    // (the pipe stays open and empty) at home and on node 2.
    for (node, name) in [(2, "spin"), (1, "filter"), (2, "filter")] {
        let args: &[&str] = if name == "spin" { &["0"] } else { &[] };
        let (mut child, _) = start(&cluster, node, name, args);
        // What the terminal does on Ctrl-C: SIGINT to the foreground group, ssirun.
        let out = run(
            Command::new("kill").args(["-INT", &child.id().to_string()]),
            "kill -INT",
        );
        assert!(out.status.success());
        assert_eq!(Some(status(&mut child)), Some(130), "{name} on node {node}");
    }
    // SIGTERM and SIGQUIT to ssirun are forwarded too.
    for (sig, code) in [("-TERM", 143), ("-QUIT", 131)] {
        let (mut child, _) = start(&cluster, 2, "spin", &["0"]);
        let out = run(
            Command::new("kill").args([sig, &child.id().to_string()]),
            "kill",
        );
        assert!(out.status.success());
        assert_eq!(Some(status(&mut child)), Some(code), "{sig}");
    }
}

#[test]
fn bad_kill_requests_are_named() {
    let cluster = Cluster::start(2);
    let (mut child, pid) = start(&cluster, 2, "spin", &["0"]);
    let pid = pid.to_string();
    assert!(ssictl_err(&cluster, 1, &["kill", "-BOGUS", &pid]).contains("`BOGUS` is not a signal"));
    assert!(ssictl_err(&cluster, 1, &["kill", "4194999"]).contains("no process 4194999"));
    assert!(
        ssictl_err(&cluster, 1, &["kill", "--", "-4194999"]).contains("no process group 4194999")
    );
    assert!(ssictl_err(&cluster, 2, &["kill", "abc"]).contains("`abc` is not a pid"));
    // A pid whose home is not a node of the cluster.
    let foreign = ((9u64 << 22) | 1).to_string();
    assert!(ssictl_err(&cluster, 1, &["kill", &foreign]).contains("node 9"));
    // Ignored by default: the process goes on.
    ssictl_ok(&cluster, 1, &["kill", "-CHLD", &pid]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().is_none(), "SIGCHLD is ignored");
    child.kill();
}

/// The state `ssictl ps` shows for `pid`.
fn state_of(cluster: &Cluster, pid: &str) -> String {
    cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64().map(|n| n.to_string()).as_deref() == Some(pid))
        .and_then(|p| p["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits for the process to show `state`: a signal is delivered shortly after
/// `kill` returns, as with kill(1).
fn wait_for_state(cluster: &Cluster, pid: &str, state: &str) {
    wait_until(&format!("process {pid} to be {state}"), WAIT, || {
        state_of(cluster, pid) == state
    });
}

#[test]
fn stop_holds_a_remote_process_and_a_term_sent_meanwhile_ends_it_at_cont() {
    let cluster = Cluster::start(2);
    let (mut child, pid) = start(&cluster, 2, "spin", &["0"]);
    let pid = pid.to_string();
    ssictl_ok(&cluster, 1, &["kill", "-STOP", &pid]);
    wait_for_state(&cluster, &pid, "stopped");
    // As POSIX: a stopped process takes SIGTERM when it continues.
    ssictl_ok(&cluster, 1, &["kill", "-TERM", &pid]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().is_none(), "ended while stopped");
    assert_eq!(state_of(&cluster, &pid), "stopped");
    ssictl_ok(&cluster, 2, &["kill", "-CONT", &pid]);
    assert_eq!(Some(status(&mut child)), Some(143));

    // SIGKILL ends a stopped process at once; STOP twice and CONT twice are harmless.
    let (mut child, pid) = start(&cluster, 2, "spin", &["0"]);
    let pid = pid.to_string();
    ssictl_ok(&cluster, 1, &["kill", "-STOP", &pid]);
    ssictl_ok(&cluster, 1, &["kill", "-STOP", &pid]);
    ssictl_ok(&cluster, 1, &["kill", "-CONT", &pid]);
    ssictl_ok(&cluster, 1, &["kill", "-CONT", &pid]);
    wait_for_state(&cluster, &pid, "running");
    ssictl_ok(&cluster, 1, &["kill", "-STOP", &pid]);
    ssictl_ok(&cluster, 1, &["kill", "-KILL", &pid]);
    assert_eq!(Some(status(&mut child)), Some(137));
}

/// `sigs MODE` with its home on node 1 and its body on `node`, its stdin a
/// pipe; its first line read.
fn sigs(cluster: &Cluster, node: usize, mode: &str) -> (Proc, u64) {
    let mut child = Proc::spawn(
        cluster
            .ssirun(1)
            .args(["--node", &node.to_string()])
            .arg(guest("sigs"))
            .args(mode.split(' ')),
        &format!("sigs {mode} on node {node}"),
    );
    let first = child.line("its first line");
    assert!(
        ["ready", "blocked", "reading", "napping", "waiting"].contains(&first.as_str()),
        "{first:?}"
    );
    let pid = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| {
            p["command"]
                .as_str()
                .is_some_and(|c| c == format!("sigs.wasm {mode}"))
        })
        .and_then(|p| p["pid"].as_u64())
        .expect("listed");
    (child, pid)
}

/// The next line the program prints, with its newline.
fn next(child: &mut Proc) -> String {
    child.line("a line") + "\n"
}

#[test]
fn a_handler_runs_in_a_loop_without_calls_wherever_the_body_is_and_after_a_move() {
    let cluster = Cluster::start(3);
    for node in [1, 2] {
        let (mut child, pid) = sigs(&cluster, node, "count");
        let pid = pid.to_string();
        for n in 1..=3 {
            ssictl_ok(&cluster, 3, &["kill", "-USR1", &pid]);
            assert_eq!(next(&mut child), format!("usr1 {n}\n"));
        }
        ssictl_ok(&cluster, 3, &["migrate", &pid, "3"]);
        ssictl_ok(&cluster, 3, &["kill", "-USR1", &pid]);
        assert_eq!(next(&mut child), "usr1 4\n");
        // A handled SIGTERM does not end it: its handler asks the loop to stop.
        ssictl_ok(&cluster, 3, &["kill", "-TERM", &pid]);
        assert_eq!(next(&mut child), "term\n");
        assert_eq!(next(&mut child), "bye 4\n");
        assert_eq!(Some(status(&mut child)), Some(0));
    }
}

#[test]
fn a_blocked_signal_waits_for_sigprocmask_and_a_read_goes_on_after_a_handler() {
    let cluster = Cluster::start(2);
    for node in [1, 2] {
        for (mode, want) in [
            ("mask", "read go\nusr1 1\nunblocked\n"),
            ("read", "usr1 1\nread go\n"),
        ] {
            let (mut child, pid) = sigs(&cluster, node, mode);
            ssictl_ok(&cluster, 1, &["kill", "-USR1", &pid.to_string()]);
            if mode == "read" {
                // The read was cut short for the handler, then goes on.
                assert_eq!(next(&mut child), "usr1 1\n");
            } else {
                // Blocked: nothing runs while it waits.
                std::thread::sleep(Duration::from_millis(300));
            }
            child.stdin().write_all(b"go\n").expect("write");
            let ended = child.wait();
            let mut rest = if mode == "read" {
                "usr1 1\n".to_string()
            } else {
                String::new()
            };
            rest.push_str(&String::from_utf8_lossy(&ended.stdout));
            assert_eq!(rest, want, "{mode} on node {node}");
            assert_eq!(shell_status(ended.status), 0);
        }
    }
}

#[test]
fn a_sleep_and_a_waitpid_go_on_after_a_handler() {
    let cluster = Cluster::start(2);
    for node in [1, 2] {
        // A 1.5 s sleep, a handler in its middle: it still sleeps 1.5 s.
        let (mut child, pid) = sigs(&cluster, node, "nap 1500");
        std::thread::sleep(Duration::from_millis(300));
        ssictl_ok(&cluster, 1, &["kill", "-USR1", &pid.to_string()]);
        assert_eq!(next(&mut child), "usr1 1\n");
        assert_eq!(next(&mut child), "slept whole\n", "node {node}");
        assert_eq!(status(&mut child), 0);
        // A wait for a child that sleeps 1.5 s, a handler in its middle: the
        // wait goes on, and reports the child's end.
        let (mut child, pid) = sigs(&cluster, node, "waitkid 1500");
        std::thread::sleep(Duration::from_millis(300));
        ssictl_ok(&cluster, 1, &["kill", "-USR1", &pid.to_string()]);
        assert_eq!(next(&mut child), "usr1 1\n");
        assert_eq!(next(&mut child), "child exited 5\n", "node {node}");
        assert_eq!(status(&mut child), 0);
    }
}

#[test]
fn handlers_work_without_a_cluster_and_signals_sent_to_ssirun_reach_them() {
    // No node running: ssirun gives a program with handlers a private node.
    let empty = tempfile::tempdir().expect("tempdir");
    let mut child = Proc::spawn(
        Command::new(bin("ssirun"))
            .env("XDG_RUNTIME_DIR", empty.path())
            .env_remove("SSI_SOCKET")
            .env_remove("SSI_CONNECT")
            .arg(guest("sigs"))
            .arg("count")
            .stdin(Stdio::null()),
        "sigs count with no cluster",
    );
    assert_eq!(next(&mut child), "ready\n");
    let id = child.id().to_string();
    let send = |sig: &str| {
        let out = run(Command::new("kill").args([sig, &id]), "kill");
        assert!(out.status.success());
    };
    send("-USR1");
    assert_eq!(next(&mut child), "usr1 1\n");
    send("-TERM");
    assert_eq!(next(&mut child), "term\n");
    assert_eq!(next(&mut child), "bye 1\n");
    assert_eq!(Some(status(&mut child)), Some(0));
}

/// A module with `n` functions, each a loop and a call to the next: large
/// enough that preparing it takes a while (seconds for 30000).
fn large_module(n: usize) -> String {
    let mut wat = String::from("(module\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!("(call $f{} (local.get 0))", i + 1)
        } else {
            "(local.get 0)".to_string()
        };
        wat.push_str(&format!(
            "(func $f{i} (param i32) (result i32) (local i32)
  (loop $l (local.set 1 (i32.add (local.get 1) (i32.mul (local.get 0) (i32.const {}))))
    (br_if $l (i32.lt_u (local.get 1) (i32.const {}))))
  (i32.add (local.get 1) {next}))\n",
            i + 3,
            i * 7 + 100
        ));
    }
    wat.push_str("(func (export \"_start\") (drop (call $f0 (i32.const 1)))))\n");
    wat
}

/// While its module is being prepared, a launched process is listed as
/// `loading` (it has its pid already), and a signal that terminates ends
/// it then: its `ssirun` ends as a native command killed so does (143).
#[test]
fn a_process_still_loading_is_listed_and_a_signal_ends_it() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().expect("tmp");
    let module = dir.path().join("large.wat");
    std::fs::write(&module, large_module(30000)).expect("write the module");
    let mut run = Proc::spawn(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .arg(&module)
            .stdin(Stdio::null()),
        "ssirun large.wat",
    );
    let mut loading = None;
    wait_until("the process to be listed as loading", WAIT, || {
        loading = cluster.ssictl_json(1, "ps").into_iter().find(|p| {
            p["command"]
                .as_str()
                .is_some_and(|c| c.contains("large.wat"))
        });
        loading.is_some() || run.try_wait().is_some()
    });
    let row = loading.expect("listed before it ran");
    assert_eq!(row["state"], "loading", "{row}");
    let pid = row["pid"].as_u64().expect("pid");
    // It cannot move yet, and is told so.
    let err = ssictl_err(&cluster, 1, &["migrate", &pid.to_string(), "1"]);
    assert!(err.contains("still loading its module"), "{err}");
    ssictl_ok(&cluster, 1, &["kill", &pid.to_string()]);
    let out = run.wait();
    assert_eq!(
        shell_status(out.status),
        143,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It is gone, and its pid with it.
    assert!(
        cluster
            .ssictl_json(1, "ps")
            .iter()
            .all(|p| p["pid"].as_u64() != Some(pid))
    );
    let err = ssictl_err(&cluster, 1, &["kill", &pid.to_string()]);
    assert!(err.contains("no process"), "{err}");
}
