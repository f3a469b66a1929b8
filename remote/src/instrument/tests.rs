//! The instrumentation on its own: instrumented modules are valid, and a
//! program unwound at every poll point it reaches — each time moved into a
//! fresh instance through its memories, globals and unwind stack, as a
//! migration moves it — computes exactly what it computes when left alone.

use super::*;
use wasmtime::{Caller, Config, Engine, Extern, Instance, Linker, Module, Store, Val};

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid text")
}

fn validate(wasm: &[u8]) {
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(wasm)
        .expect("the instrumented module is valid");
}

#[derive(Default)]
struct Host {
    out: Vec<i64>,
    /// Reads completed.
    reads: i32,
    /// A read unwinds before it completes (as a read cut short by a freeze).
    unwind_reads: bool,
    instrumented: bool,
    instance: Option<Instance>,
}

/// An export of the program's instance (the caller may be a module of
/// rewind copies linked to it).
fn export(c: &mut Caller<'_, Host>, name: &str) -> Extern {
    let instance = c.data().instance.expect("an instance");
    instance.get_export(&mut *c, name).expect("an export")
}

fn global(c: &mut Caller<'_, Host>, name: &str) -> wasmtime::Global {
    export(c, name).into_global().expect("global")
}

/// `fd_read` stand-in: an answer that depends on its arguments and on the
/// reads before it; with `unwind_reads`, it first unwinds (pushing its
/// marker), and answers when the rewind calls it again.
fn fake_read(mut c: Caller<'_, Host>, a: i32, b: i32, x: i32, d: i32) -> i32 {
    if c.data().instrumented {
        let state = global(&mut c, STATE_GLOBAL);
        let ptr = global(&mut c, PTR_GLOBAL);
        let stack = export(&mut c, STACK_MEMORY).into_memory().expect("stack");
        let top = ptr.get(&mut c).unwrap_i32() as usize;
        match state.get(&mut c).unwrap_i32() {
            REWINDING => {
                let m = &stack.data(&c)[top - 8..top];
                assert_eq!(m, [0, 0, 0, 0, 1, 0, 0, 0], "the read's marker");
                ptr.set(&mut c, Val::I32(top as i32 - 8)).expect("ptr");
                state.set(&mut c, Val::I32(NORMAL)).expect("state");
            }
            NORMAL if c.data().unwind_reads => {
                if stack.data_size(&c) < top + 8 {
                    stack.grow(&mut c, 1).expect("grow");
                }
                stack.data_mut(&mut c)[top..top + 8].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
                ptr.set(&mut c, Val::I32(top as i32 + 8)).expect("ptr");
                state.set(&mut c, Val::I32(UNWINDING)).expect("state");
                return 0;
            }
            _ => {}
        }
    }
    c.data_mut().reads += 1;
    a * 7 + b * 3 + x + d + c.data().reads * 1000
}

fn engine() -> Engine {
    let mut config = Config::new();
    config
        .wasm_threads(true)
        .shared_memory(true)
        .wasm_multi_memory(true)
        .wasm_exceptions(true)
        .wasm_branch_hinting(true);
    Engine::new(&config).expect("engine")
}

fn linker(engine: &Engine) -> Linker<Host> {
    let mut l = Linker::new(engine);
    l.func_wrap("env", "out", |mut c: Caller<'_, Host>, v: i64| {
        c.data_mut().out.push(v)
    })
    .expect("out");
    l.func_wrap("wasi_snapshot_preview1", "fd_read", fake_read)
        .expect("read");
    l
}

/// The program's output, run as it is.
fn reference(wasm: &[u8]) -> Vec<i64> {
    let engine = engine();
    let module = Module::new(&engine, wasm).expect("module");
    let mut store = Store::new(&engine, Host::default());
    let instance = linker(&engine)
        .instantiate(&mut store, &module)
        .expect("instance");
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .expect("_start");
    start.call(&mut store, ()).expect("runs");
    store.into_data().out
}

/// A frozen body: what moves to a new instance.
struct Image {
    memories: Vec<Vec<u8>>,
    globals: Vec<Val>,
    stack: Vec<u8>,
}

fn exported_memories(store: &mut Store<Host>, i: &Instance) -> Vec<wasmtime::Memory> {
    (0..)
        .map_while(|n| i.get_memory(&mut *store, &memory_export(n)))
        .collect()
}

fn exported_globals(
    store: &mut Store<Host>,
    i: &Instance,
    globals: &[u32],
) -> Vec<wasmtime::Global> {
    globals
        .iter()
        .map(|g| {
            i.get_global(&mut *store, &global_export(*g))
                .expect("global")
        })
        .collect()
}

/// Runs the instrumented program with the flag always up, so that every
/// poll point unwinds; each unwound body is moved into a fresh instance
/// (in a fresh store) and rewound. Returns the output and the moves made.
fn tortured(wasm: &[u8], unwind_reads: bool) -> (Vec<i64>, usize) {
    tortured_with(wasm, unwind_reads, true, false)
}

