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

mod ack;
pub mod blocks;
pub mod features;
mod health;
pub mod limits;
mod policy;
mod reason;
mod record;
pub mod report;
mod time;

pub use ack::{BatchAck, Finished, Lease, Part};
pub use blocks::{BlockDoc, BlockRelease, BlockedSource, SideTopics, SourceBlocks};
pub use features::{
    extend_tensor, tensor_form_ok, Channels, FeatureField, FeatureLayout, FeatureRows, FieldPath, GuardSection, RowRef,
    StrColumn, TensorField,
};
pub use health::{Health, HealthReport, Unreadable};
pub use limits::Limits;
pub use policy::AlarmPolicy;
pub use reason::{Reason, ReasonCode};
pub use record::{Batch, Envelope, EnvelopeBuilder, Header, Record, TopicPartition};
pub use report::StatsReport;
pub use time::rfc3339;

/// Prefix of the headers the guard writes itself (provenance, release identity). Inbound
/// headers with this prefix are producer-controlled forgeries: they are removed before a record
/// is forwarded or released, so downstream only ever sees the guard's own (DESIGN.md 6).
pub const GUARD_HEADER_PREFIX: &str = "x-guard-";

/// True for a header name in the guard's own namespace (`x-guard-*`, any ASCII case).
pub fn is_guard_header(key: &str) -> bool {
    key.get(..GUARD_HEADER_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(GUARD_HEADER_PREFIX))
}

/// Longest source name kept, in bytes: source names come from producers (a header or a record
/// field), so what is counted, stored and indexed under them is bounded.
pub const MAX_SOURCE_LEN: usize = 128;

/// `source` cut to [`MAX_SOURCE_LEN`] bytes on a character boundary.
pub fn cap_source(source: &str) -> &str {
    if source.len() <= MAX_SOURCE_LEN {
        return source;
    }
    let mut cut = MAX_SOURCE_LEN;
    while !source.is_char_boundary(cut) {
        cut -= 1;
    }
    &source[..cut]
}

/// Lock `m`, going on with the data of a poisoned lock: the guard's shared state (counters,
/// tables, acknowledgements) stays consistent across a panic in one record's judging, which
/// is caught and quarantined (DESIGN.md 5).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

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

#[cfg(test)]
mod tests {
    #[test]
    fn guard_headers_in_any_case() {
        assert!(super::is_guard_header("x-guard-source"));
        assert!(super::is_guard_header("X-Guard-Released-By"));
        assert!(!super::is_guard_header("x-guard"));
        assert!(!super::is_guard_header("traceparent"));
        assert!(!super::is_guard_header("x-guardé"));
    }

    #[test]
    fn sources_are_capped_on_char_boundaries() {
        assert_eq!(super::cap_source("a"), "a");
        let long = "é".repeat(200);
        let c = super::cap_source(&long);
        assert!(c.len() <= super::MAX_SOURCE_LEN && c.len() >= super::MAX_SOURCE_LEN - 1);
    }
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
