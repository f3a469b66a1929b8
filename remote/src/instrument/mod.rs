//! Instrumentation: what makes a body freezable anywhere.
//!
//! A module is rewritten once, before it is compiled (the result is cached
//! with its native code). Every function that can be on the stack when a
//! body freezes (one with a loop, one that can recurse, one that calls such a
//! function or an import that waits) gets two copies, drawn in `func.rs`:
//!
//! - its **fast copy**, at its own index, which is what runs: the function's
//!   code with a poll point at every loop header (and at the entry of a
//!   function on a cycle of the call graph) and a check after every call that
//!   can unwind. A poll point is a load of the flag and a branch not taken;
//!   the branch calls nothing — it saves the frame and returns — so a hot
//!   loop keeps its values in registers. The only other cost is one global
//!   load and a branch after such calls.
//! - its **rewind copy**, appended after all functions, which puts a frame
//!   back from its record and runs on from there. Only the frames that were on
//!   the stack when the body froze run in rewind copies, until they return.
//!   For a module past [`WHOLE_MAX_CODE`], the rewind copies are made on
//!   demand instead, in a module of their own linked to the instance, for
//!   the functions on the stack being put back (`on_demand.rs`).
//!
//! What the host sees (all exported under reserved names):
//!
//! ```text
//!  __ssi_flag      a one-page shared memory; word 0 is the flag the poll
//!                  points read: 0 nothing, 1 unwind, 2 end (a poll point traps)
//!  __ssi_stack     the unwind stack: records of frames, innermost first
//!  __ssi_state     0 normal, 1 unwinding, 2 rewinding
//!  __ssi_ptr       the top of the unwind stack
//!  __ssi_rewind    the rewind copy of `_start`: called to put a stack back
//!  __ssi_rewind_table  the rewind copies by function index (a signal
//!                  handler that was unwound is put back through it)
//!  __ssi_funcs     every function by index (for rewind copies made on demand)
//!  __ssi_table_N, __ssi_tag_N  every table and tag of the module
//!  __ssi_memory_N  every memory of the module
//!  __ssi_global_N  every global, exported or not (`__stack_pointer`
//!                  never is)
//! ```
//!
//! A host function that waits (`fd_read`, `poll_oneoff`, `ssi.waitpid`) can
//! start the unwind itself: it pushes a marker `[0, its function index]`,
//! sets the state to unwinding and returns; when it is called again during a
//! rewind, it pops the marker and the call is made anew.
//!
//! This does what binaryen's Asyncify does (and an earlier version of ssi
//! used it), but Asyncify's code pays on every path for the rewind it might
//! do, which cost 1.4–2.5× on compute kernels; the copies above pay nothing
//! for it.
//!
//! Exceptions (`try_table`, `throw`, `throw_ref`) are control flow like any
//! other: a `try_table` is re-entered by the rewind copy, and liveness follows
//! its catch edges. A call made while a frame holds an `exnref` (between a
//! catch and its rethrow) is *pinned*: it runs with `NOUNWIND_GLOBAL` raised,
//! so that nothing under it unwinds, and the freeze waits until it returns.
//!
//! Modules that cannot be frozen this way (tail calls, the legacy encoding of
//! exceptions, tables changed at run time, a start function, references
//! passed to or returned from calls that can unwind, a function past the
//! engine's size limit once instrumented, a module whose instrumented code
//! would be too large to compile in reasonable time and memory: see
//! `MAX_CODE`, `MAX_FAST_CODE`) are refused with
//! [`InstrumentError::Unsupported`]: they still run, but cannot be frozen.

mod analyze;
mod assemble;
mod func;
mod liveness;
mod on_demand;
mod rewind;
mod savers;
mod sites;

pub use on_demand::{FUNC_IMPORT, Prepared, prepare, rewind_module, stack_functions};

pub(crate) use func::{NORMAL, REWINDING, UNWINDING};

