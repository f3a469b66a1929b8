//! One function as the validator sees it (`analyze`): every operator with the
//! types of the operand stack under it (`OpInfo`), which calls can unwind, and
//! whether the function holds what the instrumentation cannot keep in a frame
//! (`check_operator`, `is_plain_value`).
//!
//! Must not know: how the copies are emitted (`func.rs`, `rewind.rs`).

use super::{InstrumentError, Sig, unsupported};
use wasmparser::{FuncValidator, Operator, ValType, ValidatorResources};

/// An operator with what the validator knew before it.
pub(crate) struct OpInfo<'a> {
    pub op: Operator<'a>,
    /// Reachable (not after a branch, nor in a construct that is not).
    pub live: bool,
    /// The current frame's operand stack before the operator (bottom first),
    /// recorded for calls and for the starts of constructs.
    pub stack: Vec<ValType>,
}

/// A defined function, read and typed.
pub(crate) struct FuncBody<'a> {
    pub index: u32,
    pub type_index: u32,
    pub declared: Vec<(u32, ValType)>,
    /// Every local, parameters first.
    pub locals: Vec<ValType>,
    pub ops: Vec<OpInfo<'a>>,
    /// Live direct calls.
    pub calls: Vec<u32>,
    /// Type indices of live calls through a table.
    pub indirect: Vec<u32>,
    pub live_loop: bool,
    /// Why this function could not be unwound, should it need to be.
    pub refusal: Option<String>,
}

pub(crate) fn is_plain_value(t: &ValType) -> bool {
    matches!(
        t,
        ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128
    )
}

/// Whether a value of type `t` can be held in a local of a copy: a plain
/// value, or a reference that may be null (its default).
pub(crate) fn local_type(t: &ValType) -> bool {
    match t {
        ValType::Ref(r) => r.is_nullable(),
        _ => true,
    }
}

/// Whether `op` opens a frame of structured control flow that an `end`
/// closes: `block`, `loop`, `if`, `try_table`.
pub(crate) fn opens_frame(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::TryTable { .. }
    )
}

pub(crate) fn parse_error(e: impl std::fmt::Display) -> InstrumentError {
    InstrumentError::Parse(e.to_string())
}

/// Reads a function body through the validator, keeping the stack types.
pub(crate) fn analyze<'a>(
    index: u32,
    type_index: u32,
    sig: &Sig,
    body: wasmparser::FunctionBody<'a>,
    mut validator: FuncValidator<ValidatorResources>,
) -> Result<FuncBody<'a>, InstrumentError> {
    let mut declared = Vec::new();
    let mut locals: Vec<ValType> = sig.params.clone();
    let mut reader = body.get_locals_reader().map_err(parse_error)?;
    for _ in 0..reader.get_count() {
        let offset = reader.original_position();
        let (count, ty) = reader.read().map_err(parse_error)?;
        validator
            .define_locals(offset, count, ty)
            .map_err(parse_error)?;
        declared.push((count, ty));
        if locals.len() + count as usize > 100_000 {
            return Err(unsupported("a function has too many locals"));
        }
        locals.extend(std::iter::repeat_n(ty, count as usize));
    }
    // A local holding a reference (an `exnref` between a catch and its
    // rethrow) is refused only where a frame would have to save it
    // (`Instrumenter::save_sets`).
    let mut refusal = None;
    if let Some(t) = locals.iter().find(|t| !local_type(t)) {
        refusal = Some(format!("a function has a local of type {t}"));
    }
    if let Some(t) = sig.results.iter().find(|t| !is_plain_value(t)) {
        refusal = Some(format!("a function returns a {t}"));
    }
    let mut ops = Vec::new();
    let (mut calls, mut indirect, mut live_loop) = (Vec::new(), Vec::new(), false);
    let mut dead: Vec<bool> = vec![false];
    let mut r = body.get_operators_reader().map_err(parse_error)?;
    while !r.eof() {
        let offset = r.original_position();
        let op = r.read().map_err(parse_error)?;
        let frame = validator
            .get_control_frame(0)
            .ok_or_else(|| parse_error("an operator outside of any frame"))?;
        let frame_height = frame.height;
        let live = !frame.unreachable && !dead.last().copied().unwrap_or(false);
        let record = live
            && matches!(
                op,
                Operator::Call { .. }
                    | Operator::CallIndirect { .. }
                    | Operator::CallRef { .. }
                    | Operator::Block { .. }
                    | Operator::Loop { .. }
                    | Operator::If { .. }
                    | Operator::TryTable { .. }
            );
        let mut stack = Vec::new();
        if record {
            let height = validator.operand_stack_height() as usize;
            for depth in (0..height.saturating_sub(frame_height)).rev() {
                match validator.get_operand_type(depth) {
                    Some(Some(t)) => stack.push(t),
                    _ => return Err(parse_error("an operand of unknown type")),
                }
            }
        }
        if live {
            match &op {
                Operator::Call { function_index } => calls.push(*function_index),
                Operator::CallIndirect { type_index, .. } => indirect.push(*type_index),
                Operator::CallRef { .. } => {
                    refusal = Some("it calls through a typed function reference".into())
                }
                Operator::Loop { .. } => live_loop = true,
                Operator::BrOnCast { .. } | Operator::BrOnCastFail { .. } => {
                    refusal = Some("it uses GC branches".into())
                }
                _ => {}
            }
            if record && stack.iter().any(|t| !is_plain_value(t)) {
                refusal = Some("a reference is on the operand stack at a call".into());
            }
        }
        validator.op(offset, &op).map_err(parse_error)?;
        if opens_frame(&op) {
            dead.push(!live);
        } else if let Operator::End = op {
            dead.pop();
        }
        ops.push(OpInfo { op, live, stack });
    }
    r.finish().map_err(parse_error)?;
    Ok(FuncBody {
        index,
        type_index,
        declared,
        locals,
        ops,
        calls,
        indirect,
        live_loop,
        refusal,
    })
}

/// Checks a function body for what instrumentation refuses anywhere.
pub(crate) fn check_operator(op: &Operator<'_>) -> Result<(), InstrumentError> {
    match op {
        Operator::ReturnCall { .. }
        | Operator::ReturnCallIndirect { .. }
        | Operator::ReturnCallRef { .. } => Err(unsupported("it uses tail calls")),
        // The legacy encoding of exceptions (which wasmtime's compiler does
        // not take either); `try_table`, `throw` and `throw_ref` are handled.
        Operator::Try { .. }
        | Operator::Catch { .. }
        | Operator::CatchAll
        | Operator::Delegate { .. }
        | Operator::Rethrow { .. } => Err(unsupported("it uses legacy Wasm exceptions")),
        Operator::TableSet { .. }
        | Operator::TableGrow { .. }
        | Operator::TableFill { .. }
        | Operator::TableCopy { .. }
        | Operator::TableInit { .. } => Err(unsupported("it changes a table at run time")),
        _ => Ok(()),
    }
}
