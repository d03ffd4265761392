//! Test support: a real Kafka-protocol broker (Tansu) per test on a free loopback port, the
//! real `ingest-guard` binary as a child process, and readers for the output topic and the
//! quarantine folder. The broker binary comes from `TANSU_BIN` (scripts/setup.sh installs it).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod wire;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!("{prefix}-{}-{n}-{t}", std::process::id())
}

pub fn repo() -> PathBuf {
    std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
}

/// A Tansu broker with in-memory storage on its own port.
pub struct Broker {
    pub child: Child,
    pub addr: String,
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        Broker::start_with(port, port, &[])
    }

    /// A broker listening on `port` that tells clients to connect to `advertised` (a TLS
    /// terminator in front of it), with extra flags (`--authentication`).
    pub fn start_with(port: u16, advertised: u16, flags: &[&str]) -> Broker {
        let bin = std::env::var("TANSU_BIN").expect(
            "TANSU_BIN must point at the tansu broker binary: run scripts/test.sh (it installs the broker), \
             or scripts/setup.sh and export TANSU_BIN=.tools/tansu",
        );
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
            ])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "broker did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }

    pub fn signal(&self, sig: &str) {
        send_signal(self.child.id(), sig);
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let out = Command::new(guard_bin())
            .args([
                "tools",
                "create-topic",
                "--brokers",
                &self.addr,
                "--topic",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create-topic: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        send_signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send a signal (by name: STOP, CONT, TERM, KILL) with kill(1); no unsafe code in tests.
pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args(["-s", sig, &pid.to_string()]).status();
}

/// The binary under test: this build's, or `GUARD_TEST_BIN` (to run the same tests against
/// another build, e.g. the previous release, for before/after figures).
pub fn guard_bin() -> String {
    std::env::var("GUARD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ingest-guard").to_owned())
}

/// Run the guard binary with `args` from the repository root, with the ONNX Runtime setup
/// installs, and return its output.
pub fn guard_output(args: &[&str]) -> std::process::Output {
    Command::new(guard_bin())
        .args(args)
        .current_dir(repo())
        .env(
            "ORT_DYLIB_PATH",
            repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1"),
        )
        .output()
        .unwrap()
}

/// A guard process with its own config, quarantine folder and HTTP port.
pub struct Guard {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub quarantine: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the process (object storage credentials).
    pub env: Vec<(String, String)>,
}

pub struct GuardSpec<'a> {
    pub brokers: &'a str,
    pub group: &'a str,
    pub routes: &'a [(&'a str, &'a str)],
    pub output: Option<&'a str>,
    pub extra: &'a str,
    /// Extra lines inside `[kafka]`.
    pub kafka_extra: &'a str,
    /// Extra lines inside each `[[routes]]` entry.
    pub route_extra: &'a str,
}

impl Guard {
    pub fn new(dir: &Path, spec: &GuardSpec<'_>) -> Guard {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let quarantine = dir.join("quarantine");
        let mut text = format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"{}\"\nsession_timeout_ms = 6000\ncommit_interval_ms = 500\nprobe_interval_ms = 500\n",
            spec.brokers, spec.group
        );
        if let Some(o) = spec.output {
            text.push_str(&format!("output_topic = \"{o}\"\n"));
        }
        text.push_str(spec.kafka_extra);
        text.push_str(&format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[quarantine]\ndir = \"{}\"\nroll_max_age_ms = 500\n",
            quarantine.display()
        ));
        text.push_str(spec.extra);
        for (topic, schema) in spec.routes {
            text.push_str(&format!(
                "\n[[routes]]\ntopic = \"{topic}\"\nschema = \"{}\"\n",
                repo().join("schemas").join(schema).display()
            ));
            text.push_str(spec.route_extra);
        }
        let config = dir.join(format!("guard-{port}.toml"));
        std::fs::write(&config, text).unwrap();
        Guard {
            child: None,
            dir: dir.to_path_buf(),
            config,
            port,
            quarantine,
            log: dir.join(format!("guard-{port}.log")),
            env: Vec::new(),
        }
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(guard_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("GUARD_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (status 0).
    pub fn term(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return false };
        send_signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    pub fn ready(&self) -> bool {
        self.get("/readyz").is_some_and(|(code, _)| code == 200)
    }

    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "guard not ready in {timeout:?}; log:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        let Some((_, body)) = self.get("/metrics") else {
            return HashMap::new();
        };
        parse_metrics(&body)
    }

    /// Sum of a metric over all label sets.
    pub fn metric_sum(&self, name: &str) -> f64 {
        sum_metric(&self.metrics(), name)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Peak resident set size of the guard process (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn sum_metric(m: &HashMap<String, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

pub fn parse_metrics(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "GET", path)
}

pub fn http_post(port: u16, path: &str) -> Option<(u16, String)> {
    http(port, "POST", path)
}

/// A response: status, headers (lowercase names), body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.body))
    }
}

