//! The consumer thread: batching, back-pressure by pausing, ordered commits, drain on revoke.

use crate::KafkaGuardError;
use guard_core::{Batch, EnvelopeBuilder, Health, Limits, Record, TopicPartition};
use guard_pipeline::{AckTracker, Finished, FlushSignal};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn};

/// What the source needs to know.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Input topics.
    pub topics: Vec<String>,
    /// Most records per batch.
    pub batch_max_records: usize,
    /// Most bytes (held in memory) per batch, and per poll round.
    pub batch_max_bytes: usize,
    /// Longest a partial batch waits.
    pub batch_max_wait: Duration,
    /// How often durable progress is committed.
    pub commit_interval: Duration,
    /// Longest a drain waits for in-flight batches.
    pub drain_timeout: Duration,
    /// The limits: payloads above `max_bytes` are kept only as a prefix, keys and headers
    /// only up to their limits (the wire sizes are recorded for the checks).
    pub limits: Limits,
    /// Prefix kept of an oversize payload.
    pub oversize_prefix_bytes: usize,
}

/// Least time between two stall probes after unreadable-batch errors.
const STALL_PROBE_EVERY: Duration = Duration::from_secs(3);

/// How long downstream may stay full before the source pauses its partitions.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

struct Shared {
    /// Commit order: only the source touches it (its poll thread and the rebalance callbacks
    /// that run inside poll), so the lock is never contended by the stages.
    tracker: Mutex<AckTracker>,
    /// Batch tokens report finished batches here; the source drains it into the tracker.
    finished_tx: std::sync::mpsc::Sender<Finished>,
    finished_rx: Mutex<std::sync::mpsc::Receiver<Finished>>,
    health: Arc<Health>,
    flush: Arc<FlushSignal>,
    generation: AtomicU64,
    drain_timeout: Duration,
    to_commit: Mutex<HashMap<TopicPartition, i64>>,
    error_log: LogEvery,
}

/// Lets a repeating warning through at most once a second.
#[derive(Debug, Default)]
struct LogEvery(Mutex<Option<Instant>>);

impl LogEvery {
    fn due(&self) -> bool {
        let mut last = lock(&self.0);
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere already; the data (offsets) is still consistent
    // because every critical section is a handful of map updates.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Move the batches the tokens reported finished into the tracker.
    fn take_finished(&self, t: &mut AckTracker) {
        let rx = lock(&self.finished_rx);
        while let Ok(f) = rx.try_recv() {
            t.finish(&f);
        }
    }

    /// Wait (bounded) until everything registered is durable, then commit it synchronously.
    fn drain_and_commit(&self, consumer: &BaseConsumer<GuardContext>, why: &str) {
        let deadline = Instant::now() + self.drain_timeout;
        let started = Instant::now();
        loop {
            let in_flight = {
                let mut t = lock(&self.tracker);
                self.take_finished(&mut t);
                t.in_flight_batches()
            };
            if in_flight == 0 {
                break;
            }
            if Instant::now() >= deadline {
                warn!(
                    in_flight,
                    why, "drain timed out; undrained records will be re-read by the next owner"
                );
                metrics::counter!("guard_kafka_drain_timeouts_total").increment(1);
                break;
            }
            self.flush.set(true);
            std::thread::sleep(Duration::from_millis(5));
        }
        self.flush.set(false);
        self.commit(consumer, CommitMode::Sync);
        info!(
            why,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drained and committed"
        );
    }

    /// Commit every durable position not committed yet. Failed commits stay queued.
    fn commit(&self, consumer: &BaseConsumer<GuardContext>, mode: CommitMode) {
        let (positions, uncommitted) = {
            let mut t = lock(&self.tracker);
            self.take_finished(&mut t);
            let mut pending = lock(&self.to_commit);
            for (tp, o) in t.take_commits() {
                pending.insert(tp, o);
            }
            pending.retain(|tp, _| t.generation(tp).is_some());
            (pending.clone(), t.uncommitted_records())
        };
        metrics::gauge!("guard_kafka_uncommitted_records").set(uncommitted as f64);
        if positions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, o) in &positions {
            if let Err(e) = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*o)) {
                warn!(error = %e, %tp, "cannot build commit list");
            }
        }
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                let mut pending = lock(&self.to_commit);
                for (tp, o) in positions {
                    if pending.get(&tp) == Some(&o) {
                        pending.remove(&tp);
                    }
                    debug!(topic = %tp.topic, partition = tp.partition, offset = o, "committed");
                }
                metrics::counter!("guard_kafka_commits_total").increment(1);
            }
            Err(e) => {
                warn!(error = %e, "offset commit failed; will retry");
                metrics::counter!("guard_kafka_commit_failures_total").increment(1);
                self.health.note_error(format!("offset commit failed: {e}"));
            }
        }
    }
}

