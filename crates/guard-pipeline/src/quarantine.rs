//! The quarantine stage (one async task): buffers rows per partition, writes quarantine files
//! durably, and acknowledges [`Part::Quarantine`] of each batch only once its rows are in a
//! fsynced file. A failing store is retried with back-off; meanwhile nothing is acknowledged,
//! the bounded channels fill and the source pauses.

use crate::{BatchAck, ByteBudget, BytesHeld, FlushSignal, Part};
use guard_config::Config;
use guard_core::{lock, Health, TopicPartition};
use guard_quarantine::{
    encode, file_name_alt, stored_offsets, PartitionBuffer, QuarantineRow, QuarantineStore, RollPolicy,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

/// Quarantined rows of one batch (possibly none), with the batch's coordinates and the part
/// of the batch they acknowledge once durable.
pub struct QuarantineWork {
    /// The batch's acknowledgement token (its partition, generation and lease).
    pub ack: BatchAck,
    /// Its first offset (-1 when empty).
    pub first: i64,
    /// Its last offset (-1 when empty).
    pub last: i64,
    /// Rows to write.
    pub rows: Vec<QuarantineRow>,
    /// [`Part::Quarantine`] for a batch's judged rows; [`Part::Clean`] for records the clean
    /// topic refused (their batch's clean part waits for them).
    pub part: Part,
    /// The rows' bytes, taken from the quarantine budget; returned once they are durable.
    pub held: BytesHeld,
}

/// Totals for the shutdown summary.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    /// Records judged.
    pub records_in: u64,
    /// Records forwarded to the clean topic.
    pub passed: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// Quarantined records by primary reason code.
    pub by_reason: BTreeMap<String, u64>,
    /// Quarantine files written.
    pub quarantine_files: u64,
    /// Where quarantine files go.
    pub quarantine_dir: String,
}

/// What a buffered batch waits for: its token, the part it acknowledges, and the budget bytes
/// its rows hold until they are durable.
type Ticket = (BatchAck, Part, BytesHeld);

/// Buffers quarantine rows per partition and writes them durably (see the module docs).
pub struct QuarantineStage {
    health: Arc<Health>,
    flush: Arc<FlushSignal>,
    store: Arc<dyn QuarantineStore>,
    /// Per partition: the token of the batch that opened the buffer (its generation and
    /// lease say whether the partition is still ours) and the buffer.
    buffers: HashMap<TopicPartition, (BatchAck, PartitionBuffer<Ticket>)>,
    budget: Arc<ByteBudget>,
    policy: RollPolicy,
    zstd_level: i32,
    backoff: Duration,
    summary: Arc<Mutex<Summary>>,
}

impl QuarantineStage {
    /// A stage writing to `store` with the configured roll policy; it acknowledges on each
    /// batch's token and holds rows against `budget` until they are durable.
    pub fn new(
        cfg: &Config,
        health: Arc<Health>,
        flush: Arc<FlushSignal>,
        store: Arc<dyn QuarantineStore>,
        summary: Arc<Mutex<Summary>>,
        budget: Arc<ByteBudget>,
    ) -> Self {
        let q = &cfg.quarantine;
        Self {
            budget,
            health,
            flush,
            store,
            buffers: HashMap::new(),
            policy: RollPolicy {
                max_rows: q.roll_max_rows,
                max_bytes: q.roll_max_bytes,
                max_age: Duration::from_millis(q.roll_max_age_ms),
            },
            zstd_level: q.zstd_level,
            backoff: Duration::from_millis(q.retry_backoff_ms.max(10)),
            summary,
        }
    }

