//! librdkafka client configuration: our safe defaults first, then the user's pass-through
//! properties (so TLS, SASL and tuning work), with the settings the no-loss rule depends on
//! forced last.

use guard_config::Config;
use rdkafka::ClientConfig;

/// Consumer configuration. Auto-commit and auto offset store are always off: offsets are
/// committed only by the guard, only for durable prefixes.
pub fn consumer_config(cfg: &Config) -> ClientConfig {
    let k = &cfg.kafka;
    let plan = cfg.memory_plan();
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (k.session_timeout_ms / 3).max(100).to_string())
        .set("auto.offset.reset", "earliest")
        // Memory: compressed bytes per fetch are small (a compression bomb expands at most
        // by its codec's ratio before the guard sees it), the decompressed queue is bounded,
        // and a batch as large as any a producer may send is still received (README "Memory").
        .set("queued.max.messages.kbytes", plan.queued_max_kbytes.to_string())
        .set("fetch.max.bytes", plan.fetch_max_bytes.to_string())
        .set("max.partition.fetch.bytes", plan.fetch_max_bytes.to_string())
        .set("message.max.bytes", plan.fetch_max_bytes.to_string())
        .set("receive.message.max.bytes", plan.receive_message_max_bytes.to_string())
        .set("fetch.wait.max.ms", "100")
        .set("client.id", format!("ingest-guard-{}", std::process::id()));
    for (key, v) in k.properties.iter().chain(&k.consumer_properties) {
        c.set(key, v);
    }
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// Room above `limits.max_record_bytes` for what the guard adds to a forwarded record (its
/// provenance header: name, topic, partition and offset) and librdkafka's per-message framing.
pub const PRODUCER_HEADROOM: usize = 1024;

/// The clean producer's `message.max.bytes`: the largest record the guard lets pass, plus
/// [`PRODUCER_HEADROOM`], so whatever passes the limits can be handed to the producer.
pub fn producer_message_max_bytes(cfg: &Config) -> usize {
    cfg.limits.max_record_bytes.saturating_add(PRODUCER_HEADROOM)
}

/// Producer configuration for the clean topic: idempotent (no duplicates from retries inside
/// librdkafka, order kept per partition), all in-sync replicas acknowledge.
pub fn producer_config(cfg: &Config) -> ClientConfig {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set(
            "queue.buffering.max.kbytes",
            cfg.memory_plan().producer_queue_kbytes.to_string(),
        )
        .set("compression.type", "lz4")
        .set("message.max.bytes", producer_message_max_bytes(cfg).to_string())
        .set("client.id", format!("ingest-guard-sink-{}", std::process::id()));
    for (key, v) in k.properties.iter().chain(&k.producer_properties) {
        c.set(key, v);
    }
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

/// Configuration for auxiliary clients (admin, the profiles reader): the brokers and the
/// user's shared properties (TLS, SASL), nothing else.
pub fn admin_config(cfg: &Config) -> ClientConfig {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("client.id", format!("ingest-guard-aux-{}", std::process::id()));
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}
