//! The review API of the real binary against the real broker: authentication, CSRF, origin and
//! path checks; overview, explorer filters, record detail, decisions, export; a release
//! clicked twice puts exactly one record on the clean topic; and after a restart (`serve` on the
//! same folder) the audit log and the release are still there.

use crate::support::*;
use base64::Engine as _;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `ingest-guard serve ARGS --listen` on a free port, once it answers: the process and port.
fn spawn_serve(args: &[String]) -> (std::process::Child, u16) {
    let port = free_port();
    let child = Command::new(guard_bin())
        .arg("serve")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "serve", || {
        http_request(port, "GET", "/review", &[], "").is_some_and(|r| r.status == 200)
    });
    (child, port)
}

#[test]
fn review_api_decides_releases_once_and_keeps_the_audit_log() {
    let rig = Rig::new(1);
    // A baseline, so the record detail can place feature values in it.
    let baseline = rig.dir.path().join("shuttle.baseline.json");
    let built = run_baseline(&repo().join("schemas/samples/shuttle.valid.jsonl"), &baseline, 20, 100);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let mut guard = rig.guard_full(
        Some(&rig.output),
        &format!(
            "[review]\nrefresh_interval_ms = 200\n[[review.reviewers]]\nname = \"alice\"\npassword_sha256 = \"{DEMO_SHA}\"\n"
        ),
        "",
        &format!("baseline = \"{}\"\n", baseline.display()),
    );
    guard.start();
    guard.wait_ready(Duration::from_secs(60));
    let mut records = shuttle_mix(200, 20);
    let xss = br#"{"source":"<script>alert(1)</script>","features":"\"><img src=x onerror=alert(1)>","label":0}"#;
    records.push((Some("xss".into()), xss.to_vec()));
    rig.produce(&records);
    rig.wait_committed(records.len(), Duration::from_secs(60), "review stream");
    let port = guard.port;

    // Without credentials: refused; the page itself is static and locked down by CSP.
    let anon = http_request(port, "GET", "/api/review/records", &[], "").unwrap();
    assert_eq!(anon.status, 401);
    let wrong = http_request(
        port,
        "GET",
        "/api/review/records",
        &[(
            "Authorization",
            &format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("alice:nope")
            ),
        )],
        "",
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    let page = http_request(port, "GET", "/review", &[], "").unwrap();
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));

    let a = api(port);
    // The index catches up with the quarantine files.
    let mut total = 0;
    wait_for(Duration::from_secs(20), "review index", || {
        total = a.get("/api/review/records").json()["total"].as_u64().unwrap_or(0);
        total == 11
    });
    let q = quarantined(&guard.quarantine);
    assert_eq!(total as usize, q.len(), "every quarantined row is in the index");

    let o = a.get("/api/review/overview").json();
    assert_eq!(o["quarantined"], 11, "{o}");
    assert!(o["counters"]["records_in"].as_u64().unwrap() >= 201, "{o}");
    assert!(o["reasons"].as_array().unwrap().len() >= 2, "{o}");
    assert_eq!(
        o["drift"][0]["features"].as_array().map(Vec::len),
        Some(10),
        "9 features and the label: {o}"
    );
    assert_eq!(o["facts"]["mode"], "enforce", "{o}");

    // Filter by reason (prefix) and by source; paths in parameters are refused.
    let schema = a.get("/api/review/records?reason=schema.&page_size=100").json();
    assert!(schema["total"].as_u64().unwrap() >= 1, "{schema}");
    assert!(schema["rows"].as_array().unwrap().iter().all(|r| r["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c.as_str().unwrap().starts_with("schema."))));
    assert_eq!(a.get("/api/review/records?topic=../../etc").status, 400);
    assert_eq!(a.get("/api/review/records/..%2F..%2Fetc/0/0").status, 400);
    assert_eq!(a.get("/api/review/records?bogus=1").status, 400);

    // The XSS record: its payload comes back as data, byte for byte.
    let xss_key = q
        .keys()
        .find(|k| a.get(&format!("/api/review/records/{}/{}/{}", k.0, k.1, k.2)).json()["record"]["key"] == "xss")
        .cloned()
        .unwrap();
    let d = a.get(&format!(
        "/api/review/records/{}/{}/{}",
        xss_key.0, xss_key.1, xss_key.2
    ));
    assert_eq!(d.status, 200);
    assert_eq!(d.json()["record"]["payload"].as_str().unwrap().as_bytes(), xss);
    assert_eq!(d.header("cache-control"), Some("no-store"));

    // Decisions need the CSRF token and a same-origin request.
    let base = format!("/api/review/records/{}/{}/{}", xss_key.0, xss_key.1, xss_key.2);
    let no_csrf = http_request(
        port,
        "POST",
        &format!("{base}/decision"),
        &[("Authorization", &a.auth), ("Content-Type", "application/json")],
        r#"{"decision":"confirmed_poison"}"#,
    )
    .unwrap();
    assert_eq!(no_csrf.status, 403);
    let cross = http_request(
        port,
        "POST",
        &format!("{base}/decision"),
        &[
            ("Authorization", &a.auth),
            ("x-csrf-token", &a.csrf),
            ("Origin", "http://evil.example"),
            ("Content-Type", "application/json"),
        ],
        r#"{"decision":"confirmed_poison"}"#,
    )
    .unwrap();
    assert_eq!(cross.status, 403);
    let ok = a.post(
        &format!("{base}/decision"),
        r#"{"decision":"confirmed_poison","note":"xss probe"}"#,
    );
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Release a held valid-looking record twice: one record on the clean topic.
    let victim = q
        .keys()
        .find(|k| {
            **k != xss_key
                && a.get(&format!("/api/review/records/{}/{}/{}", k.0, k.1, k.2)).json()["record"]["payload_truncated"]
                    == false
        })
        .cloned()
        .unwrap();
    let rbase = format!("/api/review/records/{}/{}/{}", victim.0, victim.1, victim.2);
    let first = a.post(&format!("{rbase}/release"), r#"{"note":"false alarm"}"#);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["already"], false);
    let second = a.post(&format!("{rbase}/release"), "{}");
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["already"], true);
    assert_eq!(second.json()["landed"], first.json()["landed"]);
    let release_id = format!("{}/{}/{}", victim.0, victim.1, victim.2);
    let clean = read_topic(&rig.broker.addr, &rig.output, 190, Duration::from_secs(3));
    let released: Vec<&OutRecord> = clean
        .iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == "x-guard-release-id" && v.as_deref() == Some(release_id.as_bytes()))
        })
        .collect();
    assert_eq!(released.len(), 1, "released exactly once");
    let rel = released[0];
    assert!(rel
        .headers
        .iter()
        .any(|(k, v)| k == "x-guard-released-by" && v.as_deref() == Some(&b"alice"[..])));
    let original = a.get(&rbase).json();
    assert_eq!(
        rel.payload.as_deref().map(|p| String::from_utf8_lossy(p).into_owned()),
        original["record"]["payload"].as_str().map(str::to_owned)
    );
    assert_eq!(rel.key.as_deref(), original["record"]["key"].as_str());
    assert_eq!(a.get(&rbase).json()["state"], "released");

    // Feature values against the baseline, where the payload has them; the feature view.
    let placed = q.keys().any(|k| {
        let d = a.get(&format!("/api/review/records/{}/{}/{}", k.0, k.1, k.2)).json();
        d["features"].as_array().is_some_and(|f| {
            f.len() == 9
                && f.iter()
                    .any(|x| x["value"].is_number() && x["quantile_high"].as_f64().is_some_and(|h| h > 0.0))
        })
    });
    assert!(placed, "some held record has its features placed in the baseline");
    let fv = a.get("/api/review/features").json();
    assert_eq!(fv["available"], true, "{fv}");
    assert!(
        fv["stats"]["topics"][0]["current"]["features"][0]["baseline_counts"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{fv}"
    );

    // Feedback and export.
    let fb = a.get("/api/review/feedback").json();
    assert!(
        fb["by_reason"]
            .as_object()
            .unwrap()
            .values()
            .any(|r| r["false_positive"] == 1),
        "{fb}"
    );
    let csv = a.get("/api/review/export?format=csv&reason=schema.");
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.body.lines().count() as u64,
        schema["total"].as_u64().unwrap() + 1,
        "{}",
        csv.body
    );
    assert_eq!(a.get("/api/review/export?format=xml").status, 400);
    assert!(guard.metric_sum("guard_review_releases_total") >= 2.0);

    // Restart: the standalone server on the same folder reads the audit log back.
    assert!(guard.term());
    let (mut serve, sport) = spawn_serve(&["--config".into(), guard.config.display().to_string()]);
    let b = api(sport);
    // Sign-in by form and cookie; sign-out ends the session.
    let login = http_request(
        sport,
        "POST",
        "/api/review/login",
        &[("Content-Type", "application/json")],
        r#"{"name":"alice","password":"demo"}"#,
    )
    .unwrap();
    assert_eq!(login.status, 200, "{}", login.body);
    let set_cookie = login.header("set-cookie").unwrap().to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = login.json()["csrf"].as_str().unwrap().to_owned();
    let with_cookie = |m: &str, p: &str, h: &[(&str, &str)]| {
        let mut hs = vec![("Cookie", cookie.as_str())];
        hs.extend_from_slice(h);
        http_request(sport, m, p, &hs, "").unwrap()
    };
    assert_eq!(
        with_cookie("GET", "/api/review/session", &[]).json()["reviewer"],
        "alice"
    );
    assert_eq!(
        with_cookie("POST", "/api/review/logout", &[]).status,
        403,
        "sign-out needs the CSRF token"
    );
    assert_eq!(
        with_cookie("POST", "/api/review/logout", &[("x-csrf-token", &csrf)]).status,
        200
    );
    assert_eq!(with_cookie("GET", "/api/review/session", &[]).status, 401);
    let bad = http_request(
        sport,
        "POST",
        "/api/review/login",
        &[("Content-Type", "application/json")],
        r#"{"name":"alice","password":"guess"}"#,
    )
    .unwrap();
    assert_eq!(bad.status, 401);
    let audit = b.get("/api/review/audit").json();
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["released", "release_started", "confirmed_poison"],
        "{audit}"
    );
    assert_eq!(audit["entries"][2]["note"], "xss probe");
    assert_eq!(audit["entries"][2]["reviewer"], "alice");
    let again = b.post(&format!("{rbase}/release"), "{}");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["already"], true);
    let m = http_request(sport, "GET", "/metrics", &[], "").unwrap();
    assert!(
        m.body.contains("guard_review_releases_total{outcome=\"already\"} 1"),
        "{}",
        m.body
    );
    let _ = serve.kill();
    let _ = serve.wait();

    // Read-only, standalone on the folder alone: browsing works, acting does not.
    let (mut ro, rport) = spawn_serve(&[
        "--read-only".into(),
        "--quarantine".into(),
        guard.quarantine.display().to_string(),
        "--reviewer".into(),
        format!("alice:{DEMO_SHA}"),
    ]);
    let c = api(rport);
    assert_eq!(c.get("/api/review/records").json()["total"], 11);
    let refused = c.post(&format!("{base}/decision"), r#"{"decision":"false_positive"}"#);
    assert_eq!(refused.status, 409, "{}", refused.body);
    let _ = ro.kill();
    let _ = ro.wait();
}
