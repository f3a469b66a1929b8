//! Runs for a while: `spin SECONDS` computes without system calls (0 = forever);
//! `spin SECONDS --ticks` prints a numbered line every 100 ms instead.
//! Prints `spinning` first, so a test knows it has started.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let ticks = args.next().as_deref() == Some("--ticks");
    println!("spinning");
    std::io::stdout().flush().expect("flush");
    let start = Instant::now();
    let done = |start: Instant| seconds != 0 && start.elapsed() >= Duration::from_secs(seconds);
    if ticks {
        let mut i = 0u64;
        while !done(start) {
            std::thread::sleep(Duration::from_millis(100));
            i += 1;
            println!("tick {i}");
        }
        return;
    }
    let mut x = 1u64;
    loop {
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        if done(start) {
            break;
        }
    }
    println!("done {}", x & 1);
}
