//! Signal handlers through the `ssi` host API, for the signal tests and the
//! delivery benchmark.
//!
//! - `sigs count`: handles SIGUSR1 (prints `usr1 N`) and SIGTERM (prints
//!   `term`), loops without calls until SIGTERM, prints `bye N`, exits 0.
//! - `sigs mask`: blocks SIGUSR1, prints `blocked`, reads a line, unblocks
//!   (the pending signal's handler runs before the call returns), prints
//!   `unblocked`.
//! - `sigs read`: handles SIGUSR1, prints `reading`, reads a line (the read
//!   goes on after the handler), prints it.
//! - `sigs nap MS`: handles SIGUSR1, prints `napping`, sleeps MS ms (the
//!   sleep goes on after the handler, to its deadline), prints `slept` and
//!   whether the whole time went by (`whole` or `short`).
//! - `sigs waitkid MS`: handles SIGUSR1, spawns a child of this program that
//!   sleeps MS ms and exits 5, prints `waiting`, waits for it (the wait goes
//!   on after the handler), prints how it ended.
//! - `sigs bench N`: N times: prints `ready I`, loops without calls until its
//!   SIGUSR1 handler has run, prints `entered NS` (the wall clock, in ns since
//!   the Unix epoch, at the handler's entry).

use ssi_guest::signal::{TERM, USR1};
use ssi_guest::signals;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNT: AtomicU64 = AtomicU64::new(0);
static ENTERED: AtomicU64 = AtomicU64::new(0);
static TERMINATE: AtomicBool = AtomicBool::new(false);

// The loops below read what a handler writes with volatile reads: the
// compiler sees no call in them (the poll points that run handlers are added
// to the module later), so it could otherwise read once, as C's `volatile
// sig_atomic_t` rule has it.
fn terminating() -> bool {
    // SAFETY: a valid, aligned pointer to a live static.
    unsafe { std::ptr::read_volatile(TERMINATE.as_ptr()) }
}

fn count() -> u64 {
    // SAFETY: a valid, aligned pointer to a live static.
    unsafe { std::ptr::read_volatile(COUNT.as_ptr()) }
}

fn say(text: &str) {
    let mut out = std::io::stdout();
    out.write_all(text.as_bytes()).expect("write");
    out.flush().expect("flush");
}

fn on_usr1(_: i32) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    say(&format!("usr1 {n}\n"));
}

fn on_term(_: i32) {
    say("term\n");
    TERMINATE.store(true, Ordering::SeqCst);
}

fn on_bench(_: i32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    ENTERED.store(now, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

fn read_line() -> String {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read");
    line
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("count") => {
            signals::handle(USR1, on_usr1).expect("sigaction");
            signals::handle(TERM, on_term).expect("sigaction");
            say("ready\n");
            let mut spins = 0u64;
            while !terminating() {
                spins = spins.wrapping_add(1);
            }
            std::hint::black_box(spins);
            say(&format!("bye {}\n", COUNT.load(Ordering::SeqCst)));
        }
        Some("mask") => {
            signals::handle(USR1, on_usr1).expect("sigaction");
            signals::block(&[USR1]).expect("sigprocmask");
            say("blocked\n");
            let line = read_line();
            say(&format!("read {line}"));
            signals::unblock(&[USR1]).expect("sigprocmask");
            say("unblocked\n");
        }
        Some("read") => {
            signals::handle(USR1, on_usr1).expect("sigaction");
            say("reading\n");
            let line = read_line();
            say(&format!("read {line}"));
        }
        Some("nap") => {
            let ms: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1500);
            signals::handle(USR1, on_usr1).expect("sigaction");
            say("napping\n");
            let t0 = std::time::Instant::now();
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let whole = t0.elapsed() >= std::time::Duration::from_millis(ms);
            say(&format!("slept {}\n", if whole { "whole" } else { "short" }));
        }
        Some("waitkid") => {
            let ms = args.get(2).cloned().unwrap_or_else(|| "1500".into());
            signals::handle(USR1, on_usr1).expect("sigaction");
            let child = ssi_guest::spawn(
                &ssi_guest::Command::this_program().args(["sigs", "sleepexit", &ms, "5"]),
            )
            .expect("spawn");
            say("waiting\n");
            let (pid, status) = ssi_guest::waitpid(ssi_guest::Children::Pid(child), 0)
                .expect("waitpid")
                .expect("the child");
            assert_eq!(pid, child);
            say(&format!("child {status}\n"));
        }
        Some("sleepexit") => {
            let ms: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            ssi_guest::exit(args.get(3).and_then(|c| c.parse().ok()).unwrap_or(0))
        }
        Some("bench") => {
            let n: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100);
            signals::handle(USR1, on_bench).expect("sigaction");
            for i in 0..n {
                say(&format!("ready {i}\n"));
                while count() <= i {
                    std::hint::spin_loop();
                }
                say(&format!("entered {}\n", ENTERED.load(Ordering::SeqCst)));
            }
        }
        _ => {
            eprintln!("usage: sigs count|mask|read|nap MS|waitkid MS|bench N");
            std::process::exit(2)
        }
    }
}
