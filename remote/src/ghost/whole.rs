//! Images held whole in memory: `Ghost::encode`/`decode`, `read_meta` (what a
//! checkpoint holds besides its memories, without keeping their pages), and
//! `seal_checkpoint` (a body's image with the deputy's state and the module
//! added).

use super::format::{GhostError, GlobalValue, MAGIC, Section, TableImage, Times};
use super::pages::MemoryImage;
use super::reader::{Discard, ImageReader, Part};
use super::writer::ImageWriter;
use crate::code::ModuleHash;

/// What an image says besides its pages: enough to restart a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub module: Option<ModuleHash>,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub deputy: Option<Vec<u8>>,
    pub module_bytes: Option<Vec<u8>>,
    /// As [`Ghost::max_memory`].
    pub max_memory: Option<u64>,
}

impl Ghost {
    /// Encodes the image.
    pub fn encode(&self, module: &ModuleHash) -> Vec<u8> {
        let size = 4096
            + self.stack.len()
            + self
                .memories
                .iter()
                .map(|m| m.stored_bytes() as usize + m.runs.len() * 16)
                .sum::<usize>();
        let write = || -> std::io::Result<Vec<u8>> {
            let mut w = ImageWriter::new(Vec::with_capacity(size), module)?;
            for (i, m) in self.memories.iter().enumerate() {
                w.memory(i as u32, &m.borrowed(), true)?;
            }
            w.globals(&self.globals)?;
            w.tables(&self.tables)?;
            w.stack(&self.stack)?;
            w.clocks(self.clock_offset_ns)?;
            w.command(&self.args, &self.env)?;
            if let Some(d) = &self.deputy {
                w.deputy(d)?;
            }
            if let Some(m) = &self.module_bytes {
                w.module(m)?;
            }
            if let Some(v) = self.instrumentation {
                w.instrumentation(v)?;
            }
            w.times(&self.times)?;
            if let Some(max) = self.max_memory {
                w.limits(max)?;
            }
            Ok(w.finish()?.0)
        };
        // Writing to a vector does not fail.
        write().unwrap_or_default()
    }

    /// Decodes an image; `expected` is the module it must belong to, if known.
    /// The checksum is checked first, so that a flipped bit anywhere is
    /// caught before any section is believed.
    pub fn decode(image: &[u8], expected: Option<&ModuleHash>) -> Result<Ghost, GhostError> {
        let mut r = checked(image, expected)?;
        let mut g = Ghost {
            module: Some(r.module),
            ..Ghost::default()
        };
        while let Some(part) = r.section()? {
            match part {
                Part::Memory { size, .. } => g.memories.push(r.owned_pages(size)?),
                Part::Globals(v) => g.globals = v,
                Part::Tables(v) => g.tables = v,
                Part::Stack(v) => g.stack = v,
                Part::Clocks(v) => g.clock_offset_ns = v,
                Part::Command { args, env } => {
                    g.args = args;
                    g.env = env;
                }
                Part::Deputy(v) => g.deputy = Some(v),
                Part::Module(v) => g.module_bytes = Some(v),
                Part::Instrumentation(v) => g.instrumentation = Some(v),
                Part::Times(v) => g.times = v,
                Part::Limits { max_memory } => g.max_memory = Some(max_memory),
                // (Never from an image held whole: its reader refuses it.)
                Part::RewindCode(_) => {}
            }
        }
        Ok(g)
    }
}

/// A reader of an image held whole, its checksum checked first.
pub fn checked<'a>(
    image: &'a [u8],
    expected: Option<&ModuleHash>,
) -> Result<ImageReader<&'a [u8]>, GhostError> {
    if image.is_empty() {
        return Err(GhostError::Empty);
    }
    let r = ImageReader::new(image, expected)?;
    if image.len() < HEADER + 9 + 8 {
        return Err(GhostError::Truncated(Section::Header));
    }
    let (body, sum) = image.split_at(image.len() - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum_bytes) {
        // A file cut short says so, with how much is missing: its sections
        // say how long it should be.
        return Err(match declared_length(image) {
            Some((expected, exact)) if expected > image.len() as u64 => GhostError::Short {
                expected,
                found: image.len() as u64,
                exact,
            },
            _ => GhostError::Checksum,
        });
    }
    Ok(r)
}

