//! Asks for a name on a line it does not end, as an interactive program
//! does, then greets whoever answers.
use std::io::{BufRead, Write};

fn main() {
    let mut out = std::io::stdout().lock();
    write!(out, "name? ").expect("stdout");
    out.flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    writeln!(out, "hello {}", line.trim_end()).expect("stdout");
}
