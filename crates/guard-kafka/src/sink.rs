//! The clean sink: passing records go to the output topic with key, headers and timestamp kept.
//!
//! Records are handed to librdkafka from the caller's (worker) thread; each batch carries a
//! [`BatchDelivery`] as the delivery opaque. librdkafka's delivery callback counts it down; the
//! last acknowledgement runs the batch's completion (which acknowledges the batch to the
//! commit tracker). Failed deliveries are kept (as owned messages) and re-sent by a retry thread
//! with back-off until the broker takes them: a record is never dropped because the broker was
//! away. No future or task per record: this path runs at the client library's speed.

use guard_core::{Health, Record, TopicPartition};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// Runs once when every record of a batch is acknowledged by the broker.
pub type OnDelivered = Box<dyn FnOnce() + Send>;

/// Delivery state of one batch.
pub struct BatchDelivery {
    remaining: AtomicUsize,
    failed: Mutex<Vec<OwnedMessage>>,
    done: Mutex<Option<OnDelivered>>,
    tp: TopicPartition,
    records: usize,
}

impl BatchDelivery {
    fn finish(&self) {
        let f = self.done.lock().ok().and_then(|mut d| d.take());
        if let Some(f) = f {
            f();
        }
    }
}

/// librdkafka context of the clean producer.
pub struct SinkContext {
    health: Arc<Health>,
    retry: Mutex<Sender<Arc<BatchDelivery>>>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %error, reason, "producer client error");
        self.health.note_error(format!("clean sink: {reason}"));
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Arc<BatchDelivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: Arc<BatchDelivery>) {
        if let Err((e, msg)) = result {
            if let Ok(mut failed) = batch.failed.lock() {
                if failed.is_empty() {
                    warn!(error = %e, topic = %batch.tp.topic, partition = batch.tp.partition, "delivery failed; will retry");
                }
                failed.push(msg.detach());
            }
            self.health.set_clean_sink_failing(true);
        }
        if batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let any_failed = batch.failed.lock().map(|f| !f.is_empty()).unwrap_or(false);
            if any_failed {
                if let Ok(tx) = self.retry.lock() {
                    let _ = tx.send(batch);
                }
            } else {
                self.health.set_clean_sink_failing(false);
                metrics::counter!("guard_sink_delivered_records_total").increment(batch.records as u64);
                batch.finish();
            }
        }
    }
}

/// Produces passing records and reports when the broker has all of a batch.
#[derive(Clone)]
pub struct CleanSink {
    producer: Arc<ThreadedProducer<SinkContext>>,
    topic: Arc<str>,
    provenance_header: Arc<str>,
    health: Arc<Health>,
    backoff: Duration,
}

impl CleanSink {
    /// Create the producer and its retry thread.
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        provenance_header: &str,
        health: Arc<Health>,
        backoff: Duration,
    ) -> Result<Self, crate::KafkaGuardError> {
        let (tx, rx) = channel();
        let producer: ThreadedProducer<SinkContext> = config.create_with_context(SinkContext {
            health: Arc::clone(&health),
            retry: Mutex::new(tx),
        })?;
        let sink = Self {
            producer: Arc::new(producer),
            topic: Arc::from(topic),
            provenance_header: Arc::from(provenance_header),
            health,
            backoff,
        };
        let retry = sink.clone();
        std::thread::Builder::new()
            .name("guard-sink-retry".into())
            .spawn(move || retry.retry_loop(&rx))
            .map_err(|e| crate::KafkaGuardError::Thread(e.to_string()))?;
        Ok(sink)
    }

    /// Hand every record of a batch to the producer (blocking while its queue is full) and run
    /// `on_delivered` once the broker has acknowledged all of them. An empty batch completes at once.
    pub fn send_batch(&self, tp: &TopicPartition, records: &[&Record], on_delivered: OnDelivered) {
        if records.is_empty() {
            on_delivered();
            return;
        }
        let batch = Arc::new(BatchDelivery {
            remaining: AtomicUsize::new(records.len()),
            failed: Mutex::new(Vec::new()),
            done: Mutex::new(Some(on_delivered)),
            tp: tp.clone(),
            records: records.len(),
        });
        let mut provenance = String::with_capacity(tp.topic.len() + 24);
        for r in records {
            provenance.clear();
            let _ = write!(provenance, "{}/{}/{}", tp.topic, tp.partition, r.offset);
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 1);
            for h in &r.headers {
                headers = headers.insert(Header {
                    key: &h.key,
                    value: h.value.as_deref(),
                });
            }
            if !self.provenance_header.is_empty() {
                headers = headers.insert(Header {
                    key: &self.provenance_header,
                    value: Some(provenance.as_bytes()),
                });
            }
            self.send(
                BaseRecord::with_opaque_to(&self.topic, Arc::clone(&batch)),
                r.payload.as_deref(),
                r.key.as_deref(),
                r.timestamp_ms,
                headers,
            );
        }
    }

    fn send<'a>(
        &self,
        mut rec: BaseRecord<'a, [u8], [u8], Arc<BatchDelivery>>,
        payload: Option<&'a [u8]>,
        key: Option<&'a [u8]>,
        ts: Option<i64>,
        headers: OwnedHeaders,
    ) {
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
            match self.producer.send(rec) {
                Ok(()) => {
                    if attempt > 2 {
                        self.health.set_clean_sink_failing(false);
                    }
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, back)) => {
                    rec = back;
                    attempt += 1;
                    warn!(error = %e, "produce refused; retrying");
                    self.health.set_clean_sink_failing(true);
                    std::thread::sleep(self.backoff * attempt.min(10));
                }
            }
        }
    }

    fn retry_loop(&self, rx: &Receiver<Arc<BatchDelivery>>) {
        while let Ok(batch) = rx.recv() {
            let failed = batch
                .failed
                .lock()
                .map(|mut f| std::mem::take(&mut *f))
                .unwrap_or_default();
            metrics::counter!("guard_sink_retries_total").increment(failed.len() as u64);
            std::thread::sleep(self.backoff);
            info!(records = failed.len(), topic = %batch.tp.topic, partition = batch.tp.partition, "re-sending failed deliveries");
            batch.remaining.store(failed.len(), Ordering::Release);
            for m in failed {
                let headers = m
                    .headers()
                    .cloned()
                    .unwrap_or_else(|| OwnedHeaders::new_with_capacity(0));
                self.send(
                    BaseRecord::with_opaque_to(&self.topic, Arc::clone(&batch)),
                    m.payload(),
                    m.key(),
                    m.timestamp().to_millis(),
                    headers,
                );
            }
        }
    }

    /// Wait for outstanding deliveries (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            warn!(error = %e, "producer flush incomplete");
        }
    }
}