/// As [`tortured`]; `counted: false` has every loop header read the flag;
/// `on_demand` runs the runnable part and puts each stack back with a
/// module of rewind copies made for it ([`rewind_module`]).
fn tortured_with(
    wasm: &[u8],
    unwind_reads: bool,
    counted: bool,
    on_demand: bool,
) -> (Vec<i64>, usize) {
    let ins = instrument_with(wasm, counted, !on_demand, MAX_FAST_CODE).expect("instrumented");
    let prepared = on_demand.then(|| on_demand::prepare_with(wasm, counted).expect("prepared"));
    let run = if on_demand { &ins.runnable } else { &ins.wasm };
    validate(run);
    let engine = engine();
    let module = Module::new(&engine, run).expect("module");
    let l = linker(&engine);
    let mut host = Host {
        unwind_reads,
        instrumented: true,
        ..Host::default()
    };
    let mut image: Option<Image> = None;
    let mut moves = 0;
    // Modules of rewind copies made so far, and each function's.
    let mut compiled: Vec<Module> = Vec::new();
    let mut module_of: std::collections::HashMap<u32, usize> = Default::default();
    loop {
        let mut store = Store::new(&engine, host);
        let instance = l.instantiate(&mut store, &module).expect("instance");
        store.data_mut().instance = Some(instance);
        let flag = instance
            .get_shared_memory(&mut store, FLAG_MEMORY)
            .expect("flag");
        // SAFETY: the flag memory is alive; nothing else touches it now.
        unsafe { *(flag.data()[0].get()) = 1 };
        let state = instance
            .get_global(&mut store, STATE_GLOBAL)
            .expect("state");
        let ptr = instance.get_global(&mut store, PTR_GLOBAL).expect("ptr");
        let stack = instance
            .get_memory(&mut store, STACK_MEMORY)
            .expect("stack");
        let memories = exported_memories(&mut store, &instance);
        let globals = exported_globals(&mut store, &instance, &ins.globals);
        let entry = if let Some(img) = image.take() {
            for (m, bytes) in memories.iter().zip(&img.memories) {
                let have = m.data_size(&store);
                if bytes.len() > have {
                    m.grow(&mut store, ((bytes.len() - have) / 65536) as u64)
                        .expect("grow");
                }
                m.data_mut(&mut store)[..bytes.len()].copy_from_slice(bytes);
            }
            for (g, v) in globals.iter().zip(img.globals) {
                g.set(&mut store, v).expect("global");
            }
            let have = stack.data_size(&store);
            if img.stack.len() > have {
                stack
                    .grow(&mut store, (img.stack.len() - have).div_ceil(65536) as u64)
                    .expect("grow");
            }
            stack.data_mut(&mut store)[..img.stack.len()].copy_from_slice(&img.stack);
            ptr.set(&mut store, Val::I32(img.stack.len() as i32))
                .expect("ptr");
            state.set(&mut store, Val::I32(REWINDING)).expect("state");
            match &prepared {
                Some(p) => {
                    let functions = stack_functions(wasm, p, &img.stack).expect("the stack");
                    // (Each function's copy made once, in a module with the
                    // others missing then, as a node does.)
                    let missing: Vec<u32> = functions
                        .iter()
                        .copied()
                        .filter(|f| !module_of.contains_key(f))
                        .collect();
                    if !missing.is_empty() {
                        let r = rewind_module(wasm, p, &missing).expect("rewind module");
                        validate(&r);
                        for f in &missing {
                            module_of.insert(*f, compiled.len());
                        }
                        compiled.push(Module::new(&engine, &r).expect("rewind module compiles"));
                    }
                    let needed: std::collections::BTreeSet<usize> =
                        functions.iter().map(|f| module_of[f]).collect();
                    for m in needed {
                        crate::rewinds::link_rewinds(&mut store, &instance, &compiled[m])
                            .expect("rewind module links");
                    }
                    Some(
                        crate::rewinds::rewind_start(
                            &mut store,
                            &instance,
                            p.start().expect("start"),
                        )
                        .expect("the rewind copy of `_start`"),
                    )
                }
                None => None,
            }
        } else {
            None
        };
        let f = match entry {
            Some(start) => Ok(start),
            None if moves > 0 => instance.get_typed_func::<(), ()>(&mut store, REWIND),
            None => instance.get_typed_func::<(), ()>(&mut store, "_start"),
        }
        .expect("entry");
        f.call(&mut store, ()).expect("runs");
        if state.get(&mut store).unwrap_i32() != UNWINDING {
            assert_eq!(state.get(&mut store).unwrap_i32(), NORMAL);
            return (store.into_data().out, moves);
        }
        moves += 1;
        let top = ptr.get(&mut store).unwrap_i32() as usize;
        assert!(moves < 1_000_000, "no progress");
        image = Some(Image {
            memories: memories.iter().map(|m| m.data(&store).to_vec()).collect(),
            globals: globals.iter().map(|g| g.get(&mut store)).collect(),
            stack: stack.data(&store)[..top].to_vec(),
        });
        host = store.into_data();
    }
}

/// The program's output is the same unwound at every poll point it reaches
/// (every loop header, then as built, where stepping loops read the flag
/// now and then), and at every read too. Returns the moves made when every
/// loop header unwinds.
fn same_when_tortured(text: &str) -> usize {
    let wasm = wat(text);
    let expected = reference(&wasm);
    assert!(!expected.is_empty());
    // A first launch makes the runnable part alone: the same module.
    let both = instrument(&wasm).expect("instrumented");
    assert!(
        instrument_runnable(&wasm).expect("runnable") == both.runnable,
        "the runnable part made alone differs"
    );
    let (out, moves) = tortured_with(&wasm, false, false, false);
    assert_eq!(out, expected, "unwound at every poll point");
    let (out, _) = tortured_with(&wasm, true, false, false);
    assert_eq!(out, expected, "unwound at every poll point and every read");
    let (out, _) = tortured(&wasm, false);
    assert_eq!(out, expected, "unwound at the poll points as built");
    let (out, _) = tortured(&wasm, true);
    assert_eq!(
        out, expected,
        "unwound at the poll points as built and every read"
    );
    let (out, _) = tortured_with(&wasm, true, false, true);
    assert_eq!(
        out, expected,
        "unwound at every poll point and read, put back with rewind copies made on demand"
    );
    moves
}

