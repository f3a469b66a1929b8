//! `ssirun` on a real terminal (a pty): the program sees a terminal on its
//! streams wherever its body runs, reads what is typed, and Ctrl-C typed at the
//! terminal ends it with status 130.

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use ssi_tests::{Cluster, WAIT, bin, guest};
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The terminal's output so far, read on a thread of its own.
struct Screen {
    rx: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl Screen {
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.seen.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!(
                    "the terminal never showed {text:?}; it shows:\n{}",
                    self.seen
                ),
            }
        }
    }
}

/// Starts `cmd` on a new terminal (24 rows of 200 columns): the child, its
/// screen (read on a thread of its own), its keyboard.
fn on_a_pty(
    cmd: CommandBuilder,
) -> (
    Box<dyn portable_pty::Child + Send + Sync>,
    Screen,
    Box<dyn Write + Send>,
) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("open a pty");
    let child = pty
        .slave
        .spawn_command(cmd)
        .expect("start a program on the pty");
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().expect("pty reader");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let keys = pty.master.take_writer().expect("pty writer");
    // The master must outlive the program's use of the pty.
    std::mem::forget(pty.master);
    let screen = Screen {
        rx,
        seen: String::new(),
    };
    (child, screen, keys)
}

/// `ssirun` running a guest on a pty of its own.
struct Terminal {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    screen: Screen,
    keys: Box<dyn Write + Send>,
}

impl Terminal {
    /// `ssirun --connect node1 --node NODE GUEST` on a new terminal.
    fn start(cluster: &Cluster, node: usize, name: &str) -> Terminal {
        let mut cmd = CommandBuilder::new(bin("ssirun"));
        cmd.arg("--connect");
        cmd.arg(cluster.socket(1));
        cmd.arg("--node");
        cmd.arg(node.to_string());
        cmd.arg(guest(name));
        let (child, screen, keys) = on_a_pty(cmd);
        Terminal {
            child,
            screen,
            keys,
        }
    }

    /// Once the terminal shows `wait`, types `keys`.
    fn type_after(&mut self, wait: &str, keys: &[u8]) {
        self.screen.wait_for(wait);
        self.keys.write_all(keys).expect("type");
        self.keys.flush().expect("flush");
    }

