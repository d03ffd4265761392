//! The window scan's hold-back on a judge worker. Passing records of a route with a scan are
//! not forwarded when judged: they wait here, with their batch's acknowledgement token (whose
//! [`Part::Held`] is pending), until `scan.hold_records` of the route wait or the oldest has
//! waited `scan.hold_ms`. Then the route's held records are scanned together with the context
//! of records released before ([`ScanWindow`]) and released: the clean ones to the clean sink
//! (acknowledging [`Part::Clean`] on delivery), the flagged ones to the quarantine with
//! `scan.spectral` (acknowledging [`Part::Held`] once durable). A batch is therefore committed
//! only after all of its records reached one of the two durable ends; a crash before that
//! loses nothing (the records are read and judged again), and a partition that leaves this
//! instance drops its held records (its next owner reads them again).
//!
//! Memory: the held records (at most `hold_records` per route and worker, plus the last
//! batch) and `window_records` hidden representations per route and worker.

use crate::ctx::{count_batch, quarantine_row, send_clean};
use crate::{BatchAck, Part, QuarantineWork, WorkerCtx};
use guard_config::ScanConfig;
use guard_core::{now_ms, Reason, ReasonCode, Record, TopicPartition};
use guard_quarantine::QuarantineRow;
use guard_score::{Decision, ScanItem, ScanWindow};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One held record: the record, what the models decided (its scan item taken out), its source.
pub(crate) struct HeldRecord {
    pub(crate) record: Record,
    pub(crate) decision: Decision,
    pub(crate) source: Option<String>,
}

/// One batch's held records.
pub(crate) struct HeldBatch {
    pub(crate) tp: TopicPartition,
    pub(crate) ack: BatchAck,
    pub(crate) records: Vec<HeldRecord>,
    pub(crate) schema_id: Option<Arc<str>>,
}

#[derive(Default)]
struct RouteHold {
    window: ScanWindow,
    batches: Vec<HeldBatch>,
    records: usize,
    since: Option<Instant>,
}

/// The held records of one worker, by route.
pub(crate) struct Hold {
    cfg: Option<ScanConfig>,
    routes: HashMap<Arc<str>, RouteHold>,
}

impl Hold {
    pub(crate) fn new(cfg: Option<&ScanConfig>) -> Self {
        Self {
            cfg: cfg.filter(|c| c.enabled).cloned(),
            routes: HashMap::new(),
        }
    }

    /// Whether the scan is on at all.
    pub(crate) fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// Whether any record is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.routes.values().all(|r| r.batches.is_empty())
    }

    /// The hold of `topic`, made on first use.
    fn route(&mut self, topic: &Arc<str>) -> &mut RouteHold {
        let window = self.cfg.as_ref().map_or(0, |c| c.window_records);
        self.routes.entry(Arc::clone(topic)).or_insert_with(|| RouteHold {
            window: ScanWindow::new(window),
            ..RouteHold::default()
        })
    }

    /// Hold a batch's passing records.
    pub(crate) fn push(&mut self, batch: HeldBatch) {
        let r = self.route(&batch.tp.topic);
        r.records += batch.records.len();
        metrics::gauge!("guard_scan_held_records", "topic" => batch.tp.topic.to_string())
            .increment(batch.records.len() as f64);
        r.since.get_or_insert_with(Instant::now);
        r.batches.push(batch);
    }

    /// A record of `topic` a per-record check quarantined: context for the next scan.
    pub(crate) fn observe(&mut self, topic: &Arc<str>, item: ScanItem) {
        self.route(topic).window.observe(item);
    }

    /// Scan and release every route that is due (`all`: every route holding records).
    pub(crate) fn release(&mut self, ctx: &mut WorkerCtx, all: bool) {
        let Some(cfg) = self.cfg.clone() else { return };
        let now = Instant::now();
        let due: Vec<Arc<str>> = self
            .routes
            .iter()
            .filter(|(_, r)| {
                !r.batches.is_empty()
                    && (all
                        || r.records >= cfg.hold_records
                        || r.since
                            .is_some_and(|t| now.duration_since(t) >= Duration::from_millis(cfg.hold_ms)))
            })
            .map(|(t, _)| Arc::clone(t))
            .collect();
        for topic in due {
            if let Some(r) = self.routes.get_mut(&topic) {
                release_route(ctx, &topic, r);
            }
        }
    }
}

