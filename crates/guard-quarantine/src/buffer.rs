//! The open (not yet durable) quarantine file of one partition. Pure bookkeeping, no I/O.

use crate::QuarantineRow;
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

/// Rows waiting to become one quarantine file, the input offset range they cover, and the batch
/// sequence numbers that become durable with them.
#[derive(Debug)]
pub struct PartitionBuffer {
    rows: Vec<QuarantineRow>,
    bytes: usize,
    opened: Option<Instant>,
    first: Option<i64>,
    last: i64,
    batches: Vec<u64>,
    covered_until: i64,
}

impl PartitionBuffer {
    /// A buffer for a partition whose files already cover input offsets up to `covered_until`
    /// (-1 when none).
    pub fn new(covered_until: i64) -> Self {
        Self {
            rows: Vec::new(),
            bytes: 0,
            opened: None,
            first: None,
            last: -1,
            batches: Vec::new(),
            covered_until,
        }
    }

    /// Highest input offset already inside a durable file.
    pub fn covered_until(&self) -> i64 {
        self.covered_until
    }

    /// Add a batch's quarantined rows covering input offsets `first..=last`. Rows at offsets the
    /// existing files already cover are dropped (a replay after a crash). Returns true when
    /// the batch has to wait for this buffer to become durable, false when it has nothing
    /// left to make durable.
    pub fn add(&mut self, seq: u64, first: i64, last: i64, rows: Vec<QuarantineRow>, now: Instant) -> bool {
        let covered = self.covered_until;
        let mut added = false;
        for row in rows.into_iter().filter(|r| r.offset > covered) {
            self.bytes += row.approx_bytes();
            self.rows.push(row);
            added = true;
        }
        if !added && self.rows.is_empty() {
            return false;
        }
        let first = first.max(covered + 1);
        if self.first.is_none() {
            self.first = Some(first);
            self.opened = Some(now);
        }
        self.last = self.last.max(last);
        self.batches.push(seq);
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

    /// The range and rows of the file to write now; the buffer stays intact until
    /// [`Self::committed`] so a failed write can be retried with exactly the same content.
    pub fn pending(&self) -> Option<(i64, i64, &[QuarantineRow])> {
        let first = self.first?;
        Some((first, self.last, &self.rows))
    }

    /// The file from [`Self::pending`] is durable: clear the buffer and return the batch
    /// sequence numbers that are now acknowledged.
    pub fn committed(&mut self) -> Vec<u64> {
        self.covered_until = self.covered_until.max(self.last);
        self.rows.clear();
        self.bytes = 0;
        self.opened = None;
        self.first = None;
        std::mem::take(&mut self.batches)
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
        }
    }

    #[test]
    fn replayed_offsets_are_not_written_twice() {
        let now = Instant::now();
        let mut b = PartitionBuffer::new(9);
        assert!(
            !b.add(0, 0, 9, vec![row(3), row(9)], now),
            "all covered: nothing to wait for"
        );
        assert!(b.add(1, 5, 14, vec![row(7), row(12)], now));
        let (first, last, rows) = b.pending().unwrap_or((0, 0, &[]));
        assert_eq!((first, last, rows.len()), (10, 14, 1));
        assert_eq!(b.committed(), vec![1]);
        assert_eq!(b.covered_until(), 14);
    }

    #[test]
    fn batches_without_rows_wait_only_if_a_file_is_open() {
        let now = Instant::now();
        let mut b = PartitionBuffer::new(-1);
        assert!(!b.add(0, 0, 9, vec![], now));
        assert!(b.add(1, 10, 19, vec![row(15)], now));
        assert!(b.add(2, 20, 29, vec![], now), "extends the open file's range");
        let (first, last, _) = b.pending().unwrap_or((0, 0, &[]));
        assert_eq!((first, last), (10, 29));
        assert_eq!(b.committed(), vec![1, 2]);
    }

    #[test]
    fn rolls_on_each_threshold() {
        let now = Instant::now();
        let p = RollPolicy {
            max_rows: 2,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(5),
        };
        let mut b = PartitionBuffer::new(-1);
        b.add(0, 0, 0, vec![row(0)], now);
        assert!(!b.should_roll(&p, now));
        assert!(b.should_roll(&p, now + Duration::from_secs(6)));
        b.add(1, 1, 1, vec![row(1)], now);
        assert!(b.should_roll(&p, now));
    }
}
