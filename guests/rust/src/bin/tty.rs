//! Prints what the program's standard streams are (2 = a terminal, 0 = a pipe
//! or unknown), then echoes its input line by line until end of input; a
//! line `stat` prints what the streams are again.

use std::io::BufRead;

fn streams() {
    for fd in 0..3 {
        // SAFETY: fd_fdstat_get only writes the returned record.
        let stat = unsafe { wasi::fd_fdstat_get(fd) }.expect("fd_fdstat_get");
        println!("fd {fd}: filetype {}", stat.fs_filetype.raw());
    }
}

fn main() {
    streams();
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read a line");
        if line == "stat" {
            streams();
        }
        println!("echo: {line}");
    }
}
