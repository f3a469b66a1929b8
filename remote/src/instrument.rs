//! Instrumentation: what makes a body freezable anywhere.
//!
//! A module is rewritten in three steps before it is compiled:
//!
//! 1. **Poll points** ([`add_poll_points`], with `wasm-encoder`'s re-encoder): at
//!    every loop header and at the entry of every function that can recurse
//!    (is on a cycle of the call graph),
//!    `i32.load (memory $flag) 0; if; call $ssi_rt.poll; end`. The flag lives in
//!    a one-page *shared* memory of its own, so the host can raise it from any
//!    thread without stopping the body; the host is called only once it is
//!    raised. The same step exports every memory, every mutable global
//!    (exported or not: `__stack_pointer` never is) and the flag memory, under
//!    the names of this module's constants.
//! 2. **Asyncify** (binaryen, through the `wasm-opt` crate) rewrites every
//!    function so that the host can unwind the Wasm stack into data and later
//!    rewind it. Its state lives in a secondary memory of its own
//!    (`asyncify-in-secondary-memory`), so the guest's memory and globals are
//!    left as they were.
//! 3. The secondary memory is exported ([`ASYNCIFY_MEMORY`]).
//!
//! Modules that Asyncify cannot handle (tail calls, exception handling) or
//! whose tables change at run time (a ghost could not name the functions in
//! them) are refused with [`InstrumentError::Unsupported`]: they still run,
//! but cannot be frozen.

use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{ExportKind, Instruction, MemArg, MemoryType};
use wasmparser::{Operator, Parser, Payload, TypeRef};

/// The version of the instrumentation: part of the compiled-code cache's key
/// and of every ghost image, since an unwound stack can only be rewound by
/// the same instrumented code. Raised with every change to what it emits.
pub const VERSION: u32 = 3;

/// The import module of the host functions the instrumentation calls.
pub const RT_MODULE: &str = "ssi_rt";
/// `ssi_rt.poll`: called at a poll point once the flag is raised.
pub const POLL: &str = "poll";
/// The export name of the flag memory.
pub const FLAG_MEMORY: &str = "__ssi_flag";
/// The export name of Asyncify's memory.
pub const ASYNCIFY_MEMORY: &str = "__ssi_asyncify";
/// Pages of Asyncify's memory: the deepest stack that can be unwound.
pub const STACK_PAGES: u32 = 64;
/// Where Asyncify's data structure (`current`, `end`) sits in its memory.
pub const STACK_DATA: u32 = 0;
/// Where the unwound stack starts in Asyncify's memory.
pub const STACK_START: u32 = 8;

/// The imports that may unwind the stack (Asyncify's `asyncify-imports`): the
/// poll point's call, and the system calls that wait and can be cut short by
/// a freeze to be made again after the rewind.
pub const UNWINDING_IMPORTS: [&str; 4] = [
    "ssi_rt.poll",
    "wasi_snapshot_preview1.fd_read",
    "wasi_snapshot_preview1.poll_oneoff",
    "ssi.waitpid",
];

/// The export name of the module's memory `index`.
pub fn memory_export(index: u32) -> String {
    format!("__ssi_memory_{index}")
}

/// The export name of the module's global `index`.
pub fn global_export(index: u32) -> String {
    format!("__ssi_global_{index}")
}

/// Why a module cannot be instrumented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    #[error("it cannot be frozen: {0}")]
    Unsupported(String),
    #[error("it cannot be read: {0}")]
    Parse(String),
    #[error("binaryen's Asyncify failed: {0}")]
    Asyncify(String),
}

/// A module after instrumentation.
#[derive(Debug, Clone)]
pub struct Instrumented {
    pub wasm: Vec<u8>,
    /// The module's memories, in index order.
    pub memories: u32,
    /// The indices of the module's mutable globals, each exported as
    /// [`global_export`].
    pub globals: Vec<u32>,
}

/// Instruments `wasm` (binary) for freezing: all three steps.
pub fn instrument(wasm: &[u8]) -> Result<Instrumented, InstrumentError> {
    let polled = add_poll_points(wasm)?;
    let asyncified = asyncify(&polled.wasm)?;
    let wasm = export_last_memory(&asyncified, ASYNCIFY_MEMORY)?;
    Ok(Instrumented {
        wasm,
        memories: polled.memories,
        globals: polled.globals,
    })
}

