//! Acknowledgements and ordered offset commits.
//!
//! The rule this module keeps (DESIGN.md invariant 1): an offset is committed only when every
//! record at or below it in that partition is durable, either acknowledged by the broker on the
//! clean topic or inside a fsynced quarantine file. Batches are registered in consumption order;
//! each waits for two acknowledgements ([`Part::Clean`] and [`Part::Quarantine`]); the commit
//! position of a partition only advances over a contiguous prefix of fully acknowledged batches.
//! Offsets inside a partition need not be contiguous (compaction, transaction markers), so the
//! order is that of registration, never offset arithmetic.
//!
//! Every batch also carries the assignment *generation* it was consumed in. After a rebalance,
//! acknowledgements of an older generation are ignored: those offsets may now belong to another
//! instance, and committing them from here could skip records.

use guard_core::TopicPartition;
use std::collections::{HashMap, VecDeque};

/// Which sink acknowledges part of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All passing records were acknowledged by the broker (or there were none).
    Clean,
    /// All quarantined records are inside a durable file (or there were none).
    Quarantine,
}

impl Part {
    fn bit(self) -> u8 {
        match self {
            Part::Clean => 1,
            Part::Quarantine => 2,
        }
    }
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    last_offset: i64,
    records: usize,
    pending: u8,
}

#[derive(Debug, Default)]
struct PartState {
    generation: u64,
    next_seq: u64,
    queue: VecDeque<Slot>,
    /// Next offset to commit that has not been handed out by `take_commits` yet.
    ready: Option<i64>,
}

/// Tracks in-flight batches per partition and yields commit positions.
#[derive(Debug, Default)]
pub struct AckTracker {
    parts: HashMap<TopicPartition, PartState>,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Start tracking `tp` in `generation`, forgetting anything older.
    pub fn assign(&mut self, tp: TopicPartition, generation: u64) {
        self.parts.insert(
            tp,
            PartState {
                generation,
                ..PartState::default()
            },
        );
    }

    /// Stop tracking `tp` (revoked); its in-flight batches will never be committed from here.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Register a consumed batch covering up to `last_offset`; returns its sequence number, or
    /// `None` if `tp` is not assigned in `generation`.
    pub fn register(&mut self, tp: &TopicPartition, generation: u64, last_offset: i64, records: usize) -> Option<u64> {
        let st = self.parts.get_mut(tp).filter(|s| s.generation == generation)?;
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queue.push_back(Slot {
            seq,
            last_offset,
            records,
            pending: Part::Clean.bit() | Part::Quarantine.bit(),
        });
        Some(seq)
    }

    /// Acknowledge one part of a batch. Stale generations and unknown batches are ignored.
    pub fn ack(&mut self, tp: &TopicPartition, generation: u64, seq: u64, part: Part) {
        let Some(st) = self.parts.get_mut(tp).filter(|s| s.generation == generation) else {
            return;
        };
        let Some(front) = st.queue.front() else { return };
        let Some(idx) = seq.checked_sub(front.seq).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(slot) = st.queue.get_mut(idx) {
            slot.pending &= !part.bit();
        }
        while st.queue.front().is_some_and(|s| s.pending == 0) {
            if let Some(done) = st.queue.pop_front() {
                st.ready = Some(done.last_offset + 1);
            }
        }
    }

    /// Commit positions (next offset to read) that advanced since the last call.
    pub fn take_commits(&mut self) -> Vec<(TopicPartition, i64)> {
        self.parts
            .iter_mut()
            .filter_map(|(tp, st)| st.ready.take().map(|o| (tp.clone(), o)))
            .collect()
    }

    /// Batches registered but not fully acknowledged.
    pub fn in_flight_batches(&self) -> usize {
        self.parts.values().map(|s| s.queue.len()).sum()
    }

    /// Records consumed but not yet committable (the commit lag this instance holds).
    pub fn uncommitted_records(&self) -> usize {
        self.parts
            .values()
            .flat_map(|s| s.queue.iter())
            .map(|s| s.records)
            .sum()
    }

    /// How many partitions are assigned here.
    pub fn assigned_partitions(&self) -> usize {
        self.parts.len()
    }

    /// The generation `tp` is tracked in, if assigned.
    pub fn generation(&self, tp: &TopicPartition) -> Option<u64> {
        self.parts.get(tp).map(|s| s.generation)
    }
}

/// A budget of bytes for records waiting between stages (the quarantine queue and buffers):
/// a stage takes bytes before handing records on, blocking while the budget is spent, and
/// they return when the records are durable. Back-pressure in bytes, not in items, so a few
/// huge records cannot hold more memory than many small ones.
#[derive(Debug)]
pub struct ByteBudget {
    cap: usize,
    used: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

/// Bytes taken from a [`ByteBudget`]; they return to it when this is dropped.
#[derive(Debug)]
pub struct BytesHeld {
    budget: Option<std::sync::Arc<ByteBudget>>,
    n: usize,
}

impl BytesHeld {
    /// Holds nothing (work that is bounded elsewhere).
    pub fn none() -> Self {
        Self { budget: None, n: 0 }
    }
}

impl Drop for BytesHeld {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            let mut used = b.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *used = used.saturating_sub(self.n);
            b.freed.notify_all();
        }
    }
}

