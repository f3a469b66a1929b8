//! Greets, on both output streams.
fn main() {
    println!("Hello, world!");
    eprintln!("hello on stderr");
}
