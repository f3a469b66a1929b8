//! Churns memory for migrations to land in: `churn ROUNDS`. Each round recurses
//! deeply with an array on the stack of every frame, allocates and frees
//! buffers of many sizes (a working set that keeps changing), and prints one
//! line with a checksum of everything so far. The output depends only on
//! ROUNDS, so a run that was frozen and moved prints exactly what one that was
//! left alone prints.

use std::io::Write;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

/// Recursion with a stack-allocated array per frame.
#[inline(never)]
fn descend(depth: u32, seed: u64) -> u64 {
    let mut frame = [0u64; 24];
    for (i, slot) in frame.iter_mut().enumerate() {
        *slot = seed.rotate_left(i as u32) ^ (depth as u64 * 0x9E3779B97F4A7C15);
    }
    let below = if depth == 0 {
        // A loop without calls at the bottom.
        let mut x = seed | 1;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        }
        x
    } else {
        descend(depth - 1, frame[(depth as usize) % 24] ^ seed)
    };
    frame.iter().fold(below, |acc, v| acc.rotate_left(7) ^ v)
}

fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut rng = Rng(0x853c49e6748fea9b);
    let mut live: Vec<Vec<u8>> = Vec::new();
    let mut sum = 0u64;
    let out = std::io::stdout();
    for round in 0..rounds {
        sum = sum.rotate_left(5) ^ descend(400 + (rng.next() % 200) as u32, rng.next());
        for _ in 0..200 {
            let r = rng.next();
            if live.len() > 64 || (!live.is_empty() && r % 2 == 0) {
                let i = (r >> 8) as usize % live.len();
                let v = live.swap_remove(i);
                sum = sum.wrapping_add(v.iter().map(|b| *b as u64).sum::<u64>());
            } else {
                let len = 1 + (r >> 16) as usize % 16384;
                let fill = (r >> 40) as u8;
                let mut v = vec![fill; len];
                v[len / 2] ^= round as u8;
                live.push(v);
            }
        }
        let held: usize = live.iter().map(|v| v.len()).sum();
        let mut out = out.lock();
        let _ = writeln!(out, "round {round}: {sum:016x} holding {held} bytes");
        let _ = out.flush();
    }
}
