//! The rewind copy of a function (drawn in `func.rs`'s doc): it pops its
//! record at entry and passes, guarded by `if (rw <= last site before it)`,
//! only through the constructs that lead back to the site it was unwound at,
//! where it calls the callee's rewind copy. `Rewinder` emits it from the
//! function's items (`Item`: operators, constructs, sites, polls).

use super::InstrumentError;
use super::analyze::parse_error;
use super::func::{FuncCopy, Instrumenter, Locals, NORMAL, REWINDING};
use super::savers::{Saves, size_of};
use super::sites::Callee;
use wasm_encoder::reencode::{Reencode, RoundtripReencoder};
use wasm_encoder::{BlockType as EBlock, Function, Instruction as I, ValType as EVal};
use wasmparser::{Operator, ValType};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Item {
    Op(usize),
    Site(u32),
    Poll(u32),
    /// (its operator, its construct)
    Construct(usize, usize),
    /// A construct's parameters back on the stack.
    GetParams(usize),
}

impl Item {
    /// The last site a boundary item covers.
    pub(crate) fn last_site(&self, me: &Instrumenter<'_, '_>) -> Option<u32> {
        match self {
            Item::Site(k) | Item::Poll(k) => Some(*k),
            Item::Construct(_, ci) => Some(me.constructs[*ci].last),
            Item::Op(_) | Item::GetParams(_) => None,
        }
    }
}

pub(crate) struct Rewinder<'m, 'p, 'a> {
    pub(crate) me: &'m Instrumenter<'p, 'a>,
    pub(crate) extra: Locals,
    /// Per original frame open now: its index among the emitted frames.
    pub(crate) frames: Vec<u32>,
    /// Frames open in the emitted code (the function's own counts).
    pub(crate) height: u32,
    pub(crate) site_slots: Vec<Vec<u32>>,
    pub(crate) rw: u32,
    pub(crate) tmp: u32,
    pub(crate) saves: Saves,
}