    /// Waits for `ssirun` to end: its status as a shell reports it, and
    /// what the terminal showed.
    fn end(mut self) -> (u32, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "ssirun did not end; the terminal shows:\n{}",
                self.screen.seen
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        // What is left on the screen.
        while let Ok(bytes) = self.screen.rx.recv_timeout(Duration::from_millis(100)) {
            self.screen.seen.push_str(&String::from_utf8_lossy(&bytes));
        }
        (
            as_shell_reports(&status),
            std::mem::take(&mut self.screen.seen),
        )
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn run_on_terminal(cluster: &Cluster, node: usize, keys: &[(&str, &[u8])]) -> (u32, String) {
    let mut terminal = Terminal::start(cluster, node, "tty");
    for (wait, typed) in keys {
        terminal.type_after(wait, typed);
    }
    terminal.end()
}

/// 128 + the number of the signal that ended it (named as `strsignal` names
/// it), or its exit code: what a shell reports.
fn as_shell_reports(status: &portable_pty::ExitStatus) -> u32 {
    let Some(name) = status.signal() else {
        return status.exit_code();
    };
    (1..32)
        .find(|&n| {
            // SAFETY: strsignal returns a C string or null.
            let s = unsafe { libc::strsignal(n) };
            !s.is_null() && unsafe { std::ffi::CStr::from_ptr(s) }.to_string_lossy() == name
        })
        .map(|n| 128 + n as u32)
        .unwrap_or_else(|| panic!("ended by a signal named {name:?}"))
}

#[test]
fn a_remote_body_sees_the_terminal_and_ctrl_c_ends_it_with_130() {
    let cluster = Cluster::start(2);
    for node in [1, 2] {
        let (status, screen) = run_on_terminal(
            &cluster,
            node,
            &[("ready", b"hello there\r"), ("echo: hello there", b"\x03")],
        );
        assert!(screen.contains("fd 0: filetype 2"), "{screen}");
        assert!(screen.contains("fd 1: filetype 2"), "{screen}");
        assert!(screen.contains("fd 2: filetype 2"), "{screen}");
        assert_eq!(status, 130, "node {node}: {screen}");
    }
}

#[test]
fn a_prompt_that_ends_no_line_shows_on_the_terminal_before_it_is_answered() {
    let cluster = Cluster::start(2);
    for node in [1, 2] {
        let mut terminal = Terminal::start(&cluster, node, "prompt");
        // The program waits for the answer: the question is on the screen.
        terminal.type_after("name? ", b"Ada\r");
        let (status, screen) = terminal.end();
        assert_eq!(status, 0, "node {node}: {screen}");
        assert!(screen.contains("hello Ada"), "node {node}: {screen}");
    }
}

#[test]
fn a_process_moved_to_another_node_keeps_its_terminal() {
    let cluster = Cluster::start(3);
    let mut terminal = Terminal::start(&cluster, 2, "tty");
    terminal.type_after("ready", b"one\r");
    terminal.screen.wait_for("echo: one");
    let pid = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find_map(|p| p["pid"].as_u64())
        .expect("listed")
        .to_string();
    // It waits in a read of the terminal; it is moved meanwhile.
    let out = cluster.ssictl(1, &["migrate", &pid, "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64().map(|n| n.to_string()) == Some(pid.clone()))
        .expect("listed");
    assert_eq!(row["node"], 3, "{row}");
    // On node 3, its streams are still the terminal, and it reads what is typed.
    let mark = terminal.screen.seen.len();
    terminal.type_after("echo: one", b"stat\r");
    terminal.screen.wait_for("echo: stat");
    let after = terminal.screen.seen[mark..].to_string();
    for fd in 0..3 {
        assert!(
            after.contains(&format!("fd {fd}: filetype 2")),
            "fd {fd} after the move: {after}"
        );
    }
    terminal.type_after("echo: stat", b"\x03");
    let (status, screen) = terminal.end();
    assert_eq!(status, 130, "{screen}");
}

#[test]
fn end_of_input_typed_at_the_terminal_ends_the_program_normally() {
    let cluster = Cluster::start(2);
    let (status, screen) =
        run_on_terminal(&cluster, 2, &[("ready", b"one\r"), ("echo: one", b"\x04")]);
    assert_eq!(status, 0, "{screen}");
}

/// A shell with job control on a pty: what it shows, and its keyboard.
struct Shell {
    screen: Screen,
    keys: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
}

impl Shell {
    fn start(socket: &std::path::Path) -> Shell {
        let mut cmd = CommandBuilder::new("bash");
        cmd.args(["--norc", "--noprofile", "-i"]);
        cmd.env("PS1", "$ ");
        cmd.env("SSI_CONNECT", socket.as_os_str());
        let (child, screen, keys) = on_a_pty(cmd);
        Shell {
            screen,
            keys,
            child,
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.keys.write_all(keys).expect("type");
        self.keys.flush().expect("flush");
    }

    /// Everything shown after `mark`, once `text` shows there.
    fn wait_after(&mut self, mark: usize, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.screen.seen[mark..].contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.screen.rx.recv_timeout(left) {
                Ok(bytes) => self.screen.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!(
                    "the terminal never showed {text:?}; it shows:\n{}",
                    self.screen.seen
                ),
            }
        }
        self.screen.seen[mark..].to_string()
    }

    /// Takes in what the terminal shows for `wait`.
    fn settle(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while let Ok(bytes) = self
            .screen
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.screen.seen.push_str(&String::from_utf8_lossy(&bytes));
        }
    }

    fn last_tick(&self) -> u64 {
        self.screen
            .seen
            .rsplit("tick ")
            .next()
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The command line of a process that prints a tick every 100 ms, its body
/// on node 2.
fn ticking_on_node_2() -> String {
    format!(
        "{} --node 2 {} 0 --ticks",
        bin("ssirun").display(),
        guest("spin").display()
    )
}

#[test]
fn ctrl_z_stops_a_remote_process_and_fg_continues_it() {
    let cluster = Cluster::start(2);
    let mut sh = Shell::start(&cluster.socket(1));
    sh.wait_after(0, "$ ");
    sh.type_keys(format!("{}\r", ticking_on_node_2()).as_bytes());
    sh.wait_after(0, "tick 3");
    // Ctrl-Z: the process stops where its body runs, and so does ssirun,
    // which the shell reports as a stopped job.
    let mark = sh.screen.seen.len();
    sh.type_keys(b"\x1a");
    sh.wait_after(mark, "Stopped");
    let pid = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["command"].as_str().is_some_and(|c| c.contains("spin")))
        .expect("listed");
    assert_eq!(pid["state"], "stopped", "{pid}");
    assert_eq!(pid["node"], 2, "{pid}");
    let stopped_at = sh.last_tick();
    sh.settle(Duration::from_millis(600));
    // At most the tick already on its way when the key was pressed.
    assert!(
        sh.last_tick() <= stopped_at + 1,
        "ticks went on while stopped: {stopped_at} then {}",
        sh.last_tick()
    );
    // While stopped it cannot be moved, and says why.
    let out = cluster.ssictl(
        1,
        &[
            "migrate",
            &pid["pid"].as_u64().expect("pid").to_string(),
            "1",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is stopped"));
    // `fg` continues both; the ticks go on.
    let mark = sh.screen.seen.len();
    let next = sh.last_tick() + 2;
    sh.type_keys(b"fg\r");
    sh.wait_after(mark, &format!("tick {next}"));
    let row = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"] == pid["pid"])
        .expect("listed");
    assert_eq!(row["state"], "running", "{row}");
    // Ctrl-C ends it; the shell sees 130.
    let mark = sh.screen.seen.len();
    sh.type_keys(b"\x03");
    sh.wait_after(mark, "$ ");
    sh.type_keys(b"echo status=$?\r");
    sh.wait_after(mark, "status=130");
}

/// `ssirun` ends by the signal that ended its process, as a native command
/// does: Ctrl-C breaks the shell loop it runs in, and the shell reports a
/// stopped job killed with `kill %1` as "Terminated".
#[test]
fn the_shell_sees_a_process_a_signal_ended_as_it_sees_a_native_one() {
    let cluster = Cluster::start(2);
    let mut sh = Shell::start(&cluster.socket(1));
    sh.wait_after(0, "$ ");
    let spin = ticking_on_node_2();
    sh.type_keys(format!("while true; do {spin}; done\r").as_bytes());
    sh.wait_after(0, "tick 2");
    let mark = sh.screen.seen.len();
    sh.type_keys(b"\x03");
    sh.type_keys(b"echo loop=$?\r");
    let shown = sh.wait_after(mark, "loop=130");
    assert!(!shown.contains("spinning"), "the loop went on:\n{shown}");
    // A stopped job, killed: the shell names the signal.
    let mark = sh.screen.seen.len();
    sh.type_keys(format!("{spin}\r").as_bytes());
    sh.wait_after(mark, "tick 1");
    sh.type_keys(b"\x1a");
    sh.wait_after(mark, "Stopped");
    sh.type_keys(b"kill %1\r");
    // The shell tells of a job that ended at its next command.
    sh.type_keys(b"sleep 1; jobs\r");
    sh.wait_after(mark, "Terminated");
    sh.type_keys(b"echo killed=done\r");
    sh.wait_after(mark, "killed=done");
}