const IMPORTS: &str = r#"
    (import "env" "out" (func $out (param i64)))
    (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
"#;

#[test]
fn loops_locals_of_every_type_and_values_under_calls_survive() {
    let moves = same_when_tortured(&format!(
        r#"(module {IMPORTS}
        (memory 1)
        (global $sp (mut i32) (i32.const 4096))
        (global $acc (mut i64) (i64.const 7))
        (func $sum (param $n i32) (result i64) (local $i i32) (local $s i64) (local $f f64) (local $g f32) (local $v v128)
            (loop $l
                (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $i))))
                (local.set $f (f64.add (local.get $f) (f64.const 0.5)))
                (local.set $g (f32.add (local.get $g) (f32.const 0.25)))
                (local.set $v (i32x4.add (local.get $v) (i32x4.splat (local.get $i))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
            (i64.add
                (i64.add (local.get $s) (i64.trunc_f64_s (local.get $f)))
                (i64.add (i64.trunc_f32_s (local.get $g))
                    (i64.extend_i32_u (i32x4.extract_lane 3 (local.get $v))))))
        (func (export "_start") (local $k i32) (local $x i64)
            (loop $outer
                ;; values under the calls' arguments
                (local.set $x (i64.mul
                    (i64.add (i64.extend_i32_u (local.get $k)) (call $sum (i32.add (local.get $k) (i32.const 3))))
                    (i64.sub (call $sum (i32.const 5)) (global.get $acc))))
                (global.set $acc (i64.add (global.get $acc) (local.get $x)))
                (global.set $sp (i32.sub (global.get $sp) (i32.const 16)))
                (i64.store (global.get $sp) (local.get $x))
                (call $out (i64.load (global.get $sp)))
                (call $out (i64.extend_i32_u
                    (call $read (local.get $k) (i32.const 2) (i32.const 3) (i32.const 4))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br_if $outer (i32.lt_u (local.get $k) (i32.const 12))))
            (call $out (global.get $acc))
            (call $out (i64.extend_i32_u (global.get $sp)))))"#
    ));
    assert!(moves > 100, "{moves} moves");
}

#[test]
fn recursion_branches_and_block_results_survive() {
    same_when_tortured(&format!(
        r#"(module {IMPORTS}
        (memory 1)
        (global $sp (mut i32) (i32.const 60000))
        (func $fib (param $n i32) (result i64)
            (if (result i64) (i32.lt_u (local.get $n) (i32.const 2))
                (then (i64.extend_i32_u (local.get $n)))
                (else (i64.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                               (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
        ;; deep recursion with an array on the shadow stack in every frame
        (func $deep (param $d i32) (result i64) (local $frame i32) (local $r i64)
            (global.set $sp (local.tee $frame (i32.sub (global.get $sp) (i32.const 32))))
            (i64.store (local.get $frame) (i64.extend_i32_u (local.get $d)))
            (i64.store offset=8 (local.get $frame) (i64.mul (i64.extend_i32_u (local.get $d)) (i64.const 31)))
            (local.set $r
                (if (result i64) (local.get $d)
                    (then (call $deep (i32.sub (local.get $d) (i32.const 1))))
                    (else (i64.const 1))))
            (local.set $r (i64.add (local.get $r)
                (i64.xor (i64.load (local.get $frame)) (i64.load offset=8 (local.get $frame)))))
            (global.set $sp (i32.add (local.get $frame) (i32.const 32)))
            (local.get $r))
        (func $pick (param $k i32) (result i64)
            (block $c (block $b (block $a
                (br_table $a $b $c (i32.rem_u (local.get $k) (i32.const 3))))
                (return (call $fib (i32.const 10))))
                (return (i64.add (i64.const 100) (call $deep (i32.const 20)))))
            (i64.const 5))
        (func (export "_start") (local $k i32)
            (call $out (call $fib (i32.const 12)))
            (call $out (call $deep (i32.const 150)))
            (loop $l
                (call $out (i64.add (i64.extend_i32_u (local.get $k))
                    ;; a construct with sites and a value under it
                    (block (result i64)
                        (br_if 0 (call $pick (local.get $k)) (i32.eqz (i32.and (local.get $k) (i32.const 1))))
                        (drop)
                        (i64.mul (call $pick (i32.add (local.get $k) (i32.const 1))) (i64.const 3)))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $k) (i32.const 9))))))"#
    ));
}

#[test]
fn multi_value_blocks_loop_parameters_and_tables_survive() {
    same_when_tortured(&format!(
        r#"(module {IMPORTS}
        (type $t (func (param i32) (result i64)))
        (type $r (func (param i32 i32 i32 i32) (result i32)))
        (table 4 funcref)
        (elem (i32.const 0) $sum $twice $read $plain)
        (func $sum (param $n i32) (result i64) (local $s i64)
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (loop $l
                (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $n))))
                (br_if $l (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
            (local.get $s))
        (func $twice (param $n i32) (result i64)
            (i64.add (call_indirect (type $t) (local.get $n) (i32.const 0))
                     (call_indirect (type $t) (i32.add (local.get $n) (i32.const 1)) (i32.const 0))))
        (func $plain (param i32 i32 i32 i32) (result i32) (i32.add (local.get 0) (local.get 3)))
        (func $pair (param $n i32) (result i32 i64)
            (local.get $n) (call $sum (local.get $n)))
        ;; a loop with parameters: (acc, n)
        (func $count (param $n i32) (result i32) (local $t i32)
            (i32.const 0) (local.get $n)
            (loop $l (param i32 i32) (result i32)
                (local.set $t)
                (i32.add (i32.wrap_i64 (call $sum (i32.const 4))))
                (local.get $t) (i32.const 1) (i32.sub) (local.tee $t)
                (local.get $t)
                (br_if $l)
                (drop)))
        (func (export "_start") (local $k i32)
            (loop $l
                (call $out (call_indirect (type $t) (local.get $k) (i32.const 1)))
                ;; the read, through the table
                (call $out (i64.extend_i32_u (call_indirect (type $r)
                    (local.get $k) (i32.const 1) (i32.const 1) (i32.const 1)
                    (select (i32.const 2) (i32.const 3) (i32.and (local.get $k) (i32.const 1))))))
                (call $pair (local.get $k))
                (call $out)
                (call $out (i64.extend_i32_u))
                ;; a block with a parameter, holding a site
                (call $out (i64.extend_i32_u (i32.const 7)
                    (block (param i32) (result i32)
                        (i32.add (i32.wrap_i64 (call $sum (i32.const 3)))))))
                (call $out (i64.extend_i32_u (call $count (i32.add (local.get $k) (i32.const 1)))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $k) (i32.const 6))))))"#
    ));
}

/// A leaf, a loop, a call to it, a recursion, and a call through a table.
const LOOP_CALLS_AND_TABLE: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (global $sp (mut i32) (i32.const 1024))
    (table 2 funcref)
    (elem (i32.const 0) $f $g)
    (func $leaf (result i32) (i32.const 1))
    (func $f (result i32) (local i32)
        (loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1)))
            (br_if $l (i32.lt_u (local.get 0) (i32.const 10))))
        (local.get 0))
    (func $g (result i32) (call $f))
    (func $self (param i32) (result i32) (call $self (local.get 0)))
    (func (export "_start") (drop (call_indirect (result i32) (i32.const 1)))))"#;

/// The instrumentation's tables are given by function indices, never by
/// expressions (which the engine would evaluate entry by entry at every
/// instantiation, and every segment after them too), and the rewind
/// table still names each function's rewind copy where it has one.
#[test]
fn tables_are_given_by_function_indices() {
    let ins = instrument(&wat(LOOP_CALLS_AND_TABLE)).expect("instrumented");
    validate(&ins.wasm);
    let mut rewind_entries = Vec::new();
    for payload in Parser::new(0).parse_all(&ins.wasm) {
        if let Ok(Payload::ElementSection(r)) = payload {
            for e in r {
                let e = e.expect("element");
                let wasmparser::ElementItems::Functions(fs) = e.items else {
                    panic!("a segment of expressions")
                };
                let fs: Vec<u32> = fs.into_iter().map(|f| f.expect("index")).collect();
                if let wasmparser::ElementKind::Active {
                    table_index: Some(t),
                    offset_expr,
                } = e.kind
                    && t == 1
                {
                    let mut ops = offset_expr.get_operators_reader();
                    let Ok(Operator::I32Const { value }) = ops.read() else {
                        panic!("offset")
                    };
                    rewind_entries.push((value, fs));
                }
            }
        }
    }
    // The import (which does not unwind) and $leaf have none: one run, of
    // the rewind copies of $f, $g, $self and `_start`, which come after the
    // six functions, in their order.
    assert_eq!(rewind_entries.len(), 1, "{rewind_entries:?}");
    let (at, copies) = &rewind_entries[0];
    assert_eq!(*at, 2);
    assert_eq!(copies.len(), 4);
    assert!(copies.windows(2).all(|w| w[0] < w[1]) && copies[0] > 5);
}

