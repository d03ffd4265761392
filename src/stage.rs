//! The sink stage: takes judged batches, sends passing records to the clean sink, buffers
//! quarantined ones per partition, writes quarantine files durably, and acknowledges each part
//! of each batch to the tracker only once it is durable.

use guard_config::Config;
use guard_core::{Batch, Health, Judgement, Record, TopicPartition, Verdict, GUARD_VERSION};
use guard_kafka::{CleanSink, FlushSignal};
use guard_pipeline::{AckTracker, Part};
use guard_quarantine::{covered_until, encode, file_name, PartitionBuffer, QuarantineRow, QuarantineStore, ReasonEntry, RollPolicy};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tracing::{info, info_span, warn, Instrument};

/// A batch with one judgement per record.
pub struct Judged {
    pub batch: Batch,
    pub judgements: Vec<Judgement>,
}

/// Totals for the shutdown summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub records_in: u64,
    pub passed: u64,
    pub quarantined: u64,
    pub by_reason: BTreeMap<String, u64>,
    pub quarantine_files: u64,
    pub quarantine_dir: String,
}

pub struct SinkStage {
    tracker: Arc<Mutex<AckTracker>>,
    health: Arc<Health>,
    flush: Arc<FlushSignal>,
    clean: Option<CleanSink>,
    store: Arc<dyn QuarantineStore>,
    buffers: HashMap<TopicPartition, (u64, PartitionBuffer)>,
    in_flight: Arc<Semaphore>,
    max_in_flight: u32,
    policy: RollPolicy,
    zstd_level: i32,
    backoff: Duration,
    summary: Summary,
}

