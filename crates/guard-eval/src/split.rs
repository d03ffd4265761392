//! `ingest-guard split`: a sample into trusted rows (to infer, baseline and train on) and
//! held-out rows (to evaluate and stream), deterministically. Row `i` is trusted when
//! `bucket(i, seed)` is below `10 × (1 − holdout)` and, with `trusted_when`, its field equals
//! the given value (rows a data set marks as known-bad, such as Shuttle's anomalies, are then
//! never trained on); every other row is held out.

use crate::read::{for_each_record, Input};
use crate::EvalError;
use guard_core::FieldPath;
use serde_json::Value;
use std::io::Write;
use std::path::Path;

/// How rows are split.
#[derive(Debug, Clone)]
pub struct SplitRule {
    /// Share of rows held out, in tenths (0.1 to 0.9).
    pub holdout: f64,
    /// Seed of the bucket function.
    pub seed: u64,
    /// Only rows whose field equals the value may be trusted.
    pub trusted_when: Option<FieldEquals>,
}

/// `POINTER=VALUE`: a field and the JSON value it must equal (`/label=0`, `/kind="normal"`;
/// a value that is not JSON is taken as a string).
#[derive(Debug, Clone)]
pub struct FieldEquals {
    /// The field.
    pub path: FieldPath,
    /// The value.
    pub value: Value,
}

impl std::str::FromStr for FieldEquals {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (p, v) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected POINTER=VALUE, e.g. /label=0"))?;
        let pointer = if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("/{p}")
        };
        let path = FieldPath::parse(&pointer)?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        Ok(Self { path, value })
    }
}

impl FieldEquals {
    /// Whether `row` holds the value at the field (numbers compare by value: 0 equals 0.0).
    pub fn matches(&self, row: &Value) -> bool {
        match (self.path.get(row), &self.value) {
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Some(a), b) => a == b,
            (None, _) => false,
        }
    }
}

impl SplitRule {
    /// Check the rule's figures.
    pub fn validate(&self) -> Result<(), EvalError> {
        let tenths = self.holdout * 10.0;
        if !(1.0..=9.0).contains(&tenths) || (tenths - tenths.round()).abs() > 1e-9 {
            return Err(EvalError::Input(format!(
                "holdout {} must be 0.1, 0.2, … or 0.9 (rows are split in tenths)",
                self.holdout
            )));
        }
        Ok(())
    }

    /// Whether row `i` (parsed as `row`, `None` when it is not JSON) is trusted.
    pub fn trusted(&self, i: usize, row: Option<&Value>) -> bool {
        let keep = (10.0 * (1.0 - self.holdout)).round() as u64;
        bucket(i as u64, self.seed) < keep
            && row.is_some_and(|r| self.trusted_when.as_ref().is_none_or(|t| t.matches(r)))
    }
}

/// Counts of one split.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SplitCounts {
    /// Rows written to the trusted file.
    pub trusted: usize,
    /// Rows written to the held-out file.
    pub heldout: usize,
}

/// Split the records of `input` into the two JSONL files (records are copied byte for byte;
/// blank lines are dropped).
pub fn split(input: &Input<'_>, rule: &SplitRule, trusted: &Path, heldout: &Path) -> Result<SplitCounts, EvalError> {
    rule.validate()?;
    let open = |p: &Path| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .map_err(EvalError::io(p))
    };
    let (mut t, mut h) = (open(trusted)?, open(heldout)?);
    let mut counts = SplitCounts::default();
    let mut i = 0usize;
    let mut failed: Option<EvalError> = None;
    for_each_record(input, &mut |_, bytes| {
        let bytes = bytes.trim_ascii();
        if bytes.is_empty() || failed.is_some() {
            return;
        }
        let row: Option<Value> = serde_json::from_slice(bytes).ok();
        let (out, path, n) = if rule.trusted(i, row.as_ref()) {
            (&mut t, trusted, &mut counts.trusted)
        } else {
            (&mut h, heldout, &mut counts.heldout)
        };
        match out.write_all(bytes).and_then(|()| out.write_all(b"\n")) {
            Ok(()) => *n += 1,
            Err(e) => failed = Some(EvalError::io(path)(e)),
        }
        i += 1;
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    t.flush().map_err(EvalError::io(trusted))?;
    h.flush().map_err(EvalError::io(heldout))?;
    Ok(counts)
}

/// The same split over rows in memory: (trusted, held-out).
pub fn split_rows(rows: Vec<Value>, rule: &SplitRule) -> (Vec<Value>, Vec<Value>) {
    let (mut t, mut h) = (Vec::new(), Vec::new());
    for (i, r) in rows.into_iter().enumerate() {
        if rule.trusted(i, Some(&r)) {
            t.push(r);
        } else {
            h.push(r);
        }
    }
    (t, h)
}

/// Seed of the committed models' split (scripts/train_models.py `--seed`).
pub const SPLIT_SEED: u64 = 7;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Row `i`'s bucket 0..9 (the same function as `bucket` in scripts/train_models.py).
pub fn bucket(i: u64, seed: u64) -> u64 {
    splitmix64(seed.wrapping_mul(1_000_003).wrapping_add(i)) % 10
}

/// A second, independent draw for choosing attacked rows.
pub(crate) fn draw(i: u64, salt: u64) -> u64 {
    splitmix64(i ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_matches_the_python_split() {
        // Values printed by scripts/train_models.py's bucket(i, 7) for i = 0..10.
        let want = [8, 8, 6, 3, 7, 8, 9, 6, 9, 9];
        let got: Vec<u64> = (0..10).map(|i| bucket(i, SPLIT_SEED)).collect();
        assert_eq!(got, want);
    }
}
