//! Parents and children through the `ssi` host API, for the process tests
//! and the spawn benchmark. The children run this same program.
//!
//! - `family children NODE…`: one child per node given (0: the home); child
//!   i checks that its parent is the caller, sleeps, and exits with 10 + i,
//!   except the last, which the parent ends with SIGTERM once a line comes
//!   on its stdin. The parent waits for each in turn and prints how it ended.
//! - `family group NODE…`: children that sleep until killed, gathered into
//!   a process group led by the first; prints `group PGID`, then how each
//!   member ended as it is reaped. Each member prints `member I: SIGUSR1 N`
//!   from its handler for the Nth SIGUSR1 it gets.
//! - `family orphans`: a child that exits at once and one that lives on;
//!   prints their pids, lets the first become a zombie, and exits without
//!   waiting for either.
//! - `family jobs NODE`: a child on NODE that is stopped, continued and
//!   ended by its parent, which reports each change as `waitpid` with
//!   `WUNTRACED` and `WCONTINUED` sees it.
//! - `family hangup NODE FILE`: a child on NODE in a group of its own that
//!   records the SIGHUP and SIGCONT it gets in FILE (`family hupped FILE`);
//!   the parent stops it, prints `stopped`, and exits, which orphans the
//!   child's group with a stopped member.
//! - `family errors`: each call's error on bad input.
//! - `family run NODE PATH ARG…`: runs the module at PATH as a child with
//!   only the standard streams, and prints how it ended.
//! - `family bench COUNT NODE`: spawns and reaps COUNT children that exit at
//!   once; prints the time of each spawn and each spawn-to-reaped, in µs.
//! - `family exit CODE`, `family sleep MS [CODE]`, `family child I PARENT MS`:
//!   what the children do.

use ssi_guest::{Children, Command, Errno, Status, Target, wait};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn flush() {
    std::io::stdout().flush().expect("flush");
}

fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> T {
    s.and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected {what}"))
}

fn nodes(args: &[String]) -> Vec<u16> {
    args.iter()
        .map(|a| a.parse().expect("a node number"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rest = &args[2.min(args.len())..];
    match args.get(1).map(String::as_str) {
        Some("children") => children(&nodes(rest)),
        Some("group") => group(&nodes(rest)),
        Some("orphans") => orphans(),
        Some("errors") => errors(),
        Some("jobs") => jobs(num(rest.first(), "a node")),
        Some("hangup") => hangup(
            num(rest.first(), "a node"),
            rest.get(1).expect("a file for the child"),
        ),
        Some("hupped") => hupped(rest.first().expect("a file").clone()),
        Some("run") => run(num(rest.first(), "a node"), &rest[1..]),
        Some("bench") => bench(num(rest.first(), "a count"), num(rest.get(1), "a node")),
        Some("exit") => ssi_guest::exit(num(rest.first(), "an exit code")),
        Some("member") => member(num(rest.first(), "a member number")),
        Some("sleep") => {
            std::thread::sleep(Duration::from_millis(num(rest.first(), "milliseconds")));
            ssi_guest::exit(rest.get(1).and_then(|c| c.parse().ok()).unwrap_or(0))
        }
        Some("child") => {
            let i: i32 = num(rest.first(), "a child number");
            let parent: u32 = num(rest.get(1), "the parent's pid");
            let ms: u64 = num(rest.get(2), "milliseconds");
            let ok = ssi_guest::getppid() == Ok(parent)
                && ssi_guest::getpgid(0) == ssi_guest::getpgid(parent)
                && ssi_guest::getsid(0) == ssi_guest::getsid(parent);
            std::thread::sleep(Duration::from_millis(ms));
            ssi_guest::exit(if ok { 10 + i } else { 99 })
        }
        _ => {
            eprintln!("usage: family children|group|orphans|errors|bench|exit|sleep|child …");
            std::process::exit(2)
        }
    }
}

fn children(nodes: &[u16]) {
    let me = ssi_guest::getpid().expect("getpid");
    let mut pids = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let ms = if i + 1 == nodes.len() { 60_000 } else { 1_500 };
        let cmd = Command::this_program()
            .args(["family", "child", &i.to_string(), &me.to_string(), &ms.to_string()])
            .node(*node);
        let pid = ssi_guest::spawn(&cmd).expect("spawn");
        pids.push(pid);
    }
    println!("spawned {}", pids.len());
    flush();
    // Until a line comes (the children may be looked at meanwhile).
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("read stdin");
    // The last one would sleep a minute: end it.
    if let Some(last) = pids.last() {
        ssi_guest::kill(Target::Process(*last), ssi_guest::signal::TERM).expect("kill");
    }
    for (i, pid) in pids.iter().enumerate() {
        let (got, status) = ssi_guest::waitpid(Children::Pid(*pid), 0)
            .expect("waitpid")
            .expect("a child");
        assert_eq!(got, *pid);
        println!("child {i}: {status}");
    }
    println!(
        "then: {:?}",
        ssi_guest::waitpid(Children::Any, 0).map_err(Errno::name)
    );
}

fn group(nodes: &[u16]) {
    let mut pids = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let cmd = Command::this_program()
            .args(["family", "member", &i.to_string()])
            .node(*node);
        pids.push(ssi_guest::spawn(&cmd).expect("spawn"));
    }
    let leader = pids[0];
    for pid in &pids {
        ssi_guest::setpgid(*pid, leader).expect("setpgid");
    }
    for pid in &pids {
        assert_eq!(ssi_guest::getpgid(*pid), Ok(leader));
    }
    println!("group {leader}");
    flush();
    for _ in &pids {
        let (pid, status) = ssi_guest::waitpid(Children::Group(leader), 0)
            .expect("waitpid")
            .expect("a member");
        let i = pids.iter().position(|p| *p == pid).expect("a member");
        println!("member {i}: {status}");
        flush();
    }
}

