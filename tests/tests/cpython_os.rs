//! CPython's `os` module on a directory (the corpus's CPython 3.12, a real
//! libc's file calls): a script of fifty file-system calls
//! (`tests/corpus/os_calls.py`: opens in every mode, read-only and
//! write-only descriptors used the other way, truncation, renames, links,
//! times, directories, escapes), each printing its result or its errno. Under
//! `ssirun`, embedded and with the body on another node, the transcript, the
//! status and the files it leaves must be wasmtime's.

use ssi_tests::corpus::{self, PYTHON};
use ssi_tests::{Case, Cluster, Outcome, Tree, assert_same};

fn case() -> Case {
    let module = corpus::module(&PYTHON).unwrap_or_else(|e| panic!("{e}"));
    Case::new(module)
        .args(&["/w/os_calls.py"])
        .mount_at("/w")
        .sandbox(&[("os_calls.py", include_bytes!("../corpus/os_calls.py"))])
        .within(std::time::Duration::from_secs(120))
}

fn reference() -> (Outcome, Tree) {
    let reference = case().run_reference();
    assert_eq!(
        reference.0.status,
        0,
        "under wasmtime: {}",
        reference.0.stderr_text()
    );
    // The script ran to its end, through the calls that once differed.
    let text = reference.0.stdout_text();
    for line in [
        "os.open rdonly write err EBADF",
        "ftruncate read-only err EINVAL",
        "walk ok",
    ] {
        assert!(text.contains(line), "no {line:?} under wasmtime:\n{text}");
    }
    reference
}

#[test]
fn cpythons_os_calls_answer_as_under_wasmtime() {
    let reference = reference();
    assert_same("CPython's os calls", &case().run_ssirun(), &reference);
}

#[test]
fn cpythons_os_calls_answer_as_under_wasmtime_with_the_body_on_another_node() {
    let reference = reference();
    let cluster = Cluster::start(2);
    let ours = case()
        .spawn_through(&cluster, 1, 2)
        .join()
        .expect("ssirun's thread");
    assert_same("CPython's os calls, body on node 2", &ours, &reference);
}
