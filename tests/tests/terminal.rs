//! `ssirun` on a real terminal (a pty): the program sees a terminal on its
//! streams wherever its body runs, reads what is typed, and Ctrl-C typed at the
//! terminal ends it with status 130.

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use ssi_tests::{Cluster, bin, guest};
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
        let deadline = Instant::now() + Duration::from_secs(10);
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

fn run_on_terminal(cluster: &Cluster, node: usize, keys: &[(&str, &[u8])]) -> (u32, String) {
    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("open a pty");
    let mut cmd = CommandBuilder::new(bin("ssirun"));
    cmd.arg("--connect");
    cmd.arg(cluster.socket(1));
    cmd.arg("--node");
    cmd.arg(node.to_string());
    cmd.arg(guest("tty"));
    let mut child = pty
        .slave
        .spawn_command(cmd)
        .expect("spawn ssirun on the pty");
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
    let mut screen = Screen {
        rx,
        seen: String::new(),
    };
    let mut writer = pty.master.take_writer().expect("pty writer");
    for (wait, typed) in keys {
        screen.wait_for(wait);
        writer.write_all(typed).expect("type");
        writer.flush().expect("flush");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ssirun did not end; the terminal shows:\n{}",
            screen.seen
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // What is left on the screen.
    while let Ok(bytes) = screen.rx.recv_timeout(Duration::from_millis(100)) {
        screen.seen.push_str(&String::from_utf8_lossy(&bytes));
    }
    (status.exit_code(), screen.seen)
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
fn end_of_input_typed_at_the_terminal_ends_the_program_normally() {
    let cluster = Cluster::start(2);
    let (status, screen) =
        run_on_terminal(&cluster, 2, &[("ready", b"one\r"), ("echo: one", b"\x04")]);
    assert_eq!(status, 0, "{screen}");
}
