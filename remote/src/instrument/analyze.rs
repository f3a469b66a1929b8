//! One function as the validator sees it (`analyze`): every operator with the
//! types of the operand stack under it (`OpInfo`), which calls can unwind,
//! where its loops read the flag (`back_edges`), and whether the function
//! holds what the instrumentation cannot keep in a frame (`check_operator`,
//! `is_plain_value`).
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
    /// recorded for calls, for the starts of constructs and for branches
    /// back to loops.
    pub stack: Vec<ValType>,
    /// The current frame's operand stack height before the operator.
    pub height: u32,
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
    /// Where the loops read the flag (see [`back_edges`]).
    pub loop_polls: LoopPolls,
    /// Calls whose `i32` result decides a `br_if` right after (see
    /// [`branches_on_results`]): the call's operator, the `br_if`'s, and
    /// the locals written between them.
    pub branch_on_result: std::collections::HashMap<usize, (usize, Vec<u32>)>,
    /// Why this function could not be unwound, should it need to be.
    pub refusal: Option<String>,
}

/// Where a function's loops read the flag: at their header, or before the
/// branches back to it ([`back_edges`]).
#[derive(Default)]
pub(crate) struct LoopPolls {
    /// The loops (their `loop` operators) that poll before branches back to
    /// them rather than at their header.
    pub on_back_edges: std::collections::HashSet<usize>,
    /// The operators that a poll point goes before, each with its loop: a
    /// `br`, or the first operator of the condition of a `br_if`.
    pub before: std::collections::HashMap<usize, usize>,
    /// The operand stack at a poll point before a `br_if`'s condition.
    pub under: std::collections::HashMap<usize, Vec<ValType>>,
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
    let mut plain_br_ifs = std::collections::HashSet::new();
    let mut r = body.get_operators_reader().map_err(parse_error)?;
    while !r.eof() {
        let offset = r.original_position();
        let op = r.read().map_err(parse_error)?;
        let frame = validator
            .get_control_frame(0)
            .ok_or_else(|| parse_error("an operator outside of any frame"))?;
        let frame_height = frame.height;
        let live = !frame.unreachable && !dead.last().copied().unwrap_or(false);
        // (A `br` or a `br_if` back to a loop: for the poll point that may
        // go before it, see `back_edges`.)
        let record = live
            && match op {
                Operator::Call { .. }
                | Operator::CallIndirect { .. }
                | Operator::CallRef { .. }
                | Operator::Block { .. }
                | Operator::Loop { .. }
                | Operator::If { .. }
                | Operator::TryTable { .. } => true,
                Operator::Br { relative_depth } | Operator::BrIf { relative_depth } => validator
                    .get_control_frame(relative_depth as usize)
                    .is_some_and(|f| f.kind == wasmparser::FrameKind::Loop),
                _ => false,
            };
        let mut stack = Vec::new();
        let height = (validator.operand_stack_height() as usize).saturating_sub(frame_height);
        if record {
            for depth in (0..height).rev() {
                match validator.get_operand_type(depth) {
                    Some(Some(t)) => stack.push(t),
                    _ => return Err(parse_error("an operand of unknown type")),
                }
            }
        }
        // A `br_if` whose label takes no values.
        if live
            && let Operator::BrIf { relative_depth } = op
            && validator
                .get_control_frame(relative_depth as usize)
                .is_some_and(|f| f.block_type == wasmparser::BlockType::Empty)
        {
            plain_br_ifs.insert(ops.len());
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
            // (A branch with a reference under it keeps its loop's poll
            // point at the header, see `back_edges`.)
            if record
                && !matches!(op, Operator::Br { .. } | Operator::BrIf { .. })
                && stack.iter().any(|t| !is_plain_value(t))
            {
                refusal = Some("a reference is on the operand stack at a call".into());
            }
        }
        validator.op(offset, &op).map_err(parse_error)?;
        if opens_frame(&op) {
            dead.push(!live);
        } else if let Operator::End = op {
            dead.pop();
        }
        ops.push(OpInfo {
            op,
            live,
            stack,
            height: height as u32,
        });
    }
    r.finish().map_err(parse_error)?;
    let mut body = FuncBody {
        index,
        type_index,
        declared,
        locals,
        ops,
        calls,
        indirect,
        live_loop,
        loop_polls: LoopPolls::default(),
        branch_on_result: Default::default(),
        refusal,
    };
    let loop_polls = back_edges(&body.ops, |t| body.counted(t).is_some());
    body.loop_polls = loop_polls;
    // (A `br_if` with a poll point before it is not one a call's check waits for.)
    plain_br_ifs.retain(|j| !body.loop_polls.before.contains_key(j));
    body.branch_on_result = branches_on_results(&body.ops, &plain_br_ifs);
    Ok(body)
}

