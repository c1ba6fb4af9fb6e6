//! The linearizability checker (see the crate docs).

use std::collections::{BTreeMap, HashSet};

/// What a client asked, on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Put a value.
    Put(Vec<u8>),
    /// Read the value (a linearizable range of one key).
    Get,
    /// Delete the key.
    Delete,
    /// A txn: if the value equals `expect` (`None`: the key is absent), put `new`.
    CompareAndSwap {
        /// The compared value.
        expect: Option<Vec<u8>>,
        /// The value put when the compare holds.
        new: Vec<u8>,
    },
}

/// What the client was answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put or delete was acknowledged.
    Done,
    /// A get's value (`None`: absent).
    Value(Option<Vec<u8>>),
    /// Whether a compare-and-swap's compare held.
    Swapped(bool),
    /// No answer (a timeout): the operation may or may not have taken effect.
    Unknown,
}

/// One operation of a history, on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client that invoked it (for reports).
    pub client: u32,
    /// The key.
    pub key: Vec<u8>,
    /// Invocation time (any monotonic unit).
    pub call: u64,
    /// Completion time; `None` when the client got no answer.
    pub ret: Option<u64>,
    /// What was asked.
    pub input: Input,
    /// What was answered ([`Output::Unknown`] when `ret` is `None`).
    pub output: Output,
}

/// The model: a register per key, as etcd's keyspace behaves for these operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl KvModel {
    /// The state after `input` from `state`, if `output` is what the model answers.
    pub fn step(
        state: &Option<Vec<u8>>,
        input: &Input,
        output: &Output,
    ) -> Option<Option<Vec<u8>>> {
        let unknown = *output == Output::Unknown;
        match input {
            Input::Put(v) => (unknown || *output == Output::Done).then(|| Some(v.clone())),
            Input::Delete => (unknown || *output == Output::Done).then_some(None),
            Input::Get => {
                (unknown || *output == Output::Value(state.clone())).then(|| state.clone())
            }
            Input::CompareAndSwap { expect, new } => {
                let holds = state == expect;
                if !unknown && *output != Output::Swapped(holds) {
                    return None;
                }
                Some(if holds {
                    Some(new.clone())
                } else {
                    state.clone()
                })
            }
        }
    }
}

/// The checker's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// This key's history is not: no order of its operations explains the results.
    Violation {
        /// The key.
        key: Vec<u8>,
        /// Its operations, by invocation time.
        ops: Vec<Op>,
    },
    /// The search on this key visited more configurations than its budget allows without
    /// deciding: not a verdict (too many concurrent unanswered operations on one key).
    BudgetExhausted {
        /// The key.
        key: Vec<u8>,
        /// Its number of operations.
        ops: usize,
        /// Configurations visited.
        visited: usize,
    },
}

/// Configurations [`check`] visits per key before it gives up with
/// [`Verdict::BudgetExhausted`] (each costs about 100 bytes of memory).
pub const SEARCH_BUDGET_DEFAULT: usize = 4_000_000;

/// The history to check: `history` without its unanswered puts and swaps whose value never
/// appears in `logged` (the (key, value) pairs of the agreed event log, e.g. from a watch
/// since revision 1) — they were not applied, so they are dropped, as etcd's robustness suite
/// patches its histories from watch events. Left in, each could be placed anywhere after its
/// call, and a few dozen on one key make the search exponential. Values must be unique per
/// write for this to be sound. Unanswered deletes stay (they carry no value to look up).
///
/// # Examples
/// ```
/// use keel_sim::{settle_unanswered_writes, Input, Op, Output};
/// let unanswered = |value: &[u8]| Op {
///     client: 1, key: b"k".to_vec(), call: 0, ret: None,
///     input: Input::Put(value.to_vec()), output: Output::Unknown,
/// };
/// let history = vec![unanswered(b"applied"), unanswered(b"lost")];
/// let logged = [(&b"k"[..], &b"applied"[..])];
/// let settled = settle_unanswered_writes(history, logged);
/// assert_eq!(settled, vec![unanswered(b"applied")]);
/// ```
pub fn settle_unanswered_writes<'a>(
    history: Vec<Op>,
    logged: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<Op> {
    let logged: std::collections::HashSet<(&[u8], &[u8])> = logged.into_iter().collect();
    history
        .into_iter()
        .filter(|op| match (&op.input, op.ret) {
            (Input::Put(v) | Input::CompareAndSwap { new: v, .. }, None) => {
                logged.contains(&(op.key.as_slice(), v.as_slice()))
            }
            _ => true,
        })
        .collect()
}

