//! `Assembler`: the instrumented module written out, the original sections
//! re-encoded with what the instrumentation adds appended to each (the
//! copies, the flag and unwind-stack memories, the globals,
//! exports and the table of rewind copies).

use super::func::FuncCopy;
use super::{
    Consts, FLAG_MAX_PAGES, FLAG_MEMORY, NOUNWIND_GLOBAL, PTR_GLOBAL, REWIND, REWIND_TABLE,
    STACK_MAX_PAGES, STACK_MEMORY, STATE_GLOBAL, Survey, global_export, memory_export, rank,
    table_export, tag_export,
};
use std::collections::HashMap;
use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{ExportKind, MemoryType};

/// What a rewind copy is in [`Instrumented::runnable`](super::Instrumented::runnable): a trap, of the same
/// type, so that every other function keeps its index.
fn stub() -> wasm_encoder::Function {
    let mut f = wasm_encoder::Function::new([]);
    f.instruction(&wasm_encoder::Instruction::Unreachable);
    f.instruction(&wasm_encoder::Instruction::End);
    f
}

/// Writes the instrumented module: the original sections, with what the
/// instrumentation adds appended to each.
pub(super) struct Assembler<'s, 'a> {
    pub(super) s: &'s Survey<'a>,
    pub(super) consts: &'s Consts,
    pub(super) fast: &'s [Option<FuncCopy>],
    /// (original index, type, rewind copy), in order.
    pub(super) rewinds: &'s [(u32, u32, Option<FuncCopy>)],
    /// Rewind copies are stubs (see [`Instrumented::runnable`](super::Instrumented::runnable)).
    pub(super) stubs: bool,
    pub(super) rewind_start: Option<u32>,
    /// The unwind stack's first size (see `stack_pages`).
    pub(super) stack_pages: u64,
    pub(super) next_body: usize,
    pub(super) done: [bool; 13],
}

impl Assembler<'_, '_> {
    fn add_functions(&mut self, funcs: &mut wasm_encoder::FunctionSection) {
        for (_, t, _) in self.rewinds {
            funcs.function(*t);
        }
        self.done[2] = true;
    }

    fn add_table(&mut self, tables: &mut wasm_encoder::TableSection) {
        let n = self.s.plan.func_types.len() as u64;
        let by_function = wasm_encoder::TableType {
            element_type: wasm_encoder::RefType::FUNCREF,
            table64: false,
            minimum: n,
            maximum: Some(n),
            shared: false,
        };
        // The rewind copies, then every function (for rewind copies made
        // on demand to link to).
        tables.table(by_function);
        tables.table(by_function);
        self.done[3] = true;
    }