use analyze::FuncBody;
use assemble::Assembler;
use func::Instrumenter;
use wasm_encoder::reencode::Reencode;
use wasmparser::{Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures};

/// The version of the instrumentation: part of the compiled-code cache's key
/// and of every ghost image, since an unwound stack can only be rewound by
/// the same instrumented code. A digest of the instrumentation's source
/// (`build.rs`), so that it changes with what it emits.
pub const VERSION: u32 = parse_u32(env!("SSI_INSTRUMENTATION"));

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v: u32 = 0;
    while i < b.len() {
        v = v.wrapping_mul(10).wrapping_add((b[i] - b'0') as u32);
        i += 1;
    }
    v
}

/// The export name of the flag memory.
pub const FLAG_MEMORY: &str = "__ssi_flag";
/// The export name of the unwind stack's memory.
pub const STACK_MEMORY: &str = "__ssi_stack";
/// The export name of the unwinder's state.
pub const STATE_GLOBAL: &str = "__ssi_state";
/// The export name of the unwind stack's top.
pub const PTR_GLOBAL: &str = "__ssi_ptr";
/// The export name of the count of calls under way that must not unwind:
/// while it is above zero, poll points and waiting imports do not unwind
/// (a freeze waits for it to come back to zero).
pub const NOUNWIND_GLOBAL: &str = "__ssi_nounwind";
/// The export name of `_start`'s rewind copy.
pub const REWIND: &str = "__ssi_rewind";
/// The export name of the table of rewind copies, by function index.
pub const REWIND_TABLE: &str = "__ssi_rewind_table";
/// The export name of the table of every function (imports and fast
/// copies), by index: what a module of rewind copies made on demand links
/// to (see [`rewind_module`]).
pub const FUNCS_TABLE: &str = "__ssi_funcs";
/// The largest function body the engine takes (wasmparser's limit).
const MAX_FUNCTION_SIZE: usize = 7_654_321;
/// The most code (fast copies, in bytes) the instrumenter makes of a module:
/// yosys, 69 MB with 42 MB of code, has a runnable part of 127 MB, compiled
/// in 50 s on two cores (against 28 s as it is). Past it, a module runs as
/// it is.
const MAX_FAST_CODE: usize = 192 << 20;
/// The most code (the code section, in bytes) of a module the instrumenter
/// takes: its fast copies are about three times as large, and a module past
/// this would pass `MAX_FAST_CODE` after seconds of work.
const MAX_CODE: usize = 64 << 20;
/// The most code (the code section, in bytes) of a module whose whole
/// module (fast and rewind copies) a node compiles: past it, the whole
/// module would take minutes and gigabytes to compile (yosys's: 277 MB of
/// Wasm, 199 s and 12 GB on two cores), so its rewind copies are made on
/// demand, for the functions on the stack being put back (see
/// [`rewind_module`]).
pub const WHOLE_MAX_CODE: usize = 24 << 20;
/// The largest unwind stack, in pages (just under 1 GiB). An odd number, so
/// that the memory limiter knows the unwind stack by its declared maximum
/// (see [`own_memory`]): no guest declares this one.
pub const STACK_MAX_PAGES: u64 = 16381;

/// The flag memory's declared maximum, in pages: it stays at one page (a
/// poll point ends a body with a load past it), and says it may reach this
/// odd number so that the limiter knows it.
const FLAG_MAX_PAGES: u64 = 3;

/// The unwind stack's first size, in pages: room for the largest record a
/// poll point writes, which finds the stack empty when a freeze begins
/// there (a poll point does not grow it: its way to the save calls
/// nothing, so that the loop around it keeps its values in registers).
fn stack_pages(largest_poll_record: u32) -> u64 {
    (u64::from(largest_poll_record) >> 16) + 1
}

/// Whether a memory with this declared maximum (in bytes, as wasmtime's
/// `ResourceLimiter` is told) is one of the instrumentation's (the flag, the
/// unwind stack), which no limit of the guest's memory bounds.
pub fn own_memory(maximum: Option<usize>) -> bool {
    [STACK_MAX_PAGES, FLAG_MAX_PAGES]
        .iter()
        .any(|pages| maximum == Some(*pages as usize * 65536))
}

