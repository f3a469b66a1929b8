//! `Cluster`: real `ssid` daemons on loopback ports for a test, each with its
//! socket, data directory and log in a temporary directory, and `ssirun` and
//! `ssictl` aimed at them.

use crate::binaries::bin;
use crate::wait::{Proc, WAIT, forget_logs, wait_until, watch_logs};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Real `ssid` daemons on loopback ports, each with its own socket and data
/// directory in a temporary directory. They are killed when this is dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<Option<std::process::Child>>,
    ports: Vec<u16>,
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so that
/// no outgoing connection takes it between this choice and the daemon's bind.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts at its own place in 20000..32000.
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1200) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let candidate = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + candidate.wrapping_sub(20_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n), each configured with all the others, and
    /// waits until every node sees every other as up.
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, |_| Vec::new())
    }

    /// As [`Cluster::start`], the balancer off: for a test that places or
    /// moves processes itself and must know where they are (the balancer
    /// would, for one, bring an I/O-bound process home between two moves).
    pub fn start_unbalanced(n: usize) -> Cluster {
        Self::start_with(n, |_| vec!["--balance".into(), "off".into()])
    }

    /// As [`Cluster::start`], with `options(id)` added to node `id`'s
    /// command line (`--cpus 1`, `--balance off`…).
    pub fn start_with(n: usize, options: impl Fn(usize) -> Vec<String>) -> Cluster {
        Self::start_joined(n, |id| (1..=n).filter(|o| *o != id).collect(), options)
    }

    /// Starts `n` nodes where each node but the first knows only node 1, and
    /// waits until they have all learned of each other.
    pub fn start_seeded(n: usize) -> Cluster {
        Self::start_joined(
            n,
            |id| if id == 1 { vec![] } else { vec![1] },
            |_| Vec::new(),
        )
    }

    /// Starts one more node, with `options`, that joins through node 1, and
    /// waits until every node sees every other up; its id.
    pub fn add_node(&mut self, options: &[&str]) -> usize {
        let id = self.ports.len() + 1;
        self.ports.push(free_port());
        watch_logs([self.dir.path().join(format!("ssid{id}.log"))]);
        let options: Vec<String> = options.iter().map(|s| s.to_string()).collect();
        let child = self.spawn_node(id, &[1], &options);
        self.nodes.push(Some(child));
        for node in 1..=id {
            self.wait_until(node, |nodes| {
                nodes.len() == id && nodes.iter().all(|v| v["state"] == "up")
            });
        }
        id
    }

    fn start_joined(
        n: usize,
        peers_of: impl Fn(usize) -> Vec<usize>,
        options: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        watch_logs((1..=n).map(|id| dir.path().join(format!("ssid{id}.log"))));
        let mut cluster = Cluster {
            dir,
            nodes: Vec::new(),
            ports,
        };
        for id in 1..=n {
            let child = cluster.spawn_node(id, &peers_of(id), &options(id));
            cluster.nodes.push(Some(child));
        }
        for id in 1..=n {
            cluster.wait_until(id, |nodes| {
                nodes.len() == n && nodes.iter().all(|v| v["state"] == "up")
            });
        }
        cluster
    }

    fn spawn_node(&self, id: usize, peers: &[usize], options: &[String]) -> std::process::Child {
        let mut cmd = Command::new(bin("ssid"));
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(self.address(id))
            .arg("--socket")
            .arg(self.socket(id))
            .arg("--data-dir")
            .arg(self.data_dir(id));
        for other in peers {
            cmd.arg("--peer")
                .arg(format!("{other}={}", self.address(*other)));
        }
        cmd.args(options);
        let log =
            std::fs::File::create(self.dir.path().join(format!("ssid{id}.log"))).expect("log file");
        // A failing test shows the logs: with each process's end in them.
        cmd.env("SSI_LOG", "info,ssi_home=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ssid")
    }

    pub fn address(&self, id: usize) -> String {
        format!("127.0.0.1:{}", self.ports[id - 1])
    }

    /// The node's data directory (its compiled-module cache is `modules` in it).
    pub fn data_dir(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("data{id}"))
    }

    pub fn socket(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node{id}.sock"))
    }

    /// The node's pid (of its `ssid` process).
    pub fn daemon_pid(&self, id: usize) -> u32 {
        self.nodes[id - 1].as_ref().expect("node running").id()
    }

    /// Kills a node's daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self, id: usize) {
        if let Some(mut child) = self.nodes[id - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal to a node's daemon (SIGSTOP makes it silent without closing
    /// its connections, as a hung or unreachable machine).
    pub fn signal(&self, id: usize, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.daemon_pid(id).to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// `ssirun` connected to node `home`, its standard streams pipes (the
    /// caller adds the module and its arguments).
    pub fn ssirun(&self, home: usize) -> Command {
        let mut cmd = Command::new(bin("ssirun"));
        cmd.arg("--connect")
            .arg(self.socket(home))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts `MODULE ARGS` through `ssirun` with its home on node `home` and
    /// its body on node `node` (0: where the home places it), stdin closed;
    /// returns once its first line is `first`.
    #[track_caller]
    pub fn launch(
        &self,
        home: usize,
        node: usize,
        module: &std::path::Path,
        args: &[&str],
        first: &str,
    ) -> crate::wait::Proc {
        let mut cmd = self.ssirun(home);
        if node != 0 {
            cmd.args(["--node", &node.to_string()]);
        }
        let what = format!(
            "{} on node {node}",
            module.file_name().unwrap_or_default().to_string_lossy()
        );
        let mut child =
            crate::wait::Proc::spawn(cmd.arg(module).args(args).stdin(Stdio::null()), &what);
        assert_eq!(child.line("its first line"), first);
        child
    }

    /// Runs `ssictl` against node `id`.
    #[track_caller]
    pub fn ssictl(&self, id: usize, args: &[&str]) -> std::process::Output {
        self.ssictl_within(id, args, WAIT)
    }

    /// As [`Cluster::ssictl`], allowed `limit` to end.
    pub fn ssictl_within(
        &self,
        id: usize,
        args: &[&str],
        limit: std::time::Duration,
    ) -> std::process::Output {
        Proc::spawn(
            Command::new(bin("ssictl"))
                .arg("--connect")
                .arg(self.socket(id))
                .args(args)
                .stdin(Stdio::null()),
            &format!("`ssictl {}` on node {id}", args.join(" ")),
        )
        .wait_within(limit)
    }

    /// Waits until `ssictl ps` on node `id` lists a process whose command
    /// `matches` (`what` names it in a failure), past loading its module (it
    /// runs, and can be moved), and returns its pid.
    #[track_caller]
    pub fn pid_of(&self, id: usize, what: &str, matches: impl Fn(&str) -> bool) -> u64 {
        let mut pid = None;
        wait_until(&format!("{what} to be listed"), WAIT, || {
            pid = self
                .ssictl_json(id, "ps")
                .into_iter()
                .find(|p| p["command"].as_str().is_some_and(&matches) && p["state"] != "loading")
                .and_then(|p| p["pid"].as_u64());
            pid.is_some()
        });
        pid.expect("a pid")
    }

    /// `ssictl ARGS --json` against node `id`, parsed.
    pub fn ssictl_json(&self, id: usize, what: &str) -> Vec<serde_json::Value> {
        let out = self.ssictl(id, &[what, "--json"]);
        assert!(
            out.status.success(),
            "ssictl {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("ssictl prints JSON")
    }

    /// Polls `ssictl nodes --json` on node `id` until `ok` holds (at most 10 s).
    pub fn wait_until(&self, id: usize, ok: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = self.ssictl(id, &["nodes", "--json"]);
            if out.status.success() {
                let nodes: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).expect("JSON");
                if ok(&nodes) {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {id} did not reach the expected state; the logs:\n{}",
                (1..=self.ports.len())
                    .map(|n| format!("--- node {n}\n{}", self.log(n)))
                    .collect::<String>()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// A daemon's log so far.
    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("ssid{id}.log"))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let dir = self.dir.path().to_path_buf();
        forget_logs(&dir);
        for id in 1..=self.nodes.len() {
            // A stopped daemon must be continued to die of SIGKILL's cleanup.
            if self.nodes[id - 1].is_some() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(self.daemon_pid(id).to_string())
                    .status();
            }
            self.kill(id);
        }
    }
}