/// The bytes of an image's header: magic, versions, module.
const HEADER: usize = 8 + 2 + 2 + 32;

/// The kind and payload length of the section whose header is at `at`,
/// if the image holds that header whole.
fn section_head(image: &[u8], at: usize) -> Option<(u8, u64)> {
    let head = image.get(at..at.checked_add(9)?)?;
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[1..9]);
    Some((head[0], u64::from_le_bytes(len)))
}

/// The length an image's section headers declare, walking them from the
/// header: exact if the walk reached the end marker, else a lower bound
/// (the image ends inside a section). `None` when the headers make no sense
/// (an unknown kind, a length no image has): corrupt, not cut short.
fn declared_length(image: &[u8]) -> Option<(u64, bool)> {
    // More than any image holds (wasm32 memories are at most 4 GiB each).
    const TOO_LONG: u64 = 64 << 30;
    let mut at = HEADER as u64;
    loop {
        let start = usize::try_from(at).ok()?;
        let Some((kind, len)) = section_head(image, start) else {
            // The next section's header itself is missing.
            return Some((at + 9 + 8, false));
        };
        if kind == 0 {
            return Some((at + 9 + 8, true));
        }
        if Section::of_kind(kind).is_none() || len > TOO_LONG {
            return None;
        }
        at = at.checked_add(9)?.checked_add(len)?;
        if at > image.len() as u64 {
            return Some((at + 9 + 8, false));
        }
    }
}

/// Whether an image held whole has a rewind code section, which only a
/// move's image connection may carry (a checkpoint file never does): its
/// section headers are walked, its pages not read. A node that streams an
/// image held whole to another refuses one that has.
pub fn carries_code(image: &[u8]) -> bool {
    let mut at = HEADER;
    while let Some((kind, len)) = section_head(image, at) {
        if kind == 0 {
            return false;
        }
        if kind == Section::RewindCode.kind() {
            return true;
        }
        let next = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(9)?.checked_add(len));
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    false
}

/// What an image held whole says besides its pages (which are skipped).
pub fn read_meta(image: &[u8]) -> Result<Meta, GhostError> {
    let mut r = checked(image, None)?;
    let mut m = Meta {
        module: Some(r.module),
        ..Meta::default()
    };
    let mut scratch = Discard(Vec::new());
    while let Some(part) = r.section()? {
        match part {
            Part::Memory { .. } => r.pages(&mut scratch)?,
            Part::Command { args, env } => {
                m.args = args;
                m.env = env;
            }
            Part::Deputy(v) => m.deputy = Some(v),
            Part::Module(v) => m.module_bytes = Some(v),
            Part::Limits { max_memory } => m.max_memory = Some(max_memory),
            _ => {}
        }
    }
    Ok(m)
}

