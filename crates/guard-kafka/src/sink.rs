//! The clean sink: passing records go to the output topic with key, headers and timestamp kept.
//!
//! Records are handed to librdkafka from the caller's (worker) thread; each message carries its
//! batch's [`BatchDelivery`] and its input offset as the delivery opaque. librdkafka's delivery
//! callback counts the batch down; the last result runs the batch's completion with the
//! records the broker refused for good ([`Rejected`]), which the caller quarantines before it
//! acknowledges the batch. Errors are sorted into three kinds:
//!
//! * **record errors** (too large, invalid record, bad timestamp): this record can never be
//!   delivered, so it is rejected at once (`sink.rejected`);
//! * **sink errors** (not authorized, unknown topic): retried with back-off while the guard
//!   reports not-ready, and rejected once they have lasted `give_up` (the record is not retried
//!   forever, and not dropped either);
//! * **transient errors** (broker away, timeouts): retried with back-off until they succeed.
//!
//! When the process is shutting down ([`CleanSink::abandon`]), retries stop: those batches are
//! never acknowledged, so their offsets are not committed and the next owner reads them again.

use guard_core::{Header, Health, Record, TopicPartition};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KHeader, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub use guard_pipeline::{OnDelivered, Rejected};

/// How a produce error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// This record can never be delivered: reject it now.
    Record,
    /// The sink is misconfigured or not allowed: retry, reject after `give_up`.
    Sink,
    /// Retry until it works.
    Transient,
}

/// Sort a produce error (from `send` or from a delivery report).
pub fn classify(e: &KafkaError) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTimestamp
            | C::MessageBatchTooLarge
            | C::UnsupportedForMessageFormat
            | C::PolicyViolation
            | C::BadMessage
            | C::InvalidArgument,
        ) => ErrorKind::Record,
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition,
        ) => ErrorKind::Sink,
        _ => ErrorKind::Transient,
    }
}

/// Delivery state of one batch.
pub struct BatchDelivery {
    remaining: AtomicUsize,
    failed: Mutex<Vec<(i64, OwnedMessage)>>,
    rejected: Mutex<Vec<Rejected>>,
    /// When a sink error was first seen for this batch (for `give_up`).
    sink_failing_since: Mutex<Option<Instant>>,
    done: Mutex<Option<OnDelivered>>,
    tp: TopicPartition,
    records: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BatchDelivery {
    fn finish(&self) {
        let rejected = std::mem::take(&mut *lock(&self.rejected));
        let f = lock(&self.done).take();
        if let Some(f) = f {
            f(rejected);
        }
    }
}

/// What librdkafka carries for each message: its batch and its input offset.
pub struct InFlight {
    batch: Arc<BatchDelivery>,
    offset: i64,
}

struct Shared {
    health: Arc<Health>,
    retry: Mutex<Sender<Arc<BatchDelivery>>>,
    provenance_header: Arc<str>,
    give_up: Duration,
    abandon: AtomicBool,
}

impl Shared {
    /// Decide about a failed message: true when it is rejected for good (the caller records
    /// it), false when it is to be retried.
    fn rejects(&self, batch: &BatchDelivery, e: &KafkaError) -> bool {
        match classify(e) {
            ErrorKind::Record => true,
            ErrorKind::Transient => false,
            ErrorKind::Sink => {
                let mut since = lock(&batch.sink_failing_since);
                since.get_or_insert_with(Instant::now).elapsed() >= self.give_up
            }
        }
    }

    fn reject(&self, batch: &BatchDelivery, mut r: Rejected) {
        r.headers.retain(|h| *h.key != *self.provenance_header);
        warn!(topic = %batch.tp.topic, partition = batch.tp.partition, offset = r.offset, error = %r.error, "clean topic refused the record for good; it goes to quarantine (sink.rejected)");
        metrics::counter!("guard_sink_rejected_records_total").increment(1);
        lock(&batch.rejected).push(r);
    }

    /// One message of `batch` has its final result: complete the batch when it was the last.
    fn count_down(&self, batch: Arc<BatchDelivery>) {
        if batch.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let any_failed = !lock(&batch.failed).is_empty();
        if any_failed {
            if self.abandon.load(Ordering::Relaxed) {
                return; // shutting down: never acknowledged, re-read by the next owner
            }
            let _ = lock(&self.retry).send(batch);
        } else {
            self.health.set_clean_sink_failing(false);
            metrics::counter!("guard_sink_delivered_records_total").increment(batch.records as u64);
            batch.finish();
        }
    }
}

/// librdkafka context of the clean producer.
pub struct SinkContext {
    shared: Arc<Shared>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "producer client error");
        self.shared.health.note_error(format!("clean sink: {reason}"));
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<InFlight>;

