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
