//! Readiness state shared by the stages and reported by `/readyz`.
//!
//! Each stage flips its own flag; nothing here blocks. The guard is ready only when it has joined
//! its consumer group, can reach the broker, and both sinks are healthy: a guard that cannot make
//! records durable must not look ready.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Shared readiness flags.
#[derive(Debug, Default)]
pub struct Health {
    assigned: AtomicBool,
    broker_reachable: AtomicBool,
    quarantine_failing: AtomicBool,
    clean_sink_failing: AtomicBool,
    shutting_down: AtomicBool,
    partitions: AtomicU64,
    last_error: Mutex<Option<String>>,
    unreadable: Mutex<Vec<Unreadable>>,
    unreadable_any: AtomicBool,
}

/// A partition stuck on a batch the consumer cannot read (a compression codec it cannot
/// decode, a corrupt batch): nothing after it is consumed until an operator acts, so the guard
/// is not ready and says where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset the partition is stuck at.
    pub offset: i64,
    /// The consumer's error.
    pub error: String,
}

/// Most unreadable partitions listed (the rest are counted by the metric only).
const MAX_UNREADABLE: usize = 256;

/// A snapshot of [`Health`] for `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// True when every condition below holds.
    pub ready: bool,
    /// The consumer group has given this instance an assignment (possibly empty).
    pub assigned: bool,
    /// The last broker probe succeeded.
    pub broker_reachable: bool,
    /// The quarantine store accepts writes.
    pub quarantine_ok: bool,
    /// The clean output topic accepts records.
    pub clean_sink_ok: bool,
    /// Partitions currently assigned.
    pub partitions: u64,
    /// The guard is shutting down.
    pub shutting_down: bool,
    /// The most recent failure, if any.
    pub last_error: Option<String>,
    /// Partitions stuck on a batch the consumer cannot read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

impl Health {
    /// Record whether the group assignment has been received and its size.
    pub fn set_assigned(&self, assigned: bool, partitions: usize) {
        self.assigned.store(assigned, Ordering::Relaxed);
        self.partitions.store(partitions as u64, Ordering::Relaxed);
    }

    /// Record the outcome of a broker probe.
    pub fn set_broker_reachable(&self, ok: bool) {
        self.broker_reachable.store(ok, Ordering::Relaxed);
    }

    /// Record whether the quarantine store is failing.
    pub fn set_quarantine_failing(&self, failing: bool) {
        self.quarantine_failing.store(failing, Ordering::Relaxed);
    }

    /// Record whether the clean sink is failing.
    pub fn set_clean_sink_failing(&self, failing: bool) {
        self.clean_sink_failing.store(failing, Ordering::Relaxed);
    }

    /// Mark the guard as shutting down (never ready again).
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Remember the most recent failure for `/readyz`.
    pub fn note_error(&self, error: impl Into<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(error.into());
        }
    }

    /// Report a partition stuck on an unreadable batch (replaces an earlier report of it).
    pub fn set_unreadable(&self, u: Unreadable) {
        if let Ok(mut list) = self.unreadable.lock() {
            list.retain(|x| !(x.topic == u.topic && x.partition == u.partition));
            if list.len() < MAX_UNREADABLE {
                list.push(u);
            }
            self.unreadable_any.store(true, Ordering::Relaxed);
        }
    }

    /// A record past `offset` of `topic`/`partition` was read: it is no longer stuck.
    pub fn clear_unreadable(&self, topic: &str, partition: i32, offset: i64) {
        if !self.unreadable_any.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut list) = self.unreadable.lock() {
            list.retain(|x| !(x.topic == topic && x.partition == partition && x.offset <= offset));
            self.unreadable_any.store(!list.is_empty(), Ordering::Relaxed);
        }
    }

    /// How many partitions are stuck on unreadable batches.
    pub fn unreadable_count(&self) -> usize {
        self.unreadable.lock().map_or(0, |l| l.len())
    }

    /// True when every readiness condition holds.
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    /// Snapshot for reporting.
    pub fn report(&self) -> HealthReport {
        let assigned = self.assigned.load(Ordering::Relaxed);
        let broker_reachable = self.broker_reachable.load(Ordering::Relaxed);
        let quarantine_ok = !self.quarantine_failing.load(Ordering::Relaxed);
        let clean_sink_ok = !self.clean_sink_failing.load(Ordering::Relaxed);
        let shutting_down = self.shutting_down.load(Ordering::Relaxed);
        let unreadable = self.unreadable.lock().map(|l| l.clone()).unwrap_or_default();
        HealthReport {
            ready: assigned
                && broker_reachable
                && quarantine_ok
                && clean_sink_ok
                && !shutting_down
                && unreadable.is_empty(),
            unreadable,
            assigned,
            broker_reachable,
            quarantine_ok,
            clean_sink_ok,
            partitions: self.partitions.load(Ordering::Relaxed),
            shutting_down,
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_condition() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_assigned(true, 2);
        h.set_broker_reachable(true);
        assert!(h.is_ready());
        h.set_quarantine_failing(true);
        assert!(!h.is_ready());
        h.set_quarantine_failing(false);
        h.set_clean_sink_failing(true);
        assert!(!h.is_ready());
        h.set_clean_sink_failing(false);
        h.set_unreadable(Unreadable {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            error: "bad compression".into(),
        });
        assert!(!h.is_ready());
        h.clear_unreadable("t", 1, 6);
        assert!(!h.is_ready(), "still stuck at 7");
        h.clear_unreadable("t", 1, 8);
        assert!(h.is_ready());
        h.set_shutting_down();
        assert!(!h.is_ready());
    }
}
