//! `ssictl top` in a real terminal (a pty, its screen read by a terminal
//! emulator) against a real three-node cluster: it shows the processes,
//! filters to one, migrates it with `m`, sends it SIGTERM with `k` (both
//! checked through `ssictl ps` and `ssictl events`), and gives the terminal
//! back as it found it on `q` and on Ctrl-C.

use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use ssi_tests::{Cluster, Proc, WAIT, bin, guest, wait_until};
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `ssictl top` on a pty of its own, its screen kept by a terminal emulator.
struct Top {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    master: Box<dyn MasterPty + Send>,
    keys: Box<dyn Write + Send>,
    /// The emulated screen, and every byte written.
    screen: Arc<Mutex<(vt100::Parser, Vec<u8>)>>,
}

/// `ssictl --connect NODE ARGS` on a new pty of `rows`×120: the child, and
/// the pty's master.
fn ssictl_pty(
    cluster: &Cluster,
    node: usize,
    rows: u16,
    args: &[&str],
) -> (
    Box<dyn portable_pty::Child + Send + Sync>,
    Box<dyn MasterPty + Send>,
) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("open a pty");
    let mut cmd = CommandBuilder::new(bin("ssictl"));
    cmd.arg("--connect");
    cmd.arg(cluster.socket(node));
    cmd.args(args);
    cmd.env("TERM", "xterm-256color");
    let child = pty.slave.spawn_command(cmd).expect("start ssictl");
    drop(pty.slave);
    (child, pty.master)
}

impl Top {
    fn start(cluster: &Cluster, node: usize) -> Top {
        let (child, master) = ssictl_pty(cluster, node, 30, &["top", "--delay", "0.5"]);
        let screen = Arc::new(Mutex::new((vt100::Parser::new(30, 120, 0), Vec::new())));
        let mut reader = master.try_clone_reader().expect("pty reader");
        let s = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.0.process(&buf[..n]);
                s.1.extend_from_slice(&buf[..n]);
            }
        });
        let keys = master.take_writer().expect("pty writer");
        Top {
            child,
            master,
            keys,
            screen,
        }
    }

    fn contents(&self) -> String {
        self.screen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .screen()
            .contents()
    }

    #[track_caller]
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.contents();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {what}; it shows:\n{s}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn typed(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).expect("type");
        self.keys.flush().expect("flush");
        // Keys one read apart, as typed.
        std::thread::sleep(std::time::Duration::from_millis(150));
    }

    /// Waits for it to end; its exit status.
    #[track_caller]
    fn ended(&mut self) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ssictl top did not end; it shows:\n{}",
                self.contents()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The terminal's line discipline: canonical input and echo on.
    fn cooked(&self) -> bool {
        let fd = self.master.as_raw_fd().expect("the pty's fd");
        // SAFETY: a zeroed termios is a valid out-parameter for tcgetattr,
        // and `fd` is the pty master this struct owns.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::tcgetattr(fd, &mut t) };
        assert_eq!(r, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        t.c_lflag & libc::ICANON != 0 && t.c_lflag & libc::ECHO != 0
    }

    /// Everything written, as text.
    fn written(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap_or_else(|p| p.into_inner()).1)
            .into_owned()
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The terminal was given back: the alternate screen left after it was
/// entered last, the cursor shown, and the line discipline cooked again.
#[track_caller]
fn restored(top: &Top) {
    let out = top.written();
    let entered = out
        .rfind("\x1b[?1049h")
        .expect("it used the alternate screen");
    let left = out
        .rfind("\x1b[?1049l")
        .expect("it left the alternate screen");
    assert!(
        left > entered,
        "the alternate screen was left before it was last entered"
    );
    assert!(
        out[entered..].contains("\x1b[?25h"),
        "the cursor was not shown again"
    );
    assert!(top.cooked(), "the terminal is still in raw mode");
}

fn spin(cluster: &Cluster, node: usize) -> Proc {
    cluster.launch(1, node, &guest("spin"), &["0"], "spinning")
}

#[test]
fn top_filters_migrates_and_signals_a_process_and_restores_the_terminal() {
    let cluster = Cluster::start_unbalanced(3);
    let _a = spin(&cluster, 1);
    let _b = spin(&cluster, 1);
    let pids: Vec<u64> = cluster
        .ssictl_json(1, "ps")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 2);
    let (target, other) = (pids[0], pids[1]);
    let mut top = Top::start(&cluster, 3);
    top.wait_for("both processes and three nodes", |s| {
        s.contains(&target.to_string())
            && s.contains(&other.to_string())
            && s.contains("nodes 3 up, 0 down")
            && s.contains("Processes 2 ")
    });
    assert!(!top.cooked(), "top runs the terminal raw");

    // Filter to the target: the other one leaves the pane.
    top.typed(&format!("/{target}\r"));
    top.wait_for("the filter applied", |s| {
        s.contains(&format!("filter: {target}")) && s.contains("Processes 1 ")
    });

    // `m`, node 2, Enter: it moves, and says so.
    top.typed("m");
    top.wait_for("the migrate prompt", |s| {
        s.contains(&format!("Move process {target} to node:"))
    });
    top.typed("2\r");
    top.wait_for("the move's result", |s| {
        s.contains(&format!("process {target} moved from node 1 to node 2"))
    });
    let node_of = |pid: u64| {
        cluster
            .ssictl_json(1, "ps")
            .into_iter()
            .find(|p| p["pid"] == pid)
            .and_then(|p| p["node"].as_u64())
    };
    assert_eq!(node_of(target), Some(2));
    assert_eq!(node_of(other), Some(1), "only the selected process moved");

    // `k`, Enter: SIGTERM, the default.
    top.typed("k");
    top.wait_for("the signal prompt", |s| s.contains("[TERM]"));
    top.typed("\r");
    top.wait_for("the signal's result", |s| {
        s.contains(&format!("sent SIGTERM to process {target}"))
    });
    wait_until("the target to end", WAIT, || node_of(target).is_none());
    let out = cluster.ssictl(2, &["events", "--json", "-n", "1000"]);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["pid"] == target)
        .collect();
    let moved = events
        .iter()
        .find(|e| e["kind"] == "moved")
        .expect("a move event");
    assert_eq!(
        (moved["by"].as_str(), moved["node"].as_u64()),
        (Some("admin"), Some(2))
    );
    let killed = events
        .iter()
        .find(|e| e["kind"] == "killed")
        .expect("a killed event");
    assert_eq!(killed["status"], 15);
    // The events pane saw them too.
    top.wait_for("the events pane", |s| {
        s.contains("killed") && s.contains("moved")
    });

    // `q`: it ends, and the terminal is as it was.
    top.typed("q");
    assert!(top.ended().success());
    restored(&top);
}

