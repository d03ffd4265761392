//! A trusted reference profile (`ingest-guard baseline`) from a record set. Every row goes
//! through the same limits, decoding and schema checks as in the stream; rows that fail are
//! counted and skipped.

use crate::read::{for_each_record, Input, Locator};
use crate::EvalError;
use guard_core::Limits;
use guard_stats::BaselineBuilder;
use guard_validate::{decode, prescan, DomainSchema};
use std::path::Path;

/// Options of `ingest-guard baseline`.
pub struct BaselineArgs<'a> {
    /// The domain schema.
    pub schema: &'a Path,
    /// The trusted rows.
    pub input: Input<'a>,
    /// The baseline file to write (atomically, through a `.tmp` file).
    pub out: &'a Path,
    /// Rows per drift window the baseline is calibrated for.
    pub window: usize,
    /// Most bins per numeric feature.
    pub bins: usize,
    /// Resampled windows for the calibration of the alarm levels.
    pub resamples: usize,
}

/// What a baseline build did.
pub struct BaselineReport {
    /// The schema's id.
    pub schema_id: String,
    /// The input in words.
    pub described: String,
    /// SHA-256 of what was read.
    pub sha256: String,
    /// Rows that passed the checks and went into the baseline.
    pub used: u64,
    /// Rows that failed a check.
    pub skipped: u64,
    /// Where the first skipped row was and why.
    pub first_skip: Option<String>,
    /// Numeric features profiled.
    pub numeric: usize,
    /// Categorical features profiled.
    pub categorical: usize,
    /// Distinct labels seen.
    pub labels: usize,
}

struct Collector<'s> {
    schema: &'s DomainSchema,
    builder: BaselineBuilder,
    limits: Limits,
    cats: Vec<Option<String>>,
    values: Vec<f32>,
    used: u64,
    skipped: u64,
    first_skip: Option<String>,
}

impl Collector<'_> {
    fn push(&mut self, what: Locator<'_>, bytes: &[u8]) {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let schema = self.schema;
        let checked = prescan(bytes, &self.limits)
            .and_then(|()| decode(bytes))
            .map_err(|r| vec![r])
            .and_then(|v| schema.check(&v).map(|()| v));
        match checked {
            Ok(v) => {
                self.cats.clear();
                let cats = &mut self.cats;
                schema.for_each_categorical(&v, |_, c| cats.push(c.map(str::to_owned)));
                let refs: Vec<Option<&str>> = self.cats.iter().map(Option::as_deref).collect();
                self.builder
                    .push_row(&schema.numeric_features(&v), &refs, schema.label(&v).as_deref());
                // The near-duplicate profile reads the row as the stream's typed rows do.
                let mut one = guard_core::FeatureRows::new(schema.layout(), true);
                one.push(schema.layout(), 0, &v, None);
                self.values.clear();
                self.values.extend(one.row(0).values());
                self.builder.push_values(&self.values);
                self.used += 1;
            }
            Err(reasons) => {
                self.skipped += 1;
                if self.first_skip.is_none() {
                    let code = reasons.first().map_or_else(|| "?".to_owned(), |r| r.code.to_string());
                    self.first_skip = Some(format!("{}: {code}", what()));
                }
            }
        }
    }
}

/// Build the baseline and write it to `a.out`.
pub fn build(a: &BaselineArgs<'_>) -> Result<BaselineReport, EvalError> {
    let schema = DomainSchema::load(a.schema)?;
    let names: Vec<String> = schema.guard().numeric.iter().map(|f| f.name.clone()).collect();
    let cat_names = schema.categorical_names();
    let mut c = Collector {
        schema: &schema,
        builder: BaselineBuilder::new(names.clone()).with_categorical(cat_names.clone()),
        limits: Limits::default(),
        cats: Vec::with_capacity(cat_names.len()),
        values: Vec::new(),
        used: 0,
        skipped: 0,
        first_skip: None,
    };
    let sha = for_each_record(&a.input, &mut |what, bytes| c.push(what, bytes))?;
    let described = a.input.describe();
    if c.used == 0 {
        return Err(EvalError::Input(format!(
            "no valid rows in {described} (first problem: {:?})",
            c.first_skip
        )));
    }
    let (used, skipped, first_skip) = (c.used, c.skipped, c.first_skip.take());
    let mut baseline = c.builder.build(schema.id(), &sha, a.bins, a.window, a.resamples)?;
    let schema_text = std::fs::read(a.schema).map_err(EvalError::io(a.schema))?;
    baseline.schema = serde_json::from_slice(&schema_text).ok();
    let text = serde_json::to_vec_pretty(&baseline).map_err(|source| EvalError::Json {
        what: "the baseline".into(),
        source,
    })?;
    let tmp = a.out.with_extension("tmp");
    std::fs::write(&tmp, &text).map_err(EvalError::io(&tmp))?;
    std::fs::rename(&tmp, a.out).map_err(EvalError::io(a.out))?;
    Ok(BaselineReport {
        schema_id: schema.id().to_string(),
        described,
        sha256: sha,
        used,
        skipped,
        first_skip,
        numeric: names.len(),
        categorical: cat_names.len(),
        labels: baseline.labels.len(),
    })
}