#[test]
fn poll_points_are_where_loops_and_recursion_are() {
    let wasm = wat(LOOP_CALLS_AND_TABLE);
    let mut s = survey(&wasm).expect("survey");
    plan(&mut s);
    // $leaf has no loop and calls nothing; $f loops; $g calls $f; $self recurses;
    // `_start` calls through a table of functions that unwind.
    assert_eq!(s.plan.unwindable, vec![false, true, true, true, true]);
    assert_eq!(s.plan.recursive, vec![false, false, false, true, false]);
    assert_eq!(s.plan.entry_poll, vec![false, false, false, true, false]);
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    assert_eq!(ins.globals, vec![0]);
    assert_eq!(ins.memories, 1);
}

/// A function that can recurse polls at its entry, unless a loop's poll
/// point comes first, before any work (a loop that polls at its header: one
/// with a conditional way back): then it reads the flag there alone.
#[test]
fn a_recursive_function_that_starts_with_a_loop_polls_there_alone() {
    let text = format!(
        r#"(module {IMPORTS}
        (global $sp (mut i32) (i32.const 0))
        (func $go (param $pc i32) (param $n i32) (result i64) (local $s i32)
            (local.set $s (global.get $sp))
            (block $done
              (loop $dispatch
                (block $b1 (block $b0 (br_table $b0 $b1 $done (local.get $pc)))
                  (if (local.get $n) (then
                    (call $out (call $go (i32.const 0) (i32.sub (local.get $n) (i32.const 1))))))
                  (local.set $pc (i32.const 1))
                  (br $dispatch))
                (local.set $pc (i32.const 2))
                (br_if $dispatch (i32.const 1))))
            (i64.extend_i32_u (i32.add (local.get $n) (local.get $s))))
        (func $work (param $n i32) (result i64)
            (local.set $n (i32.add (local.get $n) (i32.const 0)))
            (loop $l (br_if $l (i32.const 0)))
            (if (result i64) (local.get $n)
                (then (i64.add (i64.const 1) (call $work (i32.sub (local.get $n) (i32.const 1)))))
                (else (i64.const 7))))
        (func (export "_start")
            (call $out (call $go (i32.const 0) (i32.const 30)))
            (call $out (call $work (i32.const 30)))))"#
    );
    let ins = instrument(&wat(&text)).expect("instrumented");
    validate(&ins.wasm);
    let reads = flag_reads(&ins.wasm);
    // Each poll point reads the flag twice: to poll, and once taken, to
    // tell a kill from a freeze. `$go`: its loop's; `$work`: its entry's
    // (an addition comes before its loop) and its loop's.
    assert_eq!(
        reads[..2],
        [2, 4],
        "flag reads of the fast copies of $go, $work"
    );
    same_when_tortured(&text);
}

/// Flag reads per function body of `wasm`, fast copies first.
fn flag_reads(wasm: &[u8]) -> Vec<usize> {
    let mut reads = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        if let Ok(Payload::CodeSectionEntry(b)) = payload {
            let mut r = b.get_operators_reader().expect("ops");
            let mut n = 0;
            while !r.eof() {
                n += usize::from(matches!(
                    r.read().expect("op"),
                    Operator::I32AtomicLoad { .. }
                ));
            }
            reads.push(n);
        }
    }
    reads
}

/// Not every function on a cycle of calls polls at its entry: one per
/// cycle, the one the program enters it by, and none where the cycle goes
/// through a function whose loop's poll point comes first. A recursion
/// through them still unwinds and rewinds anywhere.
#[test]
fn one_function_of_a_cycle_polls_at_its_entry() {
    let text = format!(
        r#"(module {IMPORTS}
        (func $a (param $n i32) (result i64)
            (if (result i64) (local.get $n)
                (then (i64.add (i64.const 1) (call $b (i32.sub (local.get $n) (i32.const 1)))))
                (else (i64.const 0))))
        (func $b (param $n i32) (result i64)
            (if (result i64) (local.get $n)
                (then (i64.add (i64.const 2) (call $c (i32.sub (local.get $n) (i32.const 1)))))
                (else (i64.const 5))))
        (func $c (param $n i32) (result i64)
            (if (result i64) (local.get $n)
                (then (i64.mul (i64.const 3) (call $a (i32.sub (local.get $n) (i32.const 1)))))
                (else (i64.const 9))))
        (func $go (param $pc i32) (param $n i32) (result i64)
            (block $done
              (loop $dispatch
                (block $b0 (br_table $b0 $done (local.get $pc)))
                (local.set $pc (i32.const 1))
                (br_if $dispatch (i32.const 1))))
            (if (result i64) (local.get $n)
                (then (i64.add (i64.const 4) (call $h (i32.sub (local.get $n) (i32.const 1)))))
                (else (i64.const 11))))
        (func $h (param $n i32) (result i64)
            (i64.add (i64.const 6) (call $go (i32.const 0) (local.get $n))))
        (func (export "_start")
            (call $out (call $a (i32.const 40)))
            (call $out (call $go (i32.const 0) (i32.const 40)))))"#
    );
    let wasm = wat(&text);
    let mut s = survey(&wasm).expect("survey");
    plan(&mut s);
    assert_eq!(s.plan.recursive, vec![true, true, true, true, true, false]);
    // `_start` enters the cycle of $a, $b and $c by $a; the one of $go and
    // $h reads the flag at $go's loop.
    assert_eq!(
        s.plan.entry_poll,
        vec![true, false, false, false, false, false]
    );
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    // Two reads per poll point (see above): $a's entry, $go's loop.
    assert_eq!(flag_reads(&ins.wasm)[..5], [2, 0, 0, 2, 0]);
    same_when_tortured(&text);
}