/// Check a whole history (every key, independently).
///
/// # Examples
/// ```
/// use keel_sim::{check, Input, Op, Output, Verdict};
/// let op = |client, call, ret, input, output| Op {
///     client, key: b"k".to_vec(), call, ret: Some(ret), input, output,
/// };
/// // A write completes, then a later read misses it: a stale read.
/// let stale = vec![
///     op(1, 0, 10, Input::Put(b"1".to_vec()), Output::Done),
///     op(2, 20, 30, Input::Get, Output::Value(None)),
/// ];
/// assert!(matches!(check(&stale), Verdict::Violation { .. }));
/// // The same read concurrent with the write may see either.
/// let concurrent = vec![
///     op(1, 0, 10, Input::Put(b"1".to_vec()), Output::Done),
///     op(2, 5, 30, Input::Get, Output::Value(None)),
/// ];
/// assert_eq!(check(&concurrent), Verdict::Linearizable);
/// ```
pub fn check(history: &[Op]) -> Verdict {
    check_with_budget(history, SEARCH_BUDGET_DEFAULT)
}

/// As [`check`], visiting at most `budget` configurations per key.
///
/// # Examples
/// ```
/// use keel_sim::{check_with_budget, Input, Op, Output, Verdict};
/// // Twelve concurrent writes nobody saw the end of, then a read of a value none wrote:
/// // not linearizable, but proving it means trying every subset of the writes.
/// let mut history: Vec<Op> = (0..12u8)
///     .map(|i| Op {
///         client: u32::from(i), key: b"k".to_vec(), call: 0, ret: None,
///         input: Input::Put(vec![i]), output: Output::Unknown,
///     })
///     .collect();
/// history.push(Op {
///     client: 99, key: b"k".to_vec(), call: 1, ret: Some(2),
///     input: Input::Get, output: Output::Value(Some(b"never written".to_vec())),
/// });
/// assert!(matches!(check_with_budget(&history, 100), Verdict::BudgetExhausted { .. }));
/// assert!(matches!(check_with_budget(&history, 1 << 20), Verdict::Violation { .. }));
/// ```
pub fn check_with_budget(history: &[Op], budget: usize) -> Verdict {
    let mut by_key: BTreeMap<&[u8], Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|o| o.call);
        match linearizable(&ops, budget) {
            Ok(true) => {}
            Ok(false) => {
                return Verdict::Violation {
                    key: key.to_vec(),
                    ops,
                }
            }
            Err(visited) => {
                return Verdict::BudgetExhausted {
                    key: key.to_vec(),
                    ops: ops.len(),
                    visited,
                }
            }
        }
    }
    Verdict::Linearizable
}

/// An event of the search list: an operation's call or return.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The events of `ops` in time order, as a doubly linked list with a head sentinel at 0.
/// A missing return is at the end (time infinity). On equal times calls come first, so
/// touching operations count as concurrent (the lenient reading).
fn events(ops: &[Op]) -> Vec<Event> {
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.call, false, i));
        order.push((op.ret.unwrap_or(u64::MAX), true, i));
    }
    // (time, is_return): calls (false) sort before returns (true) at equal times.
    order.sort_unstable();
    let mut list = vec![Event {
        op: usize::MAX,
        is_call: false,
        partner: 0,
        prev: 0,
        next: 1,
    }];
    let mut return_at = vec![0; ops.len()];
    for (n, (_, is_return, op)) in order.iter().enumerate() {
        let at = n + 1;
        if *is_return {
            return_at[*op] = at;
        }
        list.push(Event {
            op: *op,
            is_call: !*is_return,
            partner: 0,
            prev: at - 1,
            next: at + 1,
        });
    }
    let end = list.len();
    if let Some(last) = list.last_mut() {
        last.next = end;
    }
    for e in list.iter_mut().skip(1) {
        if e.is_call {
            e.partner = return_at[e.op];
        }
    }
    list
}

