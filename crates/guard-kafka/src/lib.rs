//! ingest-guard's Kafka edges: the consumer-group source and the clean-record sink.
//!
//! The source runs the rdkafka consumer on its own thread. It cuts per-partition batches,
//! registers each with its own [`AckTracker`](guard_pipeline::AckTracker) at the moment it is
//! handed on (the batch leaves with an acknowledgement token the stages acknowledge on), and
//! commits only the tracker's contiguous durable prefix. When downstream is full it
//! pauses its partitions and keeps polling, so group membership survives back-pressure and
//! memory stays bounded. On revocation it first drains: it waits (bounded) until everything in
//! flight is durable, commits that synchronously, and only then lets the partitions go
//! (the commit rule is the one rust-rdkafka's `at_least_once` example states).
//!
//! [`keyed`] carries the side topics (drift events, group profiles, source blocks) as keyed
//! bytes; [`side`] wires the drift hub's compacted ones.
//!
//! The sink produces passing records with an idempotent producer, keeps key, headers and
//! timestamp, and retries failed deliveries until they succeed: a record is never dropped
//! because the broker was away.

mod admin;
mod client;
pub mod keyed;
mod probe;
pub mod side;
pub use probe::{classify as classify_connect, librdkafka_features, probe, ConnectCause, ConnectProblem};
mod raw;
mod release;
pub use raw::{visit_headers, BadHeaders};
pub use release::{ReleaseClient, Republish};
mod sink;
mod source;

pub use admin::{create_topic_with, create_topics};
pub use client::{admin_config, consumer_config, producer_config, producer_message_max_bytes, PRODUCER_HEADROOM};
pub use guard_pipeline::FlushSignal;
pub use sink::{classify, CleanSink, ErrorKind, Rejected, SinkSettings};
pub use source::{Prober, Source, SourceSettings};

/// Describe the metrics this crate emits (name, unit, meaning); the binary calls it once
/// after installing the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        "guard_kafka_assigned_partitions",
        "Input partitions assigned to this instance"
    );
    describe_counter!(
        "guard_kafka_client_errors_total",
        Unit::Count,
        "Errors librdkafka reported to the consumer (the client retries them)"
    );
    describe_counter!(
        "guard_kafka_drain_timeouts_total",
        Unit::Count,
        "Revocations whose in-flight records were not all durable within the drain timeout (they are read again by the next owner)"
    );
    describe_counter!(
        "guard_kafka_rebalances_total",
        Unit::Count,
        "Consumer-group rebalances seen, by kind (assign, revoke)"
    );
    describe_gauge!(
        "guard_source_paused",
        "1 while the source pauses its partitions for back-pressure"
    );
    describe_counter!(
        "guard_sink_delivered_records_total",
        Unit::Count,
        "Records the broker acknowledged on the clean topic"
    );
    describe_counter!(
        "guard_source_records_total",
        Unit::Count,
        "Records consumed from input topics"
    );
    describe_counter!("guard_source_bytes_total", Unit::Bytes, "Payload bytes consumed");
    describe_gauge!(
        "guard_kafka_uncommitted_records",
        Unit::Count,
        "Records consumed but not yet committed (commit lag held by this instance)"
    );
    describe_counter!("guard_kafka_commits_total", Unit::Count, "Successful offset commits");
    describe_counter!(
        "guard_kafka_commit_failures_total",
        Unit::Count,
        "Failed offset commits (retried)"
    );
    describe_counter!(
        "guard_sink_retries_total",
        Unit::Count,
        "Clean records re-sent after a failed delivery"
    );
    describe_counter!(
        "guard_sink_rejected_records_total",
        Unit::Count,
        "Records the clean topic refused for good, quarantined with sink.rejected"
    );
    describe_counter!(
        "guard_sink_headers_stripped_total",
        Unit::Count,
        "Inbound x-guard-* (and provenance) headers removed before forwarding"
    );
    describe_counter!(
        "guard_source_errors_total",
        Unit::Count,
        "Consume errors, by kind (unreadable_batch, other)"
    );
    describe_gauge!(
        "guard_source_unreadable_partitions",
        Unit::Count,
        "Partitions stuck on a batch the consumer cannot read (see /readyz)"
    );
}

/// Errors of the Kafka edges.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaGuardError {
    /// librdkafka refused a client configuration or operation.
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// The consumer thread could not be started or died.
    #[error("consumer thread failed: {0}")]
    Thread(String),
    /// The broker refused to create a topic.
    #[error("{0}")]
    Topic(String),
}

impl KafkaGuardError {
    /// Which domain the error belongs to: client errors are external (retry, not-ready),
    /// a thread that cannot start is internal.
    pub fn domain(&self) -> guard_core::ErrorDomain {
        match self {
            KafkaGuardError::Client(_) | KafkaGuardError::Topic(_) => guard_core::ErrorDomain::External,
            KafkaGuardError::Thread(_) => guard_core::ErrorDomain::Internal,
        }
    }
}
