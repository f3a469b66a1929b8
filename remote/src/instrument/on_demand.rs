//! Rewind copies made on demand, for a module too large to be compiled
//! whole (see [`super::WHOLE_MAX_CODE`]).
//!
//! Such a module runs on its runnable part alone, which has no rewind copies.
//! To put an unwound stack back, the node walks the stack's records
//! ([`rewind_module`]) and makes a small module of the rewind copies of the
//! functions on it, which imports everything else from the instance it
//! rewinds into:
//!
//! ```text
//!  imports   every function its copies call, by index, taken from the
//!            instance's `__ssi_funcs` table (`__ssi_func_N`); its tables,
//!            memories, globals and tags by their reserved export names, in
//!            index order, so that the copies' indices of them are the
//!            instance's; the flag, unwind-stack and state as the instance
//!            exports them
//!  defines   the rewind copies of the functions asked for
//!  elements  its copies (and the imports that left a marker) written into
//!            the instance's table of rewind copies, by function index
//! ```
//!
//! A copy calls the rewind copy of the next frame through that table (by
//! the callee's function index), not directly: so a module of copies does
//! not depend on which others exist, and a node makes each function's copy
//! once, whatever stacks it is on. To put a stack back, an instance links
//! the modules that hold the copies of the functions on it that it lacks
//! (a new one for those never made on the node), and calls `_start`'s copy
//! from the table.
//!
//! Records are the same whichever copy writes them, so a stack unwound
//! again from these copies is put back by the modules made for it. A
//! function whose rewind copy would use a data or element segment
//! (`memory.init` and the like) cannot be made this way, since the segments
//! are the instance's own: such a module is compiled whole, or, past
//! `WHOLE_MAX_CODE`, refused as not freezable.

use super::analyze::{FuncBody, analyze, parse_error};
use super::func::Instrumenter;
use super::{
    Consts, FLAG_MAX_PAGES, FLAG_MEMORY, InstrumentError, MAX_FUNCTION_SIZE, NOUNWIND_GLOBAL,
    PTR_GLOBAL, Plan, REWIND_TABLE, STACK_MEMORY, STATE_GLOBAL, Survey, features, global_export,
    memory_export, plan, survey, table_export, tag_export,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use wasm_encoder::reencode::{self, Reencode, RoundtripReencoder};
use wasmparser::{
    FuncToValidate, Operator, Parser, Payload, ValType, Validator, ValidatorResources,
};

/// The prefix of the import names of functions: `__ssi_func_N` is the
/// instance's function `N`, entry `N` of its [`super::FUNCS_TABLE`].
pub const FUNC_IMPORT: &str = "__ssi_func_";

/// What making rewind copies on demand needs of a module, kept by a node
/// once worked out (its call graph needs every function read once).
pub struct Prepared {
    plan: Plan,
    consts: Consts,
    memory_types: Vec<wasmparser::MemoryType>,
    table_types: Vec<wasmparser::TableType>,
    tags: Vec<u32>,
    globals: Vec<(u32, bool, ValType)>,
    start_export: Option<u32>,
    n_rewinds: u32,
    /// Why rewind copies cannot be made on demand, if they cannot.
    refusal: Option<String>,
    /// The size of each site's record (by site, from 1), of each function
    /// met on a stack so far: a stack of functions met before is walked
    /// without reading the module again.
    record_sizes: std::sync::Mutex<HashMap<u32, Arc<[Option<u32>]>>>,
    located: Located,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("functions", &self.plan.func_types.len())
            .field("rewinds", &self.n_rewinds)
            .field("refusal", &self.refusal)
            .finish()
    }
}

impl Prepared {
    /// Why this module's rewind copies cannot be made on demand, if they
    /// cannot (then it must be compiled whole to be put back).
    pub fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }
}