/// The imports that can start an unwind: the system calls that wait, which a
/// freeze cuts short and makes again after the rewind.
pub const UNWINDING_IMPORTS: [(&str, &str); 3] = [
    ("wasi_snapshot_preview1", "fd_read"),
    ("wasi_snapshot_preview1", "poll_oneoff"),
    ("ssi", "waitpid"),
];

/// The export name of the module's memory `index`.
pub fn memory_export(index: u32) -> String {
    format!("__ssi_memory_{index}")
}

/// The export name of the module's global `index` (mutable or not).
pub fn global_export(index: u32) -> String {
    format!("__ssi_global_{index}")
}

/// The export name of the module's table `index`.
pub fn table_export(index: u32) -> String {
    format!("__ssi_table_{index}")
}

/// The export name of the module's tag `index`.
pub fn tag_export(index: u32) -> String {
    format!("__ssi_tag_{index}")
}

/// Whether `wasm`'s rewind copies are made on demand (see
/// [`rewind_module`]) rather than compiled with the rest of its whole
/// module: its code is past [`WHOLE_MAX_CODE`]. False for anything that
/// does not parse.
pub fn rewinds_on_demand(wasm: &[u8]) -> bool {
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::CodeSectionStart { size, .. }) => return size as usize > WHOLE_MAX_CODE,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Why a module cannot be instrumented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    #[error("it cannot be frozen: {0}")]
    Unsupported(String),
    #[error("it cannot be read: {0}")]
    Parse(String),
    #[error("its unwound stack does not fit its module: {0}")]
    Stack(String),
}

pub(crate) fn unsupported(why: impl Into<String>) -> InstrumentError {
    InstrumentError::Unsupported(why.into())
}

fn parse_error(e: impl std::fmt::Display) -> InstrumentError {
    InstrumentError::Parse(e.to_string())
}

/// A module after instrumentation.
#[derive(Debug, Clone)]
pub struct Instrumented {
    /// The whole instrumented module: fast copies and rewind copies.
    pub wasm: Vec<u8>,
    /// The same module with every rewind copy's body left out (it traps),
    /// no rewind table and no `REWIND` export: it runs, freezes and writes
    /// images exactly as `wasm` does (same indices, same records), at a
    /// third of the code to compile, but cannot put a stack back. A body is
    /// started on it while `wasm` compiles, and moves into an instance of
    /// `wasm` before its first rewind (see `engine::Program`).
    pub runnable: Vec<u8>,
    /// The module's memories, in index order.
    pub memories: u32,
    /// The indices of the module's mutable globals, each exported as
    /// [`global_export`].
    pub globals: Vec<u32>,
}

/// A function type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sig {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// Indices of what the instrumentation adds.
#[derive(Debug)]
pub(crate) struct Consts {
    pub flag_memory: u32,
    pub stack_memory: u32,
    pub state_global: u32,
    pub ptr_global: u32,
    /// Above zero while a call runs that must not unwind (see `Site::pinned`).
    pub nounwind_global: u32,
    pub rewind_table: u32,
    /// Every function by index ([`FUNCS_TABLE`]).
    pub funcs_table: u32,
}

impl Consts {
    fn of(s: &Survey<'_>) -> Consts {
        Consts {
            flag_memory: s.memories,
            stack_memory: s.memories + 1,
            state_global: s.globals.len() as u32,
            ptr_global: s.globals.len() as u32 + 1,
            nounwind_global: s.globals.len() as u32 + 2,
            rewind_table: s.tables,
            funcs_table: s.tables + 1,
        }
    }
}

