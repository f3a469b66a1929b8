//! Holds memory for migration benchmarks: `hold MIB dense|sparse`. Dense fills
//! every byte with data that does not compress; sparse touches one byte in
//! every sixteenth 64 KiB page. Prints `ready`, then changes what it holds in
//! a loop without calls until it is killed.

use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let dense = args.next().as_deref() != Some("sparse");
    let mut data = vec![0u8; mib << 20];
    let mut x = 0x9E3779B97F4A7C15u64;
    if dense {
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    } else {
        for page in data.chunks_mut(16 << 16) {
            page[0] = 1;
        }
    }
    println!("ready");
    std::io::stdout().flush().expect("flush");
    // Keeps changing what it holds, and only that: a sparse memory stays
    // sparse.
    let stride = if dense { 1 } else { 16 << 16 };
    let slots = data.len().div_ceil(stride);
    let mut i = 0usize;
    loop {
        i = i.wrapping_mul(31).wrapping_add(7);
        let at = (i % slots) * stride;
        data[at] = data[at].wrapping_add(1);
    }
}
