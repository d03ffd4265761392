//! The broker side of releasing quarantined records (the review's `Publisher`): an
//! idempotent producer (acks=all) that waits for each acknowledgement, and a plain consumer
//! (no group, no commits) to read end offsets and to look for a release that was interrupted
//! between the produce and its audit line.

use crate::KafkaGuardError;
use guard_config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Broker calls give up after this long.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The search for an interrupted release reads for at most this long.
const FIND_DEADLINE: Duration = Duration::from_secs(30);

/// One record to produce again, as it was consumed, with headers added.
pub struct Republish<'a> {
    /// Key.
    pub key: Option<&'a [u8]>,
    /// Payload (`None`: a null payload).
    pub payload: Option<&'a [u8]>,
    /// Original timestamp (ms), kept.
    pub timestamp_ms: Option<i64>,
    /// Headers in order: the original ones, then the release's.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// The release producer and its lookup consumer.
pub struct ReleaseClient {
    producer: FutureProducer,
    aux: ClientConfig,
}

impl ReleaseClient {
    /// Clients with the guard's producer and admin settings (security included).
    pub fn new(cfg: &Config) -> Result<Self, KafkaGuardError> {
        let mut pc = crate::producer_config(cfg);
        pc.set("client.id", format!("ingest-guard-review-{}", std::process::id()));
        Ok(Self {
            producer: pc.create()?,
            aux: crate::admin_config(cfg),
        })
    }

    /// The topic's end offsets per partition now.
    pub fn end_offsets(&self, topic: &str) -> Result<Vec<(i32, i64)>, KafkaGuardError> {
        let c: BaseConsumer = self.aux.create()?;
        let md = c.fetch_metadata(Some(topic), TIMEOUT)?;
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if parts.is_empty() {
            return Err(KafkaGuardError::Topic(format!(
                "topic {topic} has no partitions (does it exist?)"
            )));
        }
        parts
            .into_iter()
            .map(|p| Ok((p, c.fetch_watermarks(topic, p, TIMEOUT)?.1)))
            .collect()
    }

    /// Produce `r` to `topic` and wait for the broker's acknowledgement: where it landed.
    /// Call it from a blocking thread, never an async worker.
    pub fn publish(&self, topic: &str, r: &Republish<'_>) -> Result<(i32, i64), KafkaGuardError> {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (key, value) in &r.headers {
            headers = headers.insert(Header { key, value: *value });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(p) = r.payload {
            rec = rec.payload(p);
        }
        if let Some(k) = r.key {
            rec = rec.key(k);
        }
        if let Some(ts) = r.timestamp_ms {
            rec = rec.timestamp(ts);
        }
        let send = self.producer.send(rec, rdkafka::util::Timeout::After(TIMEOUT));
        let delivered = match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(send),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| KafkaGuardError::Thread(e.to_string()))?
                .block_on(send),
        };
        delivered
            .map(|d| (d.partition, d.offset))
            .map_err(|(e, _)| KafkaGuardError::Client(e))
    }

    /// Look in `topic` from `since` (end offsets logged before a release) to the end for a
    /// record whose `header` equals `value`: where it is. Headers are read as bytes, so a
    /// key that is not UTF-8 cannot break the search.
    pub fn find(
        &self,
        topic: &str,
        since: &[(i32, i64)],
        header: &str,
        value: &str,
    ) -> Result<Option<(i32, i64)>, KafkaGuardError> {
        let c: BaseConsumer = self
            .aux
            .clone()
            .set("enable.auto.commit", "false")
            .set("group.id", "ingest-guard-review-find")
            .create()?;
        let ends = self.end_offsets(topic)?;
        let mut tpl = TopicPartitionList::new();
        let mut remaining = 0usize;
        for (p, end) in &ends {
            let from = since.iter().find(|(q, _)| q == p).map_or(0, |(_, o)| *o);
            if from < *end {
                tpl.add_partition_offset(topic, *p, Offset::Offset(from))?;
                remaining += 1;
            }
        }
        if remaining == 0 {
            return Ok(None);
        }
        c.assign(&tpl)?;
        let deadline = Instant::now() + FIND_DEADLINE;
        let mut done = std::collections::HashSet::new();
        while done.len() < remaining && Instant::now() < deadline {
            let Some(m) = c.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m?;
            let mut found = false;
            let _ = crate::visit_headers(&m, |k, v| {
                found |= k == header.as_bytes() && v == Some(value.as_bytes());
            });
            if found {
                return Ok(Some((m.partition(), m.offset())));
            }
            let end = ends.iter().find(|(p, _)| *p == m.partition()).map_or(0, |(_, e)| *e);
            if m.offset() + 1 >= end {
                done.insert(m.partition());
            }
        }
        if done.len() < remaining {
            return Err(KafkaGuardError::Topic(format!(
                "{topic} could not be read to its end in {} s",
                FIND_DEADLINE.as_secs()
            )));
        }
        Ok(None)
    }
}
