//! One function: what it does (its operators, typed by the validator), and
//! its two instrumented copies.
//!
//! The **fast copy** keeps the function's code and adds, out of the way of
//! its hot paths:
//!
//! - a *poll point* at every loop header (and at the entry of a function that
//!   can recurse): `if (flag) { … }` where the branch, taken only when the
//!   host has raised the flag, saves the frame and returns (it calls nothing,
//!   so the loop's values stay in registers);
//! - after every call that can unwind, `if (state == UNWINDING) { … }`, which
//!   saves the frame and returns.
//!
//! A save branches, with its site's number, to a block at the end of the
//! function shared by every site that saves the same locals (see
//! [`Saves`]), which calls the record helper and returns.
//!
//! A saved frame (a *record*, pushed on the unwind stack in its own memory) is
//!
//! ```text
//!   [ live locals ][ operand stack under the call ][ call arguments? ][ k: u32 ][ fid: u32 ]
//! ```
//!
//! where `k` numbers the point (a *site*, 1-based, in code order) and `fid` is
//! the function's index. Arguments are kept where the callee may be an import
//! (which is called again with them after the rewind). A frame saves only the
//! locals live after its site (see [`super::liveness`]).
//!
//! The **rewind copy** runs once a stack is put back: at its entry it pops its
//! record, and every piece of code between sites is guarded by
//! `if (rw <= last site before it)`, where `rw` is the site being returned to
//! (0 once reached), so that the rewind passes only through the constructs
//! that lead to its site, and there calls the callee's rewind copy (found by
//! `fid` for a call through a table). At every boundary (a site, or the start
//! of a construct that holds sites) the operand stack is kept in locals, so
//! that skipped code leaves nothing missing. Once the innermost frame is back
//! in place, the rewind copies run on as the function would, with the same
//! poll points and unwinding, and call fast copies from then on.

use super::analyze::{FuncBody, is_plain_value, local_type, opens_frame, parse_error};
use super::liveness;
use super::savers::{Savers, Saves, enc, size_of};
use super::{Consts, InstrumentError, Plan, Sig, unsupported};
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType as EBlock, Function, Instruction as I, MemArg, ValType as EVal};
use wasmparser::{BlockType, Operator, ValType};

/// The unwinder's states (the `state` global).
pub(crate) const NORMAL: i32 = 0;

pub(crate) const UNWINDING: i32 = 1;

pub(crate) const REWINDING: i32 = 2;