/// Scan one route's held records against its context and send each batch's records on.
fn release_route(ctx: &mut WorkerCtx, topic: &Arc<str>, r: &mut RouteHold) {
    let batches = std::mem::take(&mut r.batches);
    let held = std::mem::take(&mut r.records);
    let waited = r.since.take().map_or(0.0, |t| t.elapsed().as_secs_f64());
    let span = tracing::info_span!("scan", topic = %topic, records = held, waited_s = waited);
    let _entered = span.enter();
    metrics::gauge!("guard_scan_held_records", "topic" => topic.to_string()).decrement(held as f64);
    metrics::histogram!("guard_scan_hold_duration_seconds").record(waited);
    // The records of partitions that left this instance are dropped (their next owner reads
    // them again) and take no part in the scan.
    let (mut batches, stale): (Vec<HeldBatch>, Vec<HeldBatch>) = batches.into_iter().partition(|b| b.ack.is_current());
    if !stale.is_empty() {
        metrics::counter!("guard_pipeline_stale_batches_total").increment(stale.len() as u64);
    }
    let items: Vec<ScanItem> = batches
        .iter_mut()
        .flat_map(|b| b.records.iter_mut())
        .map(|h| {
            h.decision.scan.take().unwrap_or(ScanItem {
                class: None,
                hidden: Vec::new(),
                label_score: f32::NAN,
            })
        })
        .collect();
    let window = items.len() + r.window.context_len();
    let scan = ctx
        .stages
        .scoring
        .as_mut()
        .and_then(|s| s.route(topic))
        .and_then(|m| m.scan.as_ref());
    let flags = match scan {
        Some(scan) => r.window.judge(scan, items),
        // The models were swapped for ones without a scan: release everything as it is.
        None => vec![None; items.len()],
    };
    let mut flags = flags.into_iter();
    let at = now_ms();
    for b in batches {
        let HeldBatch {
            tp,
            ack,
            records,
            schema_id,
        } = b;
        let mut clean: Vec<Record> = Vec::new();
        let mut rows: Vec<QuarantineRow> = Vec::new();
        for h in records {
            match flags.next().flatten() {
                None => clean.push(h.record),
                Some(flag) => {
                    metrics::counter!("guard_scan_flagged_total", "topic" => topic.to_string(), "why" => match flag.why {
                        guard_score::ScanWhy::Cluster => "cluster",
                        guard_score::ScanWhy::Doubt => "doubt",
                    })
                    .increment(1);
                    let reason = Reason::new(ReasonCode::SCAN_SPECTRAL, flag.message(window));
                    let HeldRecord {
                        record,
                        mut decision,
                        source,
                    } = h;
                    decision.explanation =
                        Some(serde_json::json!({ "scan": { "window": window, "flag": flag } }).to_string());
                    rows.push(quarantine_row(
                        &tp,
                        record,
                        std::slice::from_ref(&reason),
                        schema_id.clone(),
                        at,
                        decision,
                        source,
                    ));
                }
            }
        }
        let refs: Vec<&Record> = clean.iter().collect();
        send_clean(ctx, &tp, &ack, &refs);
        let flagged = rows.len() as u64;
        let mut by_reason = HashMap::new();
        if flagged > 0 {
            by_reason.insert(ReasonCode::SCAN_SPECTRAL.as_str(), flagged);
        }
        count_batch(ctx, &tp, clean.len() as u64, flagged, by_reason);
        if rows.is_empty() {
            ack.ack(Part::Held);
            continue;
        }
        let (first, last) = rows
            .iter()
            .fold((i64::MAX, i64::MIN), |(f, l), r| (f.min(r.offset), l.max(r.offset)));
        let held = ctx
            .quarantine_budget
            .take(rows.iter().map(QuarantineRow::approx_bytes).sum());
        let work = QuarantineWork {
            ack,
            first,
            last,
            rows,
            part: Part::Held,
            held,
        };
        // A closed channel means shutdown: the batch stays unacknowledged and is read again.
        if ctx.out.blocking_send(work).is_err() {
            return;
        }
    }
}
