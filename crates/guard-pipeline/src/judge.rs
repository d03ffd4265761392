//! The batch judge: checks, observers, scorers and the policy, over one batch.

use guard_core::{FeatureRows, Judgement, Reason, ReasonCode, Record, TopicPartition, Verdict};
use guard_drift::DriftWindows;
use guard_score::{Decision, Scoring};
use guard_validate::{DomainSchema, Judge, ValidateError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What judging one batch decided, per record (indices into the batch).
#[derive(Debug, Default)]
pub struct Judged {
    /// One per record, in order.
    pub judgements: Vec<Judgement>,
    /// Model decisions of quarantined, scored records (they carry scores into the row); with
    /// [`BatchJudge::keep_scores`], of every scored record.
    pub decisions: HashMap<usize, Decision>,
    /// Sources of records that may be quarantined, for their quarantine row.
    pub row_sources: HashMap<usize, String>,
}

/// The stages one judge worker runs a batch through, in order: checks (limits, decode,
/// schema, typed row), observers (drift windows, source counts), scorers (one model run per
/// batch), then the policy (model thresholds, then the breaker).
pub struct BatchJudge {
    /// Limits, decoding and the routes' schemas.
    pub judge: Arc<Judge>,
    /// This worker's drift windows (only topics whose route has a baseline are watched) and
    /// source counts; its hub holds the breaker.
    pub drift: DriftWindows,
    /// This worker's scoring sessions (only routes with models).
    pub scoring: Option<Scoring>,
    /// Keep every scored record's decision in [`Judged::decisions`], not only the quarantined
    /// ones' (evaluation reads every score).
    pub keep_scores: bool,
}

/// The checks for every route of `cfg`: each topic's domain schema loaded, with the
/// configured limits (the run path and `tools evaluate` build their judge here).
pub fn judge_for(cfg: &guard_config::Config) -> Result<Judge, ValidateError> {
    let mut routes = HashMap::new();
    for r in &cfg.routes {
        let schema = DomainSchema::load(&r.schema)?;
        tracing::info!(topic = %r.topic, schema = %schema.id(), file = %r.schema.display(), "schema routed");
        routes.insert(r.topic.clone(), Arc::new(schema));
    }
    Ok(Judge::new(cfg.limits.clone(), routes))
}

impl BatchJudge {
    /// Judge a batch as the stream does: the checks and models of [`BatchJudge::judge`], then
    /// the breaker: its state before the batch decides, and the batch's outcome feeds it. While
    /// it is open, what passed is quarantined too (nothing is dropped).
    pub fn judge_with_breaker(&mut self, tp: &TopicPartition, records: &[Record]) -> Judged {
        let open = self.drift.hub().breaker().is_open();
        let mut judged = self.judge(tp, records, open);
        let failed = judged
            .judgements
            .iter()
            .filter(|j| !j.verdict.is_pass() && !is_source_verdict(&j.verdict))
            .count() as u64;
        let breaker = self.drift.hub().breaker();
        breaker.observe(judged.judgements.len() as u64, failed);
        if open {
            let why = format!("breaker open: {}", breaker.reason());
            for j in judged.judgements.iter_mut().filter(|j| j.verdict.is_pass()) {
                j.verdict = Verdict::Quarantine(vec![Reason::new(ReasonCode::BREAKER_OPEN, why.clone())]);
            }
        }
        judged
    }

    /// Judge a batch (checks, observers, scorers, model thresholds). If that panics, judge
    /// each record on its own, and quarantine the records that panic alone with
    /// `internal.panic` (DESIGN.md 5: one record never stops the guard). `breaker_open` only
    /// decides which sources are kept for quarantine rows.
    pub fn judge(&mut self, tp: &TopicPartition, records: &[Record], breaker_open: bool) -> Judged {
        use std::panic::{catch_unwind, AssertUnwindSafe};
        match catch_unwind(AssertUnwindSafe(|| self.judge_records(tp, records, breaker_open))) {
            Ok(j) => return j,
            Err(p) => {
                tracing::error!(panic = %panic_text(&*p), records = records.len(), "judging a batch panicked; judging its records one by one");
            }
        }
        let mut out = Judged {
            judgements: Vec::with_capacity(records.len()),
            ..Judged::default()
        };
        for (i, r) in records.iter().enumerate() {
            let one = std::slice::from_ref(r);
            match catch_unwind(AssertUnwindSafe(|| self.judge_records(tp, one, breaker_open))) {
                Ok(mut j) => {
                    if let Some(d) = j.decisions.remove(&0) {
                        out.decisions.insert(i, d);
                    }
                    if let Some(s) = j.row_sources.remove(&0) {
                        out.row_sources.insert(i, s);
                    }
                    out.judgements.extend(j.judgements);
                }
                Err(p) => {
                    let msg = panic_text(&*p);
                    tracing::error!(topic = %tp.topic, partition = tp.partition, offset = r.offset, panic = %msg, "judging a record panicked; it is quarantined with internal.panic");
                    metrics::counter!("guard_pipeline_panics_total").increment(1);
                    out.judgements.push(Judgement {
                        verdict: Verdict::reject(Reason::new(ReasonCode::INTERNAL_PANIC, msg)),
                        schema_id: self.judge.schema_for(&tp.topic).map(|s| Arc::clone(s.id())),
                    });
                }
            }
        }
        out
    }

    /// Judge `records`. Each record that passes its checks is extracted once into a typed row
    /// ([`FeatureRows`]); drift and the models read the rows.
    fn judge_records(&mut self, tp: &TopicPartition, records: &[Record], breaker_open: bool) -> Judged {
        let mut slowest = Duration::ZERO;
        let judge = &self.judge;
        let watched = self.drift.watches(&tp.topic);
        let header = self.drift.source_header();
        let drift = &mut self.drift;
        let models = self.scoring.as_mut().and_then(|s| s.route(&tp.topic));
        let schema = judge.schema_for(&tp.topic).map(Arc::clone);
        let mut rows = schema
            .as_ref()
            .map(|s| FeatureRows::new(s.layout(), watched || models.is_some()))
            .unwrap_or_default();
        // Sources of records that will be quarantined, for their quarantine row (schema mode;
        // with a source header it is read from the record itself). Passing records keep theirs
        // in their typed row.
        let mut row_sources: HashMap<usize, String> = HashMap::new();
        let mut judgements: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let t = Instant::now();
                #[cfg(feature = "test-hooks")]
                test_hooks::maybe_panic(r);
                let mut invalid = false;
                let from_header = header.as_deref().map(|h| header_source(r, h));
                let j = judge.judge_row(&tp.topic, r, i, &mut rows, from_header, |schema, value| {
                    invalid = true;
                    let source =
                        from_header.unwrap_or_else(|| guard_core::cap_source(schema.source(value).unwrap_or("(none)")));
                    drift.count_source(source, false);
                    if header.is_none() {
                        row_sources.insert(i, source.to_owned());
                    }
                });
                if !j.verdict.is_pass() && !invalid {
                    drift.count_source(from_header.unwrap_or("(undecoded)"), false);
                }
                slowest = slowest.max(t.elapsed());
                j
            })
            .collect();
        metrics::histogram!("guard_validate_record_max_duration_seconds").record(slowest.as_secs_f64());
        if watched {
            for r in 0..rows.len() {
                let row = rows.row(r);
                if let Some(rec) = records.get(row.index()) {
                    drift.observe_row(&tp.topic, tp.partition, rec.offset, row);
                }
            }
        }
        // Scoring: one run per model over the batch's passing records.
        let mut decisions: HashMap<usize, Decision> = HashMap::new();
        let keep_source = |flagged: bool| header.is_none() && (flagged || breaker_open);
        match models {
            Some(m) => {
                let gathered = m.gather(&rows);
                for (r, mut d) in m.decide(&gathered, &rows).into_iter().enumerate() {
                    let row = rows.row(r);
                    let i = row.index();
                    let flagged = !d.reasons.is_empty();
                    // A record the window scan will read is held with its decision and source.
                    let held = d.scan.is_some();
                    self.drift.count_source_outcome(row.source(), false, flagged);
                    if keep_source(flagged || held) {
                        row_sources.insert(i, row.source().to_owned());
                    }
                    if flagged {
                        if let Some(j) = judgements.get_mut(i) {
                            j.verdict = Verdict::Quarantine(if self.keep_scores {
                                d.reasons.clone()
                            } else {
                                std::mem::take(&mut d.reasons)
                            });
                        }
                    }
                    // Only quarantined records carry scores into a row.
                    if flagged || held || self.keep_scores {
                        decisions.insert(i, d);
                    }
                }
            }
            None => {
                for r in 0..rows.len() {
                    let row = rows.row(r);
                    self.drift.count_source(row.source(), true);
                    if keep_source(false) {
                        row_sources.insert(row.index(), row.source().to_owned());
                    }
                }
            }
        }
        floods_and_blocks(
            self.drift.hub().floods(),
            tp,
            records,
            &rows,
            &mut judgements,
            &mut decisions,
            &mut row_sources,
            header.is_none(),
        );
        Judged {
            judgements,
            decisions,
            row_sources,
        }
    }
}