    fn delivery(&self, result: &DeliveryResult<'_>, inflight: Box<InFlight>) {
        let InFlight { batch, offset } = *inflight;
        if let Err((e, msg)) = result {
            if self.shared.rejects(&batch, e) {
                let mut headers = Vec::new();
                let _ = crate::raw::visit_headers(msg, |k, v| {
                    headers.push(Header {
                        key: String::from_utf8_lossy(k).into_owned(),
                        value: v.map(<[u8]>::to_vec),
                    });
                });
                self.shared.reject(
                    &batch,
                    Rejected {
                        offset,
                        timestamp_ms: msg.timestamp().to_millis(),
                        key: msg.key().map(<[u8]>::to_vec),
                        headers,
                        payload: msg.payload().map(<[u8]>::to_vec),
                        error: e.to_string(),
                    },
                );
            } else {
                let mut failed = lock(&batch.failed);
                if failed.is_empty() {
                    warn!(error = %e, topic = %batch.tp.topic, partition = batch.tp.partition, "delivery failed; will retry");
                }
                failed.push((offset, msg.detach()));
                self.shared.health.set_clean_sink_failing(true);
            }
        }
        self.shared.count_down(batch);
    }
}

/// Produces passing records and reports when the broker has all of a batch.
#[derive(Clone)]
pub struct CleanSink {
    producer: Arc<ThreadedProducer<SinkContext>>,
    topic: Arc<str>,
    shared: Arc<Shared>,
    backoff: Duration,
}

/// How the sink behaves.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Output topic.
    pub topic: String,
    /// Header that carries each record's `topic/partition/offset` (empty: none).
    pub provenance_header: String,
    /// Back-off between retries.
    pub backoff: Duration,
    /// How long sink errors (authorization, unknown topic) are retried before the records are
    /// quarantined with `sink.rejected`.
    pub give_up: Duration,
}

impl CleanSink {
    /// Create the producer and its retry thread.
    pub fn new(
        config: &ClientConfig,
        settings: SinkSettings,
        health: Arc<Health>,
    ) -> Result<Self, crate::KafkaGuardError> {
        let (tx, rx) = channel();
        let shared = Arc::new(Shared {
            health,
            retry: Mutex::new(tx),
            provenance_header: Arc::from(settings.provenance_header.as_str()),
            give_up: settings.give_up,
            abandon: AtomicBool::new(false),
        });
        let producer: ThreadedProducer<SinkContext> = config.create_with_context(SinkContext {
            shared: Arc::clone(&shared),
        })?;
        let sink = Self {
            producer: Arc::new(producer),
            topic: Arc::from(settings.topic.as_str()),
            shared,
            backoff: settings.backoff,
        };
        let retry = sink.clone();
        std::thread::Builder::new()
            .name("guard-sink-retry".into())
            .spawn(move || retry.retry_loop(&rx))
            .map_err(|e| crate::KafkaGuardError::Thread(e.to_string()))?;
        Ok(sink)
    }