/// The direct calls whose result (on top of the stack, untouched) becomes
/// the condition of a `br_if` to a label that takes no values, with only
/// local and global reads, constants and writes of locals between them:
/// Go's `call $f; global.get $sp; local.set $s; br_if $unwind`, as every
/// Go function returns whether it unwinds its goroutine's stack. Such a
/// call's check (does the callee unwind?) can wait for that branch, taken
/// only when the result is not zero, as a function that unwinds returns 1
/// in an `i32` result (`Instrumenter::store_record`); what lies between
/// writes only locals and reads what a rewind reads again (see
/// [`super::sites::Site::check_at`]).
pub(crate) fn branches_on_results(
    ops: &[OpInfo<'_>],
    plain_br_ifs: &std::collections::HashSet<usize>,
) -> std::collections::HashMap<usize, (usize, Vec<u32>)> {
    let mut out = std::collections::HashMap::new();
    for (i, info) in ops.iter().enumerate() {
        if !info.live || !matches!(info.op, Operator::Call { .. }) {
            continue;
        }
        // Values above the call's result.
        let mut above = 0usize;
        let mut written = Vec::new();
        for (j, next) in ops.iter().enumerate().skip(i + 1) {
            match next.op {
                Operator::LocalGet { .. }
                | Operator::GlobalGet { .. }
                | Operator::I32Const { .. }
                | Operator::I64Const { .. } => above += 1,
                Operator::LocalSet { local_index } if above > 0 => {
                    above -= 1;
                    written.push(local_index);
                }
                Operator::LocalTee { local_index } if above > 0 => written.push(local_index),
                Operator::Nop => {}
                Operator::BrIf { .. } if above == 0 && plain_br_ifs.contains(&j) => {
                    out.insert(i, (j, written));
                    break;
                }
                _ => break,
            }
        }
    }
    out
}

/// Which loops read the flag before the branches back to them instead of at
/// their header, and before which branches: a loop entered once and left
/// without going round pays nothing, and its header need not be polled on
/// entry (Go's functions are each one loop, entered at every call). A loop
/// qualifies when every branch to it is a `br` or a `br_if` with plain
/// values on the operand stack (a `br_table` or a catch keeps the poll
/// point at the header); each of its `br`s gets a poll point, but those
/// that provably go forward, and each `br_if` one before the code that
/// computes its condition (see [`condition_start`]).
///
/// A loop with a `br_if` back to it that is not `counted` (see
/// [`FuncBody::counted`]) polls at its header: there, its poll point reads
/// the flag at every iteration, and before the `br_if` it would too, but in
/// the middle of the loop's last block, which the engine then splits, with
/// register moves and a jump on the way round (a sieve's inner loop: 14
/// instructions an iteration against 12 at the header). A counted poll
/// point's test is one instruction and a branch, on the loop's step.
///
/// Why not at the header, for a C loop (`loop … br_if $loop end`): the
/// engine hoists a loop's invariant code out of it while it walks the
/// loop's blocks in dominator order, and forgets the loop for good at the
/// first block outside it that it meets. A poll point's way to its save
/// leaves the loop, and at the header the walk meets it before the loop's
/// body (the poll point's way back into the loop makes the body come after
/// it): the whole body was compiled as in no loop, the memory's base loaded
/// and invariant values computed again at every iteration. At the way
/// back, the walk meets the save after the body.
///
/// Go's loop dispatches over the blocks of the function: `loop; block × m;
/// local.get $pc; br_table …`, and every jump, forward or not, is `i32.const
/// n; local.set $pc; br $loop`. The code after the end of the dispatch's
/// block at depth `d` is region `d + 1`; a jump from region `r` to a target
/// region after `r` (or out of the loop) cannot close a cycle without a
/// jump that does not go forward, which polls. So only Go's backward jumps
/// (its own loops) read the flag.
pub(crate) fn back_edges(ops: &[OpInfo<'_>], counted: impl Fn(usize) -> bool) -> LoopPolls {
    let is_loop = |i: usize| matches!(ops[i].op, Operator::Loop { .. });
    let mut frames: Vec<usize> = Vec::new();
    let mut refused: std::collections::HashSet<usize> = Default::default();
    let mut brs: Vec<(usize, usize)> = Vec::new();
    // Per loop with a `br_if` back to it: whether it is counted.
    let mut counted_loops: std::collections::HashMap<usize, bool> = Default::default();
    // The loop a branch of depth `d` goes back to, if it goes to one.
    let target = |frames: &[usize], d: u32| {
        (d as usize)
            .checked_add(1)
            .and_then(|d| frames.len().checked_sub(d))
            .map(|j| frames[j])
            .filter(|t| is_loop(*t))
    };
    let refuse = |refused: &mut std::collections::HashSet<usize>, frames: &[usize], d: u32| {
        if let Some(t) = target(frames, d) {
            refused.insert(t);
        }
    };
    for (i, info) in ops.iter().enumerate() {
        match &info.op {
            Operator::TryTable { try_table } => {
                for c in &try_table.catches {
                    let label = match *c {
                        wasmparser::Catch::One { label, .. }
                        | wasmparser::Catch::OneRef { label, .. }
                        | wasmparser::Catch::All { label }
                        | wasmparser::Catch::AllRef { label } => label,
                    };
                    refuse(&mut refused, &frames, label);
                }
                frames.push(i);
            }
            op if opens_frame(op) => frames.push(i),
            Operator::End => {
                frames.pop();
            }
            Operator::Br { relative_depth } | Operator::BrIf { relative_depth } => {
                if let Some(t) = target(&frames, *relative_depth) {
                    let uncounted = info.live
                        && matches!(info.op, Operator::BrIf { .. })
                        && !*counted_loops.entry(t).or_insert_with(|| counted(t));
                    if info.stack.iter().all(is_plain_value) && !uncounted {
                        if info.live {
                            brs.push((i, t));
                        }
                    } else {
                        refused.insert(t);
                    }
                }
            }
            Operator::BrOnNull { relative_depth }
            | Operator::BrOnNonNull { relative_depth }
            | Operator::BrOnCast { relative_depth, .. }
            | Operator::BrOnCastFail { relative_depth, .. } => {
                refuse(&mut refused, &frames, *relative_depth)
            }
            Operator::BrTable { targets } => {
                for d in targets.targets().flatten() {
                    refuse(&mut refused, &frames, d);
                }
                refuse(&mut refused, &frames, targets.default());
            }
            _ => {}
        }
    }
    let mut polls = LoopPolls::default();
    let mut regions: std::collections::HashMap<usize, Option<Dispatch>> = Default::default();
    for (i, t) in brs {
        if refused.contains(&t) {
            continue;
        }
        let dispatch = regions.entry(t).or_insert_with(|| dispatch(ops, t));
        if dispatch.as_ref().is_some_and(|d| d.forward(ops, i)) {
            continue;
        }
        match condition_start(ops, i) {
            Some(j) => {
                let want = ops[j].height as usize;
                polls.before.insert(j, t);
                polls.under.insert(j, ops[i].stack[..want].to_vec());
            }
            None => {
                polls.before.insert(i, t);
            }
        }
    }
    for (i, info) in ops.iter().enumerate() {
        if info.live && is_loop(i) && !refused.contains(&i) {
            polls.on_back_edges.insert(i);
        }
    }
    polls
}

/// Where the condition of the `br_if` at `i` starts being computed, when
/// straight code (no branch, no call, no frame) computes it from nothing
/// under it: a poll point goes there, so that the branch's test stays next
/// to the branch and the loop's step is tested as at its header.
fn condition_start(ops: &[OpInfo<'_>], i: usize) -> Option<usize> {
    if !matches!(ops[i].op, Operator::BrIf { .. }) {
        return None;
    }
    let want = ops[i].height.checked_sub(1)?;
    let mut j = i;
    for _ in 0..64 {
        let p = j.checked_sub(1)?;
        let o = &ops[p];
        if !o.live || !straight(&o.op) || o.height < want {
            return None;
        }
        j = p;
        if o.height == want {
            return Some(j);
        }
    }
    None
}

/// An operator that neither branches, nor calls, nor opens or closes a frame.
fn straight(op: &Operator<'_>) -> bool {
    !(opens_frame(op)
        || matches!(
            op,
            Operator::End
                | Operator::Else
                | Operator::Br { .. }
                | Operator::BrIf { .. }
                | Operator::BrTable { .. }
                | Operator::BrOnNull { .. }
                | Operator::BrOnNonNull { .. }
                | Operator::BrOnCast { .. }
                | Operator::BrOnCastFail { .. }
                | Operator::Return
                | Operator::Unreachable
                | Operator::Call { .. }
                | Operator::CallIndirect { .. }
                | Operator::CallRef { .. }
                | Operator::ReturnCall { .. }
                | Operator::ReturnCallIndirect { .. }
                | Operator::ReturnCallRef { .. }
                | Operator::Throw { .. }
                | Operator::ThrowRef
                | Operator::Rethrow { .. }
                | Operator::Delegate { .. }
                | Operator::Catch { .. }
                | Operator::CatchAll
        ))
}

/// A loop that dispatches over blocks (see [`back_edges`]).
struct Dispatch {
    /// The loop's operator.
    start: usize,
    /// The local the dispatch reads.
    pc: u32,
    /// The `br_table`'s depths, and its default.
    targets: Vec<u32>,
    default: u32,
    /// The dispatch's blocks.
    blocks: u32,
    /// Per operator from the loop's start: its region (how many of the
    /// dispatch's blocks have ended before it).
    region: Vec<u32>,
}

impl Dispatch {
    /// Whether the `br` at `i` (to the loop) jumps to a later region, or
    /// out of the loop: `i32.const n; local.set $pc; br`.
    fn forward(&self, ops: &[OpInfo<'_>], i: usize) -> bool {
        let (Some(set), Some(value)) = (i.checked_sub(1), i.checked_sub(2)) else {
            return false;
        };
        let (Operator::I32Const { value: n }, Operator::LocalSet { local_index }) =
            (&ops[value].op, &ops[set].op)
        else {
            return false;
        };
        if *local_index != self.pc {
            return false;
        }
        let d = usize::try_from(*n)
            .ok()
            .and_then(|n| self.targets.get(n))
            .copied()
            .unwrap_or(self.default);
        let Some(&here) = i.checked_sub(self.start).and_then(|k| self.region.get(k)) else {
            return false;
        };
        // Past the dispatch's blocks: out of the loop (the loop itself, a
        // target of the `br_table`, would have kept its poll point at the
        // header).
        d >= self.blocks || d + 1 > here
    }
}

/// The dispatch at the loop starting at `start`, if it is one: `loop;
/// block × m; local.get $pc; br_table` with no block type.
fn dispatch(ops: &[OpInfo<'_>], start: usize) -> Option<Dispatch> {
    let mut m = 0u32;
    let mut j = start + 1;
    while let Some(OpInfo {
        op: Operator::Block {
            blockty: wasmparser::BlockType::Empty,
        },
        ..
    }) = ops.get(j)
    {
        m += 1;
        j += 1;
    }
    let Some(Operator::LocalGet { local_index: pc }) = ops.get(j).map(|o| &o.op) else {
        return None;
    };
    let Some(Operator::BrTable { targets }) = ops.get(j + 1).map(|o| &o.op) else {
        return None;
    };
    if m == 0 {
        return None;
    }
    let depths: Vec<u32> = targets.targets().collect::<Result<_, _>>().ok()?;
    // Regions: count the dispatch's blocks as they end, to the loop's end.
    let mut region = Vec::new();
    let mut frames: Vec<usize> = Vec::new();
    let mut here = 0u32;
    for (i, info) in ops.iter().enumerate().skip(start) {
        region.push(here);
        match info.op {
            ref op if opens_frame(op) => frames.push(i),
            Operator::End => match frames.pop() {
                Some(closed) if closed > start && closed <= start + m as usize => here += 1,
                Some(closed) if closed != start => {}
                _ => break,
            },
            _ => {}
        }
    }
    Some(Dispatch {
        start,
        pc: *pc,
        targets: depths,
        default: targets.default(),
        blocks: m,
        region,
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
