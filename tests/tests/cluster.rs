//! Three real `ssid` nodes on loopback ports: bodies on a remote node behave as
//! at home, `ssictl` sees every process from any node, and a node that dies
//! ends its bodies' sessions with status 137 while the rest keeps working.

use ssi_tests::{
    Case, Cluster, Proc, WAIT, assert_same, bin, comparable_report, guest, run, standard_cases,
    wait_until,
};
use std::process::{Command, Stdio};
use std::time::Duration;

fn on_node(cluster: &Cluster, home: usize, node: usize) -> Vec<String> {
    vec![
        "--connect".into(),
        cluster.socket(home).display().to_string(),
        "--node".into(),
        node.to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

#[test]
fn differential_with_the_body_on_node_2_and_home_on_node_1() {
    let cluster = Cluster::start(3);
    let options = on_node(&cluster, 1, 2);
    for (name, case) in standard_cases() {
        let ours = case.run_ssirun_with(&strs(&options));
        let reference = case.run_reference();
        assert_same(&format!("{name} on node 2"), &ours, &reference);
    }
    // A trap on node 2 is reported as wasmtime reports it, frame by frame
    // (but for the code offsets of an instrumented module).
    let case = Case::new(guest("trap"));
    let (remote, _) = case.run_ssirun_with(&strs(&options));
    let (reference, _) = case.run_reference();
    assert_eq!(remote.status, 134);
    assert_eq!(remote.stdout, reference.stdout);
    let err = remote.stderr_text();
    assert!(err.contains("wasm backtrace"), "{err}");
    assert_eq!(
        comparable_report(&err),
        comparable_report(&reference.stderr_text())
    );
}

#[test]
fn bodies_at_home_through_the_node_match_too() {
    let cluster = Cluster::start(1);
    let options = vec![
        "--connect".to_string(),
        cluster.socket(1).display().to_string(),
    ];
    for (name, case) in standard_cases() {
        let ours = case.run_ssirun_with(&strs(&options));
        let reference = case.run_reference();
        assert_same(&format!("{name} at home"), &ours, &reference);
    }
}

/// Starts `spin ARGS` through node `home` with its body on `node`; returns once
/// it has printed its first line.
fn spin(cluster: &Cluster, home: usize, node: usize, args: &[&str]) -> Proc {
    cluster.launch(home, node, &guest("spin"), args, "spinning")
}

fn ps_row(
    cluster: &Cluster,
    from: usize,
    pid_of: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    cluster
        .ssictl_json(from, "ps")
        .into_iter()
        .find(|p| pid_of(p))
}

#[test]
fn ps_from_node_3_shows_a_process_of_node_1_running_on_node_2() {
    let cluster = Cluster::start(3);
    let mut child = spin(&cluster, 1, 2, &["0"]);
    let row = ps_row(&cluster, 3, |p| {
        p["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("spin.wasm"))
    })
    .expect("node 3 lists the process");
    assert_eq!(row["home"], 1);
    assert_eq!(row["node"], 2);
    assert_eq!(row["state"], "running");
    let pid = row["pid"].as_u64().expect("pid");
    assert_eq!(pid >> 22, 1, "the pid encodes its home node");
    assert!(row["memory"].as_u64().expect("memory") > 0);
    // It computes: its CPU time grows.
    std::thread::sleep(Duration::from_millis(300));
    let later = ps_row(&cluster, 3, |p| p["pid"] == pid).expect("still listed");
    assert!(later["cpu_ms"].as_u64().expect("cpu") > 0, "{later}");
    // The table form shows the same process.
    let table = String::from_utf8(cluster.ssictl(2, &["ps"]).stdout).expect("utf-8");
    assert!(
        table.contains(&pid.to_string()) && table.contains("spin.wasm 0"),
        "{table}"
    );

    // A session that goes away takes its process with it, wherever the body runs.
    child.kill();
    wait_until("the process to end with its session", WAIT, || {
        ps_row(&cluster, 3, |p| p["pid"] == pid).is_none()
    });
    // …and its body on node 2 is killed.
    wait_no_bodies(&cluster, 2, "the body outlived its session");
}

/// The whole modules compiled in node `id`'s cache (not their runnable
/// parts, not the files being written).
fn whole_modules(cluster: &Cluster, id: usize) -> Vec<String> {
    std::fs::read_dir(cluster.data_dir(id).join("modules"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !n.starts_with('.')
                        && n.ends_with(".cwasm")
                        && !n.ends_with(".runnable.cwasm")
                        && !n.ends_with(".quick.cwasm")
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_node_fetches_a_modules_compiled_code_from_a_peer_instead_of_compiling_it() {
    // Moved to nodes that never ran it, and launched at one: each takes the
    // code node 1 compiled.
    let cluster = Cluster::start_unbalanced(3);
    let mut child = spin(&cluster, 1, 1, &["0"]);
    let pid = cluster.pid_of(1, "spin", |c| c.starts_with("spin.wasm"));
    // The home compiles the whole module once the process has run a while.
    wait_until("node 1 to compile the whole module", WAIT, || {
        !whole_modules(&cluster, 1).is_empty()
    });
    assert!(whole_modules(&cluster, 3).is_empty());
    let report = ssi_tests::migrate_or_explain(&cluster, &mut child, 1, pid, 3);
    assert_eq!(report["to"], 3, "{report}");
    // Node 3 took node 1's code: it says so, and holds it as its own.
    let out = cluster.ssictl(3, &["events", "--json"]);
    let events = String::from_utf8_lossy(&out.stdout);
    let fetched: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "fetched" && e["node"] == 3)
        .collect();
    assert_eq!(fetched.len(), 1, "{events}");
    let message = fetched[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("from node 1"), "{message}");
    assert_eq!(whole_modules(&cluster, 3), whole_modules(&cluster, 1));
    // The body runs on node 3 on that code, and moves on from there: node 2
    // fetches it too (from node 3 or node 1), and compiles nothing.
    let row = ps_row(&cluster, 1, |p| p["pid"] == pid).expect("still listed");
    assert_eq!(row["node"], 3, "{row}");
    ssi_tests::migrate_or_explain(&cluster, &mut child, 1, pid, 2);
    assert_eq!(whole_modules(&cluster, 2), whole_modules(&cluster, 1));
    let out = cluster.ssictl(2, &["events", "--json"]);
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| e["kind"] == "fetched" && e["node"] == 2),
        "{events}"
    );
    let row = ps_row(&cluster, 1, |p| p["pid"] == pid).expect("still listed");
    assert_eq!(row["node"], 2, "{row}");
    assert_eq!(row["state"], "running", "{row}");
    child.kill();
    // A node that joins later and launches the module itself asks its peers
    // first too.
    let mut cluster = cluster;
    let fourth = cluster.add_node(&["--balance", "off"]);
    let mut launched = spin(&cluster, fourth, fourth, &["0"]);
    assert_eq!(whole_modules(&cluster, fourth), whole_modules(&cluster, 1));
    let out = cluster.ssictl(fourth, &["events", "--json"]);
    let events = String::from_utf8_lossy(&out.stdout);
    assert!(
        events
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|e| e["kind"] == "fetched" && e["node"] == fourth),
        "{events}"
    );
    launched.kill();
}

/// Waits until node `id` runs no body.
fn wait_no_bodies(cluster: &Cluster, id: usize, failure: &str) {
    wait_until(
        &format!("node {id} to run no body ({failure})"),
        WAIT,
        || {
            let nodes = cluster.ssictl_json(id, "nodes");
            nodes.iter().any(|n| n["id"] == id && n["bodies"] == 0)
        },
    );
}

#[test]
fn a_dead_node_ends_its_bodies_sessions_with_137_and_the_rest_keeps_working() {
    let mut cluster = Cluster::start(3);
    let mut doomed = spin(&cluster, 1, 2, &["0"]);
    let mut survivor = spin(&cluster, 1, 3, &["0", "--ticks"]);
    // Node 1 has heard that node 2 runs it (what it shows once node 2 is dead).
    cluster.wait_until(1, |nodes| {
        nodes.iter().any(|n| n["id"] == 2 && n["bodies"] == 1)
    });
    cluster.kill(2);
    let ended = doomed.wait();
    assert_eq!(ended.status.code(), Some(137));
    let err = String::from_utf8_lossy(&ended.stderr);
    assert!(err.contains("was lost") && err.contains("node 2"), "{err}");

    // The other process, home on node 1 and body on node 3, goes on.
    for _ in 0..5 {
        let line = survivor.line("a tick");
        assert!(line.starts_with("tick "), "{line}");
    }
    // Node 2 shows as down; new processes still run at home and on node 3.
    cluster.wait_until(1, |nodes| {
        nodes.iter().any(|n| n["id"] == 2 && n["state"] == "down")
    });
    // What it ran is not shown as running there.
    let nodes = cluster.ssictl_json(1, "nodes");
    let two = nodes.iter().find(|n| n["id"] == 2).expect("node 2 listed");
    assert!(two["bodies"].is_null() && two["load"].is_null(), "{two}");
    assert_eq!(two["last_bodies"], 1, "{two}");
    let table = String::from_utf8_lossy(&cluster.ssictl(1, &["nodes"]).stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("2"))
        .expect("node 2's row");
    assert!(row.contains("down") && !row.contains(" 1 "), "{table}");
    for node in [1, 3] {
        let (out, _) =
            Case::new(guest("hello")).run_ssirun_with(&strs(&on_node(&cluster, 1, node)));
        assert_eq!(out.stdout_text(), "Hello, world!\n");
    }
    // Starting a body on the dead node is refused with a clear message.
    let (out, _) = Case::new(guest("hello")).run_ssirun_with(&strs(&on_node(&cluster, 1, 2)));
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_text().contains("node 2") && out.stderr_text().contains("down"),
        "{}",
        out.stderr_text()
    );
    survivor.kill();
}

#[test]
fn a_dead_home_ends_its_sessions_with_137_and_its_remote_bodies() {
    let mut cluster = Cluster::start(2);
    let mut session = spin(&cluster, 1, 2, &["0"]);
    cluster.kill(1);
    let ended = session.wait();
    let err = String::from_utf8_lossy(&ended.stderr);
    assert_eq!(ended.status.code(), Some(137), "{err}");
    assert!(err.contains("lost with its home node"), "{err}");
    // Node 2 kills the body whose home went away.
    wait_no_bodies(&cluster, 2, "the orphaned body still runs");
}

/// How fast a silent node is seen down is a figure (`ssi-netbench` measures
/// it); this checks the behaviour, with a bound no loaded machine reaches.
#[test]
fn a_silent_node_is_shown_down_and_its_sessions_end_with_137() {
    let cluster = Cluster::start(3);
    let mut doomed = spin(&cluster, 1, 2, &["0"]);
    // SIGSTOP: connections stay open, nothing answers (a hung or cut-off machine).
    cluster.signal(2, "STOP");
    cluster.wait_until(3, |nodes| {
        nodes.iter().any(|n| n["id"] == 2 && n["state"] == "down")
    });
    // Node 1 sees node 2 down on its own clock, and the session ends.
    let ended = doomed.wait();
    assert_eq!(ended.status.code(), Some(137));
    cluster.signal(2, "CONT");
}

#[test]
fn bad_cluster_requests_get_clear_errors() {
    let cluster = Cluster::start(2);
    let (out, _) = Case::new(guest("hello")).run_ssirun_with(&strs(&on_node(&cluster, 1, 9)));
    assert_eq!(out.status, 1);
    assert_eq!(
        out.stderr_text(),
        "ssirun: error: node 9 is not a member of this cluster\n"
    );
    let (out, _) = Case::new(guest("hello")).run_ssirun_with(&["--connect", "127.0.0.1:1"]);
    assert_eq!(out.status, 1);
    assert!(
        out.stderr_text()
            .starts_with("ssirun: error: cannot connect to 127.0.0.1:1"),
        "{}",
        out.stderr_text()
    );
    let out = run(
        Command::new(bin("ssictl")).args(["--connect", "/nonexistent/node.sock", "ps"]),
        "ssictl with no node",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is `ssid` running?"), "{err}");
    // The cause is said once.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    // A malformed module is refused by the home, before any body starts.
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\xff").expect("write");
    let out = run(
        Command::new(bin("ssirun"))
            .args(on_node(&cluster, 1, 2))
            .arg(&bad),
        "ssirun of a malformed module",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ssirun: error: cannot run `")
            && err.contains("invalid WebAssembly module"),
        "{err}"
    );
    // Two daemons cannot share a socket.
    let out = run(
        Command::new(bin("ssid"))
            .args(["--node-id", "7", "--listen", "127.0.0.1:0", "--socket"])
            .arg(cluster.socket(1)),
        "a second ssid on the same socket",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
}

/// Waits until the node on `socket` answers (`what` names the wait), and
/// returns its `ssictl nodes --json`.
fn nodes_once_up(socket: &std::path::Path, what: &str) -> Vec<serde_json::Value> {
    let mut nodes = Vec::new();
    wait_until(what, WAIT, || {
        let out = run(
            Command::new(bin("ssictl"))
                .arg("--connect")
                .arg(socket)
                .args(["nodes", "--json"]),
            "ssictl nodes",
        );
        if out.status.success() {
            nodes = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("json");
        }
        out.status.success()
    });
    nodes
}

#[test]
fn ssid_takes_its_settings_from_a_toml_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = ssi_tests::free_port();
    let socket = dir.path().join("n5.sock");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "node-id = 5\nlisten = \"127.0.0.1:{port}\"\npeers = [\"6=127.0.0.1:1\"]\nsocket = \"{}\"\ndata-dir = \"{}\"\ncache-max = \"1 B\"\n",
            socket.display(),
            dir.path().join("data").display()
        ),
    )
    .expect("write config");
    let mut daemon = Proc::spawn(
        Command::new(bin("ssid"))
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null()),
        "ssid --config",
    );
    let nodes = nodes_once_up(&socket, "ssid to start from its config file");
    assert_eq!(nodes[0]["id"], 5);
    assert_eq!(nodes[0]["state"], "up");
    assert_eq!(nodes[1]["id"], 6);
    assert_eq!(nodes[1]["state"], "down");
    // A process launched there carries node 5 in its pid.
    let mut spin = Proc::spawn(
        Command::new(bin("ssirun"))
            .args(["--connect", &socket.display().to_string()])
            .arg(guest("spin"))
            .arg("0")
            .stdin(Stdio::null()),
        "spin on node 5",
    );
    assert_eq!(spin.line("its first line"), "spinning");
    let out = run(
        Command::new(bin("ssictl"))
            .arg("--connect")
            .arg(&socket)
            .args(["ps", "--json"]),
        "ssictl ps",
    );
    let procs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let pid = procs[0]["pid"].as_u64().expect("a pid");
    assert_eq!(pid >> 22, 5, "pid {pid} carries its home, node 5");
    assert_eq!(procs[0]["home"], 5);
    spin.kill();
    // Its cache holds at most one byte: each module it compiles replaces the
    // one before (the one just written stays, whatever its size).
    let modules = dir.path().join("data").join("modules");
    let entries = || -> Vec<String> {
        std::fs::read_dir(&modules)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    let spun = entries();
    assert_eq!(spun.len(), 1, "{spun:?}");
    let hello = run(
        Command::new(bin("ssirun"))
            .args(["--connect", &socket.display().to_string()])
            .arg(guest("hello"))
            .stdin(Stdio::null()),
        "hello on node 5",
    );
    assert!(hello.status.success());
    let said = entries();
    assert!(said.len() == 1 && said != spun, "{spun:?} then {said:?}");
    daemon.kill();

    // Bad settings are named.
    std::fs::write(
        &config,
        "node-id = 5\nlisten = \"127.0.0.1:1\"\ncolour = \"blue\"\n",
    )
    .expect("write");
    let out = run(
        Command::new(bin("ssid")).arg("--config").arg(&config),
        "ssid with a bad config",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid configuration file") && err.contains("colour"),
        "{err}"
    );
    // Bad options are named.
    let refused = |args: &[&str], says: &str| {
        let out = run(
            Command::new(bin("ssid")).args(args),
            "ssid with a bad option",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    };
    refused(&["--listen", "127.0.0.1:0"], "no node id");
    let node = ["--node-id", "1", "--listen", "127.0.0.1:0"];
    refused(
        &[&node[..], &["--peer", "2=nowhere"]].concat(),
        "`nowhere` is not HOST:PORT",
    );
    refused(
        &[&node[..], &["--cache-max", "lots"]].concat(),
        "invalid --cache-max `lots`",
    );
}

#[test]
fn one_member_list_serves_every_node_including_its_own_entry() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = ssi_tests::free_port();
    let me = format!("127.0.0.1:{port}");
    let socket = dir.path().join("n7.sock");
    let mut daemon = Proc::spawn(
        Command::new(bin("ssid"))
            .args([
                "--node-id",
                "7",
                "--listen",
                &me,
                "--peer",
                &format!("7={me}"),
            ])
            .args(["--peer", "8=127.0.0.1:1", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null()),
        "ssid listed among its own peers",
    );
    let nodes = nodes_once_up(&socket, "ssid to start");
    let ids: Vec<u64> = nodes.iter().filter_map(|n| n["id"].as_u64()).collect();
    assert_eq!(ids, [7, 8], "{nodes:?}");
    daemon.kill();
    // Its id with another address is an error that says so.
    let out = run(
        Command::new(bin("ssid"))
            .args([
                "--node-id",
                "7",
                "--listen",
                &me,
                "--peer",
                "7=127.0.0.1:1",
                "--socket",
            ])
            .arg(dir.path().join("other.sock")),
        "ssid with its id at another address",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has the id of this node but another address"),
        "{err}"
    );
}

#[test]
fn nodes_that_join_through_one_peer_learn_of_each_other() {
    // Node 1 knows nobody; nodes 2 and 3 know only node 1.
    let cluster = Cluster::start_seeded(3);
    // Node 2 and node 3 met through node 1: a body of node 3 runs on node 2.
    let (out, _) = Case::new(guest("hello")).run_ssirun_with(&strs(&on_node(&cluster, 3, 2)));
    assert_eq!(
        out.stdout_text(),
        "Hello, world!\n",
        "{}",
        out.stderr_text()
    );
}

#[test]
fn garbage_on_a_nodes_ports_does_not_hurt_it() {
    use std::io::Write as _;
    let cluster = Cluster::start(2);
    // Random bytes, a deputy preamble with a bad hello, and a forged deputy
    // reference: each connection is dropped, the node goes on.
    let junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
        [&b"ssi-dep1"[..], &[0xff; 64][..]].concat(),
    ];
    for bytes in &junk {
        let mut s = std::net::TcpStream::connect(cluster.address(1)).expect("connect");
        let _ = s.write_all(bytes);
        drop(s);
        let mut u = std::os::unix::net::UnixStream::connect(cluster.socket(1)).expect("connect");
        let _ = u.write_all(bytes);
    }
    // A well-formed hello for a process that does not exist is refused.
    {
        let hello = capnp_hello(4194305, &[0u8; 16]);
        let mut s = std::net::TcpStream::connect(cluster.address(1)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("a read deadline");
        s.write_all(b"ssi-dep1").expect("preamble");
        s.write_all(&hello).expect("hello");
        let mut reply = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut reply);
        assert!(
            String::from_utf8_lossy(&reply).contains("no process 4194305"),
            "{reply:?}"
        );
    }
    let (out, _) = Case::new(guest("hello")).run_ssirun_with(&strs(&on_node(&cluster, 1, 2)));
    assert_eq!(
        out.stdout_text(),
        "Hello, world!\n",
        "{}",
        out.stderr_text()
    );
    assert_eq!(cluster.ssictl_json(1, "nodes").len(), 2);
}

/// A `DeputyHello` message in Cap'n Proto's stream framing, written by hand:
/// one segment holding the root pointer, the struct (pid) and the secret.
fn capnp_hello(pid: u32, secret: &[u8; 16]) -> Vec<u8> {
    let mut words: Vec<u64> = Vec::new();
    // Root pointer: struct at offset 0, 1 data word, 1 pointer.
    words.push(1u64 << 32 | 1u64 << 48);
    // Data word: pid.
    words.push(u64::from(pid));
    // Pointer to the secret: list at offset 0 (right after), byte elements, 16 long.
    words.push(1 | 2u64 << 32 | 16u64 << 35);
    let mut data = [0u8; 16];
    data.copy_from_slice(secret);
    words.push(u64::from_le_bytes(data[..8].try_into().expect("8")));
    words.push(u64::from_le_bytes(data[8..].try_into().expect("8")));
    let mut out = Vec::new();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(words.len() as u32).to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// Runs `hello` with `SSI_SOCKET` at `socket` and no `--connect`.
fn hello_at(socket: &std::path::Path) -> std::process::Output {
    run(
        Command::new(bin("ssirun"))
            .env("SSI_SOCKET", socket)
            .env_remove("SSI_CONNECT")
            .arg(guest("hello"))
            .stdin(Stdio::null()),
        "ssirun hello",
    )
}

#[test]
fn a_socket_left_by_a_killed_node_is_named_once_and_a_new_node_replaces_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("node.sock");
    let start = || {
        let port = ssi_tests::free_port();
        let node = Proc::spawn(
            Command::new(bin("ssid"))
                .args(["--node-id", "1", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--socket")
                .arg(&socket)
                .stdin(Stdio::null()),
            "ssid",
        );
        wait_until("the node to answer on its socket", WAIT, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        node
    };
    let mut node = start();
    let pid = node.id();
    // SAFETY: kill has no memory preconditions; `pid` is our child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until("the node to die", WAIT, || node.try_wait().is_some());
    assert!(socket.exists(), "SIGKILL leaves the socket behind");
    let out = hello_at(&socket);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!\n");
    assert_eq!(
        err.matches("nobody answers on").count(),
        1,
        "said once, naming the socket: {err}"
    );
    assert!(err.contains(&socket.display().to_string()), "{err}");
    // A new node takes the socket over, and ssirun uses it without a word.
    let _node = start();
    let out = hello_at(&socket);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("nobody answers"), "{err}");
    let events = run(
        Command::new(bin("ssictl"))
            .arg("--connect")
            .arg(&socket)
            .args(["events", "--json"]),
        "ssictl events",
    );
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events
            .lines()
            .any(|l| l.contains("\"started\"") && l.contains("hello")),
        "the new node ran it: {events}"
    );
}

/// Seven nodes: each talks to at most four peers a round (gossip), yet
/// every node knows every other's load, and a node that dies is seen down.
#[test]
fn seven_nodes_gossip_with_four_peers_a_round_and_still_see_a_dead_one() {
    let mut cluster = Cluster::start(7);
    let sent = |cluster: &Cluster| -> u64 {
        cluster
            .ssictl_json(1, "nodes")
            .iter()
            .find(|n| n["id"] == 1)
            .and_then(|n| n["heartbeats_sent"].as_u64())
            .expect("node 1's heartbeats")
    };
    let before = sent(&cluster);
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let rounds = t0.elapsed().as_millis() as u64 / 500 + 1;
    let during = sent(&cluster) - before;
    // Four a round, not six (one per peer).
    assert!(
        during <= 4 * rounds,
        "{during} heartbeats in {rounds} rounds to 6 peers"
    );
    assert!(
        during >= 2 * rounds,
        "{during} heartbeats in {rounds} rounds"
    );
    // Every node knows every other's load, through the others.
    for id in 1..=7 {
        let nodes = cluster.ssictl_json(id, "nodes");
        assert_eq!(nodes.len(), 7, "{nodes:?}");
        for n in &nodes {
            assert_eq!(n["state"], "up", "node {id} sees {n}");
            assert!(n["capacity"].as_f64().is_some_and(|c| c > 0.0), "{n}");
        }
    }
    cluster.kill(7);
    cluster.wait_until(1, |nodes| {
        nodes.iter().any(|n| n["id"] == 7 && n["state"] == "down")
    });
    // And stays down: rumors of it do not bring it back.
    std::thread::sleep(Duration::from_secs(2));
    for id in 1..=6 {
        let nodes = cluster.ssictl_json(id, "nodes");
        let seven = nodes.iter().find(|n| n["id"] == 7).expect("node 7 listed");
        assert_eq!(seven["state"], "down", "node {id} sees {seven}");
    }
}

/// Through a node, as embedded: a module that cannot run is refused before
/// it is compiled, on its home and on the node its body was to run on.
#[test]
fn a_module_that_cannot_run_is_refused_by_a_node_before_it_is_compiled() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let module = dir.path().join("imp.wat");
    std::fs::write(
        &module,
        "(module (import \"env\" \"mystery\" (func)) (memory (export \"memory\") 1) (func (export \"_start\") (loop (br 0))))",
    )
    .expect("write the module");
    let out = run(
        Command::new(bin("ssirun"))
            .args(strs(&on_node(&cluster, 1, 2)))
            .arg(&module)
            .stdin(Stdio::null()),
        "ssirun with a module that cannot run",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(
        err.contains("imports `env::mystery` (function), which is not provided"),
        "{err}"
    );
    for id in [1, 2] {
        let cached: Vec<_> = std::fs::read_dir(cluster.data_dir(id).join("modules"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(cached.is_empty(), "node {id} compiled it: {cached:?}");
    }
}
