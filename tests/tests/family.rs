//! Parents, children and process groups through the `ssi` host API, on real
//! `ssid` nodes: children spawned on several nodes keep their home at their
//! parent's, are waited for with their statuses, form process groups that a
//! signal reaches across nodes, and are reaped when their parent leaves them.

use ssi_tests::{Cluster, bin, guest, repo_root, shell_status};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command};
use std::time::{Duration, Instant};

/// `ssirun --connect node1 family ARGS`, its stdout read line by line.
#[allow(clippy::zombie_processes)]
fn family(cluster: &Cluster, args: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut child = cluster
        .ssirun(1)
        .arg(guest("family"))
        .args(args)
        .spawn()
        .expect("spawn ssirun");
    let out = BufReader::new(child.stdout.take().expect("stdout"));
    (child, out)
}

fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut l = String::new();
    out.read_line(&mut l).expect("read a line");
    l
}

fn rest(mut out: BufReader<ChildStdout>) -> String {
    let mut s = String::new();
    out.read_to_string(&mut s).expect("read the rest");
    s
}

fn ended(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (shell_status(status), err);
        }
        assert!(Instant::now() < deadline, "ssirun did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().expect("a number")
}

/// The rows of `ssictl ps` (asked of node 3) whose parent is `ppid`.
fn children_of(cluster: &Cluster, ppid: u64) -> Vec<serde_json::Value> {
    cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .filter(|p| u(&p["ppid"]) == ppid)
        .collect()
}

fn row(cluster: &Cluster, pid: u64) -> Option<serde_json::Value> {
    cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .find(|p| u(&p["pid"]) == pid)
}

fn pid_of(cluster: &Cluster, command_start: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = cluster.ssictl_json(1, "ps").into_iter().find(|p| {
            p["command"]
                .as_str()
                .is_some_and(|c| c.starts_with(command_start))
        });
        if let Some(p) = found {
            return u(&p["pid"]);
        }
        assert!(Instant::now() < deadline, "`{command_start}` is not listed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_parent_spawns_four_children_on_three_nodes_and_waits_for_their_statuses() {
    let cluster = Cluster::start(3);
    let (mut child, mut out) = family(&cluster, &["children", "1", "2", "3", "2"]);
    assert_eq!(line(&mut out), "spawned 4\n");
    let parent = pid_of(&cluster, "family.wasm children");
    // Every child is listed, at the parent's home, in its group, on the node
    // it was placed on (a zombie once it has ended, until its parent waits
    // for it).
    let kids = children_of(&cluster, parent);
    assert_eq!(kids.len(), 4, "{kids:?}");
    let mut nodes: Vec<u64> = kids.iter().map(|k| u(&k["node"])).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, [1, 2, 2, 3], "{kids:?}");
    for k in &kids {
        assert_eq!(u(&k["home"]), 1, "{k}");
        assert_eq!(u(&k["pgid"]), parent, "{k}");
        assert!(u(&k["pid"]) >> 22 == 1, "{k}");
    }
    // Go on: the parent ends the last child and waits for each in turn.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    // Each child checked it sees its parent, group and session (else 99).
    assert_eq!(
        rest(out),
        "child 0: exited 10\nchild 1: exited 11\nchild 2: exited 12\n\
         child 3: killed by signal 15\nthen: Err(\"CHILD\")\n"
    );
    let (status, err) = ended(child);
    assert_eq!(status, 0, "{err}");
    assert!(children_of(&cluster, parent).is_empty(), "reaped");
    assert!(row(&cluster, parent).is_none());
}

