//! A judge worker (one thread per shard of partitions): judges a batch, hands the passing
//! records to the clean sink (the broker's acknowledgement of the whole batch acknowledges its
//! [`Part::Clean`]), turns the rest into quarantine rows and passes them on.

use crate::ctx::{count_batch, quarantine_row, send_clean};
use crate::hold::{HeldBatch, HeldRecord, Hold};
use crate::{header_source, BatchAck, BytesHeld, Judged, Part, QuarantineWork, WorkerCtx};
use guard_core::{now_ms, Batch, Record, TopicPartition, Verdict};
use guard_quarantine::QuarantineRow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tracing::info_span;

/// Judge batches, forward passing records (or hold them for the window scan), pass
/// quarantine rows on. Runs on its own thread.
pub fn worker(mut rx: mpsc::Receiver<Batch>, mut ctx: WorkerCtx) {
    let mut models_seen = 0;
    let mut hold = Hold::new(ctx.scan.as_ref());
    while let Some(batch) = next_batch(&mut rx, &mut hold, &mut ctx) {
        reload_models(&mut ctx, &mut models_seen);
        let Batch { tp, ack, records } = batch;
        let (first, last) = (
            records.first().map_or(-1, |r| r.offset),
            records.last().map_or(-1, |r| r.offset),
        );
        let span = info_span!("judge", topic = %tp.topic, partition = tp.partition, first, last);
        let _entered = span.enter();
        let started = Instant::now();
        let mut judged = ctx.stages.judge_with_breaker(&tp, &records);
        // Windows close on age as batches arrive (of any topic this worker judges).
        ctx.stages.drift.tick();
        ctx.stages.drift.flush_sources();
        let scanning = hold.enabled()
            && ctx
                .stages
                .scoring
                .as_mut()
                .and_then(|s| s.route(&tp.topic))
                .is_some_and(|m| m.scan.is_some());
        let mut records = records;
        let passed = if scanning {
            // Held: the batch is finished only once the scan released its passing records.
            ack.hold();
            let held = take_passing(
                &tp,
                &ack,
                &mut records,
                &mut judged,
                ctx.stages.judge.schema_for(&tp.topic),
            );
            hold.push(held);
            for d in judged.decisions.values_mut() {
                if let Some(item) = d.scan.take() {
                    hold.observe(&tp.topic, item);
                }
            }
            0
        } else {
            let clean: Vec<&Record> = records
                .iter()
                .zip(&judged.judgements)
                .filter(|(_, j)| j.verdict.is_pass())
                .map(|(r, _)| r)
                .collect();
            send_clean(&ctx, &tp, &ack, &clean);
            clean.len() as u64
        };
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
        hold.release(&mut ctx, false);
    }
    // Input closed (shutdown): release what is held, so its batches can finish.
    hold.release(&mut ctx, true);
}

/// The next batch; while records are held, wakes up often enough to release them on time.
fn next_batch(rx: &mut mpsc::Receiver<Batch>, hold: &mut Hold, ctx: &mut WorkerCtx) -> Option<Batch> {
    loop {
        if hold.is_empty() {
            return rx.blocking_recv();
        }
        match rx.try_recv() {
            Ok(b) => return Some(b),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {
                hold.release(ctx, false);
                if !hold.is_empty() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }
}

/// Take a scanned batch's passing records out (a placeholder stays in their place, which the
/// quarantine rows skip) with their decisions and sources, to be held.
fn take_passing(
    tp: &TopicPartition,
    ack: &BatchAck,
    records: &mut [Record],
    judged: &mut Judged,
    schema: Option<&Arc<guard_validate::DomainSchema>>,
) -> HeldBatch {
    let mut held = Vec::new();
    for (i, (r, j)) in records.iter_mut().zip(&judged.judgements).enumerate() {
        if !j.verdict.is_pass() {
            continue;
        }
        let placeholder = Record::whole(r.offset, None, None, Vec::new(), None);
        held.push(HeldRecord {
            record: std::mem::replace(r, placeholder),
            decision: judged.decisions.remove(&i).unwrap_or_default(),
            source: judged.row_sources.remove(&i),
        });
    }
    HeldBatch {
        tp: tp.clone(),
        ack: ack.clone(),
        records: held,
        schema_id: schema.map(|s| Arc::clone(s.id())),
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
        rows.push(quarantine_row(tp, record, &reasons, j.schema_id, at, scored, source));
    }
    (rows, by_reason)
}
