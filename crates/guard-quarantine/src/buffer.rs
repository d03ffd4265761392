//! The open (not yet durable) quarantine file of one partition. Pure bookkeeping, no I/O.

use crate::QuarantineRow;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// When a partition's open file is written.
#[derive(Debug, Clone, Copy)]
pub struct RollPolicy {
    /// Rows that trigger a roll.
    pub max_rows: usize,
    /// Buffered bytes that trigger a roll.
    pub max_bytes: usize,
    /// Age of the oldest buffered row that triggers a roll.
    pub max_age: Duration,
}

/// Rows waiting to become one quarantine file, the input offset range they cover, and the
/// tickets (batch acknowledgements) that become durable with them.
///
/// Replays after a crash are recognised by **exact offsets**: a row is dropped only when that
/// very offset is already inside a durable file ([`PartitionBuffer::new`]'s `stored`), never
/// because some file's offset range covers it. A file's range also spans records that passed
/// but whose clean delivery was still pending at the crash; if their verdict changes on replay
/// (a new model, threshold or schema), they must still be written.
#[derive(Debug)]
pub struct PartitionBuffer<T = u64> {
    rows: Vec<QuarantineRow>,
    bytes: usize,
    opened: Option<Instant>,
    first: Option<i64>,
    last: i64,
    tickets: Vec<T>,
    stored: HashSet<i64>,
}

impl<T> PartitionBuffer<T> {
    /// A buffer for a partition whose durable files already hold the rows at `stored` offsets.
    pub fn new(stored: HashSet<i64>) -> Self {
        Self {
            rows: Vec::new(),
            bytes: 0,
            opened: None,
            first: None,
            last: -1,
            tickets: Vec::new(),
            stored,
        }
    }

    /// How many offsets existing files were found to hold.
    pub fn stored_len(&self) -> usize {
        self.stored.len()
    }

    /// Add rows covering input offsets `first..=last`, acknowledged by `ticket` once durable.
    /// Rows whose offset is already stored are dropped (a replay after a crash). Returns true
    /// when the ticket has to wait for this buffer to become durable, false when it has nothing
    /// left to make durable.
    pub fn add(&mut self, ticket: T, first: i64, last: i64, rows: Vec<QuarantineRow>, now: Instant) -> bool {
        let mut added = false;
        for row in rows {
            if self.stored.contains(&row.offset) {
                continue;
            }
            self.bytes += row.approx_bytes();
            self.rows.push(row);
            added = true;
        }
        if !added && self.rows.is_empty() {
            return false;
        }
        match self.first {
            None => {
                self.first = Some(first);
                self.opened = Some(now);
            }
            Some(f) if first < f => self.first = Some(first),
            Some(_) => {}
        }
        self.last = self.last.max(last);
        self.tickets.push(ticket);
        true
    }

    /// True when the buffer holds rows and any roll threshold is reached.
    pub fn should_roll(&self, policy: &RollPolicy, now: Instant) -> bool {
        !self.rows.is_empty()
            && (self.rows.len() >= policy.max_rows
                || self.bytes >= policy.max_bytes
                || self.opened.is_some_and(|t| now.duration_since(t) >= policy.max_age))
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Payload and envelope bytes buffered (approximate).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The range and rows of the file to write now; the buffer stays intact until
    /// [`Self::committed`] so a failed write can be retried with exactly the same content.
    pub fn pending(&self) -> Option<(i64, i64, &[QuarantineRow])> {
        let first = self.first?;
        Some((first, self.last, &self.rows))
    }

    /// The file from [`Self::pending`] is durable: clear the buffer and return the tickets
    /// that are now acknowledged.
    pub fn committed(&mut self) -> Vec<T> {
        self.rows.clear();
        self.bytes = 0;
        self.opened = None;
        self.first = None;
        self.last = -1;
        std::mem::take(&mut self.tickets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn row(offset: i64) -> QuarantineRow {
        QuarantineRow {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: None,
            headers: vec![],
            payload: Some(b"x".to_vec()),
            payload_len: 1,
            reasons: vec![],
            schema_id: None,
            guard_version: "0",
            quarantined_at_ms: 0,
            anomaly_score: None,
            label_score: None,
            model_id: None,
            explanation: None,
            source: None,
            envelope_cut: false,
        }
    }

    #[test]
    fn replay_skips_exact_offsets_only() {
        let now = Instant::now();
        // A file from before the crash covers 0..=9 but holds only offsets 3 and 9; 5 passed
        // then and its clean delivery may never have landed.
        let mut b: PartitionBuffer = PartitionBuffer::new(HashSet::from([3, 9]));
        assert!(!b.add(0, 0, 2, vec![], now), "nothing to write: no wait");
        assert!(b.add(1, 3, 9, vec![row(3), row(5), row(9)], now), "5 is new on replay");
        let (first, last, rows) = b.pending().unwrap_or((0, 0, &[]));
        assert_eq!((first, last), (3, 9));
        assert_eq!(rows.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![5]);
        assert_eq!(b.committed(), vec![1]);
        assert!(b.is_empty());
    }

    #[test]
    fn batches_without_rows_wait_only_if_a_file_is_open() {
        let now = Instant::now();
        let mut b: PartitionBuffer = PartitionBuffer::new(HashSet::new());
        assert!(!b.add(0, 0, 9, vec![], now));
        assert!(b.add(1, 10, 19, vec![row(15)], now));
        assert!(b.add(2, 20, 29, vec![], now), "extends the open file's range");
        let (first, last, _) = b.pending().unwrap_or((0, 0, &[]));
        assert_eq!((first, last), (10, 29));
        assert_eq!(b.committed(), vec![1, 2]);
    }

    #[test]
    fn late_rows_widen_the_range() {
        let now = Instant::now();
        let mut b: PartitionBuffer<(u64, bool)> = PartitionBuffer::new(HashSet::new());
        assert!(b.add((5, false), 50, 59, vec![row(52)], now));
        assert!(
            b.add((2, true), 21, 21, vec![row(21)], now),
            "a record the clean topic refused"
        );
        let (first, last, rows) = b.pending().unwrap_or((0, 0, &[]));
        assert_eq!((first, last, rows.len()), (21, 59, 2));
        assert_eq!(b.committed(), vec![(5, false), (2, true)]);
    }

    #[test]
    fn rolls_on_each_threshold() {
        let now = Instant::now();
        let p = RollPolicy {
            max_rows: 2,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(5),
        };
        let mut b: PartitionBuffer = PartitionBuffer::new(HashSet::new());
        b.add(0, 0, 0, vec![row(0)], now);
        assert!(!b.should_roll(&p, now));
        assert!(b.should_roll(&p, now + Duration::from_secs(6)));
        b.add(1, 1, 1, vec![row(1)], now);
        assert!(b.should_roll(&p, now));
    }
}