/// A loop whose every way back is a plain `br` reads the flag before those
/// branches, not at its header, so that entering it costs nothing; and of a
/// loop that dispatches over blocks (Go's functions, whose every jump goes
/// through it), only the branches that do not provably go forward poll. A
/// frame unwound before such a branch keeps the values under it.
#[test]
fn loops_poll_before_their_branches_back() {
    let text = format!(
        r#"(module {IMPORTS}
        (func $go (param $pc i32) (param $n i32) (result i64) (local $acc i64)
            (block $done
              (loop $dispatch
                (block $b2
                  (block $b1
                    (block $b0 (br_table $b0 $b1 $b2 $done (local.get $pc)))
                    (local.set $acc (i64.const 1))
                    (local.set $pc (i32.const 1))
                    (br $dispatch))
                  (local.set $acc (i64.add (local.get $acc) (i64.extend_i32_u (local.get $n))))
                  (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                  (if (local.get $n) (then (local.set $pc (i32.const 1)) (br $dispatch)))
                  (local.set $pc (i32.const 2))
                  (br $dispatch))
                (local.set $pc (i32.const 3))
                (br $dispatch)))
            (local.get $acc))
        (func $c (param $n i32) (result i64) (local $a i64)
            (block $out (result i64)
              (i64.const 3)
              (loop $l (param i64)
                (local.set $a)
                (if (i32.eqz (local.get $n)) (then (br $out (local.get $a))))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (i32.const 7)
                (i64.add (i64.mul (local.get $a) (i64.const 3)) (i64.extend_i32_u (local.get $n)))
                (br $l))
              (unreachable)))
        (func (export "_start")
            (call $out (call $go (i32.const 0) (i32.const 30)))
            (call $out (call $c (i32.const 25)))))"#
    );
    let wasm = wat(&text);
    let s = survey(&wasm).expect("survey");
    // $go: of its four jumps, the one back to its own block; $c: its `br`.
    let before: Vec<usize> = s.bodies.iter().map(|b| b.loop_polls.before.len()).collect();
    assert_eq!(before, vec![1, 1, 0]);
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    // Two reads per poll point (see above), none at the loops' headers.
    assert_eq!(flag_reads(&ins.wasm)[..2], [2, 2]);
    same_when_tortured(&text);
}

/// A call whose `i32` result decides a `br_if` right after (Go's: every Go
/// function returns whether it unwinds its goroutine's stack) is checked
/// in that branch alone, unless the code between writes a local the call's
/// record keeps; either way a freeze at any site gives the same results.
#[test]
fn a_call_whose_result_decides_a_branch_is_checked_there() {
    let text = format!(
        r#"(module {IMPORTS}
        (global $sp (mut i32) (i32.const 1000))
        (func $leaf (param $n i32) (result i32) (local $i i32)
            (loop $l
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
            (i32.eq (local.get $n) (i32.const 3)))
        (func $go (param $n i32) (result i64) (local $s i32) (local $acc i64)
            (block $exit
              (loop $again
                (call $leaf (local.get $n))
                (global.get $sp)
                (local.set $s)
                (br_if $exit)
                (local.set $acc (i64.add (local.get $acc)
                    (i64.extend_i32_u (i32.add (local.get $s) (local.get $n)))))
                (local.set $n (i32.sub (local.get $n) (i32.const 1)))
                (if (local.get $n) (then (br $again)))))
            (local.get $acc))
        (func $kept (param $n i32) (result i64) (local $m i32)
            (block $exit
              (call $leaf (local.get $n))
              (local.get $n)
              (i32.const 5)
              (local.set $n)
              (local.set $m)
              (br_if $exit)
              (return (i64.extend_i32_u (i32.add (i32.mul (local.get $n) (i32.const 10))
                  (local.get $m)))))
            (i64.const 99))
        (func (export "_start")
            (call $out (call $go (i32.const 9)))
            (call $out (call $kept (i32.const 7)))))"#
    );
    let wasm = wat(&text);
    let s = survey(&wasm).expect("survey");
    // Both calls branch on their result.
    assert!(s.bodies[1].branch_on_result.contains_key(&3));
    assert!(s.bodies[2].branch_on_result.contains_key(&2));
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    // $go's call is checked in its branch; between $kept's and its branch
    // $n is read, then written: the call's record keeps it, so its check
    // follows the call. (Each function's first freeze is in $leaf, under
    // its fast copy: $go's loop polls before its branch back.)
    assert_eq!(state_reads_after_calls(&ins.wasm)[1..3], [0, 1]);
    same_when_tortured(&text);
}

/// Per function body of `wasm`: how many calls the `state` global is read
/// right after (past the copies' moves of values into and out of locals).
fn state_reads_after_calls(wasm: &[u8]) -> Vec<usize> {
    let mut state = None;
    let mut out = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::ExportSection(r)) => {
                for e in r {
                    let e = e.expect("export");
                    if e.name == STATE_GLOBAL {
                        state = Some(e.index);
                    }
                }
            }
            Ok(Payload::CodeSectionEntry(b)) => {
                let mut r = b.get_operators_reader().expect("ops");
                let (mut n, mut after_call) = (0, false);
                while !r.eof() {
                    match r.read().expect("op") {
                        Operator::Call { .. } => after_call = true,
                        Operator::LocalSet { .. } | Operator::LocalGet { .. } => {}
                        Operator::GlobalGet { global_index } if after_call => {
                            n += usize::from(Some(global_index) == state);
                            after_call = false;
                        }
                        _ => after_call = false,
                    }
                }
                out.push(n);
            }
            _ => {}
        }
    }
    out
}

/// A function's branch hints, each as whether it names an `if` of the
/// function's code and whether it says taken, and how many `if`s it has.
type Hinted = (u32, Vec<(bool, bool)>, usize);

/// Per function of `wasm` that has hints: its [`Hinted`].
fn branch_hints(wasm: &[u8]) -> Vec<Hinted> {
    let mut bodies = Vec::new();
    let mut imported = 0u32;
    let mut hints = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.expect("payload") {
            wasmparser::Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    if matches!(i.expect("import").ty, wasmparser::TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            wasmparser::Payload::CodeSectionEntry(body) => bodies.push(body),
            wasmparser::Payload::CustomSection(c) => {
                if let wasmparser::KnownCustom::BranchHints(r) = c.as_known() {
                    for f in r {
                        let f = f.expect("function's hints");
                        let hs: Vec<_> = f.hints.into_iter().map(|h| h.expect("hint")).collect();
                        hints.push((f.func, hs));
                    }
                }
            }
            _ => {}
        }
    }
    hints
        .into_iter()
        .map(|(func, hs)| {
            let body = &bodies[(func - imported) as usize];
            let start = body.range().start;
            let mut ifs = std::collections::HashSet::new();
            let mut ops = body.get_operators_reader().expect("operators");
            while !ops.eof() {
                let (op, at) = ops.read_with_offset().expect("operator");
                if matches!(op, Operator::If { .. }) {
                    ifs.insert((at - start) as u32);
                }
            }
            let checked = hs
                .iter()
                .map(|h| (ifs.contains(&h.func_offset), h.taken))
                .collect();
            (func, checked, ifs.len())
        })
        .collect()
}