/// The flag's value that asks a body to end: a poll point traps.
pub(crate) const FLAG_KILL: i32 = 2;

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
    pub(crate) fn size(&self) -> u32 {
        let values: u32 = self
            .saved
            .iter()
            .map(|(_, t)| size_of(t))
            .chain(self.under.iter().map(size_of))
            .chain(self.kept_args().iter().map(size_of))
            .sum();
        values + 8
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

/// Extra locals of a copy, allocated past the function's own.
pub(crate) struct Locals {
    pub(crate) next: u32,
    pub(crate) types: Vec<ValType>,
    pub(crate) pool: std::collections::HashMap<ValType, Vec<u32>>,
}

impl Locals {
    pub(crate) fn new(first: u32) -> Self {
        Locals {
            next: first,
            types: Vec::new(),
            pool: Default::default(),
        }
    }

    pub(crate) fn fresh(&mut self, t: ValType) -> u32 {
        let i = self.next;
        self.next += 1;
        self.types.push(t);
        i
    }

    /// Scratch locals for values of these types, reused by the next call.
    pub(crate) fn scratch(&mut self, types: &[ValType]) -> Vec<u32> {
        let mut used: std::collections::HashMap<ValType, usize> = Default::default();
        let mut out = Vec::with_capacity(types.len());
        for t in types {
            let n = used.entry(*t).or_insert(0);
            let have = self.pool.get(t).map(|p| p.len()).unwrap_or(0);
            if *n == have {
                let i = self.fresh(*t);
                self.pool.entry(*t).or_default().push(i);
            }
            out.push(self.pool[t][*n]);
            *n += 1;
        }
        out
    }

    pub(crate) fn declarations(&self) -> Vec<(u32, EVal)> {
        self.types.iter().map(|t| (1, enc(*t))).collect()
    }
}

/// A function being instrumented.
pub(crate) struct Instrumenter<'p, 'a> {
    pub(crate) plan: &'p Plan,
    pub(crate) consts: &'p Consts,
    pub(crate) savers: &'p std::cell::RefCell<Savers>,
    pub(crate) body: &'p FuncBody<'a>,
    pub(crate) sig: &'p Sig,
    pub(crate) sites: Vec<Site>,
    /// Per operator: the site it is (0: none).
    pub(crate) site_at: Vec<u32>,
    /// Per operator: the construct it starts, if it holds sites.
    pub(crate) construct_at: Vec<Option<usize>>,
    pub(crate) constructs: Vec<Construct>,
    /// Per operator: the construct its `end` closes.
    pub(crate) ends: Vec<Option<usize>>,
    pub(crate) entry_poll: Option<u32>,
    /// Locals shared by both copies (`n1`, parameters), from the first past
    /// the function's own.
    pub(crate) shared: Locals,
}

impl<'p, 'a> Instrumenter<'p, 'a> {
    pub(crate) fn new(
        plan: &'p Plan,
        consts: &'p Consts,
        savers: &'p std::cell::RefCell<Savers>,
        body: &'p FuncBody<'a>,
        sig: &'p Sig,
    ) -> Result<Self, InstrumentError> {
        if let Some(why) = &body.refusal {
            return Err(unsupported(why.clone()));
        }
        let n = body.ops.len();
        let mut me = Instrumenter {
            plan,
            consts,
            savers,
            body,
            sig,
            sites: Vec::new(),
            site_at: vec![0; n],
            construct_at: vec![None; n],
            constructs: Vec::new(),
            ends: vec![None; n],
            entry_poll: None,
            shared: Locals::new(body.locals.len() as u32),
        };
        me.find_sites()?;
        me.save_sets()?;
        Ok(me)
    }

    pub(crate) fn block_sig(&self, bt: &BlockType) -> Result<Sig, InstrumentError> {
        Ok(match bt {
            BlockType::Empty => Sig::default(),
            BlockType::Type(t) => Sig {
                params: Vec::new(),
                results: vec![*t],
            },
            BlockType::FuncType(i) => self
                .plan
                .types
                .get(*i as usize)
                .and_then(|s| s.clone())
                .ok_or_else(|| parse_error("a block of an unknown type"))?,
        })
    }

    pub(crate) fn new_site(
        &mut self,
        callee: Callee,
        op: Option<usize>,
    ) -> Result<u32, InstrumentError> {
        let (under, args, results) = match (callee, op) {
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
        let counted = match (callee, op) {
            (Callee::Poll, Some(i)) if self.plan.counted_polls => self.counted(i),
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
        });
        Ok(self.sites.len() as u32)
    }

    /// Whether the loop starting at `start` steps a local by a constant on
    /// every iteration: one write to it in the whole loop, `local = local ± c`,
    /// directly in the loop's body (not in a construct inside it), before
    /// any branch back to the loop's start.
    pub(crate) fn counted(&self, start: usize) -> Option<Counted> {
        let ops = &self.body.ops;
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
        // The step: `local.get x; const c; add|sub; local.set|tee x` at depth 0.
        let mut depth = 0usize;
        let mut found: Option<(usize, u32, bool, i64)> = None;
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
                    let v = *value;
                    Some((
                        *a,
                        true,
                        if matches!(op, Operator::I64Sub) {
                            v.checked_neg()?
                        } else {
                            v
                        },
                    ))
                }
                _ => None,
            };
            if let Some((local, wide, c)) = step
                && depth == 0
                && found.is_none()
                && c != 0
            {
                found = Some((j + 3, local, wide, c));
            }
            match w[0].op {
                ref op if opens_frame(op) => depth += 1,
                Operator::End => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        let (write, local, wide, c) = found?;
        // No other write to it, and no branch back before the step.
        let mut depth = 0u32;
        for (j, info) in body.iter().enumerate() {
            let back = match &info.op {
                Operator::LocalSet { local_index } | Operator::LocalTee { local_index }
                    if *local_index == local && j != write =>
                {
                    return None;
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
                return None;
            }
            match info.op {
                ref op if opens_frame(op) => depth += 1,
                Operator::End => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
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

    /// Numbers the sites in code order, and finds the constructs that hold them.
    pub(crate) fn find_sites(&mut self) -> Result<(), InstrumentError> {
        if self.plan.recursive[self.plan.defined(self.body.index)] {
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
                    let poll = if live && matches!(info.op, Operator::Loop { .. }) {
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
            site.saved = saved;
        }
        Ok(())
    }

    pub(crate) fn site(&self, k: u32) -> &Site {
        &self.sites[k as usize - 1]
    }

    pub(crate) fn mem(&self, offset: u32) -> MemArg {
        MemArg {
            offset: offset as u64,
            align: 0,
            target: wasm_encoder::MemArgTarget::Memory(self.consts.stack_memory),
            ordering: None,
        }
    }

    /// The freeze flag, read with an atomic load: a plain load may be
    /// answered from an earlier one of the same address when no store comes
    /// between (a poll point in a loop without stores, after the one at the
    /// function's entry), and the loop would never see the flag rise.
    pub(crate) fn flag(&self, f: &mut Function) {
        f.instruction(&I::I32Const(0));
        f.instruction(&I::I32AtomicLoad(MemArg {
            offset: 0,
            align: 2,
            target: wasm_encoder::MemArgTarget::Memory(self.consts.flag_memory),
            ordering: None,
        }));
    }

    pub(crate) fn load(&self, f: &mut Function, t: ValType, offset: u32) {
        let m = self.mem(offset);
        f.instruction(&match t {
            ValType::I32 => I::I32Load(m),
            ValType::I64 => I::I64Load(m),
            ValType::F32 => I::F32Load(m),
            ValType::F64 => I::F64Load(m),
            _ => I::V128Load(m),
        });
    }

    pub(crate) fn zero(f: &mut Function, t: &ValType) {
        f.instruction(&match t {
            ValType::I32 => I::I32Const(0),
            ValType::I64 => I::I64Const(0),
            ValType::F32 => I::F32Const(0.0f32.into()),
            ValType::F64 => I::F64Const(0.0f64.into()),
            _ => I::V128Const(0),
        });
    }

    /// Saves the frame at site `k` (its values under the call and its
    /// arguments are in the locals `slots`) and returns from the function:
    /// inline, or with shared `saves` through its layout's block, `at` being
    /// the depth of `$body` here. The record is written by a helper the
    /// values are passed to: this branch calls nothing else, so that no
    /// value of the function needs to outlive a call for it.
    pub(crate) fn save_and_return(
        &self,
        f: &mut Function,
        k: u32,
        slots: &[u32],
        saves: &mut Saves,
        at: u32,
    ) {
        let site = self.site(k);
        let mut values: Vec<u32> = site.saved.iter().map(|(l, _)| *l).collect();
        let mut types: Vec<ValType> = site.saved.iter().map(|(_, t)| *t).collect();
        values.extend(&slots[..site.under.len()]);
        values.extend(&slots[site.under.len()..site.under.len() + site.kept_args().len()]);
        types.extend(&site.under);
        types.extend(site.kept_args());
        if let Some(slot) = saves.k {
            let j = saves.block(&values, &types);
            f.instruction(&I::I32Const(k as i32));
            f.instruction(&I::LocalSet(slot));
            f.instruction(&I::Br(at + j));
            return;
        }
        for l in &values {
            f.instruction(&I::LocalGet(*l));
        }
        f.instruction(&I::I32Const(k as i32));
        self.call_saver(f, &types);
    }

    /// The end of a save, `k` on the stack above the values: the helper,
    /// and the return.
    fn call_saver(&self, f: &mut Function, types: &[ValType]) {
        let helper = self.savers.borrow_mut().get(types);
        f.instruction(&I::I32Const(self.body.index as i32));
        f.instruction(&I::Call(helper));
        for t in &self.sig.results {
            Self::zero(f, t);
        }
        f.instruction(&I::Return);
    }

    /// How a copy of this function saves its frames (see [`Saves`]):
    /// shared, unless its `$body` block could not have its results (more
    /// than one).
    pub(crate) fn saves_for(&self, locals: &mut Locals) -> Saves {
        if self.sig.results.len() <= 1 && !self.sites.is_empty() {
            Saves::shared(locals.fresh(ValType::I32))
        } else {
            Saves::inline()
        }
    }

    /// Ends a copy: `code` (the function's code without its final `end`)
    /// after `prologue`, wrapped in the shared saves' blocks if there are
    /// any (see [`Saves`]).
    pub(crate) fn finish(&self, prologue: &mut Function, code: Function, saves: &Saves) {
        let code = code.into_raw_body();
        // (Built with no locals: a one-byte count first.)
        let code = &code[1..];
        let Some(slot) = saves.k.filter(|_| !saves.layouts.is_empty()) else {
            prologue.raw(code.iter().copied());
            prologue.instruction(&I::End);
            return;
        };
        for _ in &saves.layouts {
            prologue.instruction(&I::Block(EBlock::Empty));
        }
        prologue.instruction(&I::Block(match self.sig.results.first() {
            None => EBlock::Empty,
            Some(t) => EBlock::Result(enc(*t)),
        }));
        prologue.raw(code.iter().copied());
        prologue.instruction(&I::End);
        prologue.instruction(&I::Return);
        for (values, types) in &saves.layouts {
            prologue.instruction(&I::End);
            for l in values {
                prologue.instruction(&I::LocalGet(*l));
            }
            prologue.instruction(&I::LocalGet(slot));
            self.call_saver(prologue, types);
        }
        prologue.instruction(&I::End);
    }

    /// After a call: if the callee unwound, this frame saves itself too.
    pub(crate) fn unwind_check(
        &self,
        f: &mut Function,
        k: u32,
        slots: &[u32],
        saves: &mut Saves,
        at: u32,
    ) {
        f.instruction(&I::GlobalGet(self.consts.state_global));
        f.instruction(&I::I32Const(UNWINDING));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        self.save_and_return(f, k, slots, saves, at + 1);
        f.instruction(&I::End);
    }

    /// A poll point's branch, taken when the flag is up: end the body (kill),
    /// or start the unwind here, unless a pinned call is under way (then
    /// the code goes on, and the freeze waits for a later poll point).
    pub(crate) fn poll_taken(&self, f: &mut Function, k: u32, saves: &mut Saves, at: u32) {
        let c = self.consts;
        self.flag(f);
        f.instruction(&I::I32Const(FLAG_KILL));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::GlobalGet(c.nounwind_global));
        f.instruction(&I::I32Eqz);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::I32Const(UNWINDING));
        f.instruction(&I::GlobalSet(c.state_global));
        self.save_and_return(f, k, &[], saves, at + 1);
        f.instruction(&I::End);
    }

    /// A poll point, `at` being the depth of `$body` here (see [`Saves`]).
    pub(crate) fn poll(&self, f: &mut Function, k: u32, saves: &mut Saves, at: u32) {
        if self.site(k).pinned {
            return;
        }
        let counted = self.site(k).counted;
        let at = at + u32::from(counted.is_some());
        if let Some(c) = counted {
            f.instruction(&I::LocalGet(c.local));
            if c.wide {
                f.instruction(&I::I64Const(c.mask));
                f.instruction(&I::I64And);
                f.instruction(&I::I64Eqz);
            } else {
                f.instruction(&I::I32Const(c.mask as i32));
                f.instruction(&I::I32And);
                f.instruction(&I::I32Eqz);
            }
            f.instruction(&I::If(EBlock::Empty));
        }
        self.flag(f);
        f.instruction(&I::If(EBlock::Empty));
        self.poll_taken(f, k, saves, at + 1);
        f.instruction(&I::End);
        if counted.is_some() {
            f.instruction(&I::End);
        }
    }

    /// A pinned site's call (its operands in `operands`), made with
    /// `nounwind` raised, and lowered again however the call ends: by
    /// returning, or by throwing (caught, the count lowered, rethrown).
    pub(crate) fn pinned_call(
        &self,
        f: &mut Function,
        k: u32,
        operands: &[u32],
    ) -> Result<(), InstrumentError> {
        let site = self.site(k);
        let op = site
            .op
            .ok_or_else(|| parse_error("a pinned site without a call"))?;
        let nounwind = self.consts.nounwind_global;
        let step = |f: &mut Function, add: bool| {
            f.instruction(&I::GlobalGet(nounwind));
            f.instruction(&I::I32Const(1));
            f.instruction(&if add { I::I32Add } else { I::I32Sub });
            f.instruction(&I::GlobalSet(nounwind));
        };
        let ty = match site.results.as_slice() {
            [] => EBlock::Empty,
            [t] => EBlock::Result(enc(*t)),
            _ => return Err(unsupported("a pinned call with several results")),
        };
        let exnref = EVal::Ref(wasm_encoder::RefType {
            nullable: true,
            heap_type: wasm_encoder::HeapType::Abstract {
                shared: false,
                ty: wasm_encoder::AbstractHeapType::Exn,
            },
        });
        step(f, true);
        f.instruction(&I::Block(ty));
        f.instruction(&I::Block(EBlock::Result(exnref)));
        f.instruction(&I::TryTable(
            ty,
            vec![wasm_encoder::Catch::AllRef { label: 0 }].into(),
        ));
        Self::get_all(f, operands);
        Self::op(f, &self.body.ops[op].op)?;
        f.instruction(&I::End);
        f.instruction(&I::Br(1));
        f.instruction(&I::End);
        step(f, false);
        f.instruction(&I::ThrowRef);
        f.instruction(&I::End);
        step(f, false);
        Ok(())
    }

    pub(crate) fn set_all(f: &mut Function, locals: &[u32]) {
        for l in locals.iter().rev() {
            f.instruction(&I::LocalSet(*l));
        }
    }

    pub(crate) fn get_all(f: &mut Function, locals: &[u32]) {
        for l in locals {
            f.instruction(&I::LocalGet(*l));
        }
    }

    pub(crate) fn op(f: &mut Function, op: &Operator<'_>) -> Result<(), InstrumentError> {
        let i = RoundtripReencoder
            .instruction(op.clone())
            .map_err(parse_error)?;
        f.instruction(&i);
        Ok(())
    }

    /// Before a construct that holds sites: the values under its inputs go
    /// into its `n1` locals (its inputs into `inputs`).
    pub(crate) fn n1_before(f: &mut Function, c: &Construct, inputs: &[u32]) {
        Self::set_all(f, inputs);
        Self::set_all(f, &c.n1);
    }

    /// After it: they come back under its results.
    pub(crate) fn n1_after(f: &mut Function, c: &Construct, results: &[u32]) {
        if c.n1.is_empty() {
            return;
        }
        Self::set_all(f, results);
        Self::get_all(f, &c.n1);
        Self::get_all(f, results);
    }

    pub(crate) fn inputs_of(&self, start: usize, c: &Construct) -> Vec<ValType> {
        let mut v = c.params.clone();
        if matches!(self.body.ops[start].op, Operator::If { .. }) {
            v.push(ValType::I32);
        }
        v
    }

    /// The fast copy: the function as it is, with poll points and unwinding.
    pub(crate) fn fast(&self) -> Result<Function, InstrumentError> {
        let mut scratch = Locals::new(self.shared.next);
        let mut saves = self.saves_for(&mut scratch);
        // Slots are taken before the function is built: collect its code first.
        let mut f = Function::new(Vec::<(u32, EVal)>::new());
        if let Some(k) = self.entry_poll {
            self.poll(&mut f, k, &mut saves, 0);
        }
        // The frames open in the function's code (the depth of `$body`).
        let mut height = 0u32;
        let last = self.body.ops.len().saturating_sub(1);
        for (i, info) in self.body.ops.iter().enumerate() {
            if let Some(ci) = self.construct_at[i] {
                let c = &self.constructs[ci];
                if !c.n1.is_empty() {
                    let types = self.inputs_of(i, c);
                    let inputs = scratch.scratch(&types);
                    Self::n1_before(&mut f, c, &inputs);
                    Self::get_all(&mut f, &inputs);
                }
                Self::op(&mut f, &info.op)?;
                height += 1;
                if let Some(k) = c.poll {
                    Self::set_all(&mut f, &c.p_locals);
                    self.poll(&mut f, k, &mut saves, height);
                    Self::get_all(&mut f, &c.p_locals);
                }
                continue;
            }
            let k = self.site_at[i];
            if k != 0 {
                let site = self.site(k);
                let operands = site.call_operands();
                let mut types = site.under.clone();
                types.extend(&operands);
                types.extend(&site.results);
                let slots = scratch.scratch(&types);
                let (under, rest) = slots.split_at(site.under.len());
                let (args, results) = rest.split_at(operands.len());
                Self::set_all(&mut f, args);
                Self::set_all(&mut f, under);
                if site.pinned {
                    self.pinned_call(&mut f, k, args)?;
                    Self::set_all(&mut f, results);
                } else {
                    Self::get_all(&mut f, args);
                    Self::op(&mut f, &info.op)?;
                    Self::set_all(&mut f, results);
                    self.unwind_check(&mut f, k, &slots, &mut saves, height);
                }
                Self::get_all(&mut f, under);
                Self::get_all(&mut f, results);
                continue;
            }
            if i == last {
                // The function's own `end`: `finish` writes it.
                break;
            }
            Self::op(&mut f, &info.op)?;
            if opens_frame(&info.op) {
                height += 1;
            } else if matches!(info.op, Operator::End) {
                height = height.saturating_sub(1);
            }
            if let Some(ci) = self.ends[i] {
                let c = &self.constructs[ci];
                if !c.n1.is_empty() {
                    let results = scratch.scratch(&c.results);
                    Self::n1_after(&mut f, c, &results);
                }
            }
        }
        let mut whole = Function::new(Vec::<(u32, EVal)>::new());
        self.finish(&mut whole, f, &saves);
        Ok(self.with_locals(whole, &scratch))
    }

    /// Prepends the local declarations: the function's own, the shared
    /// ones, then the copy's.
    pub(crate) fn with_locals(&self, code: Function, extra: &Locals) -> Function {
        let mut decls: Vec<(u32, EVal)> = self
            .body
            .declared
            .iter()
            .map(|(n, t)| (*n, enc(*t)))
            .collect();
        decls.extend(self.shared.declarations());
        decls.extend(extra.declarations());
        let mut f = Function::new(decls);
        // `code` was built with no locals: its body follows a one-byte count.
        let bytes = code.into_raw_body();
        f.raw(bytes[1..].iter().copied());
        f
    }
}