/// What a first look at a module finds.
#[derive(Debug, Default)]
struct Survey {
    types: u32,
    imported_funcs: u32,
    /// Per defined function: the functions it calls directly.
    calls: Vec<Vec<u32>>,
    /// Per defined function: whether it calls through a table or a reference.
    indirect: Vec<bool>,
    /// Functions that can be called through a table or a reference.
    referenced: Vec<u32>,
    memories: u32,
    /// (index, mutable) of every global.
    globals: Vec<(u32, bool)>,
    has_types: bool,
    has_imports: bool,
    has_memories: bool,
    has_exports: bool,
}

fn parse_error(e: impl std::fmt::Display) -> InstrumentError {
    InstrumentError::Parse(e.to_string())
}

fn unsupported(why: impl Into<String>) -> InstrumentError {
    InstrumentError::Unsupported(why.into())
}

fn survey(wasm: &[u8]) -> Result<Survey, InstrumentError> {
    let mut s = Survey::default();
    let mut global = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(parse_error)? {
            Payload::TypeSection(r) => {
                s.has_types = true;
                for group in r {
                    s.types += group.map_err(parse_error)?.types().len() as u32;
                }
            }
            Payload::ImportSection(r) => {
                s.has_imports = true;
                for imports in r {
                    for import in imports.map_err(parse_error)? {
                        let (_, import) = import.map_err(parse_error)?;
                        if import.module == RT_MODULE {
                            return Err(unsupported(format!(
                                "it imports from `{RT_MODULE}`, which is reserved"
                            )));
                        }
                        match import.ty {
                            TypeRef::Func(_) | TypeRef::FuncExact(_) => s.imported_funcs += 1,
                            TypeRef::Memory(_) => s.memories += 1,
                            TypeRef::Global(g) => {
                                s.globals.push((global, g.mutable));
                                global += 1;
                            }
                            TypeRef::Tag(_) => {
                                return Err(unsupported("it uses Wasm exceptions"));
                            }
                            TypeRef::Table(_) => {}
                        }
                    }
                }
            }
            Payload::MemorySection(r) => {
                s.has_memories = true;
                s.memories += r.count();
            }
            Payload::GlobalSection(r) => {
                for g in r {
                    let g = g.map_err(parse_error)?;
                    s.globals.push((global, g.ty.mutable));
                    global += 1;
                }
            }
            Payload::TagSection(_) => return Err(unsupported("it uses Wasm exceptions")),
            Payload::ExportSection(r) => {
                s.has_exports = true;
                for e in r {
                    let e = e.map_err(parse_error)?;
                    if e.name.starts_with("__ssi_") || e.name.starts_with("asyncify_") {
                        return Err(unsupported(format!(
                            "it exports `{}`, a reserved name",
                            e.name
                        )));
                    }
                }
            }
            Payload::ElementSection(r) => {
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
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().map_err(parse_error)?;
                let (mut calls, mut indirect) = (Vec::new(), false);
                while !ops.eof() {
                    let op = ops.read().map_err(parse_error)?;
                    check_operator(&op)?;
                    match op {
                        Operator::Call { function_index } => calls.push(function_index),
                        Operator::CallIndirect { .. } | Operator::CallRef { .. } => indirect = true,
                        Operator::RefFunc { function_index } => s.referenced.push(function_index),
                        _ => {}
                    }
                }
                s.calls.push(calls);
                s.indirect.push(indirect);
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Refuses what Asyncify cannot unwind, and what changes a table.
fn check_operator(op: &Operator<'_>) -> Result<(), InstrumentError> {
    match op {
        Operator::ReturnCall { .. }
        | Operator::ReturnCallIndirect { .. }
        | Operator::ReturnCallRef { .. } => Err(unsupported("it uses tail calls")),
        Operator::Try { .. }
        | Operator::Catch { .. }
        | Operator::CatchAll
        | Operator::Delegate { .. }
        | Operator::Rethrow { .. }
        | Operator::Throw { .. }
        | Operator::ThrowRef
        | Operator::TryTable { .. } => Err(unsupported("it uses Wasm exceptions")),
        Operator::TableSet { .. }
        | Operator::TableGrow { .. }
        | Operator::TableFill { .. }
        | Operator::TableCopy { .. }
        | Operator::TableInit { .. } => Err(unsupported("it changes a table at run time")),
        _ => Ok(()),
    }
}

/// Which defined functions need a poll point at their entry: those that can
/// call themselves again, directly or through others (a cycle of the call
/// graph, where a call through a table or a reference may reach any function
/// that is in a table or referenced). Every endless run either loops, and
/// meets the poll point of a loop header, or recurses, and meets one of these;
/// a function on no cycle ends after a bounded number of steps between them.
fn recursive_functions(s: &Survey) -> Vec<bool> {
    let imported = s.imported_funcs;
    let n = s.calls.len();
    let defined = |f: u32| {
        f.checked_sub(imported)
            .map(|i| i as usize)
            .filter(|i| *i < n)
    };
    let mut referenced: Vec<usize> = s.referenced.iter().filter_map(|f| defined(*f)).collect();
    referenced.sort_unstable();
    referenced.dedup();
    let edges: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let mut out: Vec<usize> = s.calls[i].iter().filter_map(|f| defined(*f)).collect();
            if s.indirect[i] {
                out.extend_from_slice(&referenced);
            }
            out.sort_unstable();
            out.dedup();
            out
        })
        .collect();
    // Tarjan's strongly connected components, without recursion.
    const NONE: usize = usize::MAX;
    let (mut index, mut low) = (vec![NONE; n], vec![0usize; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut next) = (Vec::new(), 0usize);
    let mut on_cycle = vec![false; n];
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
                let cycle = members.len() > 1 || edges[v].contains(&v);
                for m in members {
                    on_cycle[m] = cycle;
                }
            }
        }
    }
    on_cycle
}