impl Rewinder<'_, '_, '_> {
    pub(crate) fn open(&mut self, f: &mut Function, i: I<'_>) {
        f.instruction(&i);
        self.height += 1;
    }

    pub(crate) fn close(&mut self, f: &mut Function) {
        f.instruction(&I::End);
        self.height -= 1;
    }

    /// A branch of the original code, to the same target in the emitted code.
    pub(crate) fn depth(&self, d: u32) -> Result<u32, InstrumentError> {
        let at = self
            .frames
            .len()
            .checked_sub(1 + d as usize)
            .ok_or_else(|| parse_error("a branch out of the function"))?;
        Ok(self.height - 1 - self.frames[at])
    }

    pub(crate) fn plain(&mut self, f: &mut Function, i: usize) -> Result<(), InstrumentError> {
        let op = &self.me.body.ops[i].op;
        match op {
            Operator::Br { relative_depth } => {
                f.instruction(&I::Br(self.depth(*relative_depth)?));
            }
            Operator::BrIf { relative_depth } => {
                f.instruction(&I::BrIf(self.depth(*relative_depth)?));
            }
            Operator::BrOnNull { relative_depth } => {
                f.instruction(&I::BrOnNull(self.depth(*relative_depth)?));
            }
            Operator::BrOnNonNull { relative_depth } => {
                f.instruction(&I::BrOnNonNull(self.depth(*relative_depth)?));
            }
            Operator::BrTable { targets } => {
                let mut t = Vec::new();
                for d in targets.targets() {
                    t.push(self.depth(d.map_err(parse_error)?)?);
                }
                let default = self.depth(targets.default())?;
                f.instruction(&I::BrTable(t.into(), default));
            }
            Operator::TryTable { try_table } => {
                self.try_table(f, try_table)?;
                self.frames.push(self.height);
                self.height += 1;
            }
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                Instrumenter::op(f, op)?;
                self.frames.push(self.height);
                self.height += 1;
            }
            Operator::End => {
                Instrumenter::op(f, op)?;
                self.frames.pop();
                self.height -= 1;
            }
            _ => Instrumenter::op(f, op)?,
        }
        Ok(())
    }

    /// A `try_table`, its catch clauses aimed at the same targets in the
    /// emitted code (their labels count from outside it).
    pub(crate) fn try_table(
        &self,
        f: &mut Function,
        t: &wasmparser::TryTable,
    ) -> Result<(), InstrumentError> {
        use wasm_encoder::Catch;
        let mut catches = Vec::with_capacity(t.catches.len());
        for c in &t.catches {
            catches.push(match *c {
                wasmparser::Catch::One { tag, label } => Catch::One {
                    tag,
                    label: self.depth(label)?,
                },
                wasmparser::Catch::OneRef { tag, label } => Catch::OneRef {
                    tag,
                    label: self.depth(label)?,
                },
                wasmparser::Catch::All { label } => Catch::All {
                    label: self.depth(label)?,
                },
                wasmparser::Catch::AllRef { label } => Catch::AllRef {
                    label: self.depth(label)?,
                },
            });
        }
        let ty = RoundtripReencoder.block_type(t.ty).map_err(parse_error)?;
        f.instruction(&I::TryTable(ty, catches.into()));
        Ok(())
    }

    /// Pops this function's record, if a rewind is under way: its locals,
    /// and the values of the site it goes back to, which `rw` names.
    pub(crate) fn prologue(&mut self, f: &mut Function) {
        let me = self.me;
        let c = me.consts;
        f.instruction(&I::GlobalGet(c.state_global));
        f.instruction(&I::I32Const(REWINDING));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::GlobalGet(c.ptr_global));
        f.instruction(&I::I32Const(8));
        f.instruction(&I::I32Sub);
        f.instruction(&I::LocalTee(self.tmp));
        f.instruction(&I::I32Load(me.mem(4)));
        f.instruction(&I::I32Const(me.body.index as i32));
        f.instruction(&I::I32Ne);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::Unreachable);
        f.instruction(&I::End);
        f.instruction(&I::LocalGet(self.tmp));
        f.instruction(&I::I32Load(me.mem(0)));
        f.instruction(&I::LocalSet(self.rw));
        // Sites that save the same locals restore them with the same code:
        // each site's own part (its record's place, the values under and
        // of its call), then its set's (the locals).
        let m = me.sites.len() as u32;
        let mut sets: Vec<&[(u32, ValType)]> = Vec::new();
        let mut set_of = Vec::with_capacity(m as usize);
        let mut by_saved = std::collections::HashMap::new();
        for site in &me.sites {
            let j = *by_saved.entry(site.saved.as_slice()).or_insert_with(|| {
                sets.push(site.saved.as_slice());
                sets.len() as u32
            });
            set_of.push(j);
        }
        let n = sets.len() as u32;
        // block $done, block $set_n … block $set_1, block $b_m … block $b_1,
        // block $bad
        for _ in 0..n + m + 2 {
            f.instruction(&I::Block(EBlock::Empty));
        }
        f.instruction(&I::LocalGet(self.rw));
        let targets: Vec<u32> = (0..=m).collect();
        f.instruction(&I::BrTable(targets.into(), 0));
        f.instruction(&I::End);
        f.instruction(&I::Unreachable);
        for k in 1..=m {
            f.instruction(&I::End);
            let site = me.site(k);
            // The record starts `size - 8` below its header.
            f.instruction(&I::LocalGet(self.tmp));
            f.instruction(&I::I32Const(site.size() as i32 - 8));
            f.instruction(&I::I32Sub);
            f.instruction(&I::LocalTee(self.tmp));
            f.instruction(&I::GlobalSet(c.ptr_global));
            let mut at: u32 = site.saved.iter().map(|(_, t)| size_of(t)).sum();
            let slots = &self.site_slots[k as usize - 1];
            let n_under = site.under.len();
            let values = site.under.iter().chain(site.kept_args());
            let value_slots = slots[..n_under]
                .iter()
                .chain(&slots[n_under..n_under + site.kept_args().len()]);
            for (t, l) in values.zip(value_slots) {
                f.instruction(&I::LocalGet(self.tmp));
                me.load(f, *t, at);
                f.instruction(&I::LocalSet(*l));
                at += size_of(t);
            }
            // To its set's block: past the sites' blocks after this one.
            f.instruction(&I::Br(m - k + set_of[k as usize - 1] - 1));
        }
        for (j, saved) in (1..=n).zip(&sets) {
            f.instruction(&I::End);
            let mut at = 0u32;
            for (l, t) in *saved {
                f.instruction(&I::LocalGet(self.tmp));
                me.load(f, *t, at);
                f.instruction(&I::LocalSet(*l));
                at += size_of(t);
            }
            f.instruction(&I::Br(n - j));
        }
        f.instruction(&I::End);
        f.instruction(&I::End);
    }

    /// One frame's items, sites `before+1 ..= last` in it.
    pub(crate) fn frame(
        &mut self,
        f: &mut Function,
        items: &[Item],
        before: u32,
        last: u32,
    ) -> Result<(), InstrumentError> {
        let me = self.me;
        let boundaries: Vec<usize> = (0..items.len())
            .filter(|&j| items[j].last_site(me).is_some())
            .collect();
        // Piece p: the boundary item (none for the first), and what follows
        // it up to the next boundary.
        let mut starts = vec![0usize];
        starts.extend(boundaries.iter().copied());
        for (p, &s) in starts.iter().enumerate() {
            let end = starts.get(p + 1).copied().unwrap_or(items.len());
            let (boundary, plain_from) = if p == 0 && boundaries.first() != Some(&0) {
                (None, 0)
            } else if p == 0 {
                // The frame starts with a boundary: piece 0 is empty.
                continue;
            } else {
                (Some(items[s]), s + 1)
            };
            let covered = boundary.and_then(|b| b.last_site(me)).unwrap_or(before);
            let guarded = p + 1 < starts.len() && covered < last;
            if guarded {
                f.instruction(&I::LocalGet(self.rw));
                f.instruction(&I::I32Const(covered as i32));
                f.instruction(&I::I32LeU);
                self.open(f, I::If(EBlock::Empty));
            }
            if let Some(b) = boundary {
                self.boundary(f, b)?;
            }
            for item in &items[plain_from..end] {
                match item {
                    Item::Op(i) => self.plain(f, *i)?,
                    Item::GetParams(i) => {
                        if let Some(ci) = me.construct_at[*i] {
                            Instrumenter::get_all(f, &me.constructs[ci].p_locals);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(&next) = starts.get(p + 1) {
                self.spill_for(f, items[next])?;
            }
            if guarded {
                self.close(f);
            }
        }
        Ok(())
    }

    /// At the end of the piece before a boundary: the operand stack goes
    /// into the locals the boundary reads it from.
    pub(crate) fn spill_for(
        &mut self,
        f: &mut Function,
        item: Item,
    ) -> Result<(), InstrumentError> {
        let me = self.me;
        match item {
            Item::Site(k) => {
                let site = me.site(k);
                let slots = &self.site_slots[k as usize - 1];
                let n_under = site.under.len();
                let n_ops = site.call_operands().len();
                Instrumenter::set_all(f, &slots[n_under..n_under + n_ops]);
                Instrumenter::set_all(f, &slots[..n_under]);
            }
            Item::Construct(i, ci) => {
                let c = &me.constructs[ci];
                let types = me.inputs_of(i, c);
                let inputs = self.extra.scratch(&types);
                Instrumenter::n1_before(f, c, &inputs);
            }
            _ => {}
        }
        Ok(())
    }

    pub(crate) fn boundary(&mut self, f: &mut Function, item: Item) -> Result<(), InstrumentError> {
        match item {
            Item::Site(k) => self.site(f, k),
            Item::Poll(k) => {
                self.poll(f, k, &[]);
                Ok(())
            }
            Item::Construct(i, ci) => self.construct(f, i, ci),
            _ => Ok(()),
        }
    }

    /// A poll point (the operand stack under it in `slots`).
    pub(crate) fn poll(&mut self, f: &mut Function, k: u32, slots: &[u32]) {
        let me = self.me;
        f.instruction(&I::LocalGet(self.rw));
        f.instruction(&I::I32Const(k as i32));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        // The rewind ends here, where the unwind began.
        f.instruction(&I::I32Const(0));
        f.instruction(&I::LocalSet(self.rw));
        f.instruction(&I::I32Const(NORMAL));
        f.instruction(&I::GlobalSet(me.consts.state_global));
        f.instruction(&I::Else);
        // (Inside that `if`: `$body` is one deeper than the frames open.)
        me.poll(f, k, slots, &mut self.saves, self.height);
        f.instruction(&I::End);
    }

    pub(crate) fn site(&mut self, f: &mut Function, k: u32) -> Result<(), InstrumentError> {
        let me = self.me;
        let site = me.site(k);
        let slots = self.site_slots[k as usize - 1].clone();
        let n_under = site.under.len();
        let n_ops = site.call_operands().len();
        let args = &slots[n_under..n_under + n_ops];
        let results = &slots[n_under + n_ops..];
        let op = site
            .op
            .ok_or_else(|| parse_error("a call site without a call"))?;
        if site.callee == Callee::Poll {
            // A poll point before a branch back to its loop.
            self.poll(f, k, &slots[..n_under]);
            Instrumenter::get_all(f, &slots[..n_under]);
            return self.plain(f, op);
        }
        if site.pinned {
            // Never unwound here: no rewind comes back to it.
            me.pinned_call(f, k, args)?;
            Instrumenter::set_all(f, results);
            Instrumenter::get_all(f, &slots[..n_under]);
            Instrumenter::get_all(f, results);
            return Ok(());
        }
        f.instruction(&I::LocalGet(self.rw));
        f.instruction(&I::I32Const(k as i32));
        f.instruction(&I::I32Eq);
        f.instruction(&I::If(EBlock::Empty));
        f.instruction(&I::I32Const(0));
        f.instruction(&I::LocalSet(self.rw));
        match site.callee {
            Callee::Direct { rewind, .. } => {
                for t in &site.args {
                    Instrumenter::zero(f, t);
                }
                f.instruction(&I::Call(rewind));
            }
            Callee::Import(func) => {
                Instrumenter::get_all(f, args);
                f.instruction(&I::Call(func));
            }
            Callee::Indirect { type_index, .. } => {
                // The callee is the function whose record is next.
                Instrumenter::get_all(f, &args[..site.args.len()]);
                f.instruction(&I::GlobalGet(me.consts.ptr_global));
                f.instruction(&I::I32Const(4));
                f.instruction(&I::I32Sub);
                f.instruction(&I::I32Load(me.mem(0)));
                f.instruction(&I::CallIndirect {
                    type_index,
                    table_index: me.consts.rewind_table,
                });
            }
            Callee::Poll => return Err(parse_error("a poll point as a call")),
        }
        Instrumenter::set_all(f, results);
        f.instruction(&I::Else);
        Instrumenter::get_all(f, args);
        Instrumenter::op(f, &me.body.ops[op].op)?;
        Instrumenter::set_all(f, results);
        f.instruction(&I::End);
        me.unwind_check(f, k, &slots, &mut self.saves, self.height - 1);
        Instrumenter::get_all(f, &slots[..n_under]);
        Instrumenter::get_all(f, results);
        Ok(())
    }

    pub(crate) fn construct(
        &mut self,
        f: &mut Function,
        i: usize,
        ci: usize,
    ) -> Result<(), InstrumentError> {
        let me = self.me;
        let c = &me.constructs[ci];
        let types = me.inputs_of(i, c);
        // The same slots the spill before it used (the pool restarts per use).
        let inputs = self.extra.scratch(&types);
        let is_if = matches!(me.body.ops[i].op, Operator::If { .. });
        let n_params = c.params.len();
        Instrumenter::get_all(f, &inputs[..n_params]);
        if is_if {
            // Rewinding into it: the branch that holds the site.
            f.instruction(&I::LocalGet(self.rw));
            f.instruction(&I::I32Const(c.then_last as i32));
            f.instruction(&I::I32LeU);
            f.instruction(&I::LocalGet(inputs[n_params]));
            f.instruction(&I::LocalGet(self.rw));
            f.instruction(&I::I32Const(c.before as i32));
            f.instruction(&I::I32GtU);
            f.instruction(&I::Select);
        }
        match &me.body.ops[i].op {
            Operator::TryTable { try_table } => self.try_table(f, try_table)?,
            op => Instrumenter::op(f, op)?,
        }
        self.frames.push(self.height);
        self.height += 1;
        match c.poll {
            // Rewinding to a loop's poll point: its parameters were put back
            // from its record, and what entered the loop is not them.
            Some(k) if !c.p_locals.is_empty() => {
                let entered = self.extra.scratch(&c.params);
                Instrumenter::set_all(f, &entered);
                f.instruction(&I::LocalGet(self.rw));
                f.instruction(&I::I32Const(k as i32));
                f.instruction(&I::I32Ne);
                f.instruction(&I::If(EBlock::Empty));
                Instrumenter::get_all(f, &entered);
                Instrumenter::set_all(f, &c.p_locals);
                f.instruction(&I::End);
            }
            _ => Instrumenter::set_all(f, &c.p_locals),
        }
        let mut body = Vec::new();
        if let Some(k) = c.poll {
            body.push(Item::Poll(k));
        }
        body.push(Item::GetParams(i));
        let then_end = c.else_.unwrap_or(c.end);
        body.extend(me.items(i + 1, then_end)?);
        let then_last = if c.else_.is_some() {
            c.then_last
        } else {
            c.last
        };
        self.frame(f, &body, c.before, then_last)?;
        if let Some(e) = c.else_ {
            f.instruction(&I::Else);
            Instrumenter::set_all(f, &c.p_locals);
            let mut body = vec![Item::GetParams(i)];
            body.extend(me.items(e + 1, c.end)?);
            self.frame(f, &body, c.then_last, c.last)?;
        }
        f.instruction(&I::End);
        self.frames.pop();
        self.height -= 1;
        let results = self.extra.scratch(&c.results);
        Instrumenter::n1_after(f, c, &results);
        Ok(())
    }
}

impl<'p, 'a> Instrumenter<'p, 'a> {
    /// The rewind copy (see the module's doc).
    pub(crate) fn rewind(&self) -> Result<FuncCopy, InstrumentError> {
        self.hints.take();
        let mut r = Rewinder {
            me: self,
            extra: Locals::new(self.shared.next),
            frames: vec![0],
            height: 1,
            site_slots: Vec::new(),
            rw: 0,
            tmp: 0,
            saves: Saves::inline(),
        };
        r.rw = r.extra.fresh(ValType::I32);
        r.tmp = r.extra.fresh(ValType::I32);
        r.saves = self.saves_for(&mut r.extra);
        // Each site's slots, fixed for the whole copy.
        for site in &self.sites {
            let mut types = site.under.clone();
            types.extend(site.call_operands());
            types.extend(&site.results);
            let slots = r.extra.scratch(&types);
            // Sites share pool slots only across sites: take fresh ones each.
            r.site_slots.push(slots);
        }
        let mut f = Function::new(Vec::<(u32, EVal)>::new());
        r.prologue(&mut f);
        let n = self.body.ops.len();
        let mut items = Vec::new();
        if let Some(k) = self.entry_poll {
            items.push(Item::Poll(k));
        }
        items.extend(self.items(0, n.saturating_sub(1))?);
        let mut code = Function::new(Vec::<(u32, EVal)>::new());
        r.frame(&mut code, &items, 0, self.sites.len() as u32)?;
        Ok(self.complete(f, code, &r.saves, &r.extra))
    }

    /// The items of one frame level, from `from` to `to` (exclusive).
    pub(crate) fn items(&self, from: usize, to: usize) -> Result<Vec<Item>, InstrumentError> {
        let mut out = Vec::new();
        let mut i = from;
        while i < to {
            if let Some(ci) = self.construct_at[i] {
                out.push(Item::Construct(i, ci));
                i = self.constructs[ci].end + 1;
            } else if self.site_at[i] != 0 {
                out.push(Item::Site(self.site_at[i]));
                i += 1;
            } else {
                out.push(Item::Op(i));
                i += 1;
            }
        }
        Ok(out)
    }
}
