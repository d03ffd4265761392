//! What a judge worker owns, and the two ways its records leave it: to the clean sink (and
//! back to the quarantine when the clean topic refuses them for good) and into the counts.

use crate::{BatchAck, BatchJudge, ByteBudget, BytesHeld, CleanOut, Part, QuarantineWork, Rejected, Summary};
use guard_core::{lock, now_ms, Reason, ReasonCode, Record, TopicPartition, GUARD_VERSION};
use guard_quarantine::{QuarantineRow, ReasonEntry};
use guard_score::{Decision, Reloader};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// What a worker needs.
pub struct WorkerCtx {
    /// The stages a batch runs through.
    pub stages: BatchJudge,
    /// The clean sink (none in observe mode or without an output topic).
    pub clean: Option<Arc<dyn CleanOut>>,
    /// Totals for the shutdown summary.
    pub summary: Arc<Mutex<Summary>>,
    /// To the quarantine stage.
    pub out: mpsc::Sender<QuarantineWork>,
    /// Rows of records the clean topic refused for good (from the producer's thread).
    pub late: mpsc::UnboundedSender<QuarantineWork>,
    /// Bytes of quarantine rows waiting to be durable, across all workers.
    pub quarantine_budget: Arc<ByteBudget>,
    /// Hot-swap: a new generation means "load your sessions again before the next batch".
    pub reloader: Option<Arc<Reloader>>,
    /// The window scan's hold-back (`scan.enabled`); none: records pass as soon as judged.
    pub scan: Option<guard_config::ScanConfig>,
}

/// Clean part: hand the passing records to the clean sink; the broker's final result for all
/// of them acknowledges the batch's clean part, and records the clean topic refuses for good
/// come back to be quarantined first (`sink.rejected`).
pub(crate) fn send_clean(ctx: &WorkerCtx, tp: &TopicPartition, ack: &BatchAck, clean: &[&Record]) {
    match &ctx.clean {
        Some(sink) => {
            let ack = ack.clone();
            let late = ctx.late.clone();
            let summary = Arc::clone(&ctx.summary);
            let schema_id = ctx.stages.judge.schema_for(&tp.topic).map(|s| Arc::clone(s.id()));
            let tp2 = tp.clone();
            sink.send_batch(
                tp,
                clean,
                Box::new(move |rejected| {
                    if rejected.is_empty() {
                        ack.ack(Part::Clean);
                    } else {
                        hand_rejected(&late, &summary, tp2, ack, schema_id, rejected);
                    }
                }),
            );
        }
        None => ack.ack(Part::Clean),
    }
}

/// The batch's counts into the metrics and the shutdown summary.
pub(crate) fn count_batch(
    ctx: &WorkerCtx,
    tp: &TopicPartition,
    passed: u64,
    quarantined: u64,
    by_reason: HashMap<&'static str, u64>,
) {
    let topic_label = tp.topic.to_string();
    metrics::counter!("guard_pipeline_records_passed_total", "topic" => topic_label.clone()).increment(passed);
    {
        let mut s = lock(&ctx.summary);
        s.records_in += passed + quarantined;
        s.passed += passed;
        s.quarantined += quarantined;
        for (reason, count) in &by_reason {
            *s.by_reason.entry((*reason).to_owned()).or_default() += count;
        }
    }
    for (reason, count) in by_reason {
        metrics::counter!("guard_pipeline_records_quarantined_total", "topic" => topic_label.clone(), "reason" => reason)
            .increment(count);
    }
}

/// Records the clean topic refused for good become quarantine rows (`sink.rejected`); the
/// batch's clean part is acknowledged once they are durable. Runs on the producer's delivery
/// thread, so it never blocks: the late channel is unbounded, and what it holds is bounded by
/// the producer's own queue (`queue.buffering.max.kbytes`).
fn hand_rejected(
    late: &mpsc::UnboundedSender<QuarantineWork>,
    summary: &Mutex<Summary>,
    tp: TopicPartition,
    ack: BatchAck,
    schema_id: Option<Arc<str>>,
    rejected: Vec<Rejected>,
) {
    let at = now_ms();
    let n = rejected.len() as u64;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    let rows: Vec<QuarantineRow> = rejected
        .into_iter()
        .map(|r| {
            first = first.min(r.offset);
            last = last.max(r.offset);
            QuarantineRow {
                topic: Arc::clone(&tp.topic),
                partition: tp.partition,
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                key: r.key,
                headers: r.headers,
                payload_len: r.payload.as_ref().map_or(0, Vec::len) as i64,
                payload: r.payload,
                reasons: vec![ReasonEntry::from(&Reason::new(
                    ReasonCode::SINK_REJECTED,
                    format!("the clean topic refused it: {}", r.error),
                ))],
                schema_id: schema_id.clone(),
                guard_version: GUARD_VERSION,
                quarantined_at_ms: at,
                anomaly_score: None,
                label_score: None,
                model_id: None,
                explanation: None,
                source: None,
                envelope_cut: false,
            }
        })
        .collect();
    {
        let mut s = lock(summary);
        s.passed = s.passed.saturating_sub(n);
        s.quarantined += n;
        *s.by_reason
            .entry(ReasonCode::SINK_REJECTED.as_str().to_owned())
            .or_default() += n;
    }
    metrics::counter!("guard_pipeline_records_quarantined_total", "topic" => tp.topic.to_string(), "reason" => ReasonCode::SINK_REJECTED.as_str())
        .increment(n);
    // A closed channel means the stage is gone (shutdown): the batch stays unacknowledged and
    // its records are read again by the next owner.
    let _ = late.send(QuarantineWork {
        ack,
        first,
        last,
        rows,
        part: Part::Clean,
        held: BytesHeld::none(),
    });
}

/// A quarantine row for `record`: its reasons, the models' decision (scores, model ids,
/// explanation) and its source.
pub(crate) fn quarantine_row(
    tp: &TopicPartition,
    record: Record,
    reasons: &[Reason],
    schema_id: Option<Arc<str>>,
    at: i64,
    scored: Decision,
    source: Option<String>,
) -> QuarantineRow {
    QuarantineRow {
        topic: Arc::clone(&tp.topic),
        partition: tp.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key,
        headers: record.headers,
        payload: record.payload,
        payload_len: record.payload_len as i64,
        reasons: reasons.iter().map(ReasonEntry::from).collect(),
        schema_id,
        guard_version: GUARD_VERSION,
        quarantined_at_ms: at,
        anomaly_score: scored.anomaly_score,
        label_score: scored.label_score,
        model_id: scored.model_id,
        explanation: scored.explanation,
        source,
        envelope_cut: record.envelope.cut,
    }
}