/// The module with poll points, and what it exports for the host.
#[derive(Debug)]
pub struct Polled {
    pub wasm: Vec<u8>,
    pub memories: u32,
    pub globals: Vec<u32>,
}

/// Step 1: adds the flag memory, `ssi_rt.poll`, a poll point at every function
/// entry and loop header, and the exports of memories and mutable globals.
pub fn add_poll_points(wasm: &[u8]) -> Result<Polled, InstrumentError> {
    let s = survey(wasm)?;
    let mut r = Poller {
        entry_polls: recursive_functions(&s),
        next_body: 0,
        poll_type: s.types,
        poll_func: s.imported_funcs,
        flag_memory: s.memories,
        done_types: false,
        done_imports: false,
        done_memories: false,
        done_exports: false,
        survey: s,
    };
    let mut module = wasm_encoder::Module::new();
    r.parse_core_module(&mut module, Parser::new(0), wasm)
        .map_err(parse_error)?;
    let globals = r
        .survey
        .globals
        .iter()
        .filter(|(_, m)| *m)
        .map(|(i, _)| *i)
        .collect();
    Ok(Polled {
        wasm: module.finish(),
        memories: r.survey.memories,
        globals,
    })
}

struct Poller {
    survey: Survey,
    /// Per defined function: whether it gets a poll point at its entry.
    entry_polls: Vec<bool>,
    /// The defined function whose body comes next.
    next_body: usize,
    poll_type: u32,
    poll_func: u32,
    flag_memory: u32,
    done_types: bool,
    done_imports: bool,
    done_memories: bool,
    done_exports: bool,
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

impl Poller {
    fn poll(&self, f: &mut wasm_encoder::Function) {
        f.instruction(&Instruction::I32Const(0));
        f.instruction(&Instruction::I32Load(MemArg {
            offset: 0,
            align: 2,
            target: wasm_encoder::MemArgTarget::Memory(self.flag_memory),
            ordering: None,
        }));
        f.instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
        f.instruction(&Instruction::Call(self.poll_func));
        f.instruction(&Instruction::End);
    }

    fn add_type(&mut self, types: &mut wasm_encoder::TypeSection) {
        types.ty().function([], []);
        self.done_types = true;
    }

    fn add_import(&mut self, imports: &mut wasm_encoder::ImportSection) {
        imports.import(
            RT_MODULE,
            POLL,
            wasm_encoder::EntityType::Function(self.poll_type),
        );
        self.done_imports = true;
    }

    fn add_memory(&mut self, memories: &mut wasm_encoder::MemorySection) {
        memories.memory(MemoryType {
            minimum: 1,
            maximum: Some(1),
            memory64: false,
            shared: true,
            page_size_log2: None,
        });
        self.done_memories = true;
    }

    fn add_exports(&mut self, exports: &mut wasm_encoder::ExportSection) {
        for i in 0..self.survey.memories {
            exports.export(&memory_export(i), ExportKind::Memory, i);
        }
        for (i, mutable) in &self.survey.globals {
            if *mutable {
                exports.export(&global_export(*i), ExportKind::Global, *i);
            }
        }
        exports.export(FLAG_MEMORY, ExportKind::Memory, self.flag_memory);
        self.done_exports = true;
    }
}

impl Reencode for Poller {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error<Self::Error>> {
        Ok(if func >= self.poll_func {
            func + 1
        } else {
            func
        })
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_type_section(self, types, section)?;
        self.add_type(types);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut wasm_encoder::ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_import_section(self, imports, section)?;
        self.add_import(imports);
        Ok(())
    }

