//! Writes records for checkpoint tests: `appender DIR COUNT [MS]`. Record i
//! is appended to DIR/log (opened for appending) and written at its own
//! offset in DIR/table (opened once, truncated, written in place), with a
//! pause of MS milliseconds (default 2) between records; prints `ready` once
//! the files are open and `done COUNT` at the end.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: appender DIR COUNT [MS]");
    let count: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let pause = Duration::from_millis(args.next().and_then(|s| s.parse().ok()).unwrap_or(2));
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(format!("{dir}/log"))
        .expect("open log");
    let mut table = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(format!("{dir}/table"))
        .expect("open table");
    println!("ready");
    std::io::stdout().flush().expect("flush");
    for i in 0..count {
        log.write_all(format!("record {i:06}\n").as_bytes())
            .expect("append");
        // The table's offset lives at the home: it must survive a restart.
        table.write_all(format!("{i:06}\n").as_bytes()).expect("write");
        std::thread::sleep(pause);
    }
    println!("done {count}");
}