/// Whether an operator reads or drops a data or element segment, which
/// a module of rewind copies does not have.
pub(crate) fn uses_segment(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::MemoryInit { .. }
            | Operator::DataDrop { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. }
            | Operator::ArrayNewData { .. }
            | Operator::ArrayNewElem { .. }
            | Operator::ArrayInitData { .. }
            | Operator::ArrayInitElem { .. }
    )
}

/// Why the rewind copies of a surveyed and planned module cannot be made
/// on demand, if they cannot.
pub(crate) fn refusal(s: &Survey<'_>) -> Option<String> {
    s.bodies
        .iter()
        .zip(&s.plan.unwindable)
        .find(|(b, u)| **u && b.ops.iter().any(|o| uses_segment(&o.op)))
        .map(|(b, _)| {
            format!(
                "its function {} uses a data or element segment and can be on the stack at a freeze",
                b.index
            )
        })
}

/// Works out what [`rewind_module`] needs of `wasm`: reads and plans the
/// whole module, as instrumenting it does.
pub fn prepare(wasm: &[u8]) -> Result<Prepared, InstrumentError> {
    prepare_with(wasm, true)
}

pub(crate) fn prepare_with(wasm: &[u8], counted_polls: bool) -> Result<Prepared, InstrumentError> {
    let mut s = survey(wasm)?;
    s.plan.counted_polls = counted_polls;
    plan(&mut s);
    let consts = Consts::of(&s);
    let refusal = refusal(&s);
    let n_rewinds = s.plan.rewind.iter().flatten().count() as u32;
    let Survey {
        plan,
        memory_types,
        table_types,
        tags,
        globals,
        start_export,
        ..
    } = s;
    Ok(Prepared {
        plan,
        consts,
        memory_types,
        table_types,
        tags,
        globals,
        start_export,
        n_rewinds,
        refusal,
        record_sizes: Default::default(),
        located: locate(wasm)?,
    })
}

fn stack_error(why: impl Into<String>) -> InstrumentError {
    InstrumentError::Stack(why.into())
}

/// Where a module's parts are, found once by [`prepare`]: its type
/// section and each function's body, with what validates a body, so that
/// a stack is put back without reading the whole module again.
#[derive(Default)]
struct Located {
    types: Option<std::ops::Range<usize>>,
    bodies: Vec<std::ops::Range<usize>>,
    resources: Option<ValidatorResources>,
}

fn locate(wasm: &[u8]) -> Result<Located, InstrumentError> {
    let mut validator = Validator::new_with_features(features());
    let mut located = Located::default();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(parse_error)?;
        let valid = validator.payload(&payload).map_err(parse_error)?;
        match payload {
            Payload::TypeSection(r) => located.types = Some(usize_range(r.range())),
            Payload::CodeSectionEntry(body) => {
                let wasmparser::ValidPayload::Func(to_validate, _) = valid else {
                    return Err(parse_error("a function body the validator did not take"));
                };
                if located.resources.is_none() {
                    located.resources = Some(to_validate.resources);
                }
                located.bodies.push(usize_range(body.range()));
            }
            _ => {}
        }
    }
    Ok(located)
}

fn usize_range(r: std::ops::Range<u64>) -> std::ops::Range<usize> {
    r.start as usize..r.end as usize
}

/// The bytes of `wasm` at `r`, as a reader that knows their offset.
fn reader_at<'a>(
    wasm: &'a [u8],
    r: &std::ops::Range<usize>,
) -> Result<wasmparser::BinaryReader<'a>, InstrumentError> {
    let bytes = wasm
        .get(r.clone())
        .ok_or_else(|| parse_error("the module is not the one prepared"))?;
    Ok(wasmparser::BinaryReader::new(bytes, r.start as u64))
}