    fn parse_memory_section(
        &mut self,
        memories: &mut wasm_encoder::MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_memory_section(self, memories, section)?;
        self.add_memory(memories);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        self.add_exports(exports);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<wasm_encoder::SectionId>,
        before: Option<wasm_encoder::SectionId>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        use wasm_encoder::SectionId as S;
        // Adds the sections the module lacks, each where the format wants it.
        let next = before.map(|b| rank(b as u8)).unwrap_or(u8::MAX);
        let missing = |has: bool, done: bool, id: S| !has && !done && next > rank(id as u8);
        if missing(self.survey.has_types, self.done_types, S::Type) {
            let mut types = wasm_encoder::TypeSection::new();
            self.add_type(&mut types);
            module.section(&types);
        }
        if missing(self.survey.has_imports, self.done_imports, S::Import) {
            let mut imports = wasm_encoder::ImportSection::new();
            self.add_import(&mut imports);
            module.section(&imports);
        }
        if missing(self.survey.has_memories, self.done_memories, S::Memory) {
            let mut memories = wasm_encoder::MemorySection::new();
            self.add_memory(&mut memories);
            module.section(&memories);
        }
        if missing(self.survey.has_exports, self.done_exports, S::Export) {
            let mut exports = wasm_encoder::ExportSection::new();
            self.add_exports(&mut exports);
            module.section(&exports);
        }
        Ok(())
    }

    fn parse_custom_name_subsection(
        &mut self,
        names: &mut wasm_encoder::NameSection,
        section: wasmparser::Name<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        // Binaryen reads module, function and local names, and warns (on
        // stderr, the program's) about the rest: they are left out.
        match section {
            wasmparser::Name::Module { .. }
            | wasmparser::Name::Function(_)
            | wasmparser::Name::Local(_) => {
                reencode::utils::parse_custom_name_subsection(self, names, section)
            }
            _ => Ok(()),
        }
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let mut f = self.new_function_with_parsed_locals(&func)?;
        let mut reader = func.get_operators_reader()?;
        if self
            .entry_polls
            .get(self.next_body)
            .copied()
            .unwrap_or(true)
        {
            self.poll(&mut f);
        }
        self.next_body += 1;
        while !reader.eof() {
            let instruction = self.parse_instruction(&mut reader)?;
            f.instruction(&instruction);
            if matches!(instruction, Instruction::Loop(_)) {
                self.poll(&mut f);
            }
        }
        code.function(&f);
        Ok(())
    }
}

/// Step 2: binaryen's Asyncify, its state in a memory of its own.
fn asyncify(wasm: &[u8]) -> Result<Vec<u8>, InstrumentError> {
    let dir = tempfile::tempdir().map_err(|e| InstrumentError::Asyncify(e.to_string()))?;
    let input = dir.path().join("in.wasm");
    let output = dir.path().join("out.wasm");
    std::fs::write(&input, wasm).map_err(|e| InstrumentError::Asyncify(e.to_string()))?;
    let pages = STACK_PAGES.to_string();
    wasm_opt::OptimizationOptions::new_opt_level_1()
        .add_default_passes(false)
        .all_features()
        .debug_info(true)
        .add_pass(wasm_opt::Pass::Asyncify)
        // Only these can unwind: a raised flag, and the calls that wait (a
        // read of a stream, a sleep). Functions that reach none of them are
        // left as they were.
        .set_pass_arg("asyncify-imports", &UNWINDING_IMPORTS.join(","))
        .set_pass_arg("asyncify-in-secondary-memory", "")
        .set_pass_arg("asyncify-secondary-memory-size", &pages)
        .run(&input, &output)
        .map_err(|e| InstrumentError::Asyncify(e.to_string()))?;
    std::fs::read(&output).map_err(|e| InstrumentError::Asyncify(e.to_string()))
}

/// Step 3: exports the module's last memory (Asyncify's) as `name`.
fn export_last_memory(wasm: &[u8], name: &str) -> Result<Vec<u8>, InstrumentError> {
    let s = survey_memories(wasm)?;
    if s == 0 {
        return Err(InstrumentError::Asyncify("it added no memory".into()));
    }
    struct Exporter<'a> {
        name: &'a str,
        memory: u32,
    }
    impl Reencode for Exporter<'_> {
        type Error = std::convert::Infallible;
        fn parse_export_section(
            &mut self,
            exports: &mut wasm_encoder::ExportSection,
            section: wasmparser::ExportSectionReader<'_>,
        ) -> Result<(), reencode::Error<Self::Error>> {
            reencode::utils::parse_export_section(self, exports, section)?;
            exports.export(self.name, ExportKind::Memory, self.memory);
            Ok(())
        }
    }
    let mut module = wasm_encoder::Module::new();
    Exporter {
        name,
        memory: s - 1,
    }
    .parse_core_module(&mut module, Parser::new(0), wasm)
    .map_err(parse_error)?;
    Ok(module.finish())
}

