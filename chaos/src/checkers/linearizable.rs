//! Linearizability of one register's history: a Wing–Gong search with Lowe's memoization
//! (the algorithm of Knossos and Porcupine), written for firebreak's kv operations.
//!
//! ```text
//!   operations ─► call and return events in time order (a call before a return at the
//!                 same millisecond: overlapping, the lenient reading), an indeterminate
//!                 operation's return at the end of time
//!   search: walk the events; at a call, try to linearize that operation now (the model
//!           accepts it from the current state) unless (set linearized, state) was tried
//!           before; at a return whose call is not linearized, undo the last choice.
//!           Linearizable when every event is placed.
//! ```
//!
//! An indeterminate write or compare-and-swap may have taken effect at any moment after
//! its call, or never: placing it after everything else is the same as never. Failed
//! operations applied nothing and indeterminate reads say nothing, so neither is given.

use std::collections::HashSet;

/// One register operation and what it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value (`None`: absent).
    Read(Option<String>),
    /// A write that took effect (or, indeterminate, may have).
    Write(String),
    /// A compare-and-swap that returned `succeeded`.
    Cas {
        expected: Option<String>,
        value: String,
        succeeded: bool,
    },
    /// A compare-and-swap whose answer was lost: it applied iff the value matched when it
    /// took effect, if it did.
    CasUnknown {
        expected: Option<String>,
        value: String,
    },
}

/// An operation with its call and return times (`None`: it never returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timed {
    pub op: RegisterOp,
    pub called_ms: u64,
    pub returned_ms: Option<u64>,
}

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history; `culprit` indexes the operation the deepest attempt
    /// could not place.
    NotLinearizable {
        culprit: usize,
    },
    /// The search passed its step bound without an answer.
    TooLarge,
}

/// The register's state after `op`, if `op` is possible from `state`.
fn step(state: &Option<String>, op: &RegisterOp) -> Option<Option<String>> {
    match op {
        RegisterOp::Read(v) => (v == state).then(|| state.clone()),
        RegisterOp::Write(v) => Some(Some(v.clone())),
        RegisterOp::Cas {
            expected,
            value,
            succeeded: true,
        } => (expected == state).then(|| Some(value.clone())),
        RegisterOp::Cas {
            expected,
            succeeded: false,
            ..
        } => (expected != state).then(|| state.clone()),
        RegisterOp::CasUnknown { expected, value } => match expected == state {
            true => Some(Some(value.clone())),
            false => Some(state.clone()),
        },
    }
}

/// The events as a doubly linked list over `2n` nodes plus a head sentinel.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per node: its operation, and whether it is the call.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// Per call node: its return node.
    ret: Vec<usize>,
    head: usize,
}

const NIL: usize = usize::MAX;

impl Events {
    fn new(history: &[Timed]) -> Self {
        let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(history.len() * 2);
        for (i, t) in history.iter().enumerate() {
            order.push((t.called_ms, 0, i));
            order.push((t.returned_ms.unwrap_or(u64::MAX), 1, i));
        }
        order.sort();
        let n = order.len();
        let head = n;
        let mut events = Events {
            next: vec![NIL; n + 1],
            prev: vec![NIL; n + 1],
            op: vec![0; n],
            is_call: vec![false; n],
            ret: vec![NIL; n],
            head,
        };
        let mut call_of = vec![NIL; history.len()];
        let mut last = head;
        for (node, (_, kind, op)) in order.into_iter().enumerate() {
            events.op[node] = op;
            events.is_call[node] = kind == 0;
            match kind {
                0 => call_of[op] = node,
                _ => events.ret[call_of[op]] = node,
            }
            events.next[last] = node;
            events.prev[node] = last;
            last = node;
        }
        events
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret[call]);
    }

    /// Puts them back, in the reverse order.
    fn unlift(&mut self, call: usize) {
        self.relink(self.ret[call]);
        self.relink(call);
    }
}

/// Whether `history`, starting from an absent key, is linearizable, within `max_steps`.
pub fn check(history: &[Timed], max_steps: u64) -> Verdict {
    let mut events = Events::new(history);
    let words = history.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut tried: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<String>)> = Vec::new();
    let mut state: Option<String> = None;
    let (mut deepest, mut culprit) = (0, 0);
    let mut entry = events.next[events.head];
    let mut steps = 0u64;
    while events.next[events.head] != NIL {
        steps += 1;
        if steps > max_steps {
            return Verdict::TooLarge;
        }
        let op = events.op[entry];
        if events.is_call[entry] {
            if let Some(next_state) = step(&state, &history[op].op) {
                let mut placed = linearized.clone();
                placed[op / 64] |= 1 << (op % 64);
                if tried.insert((placed.clone(), next_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    linearized = placed;
                    events.lift(entry);
                    entry = events.next[events.head];
                    continue;
                }
            }
            entry = events.next[entry];
        } else {
            if stack.len() >= deepest {
                (deepest, culprit) = (stack.len(), op);
            }
            let Some((call, before)) = stack.pop() else {
                return Verdict::NotLinearizable { culprit };
            };
            state = before;
            let undone = events.op[call];
            linearized[undone / 64] &= !(1 << (undone % 64));
            events.unlift(call);
            entry = events.next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests;
