//! `Savers`: one small helper function per frame layout that pushes a record
//! (live locals and the operands under a call) on the unwind stack, shared by
//! every site with that layout, so that the fast copy's taken branch is a call
//! and a return.

use super::Consts;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType as EBlock, Function, Instruction as I, MemArg, ValType as EVal};
use wasmparser::ValType;

/// The helpers that write records, one per list of value types (then `k`
/// and `fid`), appended after the rewind copies.
pub(crate) struct Savers {
    /// The index of the first helper's type, and of the first helper.
    pub(crate) types_base: u32,
    pub(crate) funcs_base: u32,
    pub(crate) by_types: std::collections::HashMap<Vec<ValType>, u32>,
    pub(crate) list: Vec<Vec<ValType>>,
}

impl Savers {
    pub(crate) fn new(types_base: u32, funcs_base: u32) -> Self {
        Savers {
            types_base,
            funcs_base,
            by_types: Default::default(),
            list: Vec::new(),
        }
    }

    pub(crate) fn get(&mut self, types: &[ValType]) -> u32 {
        if let Some(i) = self.by_types.get(types) {
            return self.funcs_base + i;
        }
        let i = self.list.len() as u32;
        self.list.push(types.to_vec());
        self.by_types.insert(types.to_vec(), i);
        self.funcs_base + i
    }

    /// The helpers' types: the values, then `k` and `fid`.
    pub(crate) fn types(&self) -> impl Iterator<Item = Vec<EVal>> + '_ {
        self.list.iter().map(|types| {
            let mut params: Vec<EVal> = types.iter().map(|t| enc(*t)).collect();
            params.extend([EVal::I32, EVal::I32]);
            params
        })
    }

    pub(crate) fn type_index(&self, i: usize) -> u32 {
        self.types_base + i as u32
    }

    /// A helper's code: room for the record (the stack grows as needed),
    /// the values, `k`, `fid`, and the new top.
    pub(crate) fn body(&self, i: usize, consts: &Consts) -> Function {
        let types = &self.list[i];
        let size: u32 = types.iter().map(size_of).sum::<u32>() + 8;
        let mem = |offset: u32| MemArg {
            offset: offset as u64,
            align: 0,
            target: wasm_encoder::MemArgTarget::Memory(consts.stack_memory),
            ordering: None,
        };
        let mut f = Function::new(Vec::<(u32, EVal)>::new());
        f.instruction(&I::GlobalGet(consts.ptr_global));
        f.instruction(&I::I32Const(size as i32));
        f.instruction(&I::I32Add);
        f.instruction(&I::MemorySize(consts.stack_memory));
        f.instruction(&I::I32Const(16));
        f.instruction(&I::I32Shl);
        f.instruction(&I::I32GtU);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::I32Const((size >> 16) as i32 + 1));
        f.instruction(&I::MemoryGrow(consts.stack_memory));
        f.instruction(&I::I32Const(-1));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::End);
        let mut at = 0u32;
        let all = types.iter().chain([&ValType::I32, &ValType::I32]);
        for (l, t) in all.enumerate() {
            f.instruction(&I::GlobalGet(consts.ptr_global));
            f.instruction(&I::LocalGet(l as u32));
            f.instruction(&store(t, mem(at)));
            at += size_of(t);
        }
        f.instruction(&I::GlobalGet(consts.ptr_global));
        f.instruction(&I::I32Const(size as i32));
        f.instruction(&I::I32Add);
        f.instruction(&I::GlobalSet(consts.ptr_global));
        f.instruction(&I::End);
        f
    }
}

/// The store of a value of type `t` at `m`.
pub(crate) fn store(t: &ValType, m: MemArg) -> I<'static> {
    match t {
        ValType::I32 => I::I32Store(m),
        ValType::I64 => I::I64Store(m),
        ValType::F32 => I::F32Store(m),
        ValType::F64 => I::F64Store(m),
        _ => I::V128Store(m),
    }
}

pub(crate) fn size_of(t: &ValType) -> u32 {
    match t {
        ValType::I32 | ValType::F32 => 4,
        ValType::I64 | ValType::F64 => 8,
        ValType::V128 => 16,
        ValType::Ref(_) => 0,
    }
}

pub(crate) fn enc(t: ValType) -> EVal {
    match t {
        ValType::I32 => EVal::I32,
        ValType::I64 => EVal::I64,
        ValType::F32 => EVal::F32,
        ValType::F64 => EVal::F64,
        ValType::V128 => EVal::V128,
        ValType::Ref(r) => RoundtripReencoder
            .val_type(ValType::Ref(r))
            .unwrap_or(EVal::I32),
    }
}

/// Where a copy saves its frame at a site: inline (the site calls the
/// helper with every value itself), or *shared*: one block per layout (the
/// locals saved) at the end of the function, which a site enters with its
/// number in a local. A large function's sites mostly save the same long
/// list of locals, which inline saves would repeat at each.
///
/// Shared, a copy is laid out as
///
/// ```text
///   block $save_n … block $save_1 block $body (result …)
///     the function's code        (its branches to the function's label
///   end return                    reach $body, whose end returns)
///   end  save layout 1 (k from the local); return
///   …
///   end  save layout n; return
/// ```
pub(crate) struct Saves {
    /// The local that carries a site's number to its layout's block; none:
    /// inline.
    pub(crate) k: Option<u32>,
    /// The layouts branched to, in the order first used: the values saved
    /// (locals) and their types.
    pub(crate) layouts: Vec<(Vec<u32>, Vec<ValType>)>,
    by_values: std::collections::HashMap<Vec<u32>, u32>,
}

impl Saves {
    pub(crate) fn inline() -> Self {
        Saves {
            k: None,
            layouts: Vec::new(),
            by_values: Default::default(),
        }
    }

    pub(crate) fn shared(k: u32) -> Self {
        Saves {
            k: Some(k),
            ..Self::inline()
        }
    }

    /// The block of a layout, counted from 1 (the innermost, just outside
    /// `$body`).
    pub(crate) fn block(&mut self, values: &[u32], types: &[ValType]) -> u32 {
        if let Some(j) = self.by_values.get(values) {
            return *j;
        }
        self.layouts.push((values.to_vec(), types.to_vec()));
        let j = self.layouts.len() as u32;
        self.by_values.insert(values.to_vec(), j);
        j
    }
}
