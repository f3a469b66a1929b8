//! Reads its standard input a byte at a time (one `fd_read` of one byte
//! each, as an unbuffered reader does) to its end, and prints how many bytes
//! it read and their FNV-1a hash.
use std::io::Read;
use std::os::fd::FromRawFd;

fn main() {
    // SAFETY: descriptor 0 is the program's standard input, open for its
    // whole run; this file is its only reader here.
    let mut input = unsafe { std::fs::File::from_raw_fd(0) };
    let (mut count, mut hash) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    let mut byte = [0u8; 1];
    loop {
        match input.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                count += 1;
                hash = (hash ^ u64::from(byte[0])).wrapping_mul(0x0000_0100_0000_01b3);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading stdin: {e}"),
        }
    }
    println!("{count} bytes, hash {hash:016x}");
}