/// Add `reason` to a judgement (a passing record becomes quarantined).
fn add_reason(j: &mut Judgement, reason: Reason) {
    match &mut j.verdict {
        Verdict::Pass => j.verdict = Verdict::reject(reason),
        Verdict::Quarantine(v) => v.push(reason),
    }
}

/// Whether a verdict is a source's own doing (a flood, a block): it does not count towards
/// the breaker, which would otherwise stop every source for one flooding producer.
fn is_source_verdict(v: &Verdict) -> bool {
    match v {
        Verdict::Pass => false,
        Verdict::Quarantine(r) => r
            .iter()
            .any(|r| r.code == ReasonCode::SOURCE_BLOCKED || r.code == ReasonCode::FLOOD_NEAR_DUPLICATE),
    }
}

/// After the models: near-duplicate floods over the batch's typed rows, then source blocks
/// (and the quarantine budget) over every typed row. A record judged a flood, or of a blocked
/// source, is quarantined; `keep_sources` keeps its source for its quarantine row. Such a
/// record leaves the window scan's context: a thousand copies of one record are a cluster the
/// scan would otherwise pin on the class's honest records.
#[allow(clippy::too_many_arguments)]
fn floods_and_blocks(
    floods: &guard_drift::Floods,
    tp: &TopicPartition,
    records: &[Record],
    rows: &FeatureRows,
    judgements: &mut [Judgement],
    decisions: &mut HashMap<usize, Decision>,
    row_sources: &mut HashMap<usize, String>,
    keep_sources: bool,
) {
    let mut unscan = |i: usize| {
        if let Some(d) = decisions.get_mut(&i) {
            d.scan = None;
        }
    };
    let offset = |i: usize| records.get(i).map_or(-1, |r| r.offset);
    if floods.judges(&tp.topic) && rows.has_features() {
        let flags = floods.observe(
            &tp.topic,
            (0..rows.len()).map(|r| {
                let row = rows.row(r);
                (row.source(), row.values())
            }),
        );
        for (r, flag) in flags.into_iter().enumerate() {
            let Some(f) = flag else { continue };
            let row = rows.row(r);
            let (i, source) = (row.index(), row.source());
            metrics::counter!("guard_flood_flagged_total").increment(1);
            tracing::info!(topic = %tp.topic, partition = tp.partition, offset = offset(i), source, copies = f.copies, window = f.window, "near-duplicate flood");
            floods.note_flag(&tp.topic, source, tp.partition, offset(i));
            if let Some(j) = judgements.get_mut(i) {
                add_reason(j, Reason::new(ReasonCode::FLOOD_NEAR_DUPLICATE, f.message(source)));
            }
            unscan(i);
            if keep_sources {
                row_sources.insert(i, source.to_owned());
            }
        }
    }
    for r in 0..rows.len() {
        let row = rows.row(r);
        let (i, source) = (row.index(), row.source());
        let Some(j) = judgements.get_mut(i) else { continue };
        floods.note_outcome(&tp.topic, source, !j.verdict.is_pass(), tp.partition, offset(i));
        if let Some(b) = floods.blocked_source(&tp.topic, source) {
            let why = format!(
                "source {source} is blocked ({}) since {} until a reviewer releases block {}",
                b.why,
                guard_core::rfc3339(b.since_ms),
                b.id
            );
            add_reason(j, Reason::new(ReasonCode::SOURCE_BLOCKED, why));
            unscan(i);
            if keep_sources {
                row_sources.insert(i, source.to_owned());
            }
        }
    }
}

/// The text of a caught panic.
fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".into())
}

/// The source named by header `name`: its UTF-8 value, `(none)` when absent or null,
/// `(binary)` when not UTF-8.
pub fn header_source<'r>(r: &'r Record, name: &str) -> &'r str {
    match r.headers.iter().find(|h| h.key == name) {
        None => "(none)",
        Some(h) => match h.value.as_deref() {
            None => "(none)",
            Some(v) => guard_core::cap_source(std::str::from_utf8(v).unwrap_or("(binary)")),
        },
    }
}

#[cfg(feature = "test-hooks")]
mod test_hooks {
    //! Test-only faults, compiled in only with the `test-hooks` feature (the test suite's
    //! build): a record whose key is [`PANIC_KEY`] makes judging panic, to prove that the
    //! panic is contained.

    /// Key that makes judging panic in a `test-hooks` build.
    pub const PANIC_KEY: &[u8] = b"__ingest_guard_test_panic__";

    pub fn maybe_panic(r: &guard_core::Record) {
        if r.key.as_deref() == Some(PANIC_KEY) {
            panic!("deliberate test panic at offset {}", r.offset);
        }
    }
}
