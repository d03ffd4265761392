//! The record path of ingest-guard, from a consumed batch to its two durable ends.
//!
//! * [`BatchJudge`]: the stages a batch flows through on a judge worker — checks (limits,
//!   decode, schema: `guard-validate`), observers (drift windows and the source table:
//!   `guard-drift`), scorers (the models: `guard-score`) — and the policy that turns checks and
//!   scores into one verdict per record (the model thresholds, then the breaker). Each record
//!   that passes its checks is extracted once into a typed row that the observers, the models
//!   and the explanations share. `tools evaluate` calls the same batch judge.
//! * [`worker`]: a judge thread's loop: judge, hand the passing records to the clean sink (a
//!   [`CleanOut`]; the Kafka producer implements it), turn the rest into quarantine rows.
//! * [`QuarantineStage`]: writes the rows durably and acknowledges their part of each batch.
//! * [`AckTracker`]: ordered offset commits (the no-loss commit rule), owned by the source;
//!   the stages acknowledge on each batch's [`BatchAck`] token instead of a shared lock.
//!
//! The binary builds these from the configuration and wires them to the Kafka source; this
//! crate never talks to Kafka itself.

mod ack;
mod ctx;
mod hold;
mod judge;
mod quarantine;
mod sink;
mod worker;

pub use ack::{AckTracker, ByteBudget, BytesHeld};
pub use ctx::WorkerCtx;
pub use guard_core::{BatchAck, Finished, Lease, Part};
pub use judge::{header_source, judge_for, BatchJudge, Judged};
pub use quarantine::{QuarantineStage, QuarantineWork, Summary};
pub use sink::{CleanOut, FlushSignal, OnDelivered, Rejected};
pub use worker::worker;

/// Describe the metrics this crate emits (name, unit, help text), next to the code that
/// emits them; the binary calls it once when it installs the recorder.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!(
        "guard_pipeline_stale_batches_total",
        Unit::Count,
        "Judged batches of a partition this instance no longer owns (dropped; the next owner reads them again)"
    );
    describe_counter!(
        "guard_quarantine_rows_written_total",
        Unit::Count,
        "Rows written into durable quarantine files"
    );
    describe_counter!(
        "guard_quarantine_bytes_written_total",
        Unit::Bytes,
        "Bytes of durable quarantine files written"
    );
    describe_histogram!(
        "guard_quarantine_write_duration_seconds",
        Unit::Seconds,
        "Time to encode and durably store one quarantine file"
    );
    describe_counter!(
        "guard_pipeline_records_passed_total",
        Unit::Count,
        "Records that passed every check"
    );
    describe_counter!(
        "guard_pipeline_records_quarantined_total",
        Unit::Count,
        "Records quarantined, by primary reason"
    );
    describe_histogram!(
        "guard_pipeline_batch_duration_seconds",
        Unit::Seconds,
        "Time to judge one batch"
    );
    describe_histogram!(
        "guard_validate_record_max_duration_seconds",
        Unit::Seconds,
        "Slowest single record judged in each batch"
    );
    metrics::describe_gauge!(
        "guard_scan_held_records",
        Unit::Count,
        "Passing records held for the window scan, by topic"
    );
    describe_histogram!(
        "guard_scan_hold_duration_seconds",
        Unit::Seconds,
        "How long the oldest held record waited when its route was scanned and released"
    );
    describe_counter!(
        "guard_scan_flagged_total",
        Unit::Count,
        "Records the window scan quarantined, by topic and why (cluster, doubt)"
    );
    describe_counter!(
        "guard_quarantine_files_written_total",
        Unit::Count,
        "Quarantine files made durable"
    );
    describe_counter!(
        "guard_quarantine_write_failures_total",
        Unit::Count,
        "Failed quarantine writes (retried)"
    );
    describe_counter!(
        "guard_pipeline_panics_total",
        Unit::Count,
        "Records whose judging panicked, quarantined with internal.panic"
    );
    describe_counter!(
        "guard_quarantine_unreadable_files_total",
        Unit::Count,
        "Files in the quarantine folder that are not readable quarantine files (skipped)"
    );
}