/// The branches of poll points and of checks after calls are hinted as not
/// taken, in both copies, at the offsets of their `if`s; a module's own
/// hints, which name places the copies moved, are left out.
#[test]
fn poll_points_and_checks_are_hinted_cold() {
    let mut wasm = wat(&format!(
        r#"(module {IMPORTS}
        (func $f (param i32) (result i32) (local i32)
            (loop $l (local.set 1 (i32.add (local.get 1) (local.get 0)))
                (br_if $l (i32.lt_u (local.get 1) (i32.const 1000))))
            (local.get 1))
        (func $self (param i32) (result i32)
            (if (result i32) (local.get 0)
                (then (call $self (i32.sub (local.get 0) (i32.const 1))))
                (else (call $f (i32.const 3)))))
        (func (export "_start") (call $out (i64.extend_i32_u (call $self (i32.const 5))))))"#
    ));
    // The module's own hint: the `if` of `$self`, which instrumentation moves.
    let mut own = wasm_encoder::BranchHints::new();
    own.function_hints(
        3,
        [wasm_encoder::BranchHint {
            branch_func_offset: 3,
            branch_hint_value: 1,
        }],
    );
    wasm.push(wasm_encoder::SectionId::Custom as u8);
    wasm_encoder::Encode::encode(&own, &mut wasm);
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    let hints = branch_hints(&ins.wasm);
    let hinted: Vec<u32> = hints.iter().map(|(f, _, _)| *f).collect();
    // `$f` (its loop), `$self` (its entry, its calls), `_start` (its call),
    // then their rewind copies; nothing else.
    assert_eq!(hinted, vec![2, 3, 4, 5, 6, 7], "{hints:?}");
    for (f, hs, _) in &hints {
        assert!(hs.iter().all(|(at_if, _)| *at_if), "function {f}: {hs:?}");
        assert!(hs.iter().any(|(_, taken)| !taken), "function {f}: {hs:?}");
    }
    // `$f`'s fast copy, whose own code has no `if`: its poll point branches
    // on the flag, then to its save, both hinted, and nowhere else (the
    // engine would lay out code after an `if` of its own in the loop).
    let (_, f_fast, ifs) = &hints[0];
    assert_eq!(f_fast.len(), 2, "{f_fast:?}");
    assert_eq!(
        *ifs,
        f_fast.len(),
        "an `if` of the poll point without a hint"
    );
    // `$self`'s fast copy: its entry's poll (the flag, then its save), and
    // a check after each of its two calls.
    let (_, self_fast, _) = &hints[1];
    assert_eq!(
        self_fast.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        vec![false, false, false, false]
    );
    // Unwound at every poll point, it computes what it computes alone.
    let (out, moves) = tortured(&wasm, false);
    assert_eq!(out, reference(&wasm));
    assert!(moves > 0);
}

#[test]
fn a_module_without_imports_or_exports_gets_them() {
    let wasm = wat(r#"(module (func (loop (br 0))))"#);
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
}

#[test]
fn unsupported_modules_say_why() {
    let cases: [(&str, &str); 4] = [
        (r#"(module (func $f (return_call $f)))"#, "tail calls"),
        (
            r#"(module (table 1 funcref) (func $f (table.set (i32.const 0) (ref.func $f))) (elem declare func $f))"#,
            "table",
        ),
        (r#"(module (func $f) (start $f))"#, "start function"),
        (r#"(module (func $f (export "__ssi_x")))"#, "reserved name"),
    ];
    for (text, why) in cases {
        match instrument(&wat(text)) {
            Err(InstrumentError::Unsupported(w)) => assert!(w.contains(why), "{w}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(
        instrument(b"\0asm\x01\0\0\0\x01\xff"),
        Err(InstrumentError::Parse(_))
    ));
    // Too much code to compile whole: it runs as it is.
    let text =
        r#"(module (func $f (param i32) (if (local.get 0) (then (call $f (i32.const 0))))))"#;
    assert!(instrument_with(&wat(text), true, true, 1 << 20).is_ok());
    match instrument_with(&wat(text), true, true, 16) {
        Err(InstrumentError::Unsupported(w)) => {
            assert!(w.contains("more than a node compiles"), "{w}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_reference_in_a_frame_pins_it_where_it_is_live() {
    // A reference live at a poll point: the point is left out (the frame
    // never unwinds there), and the module is still instrumented.
    let text = r#"(module (func (export "_start") (local $r externref)
        (loop (br_if 0 (ref.is_null (local.get $r))))))"#;
    let ins = instrument(&wat(text)).expect("instrumented");
    validate(&ins.wasm);
    // A reference that must be passed to a call that can unwind cannot be kept.
    let text = r#"(module (func $f (param externref) (loop (br 0)))
        (func (export "_start") (call $f (ref.null extern))))"#;
    match instrument(&wat(text)) {
        Err(InstrumentError::Unsupported(w)) => assert!(w.contains("reference"), "{w}"),
        other => panic!("{other:?}"),
    }
}

/// Exceptions thrown out of loops and recursion and caught frames above; a
/// cleanup that runs loops while it holds the exception (`exnref`) and
/// rethrows it; a local read only where an exception is caught. Unwound at
/// every poll point, the program catches every exception where it would
/// have, with the same values.
#[test]
fn exceptions_thrown_after_a_rewind_are_caught_where_they_would_have_been() {
    let moves = same_when_tortured(&format!(
        r#"(module {IMPORTS}
        (tag $oops (param i32))
        (func $work (param $n i32) (result i64) (local $i i32) (local $s i64)
            (loop $l
                (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $i))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.mul (local.get $n) (i32.const 50)))))
            (if (i32.eq (i32.rem_u (local.get $n) (i32.const 5)) (i32.const 3))
                (then (throw $oops (i32.add (local.get $n) (i32.wrap_i64 (local.get $s))))))
            (local.get $s))
        (func $deep (param $d i32) (param $n i32) (result i64)
            (if (result i64) (local.get $d)
                (then (i64.add (i64.const 1) (call $deep (i32.sub (local.get $d) (i32.const 1)) (local.get $n))))
                (else (call $work (local.get $n)))))
        (func $cleanup (param $n i32) (local $i i32)
            (loop $l
                (call $out (i64.extend_i32_u (i32.add (local.get $i) (i32.const 9000))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (i32.rem_u (local.get $n) (i32.const 4))))))
        (func $guarded (param $n i32) (result i64) (local $ex exnref)
            (block $h (result exnref)
                (try_table (catch_all_ref $h)
                    (return (call $deep (i32.rem_u (local.get $n) (i32.const 7)) (local.get $n))))
                (unreachable))
            (local.set $ex)
            ;; loops run while the exception is held, then it goes on up
            (call $cleanup (local.get $n))
            (throw_ref (local.get $ex)))
        (func $catcher (param $n i32) (result i64) (local $mult i64)
            (local.set $mult (i64.extend_i32_u (i32.add (local.get $n) (i32.const 3))))
            (block $c (result i32)
                (try_table (result i64) (catch $oops $c)
                    (call $guarded (local.get $n)))
                (return))
            ;; only here is $mult read: it is live at the call through the catch
            (i64.mul (i64.extend_i32_u) (local.get $mult)))
        (func (export "_start") (local $k i32)
            (loop $l
                (call $out (call $catcher (local.get $k)))
                (call $out (i64.extend_i32_u
                    (call $read (local.get $k) (i32.const 1) (i32.const 2) (i32.const 3))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $k) (i32.const 24))))))"#
    ));
    assert!(moves > 100, "{moves} moves");
}

