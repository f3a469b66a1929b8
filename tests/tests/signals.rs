//! Signals with their default actions, on real `ssid` nodes: sent with `ssictl
//! kill` from any node, or by the terminal to `ssirun` (Ctrl-C is SIGINT to its
//! process group), they end the process wherever its body runs, even one in a
//! loop without calls or one blocked reading its input; `ssirun` exits with
//! 128 + the signal number, as a shell reports it.

use ssi_tests::{Cluster, bin, guest, shell_status};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `guest ARGS` with its home on node 1 and its body on `node`, stdin a
/// pipe kept open; returns once the process is listed, with its pid. The caller
/// waits for the child; if this panics, the test process ends and takes it along.
#[allow(clippy::zombie_processes)]
fn start(cluster: &Cluster, node: usize, name: &str, args: &[&str]) -> (Child, u64) {
    let mut child = Command::new(bin("ssirun"))
        .arg("--connect")
        .arg(cluster.socket(1))
        .args(["--node", &node.to_string()])
        .arg(guest(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssirun");
    if name == "spin" {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        assert_eq!(line, "spinning\n");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = cluster.ssictl_json(1, "ps").into_iter().find(|p| {
            p["command"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{name}.wasm")))
        });
        if let Some(p) = listed {
            return (child, p["pid"].as_u64().expect("pid"));
        }
        assert!(Instant::now() < deadline, "the process did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_within(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(shell_status(status));
        }
        assert!(
            Instant::now() < deadline,
            "ssirun did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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
        assert_eq!(
            status_within(&mut child, Duration::from_secs(5)),
            Some(status),
            "{signal}"
        );
        // Ended by that signal, as a native process is: a shell says
        // "Terminated", and a loop it runs in stops at Ctrl-C.
        let ended = child.wait().expect("wait");
        assert_eq!(ended.signal(), Some(status - 128), "{signal}: {ended}");
        assert!(
            !cluster.ssictl_json(3, "ps").iter().any(|p| p["pid"] == pid),
            "the process is reaped"
        );
    }
    // With no signal given, SIGTERM, as kill(1).
    let (mut child, pid) = start(&cluster, 1, "spin", &["0"]);
    ssictl_ok(&cluster, 2, &["kill", &pid.to_string()]);
    assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(143));
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
    assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(129));
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
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        assert_eq!(
            status_within(&mut child, Duration::from_secs(5)),
            Some(130),
            "{name} on node {node}"
        );
    }
    // SIGTERM and SIGQUIT to ssirun are forwarded too.
    for (sig, code) in [("-TERM", 143), ("-QUIT", 131)] {
        let (mut child, _) = start(&cluster, 2, "spin", &["0"]);
        Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert_eq!(
            status_within(&mut child, Duration::from_secs(5)),
            Some(code),
            "{sig}"
        );
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
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "SIGCHLD is ignored"
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
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
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = state_of(cluster, pid);
        if now == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {pid} is {now:?}, not {state:?}, 5 s on"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
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
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "ended while stopped"
    );
    assert_eq!(state_of(&cluster, &pid), "stopped");
    ssictl_ok(&cluster, 2, &["kill", "-CONT", &pid]);
    assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(143));

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
    assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(137));
}

/// `sigs MODE` with its home on node 1 and its body on `node`, its stdin a
/// pipe; its first line read.
#[allow(clippy::zombie_processes)]
fn sigs(
    cluster: &Cluster,
    node: usize,
    mode: &str,
) -> (Child, BufReader<std::process::ChildStdout>, u64) {
    let mut child = cluster
        .ssirun(1)
        .args(["--node", &node.to_string()])
        .arg(guest("sigs"))
        .arg(mode)
        .spawn()
        .expect("spawn ssirun");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("first line");
    assert!(
        ["ready\n", "blocked\n", "reading\n"].contains(&first.as_str()),
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
    (child, out, pid)
}

fn next(out: &mut BufReader<std::process::ChildStdout>) -> String {
    let mut l = String::new();
    out.read_line(&mut l).expect("a line");
    l
}

#[test]
fn a_handler_runs_in_a_loop_without_calls_wherever_the_body_is_and_after_a_move() {
    let cluster = Cluster::start(3);
    for node in [1, 2] {
        let (mut child, mut out, pid) = sigs(&cluster, node, "count");
        let pid = pid.to_string();
        for n in 1..=3 {
            ssictl_ok(&cluster, 3, &["kill", "-USR1", &pid]);
            assert_eq!(next(&mut out), format!("usr1 {n}\n"));
        }
        ssictl_ok(&cluster, 3, &["migrate", &pid, "3"]);
        ssictl_ok(&cluster, 3, &["kill", "-USR1", &pid]);
        assert_eq!(next(&mut out), "usr1 4\n");
        // A handled SIGTERM does not end it: its handler asks the loop to stop.
        ssictl_ok(&cluster, 3, &["kill", "-TERM", &pid]);
        assert_eq!(next(&mut out), "term\n");
        assert_eq!(next(&mut out), "bye 4\n");
        assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(0));
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
            let (mut child, mut out, pid) = sigs(&cluster, node, mode);
            ssictl_ok(&cluster, 1, &["kill", "-USR1", &pid.to_string()]);
            if mode == "read" {
                // The read was cut short for the handler, then goes on.
                assert_eq!(next(&mut out), "usr1 1\n");
            } else {
                // Blocked: nothing runs while it waits.
                std::thread::sleep(Duration::from_millis(300));
            }
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"go\n")
                .expect("write");
            let mut rest = if mode == "read" {
                "usr1 1\n".to_string()
            } else {
                String::new()
            };
            out.read_to_string(&mut rest).expect("read");
            assert_eq!(rest, want, "{mode} on node {node}");
            assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(0));
        }
    }
}

#[test]
fn handlers_work_without_a_cluster_and_signals_sent_to_ssirun_reach_them() {
    // No node running: ssirun gives a program with handlers a private node.
    let empty = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(bin("ssirun"))
        .env("XDG_RUNTIME_DIR", empty.path())
        .env_remove("SSI_CONNECT")
        .arg(guest("sigs"))
        .arg("count")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssirun");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    assert_eq!(next(&mut out), "ready\n");
    let send = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    send("-USR1");
    assert_eq!(next(&mut out), "usr1 1\n");
    send("-TERM");
    assert_eq!(next(&mut out), "term\n");
    assert_eq!(next(&mut out), "bye 1\n");
    assert_eq!(status_within(&mut child, Duration::from_secs(5)), Some(0));
}
