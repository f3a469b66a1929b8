//! How a copy writes its frames' records (live locals and the operands
//! under a call) on the unwind stack: `Saves`, one block per layout at the
//! end of the function that every site with that layout branches to, and
//! the value types' sizes and stores.

use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{Instruction as I, MemArg, ValType as EVal};
use wasmparser::ValType;

/// The bytes of a record of values of `types`: them, then its site's
/// number and its function's index.
pub(crate) fn record_bytes<'t>(types: impl IntoIterator<Item = &'t ValType>) -> u32 {
    types.into_iter().map(size_of).sum::<u32>() + 8
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

/// Where a copy saves its frame at a site: inline (the site writes the
/// record itself), or *shared*: one block per layout (the
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
    /// (locals), their types, and whether the unwind stack grows first if
    /// it has no room (at calls; never at poll points, see
    /// `Instrumenter::poll_taken`).
    pub(crate) layouts: Vec<Layout>,
    /// Each list of values' blocks: without growth, then with.
    by_values: std::collections::HashMap<Vec<u32>, [Option<u32>; 2]>,
}

/// A record's layout, written by one block (see [`Saves`]).
pub(crate) struct Layout {
    pub(crate) values: Vec<u32>,
    pub(crate) types: Vec<ValType>,
    pub(crate) grow: bool,
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
    pub(crate) fn block(&mut self, values: &[u32], types: &[ValType], grow: bool) -> u32 {
        if let Some(j) = self
            .by_values
            .get(values)
            .and_then(|b| b[usize::from(grow)])
        {
            return j;
        }
        self.layouts.push(Layout {
            values: values.to_vec(),
            types: types.to_vec(),
            grow,
        });
        let j = self.layouts.len() as u32;
        self.by_values.entry(values.to_vec()).or_default()[usize::from(grow)] = Some(j);
        j
    }
}
