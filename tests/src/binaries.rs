//! Where the workspace's binaries and the repository are.

use std::path::{Path, PathBuf};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory holding the workspace's binaries (the test executables sit in its `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("the executable's directory");
    // A test executable sits in `deps/`; a binary of this crate beside the others.
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// A command's status as a shell reports it (`$?`): its exit code, or
/// 128 + the number of the signal that ended it.
pub fn shell_status(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|n| 128 + n))
        .unwrap_or(-1)
}

/// The path of a workspace binary, which must have been built first.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --release --bins`; tests/run does)",
        path.display()
    );
    path
}

/// `ssirun` as the tests start it: no node of the developer's is used (its
/// default socket leads nowhere and `SSI_CONNECT` is unset), so it runs the
/// program embedded unless it is given `--connect`.
pub fn ssirun() -> std::process::Command {
    let mut cmd = std::process::Command::new(bin("ssirun"));
    cmd.env("SSI_SOCKET", "/nonexistent/ssi-tests/node.sock")
        .env_remove("SSI_CONNECT");
    cmd
}