fn survey_memories(wasm: &[u8]) -> Result<u32, InstrumentError> {
    let mut n = 0;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(parse_error)? {
            Payload::ImportSection(r) => {
                for imports in r {
                    for import in imports.map_err(parse_error)? {
                        if matches!(import.map_err(parse_error)?.1.ty, TypeRef::Memory(_)) {
                            n += 1;
                        }
                    }
                }
            }
            Payload::MemorySection(r) => n += r.count(),
            _ => {}
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("valid text")
    }

    #[test]
    fn poll_points_keep_the_module_valid_and_shift_calls() {
        let wasm = wat(r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (global $sp (mut i32) (i32.const 1024))
            (table 2 funcref)
            (elem (i32.const 0) $f $g)
            (func $f (result i32) (local i32)
                (loop $l (local.set 0 (i32.add (local.get 0) (i32.const 1)))
                    (br_if $l (i32.lt_u (local.get 0) (i32.const 10))))
                (local.get 0))
            (func $g (result i32) (call $f))
            (func (export "_start") (drop (call_indirect (result i32) (i32.const 1)))))"#);
        let p = add_poll_points(&wasm).expect("instrumented");
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&p.wasm)
            .expect("valid");
        assert_eq!(p.globals, vec![0]);
        assert_eq!(p.memories, 1);
        let text = wasmprinter_free_check(&p.wasm);
        assert!(text.contains(&global_export(0)));
        assert!(text.contains(FLAG_MEMORY));
    }

    #[test]
    fn only_functions_that_can_recurse_poll_at_their_entry() {
        let wasm = wat(r#"(module
            (table 1 funcref)
            (elem (i32.const 0) $through_table)
            (func $leaf (result i32) (i32.const 1))
            (func $calls_leaf (result i32) (call $leaf))
            (func $even (param i32) (result i32)
                (if (result i32) (local.get 0)
                    (then (call $odd (i32.sub (local.get 0) (i32.const 1))))
                    (else (i32.const 1))))
            (func $odd (param i32) (result i32)
                (if (result i32) (local.get 0)
                    (then (call $even (i32.sub (local.get 0) (i32.const 1))))
                    (else (i32.const 0))))
            (func $self (param i32) (result i32) (call $self (local.get 0)))
            (func $through_table (result i32) (call_indirect (result i32) (i32.const 0)))
            (func (export "_start") (drop (call $calls_leaf))))"#);
        let s = survey(&wasm).expect("survey");
        assert_eq!(
            recursive_functions(&s),
            vec![false, false, true, true, true, true, false]
        );
    }

    /// The names exported, from the export section.
    fn wasmprinter_free_check(wasm: &[u8]) -> String {
        let mut names = String::new();
        for payload in Parser::new(0).parse_all(wasm) {
            if let Ok(Payload::ExportSection(r)) = payload {
                for e in r.into_iter().flatten() {
                    names.push_str(e.name);
                    names.push(' ');
                }
            }
        }
        names
    }

    #[test]
    fn a_module_without_imports_or_exports_gets_them() {
        let wasm = wat(r#"(module (func (loop (br 0))) (start 0))"#);
        let p = add_poll_points(&wasm).expect("instrumented");
        wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&p.wasm)
            .expect("valid");
    }

    #[test]
    fn unsupported_modules_say_why() {
        let tail = wat(r#"(module (func $f (return_call $f)))"#);
        assert!(matches!(
            add_poll_points(&tail),
            Err(InstrumentError::Unsupported(why)) if why.contains("tail calls")
        ));
        let tables = wat(
            r#"(module (table 1 funcref) (func $f (table.set (i32.const 0) (ref.func $f))) (elem declare func $f))"#,
        );
        assert!(matches!(
            add_poll_points(&tables),
            Err(InstrumentError::Unsupported(why)) if why.contains("table")
        ));
        assert!(matches!(
            add_poll_points(b"\0asm\x01\0\0\0\x01\xff"),
            Err(InstrumentError::Parse(_))
        ));
    }
}
