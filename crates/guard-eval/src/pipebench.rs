//! Broker-side measures for the benchmarks (`tools passthrough`, `tools latency`): what a
//! plain consume-and-produce loop achieves on the same broker and records as the guard (the
//! pass-through the guard's throughput is compared with), and end-to-end latency from record
//! timestamps.

use crate::EvalError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Copy `count` records from `from` to `to` (payload, key, timestamp, headers; lz4,
/// idempotent) as fast as one consumer and one producer go; gives up after 10 minutes.
/// Returns `{"passthrough_records", "seconds", "records_per_sec"}`.
pub fn passthrough(base: &ClientConfig, from: &str, to: &str, group: &str, count: u64) -> Result<Value, EvalError> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .map_err(EvalError::kafka("creating a consumer"))?;
    assign_all(&consumer, from)?;
    let producer: ThreadedProducer<DefaultProducerContext> = base
        .clone()
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .create()
        .map_err(EvalError::kafka("creating a producer"))?;
    let mut n = 0u64;
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < count && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(EvalError::kafka(format!("consuming {from}")))?;
        started.get_or_insert_with(Instant::now);
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(to);
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(ts) = m.timestamp().to_millis() {
                rec = rec.timestamp(ts);
            }
            if let Some(h) = m.headers() {
                rec = rec.headers(h.detach());
            }
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(EvalError::kafka(format!("producing to {to}"))(e)),
            }
        }
        n += 1;
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(EvalError::kafka(format!("flushing {to}")))?;
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    Ok(json!({
        "passthrough_records": n,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "records_per_sec": (n as f64 / secs.max(1e-9)).round() as u64,
    }))
}

/// Read `count` records of `topic` from the beginning and measure now − record timestamp;
/// gives up after 10 minutes. Returns `{"records", "p50_ms", "p99_ms", "max_ms"}`.
pub fn latency(base: &ClientConfig, topic: &str, count: u64) -> Result<Value, EvalError> {
    let consumer: BaseConsumer = base
        .clone()
        .set("group.id", format!("latency-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(EvalError::kafka("creating a consumer"))?;
    assign_all(&consumer, topic)?;
    let mut lat: Vec<i64> = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(1 << 24));
    let deadline = Instant::now() + Duration::from_secs(600);
    while (lat.len() as u64) < count && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.map_err(EvalError::kafka(format!("consuming {topic}")))?;
        if let Some(ts) = m.timestamp().to_millis() {
            lat.push(guard_core::now_ms() - ts);
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(-1)
    };
    Ok(json!({
        "records": lat.len(),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "max_ms": lat.last().copied().unwrap_or(-1),
    }))
}

/// Read every partition of `topic` from the beginning without joining a group (no join delay).
fn assign_all(consumer: &BaseConsumer, topic: &str) -> Result<(), EvalError> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(EvalError::kafka(format!("metadata of {topic}")))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .map_err(EvalError::kafka(format!("assigning {topic}")))?;
        }
    }
    if tpl.count() == 0 {
        return Err(EvalError::Input(format!("topic {topic} has no partitions")));
    }
    consumer
        .assign(&tpl)
        .map_err(EvalError::kafka(format!("assigning {topic}")))
}
