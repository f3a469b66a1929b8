//! Checkpoint and restart across real `ssid` nodes and in the embedded node:
//! a process writing files is checkpointed, stopped, and restarted on another
//! node with the same pid and its files at their offsets; periodic
//! checkpoints replace their file whole; damaged checkpoints are refused by
//! name.

use ssi_tests::{Cluster, Proc, WAIT, bin, guest, run, wait_until};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    cmd.args(options).stdin(Stdio::null());
    cmd
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
    // Long enough (4.5 s and more) to be running still after the first checkpoint,
    // however slow the machine.
    let count = 1500;
    let appender = guest("appender").display().to_string();
    let mut child = Proc::spawn(
        ssirun(Some(&cluster), 1, &["--node", "2", "--dir", &dir_arg])
            .arg(&appender)
            .args(["/d", &count.to_string(), "3"]),
        "the appender",
    );
    child.out.until("`ready`", |l| l == "ready");
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
    let first = child.wait();
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
    let mut child = Proc::spawn(
        &mut ssirun(Some(&cluster), 1, &["--node", "3", "--restore", &file_arg]),
        "ssirun --restore",
    );
    let mut row = None;
    wait_until(
        &format!("the restarted process to show with pid {pid}"),
        WAIT,
        || {
            row = ps_row(&cluster, pid);
            row.is_some()
        },
    );
    let row = row.expect("listed");
    assert_eq!(row["node"], 3, "{row}");
    assert_eq!(row["home"], 1, "{row}");
    let second = child.wait();
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(text(&second.stdout), format!("done {count}\n"));
    assert_every_record_once(data.path(), count);
}

/// The inode of the one checkpoint file in `dir`, if there is one: each
/// checkpoint replaces the file whole (a new file renamed over the old).
fn checkpoint_inode(dir: &Path) -> Option<(u64, std::path::PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let entry = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))?;
    Some((entry.metadata().ok()?.ino(), entry.path()))
}

#[test]
fn periodic_checkpoints_replace_their_file_and_a_crashed_run_restarts_from_the_last() {
    let count = 1500;
    for cluster in [Some(Cluster::start(2)), None] {
        let data = tempfile::tempdir().expect("data dir");
        let dir_arg = format!("{}::/d", data.path().display());
        let ckpt_dir = tempfile::tempdir().expect("checkpoint dir");
        let ckpt_arg = ckpt_dir.path().display().to_string();
        let mut child = Proc::spawn(
            ssirun(
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
            .args(["/d", &count.to_string(), "3"]),
            "the appender with periodic checkpoints",
        );
        child.out.until("`ready`", |l| l == "ready");
        // Three checkpoints, each replacing the last.
        let mut seen = std::collections::HashSet::new();
        wait_until("three checkpoints, each replacing the last", WAIT, || {
            if let Some((inode, _)) = checkpoint_inode(ckpt_dir.path()) {
                seen.insert(inode);
            }
            seen.len() >= 3
        });
        // The run crashes (its ssirun is killed, and the process with it).
        child.kill();
        let table = std::fs::read_to_string(data.path().join("table")).expect("table");
        assert!(
            table.lines().count() < count,
            "the run ended before the crash: nothing is left to restart"
        );
        // One file, named by the pid; no temporary left behind.
        let files: Vec<_> = std::fs::read_dir(ckpt_dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let (_, ckpt) = checkpoint_inode(ckpt_dir.path()).expect("a checkpoint");
        assert!(std::fs::read(&ckpt).expect("read").starts_with(b"SSIGHOST"));

        // Restarting the last one (here, in the embedded node) finishes the
        // run from where it was: the table, written in place, is whole, and
        // the log goes on to the last record.
        let out = run(
            &mut ssirun(None, 1, &["--restore", &ckpt.display().to_string()]),
            "ssirun --restore",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("done {count}\n"));
        let table = std::fs::read_to_string(data.path().join("table")).expect("table");
        let want: String = (0..count).map(|i| format!("{i:06}\n")).collect();
        assert_eq!(table, want);
        let log = std::fs::read_to_string(data.path().join("log")).expect("log");
        assert_eq!(
            log.lines().last(),
            Some(format!("record {:06}", count - 1).as_str())
        );
        // Every record is there; those written after the last checkpoint
        // and before the crash are written again by the restarted run.
        for i in (0..count).step_by(97) {
            assert!(log.contains(&format!("record {i:06}\n")), "record {i}");
        }
    }
}

#[test]
fn damaged_checkpoints_are_refused_by_name() {
    let cluster = Cluster::start(1);
    let data = tempfile::tempdir().expect("data dir");
    let dir_arg = format!("{}::/d", data.path().display());
    let ckpt_dir = tempfile::tempdir().expect("checkpoint dir");
    let good = ckpt_dir.path().join("good.ckpt");
    let mut child = Proc::spawn(
        ssirun(Some(&cluster), 1, &["--dir", &dir_arg])
            .arg(guest("appender"))
            .args(["/d", "100000", "5"]),
        "the appender",
    );
    child.out.until("`ready`", |l| l == "ready");
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
    let stopped = child.wait();
    assert_eq!(
        stopped.status.code(),
        Some(137),
        "{}",
        text(&stopped.stderr)
    );
    let image = std::fs::read(&good).expect("checkpoint");

    let mut flipped = image.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut newer = image.clone();
    newer[8] = 9;
    let cut = format!("the image is truncated: {} bytes of ", image.len() / 3);
    let short_by_one = format!(
        "the image is truncated: {} bytes of {}",
        image.len() - 1,
        image.len()
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the image is empty"),
        ("truncated", image[..image.len() / 3].to_vec(), &cut),
        ("short", image[..image.len() - 1].to_vec(), &short_by_one),
        ("flipped", flipped, "checksum does not match"),
        ("version", newer, "ghost image version 9."),
        ("text", b"not a checkpoint at all".to_vec(), "bad magic"),
    ];
    for (name, bytes, expected) in cases {
        let path = ckpt_dir.path().join(format!("{name}.ckpt"));
        std::fs::write(&path, &bytes).expect("write");
        for cluster in [Some(&cluster), None] {
            let out = run(
                &mut ssirun(cluster, 1, &["--restore", &path.display().to_string()]),
                &format!("ssirun --restore {name}.ckpt"),
            );
            assert_eq!(out.status.code(), Some(1), "{name}");
            let err = text(&out.stderr);
            assert!(
                err.contains(expected) && err.contains(&format!("{name}.ckpt")),
                "{name}: {err}"
            );
        }
    }
    // A checkpoint file that is missing is named too.
    let out = run(
        &mut ssirun(Some(&cluster), 1, &["--restore", "/nonexistent.ckpt"]),
        "ssirun --restore /nonexistent.ckpt",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read checkpoint `/nonexistent.ckpt`"));
    // Nothing was left running.
    assert!(cluster.ssictl_json(1, "ps").is_empty());
}