fn unlink(list: &mut [Event], at: usize) {
    let (prev, next) = (list[at].prev, list[at].next);
    list[prev].next = next;
    if next < list.len() {
        list[next].prev = prev;
    }
}

fn relink(list: &mut [Event], at: usize) {
    let (prev, next) = (list[at].prev, list[at].next);
    list[prev].next = at;
    if next < list.len() {
        list[next].prev = at;
    }
}

/// The search state: the event list, the linearized operations, the model state, the
/// choices made (call event, state before it) and the visited configurations.
struct Search {
    list: Vec<Event>,
    done: Vec<u64>,
    state: Option<Vec<u8>>,
    stack: Vec<(usize, Option<Vec<u8>>)>,
    seen: HashSet<(Vec<u64>, Option<Vec<u8>>)>,
}

impl Search {
    /// Undo the last choice; the event to try next, or `None` when no choice is left.
    fn backtrack(&mut self) -> Option<usize> {
        let (call, before) = self.stack.pop()?;
        let op = self.list[call].op;
        self.done[op / 64] &= !(1 << (op % 64));
        self.state = before;
        // Reverse order of the unlinking.
        relink(&mut self.list, call);
        let partner = self.list[call].partner;
        relink(&mut self.list, partner);
        Some(self.list[call].next)
    }

    /// Linearize the call at `at` if the model allows it and the configuration is new.
    fn try_call(&mut self, at: usize, ops: &[Op]) -> bool {
        let e = self.list[at];
        let op = &ops[e.op];
        let Some(next) = KvModel::step(&self.state, &op.input, &op.output) else {
            return false;
        };
        let mut after = self.done.clone();
        after[e.op / 64] |= 1 << (e.op % 64);
        if !self.seen.insert((after.clone(), next.clone())) {
            return false;
        }
        self.stack
            .push((at, std::mem::replace(&mut self.state, next)));
        self.done = after;
        unlink(&mut self.list, e.partner);
        unlink(&mut self.list, at);
        true
    }
}

