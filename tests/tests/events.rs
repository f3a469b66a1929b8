//! The cluster's event stream and draining, on real `ssid` nodes:
//! `ssictl events --follow --json` at one node sees what happens to a
//! process whose home is another (its start, a migration with who asked and
//! how long it was frozen, its end by a signal) and a node going down;
//! `ssictl drain` moves every body off a node, keeps new work away from it
//! and says why a body stays; `ssictl undrain` lets it take work again.

use ssi_tests::{Cluster, Proc, Stream, WAIT, bin, guest, unfreezable_module, wait_until};
use std::process::{Command, Stdio};

/// `spin 0` with its home on node `home` and its body on `node`.
fn spin(cluster: &Cluster, home: usize, node: usize) -> Proc {
    cluster.launch(home, node, &guest("spin"), &["0"], "spinning")
}

/// `ssictl events --follow --json` against node `id`.
fn follow(cluster: &Cluster, id: usize) -> Proc {
    Proc::spawn(
        Command::new(bin("ssictl"))
            .arg("--connect")
            .arg(cluster.socket(id))
            .args(["events", "--follow", "--json", "-n", "1000"])
            .stdin(Stdio::null()),
        &format!("`ssictl events --follow` on node {id}"),
    )
}

/// The next event on `out` that `matches`, parsed.
#[track_caller]
fn event(
    out: &mut Stream,
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let line = out.until(what, |l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|e| matches(&e))
    });
    serde_json::from_str(&line).expect("an event is JSON")
}

fn processes(cluster: &Cluster, id: usize) -> Vec<serde_json::Value> {
    cluster.ssictl_json(id, "ps")
}

fn node_of(cluster: &Cluster, pid: u64) -> Option<u64> {
    processes(cluster, 1)
        .into_iter()
        .find(|p| p["pid"] == pid)
        .and_then(|p| p["node"].as_u64())
}