/// One request with headers and a body on a fresh connection.
pub fn http_request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Option<Reply> {
    let mut s = TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body.as_bytes()).ok()?;
    // Read the head, then exactly Content-Length bytes (some servers keep the connection).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// One bodiless request on a fresh connection; the status and the body.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

pub fn producer(brokers: &str, max_bytes: usize) -> ThreadedProducer<DefaultProducerContext> {
    producer_with(brokers, max_bytes, &[])
}

/// A client configuration: the brokers and extra librdkafka properties (TLS, SASL).
pub fn client(brokers: &str, props: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in props {
        c.set(*k, *v);
    }
    c
}

/// [`producer`] with extra properties.
pub fn producer_with(
    brokers: &str,
    max_bytes: usize,
    props: &[(&str, &str)],
) -> ThreadedProducer<DefaultProducerContext> {
    client(brokers, props)
        .set("linger.ms", "5")
        .set("message.max.bytes", max_bytes.to_string())
        .set("enable.idempotence", "true")
        .create()
        .unwrap()
}

/// Produce `(key, payload)` pairs round-robin over `partitions`; returns (partition, key) per
/// record in order. Offsets are recovered from the data later.
pub fn produce(
    p: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(Option<String>, Vec<u8>)],
    partitions: i32,
) {
    for (i, (key, payload)) in records.iter().enumerate() {
        loop {
            let mut rec: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
                .payload(payload.as_slice())
                .partition(i as i32 % partitions);
            if let Some(k) = key {
                rec = rec.key(k.as_str());
            }
            match p.send(rec) {
                Ok(()) => break,
                Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    p.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Read a topic from the beginning until `until` says stop or `idle` passes with nothing new.
/// Returns, per record: key, partition, offset, provenance header.
pub struct OutRecord {
    pub key: Option<String>,
    pub partition: i32,
    pub offset: i64,
    pub source: Option<String>,
    pub timestamp: Option<i64>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
}

pub fn read_topic(brokers: &str, topic: &str, expect_at_least: usize, idle: Duration) -> Vec<OutRecord> {
    read_topic_with(brokers, &[], topic, expect_at_least, idle)
}

/// [`read_topic`] with extra client properties.
pub fn read_topic_with(
    brokers: &str,
    props: &[(&str, &str)],
    topic: &str,
    expect_at_least: usize,
    idle: Duration,
) -> Vec<OutRecord> {
    let c: BaseConsumer = client(brokers, props)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(240);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers: Vec<(String, Option<Vec<u8>>)> = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                let source = headers
                    .iter()
                    .find(|(k, _)| k == "x-guard-source")
                    .and_then(|(_, v)| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned()));
                out.push(OutRecord {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    partition: m.partition(),
                    offset: m.offset(),
                    source,
                    timestamp: m.timestamp().to_millis(),
                    headers,
                    payload: m.payload().map(<[u8]>::to_vec),
                });
                last = Instant::now();
            }
            Some(Err(e)) => panic!("read {topic}: {e}"),
            None => {
                if out.len() >= expect_at_least && last.elapsed() > idle {
                    break;
                }
            }
        }
    }
    out
}

/// Every row of every quarantine file in the folder `dir`.
pub fn stored_rows(dir: &Path) -> Vec<guard_quarantine::StoredRow> {
    guard_quarantine::read_all(&guard_quarantine::LocalDirStore::new(dir)).unwrap()
}