/// Whether `ops` (one key's, by call time) are linearizable; `Err(visited)` when the search
/// visited more than `budget` configurations without deciding.
fn linearizable(ops: &[Op], budget: usize) -> Result<bool, usize> {
    let list = events(ops);
    let end = list.len();
    let mut s = Search {
        list,
        done: vec![0u64; ops.len().div_ceil(64)],
        state: None,
        stack: Vec::new(),
        seen: HashSet::new(),
    };
    let mut at = s.list[0].next;
    while s.list[0].next != end {
        // At the end of the list, or at a return whose operation is not linearized yet:
        // the current choices cannot be completed.
        if at == end || !s.list[at].is_call {
            match s.backtrack() {
                Some(next) => at = next,
                None => return Ok(false),
            }
            continue;
        }
        if s.seen.len() > budget {
            return Err(s.seen.len());
        }
        at = if s.try_call(at, ops) {
            s.list[0].next
        } else {
            s.list[at].next
        };
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, call: u64, ret: Option<u64>, input: Input, output: Output) -> Op {
        Op {
            client,
            key: b"k".to_vec(),
            call,
            ret,
            input,
            output,
        }
    }
    fn v(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }
    fn put(c: u32, call: u64, ret: u64, val: &str) -> Op {
        op(c, call, Some(ret), Input::Put(v(val)), Output::Done)
    }
    fn get(c: u32, call: u64, ret: u64, val: Option<&str>) -> Op {
        op(c, call, Some(ret), Input::Get, Output::Value(val.map(v)))
    }
    fn cas(c: u32, call: u64, ret: u64, expect: Option<&str>, new: &str, ok: bool) -> Op {
        let input = Input::CompareAndSwap {
            expect: expect.map(v),
            new: v(new),
        };
        op(c, call, Some(ret), input, Output::Swapped(ok))
    }

    #[test]
    fn sequential_histories_follow_the_model() {
        let h = [
            put(1, 0, 1, "a"),
            get(1, 2, 3, Some("a")),
            cas(1, 4, 5, Some("a"), "b", true),
            cas(1, 6, 7, Some("a"), "c", false),
            get(1, 8, 9, Some("b")),
            op(1, 10, Some(11), Input::Delete, Output::Done),
            get(1, 12, 13, None),
        ];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    #[test]
    fn known_violations_are_rejected() {
        // A read of a value never written.
        assert!(matches!(
            check(&[get(1, 0, 1, Some("x"))]),
            Verdict::Violation { .. }
        ));
        // Reads going back in time: b then a, after a was overwritten by b.
        let h = [
            put(1, 0, 1, "a"),
            put(1, 2, 3, "b"),
            get(2, 4, 5, Some("b")),
            get(3, 6, 7, Some("a")),
        ];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
        // Two compare-and-swaps from the same value both succeed: a lost update.
        let h = [
            put(1, 0, 1, "0"),
            cas(2, 2, 10, Some("0"), "x", true),
            cas(3, 3, 11, Some("0"), "y", true),
        ];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
        // Two clients read in opposite orders two concurrent writes: no single order.
        let h = [
            put(1, 0, 100, "a"),
            put(2, 0, 100, "b"),
            get(3, 10, 20, Some("a")),
            get(3, 30, 40, Some("b")),
            get(4, 10, 20, Some("b")),
            get(4, 30, 40, Some("a")),
        ];
        assert!(matches!(check(&h), Verdict::Violation { .. }));
    }

    #[test]
    fn maybe_applied_operations_may_or_may_not_take_effect() {
        // A timed-out put seen by a later read: fine.
        let seen = [
            op(1, 0, None, Input::Put(v("a")), Output::Unknown),
            get(2, 50, 60, Some("a")),
        ];
        assert_eq!(check(&seen), Verdict::Linearizable);
        // ... or never seen: also fine.
        let unseen = [
            op(1, 0, None, Input::Put(v("a")), Output::Unknown),
            get(2, 50, 60, None),
        ];
        assert_eq!(check(&unseen), Verdict::Linearizable);
        // But not seen before it was invoked.
        let early = [
            get(2, 0, 10, Some("a")),
            op(1, 20, None, Input::Put(v("a")), Output::Unknown),
        ];
        assert!(matches!(check(&early), Verdict::Violation { .. }));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = put(1, 0, 1, "z");
        other.key = b"other".to_vec();
        let h = [other, get(2, 2, 3, None)];
        assert_eq!(check(&h), Verdict::Linearizable);
    }

    proptest::proptest! {
        // Deterministic: the same cases on every run (a failure is saved and replayed).
        #![proptest_config(proptest::test_runner::Config {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b65_656c),
            ..proptest::test_runner::Config::default()
        })]
        /// Any history produced by running the model sequentially, with each operation's
        /// interval stretched over its neighbours', is linearizable.
        #[test]
        fn sequential_runs_with_overlap_are_linearizable(
            steps in proptest::collection::vec((0u8..4, 0u8..3, 0u64..3), 1..40)
        ) {
            let mut state: Option<Vec<u8>> = None;
            let mut h = Vec::new();
            for (i, (kind, val, stretch)) in steps.into_iter().enumerate() {
                let t = i as u64 * 10;
                let val = vec![b'0' + val];
                let input = match kind {
                    0 => Input::Put(val),
                    1 => Input::Get,
                    2 => Input::Delete,
                    _ => Input::CompareAndSwap { expect: Some(val.clone()), new: vec![b'n'] },
                };
                let output = match &input {
                    Input::Put(_) | Input::Delete => Output::Done,
                    Input::Get => Output::Value(state.clone()),
                    Input::CompareAndSwap { expect, .. } => Output::Swapped(&state == expect),
                };
                state = KvModel::step(&state, &input, &output).expect("the model's own output");
                // The linearization point stays at t + 5; the interval widens around it.
                let call = (t + 5).saturating_sub(5 + stretch * 10);
                h.push(op(i as u32, call, Some(t + 5 + stretch * 10), input, output));
            }
            proptest::prop_assert_eq!(check(&h), Verdict::Linearizable);
        }
    }
}