    fn add_memories(&mut self, memories: &mut wasm_encoder::MemorySection) {
        memories.memory(MemoryType {
            minimum: 1,
            maximum: Some(FLAG_MAX_PAGES),
            memory64: false,
            shared: true,
            page_size_log2: None,
        });
        memories.memory(MemoryType {
            minimum: self.stack_pages.min(STACK_MAX_PAGES),
            maximum: Some(STACK_MAX_PAGES),
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        self.done[4] = true;
    }

    fn add_globals(&mut self, globals: &mut wasm_encoder::GlobalSection) {
        for _ in 0..3 {
            globals.global(
                wasm_encoder::GlobalType {
                    val_type: wasm_encoder::ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &wasm_encoder::ConstExpr::i32_const(0),
            );
        }
        self.done[6] = true;
    }

    fn add_exports(&mut self, exports: &mut wasm_encoder::ExportSection) {
        let c = self.consts;
        for i in 0..self.s.memories {
            exports.export(&memory_export(i), ExportKind::Memory, i);
        }
        // All of them, for rewind copies made on demand to link to (only
        // the mutable ones are part of an image).
        for (i, _, _) in &self.s.globals {
            exports.export(&global_export(*i), ExportKind::Global, *i);
        }
        for i in 0..self.s.tables {
            exports.export(&table_export(i), ExportKind::Table, i);
        }
        for i in 0..self.s.tags.len() as u32 {
            exports.export(&tag_export(i), ExportKind::Tag, i);
        }
        exports.export(super::FUNCS_TABLE, ExportKind::Table, c.funcs_table);
        exports.export(FLAG_MEMORY, ExportKind::Memory, c.flag_memory);
        exports.export(STACK_MEMORY, ExportKind::Memory, c.stack_memory);
        exports.export(STATE_GLOBAL, ExportKind::Global, c.state_global);
        exports.export(PTR_GLOBAL, ExportKind::Global, c.ptr_global);
        exports.export(NOUNWIND_GLOBAL, ExportKind::Global, c.nounwind_global);
        if let Some(r) = self.rewind_start.filter(|_| !self.stubs) {
            exports.export(REWIND, ExportKind::Func, r);
        }
        exports.export(REWIND_TABLE, ExportKind::Table, c.rewind_table);
        self.done[7] = true;
    }

    /// The rewind table (each function's rewind copy, or an import that can
    /// unwind, by function index; empty with stubs) and the table of every
    /// function. Written as function indices, in runs of entries that are
    /// not null (a table starts null), never as expressions: the engine
    /// builds tables given by indices lazily, but one segment of
    /// expressions makes it evaluate that segment and every later one,
    /// each entry a call into the runtime, at every instantiation (a third
    /// of a small program's launch, and growing with the functions).
    fn add_elements(&mut self, elements: &mut wasm_encoder::ElementSection) {
        let p = &self.s.plan;
        let rewind: Vec<Option<u32>> = (0..p.func_types.len() as u32)
            .map(|f| {
                if self.stubs {
                    None
                } else if let Some(r) = p.rewind_of(f) {
                    Some(r)
                } else {
                    p.unwinding_import(f).then_some(f)
                }
            })
            .collect();
        let mut at = 0;
        while at < rewind.len() {
            let run: Vec<u32> = rewind[at..].iter().map_while(|r| *r).collect();
            if run.is_empty() {
                at += 1;
                continue;
            }
            elements.active(
                Some(self.consts.rewind_table),
                &wasm_encoder::ConstExpr::i32_const(at as i32),
                wasm_encoder::Elements::Functions(run.as_slice().into()),
            );
            at += run.len();
        }
        let all: Vec<u32> = (0..p.func_types.len() as u32).collect();
        elements.active(
            Some(self.consts.funcs_table),
            &wasm_encoder::ConstExpr::i32_const(0),
            wasm_encoder::Elements::Functions(all.into()),
        );
        self.done[9] = true;
    }

    /// The copies' branch hints (see [`FuncCopy`]), by function index.
    fn branch_hints(&self) -> Option<wasm_encoder::BranchHints> {
        let p = &self.s.plan;
        let fast = self
            .fast
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((p.imported + i as u32, f.as_ref()?)));
        let rewinds = self
            .rewinds
            .iter()
            .filter(|_| !self.stubs)
            .filter_map(|(f, _, r)| Some((p.rewind_of(*f)?, r.as_ref()?)));
        let mut all: Vec<(u32, &FuncCopy)> = fast.chain(rewinds).collect();
        all.retain(|(_, c)| !c.hints.is_empty());
        if all.is_empty() {
            return None;
        }
        all.sort_by_key(|(i, _)| *i);
        let mut hints = wasm_encoder::BranchHints::new();
        for (i, c) in all {
            hints.function_hints(
                i,
                c.hints.iter().map(|&o| wasm_encoder::BranchHint {
                    branch_func_offset: o,
                    branch_hint_value: 0,
                }),
            );
        }
        Some(hints)
    }
}

impl Reencode for Assembler<'_, '_> {
    type Error = std::convert::Infallible;

    fn parse_function_section(
        &mut self,
        funcs: &mut wasm_encoder::FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_function_section(self, funcs, section)?;
        self.add_functions(funcs);
        Ok(())
    }

    fn parse_table_section(
        &mut self,
        tables: &mut wasm_encoder::TableSection,
        section: wasmparser::TableSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_table_section(self, tables, section)?;
        self.add_table(tables);
        Ok(())
    }

    fn parse_memory_section(
        &mut self,
        memories: &mut wasm_encoder::MemorySection,
        section: wasmparser::MemorySectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_memory_section(self, memories, section)?;
        self.add_memories(memories);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_globals(globals);
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

    fn parse_element_section(
        &mut self,
        elements: &mut wasm_encoder::ElementSection,
        section: wasmparser::ElementSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_element_section(self, elements, section)?;
        self.add_elements(elements);
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        for body in section {
            let body = body?;
            match self.fast.get(self.next_body).and_then(Option::as_ref) {
                Some(f) => {
                    code.function(&f.code);
                }
                None => reencode::utils::parse_function_body(self, code, body)?,
            }
            self.next_body += 1;
        }
        let stub = stub();
        for (_, _, f) in self.rewinds {
            code.function(match f {
                Some(f) if !self.stubs => &f.code,
                _ => &stub,
            });
        }
        Ok(())
    }

    fn parse_custom_name_subsection(
        &mut self,
        names: &mut wasm_encoder::NameSection,
        section: wasmparser::Name<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        match section {
            // Rewind copies carry their function's name, so that a trap in
            // one reads as it would in the function.
            wasmparser::Name::Function(map) => {
                let mut by_index: HashMap<u32, String> = HashMap::new();
                let mut out = wasm_encoder::NameMap::new();
                for naming in map {
                    let naming = naming?;
                    by_index.insert(naming.index, naming.name.to_string());
                    out.append(naming.index, naming.name);
                }
                for (f, _, _) in self.rewinds {
                    if let (Some(r), Some(name)) = (self.s.plan.rewind_of(*f), by_index.get(f)) {
                        out.append(r, name);
                    }
                }
                names.functions(&out);
                Ok(())
            }
            _ => reencode::utils::parse_custom_name_subsection(self, names, section),
        }
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        // The module's own code metadata (branch hints and the like) names
        // places in code that the copies have moved: it is left out.
        if section.name().starts_with("metadata.code.") {
            return Ok(());
        }
        reencode::utils::parse_custom_section(self, module, section)
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
        let has = self.s.has_sections;
        let missing = |done: &[bool; 13], id: S| {
            let r = rank(id as u8) as usize;
            !has[r] && !done[r] && next > r as u8
        };
        if missing(&self.done, S::Function) && !self.rewinds.is_empty() {
            let mut funcs = wasm_encoder::FunctionSection::new();
            self.add_functions(&mut funcs);
            module.section(&funcs);
        }
        if missing(&self.done, S::Table) {
            let mut tables = wasm_encoder::TableSection::new();
            self.add_table(&mut tables);
            module.section(&tables);
        }
        if missing(&self.done, S::Memory) {
            let mut memories = wasm_encoder::MemorySection::new();
            self.add_memories(&mut memories);
            module.section(&memories);
        }
        if missing(&self.done, S::Global) {
            let mut globals = wasm_encoder::GlobalSection::new();
            self.add_globals(&mut globals);
            module.section(&globals);
        }
        if missing(&self.done, S::Export) {
            let mut exports = wasm_encoder::ExportSection::new();
            self.add_exports(&mut exports);
            module.section(&exports);
        }
        if missing(&self.done, S::Element) {
            let mut elements = wasm_encoder::ElementSection::new();
            self.add_elements(&mut elements);
            module.section(&elements);
        }
        // Code metadata comes before the code.
        if before == Some(S::Code)
            && let Some(hints) = self.branch_hints()
        {
            module.section(&hints);
        }
        Ok(())
    }
}
