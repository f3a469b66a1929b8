//! Panics (which traps: `unreachable`) after printing a line.
fn main() {
    println!("about to fail");
    let v: Vec<u32> = std::env::args().skip(5).map(|a| a.len() as u32).collect();
    // Index out of bounds at run time: a panic, then an abort.
    println!("{}", v[3]);
}
