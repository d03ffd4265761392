//! librdkafka client configuration: our safe defaults first, then the user's pass-through
//! properties (so TLS, SASL and tuning work), with the settings the no-loss rule depends on
//! forced last.

use guard_config::Config;
use rdkafka::ClientConfig;

/// Consumer configuration. Auto-commit and auto offset store are always off: offsets are
/// committed only by the guard, only for durable prefixes.
pub fn consumer_config(cfg: &Config) -> ClientConfig {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", (k.session_timeout_ms / 3).max(100).to_string())
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", k.queued_max_kbytes.to_string())
        .set("fetch.wait.max.ms", "100")
        .set("client.id", format!("ingest-guard-{}", std::process::id()));
    for (key, v) in k.properties.iter().chain(&k.consumer_properties) {
        c.set(key, v);
    }
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    c
}

/// Producer configuration for the clean topic: idempotent (no duplicates from retries inside
/// librdkafka, order kept per partition), all in-sync replicas acknowledge.
pub fn producer_config(cfg: &Config) -> ClientConfig {
    let k = &cfg.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("compression.type", "lz4")
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
