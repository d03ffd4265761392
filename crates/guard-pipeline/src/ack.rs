//! Ordered offset commits (the source's side of the acknowledgement tokens).
//!
//! The rule this module keeps (DESIGN.md invariant 1): an offset is committed only when every
//! record at or below it in that partition is durable, either acknowledged by the broker on the
//! clean topic or inside a fsynced quarantine file. Batches are registered in consumption order
//! and each leaves with a [`BatchAck`] token; the stages acknowledge its two parts
//! ([`Part::Clean`], [`Part::Quarantine`]) on the token, without touching this tracker, and the
//! token reports the finished batch on a channel the source drains into [`AckTracker::finish`].
//! Only the source owns the tracker; the commit position of a partition only advances over a
//! contiguous prefix of finished batches.
//! Offsets inside a partition need not be contiguous (compaction, transaction markers), so the
//! order is that of registration, never offset arithmetic.
//!
//! Every batch also carries the assignment *generation* it was consumed in. After a rebalance,
//! acknowledgements of an older generation are ignored: those offsets may now belong to another
//! instance, and committing them from here could skip records.

use guard_core::{BatchAck, Finished, Lease, TopicPartition};
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::Arc;

#[derive(Debug)]
struct Slot {
    seq: u64,
    last_offset: i64,
    records: usize,
    done: bool,
}

#[derive(Debug, Default)]
struct PartState {
    generation: u64,
    lease: Arc<Lease>,
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

    /// Start tracking `tp` in `generation` under a fresh lease, forgetting anything older
    /// (the old lease is revoked, so its in-flight work is dropped).
    pub fn assign(&mut self, tp: TopicPartition, generation: u64) {
        let fresh = PartState {
            generation,
            lease: Lease::new(),
            ..PartState::default()
        };
        if let Some(old) = self.parts.insert(tp, fresh) {
            old.lease.revoke();
        }
    }

    /// Stop tracking `tp` (revoked); its in-flight batches will never be committed from here,
    /// and their tokens say so.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        if let Some(old) = self.parts.remove(tp) {
            old.lease.revoke();
        }
    }

    /// Register a consumed batch covering up to `last_offset`; returns its token (which
    /// reports to `done` when both parts are acknowledged), or `None` if `tp` is not
    /// assigned in `generation`.
    pub fn register(
        &mut self,
        tp: &TopicPartition,
        generation: u64,
        last_offset: i64,
        records: usize,
        done: &Sender<Finished>,
    ) -> Option<BatchAck> {
        let st = self.parts.get_mut(tp).filter(|s| s.generation == generation)?;
        let seq = st.next_seq;
        st.next_seq += 1;
        st.queue.push_back(Slot {
            seq,
            last_offset,
            records,
            done: false,
        });
        Some(BatchAck::new(
            tp.clone(),
            generation,
            seq,
            Arc::clone(&st.lease),
            done.clone(),
        ))
    }

    /// A batch's token reported both parts done. Stale generations and unknown batches are
    /// ignored.
    pub fn finish(&mut self, f: &Finished) {
        let Some(st) = self.parts.get_mut(&f.tp).filter(|s| s.generation == f.generation) else {
            return;
        };
        let Some(front) = st.queue.front() else { return };
        let Some(idx) = f.seq.checked_sub(front.seq).and_then(|i| usize::try_from(i).ok()) else {
            return;
        };
        if let Some(slot) = st.queue.get_mut(idx) {
            slot.done = true;
        }
        while st.queue.front().is_some_and(|s| s.done) {
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
    use guard_core::Part;
    use proptest::prelude::*;
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::Arc;

    /// What the source does: finished batches from the tokens into the tracker.
    fn pump(t: &mut AckTracker, rx: &Receiver<Finished>) {
        while let Ok(f) = rx.try_recv() {
            t.finish(&f);
        }
    }

    fn tp(p: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition: p,
        }
    }

    #[test]
    fn commits_only_contiguous_prefix() {
        let (tx, rx) = channel();
        let mut t = AckTracker::new();
        t.assign(tp(0), 1);
        let Some(a) = t.register(&tp(0), 1, 9, 10, &tx) else {
            panic!("assigned")
        };
        let Some(b) = t.register(&tp(0), 1, 19, 10, &tx) else {
            panic!("assigned")
        };
        b.ack(Part::Clean);
        b.ack(Part::Quarantine);
        pump(&mut t, &rx);
        assert!(t.take_commits().is_empty(), "b is done but a is not");
        a.ack(Part::Clean);
        pump(&mut t, &rx);
        assert!(t.take_commits().is_empty(), "a still waits for its quarantine file");
        a.ack(Part::Quarantine);
        pump(&mut t, &rx);
        assert_eq!(t.take_commits(), vec![(tp(0), 20)]);
        assert_eq!(t.in_flight_batches(), 0);
    }

    #[test]
    fn stale_generation_is_ignored_and_its_tokens_know() {
        let (tx, rx) = channel();
        let mut t = AckTracker::new();
        t.assign(tp(0), 1);
        let Some(a) = t.register(&tp(0), 1, 9, 10, &tx) else {
            panic!("assigned")
        };
        assert!(a.is_current());
        t.assign(tp(0), 2);
        assert!(!a.is_current(), "a new assignment revokes the old lease");
        a.ack(Part::Clean);
        a.ack(Part::Quarantine);
        pump(&mut t, &rx);
        assert!(t.take_commits().is_empty());
        assert!(t.register(&tp(0), 1, 5, 1, &tx).is_none());
        let Some(b) = t.register(&tp(0), 2, 5, 1, &tx) else {
            panic!("assigned")
        };
        t.revoke(&tp(0));
        assert!(!b.is_current(), "revocation reaches the tokens");
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
            let (tx, rx) = channel();
            let mut t = AckTracker::new();
            t.assign(tp(0), 7);
            let mut last = -1i64;
            let mut batches = Vec::new();
            for s in &sizes {
                last += s;
                let token = t.register(&tp(0), 7, last, *s as usize, &tx);
                prop_assert!(token.is_some());
                batches.push((token, last, [false, false]));
            }
            let mut acks: Vec<(usize, Part)> = (0..batches.len()).flat_map(|i| [(i, Part::Clean), (i, Part::Quarantine)]).collect();
            // A deterministic shuffle driven by `order`.
            for (i, o) in order.iter().enumerate() {
                let n = acks.len();
                acks.swap(i % n, *o as usize % n);
            }
            let mut committed = 0i64;
            for (i, part) in acks {
                if let Some(token) = &batches[i].0 {
                    token.ack(part);
                }
                pump(&mut t, &rx);
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