static MEMBER: AtomicU64 = AtomicU64::new(0);
static USR1S: AtomicU64 = AtomicU64::new(0);

fn on_usr1(_: i32) {
    let n = USR1S.fetch_add(1, Ordering::SeqCst) + 1;
    let mut out = std::io::stdout();
    let line = format!("member {}: SIGUSR1 {n}\n", MEMBER.load(Ordering::SeqCst));
    out.write_all(line.as_bytes()).expect("write");
    out.flush().expect("flush");
}

/// A group member: counts its SIGUSR1s, sleeps until a signal ends it.
fn member(i: u64) {
    MEMBER.store(i, Ordering::SeqCst);
    ssi_guest::signals::handle(ssi_guest::signal::USR1, on_usr1).expect("sigaction");
    loop {
        std::thread::sleep(Duration::from_secs(600));
    }
}

fn jobs(node: u16) {
    let child = ssi_guest::spawn(
        &Command::this_program()
            .args(["family", "member", "0"])
            .node(node),
    )
    .expect("spawn");
    let report = |options: i32| match ssi_guest::waitpid(Children::Pid(child), options) {
        Ok(Some((_, status))) => println!("{status}"),
        Ok(None) => println!("no change"),
        Err(e) => println!("{}", e.name()),
    };
    report(wait::WNOHANG | wait::WUNTRACED);
    ssi_guest::kill(Target::Process(child), ssi_guest::signal::STOP).expect("kill");
    report(wait::WUNTRACED);
    ssi_guest::kill(Target::Process(child), ssi_guest::signal::CONT).expect("kill");
    report(wait::WCONTINUED);
    ssi_guest::kill(Target::Process(child), ssi_guest::signal::TERM).expect("kill");
    report(0);
}

fn hangup(node: u16, file: &str) {
    let child = ssi_guest::spawn(
        &Command::this_program()
            .args(["family", "hupped", file])
            .node(node),
    )
    .expect("spawn");
    // A group of its own, in the caller's session: the caller's end orphans it.
    ssi_guest::setpgid(child, child).expect("setpgid");
    // Its handlers are in place once it says so in the file.
    while std::fs::read_to_string(file).unwrap_or_default().is_empty() {
        std::thread::sleep(Duration::from_millis(5));
    }
    ssi_guest::kill(Target::Process(child), ssi_guest::signal::STOP).expect("kill");
    let (_, status) = ssi_guest::waitpid(Children::Pid(child), wait::WUNTRACED)
        .expect("waitpid")
        .expect("the child");
    println!("{status}");
    println!("leaving");
}

