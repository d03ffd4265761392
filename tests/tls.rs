//! TLS and SASL to the broker. Tansu speaks plaintext Kafka; Debian's stunnel terminates TLS in
//! front of it, and Tansu advertises the TLS port, so every connection a client makes (the
//! bootstrap and the broker it is sent to) goes through TLS. Certificates are made per test
//! with `openssl` (Debian's): a CA, a server certificate for 127.0.0.1, one for another host
//! name, a client certificate, and a second CA nobody trusts.
//!
//! SASL: Tansu 0.6 answers the SASL handshake and checks SCRAM credentials when started with
//! `--authentication`, but cannot be given users then (its user API needs an authenticated
//! connection, and its storage does not keep them), so the tests show the guard reaching SCRAM
//! authentication over TLS and reporting the broker's answer, not a successful login.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Certificates for one test.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let pki = Pki { dir: dir.join("pki") };
        std::fs::create_dir_all(&pki.dir).unwrap();
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf("server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost");
        pki.leaf("wrong-host", "ca", "subjectAltName=DNS:kafka.example.invalid");
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
        pki
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        let (key, pem, subj) = (
            format!("{name}.key"),
            format!("{name}.pem"),
            format!("/CN=ingest-guard test {name}"),
        );
        self.openssl(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem, "-days", "2", "-subj",
            &subj,
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, ext: &str) {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), format!("{ext}\n")).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext_file,
        ]);
    }
}

/// stunnel: Debian names the binary `stunnel4` (and `stunnel`); `STUNNEL_BIN` overrides.
fn stunnel_bin() -> String {
    if let Ok(b) = std::env::var("STUNNEL_BIN") {
        return b;
    }
    for b in ["stunnel4", "stunnel"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return b.to_owned();
        }
    }
    panic!("stunnel is needed for the TLS tests: apt-get install stunnel4 (scripts/setup.sh does)");
}

/// One TLS terminator process with several services (accept port -> plaintext port).
struct Tunnel {
    child: Child,
}

struct Service<'a> {
    accept: u16,
    connect: u16,
    cert: &'a str,
    /// Require and verify a client certificate signed by the test CA.
    mutual: bool,
}

