//! The `ssi` host API (guests/ssi): identity and signals, from Rust and from C,
//! in the embedded default and with the body on another node.

use ssi_tests::{Case, Cluster, guest};

fn expect_ident(out: &ssi_tests::Outcome, home: u32) {
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
    assert_eq!(
        rest,
        [
            "ppid 0",
            "pgid is pid: true",
            "sid is pid: true",
            "kill 0 self: Ok(())",
            "getpgid nobody: Err(\"SRCH\")",
            "kill nobody: Err(\"SRCH\")",
            "kill bad signal: Err(\"INVAL\")",
            "signaling my group",
        ],
        "a signal a process sends itself ends it before kill returns"
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
