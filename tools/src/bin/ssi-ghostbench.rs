//! `ssi-ghostbench`: how fast memory goes into and out of a ghost image, and
//! how big the image is, for memories that are dense and incompressible, dense
//! and compressible, and sparse, written with and without LZ4. Writing
//! includes finding the all-zero pages; reading includes checking every
//! length and the checksum and putting the pages back in a memory.
//!
//! With `--guests`, also the freeze latency of a body in a loop without calls
//! (the `spin` guest), in this process: from `Control::freeze` to its image
//! written (memory, globals and the unwound stack), and from there to running
//! again (`Body::resume`).

use anyhow::Result;
use clap::Parser;
use ssi_remote::ModuleHash;
use ssi_remote::ghost::{GhostError, ImageReader, ImageWriter, PAGE, PageSink, Part, page_runs};
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
    /// Directory holding the built guests (spin.wasm): measure freeze latency.
    #[arg(long)]
    guests: Option<std::path::PathBuf>,
    /// Freezes measured.
    #[arg(long, default_value_t = 200)]
    freezes: usize,
}

/// Freezes a `spin` body again and again at moments spread over its loop.
fn freeze_latency(spin: &std::path::Path, freezes: usize) -> Result<()> {
    use ssi_deputy::{Deputy, Stdio};
    use ssi_remote::{Body, BodySpec, Exit, LocalLink, Runtime};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    let runtime = Runtime::new(None)?;
    let program = runtime.load(&std::fs::read(spin)?)?;
    let null = || Box::new(wasi_common::pipe::WritePipe::new(std::io::sink()));
    let deputy = Deputy::new(
        Stdio {
            stdin: Box::new(wasi_common::pipe::ReadPipe::from(Vec::new())),
            stdout: null(),
            stderr: null(),
        },
        Vec::new(),
    )?;
    let link = Box::new(LocalLink::new(Arc::new(Mutex::new(deputy))));
    let spec = BodySpec {
        args: vec!["spin.wasm".into(), "0".into()],
        env: Vec::new(),
        unknown_imports_trap: false,
        max_memory_size: None,
    };
    let mut body = Body::new(&runtime, &program, &spec, link)?;
    let control = body.control();
    let (asked_tx, asked) = std::sync::mpsc::channel::<Instant>();
    let freezer = std::thread::spawn(move || {
        for _ in 0..freezes {
            std::thread::sleep(Duration::from_millis(2));
            let _ = asked_tx.send(Instant::now());
            control.freeze();
        }
    });
    let mut frozen = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut again = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut image = Vec::new();
    for _ in 0..freezes {
        let exit = body.run();
        let Exit::Frozen = exit else {
            anyhow::bail!("the body ended: {exit:?}");
        };
        image.clear();
        image = body.write_image(std::mem::take(&mut image), false)?.0;
        let at = Instant::now();
        let t = asked.recv()?;
        frozen.record(at.duration_since(t).as_nanos() as u64)?;
        body.resume()?;
    }
    let _ = freezer.join();
    // Resumed with the flag already up: the body rewinds its frames
    // and unwinds again at the first poll point it reaches. Resume to frozen
    // again bounds the time a rewind takes.
    for _ in 0..freezes {
        let control = body.control();
        control.freeze();
        let t = Instant::now();
        let exit = body.run();
        let Exit::Frozen = exit else {
            anyhow::bail!("the body ended: {exit:?}");
        };
        again.record(t.elapsed().as_nanos() as u64)?;
        body.resume()?;
    }
    let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "\nfreeze latency, `spin` looping without calls ({freezes} freezes): request to image p50 {:.1}µs p99 {:.1}µs max {:.1}µs (target ≤ 1 ms); resumed until frozen again at its next poll point (a rewind and an unwind) p50 {:.1}µs p99 {:.1}µs",
        us(&frozen, 0.5),
        us(&frozen, 0.99),
        frozen.max() as f64 / 1e3,
        us(&again, 0.5),
        us(&again, 0.99)
    );
    Ok(())
}

/// An image of `memory` alone, written as a body writes one to a connection:
/// the all-zero pages found, then the rest streamed from where it lies.
fn write(memory: &[u8], module: &ModuleHash, compress: bool) -> Result<Vec<u8>> {
    let runs = page_runs(memory);
    let mut w = ImageWriter::new(Vec::with_capacity(memory.len() + 4096), module)?;
    w.memory(0, &runs, compress)?;
    w.stack(&[])?;
    Ok(w.finish()?.0)
}

/// Reads `image` as it comes, its pages straight into `memory`.
fn read(image: &[u8], module: &ModuleHash, memory: &mut [u8]) -> Result<()> {
    struct Into<'a>(&'a mut [u8]);
    impl PageSink for Into<'_> {
        fn run(&mut self, first: u64, count: u32) -> Result<&mut [u8], GhostError> {
            let from = first as usize * PAGE;
            let to = from + count as usize * PAGE;
            self.0.get_mut(from..to).ok_or_else(|| GhostError::Corrupt {
                section: ssi_remote::ghost::Section::Memory,
                what: "pages beyond the memory".into(),
            })
        }
    }
    let mut r = ImageReader::new(image, Some(module))?;
    while let Some(part) = r.section()? {
        if let Part::Memory { .. } = part {
            r.pages(&mut Into(memory))?;
        }
    }
    Ok(())
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
        "{:<32} {:>11} {:>11} {:>11} {:>11} {:>11}",
        format!("{} MiB of memory", args.mib),
        "write lz4",
        "write raw",
        "read",
        "image lz4",
        "image raw"
    );
    for (name, memory) in [
        ("dense, incompressible", noise(len)),
        ("dense, compressible (text)", text),
        ("sparse (1 page in 64 touched)", sparse),
    ] {
        let mut best = [f64::MAX; 3];
        let mut sizes = [0u64; 2];
        for _ in 0..args.rounds {
            for (i, compress) in [true, false].into_iter().enumerate() {
                let t = Instant::now();
                let image = write(&memory, &module, compress)?;
                best[i] = best[i].min(t.elapsed().as_secs_f64());
                sizes[i] = image.len() as u64;
                if compress {
                    let t = Instant::now();
                    let mut restored = vec![0u8; memory.len()];
                    read(&image, &module, &mut restored)?;
                    best[2] = best[2].min(t.elapsed().as_secs_f64());
                    anyhow::ensure!(restored == memory, "{name}: the memory did not come back");
                }
            }
        }
        let gbs = |s: f64| format!("{:.2} GB/s", len as f64 / s / 1e9);
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        println!(
            "{:<32} {:>11} {:>11} {:>11} {:>11} {:>11}",
            name,
            gbs(best[0]),
            gbs(best[1]),
            gbs(best[2]),
            mib(sizes[0]),
            mib(sizes[1])
        );
    }
    if let Some(dir) = &args.guests {
        freeze_latency(&dir.join("spin.wasm"), args.freezes)?;
    }
    Ok(())
}