impl Tunnel {
    fn start(pki: &Pki, services: &[Service<'_>]) -> Tunnel {
        let mut conf = String::from("foreground = yes\npid =\ndebug = 3\n");
        for (i, s) in services.iter().enumerate() {
            conf.push_str(&format!(
                "[s{i}]\naccept = 127.0.0.1:{}\nconnect = 127.0.0.1:{}\ncert = {}\nkey = {}\n",
                s.accept,
                s.connect,
                pki.path(&format!("{}.pem", s.cert)),
                pki.path(&format!("{}.key", s.cert)),
            ));
            if s.mutual {
                conf.push_str(&format!("verifyChain = yes\nCAfile = {}\n", pki.path("ca.pem")));
            }
        }
        let path = pki.dir.join(format!("stunnel-{}.conf", services[0].accept));
        std::fs::write(&path, conf).unwrap();
        let log = std::fs::File::create(pki.dir.join(format!("stunnel-{}.log", services[0].accept))).unwrap();
        let child = Command::new(stunnel_bin())
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        for s in services {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", s.accept)).is_err() {
                assert!(Instant::now() < deadline, "stunnel did not listen on {}", s.accept);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Tunnel { child }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client properties for TLS with the test CA (and the client certificate when `mutual`).
fn tls_props(pki: &Pki, mutual: bool) -> Vec<(String, String)> {
    let mut p = vec![
        ("security.protocol".to_owned(), "SSL".to_owned()),
        ("ssl.ca.location".to_owned(), pki.path("ca.pem")),
    ];
    if mutual {
        p.push(("ssl.certificate.location".into(), pki.path("client.pem")));
        p.push(("ssl.key.location".into(), pki.path("client.key")));
    }
    p
}

fn as_refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
    p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn toml_props(p: &[(String, String)]) -> String {
    let mut s = String::from("\n[kafka.properties]\n");
    for (k, v) in p {
        s.push_str(&format!("{k:?} = {v:?}\n"));
    }
    s
}

/// `ingest-guard tools create-topic` over TLS.
fn create_topic_tls(addr: &str, props: &[(String, String)], topic: &str, partitions: i32) {
    let mut cmd = Command::new(guard_bin());
    cmd.args([
        "tools",
        "create-topic",
        "--brokers",
        addr,
        "--topic",
        topic,
        "--partitions",
        &partitions.to_string(),
    ]);
    for (k, v) in props {
        cmd.args(["-X", &format!("{k}={v}")]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "create-topic over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn guard_runs_over_mutual_tls_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (plain, tls) = (free_port(), free_port());
    let broker = Broker::start_with(plain, tls, &[]);
    let _tunnel = Tunnel::start(
        &pki,
        &[Service {
            accept: tls,
            connect: plain,
            cert: "server",
            mutual: true,
        }],
    );
    let addr = format!("127.0.0.1:{tls}");
    let props = tls_props(&pki, true);
    let refs = as_refs(&props);
    let (input, output) = (unique("in"), unique("out"));
    create_topic_tls(&addr, &props, &input, 2);
    create_topic_tls(&addr, &props, &output, 2);

    // The TLS port refuses a client without a certificate, and names why.
    let mut no_cert = Guard::new(
        &dir.path().join("nocert"),
        &GuardSpec {
            brokers: &addr,
            group: "g-nocert",
            routes: &[(&input, "shuttle.schema.json")],
            output: Some(&output),
            extra: &toml_props(&tls_props(&pki, false)),
            kafka_extra: "",
            route_extra: "",
        },
    );
    let out = check_connect(&no_cert.config, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("requires a client certificate"), "{}", text(&out));
    no_cert.kill9();

    let n = 20_000;
    produce(&producer_with(&addr, 1 << 20, &refs), &input, &shuttle_mix(n, 20), 2);
    let group = unique("g");
    let mut guard = Guard::new(
        dir.path(),
        &GuardSpec {
            brokers: &addr,
            group: &group,
            routes: &[(&input, "shuttle.schema.json")],
            output: Some(&output),
            extra: &toml_props(&props),
            kafka_extra: "",
            route_extra: "",
        },
    );
    let out = check_connect(&guard.config, &[]);
    assert!(out.status.success(), "check --connect over mutual TLS: {}", text(&out));
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    wait_for(Duration::from_secs(120), "all records committed over TLS", || {
        committed_total_with(&addr, &refs, &group, &input, 2) == n as i64
    });
    assert!(guard.term(), "clean shutdown");
    let (out_len, q_len, out_dups, q_dups) =
        reconcile_with(&addr, &refs, &input, &output, &quarantined(&guard.quarantine), n);
    eprintln!("mutual TLS: output {out_len} (dups {out_dups}), quarantine {q_len} (dups {q_dups})");
    assert_eq!(q_len, n / 20);
    assert_eq!(out_len + q_len, n);
    assert_eq!((out_dups, q_dups), (0, 0));
    drop(broker);
}

fn check_connect(config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(guard_bin());
    cmd.args(["check", "--connect", "--config"]).arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_connect_names_tls_and_sasl_mistakes_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (plain, tls, wrong) = (free_port(), free_port(), free_port());
    let (auth_plain, auth_tls) = (free_port(), free_port());
    let _broker = Broker::start_with(plain, tls, &[]);
    let _auth = Broker::start_with(auth_plain, auth_tls, &["--authentication"]);
    let _tunnel = Tunnel::start(
        &pki,
        &[
            Service {
                accept: tls,
                connect: plain,
                cert: "server",
                mutual: false,
            },
            Service {
                accept: wrong,
                connect: plain,
                cert: "wrong-host",
                mutual: false,
            },
            Service {
                accept: auth_tls,
                connect: auth_plain,
                cert: "server",
                mutual: false,
            },
        ],
    );
    let password = "Tr0ub4dor-never-printed";
    type Case<'a> = (&'a str, u16, Vec<(String, String)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("trusted TLS", tls, tls_props(&pki, false), ""),
        (
            "unknown CA",
            tls,
            vec![
                ("security.protocol".into(), "SSL".into()),
                ("ssl.ca.location".into(), pki.path("other-ca.pem")),
            ],
            "not signed by a CA this client trusts",
        ),
        (
            "wrong host name",
            wrong,
            tls_props(&pki, false),
            "issued for another host name",
        ),
        (
            "TLS client, plaintext listener",
            plain,
            tls_props(&pki, false),
            "the broker's listener speaks plaintext",
        ),
        (
            "plaintext client, TLS listener",
            tls,
            vec![],
            "the broker's listener expects TLS",
        ),
        (
            "wrong SCRAM password",
            auth_tls,
            vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("ssl.ca.location".into(), pki.path("ca.pem")),
                ("sasl.mechanisms".into(), "SCRAM-SHA-512".into()),
                ("sasl.username".into(), "ingest-guard".into()),
            ],
            "SASL: the broker refused",
        ),
        (
            "wrong SCRAM-SHA-256 password over SASL_PLAINTEXT",
            auth_plain,
            vec![
                ("security.protocol".into(), "SASL_PLAINTEXT".into()),
                ("sasl.mechanisms".into(), "SCRAM-SHA-256".into()),
                ("sasl.username".into(), "ingest-guard".into()),
            ],
            "SASL: the broker refused",
        ),
        (
            "PLAIN over SASL_SSL",
            auth_tls,
            vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("ssl.ca.location".into(), pki.path("ca.pem")),
                ("sasl.mechanisms".into(), "PLAIN".into()),
                ("sasl.username".into(), "ingest-guard".into()),
            ],
            "SASL: the broker refused",
        ),
        (
            "TLS without SASL, SASL listener",
            auth_tls,
            tls_props(&pki, false),
            "requires SASL authentication",
        ),
    ];
    for (name, port, props, want) in cases {
        let sub = dir.path().join(name.replace(' ', "-"));
        let g = Guard::new(
            &sub,
            &GuardSpec {
                brokers: &format!("127.0.0.1:{port}"),
                group: "g",
                routes: &[("in", "shuttle.schema.json")],
                output: Some("out"),
                extra: &toml_props(&props),
                kafka_extra: "",
                route_extra: "",
            },
        );
        let started = Instant::now();
        // The password comes from the environment, as it would in production.
        let out = check_connect(&g.config, &[("GUARD__KAFKA__PROPERTIES__SASL.PASSWORD", password)]);
        let took = started.elapsed();
        let said = text(&out);
        eprintln!("{name} ({} ms): {said}", took.as_millis());
        assert!(!said.contains(password), "{name}: the password was printed: {said}");
        assert!(took < Duration::from_secs(15), "{name}: check took {took:?}");
        if want.is_empty() {
            assert!(out.status.success(), "{name}: {said}");
        } else {
            assert_eq!(out.status.code(), Some(2), "{name}: {said}");
            assert!(said.contains(want), "{name}: expected {want:?} in: {said}");
        }
    }
}

#[test]
fn production_example_connects_over_tls() {
    // deploy/production.toml as shipped, with the broker address, the CA, the schema
    // folder and the secret file put where this test has them.
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (plain, tls, auth_plain, auth_tls) = (free_port(), free_port(), free_port(), free_port());
    let _broker = Broker::start_with(plain, tls, &[]);
    let _auth = Broker::start_with(auth_plain, auth_tls, &["--authentication"]);
    let _tunnel = Tunnel::start(
        &pki,
        &[
            Service {
                accept: tls,
                connect: plain,
                cert: "server",
                mutual: false,
            },
            Service {
                accept: auth_tls,
                connect: auth_plain,
                cert: "server",
                mutual: false,
            },
        ],
    );
    let secret = dir.path().join("sasl-password");
    std::fs::write(&secret, "Correct-Horse-Battery\n").unwrap();
    let shipped = std::fs::read_to_string(repo().join("deploy/production.toml")).unwrap();
    let schemas = repo().join("schemas");
    let config = |addr: &str| {
        shipped
            .replace("kafka-0.kafka:9093,kafka-1.kafka:9093,kafka-2.kafka:9093", addr)
            .replace("/etc/ingest-guard/ca.pem", &pki.path("ca.pem"))
            .replace("/etc/ingest-guard/schemas", &schemas.display().to_string())
            .replace("/etc/ingest-guard/secrets/sasl-password", &secret.display().to_string())
            .replace("baseline = \"/etc/ingest-guard/baselines/shuttle.baseline.json\"", "")
            .replace(
                "/var/lib/ingest-guard/quarantine",
                &dir.path().join("q").display().to_string(),
            )
    };
    assert!(
        shipped.contains("\"security.protocol\" = \"SASL_SSL\""),
        "the example uses SASL_SSL"
    );

    // SASL_SSL: TLS is set up and SCRAM-SHA-512 reached; Tansu has no users to accept.
    let path = dir.path().join("production-sasl.toml");
    std::fs::write(&path, config(&format!("127.0.0.1:{auth_tls}"))).unwrap();
    let out = check_connect(&path, &[]);
    let said = text(&out);
    eprintln!("production.toml, SASL_SSL: {said}");
    assert!(!said.contains("Correct-Horse-Battery"), "{said}");
    assert!(said.contains("SCRAM-SHA-512"), "{said}");
    assert!(said.contains("SASL: the broker refused"), "{said}");
    assert!(said.contains("sasl_ssl://"), "the refusal came over TLS: {said}");

    // The same file with SSL only (security.protocol from the environment) against the
    // broker without authentication: the whole guard runs and forwards over TLS.
    let path = dir.path().join("production-tls.toml");
    std::fs::write(&path, config(&format!("127.0.0.1:{tls}"))).unwrap();
    let port = free_port();
    let env = [
        ("GUARD__KAFKA__PROPERTIES__SECURITY.PROTOCOL", "SSL"),
        ("GUARD__SERVER__LISTEN", &*format!("127.0.0.1:{port}")),
    ];
    let out = check_connect(&path, &env);
    assert!(out.status.success(), "production.toml over TLS: {}", text(&out));
    let props = tls_props(&pki, false);
    let refs = as_refs(&props);
    let addr = format!("127.0.0.1:{tls}");
    for t in [
        "training.shuttle",
        "training.mnist",
        "training.clean",
        "ingest-guard.drift",
        "ingest-guard.profiles",
    ] {
        create_topic_tls(&addr, &props, t, 1);
    }
    let n = 2_000;
    produce(
        &producer_with(&addr, 1 << 20, &refs),
        "training.shuttle",
        &shuttle_mix(n, 20),
        1,
    );
    let log = std::fs::File::create(dir.path().join("guard.log")).unwrap();
    let mut child = Command::new(guard_bin())
        .args(["run", "--config"])
        .arg(&path)
        .envs(env)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            Duration::from_secs(90),
            "production.toml guard commits over TLS",
            || committed_total_with(&addr, &refs, "ingest-guard", "training.shuttle", 1) == n as i64,
        );
        let clean = read_topic_with(&addr, &refs, "training.clean", n - n / 20, Duration::from_secs(2));
        assert_eq!(clean.len(), n - n / 20);
    }));
    send_signal(child.id(), "TERM");
    let _ = child.wait();
    if let Err(e) = result {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.path().join("guard.log")).unwrap_or_default()
        );
        std::panic::resume_unwind(e);
    }
}
