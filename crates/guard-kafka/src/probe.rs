//! `ingest-guard check --connect`: one metadata request with the guard's own client settings,
//! and when it fails, a cause an operator can act on. librdkafka reports connection problems
//! through its error and log callbacks, not through the failed request ("Broker transport
//! failure"), so the probe listens to both and classifies what it hears. A certificate that
//! does not verify is probed once more without host-name verification, to tell an untrusted
//! CA from a certificate issued for another name. Messages never carry secret values.

use guard_config::Config;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};
use std::sync::Mutex;
use std::time::Duration;

/// librdkafka's version and the features compiled into it (`builtin.features`: `ssl`,
/// `sasl_scram`, codecs, ...), for `check`.
pub fn librdkafka_features() -> String {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    format!("librdkafka {version} ({features})")
}

/// Why the broker could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectProblem {
    /// What went wrong, in the operator's terms, with the setting to look at.
    pub cause: ConnectCause,
    /// librdkafka's own words (secret values removed), for the record.
    pub detail: String,
}

/// The causes the probe tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCause {
    /// The broker's certificate does not chain to a CA the client trusts.
    UntrustedCertificate,
    /// The certificate chains to a trusted CA but is issued for another host name.
    HostnameMismatch,
    /// The client speaks TLS to a plaintext listener.
    TlsToPlaintext,
    /// The client speaks plaintext to a TLS listener.
    PlaintextToTls,
    /// The broker refused the SASL credentials (or the mechanism).
    SaslRefused,
    /// The broker requires SASL and the client does not use it.
    SaslRequired,
    /// The broker asked for a client certificate.
    ClientCertificateRequired,
    /// Nothing accepts connections at the address (or it cannot be resolved).
    Unreachable,
    /// Anything else.
    Other,
}

impl ConnectProblem {
    /// One line for `check`: the cause, the advice, and librdkafka's words.
    pub fn message(&self, cfg: &Config) -> String {
        let p = &cfg.kafka.properties;
        let get = |k: &str| p.get(k).map(String::as_str);
        let protocol = get("security.protocol").unwrap_or("plaintext");
        let ca = get("ssl.ca.location").unwrap_or("the system's CA bundle");
        let advice = match self.cause {
            ConnectCause::UntrustedCertificate => format!(
                "TLS: the broker's certificate is not signed by a CA this client trusts (ssl.ca.location = {ca}); point ssl.ca.location at the CA that issued the broker's certificate"
            ),
            ConnectCause::HostnameMismatch => format!(
                "TLS: the broker's certificate is valid but issued for another host name than the one in kafka.brokers ({}); use the name the certificate was issued for",
                cfg.kafka.brokers
            ),
            ConnectCause::TlsToPlaintext => format!(
                "TLS: security.protocol is {protocol} but the broker's listener speaks plaintext; use PLAINTEXT or SASL_PLAINTEXT, or the broker's TLS port"
            ),
            ConnectCause::PlaintextToTls => format!(
                "security.protocol is {protocol} but the broker's listener expects TLS (it closed the connection at the first request); use SSL or SASL_SSL"
            ),
            ConnectCause::SaslRefused => format!(
                "SASL: the broker refused the mechanism or the credentials (mechanism {}, user {}); check sasl.mechanisms, sasl.username and the password",
                get("sasl.mechanisms").or(get("sasl.mechanism")).unwrap_or("GSSAPI"),
                get("sasl.username").map_or_else(|| "(none)".to_owned(), |u| format!("{u:?}"))
            ),
            ConnectCause::SaslRequired => format!(
                "security.protocol is {protocol} but the broker requires SASL authentication; use SASL_SSL or SASL_PLAINTEXT with sasl.mechanisms"
            ),
            ConnectCause::ClientCertificateRequired => {
                "TLS: the broker requires a client certificate; set ssl.certificate.location and ssl.key.location".into()
            }
            ConnectCause::Unreachable => format!("cannot connect to {}", cfg.kafka.brokers),
            ConnectCause::Other => format!("cannot use {}", cfg.kafka.brokers),
        };
        format!("{advice} (librdkafka: {})", self.detail)
    }
}

/// Collects what librdkafka says while the probe runs.
#[derive(Default)]
struct Heard {
    lines: Mutex<Vec<String>>,
}

