//! The load balancer on real `ssid` nodes: CPU-bound processes launched at
//! one node spread over the others by themselves, and then stay put; a new
//! node takes work; processes that cannot move never do; with balancing off
//! nothing moves; a new process starts where there is room; and what the
//! moved programs print is what they print unmoved.

use ssi_tests::{Case, Cluster, Proc, WAIT, assert_same, bin, guest, wait_until};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `--cpus 1` for every node, and `extra`.
fn one_cpu(extra: &[&str]) -> impl Fn(usize) -> Vec<String> {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    move |_| {
        let mut v = vec!["--cpus".to_string(), "1".to_string()];
        v.extend(extra.iter().cloned());
        v
    }
}

/// `spin 0` with its home on node 1 and its body on `node` (0: placed).
fn spin(cluster: &Cluster, node: usize) -> Proc {
    cluster.launch(1, node, &guest("spin"), &["0"], "spinning")
}

/// `spin 0` with its home on node 1 and its body on `node`, pinned there.
fn pinned_spin(cluster: &Cluster, node: usize) -> Proc {
    let mut child = Proc::spawn(
        cluster
            .ssirun(1)
            .args(["--node", &node.to_string(), "--pin"])
            .arg(guest("spin"))
            .arg("0")
            .stdin(Stdio::null()),
        "a pinned spin",
    );
    assert_eq!(child.line("its first line"), "spinning");
    child
}

/// How many processes run on each node, as node 1's `ssictl ps` shows them.
fn per_node(cluster: &Cluster) -> BTreeMap<u64, usize> {
    let mut count = BTreeMap::new();
    for p in cluster.ssictl_json(1, "ps") {
        if let Some(node) = p["node"].as_u64() {
            *count.entry(node).or_insert(0) += 1;
        }
    }
    count
}

/// The node each process runs on, by pid.
fn nodes_by_pid(cluster: &Cluster) -> BTreeMap<u64, u64> {
    cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .filter_map(|p| Some((p["pid"].as_u64()?, p["node"].as_u64()?)))
        .collect()
}

#[test]
fn cpu_bound_processes_launched_at_one_node_spread_two_per_node_and_stay_put() {
    let cluster = Cluster::start_with(3, one_cpu(&[]));
    let _procs: Vec<Proc> = (0..6).map(|_| spin(&cluster, 1)).collect();
    let asked = Instant::now();
    let want: BTreeMap<u64, usize> = [(1, 2), (2, 2), (3, 2)].into();
    wait_until("six processes to spread two per node", WAIT, || {
        per_node(&cluster) == want
    });
    eprintln!("spread in {:?}", asked.elapsed());
    // Balanced: nothing moves any more.
    let settled = nodes_by_pid(&cluster);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        nodes_by_pid(&cluster),
        settled,
        "a process moved again; the nodes' logs:\n{}",
        ssi_tests::nodes_logs()
    );
    // Node 1's log says why each one moved, and `ssictl ps` counts the moves.
    assert!(cluster.log(1).contains("balancer: moving a process"));
    for p in cluster.ssictl_json(3, "ps") {
        let moves = p["moves"].as_u64().expect("moves");
        if p["node"] != 1 {
            assert!(moves >= 1, "{p}");
        }
    }
}

#[test]
fn a_node_that_joins_takes_work() {
    let mut cluster = Cluster::start_with(2, one_cpu(&[]));
    let _procs: Vec<Proc> = (0..4).map(|_| spin(&cluster, 1)).collect();
    let want: BTreeMap<u64, usize> = [(1, 2), (2, 2)].into();
    wait_until("four processes to spread two per node", WAIT, || {
        per_node(&cluster) == want
    });
    let joined = cluster.add_node(&["--cpus", "2"]) as u64;
    wait_until("the new node to take work", WAIT, || {
        per_node(&cluster).get(&joined).copied().unwrap_or(0) > 0
    });
}

#[test]
fn with_balancing_off_nothing_moves_and_unmovable_processes_never_do() {
    let cluster = Cluster::start_with(3, one_cpu(&["--balance", "off"]));
    let _procs: Vec<Proc> = (0..4).map(|_| spin(&cluster, 1)).collect();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(per_node(&cluster), [(1, 4)].into(), "balancing is off");
    // `ssictl nodes` says it, and shows each node's own load.
    let nodes = cluster.ssictl_json(1, "nodes");
    assert!(nodes.iter().all(|n| n["balancing"] == false), "{nodes:?}");
    let node1 = nodes.iter().find(|n| n["id"] == 1).expect("node 1");
    assert_eq!(node1["capacity"], 1.0, "{node1}");
    assert!(node1["load"].as_f64().expect("load") >= 3.0, "{node1}");

    // Balancing on: a module that cannot be frozen (it has a start
    // function) never moves, however loaded its node.
    let cluster = Cluster::start_with(2, one_cpu(&[]));
    let dir = tempfile::tempdir().expect("tmp");
    let module = ssi_tests::unfreezable_module(dir.path());
    let _stuck: Vec<Proc> = (0..3)
        .map(|_| cluster.launch(1, 1, &module, &[], "started"))
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        per_node(&cluster),
        [(1, 3)].into(),
        "an unmovable process moved"
    );
}

