//! One function being instrumented, and its two copies, written from its
//! sites (found in [`super::sites`]).
//!
//! The **fast copy** keeps the function's code and adds, out of the way of
//! its hot paths:
//!
//! - a *poll point* at every loop header, or before the branches back to a
//!   loop (before a `br_if`'s condition; see [`super::analyze::back_edges`];
//!   it keeps the operand stack under it), and at the entry of the functions that break cycles
//!   of calls (see [`super::Plan::entry_poll`]): `if
//!   (flag) { … }` where the branch, taken only when the
//!   host has raised the flag, saves the frame and returns (it calls nothing,
//!   so the loop's values stay in registers);
//! - after every call that can unwind, `if (state == UNWINDING) { … }`, which
//!   saves the frame and returns.
//!
//! A save branches, with its site's number, to a block at the end of the
//! function shared by every site that saves the same locals (see
//! [`Saves`]), which writes the record (after a call, growing the unwind
//! stack if it has no room; a poll point unwinds only where it has room,
//! and it starts with room for the largest of theirs) and returns.
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

use super::analyze::{FuncBody, opens_frame, parse_error};
use super::savers::{Saves, enc, record_bytes, size_of, store};
use super::sites::{Callee, Construct, Site};
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
    /// Where, in the code of the copy being written, the `if`s are whose
    /// branch is taken only to unwind or to end the body (see
    /// [`FuncCopy`]).
    pub(crate) hints: std::cell::RefCell<Vec<u32>>,
}

/// Where a record's site number comes from: the local that carries it to a
/// layout's shared save block, or the site itself (an inline save).
#[derive(Clone, Copy)]
enum Tag {
    Local(u32),
    Site(u32),
}

/// A copy of a function, and its branch hints: the offsets (from the start
/// of its body, as the `metadata.code.branch_hint` section counts them) of
/// the `if`s of its poll points and of its checks after calls, each not
/// taken. What they lead to runs only when the body freezes or ends: the
/// engine lays it out after the function's hot code.
pub(crate) struct FuncCopy {
    pub(crate) code: Function,
    pub(crate) hints: Vec<u32>,
}

