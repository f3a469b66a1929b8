//! Checkpoint and restart across real `ssid` nodes and in the embedded node:
//! a process writing files is checkpointed, stopped, and restarted on another
//! node with the same pid and its files at their offsets; periodic
//! checkpoints replace their file whole; damaged checkpoints are refused by
//! name.

use ssi_tests::{Cluster, bin, guest};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `ssirun` through node `home` (`None`: the embedded node), with OPTIONS.
fn ssirun(cluster: Option<&Cluster>, home: usize, options: &[&str]) -> Command {
    let mut cmd = Command::new(bin("ssirun"));
    match cluster {
        Some(c) => {
            cmd.arg("--connect").arg(c.socket(home));
        }
        // No node listens on this socket: the embedded default.
        None => {
            cmd.env("SSI_SOCKET", "/nonexistent/ssi.sock")
                .env_remove("SSI_CONNECT");
        }
    }
    cmd.args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Reads lines of a child's stdout until `line` shows.
fn wait_for_line(child: &mut Child, line: &str) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut got = String::new();
    loop {
        got.clear();
        let n = out.read_line(&mut got).expect("read stdout");
        assert!(n > 0, "the program ended before printing `{line}`");
        if got.trim_end() == line {
            return out;
        }
    }
}

fn ended(mut child: Child) -> Output {
    let status = child.wait().expect("wait");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut stdout).expect("stdout");
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut stderr).expect("stderr");
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The appender's two files hold records 0..count exactly once, in order.
fn assert_every_record_once(data: &Path, count: usize) {
    let log = std::fs::read_to_string(data.join("log")).expect("log");
    let want: String = (0..count).map(|i| format!("record {i:06}\n")).collect();
    assert!(
        log == want,
        "the log is not records 0..{count} once each:\n{log}"
    );
    let table = std::fs::read_to_string(data.join("table")).expect("table");
    let want: String = (0..count).map(|i| format!("{i:06}\n")).collect();
    assert!(table == want, "the table is not rows 0..{count}:\n{table}");
}

fn ps_row(cluster: &Cluster, pid: u64) -> Option<serde_json::Value> {
    cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
}

fn random_ms(range: std::ops::Range<u64>) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    range.start + nanos % (range.end - range.start)
}