#[test]
fn ctrl_c_and_help_and_a_node_that_is_not_there() {
    let cluster = Cluster::start(1);
    let mut top = Top::start(&cluster, 1);
    top.wait_for("the dashboard", |s| s.contains("nodes 1 up, 0 down"));
    top.typed("?");
    top.wait_for("the keys", |s| {
        s.contains("drain, undrain the selected node")
    });
    top.typed("x");
    top.wait_for("the keys gone", |s| {
        !s.contains("drain, undrain the selected node")
    });
    // A drain without a node selected says what to do.
    top.typed("d");
    top.wait_for("the hint", |s| s.contains("Tab moves to the nodes pane"));
    top.typed("\x03");
    assert!(top.ended().success());
    restored(&top);
    // Not on a terminal: it says so and does not touch it.
    let out = cluster.ssictl(1, &["top"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a terminal"));
}

/// `ssictl ARGS` on a pty of its own; what it wrote, once it ended, and
/// whether it succeeded.
fn ssictl_on_a_pty(cluster: &Cluster, args: &[&str]) -> (String, bool) {
    let (mut child, master) = ssictl_pty(cluster, 1, 24, args);
    let mut reader = master.try_clone_reader().expect("pty reader");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            let _ = tx.send(all.clone());
        }
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "ssictl {args:?} did not end");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = rx.try_iter().last().unwrap_or_default();
    drop(master);
    (String::from_utf8_lossy(&out).into_owned(), status.success())
}

#[test]
fn a_large_migration_and_checkpoint_show_progress_on_a_terminal_only() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut hold = Proc::spawn(
        cluster
            .ssirun(1)
            .args(["--node", "1"])
            .arg(guest("hold"))
            .args(["256", "dense"])
            .stdin(Stdio::null()),
        "hold 256 dense",
    );
    assert_eq!(hold.line("ready"), "ready");
    let pid = cluster
        .pid_of(1, "hold", |c| c.contains("hold"))
        .to_string();
    let (screen, ok) = ssictl_on_a_pty(&cluster, &["migrate", &pid, "2"]);
    assert!(ok, "{screen}");
    assert!(
        screen.contains("migrate ") && screen.contains("MiB"),
        "no bar: {screen:?}"
    );
    assert!(screen.contains("moved from node 1 to node 2"), "{screen}");
    let ckpt = dir.path().join("hold.ckpt");
    let (screen, ok) = ssictl_on_a_pty(
        &cluster,
        &["checkpoint", &pid, "-o", &ckpt.display().to_string()],
    );
    assert!(ok, "{screen}");
    assert!(
        screen.contains("checkpoint ") && screen.contains("MiB"),
        "no bar: {screen:?}"
    );
    // Not on a terminal: nothing but the result.
    let out = cluster.ssictl(1, &["migrate", &pid, "1"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = cluster.ssictl(1, &["migrate", &pid, "2", "--json"]);
    assert!(out.status.success() && out.stderr.is_empty());
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("only JSON");
}