impl Prepared {
    /// `wasm`'s type section (`wasm` being the module prepared).
    fn types<'a>(
        &self,
        wasm: &'a [u8],
    ) -> Result<Option<wasmparser::TypeSectionReader<'a>>, InstrumentError> {
        self.located
            .types
            .as_ref()
            .map(|r| wasmparser::TypeSectionReader::new(reader_at(wasm, r)?).map_err(parse_error))
            .transpose()
    }

    /// Function `f`'s body in `wasm` (the module prepared), analyzed.
    fn analyzed<'a>(&self, wasm: &'a [u8], f: u32) -> Result<FuncBody<'a>, InstrumentError> {
        let sig = self
            .plan
            .func_sig(f)
            .ok_or_else(|| stack_error(format!("function {f} is not in the module")))?;
        let range = self
            .located
            .bodies
            .get(self.plan.defined(f))
            .filter(|_| f >= self.plan.imported)
            .ok_or_else(|| stack_error(format!("function {f} has no body")))?;
        let resources = self
            .located
            .resources
            .clone()
            .ok_or_else(|| parse_error("a module without functions"))?;
        let type_index = self.plan.func_types[f as usize];
        let to_validate = FuncToValidate {
            resources,
            index: f,
            ty: type_index,
            features: features(),
        };
        analyze(
            f,
            type_index,
            sig,
            wasmparser::FunctionBody::new(reader_at(wasm, range)?),
            to_validate.into_validator(Default::default()),
        )
    }

    /// The function exported as `_start`, whose rewind copy (at its entry
    /// of the table of rewind copies) puts a stack back.
    pub fn start(&self) -> Option<u32> {
        self.start_export
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The size of the record of each site of function `f` (by site, from 1;
/// none where no frame unwinds).
fn record_sizes(
    p: &Prepared,
    body: FuncBody<'_>,
    f: u32,
) -> Result<Arc<[Option<u32>]>, InstrumentError> {
    let sig = p
        .plan
        .func_sig(f)
        .ok_or_else(|| parse_error("no signature"))?;
    let ins = Instrumenter::new(&p.plan, &p.consts, &body, sig)?;
    Ok((1..=ins.sites_count() as u32)
        .map(|k| ins.record_size(k))
        .collect())
}

fn word(stack: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&stack[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The functions of the frames on `stack` (the unwind stack's bytes, up to
/// its top), and the imports whose markers it holds, ascending, with
/// `_start`: what [`rewind_module`] makes copies of to put it back.
pub fn stack_functions(
    wasm: &[u8],
    p: &Prepared,
    stack: &[u8],
) -> Result<Vec<u32>, InstrumentError> {
    // Each record ends with its site `k` and its function; a host's marker
    // is `[0, import]`.
    let mut frames = BTreeSet::new();
    let mut markers = BTreeSet::new();
    let mut at = stack.len();
    while at > 0 {
        if at < 8 {
            return Err(stack_error(format!(
                "{at} bytes left under its last record"
            )));
        }
        let (k, f) = (word(stack, at - 8), word(stack, at - 4));
        if k == 0 {
            if !p.plan.unwinding_import(f) {
                return Err(stack_error(format!(
                    "a marker of function {f}, which is not a call that waits"
                )));
            }
            markers.insert(f);
            at -= 8;
            continue;
        }
        if p.plan.rewind_of(f).is_none() {
            return Err(stack_error(format!(
                "a frame of function {f}, which cannot unwind"
            )));
        }
        let known = lock(&p.record_sizes).get(&f).cloned();
        let sizes = match known {
            Some(sizes) => sizes,
            None => {
                let sizes = record_sizes(p, p.analyzed(wasm, f)?, f)?;
                lock(&p.record_sizes).insert(f, sizes.clone());
                sizes
            }
        };
        let size = sizes
            .get((k as usize).wrapping_sub(1))
            .copied()
            .flatten()
            .ok_or_else(|| stack_error(format!("function {f} has no site {k}")))?;
        at = at
            .checked_sub(size as usize)
            .ok_or_else(|| stack_error(format!("a record of function {f} past its bottom")))?;
        frames.insert(f);
    }
    let start = p
        .start_export
        .ok_or_else(|| super::unsupported("it exports no `_start`"))?;
    Ok(frames
        .iter()
        .chain(&markers)
        .chain([&start])
        .copied()
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect())
}

/// The module of rewind copies of `functions` (from [`stack_functions`],
/// or some of them: imports stand for their markers), linked with
/// `rewinds::link_rewinds` to an instance of `wasm`'s runnable part
/// ([`super::instrument_runnable`]), `p` being [`prepare`]`(wasm)`.
pub fn rewind_module(
    wasm: &[u8],
    p: &Prepared,
    functions: &[u32],
) -> Result<Vec<u8>, InstrumentError> {
    if let Some(why) = &p.refusal {
        return Err(super::unsupported(why.clone()));
    }
    let mut markers = BTreeSet::new();
    let mut bodies: BTreeMap<u32, FuncBody<'_>> = BTreeMap::new();
    for f in functions.iter().copied() {
        if f < p.plan.imported {
            if !p.plan.unwinding_import(f) {
                return Err(stack_error(format!(
                    "function {f} is not a call that waits"
                )));
            }
            markers.insert(f);
        } else if p.plan.rewind_of(f).is_none() {
            return Err(stack_error(format!("function {f} cannot unwind")));
        } else if let std::collections::btree_map::Entry::Vacant(e) = bodies.entry(f) {
            e.insert(p.analyzed(wasm, f)?);
        }
    }
    let mut copies = Vec::with_capacity(bodies.len());
    for (f, body) in &bodies {
        let sig = p
            .plan
            .func_sig(*f)
            .ok_or_else(|| parse_error("no signature"))?;
        let code = Instrumenter::new(&p.plan, &p.consts, body, sig)?
            .rewind()?
            .code;
        if code.byte_len() > MAX_FUNCTION_SIZE {
            return Err(super::unsupported(format!(
                "the rewind copy of function {f} would be past the engine's limit"
            )));
        }
        copies.push((*f, body.type_index, code.into_raw_body()));
    }
    Linked::new(p, p.types(wasm)?, &copies, &markers)?.write()
}

/// The layout of a module of rewind copies: every index a copy names,
/// mapped into it.
struct Linked<'p, 'c> {
    p: &'p Prepared,
    types: Option<wasmparser::TypeSectionReader<'c>>,
    copies: &'c [(u32, u32, Vec<u8>)],
    markers: &'c BTreeSet<u32>,
    /// Old function index (the whole module's) to new.
    map: HashMap<u32, u32>,
    /// The functions imported, by old index, in order.
    imported: Vec<u32>,
    /// The types of the traps standing for other rewind copies, in order.
    traps: Vec<u32>,
}

impl<'p, 'c> Linked<'p, 'c> {
    fn new(
        p: &'p Prepared,
        types: Option<wasmparser::TypeSectionReader<'c>>,
        copies: &'c [(u32, u32, Vec<u8>)],
        markers: &'c BTreeSet<u32>,
    ) -> Result<Self, InstrumentError> {
        let n = p.plan.func_types.len() as u32;
        let rewinds_end = n + p.n_rewinds;
        // Every function index the copies name.
        let mut named = BTreeSet::new();
        for (_, _, body) in copies {
            let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(body, 0));
            let mut ops = body.get_operators_reader().map_err(parse_error)?;
            while !ops.eof() {
                match ops.read().map_err(parse_error)? {
                    // A call of a rewind copy goes through the table.
                    Operator::Call { function_index }
                        if p.plan.rewind_of_copy(function_index).is_some() => {}
                    Operator::Call { function_index } | Operator::RefFunc { function_index } => {
                        named.insert(function_index);
                    }
                    _ => {}
                }
            }
        }
        named.extend(markers);
        let mut map = HashMap::new();
        let imported: Vec<u32> = named.iter().copied().filter(|f| *f < n).collect();
        for (i, f) in imported.iter().enumerate() {
            map.insert(*f, i as u32);
        }
        let mut next = imported.len() as u32;
        for (f, _, _) in copies {
            let r = p
                .plan
                .rewind_of(*f)
                .ok_or_else(|| parse_error("a copy of a function without one"))?;
            map.insert(r, next);
            next += 1;
        }
        let mut traps: Vec<u32> = Vec::new();
        let mut trap_of_type: HashMap<u32, u32> = HashMap::new();
        for f in named
            .iter()
            .copied()
            .filter(|f| *f >= n && *f < rewinds_end)
        {
            if map.contains_key(&f) {
                continue;
            }
            let original = p
                .plan
                .rewind_of_copy(f)
                .ok_or_else(|| parse_error(format!("a call of function {f}, which is nothing")))?;
            let t = p.plan.func_types[original as usize];
            let at = *trap_of_type.entry(t).or_insert_with(|| {
                traps.push(t);
                next + traps.len() as u32 - 1
            });
            map.insert(f, at);
        }
        Ok(Linked {
            p,
            types,
            copies,
            markers,
            map,
            imported,
            traps,
        })
    }

    fn new_index(&self, f: u32) -> Result<u32, InstrumentError> {
        self.map
            .get(&f)
            .copied()
            .ok_or_else(|| parse_error(format!("function {f} left out of a rewind module")))
    }

    fn write(&self) -> Result<Vec<u8>, InstrumentError> {
        use wasm_encoder::{
            ConstExpr, ElementSection, Elements, EntityType, FunctionSection, GlobalType,
            ImportSection, MemoryType, Module, RefType, TableType, TagKind, TagType, TypeSection,
        };
        let p = self.p;
        let c = &p.consts;
        let mut r = RoundtripReencoder;
        let mut module = Module::new();

        let mut types = TypeSection::new();
        if let Some(reader) = self.types.clone() {
            reencode::utils::parse_type_section(&mut r, &mut types, reader).map_err(parse_error)?;
        }
        module.section(&types);

        let mut imports = ImportSection::new();
        for f in &self.imported {
            imports.import(
                "",
                &format!("{FUNC_IMPORT}{f}"),
                EntityType::Function(p.plan.func_types[*f as usize]),
            );
        }
        let any_table = |t: &wasmparser::TableType| -> Result<TableType, InstrumentError> {
            Ok(TableType {
                element_type: RoundtripReencoder
                    .ref_type(t.element_type)
                    .map_err(parse_error)?,
                table64: t.table64,
                minimum: 0,
                maximum: None,
                shared: t.shared,
            })
        };
        for (i, t) in p.table_types.iter().enumerate() {
            imports.import(
                "",
                &table_export(i as u32),
                EntityType::Table(any_table(t)?),
            );
        }
        imports.import(
            "",
            REWIND_TABLE,
            EntityType::Table(TableType {
                element_type: RefType::FUNCREF,
                table64: false,
                minimum: 0,
                maximum: None,
                shared: false,
            }),
        );
        for (i, m) in p.memory_types.iter().enumerate() {
            imports.import(
                "",
                &memory_export(i as u32),
                EntityType::Memory(MemoryType {
                    minimum: 0,
                    // A shared memory must say its maximum.
                    maximum: m.maximum.filter(|_| m.shared),
                    memory64: m.memory64,
                    shared: m.shared,
                    page_size_log2: m.page_size_log2,
                }),
            );
        }
        imports.import(
            "",
            FLAG_MEMORY,
            EntityType::Memory(MemoryType {
                minimum: 0,
                maximum: Some(FLAG_MAX_PAGES),
                memory64: false,
                shared: true,
                page_size_log2: None,
            }),
        );
        imports.import(
            "",
            STACK_MEMORY,
            EntityType::Memory(MemoryType {
                minimum: 0,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            }),
        );
        for (i, mutable, t) in &p.globals {
            imports.import(
                "",
                &global_export(*i),
                EntityType::Global(GlobalType {
                    val_type: r.val_type(*t).map_err(parse_error)?,
                    mutable: *mutable,
                    shared: false,
                }),
            );
        }
        for name in [STATE_GLOBAL, PTR_GLOBAL, NOUNWIND_GLOBAL] {
            imports.import(
                "",
                name,
                EntityType::Global(GlobalType {
                    val_type: wasm_encoder::ValType::I32,
                    mutable: true,
                    shared: false,
                }),
            );
        }
        for (i, t) in p.tags.iter().enumerate() {
            imports.import(
                "",
                &tag_export(i as u32),
                EntityType::Tag(TagType {
                    kind: TagKind::Exception,
                    func_type_idx: *t,
                }),
            );
        }
        module.section(&imports);

        let mut funcs = FunctionSection::new();
        for (_, t, _) in self.copies {
            funcs.function(*t);
        }
        for t in &self.traps {
            funcs.function(*t);
        }
        module.section(&funcs);

        // Each copy (and each import that left a marker) at its function's
        // entry of the table of rewind copies.
        let mut elements = ElementSection::new();
        let entries = self
            .copies
            .iter()
            .map(|(f, _, _)| {
                let copy = p
                    .plan
                    .rewind_of(*f)
                    .ok_or_else(|| parse_error("no rewind copy"))?;
                Ok((*f, self.new_index(copy)?))
            })
            .chain(self.markers.iter().map(|f| Ok((*f, self.new_index(*f)?))));
        for entry in entries {
            let (at, func) = entry?;
            elements.active(
                Some(c.rewind_table),
                &ConstExpr::i32_const(at as i32),
                Elements::Functions(vec![func].into()),
            );
        }
        // Functions the copies take references of.
        let declared: Vec<u32> = (0..self.imported.len() as u32).collect();
        if !declared.is_empty() {
            elements.declared(Elements::Functions(declared.into()));
        }
        module.section(&elements);

        let mut code = wasm_encoder::CodeSection::new();
        let mut remap = Remap { linked: self };
        let reencoded = |e| match e {
            reencode::Error::UserError(e) => e,
            e => parse_error(e),
        };
        for (_, _, body) in self.copies {
            let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(body, 0));
            let mut f = remap
                .new_function_with_parsed_locals(&body)
                .map_err(reencoded)?;
            let mut ops = body.get_operators_reader().map_err(parse_error)?;
            while !ops.eof() {
                match ops.read().map_err(parse_error)? {
                    // The rewind copy of the next frame, wherever it was
                    // made: at its function's entry of the table.
                    Operator::Call { function_index } => {
                        match p.plan.rewind_of_copy(function_index) {
                            Some(callee) => {
                                f.instruction(&wasm_encoder::Instruction::I32Const(callee as i32));
                                f.instruction(&wasm_encoder::Instruction::CallIndirect {
                                    type_index: p.plan.func_types[callee as usize],
                                    table_index: c.rewind_table,
                                });
                            }
                            None => {
                                let at = self.new_index(function_index)?;
                                f.instruction(&wasm_encoder::Instruction::Call(at));
                            }
                        }
                    }
                    op => {
                        f.instruction(&remap.instruction(op).map_err(reencoded)?);
                    }
                }
            }
            code.function(&f);
        }
        let mut trap = wasm_encoder::Function::new([]);
        trap.instruction(&wasm_encoder::Instruction::Unreachable);
        trap.instruction(&wasm_encoder::Instruction::End);
        for _ in &self.traps {
            code.function(&trap);
        }
        module.section(&code);
        Ok(module.finish())
    }
}

/// Re-encodes a copy with the module's function indices.
struct Remap<'l, 'p, 'c> {
    linked: &'l Linked<'p, 'c>,
}

impl Reencode for Remap<'_, '_, '_> {
    type Error = InstrumentError;

    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error<Self::Error>> {
        self.linked
            .new_index(func)
            .map_err(reencode::Error::UserError)
    }
}
