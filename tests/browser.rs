//! The dashboard in a real headless Chromium (Debian's `chromium`, driven over the W3C
//! WebDriver protocol by `chromedriver`; `scripts/test.sh` installs both): sign in, the
//! overview (a flooding source blocked there, released with its button), filter by reason, open a record, an MNIST record drawn as an image, a hostile
//! payload shown as text that runs nothing, a release, and the audit log. Screenshots go to
//! `test-output/browser/` (or `$GUARD_TEST_OUTPUT/browser/`).

use crate::support::*;
use base64::Engine as _;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEMO_SHA: &str = "2a97516c354b68848cdbd8f54a226a0a55b21ed138e207ad6c5cbb9c00aa5aea";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    port: u16,
    session: String,
    shots: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http_request(self.port, "DELETE", &format!("/session/{}", self.session), &[], "");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> String {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(|p| (*p).to_owned())
    .expect("chromium is not installed: scripts/test.sh installs it (apt-get install chromium chromium-driver)")
}

impl Driver {
    fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is not installed: scripts/test.sh installs it (apt-get install chromium-driver)");
        wait_for(Duration::from_secs(20), "chromedriver", || {
            http_request(port, "GET", "/status", &[], "").is_some_and(|r| r.status == 200)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}}}});
        let r = http_request(
            port,
            "POST",
            "/session",
            &[("Content-Type", "application/json")],
            &caps.to_string(),
        )
        .expect("new session");
        assert_eq!(r.status, 200, "{}", r.body);
        let session = r.json()["value"]["sessionId"].as_str().unwrap().to_owned();
        let out = std::env::var_os("GUARD_TEST_OUTPUT")
            .map_or_else(|| repo().join("test-output"), std::path::PathBuf::from)
            .join("browser");
        std::fs::create_dir_all(&out).unwrap();
        Driver {
            child,
            port,
            session,
            shots: out,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let r = http_request(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            &[("Content-Type", "application/json")],
            &if body.is_null() {
                String::new()
            } else {
                body.to_string()
            },
        )
        .expect("webdriver");
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        r.json()["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn js(&self, script: &str) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": []}))
    }

    /// Wait until `script` returns something truthy; its value.
    fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
        self.cmd("POST", &format!("/element/{e}/value"), json!({ "text": text }));
    }

    fn screenshot(&self, name: &str) {
        let v = self.cmd("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }
}

#[test]
fn dashboard_in_headless_chromium() {
    let broker = Broker::start();
    let (shuttle, mnist, clean) = (unique("shuttle"), unique("mnist"), unique("clean"));
    broker.create_topic(&shuttle, 1);
    broker.create_topic(&mnist, 1);
    broker.create_topic(&clean, 1);
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let mut guard = Guard::new(
        dir.path(),
        &GuardSpec {
            brokers: &broker.addr,
            group: &group,
            routes: &[(&shuttle, "shuttle.schema.json"), (&mnist, "mnist.schema.json")],
            output: Some(&clean),
            extra: &format!(
                "[review]\nrefresh_interval_ms = 200\n[[review.reviewers]]\nname = \"alice\"\npassword_sha256 = \"{DEMO_SHA}\"\n"
            ),
            kafka_extra: "",
            route_extra: "",
        },
    );
    // The Shuttle route gets a baseline (so floods are judged there).
    let baseline = dir.path().join("shuttle.baseline.json");
    let built = run_baseline(&repo().join("schemas/samples/shuttle.valid.jsonl"), &baseline, 20, 100);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let config = std::fs::read_to_string(&guard.config).unwrap();
    let shuttle_schema = format!("{}\"\n", repo().join("schemas/shuttle.schema.json").display());
    assert!(config.contains(&shuttle_schema));
    let config = config.replace(
        &shuttle_schema,
        &format!("{shuttle_schema}baseline = \"{}\"\n", baseline.display()),
    );
    std::fs::write(&guard.config, config).unwrap();
    guard.start();
    guard.wait_ready(Duration::from_secs(60));

    // Shuttle: valid rows, hostile ones and a payload that tries to run script.
    let mut records = shuttle_mix(120, 10);
    let xss = r#"{"source":"<script>window.__xss=1</script>","features":"\"><img src=x onerror=\"window.__xss=2\">","label":0}"#;
    records.push((Some("xss".into()), xss.as_bytes().to_vec()));
    // A source that sends one sample row 40 times: flagged from the 20th copy, blocked at the
    // 10th flag.
    let sample = std::fs::read_to_string(repo().join("schemas/samples/shuttle.valid.jsonl")).unwrap();
    let mut copy: Value = serde_json::from_str(sample.lines().next().unwrap()).unwrap();
    copy["source"] = json!("flooder");
    records.extend((0..40).map(|i| (Some(format!("copy{i}")), copy.to_string().into_bytes())));
    let p = producer(&broker.addr, 1 << 20);
    produce(&p, &shuttle, &records, 1);
    // MNIST: a real digit with a label outside the schema's classes, so it is held.
    let text = std::fs::read_to_string(repo().join(".data/mnist.jsonl")).expect("run scripts/setup.sh first");
    let mut digit: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    digit["label"] = json!(42);
    produce(&p, &mnist, &[(Some("digit".into()), digit.to_string().into_bytes())], 1);
    let port = guard.port;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:demo")
    );
    wait_for(Duration::from_secs(60), "quarantined rows indexed", || {
        http_request(port, "GET", "/api/review/records", &[("Authorization", &basic)], "").is_some_and(|r| {
            // 14, and the copies from the 20th on (all 40 when they share the batch that
            // tripped the block: the block covers its batch).
            let t = r.json()["total"].as_u64().unwrap_or(0);
            r.status == 200 && (14 + 21..=14 + 40).contains(&t)
        })
    });

    let d = Driver::start();
    let base = format!("http://127.0.0.1:{port}/review");
    d.go(&base);
    d.until("sign-in form", "return !document.getElementById('login').hidden");
    d.type_in("#login-name", "alice");
    d.type_in("#login-password", "demo");
    d.click("#login-submit");
    d.until(
        "overview",
        "const h = document.querySelector('#view h2'); return h && h.textContent === 'Overview'",
    );
    let cards = d.js("return document.querySelector('.cards').textContent");
    assert!(cards.as_str().unwrap().contains("quarantined"), "{cards}");
    // The blocked source is on the overview; its button releases it.
    let blocked = d.until(
        "the blocked source",
        "const r = document.querySelector('tr.blocked-source'); return r && r.textContent",
    );
    assert!(blocked.as_str().unwrap().contains("flooder"), "{blocked}");
    d.screenshot("overview");
    d.click("button.release-source");
    d.until(
        "released source",
        "const m = document.getElementById('block-msg'); return m && m.textContent.startsWith('released')",
    );
    d.until(
        "the overview without blocks",
        "return document.querySelector('#view h2') && !document.querySelector('tr.blocked-source')",
    );

    // Explorer: filter by reason through the form.
    d.go(&format!("{base}#/explorer"));
    d.until("explorer", "return document.getElementById('filters')");
    d.type_in("#f-reason", "schema.");
    d.click("#apply");
    let total = d.until(
        "filtered rows",
        "const t = document.getElementById('total'); return t && location.hash.includes('reason=schema.') && t.textContent",
    );
    let reasons = d.js("return [...document.querySelectorAll('tr.row')].map(r => r.children[4].textContent)");
    let reasons = reasons.as_array().unwrap();
    assert!(!reasons.is_empty(), "{total}");
    assert!(
        reasons.iter().all(|r| r.as_str().unwrap().contains("schema.")),
        "{reasons:?}"
    );
    d.screenshot("explorer");

    // The hostile payload: shown as text, runs nothing.
    d.go(&format!("{base}#/explorer?reason=schema."));
    let key = d.until(
        "the xss row",
        "const rows = [...document.querySelectorAll('tr.row')]; return rows.length && rows.map(r => r.dataset.key)",
    );
    let mut xss_seen = false;
    for k in key.as_array().unwrap() {
        let k = k.as_str().unwrap();
        let (t, rest) = k.split_once('/').unwrap();
        d.go(&format!("{base}#/record/{t}/{rest}"));
        let payload = d.until(
            "payload",
            "const p = document.getElementById('payload'); return p && p.textContent",
        );
        if payload.as_str().unwrap().contains("window.__xss") {
            xss_seen = true;
            assert!(payload.as_str().unwrap().contains("<script>"), "{payload}");
            assert!(payload.as_str().unwrap().contains("onerror"), "{payload}");
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(d.js("return window.__xss === undefined"), json!(true), "script ran");
            assert_eq!(
                d.js("return document.querySelectorAll('#view img, #view script').length"),
                json!(0)
            );
            d.screenshot("record-hostile-payload");
            break;
        }
    }
    assert!(xss_seen, "the hostile record was found");

    // The MNIST record is drawn as a 28x28 image.
    d.go(&format!("{base}#/explorer?topic={mnist}"));
    d.until("mnist row", "return document.querySelector('tr.row')");
    d.click("tr.row");
    let drawn = d.until(
        "the digit",
        "const c = document.querySelector('canvas.digit'); if (!c) return 0; \
         const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let lit = 0; for (let i = 0; i < px.length; i += 4) if (px[i] > 0) lit++; return [c.width, c.height, lit]",
    );
    assert_eq!((drawn[0].as_u64(), drawn[1].as_u64()), (Some(28), Some(28)), "{drawn}");
    assert!(drawn[2].as_u64().unwrap() > 50, "the digit has ink: {drawn}");
    d.screenshot("record-mnist");

    // Release it, then the audit log shows it.
    d.type_in("#note", "label typo, digit is fine");
    d.click("#release");
    d.until(
        "released",
        "const s = document.getElementById('record-state'); return s && s.textContent === 'released'",
    );
    d.go(&format!("{base}#/audit"));
    let audit = d.until(
        "audit log",
        "const t = document.getElementById('audit-total'); return t && document.querySelector('#view table').textContent",
    );
    let audit = audit.as_str().unwrap();
    assert!(audit.contains("released") && audit.contains("alice"), "{audit}");
    assert!(audit.contains("label typo, digit is fine"), "{audit}");
    d.screenshot("audit");
    let out = read_topic(&broker.addr, &clean, 109, Duration::from_secs(3));
    assert_eq!(
        out.iter()
            .filter(|r| r.headers.iter().any(|(k, _)| k == "x-guard-release-id"))
            .count(),
        1
    );
    assert!(guard.term());
}