impl Heard {
    fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if l.len() < 64 && !l.contains(&line) {
            l.push(line);
        }
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl ClientContext for Heard {
    fn log(&self, level: RDKafkaLogLevel, _fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.push(message.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.push(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Heard {}

/// Ask the brokers for metadata with the guard's consumer settings; `Err` says why not.
pub fn probe(cfg: &Config, timeout: Duration) -> Result<(), ConnectProblem> {
    let secrets = secret_values(cfg);
    let first = attempt(crate::consumer_config(cfg), timeout, &secrets);
    let Err((cause, detail)) = first else {
        return Ok(());
    };
    let refused = ["Connection refused", "Failed to resolve", "Name or service not known"]
        .iter()
        .any(|n| detail.contains(n));
    let cause = if matches!(cause, ConnectCause::Other) || (cause == ConnectCause::Unreachable && !refused) {
        // librdkafka often says only "all brokers down" when the two ends disagree about TLS
        // or SASL: ask the first bootstrap address ourselves whether it speaks plain Kafka.
        mismatch(cfg).unwrap_or(cause)
    } else {
        cause
    };
    let cause = if cause == ConnectCause::UntrustedCertificate && verifies_hostname(cfg) {
        // Does it verify when the name is not checked? Then only the name is wrong.
        let mut relaxed = crate::consumer_config(cfg);
        relaxed.set("ssl.endpoint.identification.algorithm", "none");
        match attempt(relaxed, timeout, &secrets) {
            Err((ConnectCause::UntrustedCertificate, _)) => ConnectCause::UntrustedCertificate,
            _ => ConnectCause::HostnameMismatch,
        }
    } else {
        cause
    };
    Err(ConnectProblem { cause, detail })
}

/// A TLS/plaintext or SASL mismatch, told from whether the first bootstrap address answers
/// a plaintext Kafka `ApiVersions` request.
fn mismatch(cfg: &Config) -> Option<ConnectCause> {
    let protocol = cfg
        .kafka
        .properties
        .iter()
        .chain(&cfg.kafka.consumer_properties)
        .filter(|(k, _)| *k == "security.protocol")
        .map(|(_, v)| v.to_ascii_uppercase())
        .next_back()
        .unwrap_or_else(|| "PLAINTEXT".into());
    let first = cfg.kafka.brokers.split(',').next()?.trim();
    let first = first.rsplit_once("://").map_or(first, |(_, a)| a);
    let plain = speaks_plain_kafka(first, Duration::from_secs(3))?;
    let tls = protocol.ends_with("SSL");
    match (tls, plain, protocol.starts_with("SASL")) {
        (true, true, _) => Some(ConnectCause::TlsToPlaintext),
        (false, false, _) => Some(ConnectCause::PlaintextToTls),
        // The listener speaks what the client speaks and still refuses: SASL is missing.
        (_, _, false) => Some(ConnectCause::SaslRequired),
        _ => None,
    }
}

/// Whether `addr` answers a Kafka `ApiVersions` v0 request sent in plaintext with a response
/// carrying the request's correlation id. `None`: it cannot be reached at all.
fn speaks_plain_kafka(addr: &str, timeout: Duration) -> Option<bool> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let sock = addr.to_socket_addrs().ok()?.next()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    const CORRELATION: i32 = 0x1d_c0de;
    let client = b"ingest-guard-check";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&CORRELATION.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    let mut req = (body.len() as i32).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    if s.write_all(&req).is_err() {
        return Some(false);
    }
    let mut head = [0u8; 8];
    Some(match s.read_exact(&mut head) {
        Ok(()) => head[4..8] == CORRELATION.to_be_bytes(),
        Err(_) => false,
    })
}

fn verifies_hostname(cfg: &Config) -> bool {
    !cfg.kafka
        .properties
        .iter()
        .chain(&cfg.kafka.consumer_properties)
        .any(|(k, v)| k == "ssl.endpoint.identification.algorithm" && v.eq_ignore_ascii_case("none"))
}

/// Values that must not appear in a message: passwords, keys, tokens, secrets. Not every
/// `sasl.*` value is one (the mechanism, the user name).
fn secret_values(cfg: &Config) -> Vec<String> {
    let k = &cfg.kafka;
    k.properties
        .iter()
        .chain(&k.consumer_properties)
        .chain(&k.producer_properties)
        .filter(|(key, v)| guard_config::is_secret_property(key) && !v.is_empty())
        .map(|(_, v)| v.clone())
        .collect()
}

fn attempt(mut config: ClientConfig, timeout: Duration, secrets: &[String]) -> Result<(), (ConnectCause, String)> {
    // One try per broker is enough to hear why, and keeps `check` quick.
    // A TLS client talking to a plaintext listener waits for a handshake answer that never
    // comes: cap that wait so it is reported rather than left to the 30 s default.
    config
        .set("socket.connection.setup.timeout.ms", "4000")
        .set("reconnect.backoff.ms", "2000")
        .set("reconnect.backoff.max.ms", "2000")
        .set("log.connection.close", "true")
        .set_log_level(RDKafkaLogLevel::Warning);
    let consumer: BaseConsumer<Heard> = config
        .create_with_context(Heard::default())
        .map_err(|e| (ConnectCause::Other, guard_config::redact(&e.to_string(), secrets)))?;
    // Errors and logs arrive as events, served by polling: ask for metadata in short steps
    // and listen in between, stopping as soon as a cause is clear.
    let deadline = std::time::Instant::now() + timeout;
    let mut lines = Vec::new();
    loop {
        let step = deadline
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_millis(1000));
        let result = consumer.fetch_metadata(None, step);
        // An unsubscribed consumer's poll serves only events (errors, logs): drain them.
        for _ in 0..256 {
            if consumer.poll(Duration::from_millis(10)).is_none() {
                break;
            }
        }
        if result.is_ok() {
            return Ok(());
        }
        lines.extend(consumer.context().take());
        let out_of_time = std::time::Instant::now() >= deadline;
        let all_down = lines.iter().any(|l| l.contains("brokers are down"));
        if out_of_time || all_down || classify(&lines) != ConnectCause::Other {
            if let Err(e) = result {
                lines.push(e.to_string());
            }
            break;
        }
    }
    let cause = classify(&lines);
    let detail = lines
        .iter()
        .find(|l| classify(std::slice::from_ref(l)) == cause)
        .or(lines.first())
        .cloned()
        .unwrap_or_default();
    Err((cause, guard_config::redact(&detail, secrets)))
}

/// The cause librdkafka's messages point at, most specific first.
pub fn classify(lines: &[String]) -> ConnectCause {
    let any = |needles: &[&str]| {
        lines.iter().any(|l| {
            needles
                .iter()
                .any(|n| l.to_ascii_lowercase().contains(&n.to_ascii_lowercase()))
        })
    };
    if any(&[
        "SASL authentication error",
        "Authentication failed",
        "SaslAuthenticate",
        "unsupported SASL mechanism",
        "No common SASL mechanism",
        "mechanism handshake failed",
    ]) {
        ConnectCause::SaslRefused
    } else if any(&[
        "certificate verify failed",
        "Failed to verify broker certificate",
        "broker certificate could not be verified",
    ]) {
        ConnectCause::UntrustedCertificate
    } else if any(&["client SSL authentication might be required", "certificate required"]) {
        ConnectCause::ClientCertificateRequired
    } else if any(&[
        "connecting to a PLAINTEXT broker listener",
        "wrong version number",
        "packet length too long",
        "record layer failure",
        "unexpected eof while reading",
    ]) {
        ConnectCause::TlsToPlaintext
    } else if any(&["connecting to a SSL listener"]) {
        ConnectCause::PlaintextToTls
    } else if any(&["broker might require SASL authentication"]) {
        ConnectCause::SaslRequired
    } else if any(&[
        "Connection refused",
        "Failed to resolve",
        "Name or service not known",
        "timed out",
    ]) {
        ConnectCause::Unreachable
    } else {
        ConnectCause::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librdkafka_messages_map_to_causes() {
        let c = |s: &str| classify(&[s.to_owned()]);
        assert_eq!(
            c("ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified"),
            ConnectCause::UntrustedCertificate
        );
        assert_eq!(
            c("SSL handshake failed: Disconnected: connecting to a PLAINTEXT broker listener?"),
            ConnectCause::TlsToPlaintext
        );
        assert_eq!(
            c("Disconnected while requesting ApiVersion: might be caused by incorrect security.protocol configuration (connecting to a SSL listener?)"),
            ConnectCause::PlaintextToTls
        );
        assert_eq!(
            c("SASL authentication error: Authentication failed during authentication due to invalid credentials"),
            ConnectCause::SaslRefused
        );
        assert_eq!(
            c("Connect to ipv4#127.0.0.1:1 failed: Connection refused"),
            ConnectCause::Unreachable
        );
        assert_eq!(c("something new"), ConnectCause::Other);
        assert_eq!(
            c("SASL PLAIN mechanism handshake failed: Local: Broker transport failure: broker's supported mechanisms: (n/a)"),
            ConnectCause::SaslRefused
        );
    }

    #[test]
    fn mechanisms_and_user_names_are_not_secrets() {
        use guard_config::is_secret_property;
        for k in [
            "sasl.mechanisms",
            "sasl.mechanism",
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
        ] {
            assert!(!is_secret_property(k), "{k}");
        }
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "ssl.keystore.password",
        ] {
            assert!(is_secret_property(k), "{k}");
        }
    }
}