#[test]
fn a_signal_to_a_group_spanning_three_nodes_reaches_each_member_once() {
    let cluster = Cluster::start(3);
    let (child, mut out) = family(&cluster, &["group", "1", "2", "3"]);
    let first = line(&mut out);
    let pgid: u64 = first
        .strip_prefix("group ")
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no group line: {first:?}"));
    let parent = pid_of(&cluster, "family.wasm group");
    let members: Vec<_> = cluster
        .ssictl_json(3, "ps")
        .into_iter()
        .filter(|p| u(&p["pgid"]) == pgid)
        .collect();
    let mut nodes: Vec<u64> = members.iter().map(|m| u(&m["node"])).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, [1, 2, 3], "{members:?}");
    assert!(members.iter().all(|m| u(&m["ppid"]) == parent));
    // From another node than their home, by group: each member's handler
    // runs once (they sleep, so each is woken for it).
    let kill = |sig: &str| {
        let out = cluster.ssictl(3, &["kill", sig, &format!("-{pgid}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kill("-USR1");
    let mut got: Vec<String> = (0..3).map(|_| line(&mut out)).collect();
    got.sort();
    assert_eq!(
        got,
        [
            "member 0: SIGUSR1 1\n",
            "member 1: SIGUSR1 1\n",
            "member 2: SIGUSR1 1\n"
        ]
    );
    // No second delivery anywhere: the next lines are the members' ends.
    std::thread::sleep(Duration::from_millis(300));
    kill("-TERM");
    // Each member is reported once, and the parent (in another group) goes on.
    let mut reports: Vec<String> = rest(out).lines().map(str::to_string).collect();
    reports.sort();
    assert_eq!(
        reports,
        [
            "member 0: killed by signal 15",
            "member 1: killed by signal 15",
            "member 2: killed by signal 15"
        ]
    );
    let (status, err) = ended(child);
    assert_eq!(status, 0, "{err}");
}

#[test]
fn an_exiting_parent_leaves_its_children_reaped_not_zombies() {
    let cluster = Cluster::start(3);
    let (child, mut out) = family(&cluster, &["orphans"]);
    let first = line(&mut out);
    let pids: Vec<u64> = first
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [quick, slow] = pids[..] else {
        panic!("no pids: {first:?}")
    };
    let parent = pid_of(&cluster, "family.wasm orphans");
    // The quick child ended first: a zombie while its parent lives.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = row(&cluster, quick).expect("the quick child is listed");
        if r["state"] == "zombie" {
            assert_eq!(u(&r["ppid"]), parent);
            break;
        }
        assert!(Instant::now() < deadline, "never a zombie: {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rest(out), "leaving\n");
    let (status, err) = ended(child);
    assert_eq!(status, 0, "{err}");
    // The parent is gone: the zombie is reaped, the other child is the
    // reaper's (parent 0) and is reaped in turn when it ends.
    assert!(row(&cluster, quick).is_none());
    assert!(row(&cluster, parent).is_none());
    let s = row(&cluster, slow).expect("the slow child lives on");
    assert_eq!(u(&s["ppid"]), 0, "{s}");
    assert_eq!(s["state"], "running", "{s}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while row(&cluster, slow).is_some() {
        assert!(Instant::now() < deadline, "the orphan was not reaped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let zombies: Vec<_> = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .filter(|p| p["state"] == "zombie")
        .collect();
    assert!(zombies.is_empty(), "{zombies:?}");
}

const ERRORS: &str = "wait with no child: Err(\"CHILD\")
spawn a missing module: Err(\"NOENT\")
spawn on an unknown node: Err(\"HOSTUNREACH\")
spawn with a closed fd: Err(\"BADF\")
setsid as a group leader: Err(\"PERM\")
setpgid of a non-child: Err(\"SRCH\")
wait for another pid: Err(\"CHILD\")
child: Some(Exited(4))
wait again: Err(\"CHILD\")
";

#[test]
fn bad_requests_get_their_errno_on_a_node_and_without_one() {
    let cluster = Cluster::start(1);
    let (child, out) = family(&cluster, &["errors"]);
    assert_eq!(rest(out), ERRORS);
    let (status, err) = ended(child);
    assert_eq!(status, 0, "{err}");
    // No node running: ssirun gives the family a private node of its own.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("ssirun"))
        .env("XDG_RUNTIME_DIR", empty.path())
        .env_remove("SSI_CONNECT")
        .arg(guest("family"))
        .arg("errors")
        .output()
        .expect("run ssirun");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), ERRORS);
}

#[test]
fn a_child_runs_a_module_named_by_path_with_the_parents_streams() {
    let cluster = Cluster::start(2);
    let examples = repo_root().join("guests/examples");
    let dir = format!("{}::/g", examples.display());
    for node in ["0", "2"] {
        let out = Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--dir", &dir])
            .arg(guest("family"))
            .args(["run", node, "/g/hello.wat", "Ada"])
            .output()
            .expect("run ssirun");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hello, Ada! (from a WASI process run by ssi)\nhello.wat: exited 0\n"
        );
    }
    // Not a module: the parent's spawn fails with ENOEXEC.
    let junk = tempfile::tempdir().expect("tempdir");
    std::fs::write(junk.path().join("junk.wasm"), b"\0asm garbage").expect("write");
    let out = Command::new(bin("ssirun"))
        .arg("--connect")
        .arg(cluster.socket(1))
        .args(["--dir", &format!("{}::/g", junk.path().display())])
        .arg(guest("family"))
        .args(["run", "0", "/g/junk.wasm"])
        .output()
        .expect("run ssirun");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NOEXEC"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
