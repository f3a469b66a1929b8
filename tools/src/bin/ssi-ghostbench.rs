//! `ssi-ghostbench`: how fast memory goes into and out of a ghost image, and
//! how big the image is, for memories that are dense and incompressible, dense
//! and compressible, and sparse. Encoding includes finding the all-zero pages;
//! decoding includes checking the image and writing the pages back.

use anyhow::Result;
use clap::Parser;
use ssi_remote::ModuleHash;
use ssi_remote::ghost::{Ghost, MemoryImage, PAGE};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "ssi-ghostbench")]
struct Args {
    /// MiB of memory per case.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Rounds per case (best reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn main() -> Result<()> {
    let args = Args::parse();
    let len = args.mib << 20;
    let module = ModuleHash::of(b"bench");
    let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog 0123456789\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect();
    let mut sparse = vec![0u8; len];
    for page in (0..len / PAGE).step_by(64) {
        sparse[page * PAGE..(page + 1) * PAGE].copy_from_slice(&noise(PAGE));
    }
    println!(
        "{:<34} {:>12} {:>12} {:>14}",
        format!("{} MiB of memory", args.mib),
        "encode",
        "decode",
        "image size"
    );
    for (name, memory) in [
        ("dense, incompressible", noise(len)),
        ("dense, compressible (text)", text),
        ("sparse (1 page in 64 touched)", sparse),
    ] {
        let mut best = (f64::MAX, f64::MAX);
        let mut size = 0;
        for _ in 0..args.rounds {
            let t = Instant::now();
            let ghost = Ghost {
                memories: vec![MemoryImage::capture(&memory)],
                ..Ghost::default()
            };
            let image = ghost.encode(&module);
            let enc = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let back = Ghost::decode(&image, Some(&module))?;
            let mut restored = vec![0u8; memory.len()];
            back.memories[0].restore(&mut restored)?;
            let dec = t.elapsed().as_secs_f64();
            anyhow::ensure!(restored == memory, "{name}: the memory did not come back");
            best = (best.0.min(enc), best.1.min(dec));
            size = image.len();
        }
        let gbs = |s: f64| len as f64 / s / 1e9;
        println!(
            "{:<34} {:>8.2} GB/s {:>8.2} GB/s {:>9.1} MiB",
            name,
            gbs(best.0),
            gbs(best.1),
            size as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
