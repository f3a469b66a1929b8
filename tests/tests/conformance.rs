//! Conformance of every preview1 function, success and error paths, as `ssirun`
//! runs them (the differential test also holds this transcript equal to wasmtime's).

use ssi_tests::{Case, guest};

#[test]
fn every_preview1_function_behaves() {
    let case = Case::new(guest("conformance"))
        .args(&["x", "y"])
        .env("A", "1")
        .sandbox(&[("input.txt", b"hello conformance\n")])
        .mount_at("/");
    let (out, tree) = case.run_ssirun();
    let text = out.stdout_text();
    assert_eq!(
        out.status,
        17,
        "proc_exit status; stderr: {}",
        out.stderr_text()
    );
    let expected = [
        "args_sizes_get: 3 21",
        "args: \"conformance.wasm\\0x\\0y\\0\"",
        "env: \"A=1\\0\"",
        "random differs: true",
        "preopen name: \"/\"",
        "fd_prestat_dir_name short buffer: err NAMETOOLONG",
        "fd_prestat_get stdout: err BADF",
        "fd_prestat_get bad fd: err BADF",
        "fd_fdstat_get bad fd: err BADF",
        "fd_write: ok 10",
        "fd_tell: ok 10",
        "fd_seek set 2: ok 2",
        "fd_seek cur 3: ok 5",
        "fd_seek end -1: ok 9",
        "fd_seek negative: err INVAL",
        "fd_pread: ok 3",
        "pread bytes: \"456\"",
        "fd_filestat_get: type=4 size=10 nlink=1",
        "fd_filestat_get after truncate: type=4 size=4 nlink=1",
        "mtim after set: 2000000000",
        "fd_filestat_set_times conflicting: err INVAL",
        "fd_allocate: err NOTSUP",
        "flags after set: 1",
        "fd_fdstat_set_rights: err NOTSUP",
        "fd_read input: 18 \"hello conformance\\n\"",
        "fd_write read-only: err BADF",
        "fd_write without FD_WRITE: err BADF",
        "fd_pwrite without FD_WRITE: err BADF",
        "fd_filestat_set_size without FD_WRITE: err INVAL",
        "fd_filestat_set_size stdout: err BADF",
        "fd_read directory: err BADF",
        "fd_write bad fd: err BADF",
        "fd_seek stdout: err SPIPE",
        "fd_renumber bad: err BADF",
        "fd_close old: err BADF",
        "fd_close twice: err BADF",
        "path_create_directory exists: err EXIST",
        "path_create_directory escape: err PERM",
        "path_filestat_get: type=4 size=18 nlink=1",
        "path_filestat_get missing: err NOENT",
        "path_readlink: \"input.txt\"",
        "path_readlink not a link: err INVAL",
        "path_filestat_get nofollow: type=7",
        "path_open through escaping symlink: err PERM",
        "path_open dotdot: err PERM",
        "path_open absolute: err PERM",
        "path_open missing: err NOENT",
        "path_open file as directory: err NOTDIR",
        "path_open excl existing: err EXIST",
        "path_open dir for writing: err ISDIR",
        "path_open on a file fd: err BADF",
        "path_link exists: err EXIST",
        "path_rename missing: err NOENT",
        "path_remove_directory non-empty: err NOTEMPTY",
        "path_unlink_file directory: err ISDIR",
        "path_unlink_file missing: err NOENT",
        "path_open invalid utf-8 path: errno 25",
        "fd_readdir (small buffer): [\".\", \"..\", \"a\", \"b\", \"c\"]",
        "fd_fdstat_get dir: type=3",
        "poll_oneoff clock: 1 events, userdata 7 type 0 error 0",
        "poll_oneoff stdout writable: has 9: true",
        "poll_oneoff none: err INVAL",
        "poll_oneoff bad fd: err BADF",
        "sock_accept: err NOTSOCK",
        "sock_recv: err BADF",
        "proc_raise: err NOTSUP",
        "done",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|l| !text.lines().any(|x| x == *l))
        .collect();
    assert!(
        missing.is_empty(),
        "missing lines: {missing:#?}\n--- transcript ---\n{text}"
    );
    // Everything the guest made and removed is gone; only its list directory stays.
    let names: Vec<&String> = tree.0.keys().collect();
    assert_eq!(
        names,
        ["input.txt", "list", "list/a", "list/b", "list/c", "new.txt"]
    );
}

