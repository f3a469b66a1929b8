//! A compute kernel: a sieve, a matrix product and a hash chain; prints checksums.
//! The first argument scales the work (default 1).
fn main() {
    let scale: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    // Sieve of Eratosthenes.
    let n = 2_000_000 * scale as usize;
    let mut composite = vec![false; n + 1];
    let mut count = 0u64;
    for i in 2..=n {
        if !composite[i] {
            count += 1;
            // i * i would overflow a 32-bit usize: compare through division.
            let mut j = if i <= n / i { i * i } else { n + 1 };
            while j <= n {
                composite[j] = true;
                j += i;
            }
        }
    }
    println!("primes below {n}: {count}");
    // Matrix product.
    let m = 160;
    let a: Vec<f64> = (0..m * m).map(|i| ((i * 7 + 3) % 11) as f64 / 11.0).collect();
    let b: Vec<f64> = (0..m * m).map(|i| ((i * 5 + 1) % 13) as f64 / 13.0).collect();
    let mut c = vec![0.0f64; m * m];
    for _ in 0..scale {
        for i in 0..m {
            for k in 0..m {
                let aik = a[i * m + k];
                for j in 0..m {
                    c[i * m + j] += aik * b[k * m + j];
                }
            }
        }
    }
    println!("matrix trace: {:.6}", (0..m).map(|i| c[i * m + i]).sum::<f64>());
    // FNV-1a hash chain.
    let mut h: u64 = 0xcbf29ce484222325;
    for i in 0..(20_000_000 * scale) {
        h ^= i & 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    println!("hash chain: {h:016x}");
}
