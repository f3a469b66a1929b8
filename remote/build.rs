//! The instrumentation's version is a digest of its source: a ghost image
//! holds a stack unwound by one instrumented code and can be rewound only by
//! the same, and the compiled-code cache must not serve code of another.

use std::hash::Hasher;

fn main() {
    let dir = std::path::Path::new("src/instrument");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("src/instrument")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs") && !p.ends_with("tests.rs"))
        .collect();
    files.sort();
    // FNV-1a: stable across Rust versions, unlike the std hasher.
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for f in files {
        h.write(
            f.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.write(&std::fs::read(&f).expect("instrumentation source"));
    }
    let digest = h.finish();
    println!(
        "cargo:rustc-env=SSI_INSTRUMENTATION={}",
        (digest ^ (digest >> 32)) as u32
    );
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
