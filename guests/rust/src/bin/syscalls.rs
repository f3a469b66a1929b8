//! Times system-call round trips from inside a body: `syscalls N` makes N small
//! `fd_write`s to a file and N `path_open` + `fd_close` pairs (after a warm-up),
//! timing each with the monotonic clock (answered by the body itself), and
//! prints one line per sample: `write NS` or `open NS`.
//! Needs a directory preopened as `/`.

use std::fs::File;
use std::io::Write;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let mut file = File::create("/bench.dat").expect("create /bench.dat");
    File::create("/probe.txt").expect("create /probe.txt");
    let block = [7u8; 16];
    let warmup = n / 10 + 100;
    let mut writes = Vec::with_capacity(n);
    let mut opens = Vec::with_capacity(n);
    for i in 0..warmup + n {
        let t = Instant::now();
        file.write_all(&block).expect("write");
        let w = t.elapsed().as_nanos() as u64;
        let t = Instant::now();
        drop(File::open("/probe.txt").expect("open"));
        let o = t.elapsed().as_nanos() as u64;
        if i >= warmup {
            writes.push(w);
            opens.push(o);
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for w in writes {
        writeln!(out, "write {w}").expect("stdout");
    }
    for o in opens {
        writeln!(out, "open {o}").expect("stdout");
    }
}
