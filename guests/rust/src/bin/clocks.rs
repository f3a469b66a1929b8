//! Clocks and sleeps: monotonic time advances across sleeps, realtime is sane.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after epoch");
    println!("realtime after 2020: {}", now.as_secs() > 1_577_836_800);
    let t0 = Instant::now();
    for ms in [1u64, 10, 50] {
        let before = Instant::now();
        std::thread::sleep(Duration::from_millis(ms));
        let slept = before.elapsed();
        println!("sleep {ms} ms: at least {ms} ms elapsed: {}", slept >= Duration::from_millis(ms));
    }
    let total = t0.elapsed();
    println!("monotonic never goes back: {}", Instant::now() >= t0 + total);
}