/// The standard output of a run of `ssirun` that must have succeeded.
fn succeeded(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Holds that `run` (given `ssirun`'s options) gives `expect` embedded, and
/// through node 1 of a two-node cluster with the body at home and on node 2.
fn same_embedded_and_through_a_node<T: PartialEq + std::fmt::Debug>(
    expect: T,
    run: impl Fn(&[&str]) -> T,
) {
    assert_eq!(run(&[]), expect, "embedded");
    let cluster = ssi_tests::Cluster::start(2);
    let socket = cluster.socket(1).display().to_string();
    for node in ["1", "2"] {
        assert_eq!(
            run(&["--connect", &socket, "--node", node]),
            expect,
            "through node 1, the body on node {node}"
        );
    }
}

/// `pollin` through `ssirun` with stdin at /dev/null (as under cron or
/// `nohup … < /dev/null`), embedded or through a node given with
/// `--connect`: its standard output.
fn pollin_at_dev_null(options: &[&str]) -> String {
    let out = ssi_tests::run(
        ssi_tests::ssirun()
            .args(options)
            .arg(guest("pollin"))
            .stdin(std::process::Stdio::null()),
        "pollin < /dev/null",
    );
    succeeded(out)
}

#[test]
fn stdin_at_dev_null_is_readable_at_once_as_under_wasmtime() {
    // wasmtime sees an input at its end as readable, with no error.
    let (reference, _) = Case::new(guest("pollin")).run_reference();
    assert_eq!(
        reference.stdout_text(),
        "stdin: error SUCCESS\nread 0 bytes\n"
    );
    same_embedded_and_through_a_node(reference.stdout_text(), pollin_at_dev_null);
}

/// `pollin 1` through `ssirun` with its stdin a pipe on which `late` comes
/// two seconds later: its standard output.
fn pollin_with_late_input(options: &[&str]) -> String {
    use std::io::Write;
    let mut p = ssi_tests::Proc::spawn(
        ssi_tests::ssirun()
            .args(options)
            .arg(guest("pollin"))
            .arg("1")
            .stdin(std::process::Stdio::piped()),
        "pollin 1",
    );
    let mut stdin = p.stdin();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = stdin.write_all(b"late\n");
    drop(stdin);
    let out = p.wait();
    succeeded(out)
}

#[test]
fn a_poll_on_stdin_without_input_waits_for_its_deadline_as_under_wasmtime() {
    // Under wasmtime the clock fires first: nothing came within 1 s.
    let expect = "clock: error SUCCESS\nread 5 bytes\n";
    same_embedded_and_through_a_node(expect.to_string(), pollin_with_late_input);
}

/// `bigout` through `ssirun` with its stdout a pipe whose reader ends at
/// once (`| true`): `ssirun`'s exit status, and how the program's failed
/// write reads on its stderr.
fn bigout_into_a_closed_pipe(options: &[&str]) -> (i32, String) {
    let out = ssi_tests::run(
        std::process::Command::new("bash")
            .arg("-c")
            .arg("\"$0\" \"$@\" | true; exit ${PIPESTATUS[0]}")
            .arg(ssi_tests::bin("ssirun"))
            .args(options)
            .arg(guest("bigout"))
            .arg("64")
            .env("SSI_SOCKET", "/nonexistent/ssi-tests/node.sock")
            .env_remove("SSI_CONNECT")
            .env("RUST_BACKTRACE", "0"),
        "bigout | true",
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_write_to_a_closed_pipe_fails_with_eio_as_under_wasmtime() {
    // wasmtime's preview1 reports a stream that failed as EIO (29).
    let (status, err) = bigout_into_a_closed_pipe(&[]);
    assert!(err.contains("code: 29"), "embedded: {err}");
    // Its panic aborts it, as under wasmtime.
    assert_eq!(status, 134, "{err}");
    let cluster = ssi_tests::Cluster::start(2);
    let socket = cluster.socket(1).display().to_string();
    // Through a node, the program fails the same way, with its body at
    // home or on another node (which pipelines its writes, and learns of
    // the failure from the next write it waits for); its own message on
    // stderr follows, as under wasmtime: one stream's failure is its own.
    for node in ["1", "2"] {
        let (status, err) = bigout_into_a_closed_pipe(&["--connect", &socket, "--node", node]);
        assert_eq!(status, 134, "through a node, body on node {node}: {err}");
        assert!(err.contains("code: 29"), "body on node {node}: {err}");
    }
}

/// `prompt` through `ssirun` with its stdin and stdout pipes: what it
/// printed before it was answered (its question, which ends no line), and
/// all it printed.
fn answer_a_prompt(options: &[&str]) -> (String, String) {
    use std::io::Write;
    let mut p = ssi_tests::Proc::spawn(
        ssi_tests::ssirun()
            .args(options)
            .arg(guest("prompt"))
            .stdin(std::process::Stdio::piped()),
        "prompt",
    );
    let mut stdin = p.stdin();
    let asked = p.out.through("? ", "the question, before any answer");
    stdin.write_all(b"Ada\n").expect("answer");
    drop(stdin);
    (asked, succeeded(p.wait()))
}

#[test]
fn a_question_that_ends_no_line_shows_before_the_answer() {
    let expect = ("name? ".to_string(), "hello Ada\n".to_string());
    same_embedded_and_through_a_node(expect, answer_a_prompt);
}