/// The whole module's view: types, and which functions unwind.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub types: Vec<Option<Sig>>,
    /// The type of every function, imports first.
    pub func_types: Vec<u32>,
    pub imported: u32,
    /// Per imported function: whether it can start an unwind.
    unwinding_imports: Vec<bool>,
    /// Per defined function: whether it is on a cycle of calls.
    pub recursive: Vec<bool>,
    /// Per defined function: whether it polls at its entry. Every cycle of
    /// calls must read the flag somewhere, or a recursion without loops
    /// would never freeze, but not at every function on it: a cycle through
    /// a function whose first work is a loop's poll point reads it there
    /// ([`FuncBody::starts_with_a_poll`]), and of the others, only the
    /// functions a depth-first walk of the calls meets again while still
    /// inside them poll (every cycle has such a walk's step back to a
    /// function it is inside). Where a call through a table can reach
    /// nearly every function, as in Go or C++ with virtual calls, nearly
    /// all are on a cycle, and a fraction of them breaks every one.
    pub entry_poll: Vec<bool>,
    unwindable: Vec<bool>,
    /// Per defined function: its rewind copy's index.
    rewind: Vec<Option<u32>>,
    /// The function of each rewind copy, in their order.
    copy_of: Vec<u32>,
    /// Per type index: whether a call through a table of that type can unwind.
    indirect: Vec<bool>,
    /// Loops that step a local read the flag only now and then (tests
    /// turn it off to unwind at every loop header).
    pub counted_polls: bool,
}

impl Plan {
    pub(crate) fn defined(&self, f: u32) -> usize {
        f.saturating_sub(self.imported) as usize
    }

    pub(crate) fn func_sig(&self, f: u32) -> Option<&Sig> {
        let t = *self.func_types.get(f as usize)?;
        self.types.get(t as usize)?.as_ref()
    }

    pub(crate) fn rewind_of(&self, f: u32) -> Option<u32> {
        if f < self.imported {
            return None;
        }
        self.rewind.get(self.defined(f)).copied().flatten()
    }

    /// The function whose rewind copy is function `copy`, if it is one.
    pub(crate) fn rewind_of_copy(&self, copy: u32) -> Option<u32> {
        let first = self.func_types.len() as u32;
        self.copy_of.get(copy.checked_sub(first)? as usize).copied()
    }

    pub(crate) fn unwinding_import(&self, f: u32) -> bool {
        self.unwinding_imports
            .get(f as usize)
            .copied()
            .unwrap_or(false)
    }

    pub(crate) fn indirect_unwinds(&self, type_index: u32) -> bool {
        self.indirect
            .get(type_index as usize)
            .copied()
            .unwrap_or(true)
    }
}

/// What a first look at a module finds.
#[derive(Default)]
struct Survey<'a> {
    plan: Plan,
    memories: u32,
    tables: u32,
    /// The type of every memory, table and tag (its function type), imports
    /// first.
    memory_types: Vec<wasmparser::MemoryType>,
    table_types: Vec<wasmparser::TableType>,
    tags: Vec<u32>,
    /// (index, mutable, type) of every global.
    globals: Vec<(u32, bool, ValType)>,
    /// Functions that can be called through a table.
    referenced: Vec<u32>,
    bodies: Vec<FuncBody<'a>>,
    start_export: Option<u32>,
    /// The size of the code section, in bytes.
    code_size: usize,
    has_sections: [bool; 13],
}

/// Where a section goes among the others (the binary format's order).
fn rank(id: u8) -> u8 {
    use wasm_encoder::SectionId as S;
    const ORDER: [S; 13] = [
        S::Type,
        S::Import,
        S::Function,
        S::Table,
        S::Memory,
        S::Tag,
        S::Global,
        S::Export,
        S::Start,
        S::Element,
        S::DataCount,
        S::Code,
        S::Data,
    ];
    ORDER
        .iter()
        .position(|s| *s as u8 == id)
        .map(|p| p as u8)
        .unwrap_or(u8::MAX)
}

fn features() -> WasmFeatures {
    WasmFeatures::all()
}

