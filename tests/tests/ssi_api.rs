//! The `ssi` host API (guests/ssi): identity and signals, from Rust and from C,
//! in the embedded default and with the body on another node.

use ssi_tests::{Case, Cluster, guest, shell_status};

fn expect_ident(out: &ssi_tests::Outcome, home: u32) {
    expect_ident_with(out, home, &[]);
}

fn expect_ident_with(out: &ssi_tests::Outcome, home: u32, extra: &[&str]) {
    let text = out.stdout_text();
    assert_eq!(out.status, 138, "{text}{}", out.stderr_text());
    let pid: u32 = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("pid "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid line: {text}"));
    assert_eq!(pid >> 22, home, "the pid names its home");
    let rest: Vec<&str> = text.lines().skip(1).collect();
    let mut expected = vec![
        "ppid 0",
        "pgid is pid: true",
        "sid is pid: true",
        "kill 0 self: Ok(())",
        "getpgid nobody: Err(\"SRCH\")",
        "kill nobody: Err(\"SRCH\")",
        "kill bad signal: Err(\"INVAL\")",
    ];
    expected.extend_from_slice(extra);
    expected.push("signaling my group");
    assert_eq!(
        rest,
        expected,
        "a signal a process sends itself ends it before kill returns; stderr: {}",
        out.stderr_text()
    );
}

fn expect_cident(out: &ssi_tests::Outcome) {
    assert_eq!(out.status, 143, "{}", out.stderr_text());
    assert_eq!(
        out.stdout_text(),
        "pid>0: 1\npgid==pid: 1\nsid==pid: 1\nppid: 0\nkill nobody: -71\n"
    );
}

#[test]
fn identity_and_self_signals_in_the_embedded_default() {
    let (out, _) = Case::new(guest("ident")).run_ssirun();
    expect_ident(&out, 1);
    let (out, _) = Case::new(guest("cident")).run_ssirun();
    expect_cident(&out);
}

#[test]
fn identity_and_self_signals_with_the_body_on_another_node() {
    let cluster = Cluster::start(2);
    let socket = cluster.socket(2).display().to_string();
    // Home on node 2, body on node 1.
    let (out, _) =
        Case::new(guest("ident")).run_ssirun_with(&["--connect", &socket, "--node", "1"]);
    expect_ident(&out, 2);
    let (out, _) =
        Case::new(guest("cident")).run_ssirun_with(&["--connect", &socket, "--node", "1"]);
    expect_cident(&out);
}

#[test]
fn a_process_sees_and_signals_a_process_of_another_home() {
    let cluster = Cluster::start(2);
    // A process of node 1, its body on node 2.
    let mut other = ssi_tests::Proc::spawn(
        std::process::Command::new(ssi_tests::bin("ssirun"))
            .arg("--connect")
            .arg(cluster.socket(1))
            .args(["--node", "2"])
            .arg(guest("spin"))
            .arg("0")
            .stdin(std::process::Stdio::null()),
        "spin on node 2",
    );
    assert_eq!(other.line("its first line"), "spinning");
    let pid = cluster
        .ssictl_json(1, "ps")
        .into_iter()
        .find_map(|p| p["pid"].as_u64())
        .expect("listed");
    // A process of node 2 looks it up and sends it SIGTERM through its home.
    let socket = cluster.socket(2).display().to_string();
    let (out, _) = Case::new(guest("ident"))
        .args(&[&pid.to_string()])
        .run_ssirun_with(&["--connect", &socket]);
    expect_ident_with(
        &out,
        2,
        &[
            "other pgid is other: Ok(true)",
            "other sid is other: Ok(true)",
            "kill other: Ok(())",
        ],
    );
    assert_eq!(shell_status(other.wait().status), 143);
}