/// rdkafka context: reports client errors and runs the drain on revocation.
pub struct GuardContext {
    shared: Arc<Shared>,
}

impl ClientContext for GuardContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // A broken batch repeats its error on every fetch: count each, log a few.
        if self.shared.error_log.due() {
            warn!(error = %error, reason, "kafka client error");
        }
        metrics::counter!("guard_kafka_client_errors_total").increment(1);
        self.shared.health.note_error(format!("kafka: {reason}"));
    }
}

impl ConsumerContext for GuardContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                metrics::counter!("guard_kafka_rebalances_total", "kind" => "revoke").increment(1);
                info!(partitions = tpl.count(), "partitions revoked; draining");
                self.shared.drain_and_commit(consumer, "revoke");
                let mut t = lock(&self.shared.tracker);
                for e in tpl.elements() {
                    t.revoke(&TopicPartition {
                        topic: Arc::from(e.topic()),
                        partition: e.partition(),
                    });
                }
                // Only the revoked partitions lose their generation: with the cooperative
                // protocol the others stay assigned, and their batches keep flowing.
                self.shared.generation.fetch_add(1, Ordering::SeqCst);
                let kept = t.assigned_partitions();
                self.shared.health.set_assigned(kept > 0, kept);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
                self.shared.health.note_error(format!("rebalance error: {e}"));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // librdkafka keeps an application pause on a partition object across assignments
            // (it resets only its own pause flag), so a partition paused before a rebalance would
            // stay silent forever. Start every assignment resumed; the poll loop re-applies its
            // back-pressure state for the new generation.
            if let Err(e) = consumer.resume(tpl) {
                warn!(error = %e, "resume after assignment failed");
            }
            metrics::counter!("guard_kafka_rebalances_total", "kind" => "assign").increment(1);
            // A fresh generation for the partitions in this assignment (all of them with the
            // eager protocol, only the added ones with the cooperative one).
            let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
            let mut t = lock(&self.shared.tracker);
            for e in tpl.elements() {
                t.assign(
                    TopicPartition {
                        topic: Arc::from(e.topic()),
                        partition: e.partition(),
                    },
                    generation,
                );
            }
            let total = t.assigned_partitions();
            metrics::gauge!("guard_kafka_assigned_partitions").set(total as f64);
            info!(
                added = tpl.count(),
                partitions = total,
                generation,
                "partitions assigned"
            );
            self.shared.health.set_assigned(true, total);
        }
    }
}

struct Acc {
    topic: Arc<str>,
    partition: i32,
    generation: u64,
    records: Vec<Record>,
    started: Instant,
    /// Bytes on the wire (key, payload, headers).
    bytes: usize,
    /// Bytes held in memory (bounded copies).
    kept: usize,
}

/// The consumer-group source.
pub struct Source {
    consumer: Arc<BaseConsumer<GuardContext>>,
    shared: Arc<Shared>,
    settings: SourceSettings,
}