#[test]
fn a_checkpointed_stopped_process_restarts_on_another_node_with_every_record_once() {
    let cluster = Cluster::start(3);
    let data = tempfile::tempdir().expect("data dir");
    let dir_arg = format!("{}::/d", data.path().display());
    let ckpt_dir = tempfile::tempdir().expect("checkpoint dir");
    let file = ckpt_dir.path().join("appender.ckpt");
    let file_arg = file.display().to_string();
    let count = 400;
    let appender = guest("appender").display().to_string();
    let mut child = ssirun(Some(&cluster), 1, &["--node", "2", "--dir", &dir_arg])
        .arg(&appender)
        .args(["/d", &count.to_string(), "3"])
        .spawn()
        .expect("spawn ssirun");
    let _stdout = wait_for_line(&mut child, "ready");
    let pid = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find(|p| {
            p["command"]
                .as_str()
                .is_some_and(|c| c.contains("appender"))
        })
        .and_then(|p| p["pid"].as_u64())
        .expect("the appender is listed");

    // A checkpoint that lets the process go on (asked at node 3, not its home).
    std::thread::sleep(Duration::from_millis(random_ms(50..200)));
    let out = cluster.ssictl(3, &["checkpoint", &pid.to_string(), "-o", &file_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("process {pid} checkpointed to")));
    assert!(ps_row(&cluster, pid).is_some(), "the process goes on");

    // Then one that stops it, at a random moment; it replaces the first.
    std::thread::sleep(Duration::from_millis(random_ms(100..400)));
    let out = cluster.ssictl(
        3,
        &[
            "checkpoint",
            &pid.to_string(),
            "-o",
            &file_arg,
            "--stop",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["node"], 2);
    assert_eq!(report["stopped"], true);
    assert_eq!(
        report["image_bytes"].as_u64(),
        std::fs::metadata(&file).ok().map(|m| m.len())
    );
    let first = ended(child);
    assert_eq!(first.status.code(), Some(137), "{}", text(&first.stderr));
    assert!(text(&first.stderr).contains("checkpointed and stopped"));
    let written = std::fs::read_to_string(data.path().join("log"))
        .expect("log")
        .lines()
        .count();
    assert!(written < count, "the process ended before its checkpoint");
    let kill = cluster.ssictl(1, &["kill", "-KILL", &pid.to_string()]);
    assert!(!kill.status.success(), "the stopped process is gone");

    // Restarted with its home on node 1 and its body on node 3: the same pid.
    let started = Instant::now();
    let child = ssirun(Some(&cluster), 1, &["--node", "3", "--restore", &file_arg])
        .spawn()
        .expect("spawn ssirun --restore");
    loop {
        if let Some(row) = ps_row(&cluster, pid) {
            assert_eq!(row["node"], 3, "{row}");
            assert_eq!(row["home"], 1, "{row}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the restarted process did not show with pid {pid}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = ended(child);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), format!("done {count}\n"));
    assert_every_record_once(data.path(), count);
}

#[test]
fn periodic_checkpoints_replace_their_file_and_restart_in_the_embedded_node() {
    for cluster in [Some(Cluster::start(2)), None] {
        let data = tempfile::tempdir().expect("data dir");
        let dir_arg = format!("{}::/d", data.path().display());
        let ckpt_dir = tempfile::tempdir().expect("checkpoint dir");
        let ckpt_arg = ckpt_dir.path().display().to_string();
        let out = ssirun(
            cluster.as_ref(),
            1,
            &[
                "--dir",
                &dir_arg,
                "--checkpoint-every",
                "0.1",
                "--checkpoint-dir",
                &ckpt_arg,
            ],
        )
        .arg(guest("appender"))
        .args(["/d", "200", "3"])
        .output()
        .expect("run ssirun");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_every_record_once(data.path(), 200);
        // One file, named by the pid; no temporary left behind.
        let files: Vec<_> = std::fs::read_dir(ckpt_dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].ends_with(".ckpt"), "{files:?}");
        let ckpt = ckpt_dir.path().join(&files[0]);
        assert!(std::fs::read(&ckpt).expect("read").starts_with(b"SSIGHOST"));

        // Restarting the last one (here, in the embedded node) finishes the run
        // from where it was: the table, written in place, is whole again.
        let out = ssirun(None, 1, &["--restore", &ckpt.display().to_string()])
            .output()
            .expect("run ssirun --restore");
        assert!(out.status.success(), "{}", text(&out.stderr));
        // The last checkpoint may have been taken after the final line was
        // printed (between the loop's end and the exit); then there is
        // nothing left to print.
        let rest = text(&out.stdout);
        assert!(rest == "done 200\n" || rest.is_empty(), "{rest:?}");
        let table = std::fs::read_to_string(data.path().join("table")).expect("table");
        let want: String = (0..200).map(|i| format!("{i:06}\n")).collect();
        assert_eq!(table, want);
    }
}

#[test]
fn damaged_checkpoints_are_refused_by_name() {
    let cluster = Cluster::start(1);
    let data = tempfile::tempdir().expect("data dir");
    let dir_arg = format!("{}::/d", data.path().display());
    let ckpt_dir = tempfile::tempdir().expect("checkpoint dir");
    let good = ckpt_dir.path().join("good.ckpt");
    let mut child = ssirun(Some(&cluster), 1, &["--dir", &dir_arg])
        .arg(guest("appender"))
        .args(["/d", "100000", "5"])
        .spawn()
        .expect("spawn");
    let _stdout = wait_for_line(&mut child, "ready");
    let pid = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find_map(|p| p["pid"].as_u64())
        .expect("listed");
    let out = cluster.ssictl(
        1,
        &[
            "checkpoint",
            &pid.to_string(),
            "-o",
            &good.display().to_string(),
            "--stop",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = ended(child);
    let image = std::fs::read(&good).expect("checkpoint");

    let mut flipped = image.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut newer = image.clone();
    newer[8] = 9;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the image is empty"),
        ("truncated", image[..image.len() / 3].to_vec(), "checksum"),
        ("flipped", flipped, "checksum does not match"),
        ("version", newer, "ghost image version 9."),
        ("text", b"not a checkpoint at all".to_vec(), "bad magic"),
    ];
    for (name, bytes, expected) in cases {
        let path = ckpt_dir.path().join(format!("{name}.ckpt"));
        std::fs::write(&path, &bytes).expect("write");
        for cluster in [Some(&cluster), None] {
            let out = ssirun(cluster, 1, &["--restore", &path.display().to_string()])
                .output()
                .expect("run");
            assert_eq!(out.status.code(), Some(1), "{name}");
            let err = text(&out.stderr);
            assert!(
                err.contains(expected) && err.contains(&format!("{name}.ckpt")),
                "{name}: {err}"
            );
        }
    }
    // A checkpoint file that is missing is named too.
    let out = ssirun(Some(&cluster), 1, &["--restore", "/nonexistent.ckpt"])
        .output()
        .expect("run");
    assert!(text(&out.stderr).contains("cannot read checkpoint `/nonexistent.ckpt`"));
    // Nothing was left running.
    assert!(cluster.ssictl_json(1, "ps").is_empty());
}
