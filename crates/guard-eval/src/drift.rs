//! `ingest-guard drift`: the streaming drift alarm run over a batch. The records go through
//! the stream's limits, decoding and schema checks; the valid ones fill windows of `window`
//! rows in order, each window is judged against the baseline by the same tests and alarm
//! policy as a running guard's partition (`Baseline::evaluate`, `AlarmState::update`), and a
//! last partial window is judged when it holds at least `drift.min_window_fraction` of a
//! window. Rows are judged in file order (as a stream would see them), or, with a shuffle
//! seed, in a seeded random order (for files sorted by some column, whose windows in file
//! order differ from the baseline by construction). The report has a row per feature, plus the whole input against the baseline for
//! the histograms of the HTML report.

use crate::read::{for_each_record, Input};
use crate::EvalError;
use guard_core::{AlarmPolicy, FeatureLayout, FeatureRows, Limits};
use guard_drift::TopicDrift;
use guard_stats::{AlarmState, FeatureDrift, Transition, WindowProfile};
use guard_validate::{decode, prescan, DomainSchema};
use serde::Serialize;
use std::path::Path;

/// One feature's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureOutcome {
    /// Feature name (`label` for the label).
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    /// Windows in which a test fired.
    pub firing_windows: usize,
    /// Windows (0-based) in which the alarm was raised.
    pub raised_in: Vec<usize>,
    /// The alarm was raised in some window.
    pub alarm: bool,
    /// Tests that fired in some window (`ks`, `psi`, `variance`).
    pub tests: Vec<String>,
    /// Largest KS statistic over the windows.
    pub max_ks: f64,
    /// Largest PSI over the windows.
    pub max_psi: f64,
    /// Variance ratio furthest from 1 (by log) over the windows.
    pub extreme_var_ratio: f64,
    /// The whole input against the baseline.
    pub whole: FeatureDrift,
    /// Bin edges (numeric) or categories then `(other)` (categorical), for the histograms.
    pub bins: Vec<String>,
    /// Baseline rows per bin.
    pub baseline_counts: Vec<u64>,
    /// Input rows per bin.
    pub input_counts: Vec<u64>,
}

/// What `drift` found.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// The schema's id.
    pub schema_id: String,
    /// SHA-256 of the baseline's data.
    pub baseline_sha256: String,
    /// The input in words.
    pub input: String,
    /// Valid rows judged.
    pub rows: u64,
    /// Rows that failed a check (not judged, as in the stream).
    pub skipped: u64,
    /// Rows per window.
    pub window: usize,
    /// Windows judged.
    pub windows: usize,
    /// Some feature's alarm was raised.
    pub alarm: bool,
    /// Per feature, numeric first, in baseline order.
    pub features: Vec<FeatureOutcome>,
}

