//! The configuration files shipped in the repository parse without unknown keys or invalid
//! values (paths they name are not checked here; `ingest-guard check` does that).

use guard_config::Config;

#[test]
fn shipped_configs_parse_cleanly() {
    let root = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../..");
    for file in ["config/reference.toml", "config/demo.toml", "deploy/production.toml"] {
        let loaded = Config::load_lenient(&root.join(file), std::iter::empty());
        // Secret files (`*_file`) live on the deployment, not in the repository.
        let problems: Vec<_> = loaded
            .problems
            .iter()
            .filter(|p| !p.key.ends_with(guard_config::SECRET_FILE_SUFFIX))
            .collect();
        assert!(problems.is_empty(), "{file}: {problems:?}");
    }
}

#[test]
fn drift_keys_are_checked() {
    let text = "[kafka]\noutput_topic = \"out\"\n[[routes]]\ntopic = \"in\"\nschema = \"s.json\"\n\
                [drift]\nwebhook_url = \"https://x\"\nevents_topic = \"in\"\nmin_window_fraction = 0\n\
                [drift.alarm]\nconsecutive = 0\nfdr = 2\n[drift.breaker]\nmax_quarantine_rate = 0\ncolour = 1\n";
    let mut problems = Vec::new();
    let cfg = Config::parse_str(text, "t.toml", std::iter::empty(), &mut problems);
    problems.extend(cfg.validate("t.toml"));
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for want in [
        "drift.webhook_url",
        "drift.events_topic",
        "drift.min_window_fraction",
        "drift.alarm.consecutive",
        "drift.alarm.fdr",
        "drift.breaker.max_quarantine_rate",
        "drift.breaker.colour",
    ] {
        assert!(keys.contains(&want), "{want} not reported: {keys:?}");
    }
}