    /// Take judged rows from `rx` and refused clean records from `late` until both close.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<QuarantineWork>,
        mut late: mpsc::UnboundedReceiver<QuarantineWork>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut late_open = true;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(w) => self.handle(w).await,
                    None => break,
                },
                msg = late.recv(), if late_open => match msg {
                    Some(w) => self.handle(w).await,
                    None => late_open = false,
                },
                _ = tick.tick() => {
                    let all = self.flush.requested();
                    self.roll(all).await;
                }
            }
        }
        while let Ok(w) = late.try_recv() {
            self.handle(w).await;
        }
        self.roll(true).await;
    }

    async fn handle(&mut self, w: QuarantineWork) {
        let QuarantineWork {
            ack,
            first,
            last,
            rows,
            part,
            held,
        } = w;
        if !ack.is_current() {
            metrics::counter!("guard_pipeline_stale_batches_total").increment(1);
            return;
        }
        let tp = ack.tp().clone();
        let policy = self.policy;
        let Some(buf) = self.buffer_for(&tp, &ack, first).await else {
            return;
        };
        let waits = buf.add((ack.clone(), part, held), first, last, rows, Instant::now());
        let roll = buf.should_roll(&policy, Instant::now());
        if !waits {
            ack.ack(part);
        }
        if roll {
            let span = info_span!("quarantine", topic = %tp.topic, partition = tp.partition, first, last);
            self.write(&tp).instrument(span).await;
        }
        // Rows waiting to be durable hold half the budget: write every open file now rather
        // than let the workers wait for the roll thresholds.
        if self.budget.used() >= self.budget.cap() / 2 {
            self.roll(true).await;
        }
    }

    /// The open buffer of `tp` in `ack`'s generation, created by reading which exact offsets
    /// the partition's existing files hold from `from` (this owner's first offset) on. Retries
    /// while the store is failing.
    async fn buffer_for(
        &mut self,
        tp: &TopicPartition,
        ack: &BatchAck,
        from: i64,
    ) -> Option<&mut PartitionBuffer<Ticket>> {
        let fresh = self
            .buffers
            .get(tp)
            .is_none_or(|(opened, _)| opened.generation() != ack.generation());
        if fresh {
            let stored = loop {
                let store = Arc::clone(&self.store);
                let result =
                    tokio::task::block_in_place(|| stored_offsets(store.as_ref(), &tp.topic, tp.partition, from));
                match result {
                    Ok(c) => {
                        self.health.set_quarantine_failing(false);
                        break c;
                    }
                    Err(e) => {
                        self.store_failed(&e.to_string());
                        tokio::time::sleep(self.backoff).await;
                        if !ack.is_current() {
                            return None;
                        }
                    }
                }
            };
            for (file, why) in &stored.skipped {
                warn!(topic = %tp.topic, partition = tp.partition, file, why, "not a readable quarantine file; skipped (its rows may be written again, never lost)");
                metrics::counter!("guard_quarantine_unreadable_files_total").increment(1);
            }
            if !stored.offsets.is_empty() {
                info!(topic = %tp.topic, partition = tp.partition, from, files = stored.files, offsets = stored.offsets.len(), "existing quarantine files hold some of these offsets; replayed records at exactly those offsets are not written again");
            }
            self.buffers
                .insert(tp.clone(), (ack.clone(), PartitionBuffer::new(stored.offsets)));
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

    /// Write `tp`'s open file, retrying until it is durable or the partition is gone. A name
    /// that is taken (a replay writing rows beside an earlier file of the same range) gets the
    /// next alternative name; a file is never replaced.
    async fn write(&mut self, tp: &TopicPartition) {
        let mut alt = 0u32;
        loop {
            let Some((opened, buf)) = self.buffers.get(tp) else {
                return;
            };
            if !opened.is_current() {
                // Revoked while failing: these rows were never committed; the next owner re-reads them.
                self.buffers.remove(tp);
                return;
            }
            let Some((first, last, rows)) = buf.pending() else {
                return;
            };
            let name = file_name_alt(&tp.topic, tp.partition, first, last, alt);
            let n = rows.len();
            let store = Arc::clone(&self.store);
            let level = self.zstd_level;
            let started = Instant::now();
            let result = tokio::task::block_in_place(|| {
                let bytes = encode(rows, level)?;
                match store.put(&name, &bytes) {
                    // Our own earlier attempt that failed after publishing the file.
                    Err(guard_quarantine::QuarantineError::Exists(_)) if store.get(&name).is_ok_and(|b| b == bytes) => {
                    }
                    other => other?,
                }
                Ok::<usize, guard_quarantine::QuarantineError>(bytes.len())
            });
            match result {
                Ok(bytes) => {
                    metrics::counter!("guard_quarantine_files_written_total").increment(1);
                    metrics::counter!("guard_quarantine_rows_written_total").increment(n as u64);
                    metrics::counter!("guard_quarantine_bytes_written_total").increment(bytes as u64);
                    metrics::histogram!("guard_quarantine_write_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    self.health.set_quarantine_failing(false);
                    lock(&self.summary).quarantine_files += 1;
                    let tickets = self.buffers.get_mut(tp).map(|(_, b)| b.committed()).unwrap_or_default();
                    for (ack, part, held) in tickets {
                        ack.ack(part);
                        drop(held);
                    }
                    tracing::debug!(file = %name, rows = n, "quarantine file durable");
                    return;
                }
                Err(guard_quarantine::QuarantineError::Exists(_)) => {
                    alt += 1;
                    info!(file = %name, "a quarantine file of this range exists; writing beside it");
                }
                Err(e) => {
                    if e.domain() == guard_core::ErrorDomain::Internal {
                        // Encoding failed: a bug, not the disk. Retrying keeps the no-loss
                        // promise (nothing is committed) while an operator looks.
                        tracing::error!(error = %e, file = %name, "cannot encode quarantine file");
                    }
                    self.store_failed(&e.to_string());
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }
}
