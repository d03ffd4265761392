//! `ingest-guard check` reports every problem with file and key.

use crate::support::*;
use std::process::Command;

#[test]
fn check_reports_unknown_key_missing_schema_and_bad_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        r#"
[kafka]
brokers = "not a host:99999"
output_topic = "clean"
colour = "blue"

[[routes]]
topic = "in"
schema = "no/such/schema.json"
"#,
    )
    .unwrap();
    let out = Command::new(guard_bin())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check must fail");
    assert!(err.contains("kafka.colour") && err.contains("unknown key"), "{err}");
    assert!(
        err.contains("routes[0].schema") && err.contains("no/such/schema.json"),
        "{err}"
    );
    assert!(err.contains("kafka.brokers") && err.contains("99999"), "{err}");
    assert!(err.contains(&config.display().to_string()), "names the file: {err}");
    assert!(err.contains("3 problem(s)"), "{err}");

    // The shipped demo config is clean (it scores with the committed models), and `check`
    // shows the provider and where the nodes run.
    let out = Command::new(guard_bin())
        .args(["check", "--config"])
        .arg(repo().join("config/demo.toml"))
        .env(
            "ORT_DYLIB_PATH",
            repo().join(".tools/onnxruntime/libonnxruntime.so.1.31.1"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("scoring provider: cpu") && stdout.contains("nodes on CPUExecutionProvider"),
        "{stdout}"
    );
    // Without the ONNX Runtime library: a clear problem, not a crash.
    let out = Command::new(guard_bin())
        .args(["check", "--config"])
        .arg(repo().join("config/demo.toml"))
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ONNX Runtime library"));
}