/// Run the alarm over `input` against `baseline` (built for `schema`), in windows of
/// `window` rows (default: the baseline's).
pub fn check(
    schema: Option<&Path>,
    baseline: &Path,
    input: &Input<'_>,
    window: Option<usize>,
    policy: &AlarmPolicy,
    min_fraction: f64,
    shuffle: Option<u64>,
) -> Result<DriftReport, EvalError> {
    let schema = match schema {
        Some(path) => DomainSchema::load(path)?,
        None => {
            let text = std::fs::read(baseline).map_err(EvalError::io(baseline))?;
            let v: serde_json::Value = serde_json::from_slice(&text).map_err(|source| EvalError::Json {
                what: baseline.display().to_string(),
                source,
            })?;
            let s = v.get("schema").filter(|s| s.is_object()).ok_or_else(|| {
                EvalError::Input(format!(
                    "{} carries no schema (built before baselines kept theirs): give --schema",
                    baseline.display()
                ))
            })?;
            DomainSchema::from_value(s)
                .map_err(|(k, m)| EvalError::Input(format!("{}: its schema at {k}: {m}", baseline.display())))?
        }
    };
    let topic = TopicDrift::load(baseline, schema.guard()).map_err(|e| EvalError::Input(e.to_string()))?;
    let base = topic.baseline.clone();
    let window = window.unwrap_or(base.window).max(2);
    let layout = FeatureLayout::new(schema.guard()).map_err(|(k, m)| EvalError::Input(format!("{k}: {m}")))?;
    let mut rows = FeatureRows::new(&layout, true);
    let limits = Limits::default();
    let n = base.features.len();
    let mut states = vec![AlarmState::default(); n];
    let mut out: Vec<FeatureOutcome> = base
        .features
        .iter()
        .map(|f| FeatureOutcome {
            name: f.name.clone(),
            kind: if f.categories.is_some() {
                "categorical"
            } else {
                "numeric"
            },
            firing_windows: 0,
            raised_in: Vec::new(),
            alarm: false,
            tests: Vec::new(),
            max_ks: 0.0,
            max_psi: 0.0,
            extreme_var_ratio: 1.0,
            whole: FeatureDrift::none(),
            bins: match &f.categories {
                Some(c) => c.iter().cloned().chain(std::iter::once("(other)".to_owned())).collect(),
                None => {
                    let e = f.bins.edges();
                    (0..=e.len())
                        .map(|i| match (i.checked_sub(1).and_then(|j| e.get(j)), e.get(i)) {
                            (None, Some(hi)) => format!("< {hi}"),
                            (Some(lo), Some(hi)) => format!("{lo} – {hi}"),
                            (Some(lo), None) => format!("≥ {lo}"),
                            (None, None) => "all".to_owned(),
                        })
                        .collect()
                }
            },
            baseline_counts: f.profile.counts.clone(),
            input_counts: Vec::new(),
        })
        .collect();
    let mut current = WindowProfile::for_baseline(&base, false);
    let mut whole = WindowProfile::for_baseline(&base, false);
    let (mut used, mut skipped, mut windows) = (0u64, 0u64, 0usize);
    let mut judge = |w: &WindowProfile, windows: &mut usize, out: &mut [FeatureOutcome]| {
        let eval = base.evaluate(policy, w);
        for (i, o) in out.iter_mut().enumerate() {
            let (d, fire) = (&eval.drifts[i], eval.fired[i]);
            o.max_ks = o.max_ks.max(d.ks);
            o.max_psi = o.max_psi.max(d.psi);
            if d.var_ratio.is_finite() && d.var_ratio > 0.0 && d.var_ratio.ln().abs() > o.extreme_var_ratio.ln().abs() {
                o.extreme_var_ratio = d.var_ratio;
            }
            if fire.any() {
                o.firing_windows += 1;
                for (name, on) in [("ks", fire.ks), ("psi", fire.psi), ("variance", fire.variance)] {
                    if on && !o.tests.iter().any(|t| t == name) {
                        o.tests.push(name.to_owned());
                    }
                }
            }
            if states[i].update(policy, fire.any()) == Transition::Raised {
                o.raised_in.push(*windows);
                o.alarm = true;
            }
        }
        *windows += 1;
    };
    let mut held: Vec<serde_json::Value> = Vec::new();
    let mut push = |v: &serde_json::Value,
                    current: &mut WindowProfile,
                    whole: &mut WindowProfile,
                    used: &mut u64,
                    windows: &mut usize,
                    out: &mut Vec<FeatureOutcome>| {
        rows.clear();
        rows.push(&layout, 0, v, None);
        topic.push_row(current, rows.row(0));
        topic.push_row(whole, rows.row(0));
        *used += 1;
        if current.records >= window as u64 {
            judge(current, windows, out);
            *current = WindowProfile::for_baseline(&base, false);
        }
    };
    for_each_record(input, &mut |_, bytes| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let checked = prescan(bytes, &limits)
            .and_then(|()| decode(bytes))
            .map_err(|r| vec![r])
            .and_then(|v| schema.check(&v).map(|()| v));
        let Ok(v) = checked else {
            skipped += 1;
            return;
        };
        if shuffle.is_some() {
            held.push(v);
            return;
        }
        push(&v, &mut current, &mut whole, &mut used, &mut windows, &mut out);
    })?;
    if let Some(seed) = shuffle {
        // Fisher–Yates with the split's bucket hash: the same order for the same seed.
        for i in (1..held.len()).rev() {
            let j = (crate::split::draw(i as u64, seed) % (i as u64 + 1)) as usize;
            held.swap(i, j);
        }
        for v in &held {
            push(v, &mut current, &mut whole, &mut used, &mut windows, &mut out);
        }
    }
    let min = ((window as f64 * min_fraction).ceil() as u64).max(2);
    if current.records >= min {
        judge(&current, &mut windows, &mut out);
    }
    if used == 0 {
        return Err(EvalError::Input(format!(
            "no valid rows in {} ({skipped} failed the schema {})",
            input.describe(),
            schema.id()
        )));
    }
    let all = base.evaluate(policy, &whole);
    for (i, o) in out.iter_mut().enumerate() {
        o.whole = all.drifts[i];
        o.input_counts = whole.features[i].counts.clone();
    }
    Ok(DriftReport {
        schema_id: base.schema_id.clone(),
        baseline_sha256: base.data_sha256.clone(),
        input: input.describe(),
        rows: used,
        skipped,
        window,
        windows,
        alarm: out.iter().any(|o| o.alarm),
        features: out,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained HTML page: the table and, per feature, the input's share of rows per bin
/// against the baseline's (inline SVG, no script, no external resource).
pub fn html(r: &DriftReport) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>ingest-guard drift</title><style>");
    h.push_str("body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}.alarm{background:#fde2e2;font-weight:bold}.feature{display:inline-block;margin:1em 1em 0 0;vertical-align:top}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}");
    h.push_str("</style></head><body>");
    h.push_str(&format!(
        "<h1>Drift: {}</h1><p>{} rows of <code>{}</code> ({} failed the schema) in {} windows of {} rows, against the baseline of schema <code>{}</code> (data {}). <b>{}</b></p>",
        esc(&r.schema_id),
        r.rows,
        esc(&r.input),
        r.skipped,
        r.windows,
        r.window,
        esc(&r.schema_id),
        esc(&r.baseline_sha256.chars().take(12).collect::<String>()),
        if r.alarm { "Alarm raised." } else { "No alarm." }
    ));
    h.push_str("<table><tr><th>feature</th><th>kind</th><th>alarm</th><th>firing windows</th><th>tests</th><th>max KS</th><th>max PSI</th><th>variance ratio</th><th>whole-input KS</th><th>whole-input PSI</th></tr>");
    for f in &r.features {
        h.push_str(&format!(
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            if f.alarm { " class=\"alarm\"" } else { "" },
            esc(&f.name),
            f.kind,
            if f.alarm { "raised" } else { "–" },
            f.firing_windows,
            esc(&f.tests.join(", ")),
            f.max_ks,
            f.max_psi,
            f.extreme_var_ratio,
            f.whole.ks,
            f.whole.psi
        ));
    }
    h.push_str("</table><p class=\"legend\">Share of rows per bin:<span style=\"background:#9ab\"></span>baseline<span style=\"background:#d62\"></span>input</p>");
    for f in &r.features {
        let total = |c: &[u64]| c.iter().sum::<u64>().max(1) as f64;
        let (tb, ti) = (total(&f.baseline_counts), total(&f.input_counts));
        let k = f.baseline_counts.len().max(1);
        let max = f
            .baseline_counts
            .iter()
            .map(|c| *c as f64 / tb)
            .chain(f.input_counts.iter().map(|c| *c as f64 / ti))
            .fold(1e-9, f64::max);
        let (w, hgt) = (360.0, 120.0);
        let bw = w / k as f64;
        h.push_str(&format!(
            "<div class=\"feature\"><b{}>{}</b><br><svg width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"{}\">",
            if f.alarm { " style=\"color:#b00\"" } else { "" },
            esc(&f.name),
            hgt + 2.0,
            esc(&f.name)
        ));
        for (i, label) in f.bins.iter().enumerate().take(k) {
            let b = f.baseline_counts.get(i).copied().unwrap_or(0) as f64 / tb / max * hgt;
            let x = f.input_counts.get(i).copied().unwrap_or(0) as f64 / ti / max * hgt;
            let x0 = i as f64 * bw;
            h.push_str(&format!(
                "<g><title>{}: baseline {:.1} %, input {:.1} %</title><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#9ab\"/><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#d62\"/></g>",
                esc(label),
                100.0 * f.baseline_counts.get(i).copied().unwrap_or(0) as f64 / tb,
                100.0 * f.input_counts.get(i).copied().unwrap_or(0) as f64 / ti,
                x0 + 1.0,
                hgt - b,
                (bw / 2.0 - 1.0).max(0.5),
                b,
                x0 + bw / 2.0,
                hgt - x,
                (bw / 2.0 - 1.0).max(0.5),
                x
            ));
        }
        h.push_str("</svg></div>");
    }
    h.push_str("</body></html>\n");
    h
}
