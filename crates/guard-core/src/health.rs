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
}

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
        HealthReport {
            ready: assigned && broker_reachable && quarantine_ok && clean_sink_ok && !shutting_down,
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
        h.set_shutting_down();
        assert!(!h.is_ready());
    }
}
