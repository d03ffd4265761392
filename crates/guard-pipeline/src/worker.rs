//! A judge worker (one thread per shard of partitions): judges a batch, hands the passing
//! records to the clean sink (the broker's acknowledgement of the whole batch acknowledges its
//! [`Part::Clean`]), turns the rest into quarantine rows and passes them on.

use crate::{
    header_source, BatchAck, BatchJudge, ByteBudget, BytesHeld, CleanOut, Judged, Part, QuarantineWork, Rejected,
    Summary,
};
use guard_core::{lock, now_ms, Batch, Judgement, Reason, ReasonCode, Record, TopicPartition, Verdict, GUARD_VERSION};
use guard_quarantine::{QuarantineRow, ReasonEntry};
use guard_score::Reloader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::info_span;

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
}

/// Judge batches, forward passing records, pass quarantine rows on. Runs on its own thread.
pub fn worker(mut rx: mpsc::Receiver<Batch>, mut ctx: WorkerCtx) {
    let mut models_seen = 0;
    while let Some(batch) = rx.blocking_recv() {
        reload_models(&mut ctx, &mut models_seen);
        let Batch { tp, ack, records } = batch;
        let (first, last) = (
            records.first().map_or(-1, |r| r.offset),
            records.last().map_or(-1, |r| r.offset),
        );
        let span = info_span!("judge", topic = %tp.topic, partition = tp.partition, first, last);
        let _entered = span.enter();
        let started = Instant::now();
        let judged = ctx.stages.judge_with_breaker(&tp, &records);
        // Windows close on age as batches arrive (of any topic this worker judges).
        ctx.stages.drift.tick();
        ctx.stages.drift.flush_sources();
        let passed = forward_clean(&ctx, &tp, &ack, &records, &judged.judgements);
        let header = ctx.stages.drift.source_header();
        let (rows, by_reason) = quarantine_rows(&tp, records, judged, header.as_deref());
        count_batch(&ctx, &tp, passed, rows.len() as u64, by_reason);
        metrics::histogram!("guard_pipeline_batch_duration_seconds").record(started.elapsed().as_secs_f64());
        // Back-pressure in bytes: wait while the rows not yet durable fill the budget.
        let held = if rows.is_empty() {
            BytesHeld::none()
        } else {
            ctx.quarantine_budget
                .take(rows.iter().map(QuarantineRow::approx_bytes).sum())
        };
        let work = QuarantineWork {
            ack,
            first,
            last,
            rows,
            part: Part::Quarantine,
            held,
        };
        if ctx.out.blocking_send(work).is_err() {
            break;
        }
    }
}

/// Hot-swap: when the reloader published new models since `seen`, load this worker's
/// sessions before the next batch (a failure keeps the old ones).
fn reload_models(ctx: &mut WorkerCtx, seen: &mut u64) {
    let Some(r) = &ctx.reloader else { return };
    let g = r.generation();
    if g == *seen {
        return;
    }
    *seen = g;
    match r.load() {
        Ok(s) => ctx.stages.scoring = Some(s),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "worker could not load the new models; keeping the old ones")
        }
    }
}

/// Clean part: hand the passing records to the clean sink; the broker's final result for all
/// of them acknowledges the batch's clean part, and records the clean topic refuses for good
/// come back to be quarantined first (`sink.rejected`). Returns how many passed.
fn forward_clean(
    ctx: &WorkerCtx,
    tp: &TopicPartition,
    ack: &BatchAck,
    records: &[Record],
    judgements: &[Judgement],
) -> u64 {
    let clean: Vec<&Record> = records
        .iter()
        .zip(judgements)
        .filter(|(_, j)| j.verdict.is_pass())
        .map(|(r, _)| r)
        .collect();
    match &ctx.clean {
        Some(sink) => {
            let ack = ack.clone();
            let late = ctx.late.clone();
            let summary = Arc::clone(&ctx.summary);
            let schema_id = ctx.stages.judge.schema_for(&tp.topic).map(|s| Arc::clone(s.id()));
            let tp2 = tp.clone();
            sink.send_batch(
                tp,
                &clean,
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
    clean.len() as u64
}

/// Quarantine part: a row per held-back record (reasons, scores, explanation, source), and the
/// count per primary reason.
fn quarantine_rows(
    tp: &TopicPartition,
    records: Vec<Record>,
    judged: Judged,
    header: Option<&str>,
) -> (Vec<QuarantineRow>, HashMap<&'static str, u64>) {
    let Judged {
        judgements,
        mut decisions,
        mut row_sources,
    } = judged;
    let at = now_ms();
    let mut by_reason: HashMap<&'static str, u64> = HashMap::new();
    let mut rows = Vec::new();
    for (i, (record, j)) in records.into_iter().zip(judgements).enumerate() {
        let Verdict::Quarantine(reasons) = j.verdict else {
            continue;
        };
        let scored = decisions.remove(&i).unwrap_or_default();
        let source = match header {
            Some(h) => Some(header_source(&record, h).to_owned()),
            None => Some(row_sources.remove(&i).unwrap_or_else(|| "(undecoded)".to_owned())),
        };
        let primary = reasons.first().map_or("unknown", |r| r.code.as_str());
        *by_reason.entry(primary).or_default() += 1;
        rows.push(QuarantineRow {
            topic: Arc::clone(&tp.topic),
            partition: tp.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key,
            headers: record.headers,
            payload: record.payload,
            payload_len: record.payload_len as i64,
            reasons: reasons.iter().map(ReasonEntry::from).collect(),
            schema_id: j.schema_id,
            guard_version: GUARD_VERSION,
            quarantined_at_ms: at,
            anomaly_score: scored.anomaly_score,
            label_score: scored.label_score,
            model_id: scored.model_id,
            explanation: scored.explanation,
            source,
            envelope_cut: record.envelope.cut,
        });
    }
    (rows, by_reason)
}

/// The batch's counts into the metrics and the shutdown summary.
fn count_batch(
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