#[test]
fn the_unwind_stack_grows_for_deep_recursion() {
    // 4 000 frames: more than the stack memory's first page.
    let (out, _) = {
        let wasm = wat(&format!(
            r#"(module {IMPORTS}
            (func $down (param $d i32) (result i64) (local $a i64) (local $b i64)
                (local.set $a (i64.extend_i32_u (local.get $d)))
                (local.set $b (i64.mul (local.get $a) (i64.const 3)))
                (if (result i64) (local.get $d)
                    (then (i64.add (i64.add (local.get $a) (local.get $b))
                        (call $down (i32.sub (local.get $d) (i32.const 1)))))
                    (else (i64.const 0))))
            (func (export "_start") (call $out (call $down (i32.const 4000)))))"#
        ));
        let expected = reference(&wasm);
        let got = tortured(&wasm, false);
        assert_eq!(got.0, expected);
        got
    };
    assert_eq!(out.len(), 1);
}

/// Records are written in place: an instrumented module has no functions
/// but its copies, and a save calls nothing. A function whose only sites
/// are poll points does not even grow the unwind stack (a `memory.grow` is
/// a call for the engine), so that a leaf stays a leaf (no frame, no
/// stack-limit check); the others grow it in their save blocks when it has
/// no room.
#[test]
fn a_loop_polls_without_calls_it_comes_back_from() {
    let wasm = wat(r#"(module
        (func $leaf (param i32) (result i32)
            (loop $l (br_if $l (i32.and (local.tee 0 (i32.add (local.get 0) (i32.const 1))) (i32.const 7))))
            (local.get 0))
        (func (export "_start") (local i32)
            (loop $l (br_if $l (local.tee 0 (call $leaf (local.get 0)))))))"#);
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    let mut bodies: Vec<Vec<Operator<'_>>> = Vec::new();
    for payload in Parser::new(0).parse_all(&ins.wasm) {
        if let Ok(Payload::CodeSectionEntry(b)) = payload {
            let mut r = b.get_operators_reader().expect("ops");
            let mut ops = Vec::new();
            while !r.eof() {
                ops.push(r.read().expect("op"));
            }
            bodies.push(ops);
        }
    }
    // The fast copies of $leaf and `_start`, then their rewind copies.
    assert_eq!(bodies.len(), 4, "functions besides the copies");
    let calls = |ops: &[Operator<'_>]| {
        ops.iter()
            .filter(|op| matches!(op, Operator::Call { .. } | Operator::CallIndirect { .. }))
            .count()
    };
    let grows = |ops: &[Operator<'_>]| {
        ops.iter()
            .filter(|op| matches!(op, Operator::MemoryGrow { .. }))
            .count()
    };
    for leaf in [0, 2] {
        assert_eq!(calls(&bodies[leaf]), 0, "copy {leaf} calls something");
        assert_eq!(grows(&bodies[leaf]), 0, "copy {leaf} grows a memory");
    }
    // `_start`'s fast copy calls $leaf alone, its rewind copy $leaf and
    // $leaf's rewind copy (through the table); both grow the unwind stack.
    assert_eq!(calls(&bodies[1]), 1);
    assert_eq!(calls(&bodies[3]), 2);
    assert!(grows(&bodies[1]) >= 1 && grows(&bodies[3]) >= 1);
    // Frozen at every poll point, the program still gives its results.
    same_when_tortured(&format!(
        r#"(module {IMPORTS}
        (func $leaf (param $n i32) (result i64) (local $i i32) (local $s i64)
            (loop $l
                (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $i))))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
            (local.get $s))
        (func (export "_start") (local $k i32)
            (loop $l
                (call $out (call $leaf (i32.mul (local.get $k) (i32.const 300))))
                (local.set $k (i32.add (local.get $k) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $k) (i32.const 8))))))"#
    ));
}

