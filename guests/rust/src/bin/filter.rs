//! A stdin→stdout filter: numbers and upper-cases every line, reports counts on stderr.
use std::io::{BufRead, Write};

fn main() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let (mut lines, mut bytes) = (0usize, 0usize);
    for line in stdin.lock().lines() {
        let line = line.expect("stdin is text");
        lines += 1;
        bytes += line.len() + 1;
        writeln!(out, "{lines:5}: {}", line.to_uppercase()).expect("stdout");
        out.flush().expect("flush");
    }
    eprintln!("{lines} lines, {bytes} bytes");
}
