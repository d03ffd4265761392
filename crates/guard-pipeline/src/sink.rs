//! The clean sink's contract, as the record path sees it.

use guard_core::{Header, Record, TopicPartition};
use std::sync::atomic::{AtomicBool, Ordering};

/// A record the clean topic refused for good, as it was handed to the producer (without the
/// guard's provenance header), with the error that refused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Input offset.
    pub offset: i64,
    /// Kafka timestamp (ms).
    pub timestamp_ms: Option<i64>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Headers as forwarded.
    pub headers: Vec<Header>,
    /// Payload.
    pub payload: Option<Vec<u8>>,
    /// The producer's or the broker's error.
    pub error: String,
}

/// Runs once when every record of a batch has a final result: delivered, or rejected (the
/// list, usually empty).
pub type OnDelivered = Box<dyn FnOnce(Vec<Rejected>) + Send>;

/// Where passing records go (the Kafka producer of the clean topic implements it).
pub trait CleanOut: Send + Sync {
    /// Hand over the passing records of one batch of `tp`; `on_delivered` runs once, when
    /// every one of them has a final result (it may run on another thread).
    fn send_batch(&self, tp: &TopicPartition, records: &[&Record], on_delivered: OnDelivered);
}

/// Asks the quarantine stage to write every open file now (set by the source during drains).
#[derive(Debug, Default)]
pub struct FlushSignal(AtomicBool);

impl FlushSignal {
    /// True while a drain wants open quarantine files written immediately.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Ask for (or stop asking for) immediate writes.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}