/// The rows of the readable quarantine files in the folder `dir` (foreign or damaged files
/// are left out, as the guard leaves them out).
pub fn readable_rows(dir: &Path) -> Vec<guard_quarantine::StoredRow> {
    use guard_quarantine::QuarantineStore;
    let store = guard_quarantine::LocalDirStore::new(dir);
    guard_quarantine::list_files(&store)
        .unwrap()
        .iter()
        .filter_map(|f| guard_quarantine::read_file(&store.get_bytes(&f.name).ok()?).ok())
        .flatten()
        .collect()
}

/// The quarantine files in the folder `dir`, with the rows each holds.
pub fn stored_files(dir: &Path) -> Vec<(guard_quarantine::FileInfo, i64)> {
    use guard_quarantine::QuarantineStore;
    let store = guard_quarantine::LocalDirStore::new(dir);
    guard_quarantine::list_files(&store)
        .unwrap()
        .into_iter()
        .map(|f| {
            let rows = guard_quarantine::file_rows(&store.get_bytes(&f.name).unwrap()).unwrap_or(-1);
            (f, rows)
        })
        .collect()
}

/// All quarantined rows under `dir`, keyed by (topic, partition, offset) -> (count, reason codes).
pub fn quarantined(dir: &Path) -> BTreeMap<(String, i32, i64), (usize, Vec<String>)> {
    quarantined_in(&guard_quarantine::LocalDirStore::new(dir))
}

/// Input offsets per partition of `topic`, read back from the input topic itself.
pub fn input_offsets(brokers: &str, topic: &str, n: usize) -> Vec<(i32, i64, Option<String>)> {
    read_topic(brokers, topic, n, Duration::from_secs(2))
        .into_iter()
        .map(|r| (r.partition, r.offset, r.key))
        .collect()
}

/// Wait until `cond` holds or panic after `timeout` with `what`.
pub fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Shuttle records: valid ones from the committed real samples, cycled to `n`, with keys
/// `v<i>`; every `bad_every`-th record is a hostile fixture keyed `h<i>:<expected code>`.
pub fn shuttle_mix(n: usize, bad_every: usize) -> Vec<(Option<String>, Vec<u8>)> {
    let valid: Vec<Vec<u8>> = std::fs::read(repo().join("schemas/samples/shuttle.valid.jsonl"))
        .unwrap()
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let hostile = small_hostile("shuttle");
    (0..n)
        .map(|i| {
            if bad_every > 0 && i % bad_every == bad_every - 1 {
                let (code, payload) = &hostile[(i / bad_every) % hostile.len()];
                (Some(format!("h{i}:{code}")), payload.clone())
            } else {
                (Some(format!("v{i}")), valid[i % valid.len()].clone())
            }
        })
        .collect()
}

/// Hostile fixtures for a topic kind: (expected code, payload).
pub fn small_hostile(kind: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    std::fs::read_to_string(repo().join("schemas/samples/hostile.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["topic"] == kind).then(|| {
                let p = base64::engine::general_purpose::STANDARD
                    .decode(v["payload_b64"].as_str().unwrap())
                    .unwrap();
                (v["code"].as_str().unwrap().to_owned(), p)
            })
        })
        .collect()
}

/// Check that every input offset is in output ∪ quarantine; returns (output duplicates,
/// quarantine duplicates). Quarantined records must carry the code their key names.
pub fn reconcile(brokers: &str, input: &str, output: &str, qdir: &Path, n: usize) -> (usize, usize, usize, usize) {
    reconcile_with(brokers, &[], input, output, &quarantined(qdir), n)
}