fn survey(wasm: &[u8]) -> Result<Survey<'_>, InstrumentError> {
    use wasm_encoder::SectionId as S;
    let mut s = Survey::default();
    let mut validator = Validator::new_with_features(features());
    let mut global = 0u32;
    let mut defined = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(parse_error)?;
        let valid = validator.payload(&payload).map_err(parse_error)?;
        let mut mark = |id: S| s.has_sections[rank(id as u8) as usize] = true;
        match payload {
            Payload::TypeSection(r) => {
                mark(S::Type);
                for group in r {
                    for ty in group.map_err(parse_error)?.into_types() {
                        s.plan.types.push(match &ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(Sig {
                                params: f.params().to_vec(),
                                results: f.results().to_vec(),
                            }),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(r) => {
                mark(S::Import);
                for imports in r {
                    for import in imports.map_err(parse_error)? {
                        let (_, import) = import.map_err(parse_error)?;
                        match import.ty {
                            TypeRef::Func(t) | TypeRef::FuncExact(t) => {
                                s.plan.func_types.push(t);
                                s.plan.imported += 1;
                                s.plan.unwinding_imports.push(
                                    UNWINDING_IMPORTS.contains(&(import.module, import.name)),
                                );
                            }
                            TypeRef::Memory(m) => {
                                s.memories += 1;
                                s.memory_types.push(m);
                            }
                            TypeRef::Global(g) => {
                                s.globals.push((global, g.mutable, g.content_type));
                                global += 1;
                            }
                            TypeRef::Tag(t) => s.tags.push(t.func_type_idx),
                            TypeRef::Table(t) => {
                                s.tables += 1;
                                s.table_types.push(t);
                            }
                        }
                    }
                }
            }
            Payload::FunctionSection(r) => {
                mark(S::Function);
                for t in r {
                    s.plan.func_types.push(t.map_err(parse_error)?);
                }
            }
            Payload::TableSection(r) => {
                mark(S::Table);
                for t in r {
                    s.tables += 1;
                    s.table_types.push(t.map_err(parse_error)?.ty);
                }
            }
            Payload::MemorySection(r) => {
                mark(S::Memory);
                for m in r {
                    s.memories += 1;
                    s.memory_types.push(m.map_err(parse_error)?);
                }
            }
            Payload::GlobalSection(r) => {
                mark(S::Global);
                for g in r {
                    let g = g.map_err(parse_error)?;
                    s.globals.push((global, g.ty.mutable, g.ty.content_type));
                    global += 1;
                }
            }
            Payload::TagSection(r) => {
                mark(S::Tag);
                for t in r {
                    s.tags.push(t.map_err(parse_error)?.func_type_idx);
                }
            }
            Payload::StartSection { .. } => {
                return Err(unsupported(
                    "it has a start function, which a restore would run again",
                ));
            }
            Payload::ExportSection(r) => {
                mark(S::Export);
                for e in r {
                    let e = e.map_err(parse_error)?;
                    if e.name.starts_with("__ssi_") {
                        return Err(unsupported(format!(
                            "it exports `{}`, a reserved name",
                            e.name
                        )));
                    }
                    if e.name == "_start" && e.kind == wasmparser::ExternalKind::Func {
                        s.start_export = Some(e.index);
                    }
                }
            }
            Payload::ElementSection(r) => {
                mark(S::Element);
                for e in r {
                    match e.map_err(parse_error)?.items {
                        wasmparser::ElementItems::Functions(funcs) => {
                            for f in funcs {
                                s.referenced.push(f.map_err(parse_error)?);
                            }
                        }
                        wasmparser::ElementItems::Expressions(_, exprs) => {
                            for expr in exprs {
                                let mut ops = expr.map_err(parse_error)?.get_operators_reader();
                                while !ops.eof() {
                                    if let Operator::RefFunc { function_index } =
                                        ops.read().map_err(parse_error)?
                                    {
                                        s.referenced.push(function_index);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Payload::CodeSectionStart { size, .. } => {
                // Refused before any function is read: instrumented, its
                // code would be past `MAX_FAST_CODE` (about three times).
                if size as usize > MAX_CODE {
                    return Err(unsupported(format!(
                        "its {:.0} MB of code is past the {} MiB a node instruments for freezing (instrumented, it would take minutes and gigabytes to compile)",
                        f64::from(size) / 1e6,
                        MAX_CODE >> 20
                    )));
                }
                s.code_size = size as usize;
                mark(S::Code)
            }
            Payload::CodeSectionEntry(body) => {
                let wasmparser::ValidPayload::Func(to_validate, _) = valid else {
                    return Err(parse_error("a function body the validator did not take"));
                };
                let index = s.plan.imported + defined;
                defined += 1;
                let type_index = *s
                    .plan
                    .func_types
                    .get(index as usize)
                    .ok_or_else(|| parse_error("a body without a function"))?;
                let sig = s
                    .plan
                    .types
                    .get(type_index as usize)
                    .and_then(|t| t.clone())
                    .ok_or_else(|| parse_error("a function of no function type"))?;
                let validator = to_validate.into_validator(Default::default());
                let analyzed = analyze::analyze(index, type_index, &sig, body, validator)?;
                for info in &analyzed.ops {
                    analyze::check_operator(&info.op)?;
                    if info.live && matches!(info.op, Operator::CallRef { .. }) {
                        return Err(unsupported("it calls through a typed function reference"));
                    }
                }
                s.bodies.push(analyzed);
            }
            Payload::DataSection(_) => mark(S::Data),
            Payload::DataCountSection { .. } => mark(S::DataCount),
            _ => {}
        }
    }
    if let Some((_, _, t)) = s.globals.iter().find(|(_, m, t)| {
        *m && !matches!(
            t,
            ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128
        )
    }) {
        return Err(unsupported(format!("it has a mutable global of type {t}")));
    }
    Ok(s)
}

/// Functions that break every cycle of the call graph that goes through no
/// function of `broken`: those a depth-first walk, which does not enter
/// `broken`, steps back to while it is still inside them. Every cycle has
/// such a step, as a walk leaves a cycle's first function only after all
/// of the cycle (so the cycle's step back to it is taken inside it). The
/// walk starts from `first` (the program's entry), so that a recursion is
/// broken at the function the program enters it by.
fn cycle_breakers(edges: &[Vec<usize>], broken: &[bool], first: Option<usize>) -> Vec<bool> {
    const NEW: u8 = 0;
    const INSIDE: u8 = 1;
    const DONE: u8 = 2;
    let n = edges.len();
    let mut state = vec![NEW; n];
    let mut breaker = vec![false; n];
    let roots = first.into_iter().filter(|f| *f < n).chain(0..n);
    for root in roots {
        if state[root] != NEW || broken[root] {
            continue;
        }
        state[root] = INSIDE;
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut at)) = work.last_mut() {
            let Some(&w) = edges[v].get(*at) else {
                state[v] = DONE;
                work.pop();
                continue;
            };
            *at += 1;
            if broken[w] {
                continue;
            }
            match state[w] {
                NEW => {
                    state[w] = INSIDE;
                    work.push((w, 0));
                }
                INSIDE => breaker[w] = true,
                _ => {}
            }
        }
    }
    breaker
}

/// Which functions can recurse: those on a cycle of the call graph.
fn on_cycle(edges: &[Vec<usize>]) -> Vec<bool> {
    let n = edges.len();
    // Tarjan's strongly connected components, without recursion.
    const NONE: usize = usize::MAX;
    let (mut index, mut low) = (vec![NONE; n], vec![0usize; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut next) = (Vec::new(), 0usize);
    let mut cycle = vec![false; n];
    for root in 0..n {
        if index[root] != NONE {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut at)) = work.last_mut() {
            if let Some(&w) = edges[v].get(*at) {
                *at += 1;
                if index[w] == NONE {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut members = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    members.push(w);
                    if w == v {
                        break;
                    }
                }
                let is_cycle = members.len() > 1 || edges[v].contains(&v);
                for m in members {
                    cycle[m] = is_cycle;
                }
            }
        }
    }
    cycle
}

/// Decides which functions unwind, and where their rewind copies go.
fn plan(s: &mut Survey<'_>) {
    let p = &mut s.plan;
    let n = s.bodies.len();
    let imported = p.imported;
    // Functions a call through a table of each type can reach.
    let mut targets: Vec<Vec<u32>> = vec![Vec::new(); p.types.len()];
    let mut referenced = s.referenced.clone();
    referenced.sort_unstable();
    referenced.dedup();
    for (t, sig) in p.types.iter().enumerate() {
        let Some(sig) = sig else { continue };
        for &f in &referenced {
            if p.func_sig(f) == Some(sig) {
                targets[t].push(f);
            }
        }
    }
    let defined = |f: u32| {
        f.checked_sub(imported)
            .map(|i| i as usize)
            .filter(|i| *i < n)
    };
    let edges: Vec<Vec<usize>> = s
        .bodies
        .iter()
        .map(|b| {
            let mut out: Vec<usize> = b.calls.iter().filter_map(|f| defined(*f)).collect();
            for t in &b.indirect {
                if let Some(ts) = targets.get(*t as usize) {
                    out.extend(ts.iter().filter_map(|f| defined(*f)));
                }
            }
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect();
    p.recursive = on_cycle(&edges);
    let free: Vec<bool> = s
        .bodies
        .iter()
        .map(|b| b.starts_with_a_poll(p.counted_polls))
        .collect();
    let entry = s.start_export.and_then(defined);
    p.entry_poll = cycle_breakers(&edges, &free, entry);
    let mut unwindable: Vec<bool> = (0..n)
        .map(|i| s.bodies[i].live_loop || p.recursive[i])
        .collect();
    let reaches = |unw: &[bool], f: u32| -> bool {
        if f < imported {
            p.unwinding_imports
                .get(f as usize)
                .copied()
                .unwrap_or(false)
        } else {
            defined(f).is_some_and(|i| unw[i])
        }
    };
    loop {
        let indirect: Vec<bool> = targets
            .iter()
            .map(|ts| ts.iter().any(|f| reaches(&unwindable, *f)))
            .collect();
        let mut changed = false;
        for i in 0..n {
            if unwindable[i] {
                continue;
            }
            let b = &s.bodies[i];
            if b.calls.iter().any(|f| reaches(&unwindable, *f))
                || b.indirect
                    .iter()
                    .any(|t| indirect.get(*t as usize).copied().unwrap_or(true))
            {
                unwindable[i] = true;
                changed = true;
            }
        }
        if !changed {
            p.indirect = indirect;
            break;
        }
    }
    let mut next = imported + n as u32;
    p.rewind = unwindable
        .iter()
        .map(|u| {
            u.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    p.copy_of = (0..n as u32)
        .filter(|i| unwindable[*i as usize])
        .map(|i| imported + i)
        .collect();
    p.unwindable = unwindable;
}

/// Instruments `wasm` (binary) for freezing.
pub fn instrument(wasm: &[u8]) -> Result<Instrumented, InstrumentError> {
    instrument_with(wasm, true, true, MAX_FAST_CODE)
}

/// Only [`Instrumented::runnable`]: what a first launch waits for, without
/// the rewind copies (two thirds of the rewriting), which the whole
/// module's compilation makes later with [`instrument`]. The same module
/// as `instrument(wasm)?.runnable`.
pub fn instrument_runnable(wasm: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    Ok(instrument_with(wasm, true, false, MAX_FAST_CODE)?.runnable)
}

/// Instruments `wasm`: its runnable part, and with `whole` its whole module
/// too (else `Instrumented::wasm` is empty).
fn instrument_with(
    wasm: &[u8],
    counted_polls: bool,
    whole: bool,
    max_fast: usize,
) -> Result<Instrumented, InstrumentError> {
    let mut s = survey(wasm)?;
    s.plan.counted_polls = counted_polls;
    plan(&mut s);
    if s.code_size > WHOLE_MAX_CODE {
        // Its rewind copies will be made on demand: they must be makeable.
        if let Some(why) = on_demand::refusal(&s) {
            return Err(unsupported(format!(
                "{why}, and its code is too large to be compiled whole"
            )));
        }
        if whole {
            return Err(unsupported(format!(
                "its code is past the {} MiB a node compiles whole with its rewind copies",
                WHOLE_MAX_CODE >> 20
            )));
        }
    }
    let consts = Consts::of(&s);
    let too_large = |f: &wasm_encoder::Function| -> Result<(), InstrumentError> {
        let len = f.byte_len();
        if len > MAX_FUNCTION_SIZE {
            return Err(unsupported(format!(
                "a function would be {len} bytes once instrumented, past the engine's limit of {MAX_FUNCTION_SIZE}"
            )));
        }
        Ok(())
    };
    let mut fast = Vec::with_capacity(s.bodies.len());
    let mut fast_code = 0usize;
    let mut instrumenters = Vec::new();
    let mut poll_record = 0u32;
    for (i, body) in s.bodies.iter().enumerate() {
        if !s.plan.unwindable[i] {
            fast.push(None);
            continue;
        }
        let sig = s
            .plan
            .func_sig(body.index)
            .ok_or_else(|| parse_error("a function of no function type"))?;
        let ins = Instrumenter::new(&s.plan, &consts, body, sig)?;
        let f = ins.fast()?;
        too_large(&f.code)?;
        poll_record = poll_record.max(ins.largest_poll_record());
        fast_code += f.code.byte_len();
        if fast_code > max_fast {
            return Err(unsupported(format!(
                "its instrumented code would be past {} MiB, more than a node compiles for freezing (its whole module would take minutes and gigabytes to compile)",
                max_fast >> 20
            )));
        }
        // A rewind copy is 3 to 5 times its fast copy: a large function's is
        // made even for the runnable part alone, to refuse now (as not
        // freezable) a module whose whole one the engine would not take.
        if !whole && f.code.byte_len() > MAX_FUNCTION_SIZE / 16 {
            too_large(&ins.rewind()?.code)?;
        }
        fast.push(Some(f));
        instrumenters.push(ins);
    }
    // (original index, type, rewind copy: none when only the runnable part
    // is made, whose rewind copies are stubs).
    let mut rewinds = Vec::with_capacity(instrumenters.len());
    for ins in &instrumenters {
        let r = if whole {
            let r = ins.rewind()?;
            too_large(&r.code)?;
            Some(r)
        } else {
            None
        };
        rewinds.push((ins.body.index, ins.body.type_index, r));
    }
    drop(instrumenters);
    let globals = s
        .globals
        .iter()
        .filter(|(_, m, _)| *m)
        .map(|(i, _, _)| *i)
        .collect();
    let rewind_start = s.start_export.and_then(|f| s.plan.rewind_of(f));
    let assemble = |stubs: bool| -> Result<Vec<u8>, InstrumentError> {
        let mut a = Assembler {
            s: &s,
            consts: &consts,
            fast: &fast,
            rewinds: &rewinds,
            stubs,
            rewind_start,
            stack_pages: stack_pages(poll_record),
            next_body: 0,
            done: [false; 13],
        };
        let mut module = wasm_encoder::Module::new();
        a.parse_core_module(&mut module, Parser::new(0), wasm)
            .map_err(parse_error)?;
        Ok(module.finish())
    };
    Ok(Instrumented {
        wasm: if whole { assemble(false)? } else { Vec::new() },
        runnable: assemble(true)?,
        memories: s.memories,
        globals,
    })
}

#[cfg(test)]
mod tests;