impl ByteBudget {
    /// A budget of `cap` bytes (at least 1).
    pub fn new(cap: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            cap: cap.max(1),
            used: std::sync::Mutex::new(0),
            freed: std::sync::Condvar::new(),
        })
    }

    /// Take `n` bytes (at most the whole budget), blocking while they are not free.
    pub fn take(self: &std::sync::Arc<Self>, n: usize) -> BytesHeld {
        let n = n.min(self.cap);
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *used + n > self.cap {
            used = self.freed.wait(used).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *used += n;
        BytesHeld {
            budget: Some(std::sync::Arc::clone(self)),
            n,
        }
    }

    /// Bytes taken and not returned yet.
    pub fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The budget.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition: p,
        }
    }

    #[test]
    fn commits_only_contiguous_prefix() {
        let mut t = AckTracker::new();
        t.assign(tp(0), 1);
        let a = t.register(&tp(0), 1, 9, 10).unwrap_or(99);
        let b = t.register(&tp(0), 1, 19, 10).unwrap_or(99);
        t.ack(&tp(0), 1, b, Part::Clean);
        t.ack(&tp(0), 1, b, Part::Quarantine);
        assert!(t.take_commits().is_empty(), "b is done but a is not");
        t.ack(&tp(0), 1, a, Part::Clean);
        assert!(t.take_commits().is_empty(), "a still waits for its quarantine file");
        t.ack(&tp(0), 1, a, Part::Quarantine);
        assert_eq!(t.take_commits(), vec![(tp(0), 20)]);
        assert_eq!(t.in_flight_batches(), 0);
    }

    #[test]
    fn stale_generation_is_ignored() {
        let mut t = AckTracker::new();
        t.assign(tp(0), 1);
        let a = t.register(&tp(0), 1, 9, 10).unwrap_or(99);
        t.assign(tp(0), 2);
        t.ack(&tp(0), 1, a, Part::Clean);
        t.ack(&tp(0), 1, a, Part::Quarantine);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.register(&tp(0), 1, 5, 1), None);
    }

    #[test]
    fn byte_budget_blocks_until_bytes_return() {
        let b = ByteBudget::new(100);
        let first = b.take(80);
        assert_eq!(b.used(), 80);
        let b2 = std::sync::Arc::clone(&b);
        let waiter = std::thread::spawn(move || {
            let _held = b2.take(50);
            b2.used()
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(b.used(), 80, "the second take waits");
        drop(first);
        assert_eq!(waiter.join().unwrap_or(0), 50);
        assert_eq!(b.used(), 0);
        let huge = b.take(10_000);
        assert_eq!(b.used(), 100, "never more than the whole budget");
        drop(huge);
    }

    proptest! {
        /// Whatever order acknowledgements arrive in, a commit never passes a batch that is not
        /// fully acknowledged, and once everything is acknowledged the commit reaches the end.
        #[test]
        fn commit_never_passes_unacked(sizes in prop::collection::vec(1i64..50, 1..30), order in prop::collection::vec(any::<u16>(), 0..120)) {
            let mut t = AckTracker::new();
            t.assign(tp(0), 7);
            let mut last = -1i64;
            let mut batches = Vec::new();
            for s in &sizes {
                last += s;
                let seq = t.register(&tp(0), 7, last, *s as usize).unwrap_or(u64::MAX);
                batches.push((seq, last, [false, false]));
            }
            let mut acks: Vec<(usize, Part)> = (0..batches.len()).flat_map(|i| [(i, Part::Clean), (i, Part::Quarantine)]).collect();
            // A deterministic shuffle driven by `order`.
            for (i, o) in order.iter().enumerate() {
                let n = acks.len();
                acks.swap(i % n, *o as usize % n);
            }
            let mut committed = 0i64;
            for (i, part) in acks {
                t.ack(&tp(0), 7, batches[i].0, part);
                batches[i].2[if part == Part::Clean { 0 } else { 1 }] = true;
                for (_, pos) in t.take_commits() {
                    prop_assert!(pos > committed, "commit position moves forward");
                    committed = pos;
                }
                let first_unacked = batches.iter().position(|b| !(b.2[0] && b.2[1]));
                let limit = match first_unacked { Some(0) => 0, Some(k) => batches[k - 1].1 + 1, None => last + 1 };
                prop_assert_eq!(committed, limit);
            }
            prop_assert_eq!(committed, last + 1);
        }
    }
}