/// [`reconcile`] with extra client properties and the quarantined rows already read.
pub fn reconcile_with(
    brokers: &str,
    props: &[(&str, &str)],
    input: &str,
    output: &str,
    q: &BTreeMap<(String, i32, i64), (usize, Vec<String>)>,
    n: usize,
) -> (usize, usize, usize, usize) {
    let inputs: Vec<(i32, i64, Option<String>)> = read_topic_with(brokers, props, input, n, Duration::from_secs(2))
        .into_iter()
        .map(|r| (r.partition, r.offset, r.key))
        .collect();
    assert_eq!(inputs.len(), n, "input topic holds all records");
    let expected_out = inputs.len() - q.len();
    let out = read_topic_with(brokers, props, output, expected_out, Duration::from_secs(3));
    let mut seen_out: HashMap<String, usize> = HashMap::new();
    for r in &out {
        *seen_out
            .entry(r.source.clone().expect("provenance header"))
            .or_default() += 1;
    }
    let mut missing = Vec::new();
    let mut wrong = Vec::new();
    for (p, o, key) in &inputs {
        let in_out = seen_out.contains_key(&format!("{input}/{p}/{o}"));
        let in_q = q.get(&(input.to_owned(), *p, *o));
        if !in_out && in_q.is_none() {
            missing.push((p, o));
        }
        if let (Some(k), Some((_, codes))) = (key, in_q) {
            let want = k.split_once(':').map(|(_, c)| c);
            if want != codes.first().map(String::as_str) {
                wrong.push((k.clone(), codes.clone()));
            }
        }
        if let Some(k) = key {
            if k.starts_with('h') && in_out {
                wrong.push((k.clone(), vec!["passed".into()]));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} offsets missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        wrong.is_empty(),
        "{} wrong verdicts, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let out_dups = seen_out.values().map(|c| c - 1).sum::<usize>();
    let q_dups = q.values().map(|(c, _)| c - 1).sum::<usize>();
    (out.len(), q.len(), out_dups, q_dups)
}

/// Sum over partitions of the group's committed offsets for `topic` (offsets are dense from 0
/// in a fresh topic, so this equals the number of committed records).
pub fn committed_total(brokers: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    committed_total_with(brokers, &[], group, topic, partitions)
}

/// [`committed_total`] with extra client properties.
pub fn committed_total_with(brokers: &str, props: &[(&str, &str)], group: &str, topic: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = client(brokers, props)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    match c.committed_offsets(tpl, Duration::from_secs(5)) {
        Ok(list) => list
            .elements()
            .iter()
            .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
            .sum(),
        Err(_) => -1,
    }
}

/// One test's world: its own broker, an input topic, an output topic, a folder and a group.
pub struct Rig {
    pub broker: Broker,
    pub input: String,
    pub output: String,
    pub partitions: i32,
    pub dir: tempfile::TempDir,
    pub group: String,
}

impl Rig {
    /// Start a broker and create `partitions`-partition input and output topics.
    pub fn new(partitions: i32) -> Rig {
        let broker = Broker::start();
        let (input, output) = (unique("in"), unique("out"));
        broker.create_topic(&input, partitions);
        broker.create_topic(&output, partitions);
        Rig {
            broker,
            input,
            output,
            partitions,
            dir: tempfile::tempdir().unwrap(),
            group: unique("g"),
        }
    }

    /// A guard (not started) for the Shuttle schema on this rig; instances share the folder.
    pub fn guard(&self, extra: &str, kafka_extra: &str) -> Guard {
        self.guard_with_output(Some(&self.output), extra, kafka_extra)
    }

    /// As [`Rig::guard`], with the output topic chosen (None for monitor mode).
    pub fn guard_with_output(&self, output: Option<&str>, extra: &str, kafka_extra: &str) -> Guard {
        self.guard_full(output, extra, kafka_extra, "")
    }

    /// As [`Rig::guard_with_output`], with extra lines inside the route.
    pub fn guard_full(&self, output: Option<&str>, extra: &str, kafka_extra: &str, route_extra: &str) -> Guard {
        Guard::new(
            self.dir.path(),
            &GuardSpec {
                brokers: &self.broker.addr,
                group: &self.group,
                routes: &[(&self.input, "shuttle.schema.json")],
                output,
                extra,
                kafka_extra,
                route_extra,
            },
        )
    }

    /// Produce records round-robin over the input partitions.
    pub fn produce(&self, records: &[(Option<String>, Vec<u8>)]) {
        produce(
            &producer(&self.broker.addr, 1 << 20),
            &self.input,
            records,
            self.partitions,
        );
    }

    /// The group's committed records on the input topic.
    pub fn committed(&self) -> i64 {
        committed_total(&self.broker.addr, &self.group, &self.input, self.partitions)
    }

    /// Wait until the group has committed exactly `n` records.
    pub fn wait_committed(&self, n: usize, timeout: Duration, what: &str) {
        wait_for(timeout, what, || self.committed() == n as i64);
    }

    /// Check output ∪ quarantine against the input (see [`reconcile`]).
    pub fn reconcile(&self, qdir: &Path, n: usize) -> (usize, usize, usize, usize) {
        reconcile(&self.broker.addr, &self.input, &self.output, qdir, n)
    }

    /// [`Rig::reconcile`] with the quarantine in `store` (object storage).
    pub fn reconcile_store(
        &self,
        store: &dyn guard_quarantine::QuarantineStore,
        n: usize,
    ) -> (usize, usize, usize, usize) {
        reconcile_with(
            &self.broker.addr,
            &[],
            &self.input,
            &self.output,
            &quarantined_in(store),
            n,
        )
    }
}

/// While the quarantine store fails: wait (up to `timeout`) until `guard` reports it not
/// ready, then check that the group's commits stand still for 4 s; returns where they stand.
pub fn wait_commits_stall(rig: &Rig, guard: &Guard, timeout: Duration, what: &str) -> i64 {
    wait_for(timeout, what, || {
        guard
            .get("/readyz")
            .is_some_and(|(code, body)| code == 503 && body.contains("\"quarantine_ok\":false"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let stalled = rig.committed();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        stalled,
        rig.committed(),
        "no commits while the quarantine cannot be written"
    );
    stalled
}

/// Run `ingest-guard baseline` on `input` with the Shuttle schema.
pub fn run_baseline(input: &Path, out: &Path, window: usize, resamples: usize) -> std::process::Output {
    Command::new(guard_bin())
        .args(["baseline", "--schema"])
        .arg(repo().join("schemas/shuttle.schema.json"))
        .arg("--input")
        .arg(input)
        .arg("--out")
        .arg(out)
        .args(["--window", &window.to_string(), "--resamples", &resamples.to_string()])
        .output()
        .unwrap()
}

/// Nothing lost, nothing doubled: every input offset is in the output or in the quarantine,
/// exactly one of them, once (whatever the reasons).
pub fn exactly_once(rig: &Rig, qdir: &Path, n: usize) {
    let q = quarantined(qdir);
    assert!(q.values().all(|(count, _)| *count == 1), "quarantine duplicates");
    let inputs = input_offsets(&rig.broker.addr, &rig.input, n);
    assert_eq!(inputs.len(), n, "input topic holds all records");
    let out = read_topic(&rig.broker.addr, &rig.output, n - q.len(), Duration::from_secs(3));
    let sources: std::collections::HashSet<String> = out.iter().filter_map(|r| r.source.clone()).collect();
    assert_eq!(sources.len(), out.len(), "no duplicates in the output");
    for (p, o, _) in &inputs {
        let in_out = sources.contains(&format!("{}/{p}/{o}", rig.input));
        let in_q = q.contains_key(&(rig.input.clone(), *p, *o));
        assert!(in_out ^ in_q, "offset {p}/{o}: output {in_out}, quarantine {in_q}");
    }
}

/// A local HTTP receiver standing in for a webhook endpoint: answers 503 to the first
/// `fail_first` requests, 200 after, and keeps every request body it was sent.
pub struct Receiver {
    pub port: u16,
    pub bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    pub fn start(fail_first: usize) -> Receiver {
        use std::io::{BufRead, BufReader, Read};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, a) = (bodies.clone(), attempts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let n = a.fetch_add(1, Ordering::SeqCst);
                let status = if n < fail_first {
                    "503 Service Unavailable"
                } else {
                    b.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, bodies, attempts }
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect()
    }
}

/// JSON payloads of a topic (read from the beginning until `idle` passes with nothing new).
pub fn topic_json(brokers: &str, topic: &str, expect_at_least: usize, idle: Duration) -> Vec<serde_json::Value> {
    read_topic(brokers, topic, expect_at_least, idle)
        .into_iter()
        .filter_map(|r| serde_json::from_slice(r.payload.as_deref()?).ok())
        .collect()
}

/// Reviewer `alice` (password `demo`) as config lines: operator actions need a reviewer.
pub const REVIEWER_TOML: &str =
    "[[review.reviewers]]\nname = \"alice\"\npassword_sha256 = \"2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea\"\n";

/// sha256("demo")
pub const DEMO_SHA: &str = "2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea";

pub fn basic() -> String {
    format!("Basic {}", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode("alice:demo")
    })
}

pub struct Api {
    pub port: u16,
    pub auth: String,
    pub csrf: String,
}

impl Api {
    pub fn get(&self, path: &str) -> Reply {
        http_request(self.port, "GET", path, &[("Authorization", &self.auth)], "").expect("GET")
    }
    pub fn post(&self, path: &str, body: &str) -> Reply {
        http_request(
            self.port,
            "POST",
            path,
            &[
                ("Authorization", &self.auth),
                ("x-csrf-token", &self.csrf),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .expect("POST")
    }
}

pub fn api(port: u16) -> Api {
    let auth = basic();
    let s = http_request(port, "GET", "/api/review/session", &[("Authorization", &auth)], "").unwrap();
    assert_eq!(s.status, 200, "{}", s.body);
    Api {
        port,
        csrf: s.json()["csrf"].as_str().unwrap().to_owned(),
        auth,
    }
}

/// An S3-compatible server (s3s-fs, from `S3S_FS_BIN`) on its own port over a temporary
/// folder, with one bucket.
pub struct S3Server {
    pub child: Child,
    pub port: u16,
    pub root: tempfile::TempDir,
    pub bucket: String,
}

pub const S3_KEY: &str = "ingest-guard-test";
pub const S3_SECRET: &str = "s3cret-for-tests-only";

impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let bucket = "quarantine".to_owned();
        std::fs::create_dir_all(root.path().join(&bucket)).unwrap();
        let port = free_port();
        let mut s = S3Server {
            child: Self::spawn(root.path(), port),
            port,
            root,
            bucket,
        };
        s.wait_up();
        s
    }

    fn spawn(root: &Path, port: u16) -> Child {
        let bin = std::env::var("S3S_FS_BIN")
            .expect("S3S_FS_BIN must point at the s3s-fs binary: run scripts/test.sh (scripts/setup.sh installs it)");
        Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                S3_KEY,
                "--secret-key",
                S3_SECRET,
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs")
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop serving (the outage), keeping the data.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Serve again on the same port and folder.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.root.path(), self.port);
        self.wait_up();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `[quarantine]` lines for a guard writing under `prefix` of the bucket.
    pub fn quarantine_toml(&self, prefix: &str) -> String {
        format!(
            "url = \"s3://{}/{prefix}\"\nendpoint = \"{}\"\nallow_http = true\nrequest_timeout_ms = 3000\n",
            self.bucket,
            self.endpoint()
        )
    }

    /// The environment a guard needs for this server.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET.into()),
        ]
    }

    /// A client of the bucket under `prefix`, as the guard opens it.
    pub fn store(&self, prefix: &str) -> guard_quarantine::ObjectStoreQuarantine {
        guard_quarantine::ObjectStoreQuarantine::open(&guard_quarantine::ObjectSettings {
            url: format!("s3://{}/{prefix}", self.bucket),
            endpoint: Some(self.endpoint()),
            region: None,
            allow_http: true,
            request_timeout: Duration::from_secs(10),
            credentials: Some((S3_KEY.into(), S3_SECRET.into())),
        })
        .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// All quarantined rows in `store`, keyed like [`quarantined`].
pub fn quarantined_in(
    store: &dyn guard_quarantine::QuarantineStore,
) -> BTreeMap<(String, i32, i64), (usize, Vec<String>)> {
    let mut out: BTreeMap<(String, i32, i64), (usize, Vec<String>)> = BTreeMap::new();
    for r in guard_quarantine::read_all(store).unwrap() {
        let e = out
            .entry((r.topic.clone(), r.partition, r.offset))
            .or_insert((0, r.reason_codes.clone()));
        e.0 += 1;
    }
    out
}
