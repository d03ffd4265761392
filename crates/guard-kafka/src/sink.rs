//! The clean sink: passing records go to the output topic with key, headers and timestamp kept.

use guard_core::{Health, Record, TopicPartition};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// Produces passing records and waits until the broker has them.
#[derive(Clone)]
pub struct CleanSink {
    producer: FutureProducer,
    topic: Arc<str>,
    provenance_header: Arc<str>,
    health: Arc<Health>,
    backoff: Duration,
}

impl CleanSink {
    /// Create the producer.
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        provenance_header: &str,
        health: Arc<Health>,
        backoff: Duration,
    ) -> Result<Self, crate::KafkaGuardError> {
        Ok(Self {
            producer: config.create()?,
            topic: Arc::from(topic),
            provenance_header: Arc::from(provenance_header),
            health,
            backoff,
        })
    }

    /// Deliver every record; returns only when the broker has acknowledged all of them.
    /// Failed deliveries are retried with back-off for as long as it takes, so a dead broker
    /// stalls the pipeline (and back-pressure pauses the consumer) instead of losing records.
    pub async fn deliver(&self, tp: &TopicPartition, records: &[Record]) {
        let mut todo: Vec<usize> = (0..records.len()).collect();
        let mut attempt = 0u32;
        while !todo.is_empty() {
            let mut futures = Vec::with_capacity(todo.len());
            for &i in &todo {
                futures.push((i, self.enqueue(tp, &records[i]).await));
            }
            let mut failed = Vec::new();
            for (i, fut) in futures {
                match fut.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        failed.push(i);
                        if failed.len() == 1 {
                            warn!(error = %e, topic = %tp.topic, partition = tp.partition, offset = records[i].offset, "delivery failed; retrying");
                            self.health.note_error(format!("clean sink: {e}"));
                        }
                    }
                    Err(_canceled) => failed.push(i),
                }
            }
            let delivered = todo.len() - failed.len();
            metrics::counter!("guard_sink_delivered_records_total").increment(delivered as u64);
            if failed.is_empty() {
                if attempt > 0 {
                    self.health.set_clean_sink_failing(false);
                }
                return;
            }
            attempt += 1;
            metrics::counter!("guard_sink_retries_total").increment(failed.len() as u64);
            self.health.set_clean_sink_failing(true);
            tokio::time::sleep(self.backoff * attempt.min(10)).await;
            todo = failed;
        }
    }

    async fn enqueue(&self, tp: &TopicPartition, r: &Record) -> rdkafka::producer::DeliveryFuture {
        let provenance = format!("{}/{}/{}", tp.topic, tp.partition, r.offset);
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len() + 1);
            for h in &r.headers {
                headers = headers.insert(Header { key: &h.key, value: h.value.as_deref() });
            }
            if !self.provenance_header.is_empty() {
                headers = headers.insert(Header { key: &self.provenance_header, value: Some(provenance.as_bytes()) });
            }
            let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(p) = r.payload.as_deref() {
                rec = rec.payload(p);
            }
            if let Some(k) = r.key.as_deref() {
                rec = rec.key(k);
            }
            if let Some(ts) = r.timestamp_ms {
                rec = rec.timestamp(ts);
            }
            match self.producer.send_result(rec) {
                Ok(f) => return f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => {
                    warn!(error = %e, "produce refused; retrying");
                    self.health.set_clean_sink_failing(true);
                    tokio::time::sleep(self.backoff).await;
                }
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
