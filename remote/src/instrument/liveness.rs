//! Which locals of a function are live at given points: the values a frame
//! must save when it unwinds there (a dead local is not saved, and is zero
//! after the rewind, which nothing reads before writing it).
//!
//! A classic backward data-flow over the basic blocks of the function's
//! structured control flow, locals as bit sets.

use super::analyze::opens_frame;
use wasmparser::Operator;

/// A set of locals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Locals(Vec<u64>);

impl Locals {
    fn empty(n: usize) -> Self {
        Locals(vec![0; n.div_ceil(64)])
    }

    fn insert(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w |= 1 << (i % 64);
        }
    }

    fn remove(&mut self, i: u32) {
        if let Some(w) = self.0.get_mut(i as usize / 64) {
            *w &= !(1 << (i % 64));
        }
    }

    pub(crate) fn contains(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn union_with(&mut self, other: &Locals) -> bool {
        let mut changed = false;
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            let n = *a | *b;
            changed |= n != *a;
            *a = n;
        }
        changed
    }

    /// The members, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, bits)| {
            (0..64u32)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u32 * 64 + b)
        })
    }
}

fn uses_defs(op: &Operator<'_>) -> (Option<u32>, Option<u32>) {
    match op {
        Operator::LocalGet { local_index } => (Some(*local_index), None),
        Operator::LocalSet { local_index } | Operator::LocalTee { local_index } => {
            (None, Some(*local_index))
        }
        _ => (None, None),
    }
}

/// Where each operator of a function goes next (the function's end: nowhere).
pub(crate) fn successors(ops: &[Operator<'_>]) -> Vec<Vec<usize>> {
    // Matching `end` (and `else`) of every block, loop and if.
    let mut end = vec![usize::MAX; ops.len()];
    let mut open = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            op if opens_frame(op) => open.push(i),
            Operator::End => {
                if let Some(s) = open.pop() {
                    end[s] = i;
                }
            }
            _ => {}
        }
    }
    // The frames open at each point: (kind, start), the function first.
    #[derive(Clone, Copy)]
    enum Kind {
        Func,
        Block,
        Loop,
    }
    let mut frames: Vec<(Kind, usize)> = vec![(Kind::Func, 0)];
    let mut else_of_if: Vec<Option<usize>> = vec![None; ops.len()];
    for (i, op) in ops.iter().enumerate() {
        if let Operator::Else = op
            && let Some(&(_, s)) = frames.last()
        {
            else_of_if[s] = Some(i);
        }
        match op {
            Operator::Block { .. } | Operator::If { .. } | Operator::TryTable { .. } => {
                frames.push((Kind::Block, i))
            }
            Operator::Loop { .. } => frames.push((Kind::Loop, i)),
            Operator::End => {
                frames.pop();
            }
            _ => {}
        }
    }
    let mut succ = Vec::with_capacity(ops.len());
    let mut frames: Vec<(Kind, usize)> = vec![(Kind::Func, 0)];
    let target = |frames: &[(Kind, usize)], depth: u32| -> Option<usize> {
        let at = frames.len().checked_sub(1 + depth as usize)?;
        match frames[at] {
            (Kind::Func, _) => None,
            (Kind::Loop, s) => Some(s + 1),
            (Kind::Block, s) => Some(end[s]),
        }
    };
    let next = |i: usize| (i + 1 < ops.len()).then_some(i + 1);
    // Per open `try_table`: where its catch clauses go. What a call or a
    // throw inside raises may be caught by any of them.
    let mut handlers: Vec<Vec<usize>> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let caught = || handlers.iter().flatten().copied();
        let out: Vec<usize> = match op {
            Operator::Call { .. } | Operator::CallIndirect { .. } | Operator::CallRef { .. } => {
                next(i).into_iter().chain(caught()).collect()
            }
            Operator::Throw { .. } | Operator::ThrowRef => caught().collect(),
            Operator::If { .. } => {
                let other = match else_of_if[i] {
                    Some(e) => e + 1,
                    None => end[i],
                };
                [next(i), Some(other)].into_iter().flatten().collect()
            }
            Operator::Else => {
                // The end of the then-branch: on past the if's end.
                let s = frames.last().map(|f| f.1).unwrap_or(0);
                [end.get(s).copied()].into_iter().flatten().collect()
            }
            Operator::Br { relative_depth } => {
                target(&frames, *relative_depth).into_iter().collect()
            }
            Operator::BrIf { relative_depth }
            | Operator::BrOnNull { relative_depth }
            | Operator::BrOnNonNull { relative_depth } => {
                [target(&frames, *relative_depth), next(i)]
                    .into_iter()
                    .flatten()
                    .collect()
            }
            Operator::BrTable { targets } => {
                let mut out: Vec<usize> = targets
                    .targets()
                    .flatten()
                    .filter_map(|d| target(&frames, d))
                    .collect();
                out.extend(target(&frames, targets.default()));
                out
            }
            Operator::Return | Operator::Unreachable => Vec::new(),
            _ => next(i).into_iter().collect(),
        };
        succ.push(out);
        if let Operator::TryTable { try_table } = op {
            // Its labels count from outside it.
            handlers.push(
                try_table
                    .catches
                    .iter()
                    .filter_map(|c| {
                        let label = match c {
                            wasmparser::Catch::One { label, .. }
                            | wasmparser::Catch::OneRef { label, .. }
                            | wasmparser::Catch::All { label }
                            | wasmparser::Catch::AllRef { label } => *label,
                        };
                        target(&frames, label)
                    })
                    .collect(),
            );
        }
        if let Operator::End = op
            && let Some(&(_, s)) = frames.last()
            && matches!(ops.get(s), Some(Operator::TryTable { .. }))
            && frames.len() > 1
        {
            handlers.pop();
        }
        match op {
            Operator::Block { .. } | Operator::If { .. } | Operator::TryTable { .. } => {
                frames.push((Kind::Block, i))
            }
            Operator::Loop { .. } => frames.push((Kind::Loop, i)),
            Operator::End => {
                frames.pop();
            }
            _ => {}
        }
    }
    succ
}