#[test]
fn events_follow_a_process_of_another_node_through_a_migration_and_its_end() {
    let mut cluster = Cluster::start_unbalanced(3);
    let mut events = follow(&cluster, 3);
    // The follower is in place once it has told its first push: give it a
    // process to see start.
    let _spin = spin(&cluster, 1, 1);
    let started = event(&mut events.out, "a start event", |e| e["kind"] == "started");
    let pid = started["pid"]
        .as_u64()
        .expect("a started event names its pid");
    assert_eq!(started["node"], 1, "{started}");
    assert!(
        started["message"]
            .as_str()
            .is_some_and(|m| m.contains("spin")),
        "{started}"
    );
    assert!(
        started["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{started}"
    );
    assert!(started["time_ms"].as_u64().is_some(), "{started}");

    // A migration asked at node 2: who asked, from and to, how long frozen.
    let out = cluster.ssictl(2, &["migrate", &pid.to_string(), "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = event(&mut events.out, "the move's event", |e| {
        e["kind"] == "moved"
    });
    assert_eq!(moved["pid"], pid, "{moved}");
    assert_eq!(moved["from"], 1, "{moved}");
    assert_eq!(moved["node"], 2, "{moved}");
    assert_eq!(moved["by"], "admin", "{moved}");
    assert!(moved["frozen_us"].as_u64().is_some(), "{moved}");

    // A move that cannot happen says why.
    let out = cluster.ssictl(1, &["migrate", &pid.to_string(), "9"]);
    assert!(!out.status.success());
    let refused = event(&mut events.out, "the refusal's event", |e| {
        e["kind"] == "refused"
    });
    assert_eq!(refused["pid"], pid, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("node 9")),
        "{refused}"
    );

    // Stopped and continued.
    for (sig, kind) in [("-STOP", "stopped"), ("-CONT", "continued")] {
        let out = cluster.ssictl(3, &["kill", sig, &pid.to_string()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let e = event(&mut events.out, kind, |e| e["kind"] == kind);
        assert_eq!(e["pid"], pid, "{e}");
    }

    // Its end by SIGTERM, where it ran.
    let out = cluster.ssictl(3, &["kill", &pid.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let killed = event(&mut events.out, "its end", |e| e["kind"] == "killed");
    assert_eq!(killed["pid"], pid, "{killed}");
    assert_eq!(killed["status"], 15, "{killed}");
    assert_eq!(killed["node"], 2, "{killed}");

    // An ordinary end: its status.
    let out = ssi_tests::run(
        cluster
            .ssirun(1)
            .args(["--node", "3"])
            .arg(guest("hello"))
            .stdin(Stdio::null()),
        "hello on node 3",
    );
    assert!(out.status.success());
    let exited = event(&mut events.out, "hello's end", |e| e["kind"] == "exited");
    assert_eq!(exited["status"], 0, "{exited}");
    assert_eq!(exited["node"], 3, "{exited}");

    // A node that goes down, as the followed node sees it.
    cluster.kill(2);
    let down = event(&mut events.out, "node 2 down", |e| e["kind"] == "down");
    assert_eq!(down["node"], 2, "{down}");
    assert!(down["pid"].is_null(), "{down}");

    // Without --follow: the latest, in time order, and then it ends.
    let out = cluster.ssictl(1, &["events", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<&str> = listed
        .iter()
        .filter(|e| e["pid"] == pid)
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "started",
            "moved",
            "refused",
            "stopped",
            "continued",
            "killed"
        ],
        "{listed:?}"
    );
    let times: Vec<u64> = listed
        .iter()
        .filter_map(|e| e["time_ms"].as_u64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The human form: one line each, its kind and message.
    let out = cluster.ssictl(1, &["events", "-n", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[test]
fn a_drained_node_sends_its_bodies_away_and_takes_no_new_work_until_undrained() {
    let cluster = Cluster::start_with(3, |_| vec!["--cpus".into(), "4".into()]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let _a = spin(&cluster, 1, 2);
    let _b = spin(&cluster, 3, 2);
    // One that cannot be frozen stays, and the drain says why.
    let unfreezable = unfreezable_module(dir.path());
    let _fixed = cluster.launch(2, 2, &unfreezable, &[], "started");
    let fixed = cluster.pid_of(1, "the unfreezable process", |c| c.contains("started.wat"));
    let mut events = follow(&cluster, 1);

    let out = cluster.ssictl(1, &["drain", "2"]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("2 bodies moved off, 1 stayed"),
        "{said}\n{}",
        ssi_tests::nodes_logs()
    );
    assert!(said.contains(&format!("process {fixed}")), "{said}");
    let on_two: Vec<u64> = processes(&cluster, 1)
        .into_iter()
        .filter(|p| p["node"] == 2)
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(
        on_two,
        [fixed],
        "only the unfreezable one is left on node 2"
    );
    let drained = event(&mut events.out, "the drain", |e| e["kind"] == "drained");
    assert_eq!(drained["node"], 2, "{drained}");
    for _ in 0..2 {
        let moved = event(&mut events.out, "a drain's move", |e| e["kind"] == "moved");
        assert_eq!(moved["by"], "drain", "{moved}");
        assert_eq!(moved["from"], 2, "{moved}");
    }
    // Other nodes know, and keep away: a move there is refused, and a new
    // process of node 2 starts elsewhere.
    wait_until("node 1 to see node 2 drained", WAIT, || {
        cluster
            .ssictl_json(1, "nodes")
            .iter()
            .any(|n| n["id"] == 2 && n["draining"] == true)
    });
    let moved_off = processes(&cluster, 1)
        .into_iter()
        .find(|p| p["node"] != 2)
        .and_then(|p| p["pid"].as_u64())
        .expect("a moved process");
    let out = cluster.ssictl(1, &["migrate", &moved_off.to_string(), "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("drained"), "{err}");
    let mut placed = Proc::spawn(
        cluster
            .ssirun(2)
            .arg(guest("spin"))
            .arg("0")
            .stdin(Stdio::null()),
        "a new process of node 2",
    );
    assert_eq!(placed.line("its first line"), "spinning");
    let newest = processes(&cluster, 1)
        .into_iter()
        .filter(|p| p["home"] == 2 && p["command"].as_str().is_some_and(|c| c.contains("spin")))
        .max_by_key(|p| p["pid"].as_u64())
        .expect("the new process");
    assert_ne!(
        newest["node"], 2,
        "a drained node took a new body: {newest}"
    );

    // Undrained, it takes work again.
    let out = cluster.ssictl(3, &["undrain", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    event(&mut events.out, "the undrain", |e| e["kind"] == "undrained");
    wait_until("node 1 to see node 2 undrained", WAIT, || {
        cluster
            .ssictl_json(1, "nodes")
            .iter()
            .any(|n| n["id"] == 2 && n["draining"] == false)
    });
    let out = cluster.ssictl(1, &["migrate", &moved_off.to_string(), "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(node_of(&cluster, moved_off), Some(2));
    // A node that is not there cannot be drained.
    let out = cluster.ssictl(1, &["drain", "7"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
