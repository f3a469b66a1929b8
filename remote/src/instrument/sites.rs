//! Where a function can unwind: its *sites* (poll points at loop headers or
//! before the branches back to a loop, see [`super::analyze::back_edges`],
//! and at the entry of the functions chosen to break cycles of calls, and
//! calls that can unwind),
//! the constructs that hold them, and what each one saves.
//!
//! [`Instrumenter::find_sites`] numbers the sites in code order (1-based, as
//! records name them) and records, for every construct that holds one, the
//! values it keeps in locals so that a site inside can save them;
//! [`Instrumenter::save_sets`] then gives each site the locals live after it
//! (see [`super::liveness`]), or pins it when one of them holds what no
//! record can keep. A loop that steps a local by a constant is *counted*: its
//! poll point reads the flag once per period of iterations (see [`Counted`]).
//! Both copies are written from these (`func.rs`, `rewind.rs`).

use super::analyze::{FuncBody, is_plain_value, local_type, opens_frame, parse_error};
use super::func::Instrumenter;
use super::liveness;
use super::savers::record_bytes;
use super::{InstrumentError, unsupported};
use wasmparser::{Operator, ValType};

/// What a site calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callee {
    /// A poll point.
    Poll,
    /// A defined function, with its rewind copy.
    Direct { func: u32, rewind: u32 },
    /// An import that can unwind (its host function starts the unwind).
    Import(u32),
    /// A call through a table.
    Indirect { type_index: u32, table: u32 },
}

/// A point where the frame can unwind, and the record it saves there.
pub(crate) struct Site {
    pub(crate) callee: Callee,
    /// The call's operator, if it is one.
    pub(crate) op: Option<usize>,
    /// Saved locals, in index order.
    pub(crate) saved: Vec<(u32, ValType)>,
    /// The operand stack under the call's arguments.
    pub(crate) under: Vec<ValType>,
    /// The call's arguments (for a table call, without the table index).
    pub(crate) args: Vec<ValType>,
    /// Whether the record keeps the arguments.
    pub(crate) keep_args: bool,
    pub(crate) results: Vec<ValType>,
    /// A loop's poll point that reads the flag only when its induction
    /// variable crosses a multiple of a period (see [`Counted`]).
    pub(crate) counted: Option<Counted>,
    /// Whether the frame holds, here, what no record can keep (an `exnref`
    /// between a catch and its rethrow, in C++'s cleanups): it never unwinds
    /// here. A call is made with `nounwind` raised (so nothing under it
    /// unwinds either, and a freeze waits until it returns); a poll point is
    /// left out.
    pub(crate) pinned: bool,
    /// Where a direct call's check waits for: the `br_if` its result
    /// decides (see [`super::analyze::branches_on_results`]), whose branch,
    /// taken when the callee unwound (it then returns 1), checks first. The
    /// record is the call's: it saves the locals live after the call, which
    /// the code between does not write, and the rewind makes the call again
    /// and runs that code after it as the function would have.
    pub(crate) check_at: Option<usize>,
}

/// A loop whose every iteration adds the same constant to one local: its
/// poll point tests bits of that local (`test $mask, reg`: no load, no extra
/// register) and reads the flag only when they are all zero. With a step of
/// at most `window` (a power of two), the local passes through every
/// interval `[n·period, n·period + window)` exactly when it crosses a
/// multiple of `period`, whatever it started at, so the flag is read once
/// per `period / window` iterations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counted {
    pub(crate) local: u32,
    pub(crate) wide: bool,
    pub(crate) mask: i64,
}

/// The most work (in operators) a loop runs between two reads of the flag:
/// short enough that a freeze is honoured in microseconds.
pub(crate) const POLL_BUDGET: usize = 16_384;

/// The most iterations between two reads of the flag.
pub(crate) const POLL_PERIOD: u64 = 1024;

impl Site {
    /// The size of the record a frame unwound here leaves.
    pub(crate) fn size(&self) -> u32 {
        let saved = self.saved.iter().map(|(_, t)| t);
        record_bytes(saved.chain(&self.under).chain(self.kept_args()))
    }

    pub(crate) fn kept_args(&self) -> &[ValType] {
        if self.keep_args { &self.args } else { &[] }
    }