/// The locals live just before each operator in `points` (an index equal to
/// `ops.len()` means after the last one: nothing is live).
pub(crate) fn live_before(ops: &[Operator<'_>], locals: usize, points: &[usize]) -> Vec<Locals> {
    let succ = successors(ops);
    let n = ops.len();
    // Basic blocks: a leader starts one.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    leader[n] = true;
    for (i, s) in succ.iter().enumerate() {
        if s.len() != 1 || s[0] != i + 1 {
            leader[i + 1] = true;
            for &t in s {
                leader[t] = true;
            }
        }
    }
    let starts: Vec<usize> = (0..n).filter(|i| leader[*i]).collect();
    let mut block_of = vec![0usize; n];
    for (b, &s) in starts.iter().enumerate() {
        let e = starts.get(b + 1).copied().unwrap_or(n);
        for slot in &mut block_of[s..e] {
            *slot = b;
        }
    }
    let block_end = |b: usize| starts.get(b + 1).copied().unwrap_or(n);
    let nb = starts.len();
    let mut gen_ = vec![Locals::empty(locals); nb];
    let mut kill = vec![Locals::empty(locals); nb];
    for b in 0..nb {
        for op in &ops[starts[b]..block_end(b)] {
            let (u, d) = uses_defs(op);
            if let Some(u) = u
                && !kill[b].contains(u)
            {
                gen_[b].insert(u);
            }
            if let Some(d) = d {
                kill[b].insert(d);
            }
        }
    }
    let block_succ: Vec<Vec<usize>> = (0..nb)
        .map(|b| {
            let last = block_end(b) - 1;
            succ[last].iter().map(|&t| block_of[t]).collect()
        })
        .collect();
    let mut live_in = gen_.clone();
    let mut live_out = vec![Locals::empty(locals); nb];
    loop {
        let mut changed = false;
        for b in (0..nb).rev() {
            let mut out = Locals::empty(locals);
            for &s in &block_succ[b] {
                out.union_with(&live_in[s]);
            }
            live_out[b] = out.clone();
            for (w, k) in out.0.iter_mut().zip(&kill[b].0) {
                *w &= !k;
            }
            out.union_with(&gen_[b]);
            if out != live_in[b] {
                live_in[b] = out;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    points
        .iter()
        .map(|&p| {
            if p >= n {
                return Locals::empty(locals);
            }
            let b = block_of[p];
            let mut live = live_out[b].clone();
            for op in ops[p..block_end(b)].iter().rev() {
                let (u, d) = uses_defs(op);
                if let Some(d) = d {
                    live.remove(d);
                }
                if let Some(u) = u {
                    live.insert(u);
                }
            }
            live
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops_of(text: &str) -> Vec<Operator<'static>> {
        let wasm: &'static [u8] = Box::leak(wat::parse_str(text).expect("wat").into_boxed_slice());
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let Ok(wasmparser::Payload::CodeSectionEntry(body)) = payload {
                let mut r = body.get_operators_reader().expect("ops");
                let mut ops = Vec::new();
                while !r.eof() {
                    ops.push(r.read().expect("op"));
                }
                return ops;
            }
        }
        panic!("no function")
    }

    #[test]
    fn a_local_read_after_a_point_is_live_there_and_an_overwritten_one_is_not() {
        // 0: local.get 0, 1: local.set 1, 2: i32.const 5, 3: local.set 0,
        // 4: local.get 1, 5: local.get 0, 6: i32.add, 7: drop, 8: end
        let ops = ops_of(
            "(module (func (param i32) (local i32)
                local.get 0 local.set 1 i32.const 5 local.set 0
                local.get 1 local.get 0 i32.add drop))",
        );
        let live = live_before(&ops, 2, &[0, 2, 4, 8]);
        assert_eq!(live[0].iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(live[1].iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(live[2].iter().collect::<Vec<_>>(), vec![0, 1]);
        assert!(live[3].iter().next().is_none());
    }

    #[test]
    fn a_loop_keeps_what_its_next_iteration_reads_live() {
        // 0 loop, 1 local.get 1, 2 local.get 0, 3 i32.add, 4 local.set 1,
        // 5 local.get 0, 6 br_if 0, 7 end, 8 local.get 2, 9 drop, 10 end
        let ops = ops_of(
            "(module (func (param i32) (local i32 i32)
                (loop local.get 1 local.get 0 i32.add local.set 1 local.get 0 br_if 0)
                local.get 2 drop))",
        );
        let live = live_before(&ops, 3, &[5, 8]);
        // At 5 (after writing 1): 0 is read now, 1 at the next iteration, 2 after.
        assert_eq!(live[0].iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(live[1].iter().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn branches_of_an_if_and_a_br_table_are_followed() {
        let ops = ops_of(
            "(module (func (param i32) (local i32 i32)
                (block (block (br_table 0 1 (local.get 0))) (local.set 1 (local.get 2)))
                (if (local.get 0) (then (drop (local.get 1))) (else (drop (local.get 2))))))",
        );
        let live = live_before(&ops, 3, &[0]);
        assert_eq!(live[0].iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