#[test]
fn pinned_processes_never_move_until_unpinned() {
    let cluster = Cluster::start_with(3, one_cpu(&[]));
    let procs: Vec<Proc> = (0..4).map(|_| pinned_spin(&cluster, 1)).collect();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        per_node(&cluster),
        [(1, 4)].into(),
        "a pinned process moved"
    );
    let rows = cluster.ssictl_json(2, "ps");
    assert!(rows.iter().all(|p| p["pinned"] == true), "{rows:?}");
    // `ssictl pin PID NODE` moves one and keeps it there; unpinned, the
    // others spread.
    let pids: Vec<String> = rows
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .map(|p| p.to_string())
        .collect();
    let out = cluster.ssictl(3, &["pin", &pids[0], "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for pid in &pids[1..] {
        let out = cluster.ssictl(3, &["unpin", pid]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_until("the unpinned processes to spread", WAIT, || {
        let placed = per_node(&cluster);
        placed.len() == 3 && placed.values().all(|n| *n <= 2)
    });
    let first = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64().map(|n| n.to_string()).as_deref() == Some(&pids[0]))
        .expect("listed");
    assert_eq!(first["node"], 2, "{first}");
    assert_eq!(first["pinned"], true, "{first}");
    drop(procs);
}

#[test]
fn a_process_that_calls_home_often_stays_there_while_cpu_bound_ones_leave() {
    let cluster = Cluster::start_with(3, one_cpu(&[]));
    let dir = tempfile::tempdir().expect("tmp");
    // Millions of writes and opens at its home, node 1: I/O-bound.
    let mut chatty = Proc::spawn(
        cluster
            .ssirun(1)
            .args([
                "--node",
                "1",
                "--dir",
                &format!("{}::/", dir.path().display()),
            ])
            .arg(guest("syscalls"))
            .arg("3000000")
            .stdin(Stdio::null()),
        "syscalls",
    );
    let chatty_pid = cluster.pid_of(1, "syscalls", |c| c.starts_with("syscalls.wasm"));
    let _spins: Vec<Proc> = (0..2).map(|_| spin(&cluster, 1)).collect();
    wait_until("the CPU-bound processes to leave node 1", WAIT, || {
        per_node(&cluster).get(&1) == Some(&1)
    });
    assert_eq!(
        nodes_by_pid(&cluster).get(&chatty_pid),
        Some(&1),
        "the process that calls home often was moved away from it"
    );
    assert!(
        chatty.try_wait().is_none(),
        "it ended before the others left"
    );
}

#[test]
fn a_new_process_starts_where_there_is_room() {
    let cluster = Cluster::start_with(3, one_cpu(&[]));
    // Node 1's one core is taken; the next launch without --node goes
    // elsewhere, once node 1 has measured its load.
    let _first = spin(&cluster, 1);
    wait_until("node 1 to count its load", WAIT, || {
        cluster
            .ssictl_json(1, "nodes")
            .iter()
            .any(|n| n["id"] == 1 && n["demand"].as_f64().unwrap_or(0.0) >= 1.0)
    });
    let _second = spin(&cluster, 0);
    let placed = per_node(&cluster);
    assert_eq!(placed.get(&1), Some(&1), "{placed:?}");
    assert_eq!(placed.values().sum::<usize>(), 2, "{placed:?}");
}

#[test]
fn programs_moved_by_the_balancer_print_what_they_print_unmoved() {
    let cluster = Cluster::start_with(3, one_cpu(&[]));
    let reference = Case::new(guest("churn")).args(&["6000"]).run_reference();
    let socket = cluster.socket(1).display().to_string();
    let runs: Vec<_> = (0..6)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                Case::new(guest("churn")).args(&["6000"]).run_ssirun_with(&[
                    "--connect",
                    &socket,
                    "--node",
                    "1",
                ])
            })
        })
        .collect();
    for run in runs {
        let ours = run.join().expect("a run");
        assert_same("churn under the balancer", &ours, &reference);
    }
    assert!(
        cluster.log(1).contains("balancer: moved"),
        "nothing was moved: the test shows nothing"
    );
    // Nothing is left running anywhere.
    let out = ssi_tests::run(
        Command::new(bin("ssictl"))
            .arg("--connect")
            .arg(cluster.socket(2))
            .args(["ps", "--json"]),
        "ssictl ps",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// Three loaded nodes see the same idle node join, and each would send it
/// some of its four at once: the idle node's check of each move (counting
/// the moves it took whose bodies it has not measured yet) keeps it from
/// holding more than its senders, and the cluster comes to three per node
/// (4 against 2 on one core is not balanced).
#[test]
fn loaded_nodes_sending_to_one_idle_node_at_once_do_not_swamp_it() {
    let mut cluster = Cluster::start_with(3, one_cpu(&[]));
    // Launched pinned, so that the balancer sees four on each node at once
    // (not a node still empty while the test launches its four), then let go.
    let _procs: Vec<Proc> = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
        .into_iter()
        .map(|node| pinned_spin(&cluster, node))
        .collect();
    for p in cluster.ssictl_json(1, "ps") {
        let pid = p["pid"].as_u64().expect("a pid").to_string();
        let out = cluster.ssictl(1, &["unpin", &pid]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let idle = cluster.add_node(&["--cpus", "1"]) as u64;
    let mut most = 0;
    let even = |now: &BTreeMap<u64, usize>| now.len() == 4 && now.values().all(|n| *n == 3);
    wait_until("twelve processes to spread three per node", WAIT, || {
        let now = per_node(&cluster);
        most = most.max(now.get(&idle).copied().unwrap_or(0));
        even(&now)
    });
    assert!(
        most <= 4,
        "the idle node held {most} at once; the nodes' logs:\n{}",
        ssi_tests::nodes_logs()
    );
}
