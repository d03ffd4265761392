//! The deployment files: every guard configuration embedded in the Kubernetes manifests is a
//! valid configuration (the schemas and secret files they name live on the cluster), secrets
//! reach the guard through Secret objects, and the guard's probes point at its endpoints.
//! The manifests themselves are validated against the Kubernetes API schemas by
//! `scripts/validate-deploy.sh` (run by scripts/test.sh).

use crate::support::repo;
use yaml_rust2::YamlLoader;

fn manifests() -> Vec<(String, yaml_rust2::Yaml)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("deploy/kubernetes")).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p).unwrap();
            for doc in YamlLoader::load_from_str(&text).unwrap() {
                out.push((p.display().to_string(), doc));
            }
        }
    }
    out
}

#[test]
fn kubernetes_manifests_carry_valid_guard_configs_and_secrets_by_reference() {
    let docs = manifests();
    let mut configs = 0;
    for (file, d) in &docs {
        if d["kind"].as_str() == Some("ConfigMap") {
            if let Some(toml) = d["data"]["guard.toml"].as_str() {
                let mut problems = Vec::new();
                let cfg = guard_config::Config::parse_str(toml, file, std::iter::empty(), &mut problems);
                problems.extend(cfg.validate(file));
                assert!(problems.is_empty(), "{file}: {problems:?}");
                // No secret values in a ConfigMap: passwords come from *_file or the environment.
                for (k, v) in &cfg.kafka.properties {
                    assert!(
                        !guard_config::is_secret_key(k)
                            || k == "sasl.username"
                            || k == "sasl.mechanisms"
                            || k.ends_with("_file"),
                        "{file}: {k} = {v:?} is a secret in a ConfigMap"
                    );
                }
                assert_eq!(cfg.pipeline.workers, guard_config::Workers::Auto, "{file}");
                assert!(cfg.quarantine.url.is_some(), "{file}: quarantine in object storage");
                configs += 1;
            }
        }
    }
    assert!(configs >= 2, "standalone and sidecar configs");
    let mut probed = 0;
    for (file, d) in &docs {
        let spec = &d["spec"]["template"]["spec"];
        for list in ["containers", "initContainers"] {
            for c in spec[list].as_vec().into_iter().flatten() {
                if !c["image"].as_str().is_some_and(|i| i.contains("ingest-guard")) {
                    continue;
                }
                assert_eq!(
                    c["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz"),
                    "{file}"
                );
                assert!(
                    c["resources"]["limits"]["memory"].as_str().is_some(),
                    "{file}: memory limit"
                );
                assert!(
                    c["resources"]["limits"]["cpu"].as_str().is_some(),
                    "{file}: a CPU limit for workers = auto"
                );
                let env_secret = c["envFrom"]
                    .as_vec()
                    .into_iter()
                    .flatten()
                    .any(|e| e["secretRef"]["name"].as_str().is_some());
                assert!(env_secret, "{file}: bucket credentials from a Secret");
                probed += 1;
            }
        }
    }
    assert!(probed >= 2, "the Deployment and the sidecar");
    assert!(
        docs.iter()
            .any(|(_, d)| d["kind"].as_str() == Some("PodDisruptionBudget")),
        "a PodDisruptionBudget"
    );
}