    /// The operand types of the call itself (with a table call's index).
    pub(crate) fn call_operands(&self) -> Vec<ValType> {
        let mut v = self.args.clone();
        if matches!(self.callee, Callee::Indirect { .. }) {
            v.push(ValType::I32);
        }
        v
    }
}

/// A construct (block, loop, if) that holds sites.
pub(crate) struct Construct {
    pub(crate) end: usize,
    pub(crate) else_: Option<usize>,
    pub(crate) params: Vec<ValType>,
    pub(crate) results: Vec<ValType>,
    /// The values under its inputs in the enclosing frame, kept in locals
    /// while it runs (`n1`), so that a site inside can save them.
    pub(crate) below: Vec<ValType>,
    pub(crate) n1: Vec<u32>,
    /// Locals for its parameters at the start of each of its frames.
    pub(crate) p_locals: Vec<u32>,
    /// Sites before it, and the last site in it (and in its then-branch).
    pub(crate) before: u32,
    pub(crate) last: u32,
    pub(crate) then_last: u32,
    /// A loop's poll point.
    pub(crate) poll: Option<u32>,
}

impl FuncBody<'_> {
    /// Whether the loop starting at `start` steps a local by a constant on
    /// every iteration: one write to it in the whole loop, `local = local ± c`,
    /// directly in the loop's body (not in a construct inside it), before
    /// any branch back to the loop's start.
    pub(crate) fn counted(&self, start: usize) -> Option<Counted> {
        let ops = &self.ops;
        let mut depth = 0usize;
        let mut end = None;
        for (j, info) in ops.iter().enumerate().skip(start + 1) {
            match info.op {
                ref op if opens_frame(op) => depth += 1,
                Operator::End if depth == 0 => {
                    end = Some(j);
                    break;
                }
                Operator::End => depth -= 1,
                _ => {}
            }
        }
        let end = end?;
        let body = &ops[start + 1..end];
        // The steps: `local.get x; const c; add|sub; local.set|tee x` at depth
        // 0; the first that is the only write to its local, with no branch
        // back before it, counts the loop.
        let mut depth = 0usize;
        let mut steps: Vec<(usize, u32, bool, i64)> = Vec::new();
        for (j, w) in body.windows(4).enumerate() {
            let step = match (&w[0].op, &w[1].op, &w[2].op, &w[3].op) {
                (
                    Operator::LocalGet { local_index: a },
                    Operator::I32Const { value },
                    op,
                    Operator::LocalSet { local_index: b } | Operator::LocalTee { local_index: b },
                ) if a == b && matches!(op, Operator::I32Add | Operator::I32Sub) => {
                    let v = i64::from(*value);
                    Some((
                        *a,
                        false,
                        if matches!(op, Operator::I32Sub) {
                            -v
                        } else {
                            v
                        },
                    ))
                }
                (
                    Operator::LocalGet { local_index: a },
                    Operator::I64Const { value },
                    op,
                    Operator::LocalSet { local_index: b } | Operator::LocalTee { local_index: b },
                ) if a == b && matches!(op, Operator::I64Add | Operator::I64Sub) => {
                    if matches!(op, Operator::I64Sub) {
                        value.checked_neg().map(|v| (*a, true, v))
                    } else {
                        Some((*a, true, *value))
                    }
                }
                _ => None,
            };
            if let Some((local, wide, c)) = step
                && depth == 0
                && c != 0
            {
                steps.push((j + 3, local, wide, c));
            }
            match w[0].op {
                ref op if opens_frame(op) => depth += 1,
                Operator::End => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let (_, local, wide, c) = steps
            .into_iter()
            .find(|&(write, local, _, _)| only_step(body, write, local))?;
        let window = c.unsigned_abs().checked_next_power_of_two()?;
        let by_budget = (POLL_BUDGET / body.len().max(1)) as u64;
        let period_iterations = by_budget.min(POLL_PERIOD);
        if period_iterations < 2 {
            return None;
        }
        let period_iterations = 1u64 << (63 - period_iterations.leading_zeros());
        let period = window.checked_mul(period_iterations)?;
        if period > 1 << 30 {
            return None;
        }
        let mask = ((period - 1) & !(window - 1)) as i64;
        Some(Counted { local, wide, mask })
    }

    /// Whether every call of the function reads the flag at a loop's poll
    /// point before it does any work, so that a cycle of calls through it
    /// reads the flag there and needs no poll point at its entry (see
    /// [`super::Plan::entry_poll`]): the code before the loop only opens
    /// blocks and moves values (Go's functions each start `global.get;
    /// local.set; block; loop`, the loop that dispatches over their blocks),
    /// it cannot branch past the loop, and the loop's poll point reads the
    /// flag on every iteration (not counted) and saves plain values alone
    /// (so is never pinned).
    pub(crate) fn starts_with_a_poll(&self, counted_polls: bool) -> bool {
        if !self.locals.iter().all(is_plain_value) {
            return false;
        }
        for (i, info) in self.ops.iter().enumerate() {
            match info.op {
                Operator::Block { .. }
                | Operator::Nop
                | Operator::Drop
                | Operator::LocalGet { .. }
                | Operator::LocalSet { .. }
                | Operator::LocalTee { .. }
                | Operator::GlobalGet { .. }
                | Operator::GlobalSet { .. }
                | Operator::I32Const { .. }
                | Operator::I64Const { .. } => {}
                Operator::Loop { .. } => {
                    return info.live
                        && !self.loop_polls.on_back_edges.contains(&i)
                        && info.stack.iter().all(is_plain_value)
                        && !(counted_polls && self.counted(i).is_some());
                }
                _ => return false,
            }
        }
        false
    }
}

impl<'p, 'a> Instrumenter<'p, 'a> {
    pub(crate) fn new_site(
        &mut self,
        callee: Callee,
        op: Option<usize>,
    ) -> Result<u32, InstrumentError> {
        let (under, args, results) = match (callee, op) {
            // A poll point before a branch back to its loop keeps the
            // operand stack under it.
            (Callee::Poll, Some(i)) if self.body.loop_polls.before.contains_key(&i) => {
                let under = match self.body.loop_polls.under.get(&i) {
                    Some(u) => u.clone(),
                    None => self.body.ops[i].stack.clone(),
                };
                (under, Vec::new(), Vec::new())
            }
            (Callee::Poll, _) | (_, None) => (Vec::new(), Vec::new(), Vec::new()),
            (_, Some(i)) => {
                let sig = match callee {
                    Callee::Direct { func, .. } | Callee::Import(func) => self.plan.func_sig(func),
                    Callee::Indirect { type_index, .. } => self
                        .plan
                        .types
                        .get(type_index as usize)
                        .and_then(|s| s.as_ref()),
                    Callee::Poll => None,
                }
                .ok_or_else(|| parse_error("a call of an unknown type"))?;
                let stack = &self.body.ops[i].stack;
                let operands =
                    sig.params.len() + usize::from(matches!(callee, Callee::Indirect { .. }));
                let split = stack
                    .len()
                    .checked_sub(operands)
                    .ok_or_else(|| parse_error("a call without its operands"))?;
                if let Some(t) = sig
                    .params
                    .iter()
                    .chain(&sig.results)
                    .find(|t| !is_plain_value(t))
                {
                    return Err(unsupported(format!("a call passes a value of type {t}")));
                }
                (
                    stack[..split].to_vec(),
                    sig.params.clone(),
                    sig.results.clone(),
                )
            }
        };
        // (Before a branch back, the loop's step has been taken once in
        // the iteration, as at its header: the same test holds.)
        let counted = match (callee, op) {
            (Callee::Poll, Some(i)) if self.plan.counted_polls => self
                .body
                .counted(self.body.loop_polls.before.get(&i).copied().unwrap_or(i)),
            _ => None,
        };
        self.sites.push(Site {
            callee,
            op,
            saved: Vec::new(),
            under,
            keep_args: matches!(callee, Callee::Import(_) | Callee::Indirect { .. }),
            args,
            results,
            counted,
            pinned: false,
            check_at: None,
        });
        Ok(self.sites.len() as u32)
    }

    /// Numbers the sites in code order, and finds the constructs that hold them.
    pub(crate) fn find_sites(&mut self) -> Result<(), InstrumentError> {
        if self.plan.entry_poll[self.plan.defined(self.body.index)] {
            self.entry_poll = Some(self.new_site(Callee::Poll, None)?);
        }
        struct Open {
            op: usize,
            before: u32,
            else_: Option<usize>,
            then_last: Option<u32>,
            poll: Option<u32>,
        }
        struct Closed {
            op: usize,
            end: usize,
            else_: Option<usize>,
            then_last: Option<u32>,
            before: u32,
            last: u32,
            poll: Option<u32>,
        }
        let mut open: Vec<Open> = Vec::new();
        let mut closed: Vec<Closed> = Vec::new();
        for i in 0..self.body.ops.len() {
            let info = &self.body.ops[i];
            let live = info.live;
            match &info.op {
                op if opens_frame(op) => {
                    let before = self.sites.len() as u32;
                    let poll = if live
                        && matches!(info.op, Operator::Loop { .. })
                        && !self.body.loop_polls.on_back_edges.contains(&i)
                    {
                        Some(self.new_site(Callee::Poll, Some(i))?)
                    } else {
                        None
                    };
                    open.push(Open {
                        op: i,
                        before,
                        else_: None,
                        then_last: None,
                        poll,
                    })
                }
                Operator::Else => {
                    if let Some(o) = open.last_mut() {
                        o.else_ = Some(i);
                        o.then_last = Some(self.sites.len() as u32);
                    }
                }
                Operator::End => {
                    if let Some(o) = open.pop() {
                        closed.push(Closed {
                            op: o.op,
                            end: i,
                            else_: o.else_,
                            then_last: o.then_last,
                            before: o.before,
                            last: self.sites.len() as u32,
                            poll: o.poll,
                        });
                    }
                }
                _ if live && self.body.loop_polls.before.contains_key(&i) => {
                    self.site_at[i] = self.new_site(Callee::Poll, Some(i))?;
                }
                Operator::Call { function_index } if live => {
                    let f = *function_index;
                    if let Some(r) = self.plan.rewind_of(f) {
                        self.site_at[i] =
                            self.new_site(Callee::Direct { func: f, rewind: r }, Some(i))?;
                    } else if self.plan.unwinding_import(f) {
                        self.site_at[i] = self.new_site(Callee::Import(f), Some(i))?;
                    }
                }
                Operator::CallIndirect {
                    type_index,
                    table_index,
                } if live && self.plan.indirect_unwinds(*type_index) => {
                    self.site_at[i] = self.new_site(
                        Callee::Indirect {
                            type_index: *type_index,
                            table: *table_index,
                        },
                        Some(i),
                    )?;
                }
                _ => {}
            }
        }
        // In code order of their starts, for the shared locals.
        closed.sort_by_key(|c| c.op);
        for c in closed {
            let start = c.op;
            if c.last == c.before || !self.body.ops[start].live {
                continue;
            }
            let (bt, is_if) = match &self.body.ops[start].op {
                Operator::Block { blockty } | Operator::Loop { blockty } => (*blockty, false),
                Operator::TryTable { try_table } => (try_table.ty, false),
                Operator::If { blockty } => (*blockty, true),
                _ => continue,
            };
            let sig = self.block_sig(&bt)?;
            let inputs = sig.params.len() + usize::from(is_if);
            let stack = &self.body.ops[start].stack;
            let split = stack
                .len()
                .checked_sub(inputs)
                .ok_or_else(|| parse_error("a block without its inputs"))?;
            let below = stack[..split].to_vec();
            // Its results may be references (a catch's `exnref`): they
            // pass through locals of the copies, never through a record.
            if let Some(t) = below
                .iter()
                .chain(&sig.params)
                .find(|t| !is_plain_value(t))
                .or_else(|| sig.results.iter().find(|t| !local_type(t)))
            {
                return Err(unsupported(format!("a block carries a value of type {t}")));
            }
            let n1 = below.iter().map(|t| self.shared.fresh(*t)).collect();
            let p_locals = sig.params.iter().map(|t| self.shared.fresh(*t)).collect();
            let construct = Construct {
                end: c.end,
                else_: c.else_,
                params: sig.params,
                results: sig.results,
                below,
                n1,
                p_locals,
                before: c.before,
                last: c.last,
                then_last: c.then_last.unwrap_or(c.last),
                poll: c.poll,
            };
            self.construct_at[start] = Some(self.constructs.len());
            self.ends[c.end] = Some(self.constructs.len());
            self.constructs.push(construct);
        }
        Ok(())
    }

    /// What each site saves: the locals live after it (on to the next
    /// operator, or to a handler that catches what the call throws), and the
    /// `n1` locals of the constructs around it (and a loop's parameters at
    /// its poll point). A local holding a reference cannot be saved.
    pub(crate) fn save_sets(&mut self) -> Result<(), InstrumentError> {
        let ops: Vec<Operator<'_>> = self.body.ops.iter().map(|o| o.op.clone()).collect();
        // A call reads and writes no local: what is live before it is what
        // is live after it, on every way out of it.
        let points: Vec<usize> = self
            .sites
            .iter()
            .map(|s| match (s.callee, s.op) {
                (_, None) => 0,
                // (Before a branch back: what its loop's header needs.)
                (Callee::Poll, Some(i)) if self.body.loop_polls.before.contains_key(&i) => i,
                (Callee::Poll, Some(i)) => i + 1,
                (_, Some(i)) => i,
            })
            .collect();
        let live = liveness::live_before(&ops, self.body.locals.len(), &points);
        // The constructs around each site.
        let mut around: Vec<Vec<usize>> = vec![Vec::new(); self.sites.len()];
        for (ci, c) in self.constructs.iter().enumerate() {
            for k in c.before + 1..=c.last {
                around[k as usize - 1].push(ci);
            }
        }
        for (k, site) in self.sites.iter_mut().enumerate() {
            let mut saved: Vec<(u32, ValType)> = live[k]
                .iter()
                .filter_map(|l| self.body.locals.get(l as usize).map(|t| (l, *t)))
                .collect();
            for &ci in &around[k] {
                let c = &self.constructs[ci];
                saved.extend(c.n1.iter().zip(&c.below).map(|(l, t)| (*l, *t)));
                if c.poll == Some(k as u32 + 1) {
                    saved.extend(c.p_locals.iter().zip(&c.params).map(|(l, t)| (*l, *t)));
                }
            }
            saved.sort_by_key(|(l, _)| *l);
            saved.dedup_by_key(|(l, _)| *l);
            if let Some((_, t)) = saved.iter().find(|(_, t)| !is_plain_value(t)) {
                if site.results.len() > 1 {
                    return Err(unsupported(format!(
                        "a local of type {t} is live at a call with several results"
                    )));
                }
                site.pinned = true;
                saved.clear();
            }
            site.check_at = match (site.callee, site.op) {
                (Callee::Direct { .. }, Some(i))
                    if !site.pinned && site.results == [ValType::I32] =>
                {
                    self.body
                        .branch_on_result
                        .get(&i)
                        .filter(|(_, written)| {
                            !written.iter().any(|w| saved.iter().any(|(l, _)| l == w))
                        })
                        .map(|(j, _)| *j)
                }
                _ => None,
            };
            site.saved = saved;
        }
        Ok(())
    }
}

/// Whether the write at `write` is the only one to `local` in the loop's
/// `body`, with no branch back to the loop's start before it.
fn only_step(body: &[super::analyze::OpInfo<'_>], write: usize, local: u32) -> bool {
    let mut depth = 0u32;
    for (j, info) in body.iter().enumerate() {
        let back = match &info.op {
            Operator::LocalSet { local_index } | Operator::LocalTee { local_index }
                if *local_index == local && j != write =>
            {
                return false;
            }
            Operator::Br { relative_depth }
            | Operator::BrIf { relative_depth }
            | Operator::BrOnNull { relative_depth }
            | Operator::BrOnNonNull { relative_depth } => *relative_depth == depth,
            Operator::BrTable { targets } => {
                targets.targets().flatten().any(|d| d == depth) || targets.default() == depth
            }
            _ => false,
        };
        if back && j < write {
            return false;
        }
        match info.op {
            ref op if opens_frame(op) => depth += 1,
            Operator::End => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}
