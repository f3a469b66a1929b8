//! Parents, children and process groups through the `ssi` host API, on real
//! `ssid` nodes: children spawned on several nodes keep their home at their
//! parent's, are waited for with their statuses, form process groups that a
//! signal reaches across nodes, and are reaped when their parent leaves them.

use ssi_tests::{Cluster, Proc, WAIT, bin, guest, repo_root, run, shell_status, wait_until};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

/// `ssirun --connect node1 family ARGS`, its stdout read line by line.
fn family(cluster: &Cluster, args: &[&str]) -> Proc {
    Proc::spawn(
        cluster.ssirun(1).arg(guest("family")).args(args),
        &format!("family {}", args.join(" ")),
    )
}

/// The next line it prints, with its newline.
fn line(child: &mut Proc) -> String {
    child.line("a line") + "\n"
}

/// Its end: the rest of its stdout, its status as a shell sees it, its stderr.
fn ended(child: &mut Proc) -> (String, i32, String) {
    let out = child.wait();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        shell_status(out.status),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    cluster.pid_of(1, &format!("`{command_start}`"), |c| {
        c.starts_with(command_start)
    })
}

#[test]
fn a_parent_spawns_four_children_on_three_nodes_and_waits_for_their_statuses() {
    let cluster = Cluster::start(3);
    let mut child = family(&cluster, &["children", "1", "2", "3", "2"]);
    assert_eq!(line(&mut child), "spawned 4\n");
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
    child.stdin().write_all(b"go\n").expect("write");
    // Each child checked it sees its parent, group and session (else 99).
    let (rest, status, err) = ended(&mut child);
    assert_eq!(
        rest,
        "child 0: exited 10\nchild 1: exited 11\nchild 2: exited 12\n\
         child 3: killed by signal 15\nthen: Err(\"CHILD\")\n"
    );
    assert_eq!(status, 0, "{err}");
    assert!(children_of(&cluster, parent).is_empty(), "reaped");
    assert!(row(&cluster, parent).is_none());
}

#[test]
fn a_signal_to_a_group_spanning_three_nodes_reaches_each_member_once() {
    let cluster = Cluster::start(3);
    let mut child = family(&cluster, &["group", "1", "2", "3"]);
    let first = line(&mut child);
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
    let mut got: Vec<String> = (0..3).map(|_| line(&mut child)).collect();
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
    let (rest, status, err) = ended(&mut child);
    let mut reports: Vec<String> = rest.lines().map(str::to_string).collect();
    reports.sort();
    assert_eq!(
        reports,
        [
            "member 0: killed by signal 15",
            "member 1: killed by signal 15",
            "member 2: killed by signal 15"
        ]
    );
    assert_eq!(status, 0, "{err}");
}

#[test]
fn an_exiting_parent_leaves_its_children_reaped_not_zombies() {
    let cluster = Cluster::start(3);
    let mut child = family(&cluster, &["orphans"]);
    let first = line(&mut child);
    let pids: Vec<u64> = first
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [quick, slow] = pids[..] else {
        panic!("no pids: {first:?}")
    };
    let parent = pid_of(&cluster, "family.wasm orphans");
    // The quick child ended first: a zombie while its parent lives.
    wait_until("the quick child to be a zombie", WAIT, || {
        let r = row(&cluster, quick).expect("the quick child is listed");
        r["state"] == "zombie" && u(&r["ppid"]) == parent
    });
    let (rest, status, err) = ended(&mut child);
    assert_eq!(rest, "leaving\n");
    assert_eq!(status, 0, "{err}");
    // The parent is gone: the zombie is reaped, the other child is the
    // reaper's (parent 0) and is reaped in turn when it ends.
    assert!(row(&cluster, quick).is_none());
    assert!(row(&cluster, parent).is_none());
    let s = row(&cluster, slow).expect("the slow child lives on");
    assert_eq!(u(&s["ppid"]), 0, "{s}");
    assert_eq!(s["state"], "running", "{s}");
    wait_until("the orphan to be reaped", WAIT, || {
        row(&cluster, slow).is_none()
    });
    let zombies: Vec<_> = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .filter(|p| p["state"] == "zombie")
        .collect();
    assert!(zombies.is_empty(), "{zombies:?}");
}

#[test]
fn waitpid_reports_a_child_stopped_and_continued_wherever_it_runs() {
    let cluster = Cluster::start(2);
    for node in ["0", "2"] {
        let mut child = family(&cluster, &["jobs", node]);
        let (rest, status, err) = ended(&mut child);
        assert_eq!(
            rest, "no change\nstopped by signal 19\ncontinued\nkilled by signal 15\n",
            "child on node {node}: {err}"
        );
        assert_eq!(status, 0, "{err}");
    }
}

#[test]
fn an_orphaned_group_with_a_stopped_member_gets_sighup_and_sigcont() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Proc::spawn(
        cluster
            .ssirun(1)
            .args(["--dir", &format!("{}::/d", dir.path().display())])
            .arg(guest("family"))
            .args(["hangup", "2", "/d/hup"]),
        "family hangup",
    );
    let (rest, status, err) = ended(&mut child);
    assert_eq!(rest, "stopped by signal 19\nleaving\n", "{err}");
    assert_eq!(status, 0, "{err}");
    // Its parent gone, the child's group is orphaned with a stopped member:
    // the home sends it SIGHUP and SIGCONT, and its handlers see both.
    let file = dir.path().join("hup");
    wait_until("the orphaned child to get SIGHUP and SIGCONT", WAIT, || {
        let seen = std::fs::read_to_string(&file).unwrap_or_default();
        seen.contains("SIGHUP") && seen.contains("SIGCONT")
    });
    // Then it ends, and the home reaps it.
    wait_until("the orphan to end and be reaped", WAIT, || {
        cluster.ssictl_json(1, "ps").is_empty()
    });
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
    let mut child = family(&cluster, &["errors"]);
    let (rest, status, err) = ended(&mut child);
    assert_eq!(rest, ERRORS);
    assert_eq!(status, 0, "{err}");
    // No node running: ssirun gives the family a private node of its own.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run(
        Command::new(bin("ssirun"))
            .env("XDG_RUNTIME_DIR", empty.path())
            .env_remove("SSI_SOCKET")
            .env_remove("SSI_CONNECT")
            .arg(guest("family"))
            .arg("errors"),
        "family errors with no cluster",
    );
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
        let out = run(
            Command::new(bin("ssirun"))
                .arg("--connect")
                .arg(cluster.socket(1))
                .args(["--dir", &dir])
                .arg(guest("family"))
                .args(["run", node, "/g/hello.wat", "Ada"]),
            "family run hello.wat",
        );
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
    let out = run(
        Command::new(bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--dir", &format!("{}::/g", junk.path().display())])
            .arg(guest("family"))
            .args(["run", "0", "/g/junk.wasm"]),
        "family run junk.wasm",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NOEXEC"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
