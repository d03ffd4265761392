//! `ingest-guard baseline`: build a trusted reference profile from a JSONL file.

use anyhow::Context;
use guard_core::Limits;
use guard_stats::BaselineBuilder;
use guard_validate::{decode, prescan, DomainSchema};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::ExitCode;

/// Options of `ingest-guard baseline`.
pub struct BaselineArgs<'a> {
    pub schema: &'a Path,
    pub input: &'a Path,
    pub out: &'a Path,
    pub window: usize,
    pub bins: usize,
    pub resamples: usize,
}

pub fn run(a: &BaselineArgs<'_>) -> anyhow::Result<ExitCode> {
    let schema = DomainSchema::load(a.schema)?;
    let bytes = std::fs::read(a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let sha = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let names: Vec<String> = schema.guard().numeric.iter().map(|f| f.name.clone()).collect();
    let cat_names = schema.categorical_names();
    let mut builder = BaselineBuilder::new(names.clone()).with_categorical(cat_names.clone());
    let mut cats: Vec<Option<String>> = Vec::with_capacity(cat_names.len());
    let limits = Limits::default();
    let (mut used, mut skipped) = (0u64, 0u64);
    let mut first_skip = None;
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let checked = prescan(line, &limits)
            .and_then(|()| decode(line))
            .map_err(|r| vec![r])
            .and_then(|v| schema.check(&v).map(|()| v));
        match checked {
            Ok(v) => {
                cats.clear();
                schema.for_each_categorical(&v, |_, c| cats.push(c.map(str::to_owned)));
                let cat_refs: Vec<Option<&str>> = cats.iter().map(Option::as_deref).collect();
                builder.push_row(&schema.numeric_features(&v), &cat_refs, schema.label(&v).as_deref());
                used += 1;
            }
            Err(reasons) => {
                skipped += 1;
                first_skip.get_or_insert_with(|| format!("line {}: {}", i + 1, reasons[0].code));
            }
        }
    }
    anyhow::ensure!(
        used > 0,
        "no valid rows in {} (first problem: {first_skip:?})",
        a.input.display()
    );
    let baseline = builder.build(schema.id(), &sha, a.bins, a.window, a.resamples)?;
    let text = serde_json::to_vec_pretty(&baseline)?;
    let tmp = a.out.with_extension("tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, a.out).with_context(|| format!("renaming to {}", a.out.display()))?;
    println!(
        "baseline {} for schema {}: {used} rows ({skipped} invalid rows skipped{}), {} numeric and {} categorical features, {} labels, window {}, sha256 {sha}",
        a.out.display(),
        schema.id(),
        first_skip.map(|s| format!(", first: {s}")).unwrap_or_default(),
        names.len(),
        cat_names.len(),
        baseline.labels.len(),
        a.window,
    );
    Ok(ExitCode::SUCCESS)
}
