//! Uses the `ssi` host API: prints its identity, checks what it can see, then
//! sends SIGUSR1 to its own process group, which ends it (status 138).
//! `ident OTHER_PID` first looks up another process (of any home) and sends it
//! SIGTERM.

use ssi_guest::{Errno, Target, getpgid, getpid, getppid, getsid, kill, signal};
use std::io::Write;

fn main() {
    let pid = getpid().expect("getpid");
    println!("pid {pid} home {}", pid >> 22);
    println!("ppid {}", getppid().expect("getppid"));
    println!("pgid is pid: {}", getpgid(0).expect("getpgid") == pid);
    println!("sid is pid: {}", getsid(pid).expect("getsid") == pid);
    println!("kill 0 self: {:?}", kill(Target::Process(pid), 0));
    let nobody = (pid & !((1 << 22) - 1)) | ((1 << 22) - 2);
    println!("getpgid nobody: {:?}", getpgid(nobody).map_err(Errno::name));
    println!(
        "kill nobody: {:?}",
        kill(Target::Process(nobody), signal::TERM).map_err(Errno::name)
    );
    println!(
        "kill bad signal: {:?}",
        kill(Target::Process(pid), 99).map_err(Errno::name)
    );
    if let Some(other) = std::env::args().nth(1).and_then(|a| a.parse::<u32>().ok()) {
        println!(
            "other pgid is other: {:?}",
            getpgid(other).map(|g| g == other)
        );
        println!(
            "other sid is other: {:?}",
            getsid(other).map(|s| s == other)
        );
        println!(
            "kill other: {:?}",
            kill(Target::Process(other), signal::TERM)
        );
    }
    println!("signaling my group");
    std::io::stdout().flush().expect("flush");
    kill(Target::OwnGroup, signal::USR1).expect("kill");
    // The next system call (or loop iteration) is the last.
    loop {
        println!("still here");
    }
}
