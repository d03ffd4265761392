//! Types every ingest-guard stage shares: records, per-partition batches, verdicts, reason codes,
//! limits and the readiness state.
//!
//! This crate does no I/O. Stages (validation, quarantine, Kafka, HTTP) depend on it and not on
//! each other, so the rules that keep data safe live in one vocabulary:
//!
//! * a [`Batch`] holds records of **one** partition in offset order; the pipeline acknowledges
//!   batches, never single records, and commits only a contiguous acknowledged prefix;
//! * every record gets its own [`Verdict`], so one bad record never fails its batch;
//! * a quarantined record always carries at least one stable [`ReasonCode`].

mod health;
pub mod limits;
mod reason;
mod record;

pub use health::{Health, HealthReport};
pub use limits::Limits;
pub use reason::{Reason, ReasonCode};
pub use record::{Batch, Header, Record, TopicPartition};

/// Version of the guard that judged a record, written into every quarantine row.
pub const GUARD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the guard decided about one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The record passed every check and may go downstream.
    Pass,
    /// The record is held back; the reasons say why (never empty).
    Quarantine(Vec<Reason>),
}

impl Verdict {
    /// Quarantine with one reason.
    pub fn reject(reason: Reason) -> Self {
        Verdict::Quarantine(vec![reason])
    }

    /// True when the record may go downstream.
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// The guard's judgement of one record: the verdict plus the identity of the schema that judged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Pass or quarantine with reasons.
    pub verdict: Verdict,
    /// Identity of the domain schema used (`x-guard.id`), if the topic has one.
    pub schema_id: Option<std::sync::Arc<str>>,
}

/// Which part of the world an error belongs to, so the pipeline knows what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// The record itself is bad: quarantine it and go on.
    BadRecord,
    /// Something outside the guard failed (broker, disk): retry with back-off, report not-ready.
    External,
    /// A bug or impossible state: stop.
    Internal,
}