/// A poll point's way to its save calls nothing (not even the unwind
/// stack's growth, which would make every value of its loop outlive a
/// call, and Cranelift spill them at every iteration): the unwind stack
/// starts with room for the largest record a poll point writes, here past
/// its first page (4,200 live `v128`s), and a freeze at that poll point
/// still happens there.
#[test]
fn a_poll_point_whose_record_is_past_a_page_still_unwinds() {
    const N: usize = 4200;
    let locals: String = (0..N).map(|j| format!("(local $a{j} v128)")).collect();
    let init: String = (0..N)
        .map(|j| format!("(local.set $a{j} (v128.const i64x2 {j} 1))"))
        .collect();
    let step: String = (0..N)
        .map(|j| {
            format!(
                "(local.set $a{j} (i64x2.add (local.get $a{j}) (local.get $a{})))",
                (j + 1) % N
            )
        })
        .collect();
    let sum: String = (1..N)
        .map(|j| format!("(local.set $a0 (i64x2.add (local.get $a0) (local.get $a{j})))"))
        .collect();
    let text = format!(
        r#"(module {IMPORTS}
        (func $big (param $n i32) (result i64) (local $i i32) {locals}
            {init}
            (loop $l
                {step}
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
            {sum}
            (i64.add (i64x2.extract_lane 0 (local.get $a0)) (i64x2.extract_lane 1 (local.get $a0))))
        (func (export "_start") (call $out (call $big (i32.const 3)))))"#
    );
    let ins = instrument(&wat(&text)).expect("instrumented");
    let stack_pages = Parser::new(0)
        .parse_all(&ins.wasm)
        .filter_map(|p| match p {
            Ok(Payload::MemorySection(r)) => Some(r.into_iter().flatten().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .find(|m| m.maximum == Some(super::STACK_MAX_PAGES))
        .map(|m| m.initial)
        .expect("the unwind stack");
    assert!(stack_pages >= 2, "{stack_pages} pages");
    // Frozen at each of the loop's three headers (and put back each time).
    let moves = same_when_tortured(&text);
    assert!(moves >= 3, "{moves} moves");
}

/// A loop whose first step is not the only write to its local (another
/// leaves the loop) is counted by a later step that is.
#[test]
fn a_loop_is_counted_by_any_step_that_is_its_locals_only_write() {
    let iterations = 100_000;
    let text = format!(
        r#"(module {IMPORTS}
        (func (export "_start") (local $i i32) (local $n i32) (local $s i64)
            (block $done
                (loop $l
                    (block $b
                        (br_if $b (i32.ne (local.get $i) (i32.const -7)))
                        (local.set $i (i32.const 0))
                        (br $done))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (local.set $n (i32.add (local.get $n) (i32.const 2)))
                    (local.set $s (i64.add (local.get $s) (i64.extend_i32_s (local.get $i))))
                    (br_if $l (i32.lt_u (local.get $n) (i32.const {})))))
            (call $out (local.get $s))))"#,
        iterations * 2
    );
    let wasm = wat(&text);
    let (out, moves) = tortured(&wasm, false);
    assert_eq!(out, reference(&wasm));
    // Counted by `$n`: about one read of the flag per period, not one per
    // iteration.
    assert!(
        moves > 0 && moves <= iterations / 64,
        "{moves} moves for {iterations} iterations"
    );
}

/// A loop stepping a local by a constant reads the flag only when the local
/// crosses a multiple of a period, wherever it starts and whatever the step.
#[test]
fn a_counted_loop_reads_the_flag_periodically() {
    for (start, step, iterations) in [(0, 1, 100_000), (7, 3, 100_000), (1000, -5, 60_000)] {
        let text = format!(
            r#"(module {IMPORTS}
            (func (export "_start") (local $i i32) (local $n i32) (local $s i64)
                (local.set $i (i32.const {start}))
                (loop $l
                    (local.set $s (i64.add (local.get $s) (i64.extend_i32_s (local.get $i))))
                    (local.set $i (i32.add (local.get $i) (i32.const {step})))
                    (local.set $n (i32.add (local.get $n) (i32.const 1)))
                    (br_if $l (i32.lt_u (local.get $n) (i32.const {iterations}))))
                (call $out (local.get $s))))"#
        );
        let wasm = wat(&text);
        let (out, moves) = tortured(&wasm, false);
        assert_eq!(out, reference(&wasm));
        // Each move is one read of the raised flag: about once per period.
        let expected = iterations as usize / 1024;
        assert!(
            moves >= expected / 2 && moves <= expected * 8,
            "start {start} step {step}: {moves} moves for {iterations} iterations"
        );
    }
}

/// The operators of the `n`th function body of `wasm` (fast copies first).
fn body_ops(wasm: &[u8], n: usize) -> Vec<String> {
    let mut bodies = Parser::new(0).parse_all(wasm).filter_map(|p| match p {
        Ok(Payload::CodeSectionEntry(b)) => Some(b),
        _ => None,
    });
    let body = bodies.nth(n).expect("the body");
    let mut r = body.get_operators_reader().expect("ops");
    let mut ops = Vec::new();
    while !r.eof() {
        ops.push(format!("{:?}", r.read().expect("op")));
    }
    ops
}

/// A counted loop whose way back is a `br_if` reads the flag there, before
/// the branch's condition (which stays next to the branch), not at its
/// header; a loop that is not counted keeps its poll point at its header.
/// Frozen there, with a value under the condition and the loop's step in
/// the condition itself, it puts back the same results.
#[test]
fn a_counted_loop_polls_before_the_condition_of_its_way_back() {
    let text = format!(
        r#"(module {IMPORTS}
        (func $counted (param $n i32) (result i64) (local $i i32) (local $s i64)
            (i64.const 5)
            (loop $l (param i64) (result i64)
                (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $i))))
                (i64.add (i64.const 1))
                (br_if $l (i32.lt_u (local.tee $i (i32.add (local.get $i) (i32.const 1)))
                                    (local.get $n))))
            (i64.add (local.get $s)))
        (func $uncounted (param $n i32) (result i64) (local $s i64)
            (loop $l
                (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $n))))
                (local.set $n (i32.shr_u (local.get $n) (i32.const 1)))
                (br_if $l (local.get $n)))
            (local.get $s))
        (func (export "_start")
            (call $out (call $counted (i32.const 500)))
            (call $out (call $uncounted (i32.const 1000000)))))"#
    );
    let wasm = wat(&text);
    let ins = instrument(&wasm).expect("instrumented");
    validate(&ins.wasm);
    let first = |ops: &[String], name: &str| ops.iter().position(|o| o.starts_with(name));
    // `$counted`: the flag is read after the loop's work, once the value
    // under the condition is there, and before the condition's first read.
    let counted = body_ops(&ins.wasm, 0);
    let read = first(&counted, "I32AtomicLoad").expect("a flag read");
    let work = first(&counted, "I64ExtendI32U").expect("the loop's work");
    let branch = counted
        .iter()
        .rposition(|o| o.starts_with("BrIf"))
        .expect("the way back");
    assert!(work < read && read < branch, "{counted:#?}");
    assert!(
        counted[read..branch]
            .iter()
            .any(|o| o.starts_with("I32LtU")),
        "the condition is computed after the poll point: {counted:#?}"
    );
    // `$uncounted`: at its header, before the loop's work.
    let uncounted = body_ops(&ins.wasm, 1);
    let read = first(&uncounted, "I32AtomicLoad").expect("a flag read");
    let work = first(&uncounted, "I64ExtendI32U").expect("the loop's work");
    assert!(read < work, "{uncounted:#?}");
    same_when_tortured(&text);
}