static HUPPED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn note(text: &str) {
    let path = HUPPED.get().expect("the file");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open the file");
    f.write_all(text.as_bytes()).expect("write");
}

fn on_hup(_: i32) {
    note("SIGHUP\n");
}

fn on_cont(_: i32) {
    note("SIGCONT\n");
}

/// Records the SIGHUP and SIGCONT it gets; ends after both.
fn hupped(file: String) {
    std::fs::write(&file, "").expect("create the file");
    HUPPED.set(file.clone()).expect("once");
    ssi_guest::signals::handle(ssi_guest::signal::HUP, on_hup).expect("sigaction");
    ssi_guest::signals::handle(ssi_guest::signal::CONT, on_cont).expect("sigaction");
    note("ready\n");
    loop {
        let seen = std::fs::read_to_string(&file).unwrap_or_default();
        if seen.contains("SIGHUP") && seen.contains("SIGCONT") {
            ssi_guest::exit(0)
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn orphans() {
    let quick = ssi_guest::spawn(&Command::this_program().args(["family", "exit", "3"]))
        .expect("spawn");
    let slow = ssi_guest::spawn(&Command::this_program().args(["family", "sleep", "3000"]))
        .expect("spawn");
    println!("quick {quick} slow {slow}");
    flush();
    // The quick one ends meanwhile and stays a zombie: nobody waits for it.
    std::thread::sleep(Duration::from_millis(1_500));
    println!("leaving");
}

fn errors() {
    let me = ssi_guest::getpid().expect("getpid");
    let show = |what: &str, r: Result<u32, Errno>| println!("{what}: {:?}", r.map_err(Errno::name));
    show(
        "wait with no child",
        ssi_guest::waitpid(Children::Any, 0).map(|_| 0),
    );
    show(
        "spawn a missing module",
        ssi_guest::spawn(&Command::new("/nowhere/x.wasm")),
    );
    show(
        "spawn on an unknown node",
        ssi_guest::spawn(&Command::this_program().args(["family", "exit", "0"]).node(99)),
    );
    show(
        "spawn with a closed fd",
        ssi_guest::spawn(&Command::this_program().fd(0, 77)),
    );
    show("setsid as a group leader", ssi_guest::setsid());
    show(
        "setpgid of a non-child",
        ssi_guest::setpgid(me + 1, 0).map(|_| 0),
    );
    let child = ssi_guest::spawn(&Command::this_program().args(["family", "exit", "4"]))
        .expect("spawn");
    show(
        "wait for another pid",
        ssi_guest::waitpid(Children::Pid(child + 1), 0).map(|_| 0),
    );
    let status = ssi_guest::waitpid(Children::Pid(child), 0)
        .expect("waitpid")
        .map(|(_, s)| s);
    println!("child: {status:?}");
    show(
        "wait again",
        ssi_guest::waitpid(Children::Pid(child), wait::WNOHANG).map(|_| 0),
    );
}

fn run(node: u16, command: &[String]) {
    let (path, args) = command.split_first().expect("a module path");
    let name = path.rsplit('/').next().unwrap_or(path);
    let cmd = Command::new(path)
        .args(std::iter::once(name).chain(args.iter().map(String::as_str)))
        .fd(0, 0)
        .fd(1, 1)
        .fd(2, 2)
        .node(node);
    let pid = ssi_guest::spawn(&cmd).unwrap_or_else(|e| panic!("spawn {path}: {e}"));
    let (_, status) = ssi_guest::waitpid(Children::Pid(pid), 0)
        .expect("waitpid")
        .expect("the child");
    println!("{name}: {status}");
}

fn bench(count: u32, node: u16) {
    for _ in 0..count {
        let t0 = Instant::now();
        let pid = ssi_guest::spawn(
            &Command::this_program()
                .args(["family", "exit", "0"])
                .node(node),
        )
        .expect("spawn");
        let spawned = t0.elapsed();
        let (_, status) = ssi_guest::waitpid(Children::Pid(pid), 0)
            .expect("waitpid")
            .expect("a child");
        assert_eq!(status, Status::Exited(0));
        println!(
            "spawn_us {} reaped_us {}",
            spawned.as_micros(),
            t0.elapsed().as_micros()
        );
    }
}