fn lock(m: &Mutex<AckTracker>) -> std::sync::MutexGuard<'_, AckTracker> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SinkStage {
    pub fn new(
        cfg: &Config,
        tracker: Arc<Mutex<AckTracker>>,
        health: Arc<Health>,
        flush: Arc<FlushSignal>,
        clean: Option<CleanSink>,
        store: Arc<dyn QuarantineStore>,
    ) -> Self {
        let q = &cfg.quarantine;
        let max_in_flight = (cfg.pipeline.channel_capacity * 4).max(4) as u32;
        Self {
            tracker,
            health,
            flush,
            clean,
            store,
            buffers: HashMap::new(),
            in_flight: Arc::new(Semaphore::new(max_in_flight as usize)),
            max_in_flight,
            policy: RollPolicy {
                max_rows: q.roll_max_rows,
                max_bytes: q.roll_max_bytes,
                max_age: Duration::from_millis(q.roll_max_age_ms),
            },
            zstd_level: q.zstd_level,
            backoff: Duration::from_millis(q.retry_backoff_ms.max(10)),
            summary: Summary { quarantine_dir: q.dir.display().to_string(), ..Summary::default() },
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Judged>) -> Summary {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(j) => self.handle(j).await,
                    None => break,
                },
                _ = tick.tick() => {
                    let all = self.flush.requested();
                    self.roll(all).await;
                }
            }
        }
        self.roll(true).await;
        // Wait for every delivery task to finish.
        let _all = self.in_flight.acquire_many(self.max_in_flight).await;
        if let Some(c) = &self.clean {
            c.flush(Duration::from_secs(10));
        }
        self.summary
    }

    async fn handle(&mut self, j: Judged) {
        let Judged { batch, judgements } = j;
        let tp = batch.tp.clone();
        let (generation, seq) = (batch.generation, batch.seq);
        let (first, last) = (batch.first_offset(), batch.last_offset());
        let span = info_span!("sink", topic = %tp.topic, partition = tp.partition, first, last);
        if lock(&self.tracker).generation(&tp) != Some(generation) {
            metrics::counter!("guard_pipeline_stale_batches_total").increment(1);
            return;
        }
        let topic_label = tp.topic.to_string();
        let n = batch.records.len() as u64;
        let mut clean: Vec<Record> = Vec::new();
        let mut rows: Vec<QuarantineRow> = Vec::new();
        let mut by_reason: HashMap<&'static str, u64> = HashMap::new();
        let at = now_ms();
        for (record, j) in batch.records.into_iter().zip(judgements) {
            match j.verdict {
                Verdict::Pass => clean.push(record),
                Verdict::Quarantine(reasons) => {
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
                        anomaly_score: None,
                        label_score: None,
                        model_id: None,
                    });
                }
            }
        }
        let passed = clean.len() as u64;
        self.summary.records_in += n;
        self.summary.passed += passed;
        self.summary.quarantined += rows.len() as u64;
        metrics::counter!("guard_pipeline_records_passed_total", "topic" => topic_label.clone()).increment(passed);
        for (reason, count) in by_reason {
            *self.summary.by_reason.entry(reason.to_owned()).or_default() += count;
            metrics::counter!("guard_pipeline_records_quarantined_total", "topic" => topic_label.clone(), "reason" => reason)
                .increment(count);
        }

        // Clean part: deliver in the background, bounded by the in-flight semaphore.
        match (&self.clean, clean.is_empty()) {
            (Some(sink), false) => {
                let permit = match Arc::clone(&self.in_flight).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                };
                let sink = sink.clone();
                let tracker = Arc::clone(&self.tracker);
                let tp2 = tp.clone();
                tokio::spawn(
                    async move {
                        sink.deliver(&tp2, &clean).await;
                        lock(&tracker).ack(&tp2, generation, seq, Part::Clean);
                        drop(permit);
                    }
                    .instrument(span.clone()),
                );
            }
            _ => lock(&self.tracker).ack(&tp, generation, seq, Part::Clean),
        }

        // Quarantine part: buffer, and write when a roll threshold is reached.
        let policy = self.policy;
        let Some(buf) = self.buffer_for(&tp, generation).await else { return };
        let waits = buf.add(seq, first, last, rows, Instant::now());
        let roll = buf.should_roll(&policy, Instant::now());
        if !waits {
            lock(&self.tracker).ack(&tp, generation, seq, Part::Quarantine);
        }
        if roll {
            self.write(&tp).instrument(span).await;
        }
    }

    /// The open buffer of `tp` in `generation`, created by scanning which offsets existing
    /// files already cover. Retries while the store is failing.
    async fn buffer_for(&mut self, tp: &TopicPartition, generation: u64) -> Option<&mut PartitionBuffer> {
        let fresh = self.buffers.get(tp).is_none_or(|(g, _)| *g != generation);
        if fresh {
            let covered = loop {
                let store = Arc::clone(&self.store);
                let result = tokio::task::block_in_place(|| covered_until(store.as_ref(), &tp.topic, tp.partition));
                match result {
                    Ok(c) => {
                        self.health.set_quarantine_failing(false);
                        break c;
                    }
                    Err(e) => {
                        self.store_failed(&e.to_string());
                        tokio::time::sleep(self.backoff).await;
                        if lock(&self.tracker).generation(tp) != Some(generation) {
                            return None;
                        }
                    }
                }
            };
            if covered >= 0 {
                info!(topic = %tp.topic, partition = tp.partition, covered_until = covered, "existing quarantine files found; replayed offsets up to here are not written again");
            }
            self.buffers.insert(tp.clone(), (generation, PartitionBuffer::new(covered)));
        }
        self.buffers.get_mut(tp).map(|(_, b)| b)
    }

    fn store_failed(&self, error: &str) {
        warn!(error, "quarantine store failing; not committing, retrying");
        metrics::counter!("guard_quarantine_write_failures_total").increment(1);
        self.health.set_quarantine_failing(true);
        self.health.note_error(format!("quarantine: {error}"));
    }

    /// Write every buffer that is due (or, with `all`, every non-empty one).
    async fn roll(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .buffers
            .iter()
            .filter(|(_, (_, b))| !b.is_empty() && (all || b.should_roll(&self.policy, now)))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.write(&tp).await;
        }
    }

    /// Write `tp`'s open file, retrying until it is durable or the partition is gone.
    async fn write(&mut self, tp: &TopicPartition) {
        loop {
            let Some((generation, buf)) = self.buffers.get(tp) else { return };
            let generation = *generation;
            if lock(&self.tracker).generation(tp) != Some(generation) {
                // Revoked while failing: these rows were never committed; the next owner re-reads them.
                self.buffers.remove(tp);
                return;
            }
            let Some((first, last, rows)) = buf.pending() else { return };
            let name = file_name(&tp.topic, tp.partition, first, last);
            let n = rows.len();
            let store = Arc::clone(&self.store);
            let level = self.zstd_level;
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| {
                let bytes = encode(rows, level).map_err(|e| e.to_string())?;
                store.put(&name, &bytes).map_err(|e| e.to_string())?;
                Ok::<usize, String>(bytes.len())
            });
            match result {
                Ok(bytes) => {
                    metrics::counter!("guard_quarantine_files_written_total").increment(1);
                    metrics::counter!("guard_quarantine_rows_written_total").increment(n as u64);
                    metrics::counter!("guard_quarantine_bytes_written_total").increment(bytes as u64);
                    metrics::histogram!("guard_quarantine_write_duration_seconds").record(started.elapsed().as_secs_f64());
                    self.health.set_quarantine_failing(false);
                    self.summary.quarantine_files += 1;
                    let seqs = self.buffers.get_mut(tp).map(|(_, b)| b.committed()).unwrap_or_default();
                    let mut t = lock(&self.tracker);
                    for seq in seqs {
                        t.ack(tp, generation, seq, Part::Quarantine);
                    }
                    tracing::debug!(file = %name, rows = n, "quarantine file durable");
                    return;
                }
                Err(e) => {
                    self.store_failed(&e);
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }
}