    /// Hand every record of a batch to the producer (blocking while its queue is full) and run
    /// `on_delivered` once each has its final result. An empty batch completes at once.
    pub fn send_batch(&self, tp: &TopicPartition, records: &[&Record], on_delivered: OnDelivered) {
        if records.is_empty() {
            on_delivered(Vec::new());
            return;
        }
        let batch = Arc::new(BatchDelivery {
            remaining: AtomicUsize::new(records.len()),
            failed: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
            sink_failing_since: Mutex::new(None),
            done: Mutex::new(Some(on_delivered)),
            tp: tp.clone(),
            records: records.len(),
        });
        let provenance_header = Arc::clone(&self.shared.provenance_header);
        let mut provenance = String::with_capacity(tp.topic.len() + 24);
        for r in records {
            provenance.clear();
            let _ = write!(provenance, "{}/{}/{}", tp.topic, tp.partition, r.offset);
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 1);
            for h in &r.headers {
                // Provenance is the guard's alone: inbound x-guard-* (and the configured
                // provenance header) are forgeries and never reach downstream.
                if guard_core::is_guard_header(&h.key) || *h.key == *provenance_header {
                    metrics::counter!("guard_sink_headers_stripped_total").increment(1);
                    continue;
                }
                headers = headers.insert(KHeader {
                    key: &h.key,
                    value: h.value.as_deref(),
                });
            }
            if !provenance_header.is_empty() {
                headers = headers.insert(KHeader {
                    key: &provenance_header,
                    value: Some(provenance.as_bytes()),
                });
            }
            self.send(
                &batch,
                r.offset,
                r.payload.as_deref(),
                r.key.as_deref(),
                r.timestamp_ms,
                headers,
            );
        }
    }

    /// Produce one message, retrying what is retryable. A message rejected here (by the
    /// producer itself, e.g. over `message.max.bytes`) is counted down at once.
    fn send(
        &self,
        batch: &Arc<BatchDelivery>,
        offset: i64,
        payload: Option<&[u8]>,
        key: Option<&[u8]>,
        ts: Option<i64>,
        headers: OwnedHeaders,
    ) {
        let mut rec: BaseRecord<'_, [u8], [u8], Box<InFlight>> = BaseRecord::with_opaque_to(
            &self.topic,
            Box::new(InFlight {
                batch: Arc::clone(batch),
                offset,
            }),
        );
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(ts) = ts {
            rec = rec.timestamp(ts);
        }
        rec = rec.headers(headers);
        let mut attempt = 0u32;
        loop {
            if self.shared.abandon.load(Ordering::Relaxed) {
                return; // shutting down: never acknowledged, re-read by the next owner
            }
            match self.producer.send(rec) {
                Ok(()) => {
                    if attempt > 2 {
                        self.shared.health.set_clean_sink_failing(false);
                    }
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, back)) => {
                    if self.shared.rejects(batch, &e) {
                        let headers = back
                            .headers
                            .as_ref()
                            .map(|hs| {
                                (0..hs.count())
                                    .filter_map(|i| hs.try_get(i))
                                    .map(|h| Header {
                                        key: h.key.to_owned(),
                                        value: h.value.map(<[u8]>::to_vec),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        self.shared.reject(
                            batch,
                            Rejected {
                                offset,
                                timestamp_ms: ts,
                                key: key.map(<[u8]>::to_vec),
                                headers,
                                payload: payload.map(<[u8]>::to_vec),
                                error: e.to_string(),
                            },
                        );
                        self.shared.count_down(Arc::clone(batch));
                        return;
                    }
                    rec = back;
                    attempt += 1;
                    warn!(error = %e, attempt, "produce refused; retrying");
                    self.shared.health.set_clean_sink_failing(true);
                    std::thread::sleep(self.backoff * attempt.min(10));
                }
            }
        }
    }

    fn retry_loop(&self, rx: &Receiver<Arc<BatchDelivery>>) {
        while let Ok(batch) = rx.recv() {
            let failed = std::mem::take(&mut *lock(&batch.failed));
            metrics::counter!("guard_sink_retries_total").increment(failed.len() as u64);
            std::thread::sleep(self.backoff);
            if self.shared.abandon.load(Ordering::Relaxed) {
                continue;
            }
            info!(records = failed.len(), topic = %batch.tp.topic, partition = batch.tp.partition, "re-sending failed deliveries");
            batch.remaining.store(failed.len(), Ordering::Release);
            for (offset, m) in failed {
                let headers = m
                    .headers()
                    .cloned()
                    .unwrap_or_else(|| OwnedHeaders::new_with_capacity(0));
                self.send(&batch, offset, m.payload(), m.key(), m.timestamp().to_millis(), headers);
            }
        }
    }

    /// Stop retrying (shutdown): batches not delivered yet are never acknowledged, so their
    /// offsets stay uncommitted and are read again by the next owner.
    pub fn abandon(&self) {
        self.shared.abandon.store(true, Ordering::Relaxed);
    }

    /// Wait for outstanding deliveries (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            warn!(error = %e, "producer flush incomplete");
        }
    }
}

impl guard_pipeline::CleanOut for CleanSink {
    fn send_batch(&self, tp: &TopicPartition, records: &[&Record], on_delivered: OnDelivered) {
        CleanSink::send_batch(self, tp, records, on_delivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted() {
        let p = |c| KafkaError::MessageProduction(c);
        assert_eq!(classify(&p(RDKafkaErrorCode::MessageSizeTooLarge)), ErrorKind::Record);
        assert_eq!(classify(&p(RDKafkaErrorCode::InvalidRecord)), ErrorKind::Record);
        assert_eq!(
            classify(&p(RDKafkaErrorCode::TopicAuthorizationFailed)),
            ErrorKind::Sink
        );
        assert_eq!(classify(&p(RDKafkaErrorCode::UnknownTopicOrPartition)), ErrorKind::Sink);
        assert_eq!(classify(&p(RDKafkaErrorCode::MessageTimedOut)), ErrorKind::Transient);
        assert_eq!(
            classify(&p(RDKafkaErrorCode::BrokerTransportFailure)),
            ErrorKind::Transient
        );
    }
}