impl Source {
    /// Create the consumer and subscribe.
    pub fn new(
        config: &ClientConfig,
        settings: SourceSettings,
        health: Arc<Health>,
        flush: Arc<FlushSignal>,
    ) -> Result<Self, KafkaGuardError> {
        let (finished_tx, finished_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            tracker: Mutex::new(AckTracker::new()),
            finished_tx,
            finished_rx: Mutex::new(finished_rx),
            health,
            flush,
            generation: AtomicU64::new(0),
            drain_timeout: settings.drain_timeout,
            to_commit: Mutex::new(HashMap::new()),
            error_log: LogEvery::default(),
        });
        let consumer: BaseConsumer<GuardContext> = config.create_with_context(GuardContext {
            shared: Arc::clone(&shared),
        })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            shared,
            settings,
        })
    }

    /// A handle usable from other threads for probing.
    pub fn prober(&self) -> Prober {
        Prober {
            consumer: Arc::clone(&self.consumer),
        }
    }

    /// Run the poll loop on a dedicated thread until `shutdown` is set; then hand on what is
    /// buffered, drain, commit and return.
    pub fn spawn(
        self,
        senders: Vec<mpsc::Sender<Batch>>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<JoinHandle<()>, KafkaGuardError> {
        std::thread::Builder::new()
            .name("guard-consumer".into())
            .spawn(move || self.run(&senders, &shutdown))
            .map_err(|e| KafkaGuardError::Thread(e.to_string()))
    }

    fn run(self, senders: &[mpsc::Sender<Batch>], shutdown: &AtomicBool) {
        let mut accs: Vec<Acc> = Vec::new();
        let mut last_commit = Instant::now();
        let mut paused = false;
        let mut blocked_since: Option<Instant> = None;
        let mut seen_generation = self.shared.generation.load(Ordering::SeqCst);
        let mut positions: HashMap<(String, i32), i64> = HashMap::new();
        let mut last_probe = Instant::now();
        let s = &self.settings;
        while !shutdown.load(Ordering::Relaxed) {
            // Downstream full for a short while: wait without polling, so librdkafka keeps its
            // prefetched messages (pausing discards them and resuming re-fetches).
            if let Some(since) = blocked_since {
                if !paused && since.elapsed() < PAUSE_AFTER {
                    std::thread::sleep(Duration::from_millis(1));
                    match self.dispatch_due(&mut accs, senders, false) {
                        Ok(true) => continue,
                        Ok(false) => blocked_since = None,
                        Err(()) => return,
                    }
                }
            }
            let timeout = if accs.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(2)
            };
            let (mut polled, mut polled_bytes) = (0, 0);
            let mut unreadable: Option<String> = None;
            let mut next = self.consumer.poll(timeout);
            while let Some(result) = next {
                match result {
                    Ok(m) => polled_bytes += self.push(&mut accs, &m),
                    Err(e) => self.consume_error(&e, &mut unreadable),
                }
                polled += 1;
                // Hand batches on before holding more than a batch's worth of records.
                if polled >= s.batch_max_records || polled_bytes >= s.batch_max_bytes {
                    break;
                }
                next = self.consumer.poll(Duration::ZERO);
            }
            if let Some(error) = unreadable.take() {
                if last_probe.elapsed() >= STALL_PROBE_EVERY {
                    self.probe_stalls(&mut positions, &error, paused);
                    last_probe = Instant::now();
                }
            }
            let generation = self.shared.generation.load(Ordering::SeqCst);
            if generation != seen_generation {
                // A rebalance happened: keep what was read from partitions still assigned in
                // the same generation, drop the rest (the next owner reads it again).
                seen_generation = generation;
                let t = lock(&self.shared.tracker);
                accs.retain(|a| {
                    let tp = TopicPartition {
                        topic: Arc::clone(&a.topic),
                        partition: a.partition,
                    };
                    t.generation(&tp) == Some(a.generation)
                });
                drop(t);
                if paused {
                    self.set_paused(true);
                }
            }
            let blocked = match self.dispatch_due(&mut accs, senders, false) {
                Ok(blocked) => blocked,
                Err(()) => return,
            };
            // A sustained stall (a failing sink): pause the partitions and keep polling, so the
            // group membership and rebalances are served while memory stays bounded.
            if blocked {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if !paused && since.elapsed() >= PAUSE_AFTER {
                    self.set_paused(true);
                    paused = true;
                }
            } else {
                blocked_since = None;
                if paused {
                    self.set_paused(false);
                    paused = false;
                }
            }
            if last_commit.elapsed() >= s.commit_interval {
                self.shared.commit(&self.consumer, CommitMode::Sync);
                last_commit = Instant::now();
            }
        }
        info!("shutting down: handing on buffered records and draining");
        if paused {
            self.set_paused(false);
        }
        let deadline = Instant::now() + s.drain_timeout;
        while !accs.is_empty() && Instant::now() < deadline {
            match self.dispatch_due(&mut accs, senders, true) {
                Ok(true) => std::thread::sleep(Duration::from_millis(5)),
                Ok(false) => {}
                Err(()) => break,
            }
        }
        self.shared.drain_and_commit(&self.consumer, "shutdown");
        self.consumer.unsubscribe();
    }

    /// Count and log a consume error; remember codec and corrupt-batch errors for the stall
    /// probe (librdkafka re-fetches such a batch forever, so its partition stops).
    fn consume_error(&self, e: &KafkaError, unreadable: &mut Option<String>) {
        use rdkafka::types::RDKafkaErrorCode as C;
        let kind = match e.rdkafka_error_code() {
            Some(C::BadCompression | C::NotImplemented | C::BadMessage | C::InvalidMessage) => {
                *unreadable = Some(e.to_string());
                "unreadable_batch"
            }
            _ => "other",
        };
        if self.shared.error_log.due() {
            warn!(error = %e, kind, "consume error (repeats are counted, logged at most once a second)");
        }
        metrics::counter!("guard_source_errors_total", "kind" => kind).increment(1);
    }

    /// After unreadable-batch errors: find the partitions that made no progress since the last
    /// probe although the broker holds records past their position, and report them on
    /// `/readyz` and in `guard_source_unreadable_partitions` (the error itself does not say
    /// which partition it came from).
    fn probe_stalls(&self, positions: &mut HashMap<(String, i32), i64>, error: &str, paused: bool) {
        if paused {
            return; // back-pressure also stops progress: nothing to conclude
        }
        let Ok(tpl) = self.consumer.position() else { return };
        for e in tpl.elements() {
            let (topic, partition) = (e.topic().to_owned(), e.partition());
            let position = match e.offset() {
                Offset::Offset(o) => o,
                _ => match self
                    .consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(2))
                {
                    // Nothing consumed yet here: it is stuck at its start, if at all.
                    Ok((low, _)) => low,
                    Err(_) => continue,
                },
            };
            let before = positions.insert((topic.clone(), partition), position);
            if before != Some(position) {
                continue;
            }
            let Ok((_, high)) = self
                .consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(2))
            else {
                continue;
            };
            if position < high {
                tracing::error!(
                    topic,
                    partition,
                    offset = position,
                    error,
                    "partition stuck on a batch the consumer cannot read"
                );
                self.shared.health.set_unreadable(guard_core::Unreadable {
                    topic,
                    partition,
                    offset: position,
                    error: error.to_owned(),
                });
            }
        }
        metrics::gauge!("guard_source_unreadable_partitions").set(self.shared.health.unreadable_count() as f64);
    }

    fn set_paused(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            warn!(error = %e, pause, "pause/resume failed");
        }
        metrics::gauge!("guard_source_paused").set(if pause { 1.0 } else { 0.0 });
        debug!(pause, "back-pressure");
    }

    /// Copy `m` (bounded) into its partition's batch; returns the bytes kept in memory.
    fn push(&self, accs: &mut Vec<Acc>, m: &BorrowedMessage<'_>) -> usize {
        let s = &self.settings;
        let payload = m.payload();
        let payload_len = payload.map_or(0, <[u8]>::len);
        let kept = payload.map(|p| {
            if p.len() > s.limits.max_bytes {
                p[..s.oversize_prefix_bytes.min(p.len())].to_vec()
            } else {
                p.to_vec()
            }
        });
        // Keys and headers are producer-controlled too: bounded copies, wire sizes counted,
        // header keys read as bytes (rdkafka's accessors panic on keys that are not UTF-8).
        let mut envelope = EnvelopeBuilder::new(&s.limits);
        let key = envelope.key(m.key());
        if let Err(e) = crate::raw::visit_headers(m, |k, v| envelope.header(k, v)) {
            debug!(error = ?e.0, partition = m.partition(), offset = m.offset(), "header block unreadable");
            envelope.unreadable_headers();
        }
        let (headers, envelope) = envelope.finish();
        let kept_bytes = kept.as_ref().map_or(0, Vec::len)
            + key.as_ref().map_or(0, Vec::len)
            + headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len) + 32)
                .sum::<usize>();
        let record = Record {
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key,
            headers,
            payload: kept,
            payload_len,
            envelope,
        };
        let (topic, partition) = (m.topic(), m.partition());
        self.shared.health.clear_unreadable(topic, partition, m.offset());
        let idx = match accs.iter().position(|a| a.partition == partition && &*a.topic == topic) {
            Some(i) => i,
            None => {
                let topic: Arc<str> = Arc::from(topic);
                let tp = TopicPartition {
                    topic: Arc::clone(&topic),
                    partition,
                };
                let Some(generation) = lock(&self.shared.tracker).generation(&tp) else {
                    // Not (or no longer) assigned here: its owner reads it.
                    return 0;
                };
                accs.push(Acc {
                    topic,
                    partition,
                    generation,
                    records: Vec::with_capacity(s.batch_max_records.min(4096)),
                    started: Instant::now(),
                    bytes: 0,
                    kept: 0,
                });
                accs.len() - 1
            }
        };
        let acc = &mut accs[idx];
        acc.bytes += record.wire_bytes();
        acc.kept += kept_bytes;
        acc.records.push(record);
        kept_bytes
    }

    /// Hand on batches that are full, old enough, or (`all`) any. Returns Ok(true) when some
    /// could not be handed on because downstream is full; Err when downstream is gone.
    fn dispatch_due(&self, accs: &mut Vec<Acc>, senders: &[mpsc::Sender<Batch>], all: bool) -> Result<bool, ()> {
        let s = &self.settings;
        let mut blocked = false;
        let mut i = 0;
        while i < accs.len() {
            let a = &accs[i];
            let due = all
                || a.records.len() >= s.batch_max_records
                || a.kept >= s.batch_max_bytes
                || a.started.elapsed() >= s.batch_max_wait;
            if !due {
                i += 1;
                continue;
            }
            let shard = shard_of(&a.topic, a.partition, senders.len());
            let permit = match senders[shard].try_reserve() {
                Ok(p) => p,
                Err(mpsc::error::TrySendError::Full(())) => {
                    blocked = true;
                    i += 1;
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(())) => {
                    warn!("pipeline closed; source stops");
                    return Err(());
                }
            };
            let a = accs.swap_remove(i);
            let tp = TopicPartition {
                topic: a.topic,
                partition: a.partition,
            };
            let last = a.records.last().map_or(-1, |r| r.offset);
            let n = a.records.len();
            let ack = lock(&self.shared.tracker).register(&tp, a.generation, last, n, &self.shared.finished_tx);
            let Some(ack) = ack else { continue };
            let span = info_span!("dispatch", topic = %tp.topic, partition = tp.partition, first = a.records.first().map_or(-1, |r| r.offset), last);
            let _e = span.enter();
            metrics::counter!("guard_source_records_total", "topic" => tp.topic.to_string()).increment(n as u64);
            metrics::counter!("guard_source_bytes_total", "topic" => tp.topic.to_string()).increment(a.bytes as u64);
            permit.send(Batch {
                tp,
                ack,
                records: a.records,
            });
        }
        Ok(blocked)
    }
}

/// Probes broker reachability from another thread.
#[derive(Clone)]
pub struct Prober {
    consumer: Arc<BaseConsumer<GuardContext>>,
}

impl Prober {
    /// True when broker metadata came back within `timeout` (blocking).
    pub fn probe(&self, timeout: Duration) -> bool {
        self.consumer.fetch_metadata(None, timeout).is_ok()
    }
}

/// Which worker owns a partition; stable so per-partition order holds.
pub fn shard_of(topic: &str, partition: i32, workers: usize) -> usize {
    let h = topic
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    (h.wrapping_add(partition as u64) % workers.max(1) as u64) as usize
}