/// Turns a body's image into a checkpoint: adds the deputy's state and the
/// module, and seals it again. The image is checked first (its checksum), so
/// a damaged image is never sealed as if it were sound.
pub fn seal_checkpoint(
    image: Vec<u8>,
    deputy: &[u8],
    module: &[u8],
) -> Result<Vec<u8>, GhostError> {
    const TAIL: usize = 1 + 8 + 8;
    if image.len() < MAGIC.len() + 4 + 32 + TAIL {
        return Err(GhostError::Truncated(Section::Header));
    }
    let (body, sum) = image.split_at(image.len() - 8);
    let mut sum_bytes = [0u8; 8];
    sum_bytes.copy_from_slice(sum);
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum_bytes) {
        return Err(GhostError::Checksum);
    }
    let mut out = image;
    out.truncate(out.len() - TAIL);
    out.reserve(deputy.len() + module.len() + 2 * 9 + TAIL);
    for (s, payload) in [(Section::Deputy, deputy), (Section::Module, module)] {
        out.push(s.kind());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out.push(0);
    out.extend_from_slice(&0u64.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// A frozen body, owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ghost {
    pub module: Option<ModuleHash>,
    pub memories: Vec<MemoryImage>,
    pub globals: Vec<GlobalValue>,
    pub tables: Vec<TableImage>,
    pub stack: Vec<u8>,
    pub clock_offset_ns: u64,
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub deputy: Option<Vec<u8>>,
    /// The module itself (checkpoints carry it).
    pub module_bytes: Option<Vec<u8>>,
    /// The version of the instrumentation that unwound the stack.
    pub instrumentation: Option<u32>,
    pub times: Times,
    /// The most bytes a memory of the guest's may reach, if it is bounded.
    pub max_memory: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ghost::format::*;
    use crate::ghost::pages::*;
    use crate::ghost::reader::*;

    fn module() -> ModuleHash {
        ModuleHash::of(b"some module")
    }

    fn sample() -> Ghost {
        let mut memory = vec![0u8; 10 * PAGE];
        memory[3] = 7;
        memory[5 * PAGE + 100] = 9;
        memory[6 * PAGE..7 * PAGE].fill(0xAB);
        Ghost {
            module: Some(module()),
            memories: vec![MemoryImage::capture(&memory)],
            globals: vec![
                GlobalValue::I32(-5),
                GlobalValue::I64(1 << 40),
                GlobalValue::F32(1.5f32.to_bits()),
                GlobalValue::F64(2.25f64.to_bits()),
                GlobalValue::V128(u128::MAX - 3),
            ],
            tables: vec![TableImage {
                index: 0,
                elements: vec![None, Some(3), Some(9)],
            }],
            stack: b"unwound frames".to_vec(),
            clock_offset_ns: 123_456_789,
            args: vec![b"prog.wasm".to_vec(), b"x".to_vec()],
            env: vec![b"A=1".to_vec()],
            deputy: Some(b"deputy state".to_vec()),
            module_bytes: None,
            instrumentation: Some(3),
            times: Times {
                cpu_ns: 42_000_000,
                sleep_until_ns: Some(200_000_000),
            },
            max_memory: Some(3 * PAGE as u64),
        }
    }

    #[test]
    fn a_sealed_checkpoint_carries_deputy_and_module() {
        let g = Ghost {
            deputy: None,
            ..sample()
        };
        let sealed = seal_checkpoint(g.encode(&module()), b"{}", b"\0asm").expect("seals");
        let back = Ghost::decode(&sealed, Some(&module())).expect("decodes");
        assert_eq!(back.deputy.as_deref(), Some(&b"{}"[..]));
        assert_eq!(back.module_bytes.as_deref(), Some(&b"\0asm"[..]));
        assert_eq!(back.memories, g.memories);
        let meta = read_meta(&sealed).expect("reads");
        assert_eq!(meta.max_memory, Some(3 * PAGE as u64));
        let mut damaged = g.encode(&module());
        damaged[60] ^= 1;
        assert_eq!(
            seal_checkpoint(damaged, b"{}", b""),
            Err(GhostError::Checksum)
        );
    }

    #[test]
    fn round_trip() {
        let g = sample();
        let image = g.encode(&module());
        assert_eq!(memory_bytes(&image), 10 * PAGE as u64);
        assert_eq!(Ghost::decode(&image, Some(&module())), Ok(g.clone()));
        let mut memory = vec![0u8; 10 * PAGE];
        g.memories[0].restore(&mut memory).expect("restore");
        assert_eq!(memory[3], 7);
        assert_eq!(memory[5 * PAGE + 100], 9);
        assert_eq!(memory[6 * PAGE + 1], 0xAB);
    }

    #[test]
    fn incompressible_pages_are_stored_as_they_are() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..3 * PAGE)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let g = Ghost {
            memories: vec![MemoryImage::capture(&noise)],
            ..Ghost::default()
        };
        let image = g.encode(&module());
        assert!(image.len() < noise.len() + 200, "{}", image.len());
        let back = Ghost::decode(&image, None).expect("decodes");
        let mut memory = vec![0u8; noise.len()];
        back.memories[0].restore(&mut memory).expect("restore");
        assert_eq!(memory, noise);
    }

    #[test]
    fn zero_pages_are_not_stored() {
        let memory = vec![0u8; 1024 * PAGE];
        let sparse = MemoryImage::capture(&memory);
        assert!(sparse.runs.is_empty());
        let small = Ghost {
            memories: vec![sparse],
            ..Ghost::default()
        }
        .encode(&module());
        // 64 MiB of zeros is a few dozen bytes.
        assert!(small.len() < 200, "{}", small.len());
        let mut touched = memory.clone();
        touched[500 * PAGE] = 1;
        let img = MemoryImage::capture(&touched);
        assert_eq!(img.stored_bytes(), PAGE as u64);
    }

    #[test]
    fn bad_images_get_named_errors() {
        let image = sample().encode(&module());
        assert_eq!(Ghost::decode(&[], None), Err(GhostError::Empty));
        assert_eq!(
            Ghost::decode(b"not an image at all", None),
            Err(GhostError::BadMagic)
        );
        // Truncated anywhere: it says so, with how long it should be.
        assert!(matches!(
            Ghost::decode(&image[..10], None),
            Err(GhostError::Truncated(_))
        ));
        for cut in [80, image.len() / 2, image.len() - 1] {
            let e = Ghost::decode(&image[..cut], None).expect_err("truncated");
            match e {
                GhostError::Short {
                    expected,
                    found,
                    exact,
                } => {
                    assert_eq!(found, cut as u64);
                    assert!(expected > found);
                    if exact {
                        assert_eq!(expected, image.len() as u64, "cut at {cut}");
                    } else {
                        assert!(expected <= image.len() as u64, "cut at {cut}");
                    }
                }
                e => panic!("cut at {cut}: {e}"),
            }
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        let e = Ghost::decode(&image[..image.len() - 1], None).expect_err("truncated");
        assert_eq!(
            e.to_string(),
            format!(
                "the image is truncated: {} bytes of {}",
                image.len() - 1,
                image.len()
            )
        );
        // A flipped bit anywhere after the version.
        for at in [13, 50, image.len() / 2, image.len() - 9] {
            let mut flipped = image.clone();
            flipped[at] ^= 0x10;
            assert_eq!(
                Ghost::decode(&flipped, None),
                Err(GhostError::Checksum),
                "bit at {at}"
            );
        }
        let mut newer = image.clone();
        newer[8] = MAJOR as u8 + 1;
        assert_eq!(
            Ghost::decode(&newer, None),
            Err(GhostError::Version {
                major: MAJOR + 1,
                minor: MINOR
            })
        );
        let other = ModuleHash::of(b"another module");
        assert!(matches!(
            Ghost::decode(&image, Some(&other)),
            Err(GhostError::WrongModule { .. })
        ));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        // A well-formed image whose globals section claims a billion entries.
        let mut o = Vec::new();
        o.extend_from_slice(MAGIC);
        o.extend_from_slice(&MAJOR.to_le_bytes());
        o.extend_from_slice(&MINOR.to_le_bytes());
        o.extend_from_slice(&module().0);
        o.push(Section::Globals.kind());
        o.extend_from_slice(&4u64.to_le_bytes());
        o.extend_from_slice(&1_000_000_000u32.to_le_bytes());
        o.push(0);
        o.extend_from_slice(&0u64.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&o);
        o.extend_from_slice(&sum.to_le_bytes());
        let e = Ghost::decode(&o, None).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "the image's globals section is corrupt: count 1000000000 is over the limit 1048576"
        );
        // A stack section that claims more bytes than any stack: refused
        // before reading, from a stream.
        let mut o = Vec::new();
        o.extend_from_slice(MAGIC);
        o.extend_from_slice(&MAJOR.to_le_bytes());
        o.extend_from_slice(&MINOR.to_le_bytes());
        o.extend_from_slice(&module().0);
        o.push(Section::Stack.kind());
        o.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let mut r = ImageReader::new(&o[..], None).expect("header");
        assert!(matches!(
            r.section(),
            Err(GhostError::Corrupt {
                section: Section::Stack,
                ..
            })
        ));
    }

    #[test]
    fn a_stream_is_read_as_it_comes_and_checked_at_its_end() {
        let g = sample();
        let image = g.encode(&module());
        // Through a reader that hands out a few bytes at a time.
        struct Trickle<'a>(&'a [u8]);
        impl std::io::Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(7);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = ImageReader::new(Trickle(&image), Some(&module())).expect("header");
        let mut memories = Vec::new();
        while let Some(part) = r.section().expect("a section") {
            if let Part::Memory { size, .. } = part {
                memories.push(r.owned_pages(size).expect("pages"));
            }
        }
        assert_eq!(memories, g.memories);
        // A flipped bit is found at the end, whatever was read before.
        let mut flipped = image.clone();
        flipped[image.len() / 2] ^= 4;
        let mut r = ImageReader::new(Trickle(&flipped), None).expect("header");
        let end = loop {
            match r.section() {
                Ok(Some(Part::Memory { size, .. })) => {
                    if let Err(e) = r.owned_pages(size) {
                        break e;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("a damaged stream was taken"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(end, GhostError::Checksum | GhostError::Corrupt { .. }),
            "{end}"
        );
        // Cut short: truncated, naming where.
        let mut r = ImageReader::new(&image[..100], None).expect("header");
        let cut = loop {
            match r.section() {
                Ok(Some(Part::Memory { size, .. })) => {
                    if let Err(e) = r.owned_pages(size) {
                        break e;
                    }
                }
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(cut, GhostError::Truncated(Section::Memory));
    }

    #[test]
    fn pages_the_kernel_never_mapped_are_zero_without_being_read() {
        // A large zeroed allocation is mapped lazily: touch two pages only.
        let mut memory = vec![0u8; 4096 * PAGE];
        memory[17 * PAGE + 5] = 1;
        memory[4000 * PAGE] = 2;
        let runs = page_runs(&memory);
        assert_eq!(runs.runs.len(), 2);
        assert_eq!(runs.runs[0].0, 17);
        assert_eq!(runs.runs[1].0, 4000);
        if let Some(mapped) = mapped_pages(&memory) {
            assert!(mapped[17] && mapped[4000]);
            assert!(
                mapped.iter().filter(|m| **m).count() < 64,
                "most pages unmapped"
            );
        }
    }

    #[test]
    fn meta_is_read_without_the_pages() {
        let g = sample();
        let m = read_meta(&g.encode(&module())).expect("meta");
        assert_eq!(m.args, g.args);
        assert_eq!(m.env, g.env);
        assert_eq!(m.deputy, g.deputy);
        assert_eq!(m.module, Some(module()));
    }

    /// Compiled rewind copies go with a move's image, and are read only by
    /// a reader told to accept them: an image held whole (a checkpoint
    /// file) that carries any is refused, naming the section.
    #[test]
    fn compiled_code_is_read_only_from_a_move() {
        let sent = vec![
            RewindCode {
                functions: vec![3, 17],
                cost_ms: 48_000,
                code: vec![0xC0; 1000],
            },
            RewindCode {
                functions: vec![9],
                cost_ms: 250,
                code: b"more code".to_vec(),
            },
        ];
        let mut w = ImageWriter::new(Vec::new(), &module()).expect("header");
        w.instrumentation(1).expect("instrumentation");
        w.stack(&[1, 2, 3, 4]).expect("stack");
        w.rewind_code(&sent).expect("code");
        let (image, _) = w.finish().expect("finish");
        assert!(carries_code(&image));
        assert!(!carries_code(&sample().encode(&module())));
        // Held whole: refused, whatever reads it.
        for e in [
            Ghost::decode(&image, None)
                .map(|_| ())
                .expect_err("decoded"),
            read_meta(&image).map(|_| ()).expect_err("meta"),
        ] {
            assert!(
                e.to_string().contains("rewind code section")
                    && e.to_string().contains("only with a move"),
                "{e}"
            );
        }
        // From a move's connection: read as written.
        let mut r = ImageReader::new(&image[..], Some(&module()))
            .expect("header")
            .accepting_code();
        let mut got = None;
        while let Some(part) = r.section().expect("section") {
            if let Part::RewindCode(code) = part {
                got = Some(code);
            }
        }
        assert_eq!(got, Some(sent));
        // No code: no section.
        let mut w = ImageWriter::new(Vec::new(), &module()).expect("header");
        w.rewind_code(&[]).expect("nothing");
        let (image, _) = w.finish().expect("finish");
        assert!(!carries_code(&image));
    }
}
