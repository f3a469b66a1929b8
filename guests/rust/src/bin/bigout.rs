//! Writes the number of mebibytes given as first argument (default 4) to stdout,
//! in 64 KiB writes of a repeating pattern.
use std::io::Write;

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let chunk: Vec<u8> = (0..65536u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = std::io::stdout().lock();
    for _ in 0..mib * 16 {
        out.write_all(&chunk).expect("stdout");
    }
    out.flush().expect("flush");
}
