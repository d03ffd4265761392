//! Keyed side topics, off the record path: the drift events topic (keyed `topic/feature`)
//! and the compacted profiles topic (keyed `group/topic/partition`), which instances of one
//! group read back to answer for the whole group. This module moves keyed bytes; what they
//! mean (events, partition views) belongs to the caller.

use crate::KafkaGuardError;
use guard_config::Config;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long librdkafka may retry one keyed message before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Create side topics when missing: `plain` with one partition, `compacted` with
/// `cleanup.policy=compact`. Topics made by operators are left as they are; a failure is
/// logged, not fatal (the produce will tell).
pub async fn ensure_side_topics(cfg: &Config, plain: Option<&str>, compacted: Option<&str>) {
    let mut topics = Vec::new();
    if let Some(t) = plain {
        topics.push(NewTopic::new(t, 1, TopicReplication::Fixed(1)));
    }
    if let Some(t) = compacted {
        topics.push(NewTopic::new(t, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact"));
    }
    if topics.is_empty() {
        return;
    }
    match crate::create_topics(&crate::admin_config(cfg), &topics).await {
        Ok(results) => {
            for (topic, r) in results {
                match r {
                    Ok(true) => info!(topic, "side topic created"),
                    Ok(false) => {}
                    Err(error) => warn!(topic, error, "cannot create side topic"),
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot create side topics"),
    }
}

/// A producer of keyed documents to one topic (librdkafka retries inside its message
/// timeout; what fails after that is returned to the caller to count).
pub struct KeyedPublisher {
    producer: FutureProducer,
    topic: String,
}

impl KeyedPublisher {
    /// A publisher to `topic` with the guard's producer settings (security included).
    pub fn new(cfg: &Config, topic: &str) -> Result<Self, KafkaGuardError> {
        Ok(Self {
            producer: crate::producer_config(cfg).create()?,
            topic: topic.to_owned(),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Send one keyed document and wait for the broker's acknowledgement.
    pub async fn send(&self, key: &str, body: &[u8]) -> Result<(), KafkaGuardError> {
        self.producer
            .send(FutureRecord::to(&self.topic).key(key).payload(body), SEND_TIMEOUT)
            .await
            .map(|_| debug!(key, bytes = body.len(), topic = self.topic, "keyed document published"))
            .map_err(|(e, _)| KafkaGuardError::Client(e))
    }
}

/// Every `interval`, and once more when `stop` is set, send the keyed documents `take` hands
/// out; those that fail go to `failed` (to count, or to hand out again).
pub async fn publish_loop(
    publisher: KeyedPublisher,
    interval: Duration,
    stop: Arc<AtomicBool>,
    take: impl Fn() -> Vec<(String, Vec<u8>)>,
    failed: impl Fn(Vec<(String, Vec<u8>)>),
) {
    loop {
        let last = stop.load(Ordering::Relaxed);
        let mut lost = Vec::new();
        for (key, body) in take() {
            if let Err(e) = publisher.send(&key, &body).await {
                warn!(error = %e, key, topic = publisher.topic(), "keyed document not published");
                lost.push((key, body));
            }
        }
        if !lost.is_empty() {
            failed(lost);
        }
        if last {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

/// Follow a compacted topic from the beginning on its own thread until `stop`: `put` gets
/// every record's key and payload (`None`: a tombstone). Records without a UTF-8 key are
/// skipped. The reader uses the group id `<kafka.group_id>.<reader>` and never commits.
pub fn follow_compacted(
    cfg: &Config,
    topic: &str,
    reader: &str,
    stop: Arc<AtomicBool>,
    mut put: impl FnMut(&str, Option<&[u8]>) + Send + 'static,
) -> Result<(), KafkaGuardError> {
    let mut c: ClientConfig = crate::admin_config(cfg);
    c.set("group.id", format!("{}.{reader}", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100");
    let consumer: BaseConsumer = c.create()?;
    let topic = topic.to_owned();
    std::thread::Builder::new()
        .name(format!("guard-{reader}"))
        .spawn(move || {
            let mut assigned = false;
            while !stop.load(Ordering::Relaxed) {
                if !assigned {
                    assigned = assign_all(&consumer, &topic);
                    if !assigned {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    continue;
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) => {
                        if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                            put(key, m.payload());
                        }
                    }
                    Some(Err(e)) => debug!(error = %e, topic, "side topic poll"),
                    None => {}
                }
            }
        })
        .map_err(|e| KafkaGuardError::Thread(e.to_string()))?;
    Ok(())
}

/// Assign every partition of `topic` from the beginning; false when it has none yet.
fn assign_all(consumer: &BaseConsumer, topic: &str) -> bool {
    let parts: Vec<i32> = match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
        Ok(md) => md
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect(),
        Err(e) => {
            debug!(error = %e, topic, "side topic metadata");
            return false;
        }
    };
    let mut tpl = TopicPartitionList::new();
    for p in &parts {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Beginning);
    }
    let ok = !parts.is_empty() && consumer.assign(&tpl).is_ok();
    if ok {
        info!(topic, partitions = parts.len(), "following side topic");
    }
    ok
}