impl<'p, 'a> Instrumenter<'p, 'a> {
    pub(crate) fn new(
        plan: &'p Plan,
        consts: &'p Consts,
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
            body,
            sig,
            sites: Vec::new(),
            site_at: vec![0; n],
            construct_at: vec![None; n],
            constructs: Vec::new(),
            ends: vec![None; n],
            entry_poll: None,
            shared: Locals::new(body.locals.len() as u32),
            hints: Default::default(),
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

    pub(crate) fn site(&self, k: u32) -> &Site {
        &self.sites[k as usize - 1]
    }

    /// How many sites the function has (numbered from 1).
    pub(crate) fn sites_count(&self) -> usize {
        self.sites.len()
    }

    /// The largest record one of the function's poll points writes (0 if
    /// it has none): the unwind stack starts with room for it, as a poll
    /// point does not grow it.
    pub(crate) fn largest_poll_record(&self) -> u32 {
        self.sites
            .iter()
            .filter(|s| s.callee == Callee::Poll && !s.pinned)
            .map(Site::size)
            .max()
            .unwrap_or(0)
    }

    /// The size of the record a frame unwound at site `k` leaves on the
    /// unwind stack (see `save_and_return`); none if no frame unwinds there.
    pub(crate) fn record_size(&self, k: u32) -> Option<u32> {
        let site = self.sites.get((k as usize).checked_sub(1)?)?;
        if site.pinned {
            return None;
        }
        Some(site.size())
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
        f.instruction(&I::I32AtomicLoad(self.flag_word()));
    }

    /// A word of the flag memory, at the address on the operand stack.
    fn flag_word(&self) -> MemArg {
        MemArg {
            offset: 0,
            align: 2,
            target: wasm_encoder::MemArgTarget::Memory(self.consts.flag_memory),
            ordering: None,
        }
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
    /// the depth of `$body` here. The record is written in place: this
    /// branch calls nothing (but the unwind stack's growth, when it has no
    /// room), so that no value of the function needs to outlive a call for
    /// it.
    pub(crate) fn save_and_return(
        &self,
        f: &mut Function,
        k: u32,
        slots: &[u32],
        saves: &mut Saves,
        at: u32,
    ) {
        let (values, types) = self.saved_values(k, slots);
        // (A poll point made sure the unwind stack had room.)
        let grow = self.site(k).callee != Callee::Poll;
        if let Some(slot) = saves.k {
            let j = saves.block(&values, &types, grow);
            f.instruction(&I::I32Const(k as i32));
            f.instruction(&I::LocalSet(slot));
            f.instruction(&I::Br(at + j));
            return;
        }
        self.store_record(f, &values, &types, Tag::Site(k), grow);
    }

    /// What site `k` saves (its values under the call and its arguments
    /// being in the locals `slots`): the locals, and their types.
    fn saved_values(&self, k: u32, slots: &[u32]) -> (Vec<u32>, Vec<ValType>) {
        let site = self.site(k);
        let mut values: Vec<u32> = site.saved.iter().map(|(l, _)| *l).collect();
        let mut types: Vec<ValType> = site.saved.iter().map(|(_, t)| *t).collect();
        values.extend(&slots[..site.under.len()]);
        values.extend(&slots[site.under.len()..site.under.len() + site.kept_args().len()]);
        types.extend(&site.under);
        types.extend(site.kept_args());
        (values, types)
    }

    /// A record of `types` (then the site's number `k` and the function's
    /// index) written on the unwind stack from the locals `values`, and the
    /// return. With `grow`, the unwind stack grows first if it has no room
    /// for it (else the poll point made sure it had, see
    /// [`Self::poll_taken`]).
    fn store_record(
        &self,
        f: &mut Function,
        values: &[u32],
        types: &[ValType],
        k: Tag,
        grow: bool,
    ) {
        let c = self.consts;
        if grow {
            self.make_room(f, record_bytes(types));
        }
        let mut at = 0u32;
        for (l, t) in values.iter().zip(types) {
            f.instruction(&I::GlobalGet(c.ptr_global));
            f.instruction(&I::LocalGet(*l));
            f.instruction(&store(t, self.mem(at)));
            at += size_of(t);
        }
        f.instruction(&I::GlobalGet(c.ptr_global));
        f.instruction(&match k {
            Tag::Local(l) => I::LocalGet(l),
            Tag::Site(k) => I::I32Const(k as i32),
        });
        f.instruction(&I::I32Store(self.mem(at)));
        f.instruction(&I::GlobalGet(c.ptr_global));
        f.instruction(&I::I32Const(self.body.index as i32));
        f.instruction(&I::I32Store(self.mem(at + 4)));
        f.instruction(&I::GlobalGet(c.ptr_global));
        f.instruction(&I::I32Const((at + 8) as i32));
        f.instruction(&I::I32Add);
        f.instruction(&I::GlobalSet(c.ptr_global));
        // An `i32` result says 1 to a caller whose check waits for a branch
        // on it (see `Site::check_at`).
        for t in &self.sig.results {
            if *t == ValType::I32 {
                f.instruction(&I::I32Const(1));
            } else {
                Self::zero(f, t);
            }
        }
        f.instruction(&I::Return);
    }

    /// Whether the unwind stack has room for `size` more bytes, left on the
    /// operand stack (in 64 bits, so that nothing wraps).
    fn fits(&self, f: &mut Function, size: u32) {
        let c = self.consts;
        f.instruction(&I::GlobalGet(c.ptr_global));
        f.instruction(&I::I64ExtendI32U);
        f.instruction(&I::I64Const(i64::from(size)));
        f.instruction(&I::I64Add);
        f.instruction(&I::MemorySize(c.stack_memory));
        f.instruction(&I::I64ExtendI32U);
        f.instruction(&I::I64Const(16));
        f.instruction(&I::I64Shl);
        f.instruction(&I::I64LeU);
    }

    /// Grows the unwind stack if it has no room for `size` more bytes (a
    /// trap if it cannot grow: past its bound, as deep as no body goes).
    fn make_room(&self, f: &mut Function, size: u32) {
        let c = self.consts;
        self.fits(f, size);
        f.instruction(&I::I32Eqz);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::I32Const((size >> 16) as i32 + 1));
        f.instruction(&I::MemoryGrow(c.stack_memory));
        f.instruction(&I::I32Const(-1));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::End);
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
    /// any (see [`Saves`]). Returns where in `prologue` the code starts.
    pub(crate) fn finish(&self, prologue: &mut Function, code: Function, saves: &Saves) -> u32 {
        let code = code.into_raw_body();
        // (Built with no locals: a one-byte count first.)
        let code = &code[1..];
        let Some(slot) = saves.k.filter(|_| !saves.layouts.is_empty()) else {
            let start = prologue.byte_len() as u32;
            prologue.raw(code.iter().copied());
            prologue.instruction(&I::End);
            return start;
        };
        for _ in &saves.layouts {
            prologue.instruction(&I::Block(EBlock::Empty));
        }
        prologue.instruction(&I::Block(match self.sig.results.first() {
            None => EBlock::Empty,
            Some(t) => EBlock::Result(enc(*t)),
        }));
        let start = prologue.byte_len() as u32;
        prologue.raw(code.iter().copied());
        prologue.instruction(&I::End);
        prologue.instruction(&I::Return);
        for l in &saves.layouts {
            prologue.instruction(&I::End);
            self.store_record(prologue, &l.values, &l.types, Tag::Local(slot), l.grow);
        }
        prologue.instruction(&I::End);
        start
    }

    /// The copy: `code` after `prologue` (see [`Self::finish`]), with its
    /// locals, and the hints given while `code` was written.
    pub(crate) fn complete(
        &self,
        mut prologue: Function,
        code: Function,
        saves: &Saves,
        extra: &Locals,
    ) -> FuncCopy {
        let hints = self.hints.take();
        let start = self.finish(&mut prologue, code, saves);
        let (code, decls) = self.with_locals(prologue, extra);
        // A byte at `o` of `code` (past its one-byte count) is at `start + o
        // - 1` of `prologue`, whose byte `p` (past its own) is at `decls + p
        // - 1` of the copy.
        let hints = hints.into_iter().map(|o| decls + start + o - 2).collect();
        FuncCopy { code, hints }
    }

    /// An `if` whose branch is taken only to unwind or to end the body.
    pub(crate) fn hinted_if(&self, f: &mut Function) {
        self.hints.borrow_mut().push(f.byte_len() as u32);
        f.instruction(&I::If(EBlock::Empty));
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
        self.hinted_if(f);
        self.save_and_return(f, k, slots, saves, at + 1);
        f.instruction(&I::End);
    }

    /// A poll point's branch, taken when the flag is up: end the body (kill),
    /// or start the unwind here, unless a pinned call is under way or the
    /// unwind stack has no room for the record (then the code goes on, and
    /// the freeze waits for a later site). It never grows the unwind stack:
    /// its way to the save calls nothing (a `memory.grow` is a call for the
    /// engine), so the values of the loop around it need not outlive a call
    /// (Cranelift would spill them, floats at every iteration), and a leaf
    /// stays one. A freeze finds the stack empty, and it starts with room
    /// for the largest record of a poll point (`stack_pages`).
    ///
    /// It has no branch but the one to the save (hinted cold, see
    /// [`FuncCopy`]): the engine lays out cold only the blocks a hint names,
    /// not those that follow an `if`'s `end` within them, so that code after
    /// a branch here would sit in the middle of the hot loop, which would
    /// jump over it at every iteration (boolector's hottest loops did). The
    /// kill traps where it is, with a load past the flag's one page, which
    /// never comes back; not by dividing by zero, as a division's operands
    /// go in fixed registers, and this code being on a way back into the
    /// loop, the engine kept values out of them, or moved them, all through
    /// the loop (churn's hottest loop: 24 instructions per iteration against
    /// 21).
    pub(crate) fn poll_taken(
        &self,
        f: &mut Function,
        k: u32,
        slots: &[u32],
        saves: &mut Saves,
        at: u32,
    ) {
        let c = self.consts;
        // Address 0 (the flag) or, to end the body, 64 KiB: past the page.
        self.flag(f);
        f.instruction(&I::I32Const(FLAG_KILL));
        f.instruction(&I::I32Eq);
        f.instruction(&I::I32Const(16));
        f.instruction(&I::I32Shl);
        f.instruction(&I::I32Load(self.flag_word()));
        f.instruction(&I::Drop);
        f.instruction(&I::GlobalGet(c.nounwind_global));
        f.instruction(&I::I32Eqz);
        // (Every poll point here has a record: a pinned one has no branch.)
        if let Some(size) = self.record_size(k) {
            self.fits(f, size);
            f.instruction(&I::I32And);
        }
        self.hinted_if(f);
        f.instruction(&I::I32Const(UNWINDING));
        f.instruction(&I::GlobalSet(c.state_global));
        self.save_and_return(f, k, slots, saves, at + 1);
        f.instruction(&I::End);
    }

    /// A poll point, `at` being the depth of `$body` here (see [`Saves`]);
    /// the operand stack under it (before a branch back to its loop) is in
    /// `slots`.
    pub(crate) fn poll(&self, f: &mut Function, k: u32, slots: &[u32], saves: &mut Saves, at: u32) {
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
            self.hinted_if(f);
        }
        self.flag(f);
        self.hinted_if(f);
        self.poll_taken(f, k, slots, saves, at + 1);
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
    pub(crate) fn fast(&self) -> Result<FuncCopy, InstrumentError> {
        self.hints.take();
        let mut scratch = Locals::new(self.shared.next);
        let mut saves = self.saves_for(&mut scratch);
        // Slots are taken before the function is built: collect its code first.
        let mut f = Function::new(Vec::<(u32, EVal)>::new());
        if let Some(k) = self.entry_poll {
            self.poll(&mut f, k, &[], &mut saves, 0);
        }
        // The frames open in the function's code (the depth of `$body`).
        let mut height = 0u32;
        // The checks that wait for a `br_if` (by its operator): the site,
        // and its slots.
        let mut waiting: std::collections::HashMap<usize, (u32, Vec<u32>)> = Default::default();
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
                    self.poll(&mut f, k, &[], &mut saves, height);
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
                if site.callee == Callee::Poll {
                    // Before a branch back to its loop.
                    self.poll(&mut f, k, under, &mut saves, height);
                    Self::get_all(&mut f, under);
                    Self::op(&mut f, &info.op)?;
                    continue;
                }
                if site.pinned {
                    self.pinned_call(&mut f, k, args)?;
                    Self::set_all(&mut f, results);
                } else {
                    Self::get_all(&mut f, args);
                    Self::op(&mut f, &info.op)?;
                    Self::set_all(&mut f, results);
                    match site.check_at {
                        Some(j) => {
                            waiting.insert(j, (k, slots.clone()));
                        }
                        None => self.unwind_check(&mut f, k, &slots, &mut saves, height),
                    }
                }
                Self::get_all(&mut f, under);
                Self::get_all(&mut f, results);
                continue;
            }
            if i == last {
                // The function's own `end`: `finish` writes it.
                break;
            }
            if let (Some((k, slots)), Operator::BrIf { relative_depth }) =
                (waiting.remove(&i), &info.op)
            {
                // The branch, taken when the call's result is not zero: the
                // call's check, then the branch.
                self.hinted_if(&mut f);
                self.unwind_check(&mut f, k, &slots, &mut saves, height + 1);
                f.instruction(&I::Br(relative_depth + 1));
                f.instruction(&I::End);
                continue;
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
        let whole = Function::new(Vec::<(u32, EVal)>::new());
        Ok(self.complete(whole, f, &saves, &scratch))
    }

    /// Prepends the local declarations: the function's own, the shared
    /// ones, then the copy's. Returns the function, and where `code`'s body
    /// starts in it.
    pub(crate) fn with_locals(&self, code: Function, extra: &Locals) -> (Function, u32) {
        let mut decls: Vec<(u32, EVal)> = self
            .body
            .declared
            .iter()
            .map(|(n, t)| (*n, enc(*t)))
            .collect();
        decls.extend(self.shared.declarations());
        decls.extend(extra.declarations());
        let mut f = Function::new(decls);
        let start = f.byte_len() as u32;
        // `code` was built with no locals: its body follows a one-byte count.
        let bytes = code.into_raw_body();
        f.raw(bytes[1..].iter().copied());
        (f, start)
    }
}
