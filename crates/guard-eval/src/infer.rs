//! A first domain schema from trusted records (`ingest-guard schema infer`): JSON Schema
//! 2020-12 plus the `x-guard` section, for a person to review before it guards a topic (the
//! bar TensorFlow Data Validation sets: infer from statistics, then review).
//!
//! Per top-level field, from the rows that decode as JSON objects:
//! * numbers: `integer` when every value is whole, else `number`; the observed range widened
//!   by [`InferOptions::margin`] × the span on each side (a span of zero counts as
//!   max(|value|, 1)), never below 0 when no value was negative; an `x-guard` numeric feature.
//!   Fractional numbers that all lie on a grid of 1/2, 1/4, 1/8 or 1/16 (at least
//!   [`GRID_MIN_VALUES`] of them) get `multipleOf` that step: a feature recorded on a coarse
//!   grid (a rating in halves, a three-level indicator coded 0, 0.5, 1) rejects a fabricated
//!   value between its levels. Only steps that are powers of two, the levels of a coded
//!   feature (a decimal precision says more about how a producer prints numbers), and which
//!   the typed fast path can test exactly;
//! * strings with at most `categorical_max` distinct values: an `enum` and an `x-guard`
//!   categorical feature; other strings: a length bound of twice the longest seen;
//! * arrays of numbers of one fixed length: up to `numeric_array_max` elements, one numeric
//!   feature per element (`name_0`, …); longer, an `x-guard` tensor (a square length gets a
//!   square shape, `[n, n]`, else `[len]`), with `minItems = maxItems` and the element range;
//! * booleans: `boolean`;
//! * the label (`--label`): an `enum` of the values seen, `x-guard.label`, `label_classes`;
//! * the source (`--source`): a string up to 128 characters, `x-guard.source`;
//! * fields present in every row are `required`; a field that is sometimes `null` accepts
//!   `null` too; `additionalProperties: false`.
//!
//! * arrays nested as a rectangular block of numbers (`ndarray.tolist()`): an `x-guard`
//!   tensor of that shape, `"channels": "last"` when it is `[h, w, c]` with c ≤ 4, h, w ≥ 8;
//!
//! Nested objects, arrays of mixed or non-numeric items, arrays of varying length or ragged
//! nesting and fields of mixed types are refused with a message naming the field: those need
//! a person. Every
//! inferred constraint carries a `description` saying what data it came from.

use crate::read::{for_each_record, Input};
use crate::EvalError;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Options of `schema infer`.
#[derive(Debug, Clone)]
pub struct InferOptions {
    /// The label field, if the records carry one.
    pub label: Option<String>,
    /// The source (producer) field, if the records carry one.
    pub source: Option<String>,
    /// Most distinct values for a string field to become categorical.
    pub categorical_max: usize,
    /// Longest numeric array that becomes one numeric feature per element.
    pub numeric_array_max: usize,
    /// Share of the observed span added below and above a numeric range.
    pub margin: f64,
    /// `x-guard.id` (and the `$id` suffix).
    pub id: String,
}

impl Default for InferOptions {
    fn default() -> Self {
        Self {
            label: None,
            source: None,
            categorical_max: 20,
            numeric_array_max: 32,
            margin: 0.5,
            id: "inferred-v1".into(),
        }
    }
}

/// Fewest numbers of a field, all on one grid, that make it a `multipleOf` (a continuous
/// feature puts 30 values on a grid of 1/16 by chance with probability 16^-30).
pub const GRID_MIN_VALUES: u64 = 30;

/// Finest grid `multipleOf` is inferred for: 2^-GRID_MAX_EXP.
const GRID_MAX_EXP: i32 = 4;

/// What was seen of one field.
#[derive(Debug, Default)]
struct FieldSeen {
    rows: u64,
    /// Scalar numbers seen.
    numbers: u64,
    /// The finest grid they need so far: 2^-grid_exp (0: whole numbers).
    grid_exp: i32,
    /// A scalar number on no grid of 2^-GRID_MAX_EXP or coarser.
    off_grid: bool,
    nulls: u64,
    kinds: BTreeSet<&'static str>,
    min: f64,
    max: f64,
    fractional: bool,
    strings: BTreeSet<String>,
    too_many_strings: bool,
    longest: usize,
    lengths: BTreeSet<usize>,
    bad_items: bool,
    /// Shapes of the arrays nested as rectangular blocks of numbers (`[[..], ..]`).
    shapes: BTreeSet<Vec<usize>>,
    /// Rows whose array is flat.
    flat_rows: u64,
    /// An array of arrays that is ragged or holds other things than numbers at the bottom.
    ragged: bool,
}

/// The schema and what a reviewer should look at.
pub struct Inferred {
    /// The schema (JSON Schema 2020-12 with `x-guard`).
    pub schema: Value,
    /// Rows read as objects.
    pub rows: u64,
    /// Records that were not JSON objects (skipped).
    pub skipped: u64,
    /// One line per field: what it became and why.
    pub review: Vec<String>,
}

/// Infer a schema from the records of `input`.
pub fn infer(input: &Input<'_>, o: &InferOptions) -> Result<Inferred, EvalError> {
    let mut fields: BTreeMap<String, FieldSeen> = BTreeMap::new();
    let (mut rows, mut skipped) = (0u64, 0u64);
    let cap = o.categorical_max.max(1);
    let sha = for_each_record(input, &mut |_, bytes| {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
            skipped += 1;
            return;
        };
        rows += 1;
        for (k, v) in obj {
            let f = fields.entry(k).or_insert_with(|| FieldSeen {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                ..FieldSeen::default()
            });
            f.rows += 1;
            observe(f, &v, cap);
        }
    })?;
    if rows == 0 {
        return Err(EvalError::Input(format!(
            "{}: no JSON object records to infer from",
            input.describe()
        )));
    }
    let from = format!(
        "{rows} rows of {} (sha256 {})",
        input.describe(),
        &sha[..16.min(sha.len())]
    );
    let mut b = Builder {
        o,
        from: &from,
        rows,
        properties: Map::new(),
        required: Vec::new(),
        numeric: Vec::new(),
        categorical: Vec::new(),
        tensors: Vec::new(),
        label_classes: None,
        review: Vec::new(),
    };
    for (name, f) in &fields {
        b.field(name, f)?;
    }
    for wanted in o.label.iter().chain(&o.source) {
        if !fields.contains_key(wanted) {
            return Err(EvalError::Input(format!("no record has a field {wanted:?}")));
        }
    }
    let mut guard = json!({ "id": o.id });
    if let Some(s) = &o.source {
        guard["source"] = json!(format!("/{}", escape(s)));
    }
    if let Some(l) = &o.label {
        guard["label"] = json!(format!("/{}", escape(l)));
        if let Some(k) = b.label_classes {
            guard["label_classes"] = json!(k);
        }
    }
    for (key, list) in [
        ("numeric", &b.numeric),
        ("categorical", &b.categorical),
        ("tensors", &b.tensors),
    ] {
        if !list.is_empty() {
            guard[key] = Value::Array(list.clone());
        }
    }
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:ingest-guard:schema:{}", o.id),
        "title": format!("Inferred from {}", input.describe()),
        "description": format!("Inferred by `ingest-guard schema infer` from {from}; review every constraint before use."),
        "type": "object",
        "required": b.required,
        "additionalProperties": false,
        "properties": b.properties,
        "x-guard": guard,
    });
    Ok(Inferred {
        schema,
        rows,
        skipped,
        review: b.review,
    })
}

fn observe(f: &mut FieldSeen, v: &Value, cap: usize) {
    match v {
        Value::Null => {
            f.nulls += 1;
        }
        Value::Bool(_) => {
            f.kinds.insert("boolean");
        }
        Value::Number(n) => {
            f.kinds.insert("number");
            let x = n.as_f64().unwrap_or(0.0);
            f.min = f.min.min(x);
            f.max = f.max.max(x);
            f.fractional |= !(n.is_i64() || n.is_u64());
            f.numbers += 1;
            // Scaling by a power of two is exact: x · 2^k is whole exactly when x is on the grid.
            match (0..=GRID_MAX_EXP).find(|k| (x * f64::from(1u32 << k)).fract() == 0.0) {
                Some(k) => f.grid_exp = f.grid_exp.max(k),
                None => f.off_grid = true,
            }
        }
        Value::String(s) => {
            f.kinds.insert("string");
            f.longest = f.longest.max(s.chars().count());
            if !f.too_many_strings {
                f.strings.insert(s.clone());
                f.too_many_strings = f.strings.len() > cap;
                if f.too_many_strings {
                    f.strings.clear();
                }
            }
        }
        Value::Array(items) if items.first().is_some_and(Value::is_array) => {
            f.kinds.insert("array");
            match nested_dims(items, f) {
                Some(d) => {
                    f.lengths.insert(d.iter().product());
                    f.shapes.insert(d);
                }
                None => f.ragged = true,
            }
        }
        Value::Array(items) => {
            f.kinds.insert("array");
            f.lengths.insert(items.len());
            f.flat_rows += 1;
            for i in items {
                match i.as_f64() {
                    Some(x) => {
                        f.min = f.min.min(x);
                        f.max = f.max.max(x);
                        f.fractional |= !(i.is_i64() || i.is_u64());
                    }
                    None => f.bad_items = true,
                }
            }
        }
        Value::Object(_) => {
            f.kinds.insert("object");
        }
    }
}

/// The lengths, level by level, of `items` when it is arrays nested as a rectangular block
/// with numbers at the bottom (their range goes into `f`); `None` otherwise. The walk is as
/// deep as the JSON, which the JSON parser bounds.
fn nested_dims(items: &[Value], f: &mut FieldSeen) -> Option<Vec<usize>> {
    let mut inner: Option<Vec<usize>> = None;
    for i in items {
        let d = match i {
            Value::Array(a) if a.first().is_some_and(Value::is_array) => nested_dims(a, f)?,
            Value::Array(a) => {
                for x in a {
                    let v = x.as_f64()?;
                    f.min = f.min.min(v);
                    f.max = f.max.max(v);
                    f.fractional |= !(x.is_i64() || x.is_u64());
                }
                vec![a.len()]
            }
            _ => return None,
        };
        match &inner {
            Some(prev) if *prev != d => return None,
            Some(_) => {}
            None => inner = Some(d),
        }
    }
    let mut out = vec![items.len()];
    out.extend(inner?);
    Some(out)
}

struct Builder<'a> {
    o: &'a InferOptions,
    from: &'a str,
    rows: u64,
    properties: Map<String, Value>,
    required: Vec<String>,
    numeric: Vec<Value>,
    categorical: Vec<Value>,
    tensors: Vec<Value>,
    label_classes: Option<usize>,
    review: Vec<String>,
}

impl Builder<'_> {
    fn field(&mut self, name: &str, f: &FieldSeen) -> Result<(), EvalError> {
        let refuse =
            |why: &str| EvalError::Input(format!("field {name:?}: {why}; write this part of the schema by hand"));
        if f.kinds.contains("object") {
            return Err(refuse("holds nested objects, which are not inferred (flatten them)"));
        }
        if f.kinds.len() > 1 {
            return Err(refuse(&format!("holds values of several types ({:?})", f.kinds)));
        }
        let pointer = format!("/{}", escape(name));
        let seen = format!("seen in {} of {} rows", f.rows - f.nulls, self.rows);
        let mut prop = match f.kinds.iter().next().copied() {
            None => return Err(refuse("is always null")),
            Some("boolean") => {
                self.review.push(format!("{name}: boolean ({seen})"));
                json!({"type": "boolean"})
            }
            Some("number") if self.is_label(name) => self.label(name, f, &seen)?,
            Some("number") => {
                let (lo, hi) = self.widen(f);
                self.numeric.push(json!({"name": name, "pointer": pointer}));
                let grid = (f.fractional && !f.off_grid && f.numbers >= GRID_MIN_VALUES)
                    .then(|| 1.0 / f64::from(1u32 << f.grid_exp));
                self.review.push(format!(
                    "{name}: numeric feature, observed {} to {}, accepted {lo} to {hi}{} ({seen})",
                    f.min,
                    f.max,
                    grid.map_or(String::new(), |g| format!(", multiples of {g} only"))
                ));
                let mut p = json!({
                    "type": if f.fractional { "number" } else { "integer" },
                    "minimum": lo,
                    "maximum": hi,
                    "description": format!("observed {} to {} in {}; widened by {} of the span on each side{}", f.min, f.max, self.from, self.o.margin,
                        grid.map_or(String::new(), |g| format!("; every one of the {} values a multiple of {g}", f.numbers))),
                });
                if let Some(g) = grid {
                    p["multipleOf"] = json!(g);
                }
                p
            }
            Some("string") if self.is_label(name) => self.label(name, f, &seen)?,
            Some("string") if self.o.source.as_deref() == Some(name) => {
                self.review.push(format!("{name}: the source field ({seen})"));
                json!({"type": "string", "minLength": 1, "maxLength": 128,
                    "description": "the producer's name (x-guard.source); 128 characters at most"})
            }
            Some("string") if !f.too_many_strings => {
                let values: Vec<&String> = f.strings.iter().collect();
                self.categorical.push(json!({"name": name, "pointer": pointer}));
                self.review
                    .push(format!("{name}: categorical feature, {} values ({seen})", values.len()));
                json!({"enum": values, "description": format!("the {} distinct values in {} (at most {} make a categorical field)", values.len(), self.from, self.o.categorical_max)})
            }
            Some("string") => {
                let max = (f.longest * 2).max(1);
                self.review.push(format!(
                    "{name}: free text up to {max} characters, not a feature ({seen})"
                ));
                json!({"type": "string", "maxLength": max,
                    "description": format!("more than {} distinct values in {}; longest {} characters, bound at twice that", self.o.categorical_max, self.from, f.longest)})
            }
            Some("array") => self.array(name, f, &pointer, &seen)?,
            Some(other) => return Err(refuse(&format!("holds {other}"))),
        };
        if f.nulls > 0 {
            // Nullable: the same constraint, or null (a feature then counts as missing).
            prop = json!({"anyOf": [prop, {"type": "null"}], "description": format!("null in {} rows", f.nulls)});
        }
        if f.rows == self.rows && f.nulls == 0 {
            self.required.push(name.to_owned());
        }
        self.properties.insert(name.to_owned(), prop);
        Ok(())
    }

    fn is_label(&self, name: &str) -> bool {
        self.o.label.as_deref() == Some(name)
    }

    fn label(&mut self, name: &str, f: &FieldSeen, seen: &str) -> Result<Value, EvalError> {
        if f.too_many_strings || f.fractional {
            return Err(EvalError::Input(format!(
                "label {name:?}: more than {} distinct values or fractional numbers: not a class label",
                self.o.categorical_max
            )));
        }
        let values: Vec<Value> = if f.kinds.contains("number") {
            let (lo, hi) = (f.min as i64, f.max as i64);
            if hi - lo > self.o.categorical_max as i64 {
                return Err(EvalError::Input(format!(
                    "label {name:?}: values {lo} to {hi}, more than {} classes",
                    self.o.categorical_max
                )));
            }
            // Integer classes 0..k as `label_classes`, when they start at 0.
            if lo == 0 {
                self.label_classes = Some((hi + 1) as usize);
            }
            (lo..=hi).map(Value::from).collect()
        } else {
            f.strings.iter().map(|s| Value::from(s.clone())).collect()
        };
        self.review
            .push(format!("{name}: the label, {} classes ({seen})", values.len()));
        Ok(json!({"enum": values, "description": format!("the label's classes in {}", self.from)}))
    }

    fn array(&mut self, name: &str, f: &FieldSeen, pointer: &str, seen: &str) -> Result<Value, EvalError> {
        let refuse =
            |why: String| EvalError::Input(format!("field {name:?}: {why}; write this part of the schema by hand"));
        if f.bad_items {
            return Err(refuse("an array with items that are not numbers".into()));
        }
        if f.ragged {
            return Err(refuse(
                "arrays of arrays that are ragged or hold other things than numbers at the bottom".into(),
            ));
        }
        if !f.shapes.is_empty() {
            return self.nested(name, f, pointer, seen);
        }
        let (Some(&len), 1) = (f.lengths.iter().next(), f.lengths.len()) else {
            return Err(refuse(format!("arrays of several lengths ({:?})", f.lengths)));
        };
        if len == 0 {
            return Err(refuse("always an empty array".into()));
        }
        let (lo, hi) = self.widen(f);
        if len <= self.o.numeric_array_max {
            for i in 0..len {
                self.numeric
                    .push(json!({"name": format!("{name}_{i}"), "pointer": format!("{pointer}/{i}")}));
            }
            self.review
                .push(format!("{name}: {len} numbers, one numeric feature each ({seen})"));
        } else {
            let side = (len as f64).sqrt().round() as usize;
            let shape = if side * side == len {
                vec![side, side]
            } else {
                vec![len]
            };
            let mut line = format!("{name}: a tensor of {len} numbers, shape {shape:?} ({seen})");
            if let Some((c, n)) = colour_grid(len) {
                // Which axis holds the channels cannot be told from the numbers: a person says.
                line.push_str(&format!(
                    "; if these are {n}x{n} images with {c} channels, set the shape to [{c}, {n}, {n}] \
                     (channels first) or to [{n}, {n}, {c}] with \"channels\": \"last\" (median squeezing and \
                     `--label-model conv` need the grid)"
                ));
            }
            self.review.push(line);
            self.tensors
                .push(json!({"name": name, "pointer": pointer, "shape": shape}));
        }
        Ok(json!({
            "type": "array",
            "minItems": len,
            "maxItems": len,
            "items": {"type": if f.fractional { "number" } else { "integer" }, "minimum": lo, "maximum": hi},
            "description": format!("{len} numbers in every row of {}; items observed {} to {}, widened by {} of the span", self.from, f.min, f.max, self.o.margin),
        }))
    }

    /// A tensor of arrays nested as its shape (`ndarray.tolist()`): the shape is the nesting,
    /// and a rank-3 shape with at most 4 last and a grid of at least 8 × 8 before it is taken as
    /// channels-last images (grey, grey and alpha, RGB, RGBA; the review line says so).
    fn nested(&mut self, name: &str, f: &FieldSeen, pointer: &str, seen: &str) -> Result<Value, EvalError> {
        let refuse =
            |why: String| EvalError::Input(format!("field {name:?}: {why}; write this part of the schema by hand"));
        let (Some(shape), 1) = (f.shapes.iter().next(), f.shapes.len()) else {
            return Err(refuse(format!("nested arrays of several shapes ({:?})", f.shapes)));
        };
        if f.flat_rows > 0 {
            return Err(refuse(format!(
                "nested as {shape:?} in some rows and flat in {} others",
                f.flat_rows
            )));
        }
        let len: usize = shape.iter().product();
        if len == 0 {
            return Err(refuse("always an empty array".into()));
        }
        let (lo, hi) = self.widen(f);
        let mut tensor = json!({"name": name, "pointer": pointer, "shape": shape});
        let mut line = format!("{name}: a tensor of {len} numbers nested as shape {shape:?} ({seen})");
        let image = |h: usize, w: usize| h >= 8 && w >= 8;
        match shape.as_slice() {
            [h, w, c] if *c <= 4 && image(*h, *w) => {
                tensor["channels"] = json!("last");
                line.push_str(&format!(
                    "; taken as {h}x{w} images with {c} channels last (\"channels\": \"last\"); \
                     delete that key if the last axis is not channels"
                ));
            }
            [c, h, w] if *c <= 4 && image(*h, *w) => {
                line.push_str(&format!("; taken as {h}x{w} images with {c} channels first"));
            }
            _ => {}
        }
        self.review.push(line);
        self.tensors.push(tensor);
        let leaf = json!({"type": if f.fractional { "number" } else { "integer" }, "minimum": lo, "maximum": hi});
        let mut node = leaf;
        for d in shape.iter().rev() {
            node = json!({"type": "array", "minItems": d, "maxItems": d, "items": node});
        }
        node["description"] = json!(format!(
            "arrays nested as {shape:?} in every row of {}; numbers observed {} to {}, widened by {} of the span",
            self.from, f.min, f.max, self.o.margin
        ));
        Ok(node)
    }

    /// The observed range widened by the margin, never below 0 for data that never was;
    /// whole numbers get whole bounds (outward).
    fn widen(&self, f: &FieldSeen) -> (Value, Value) {
        let span = if f.max > f.min {
            f.max - f.min
        } else {
            f.max.abs().max(1.0)
        };
        let pad = span * self.o.margin.max(0.0);
        let mut lo = f.min - pad;
        if f.min >= 0.0 {
            lo = lo.max(0.0);
        }
        let hi = f.max + pad;
        if f.fractional {
            (json!(lo), json!(hi))
        } else {
            (json!(lo.floor() as i64), json!(hi.ceil() as i64))
        }
    }
}

/// A field name as a JSON pointer token (RFC 6901).
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Infer a schema, check that it compiles as the guard will load it, and write it to `out`
/// (atomically, through a `.tmp` file).
pub fn write(input: &Input<'_>, o: &InferOptions, out: &Path) -> Result<Inferred, EvalError> {
    let inferred = infer(input, o)?;
    guard_validate::DomainSchema::from_value(&inferred.schema)
        .map_err(|(key, m)| EvalError::Input(format!("the inferred schema does not compile at {key}: {m}")))?;
    let text = serde_json::to_vec_pretty(&inferred.schema).map_err(|source| EvalError::Json {
        what: "the inferred schema".into(),
        source,
    })?;
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(EvalError::io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(EvalError::io(out))?;
    Ok(inferred)
}

/// A flat length that could be square images with 3 (RGB) or 4 (RGBA) channels, at least
/// 8 × 8: (channels, side).
fn colour_grid(len: usize) -> Option<(usize, usize)> {
    [3, 4].into_iter().find_map(|c| {
        let side = ((len / c) as f64).sqrt().round() as usize;
        (len.is_multiple_of(c) && side >= 8 && side * side * c == len).then_some((c, side))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn infer_lines(lines: &str, o: &InferOptions) -> Result<Inferred, EvalError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.jsonl");
        std::fs::write(&p, lines).unwrap();
        infer(&Input::Jsonl(&p), o)
    }

    /// Fractional features on a coarse power-of-two grid get `multipleOf`; continuous ones,
    /// whole numbers and too few values do not. The schema accepts its own rows and rejects a
    /// value between the levels.
    #[test]
    fn a_coarse_grid_becomes_multiple_of() {
        let row = |i: u32| {
            let level = [0.0, 0.5, 1.0][i as usize % 3];
            json!({
                "level": level, "quarter": f64::from(i % 9) * 0.25,
                "ratio": f64::from(i) / 7.0, "count": i, "whole": f64::from(i % 4),
            })
        };
        let text: String = (0..40).map(|i| row(i).to_string() + "\n").collect();
        let got = infer_lines(&text, &InferOptions::default()).unwrap();
        let p = &got.schema["properties"];
        assert_eq!(p["level"]["multipleOf"], json!(0.5), "{}", p["level"]);
        assert_eq!(p["quarter"]["multipleOf"], json!(0.25), "{}", p["quarter"]);
        assert_eq!(
            p["whole"]["multipleOf"],
            json!(1.0),
            "whole numbers written as 0.0, 1.0, …"
        );
        assert!(p["ratio"].get("multipleOf").is_none(), "{}", p["ratio"]);
        assert!(
            p["count"].get("multipleOf").is_none(),
            "an integer needs no grid: {}",
            p["count"]
        );
        assert!(
            got.review
                .iter()
                .any(|l| l.starts_with("level:") && l.contains("multiples of 0.5")),
            "{:?}",
            got.review
        );
        let schema = guard_validate::DomainSchema::from_value(&got.schema).unwrap();
        for i in 0..40 {
            assert!(schema.check(&row(i)).is_ok(), "{}", row(i));
        }
        let mut off = row(1);
        off["level"] = json!(0.37);
        let reasons = schema.check(&off).unwrap_err();
        assert!(format!("{reasons:?}").contains("multipleOf"), "{reasons:?}");
        // 29 values are not enough evidence of a grid.
        let text: String = (0..29).map(|i| row(i).to_string() + "\n").collect();
        let got = infer_lines(&text, &InferOptions::default()).unwrap();
        assert!(got.schema["properties"]["level"].get("multipleOf").is_none());
    }

    #[test]
    fn infers_numbers_categories_labels_and_tensors_that_accept_their_own_rows() {
        let mut text = String::new();
        for i in 0..200 {
            let px: Vec<u32> = (0..64).map(|k| (k * i) % 256).collect();
            let color = ["red", "green", "blue"][i as usize % 3];
            text.push_str(
                &serde_json::to_string(&json!({
                    "source": format!("s{}", i % 3), "price": 100 + i, "ratio": i as f64 / 7.0,
                    "color": color, "label": i % 4,
                    "xy": [i, i + 1], "img": px, "note": if i % 10 == 0 { Value::Null } else { json!("x") },
                }))
                .unwrap(),
            );
            text.push('\n');
        }
        let o = InferOptions {
            label: Some("label".into()),
            source: Some("source".into()),
            id: "t-v1".into(),
            ..InferOptions::default()
        };
        let got = infer_lines(&text, &o).unwrap();
        let s = &got.schema;
        assert_eq!(s["properties"]["price"]["type"], "integer");
        // 100..299 widened by half the span (99.5) on each side: 0.5 floored, 398.5 ceiled.
        assert_eq!(
            (
                &s["properties"]["price"]["minimum"],
                &s["properties"]["price"]["maximum"]
            ),
            (&json!(0), &json!(399))
        );
        assert_eq!(s["properties"]["ratio"]["type"], "number");
        assert_eq!(s["properties"]["color"]["enum"], json!(["blue", "green", "red"]));
        assert_eq!(s["x-guard"]["label_classes"], 4);
        assert_eq!(s["x-guard"]["tensors"][0]["shape"], json!([8, 8]));
        assert_eq!(
            s["x-guard"]["numeric"].as_array().unwrap().len(),
            4,
            "price, ratio, xy_0, xy_1"
        );
        assert!(
            !s["required"].as_array().unwrap().contains(&json!("note")),
            "sometimes null"
        );
        // The schema loads and accepts every row it came from.
        let schema = guard_validate::DomainSchema::from_value(s).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(schema.check(&v).is_ok(), "{line}");
        }
    }

    #[test]
    fn nested_objects_and_mixed_types_are_refused_by_name() {
        let e = infer_lines("{\"a\": {\"b\": 1}}\n", &InferOptions::default())
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("\"a\"") && e.to_string().contains("nested"),
            "{e}"
        );
        let e = infer_lines("{\"a\": 1}\n{\"a\": \"x\"}\n", &InferOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("several types"), "{e}");
        let e = infer_lines("{\"a\": [1]}\n{\"a\": [1, 2]}\n", &InferOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("several lengths"), "{e}");
    }

    #[test]
    fn colour_image_lengths_get_a_shape_hint_and_stay_flat() {
        assert_eq!(colour_grid(3 * 32 * 32), Some((3, 32)));
        assert_eq!(colour_grid(4 * 16 * 16), Some((4, 16)));
        assert_eq!(colour_grid(3 * 4 * 4), None, "under 8 x 8");
        assert_eq!(colour_grid(3 * 32 * 32 + 1), None);
        let mut text = String::new();
        for i in 0..20u32 {
            let px: Vec<u32> = (0..3072u32).map(|k| (k + i) % 256).collect();
            text.push_str(&json!({"img": px, "label": i % 2}).to_string());
            text.push('\n');
        }
        let o = InferOptions {
            label: Some("label".into()),
            id: "rgb-v1".into(),
            ..InferOptions::default()
        };
        let got = infer_lines(&text, &o).unwrap();
        assert_eq!(got.schema["x-guard"]["tensors"][0]["shape"], json!([3072]));
        let line = got.review.iter().find(|l| l.starts_with("img:")).unwrap();
        assert!(line.contains("set the shape to [3, 32, 32]"), "{line}");
        assert!(line.contains("[32, 32, 3] with \"channels\": \"last\""), "{line}");
    }

    #[test]
    fn nested_arrays_become_tensors_of_their_shape_and_accept_their_rows() {
        let img = |i: u32, h: u32, w: u32, c: u32| -> Value {
            json!((0..h)
                .map(|r| (0..w)
                    .map(|k| (0..c).map(|j| (r * 7 + k * 3 + j + i) % 256).collect::<Vec<_>>())
                    .collect::<Vec<_>>())
                .collect::<Vec<_>>())
        };
        let mut text = String::new();
        for i in 0..20u32 {
            let grey: Vec<Vec<u32>> = (0..10).map(|r| (0..12).map(|k| (r + k + i) % 256).collect()).collect();
            let row = json!({"rgb": img(i, 9, 8, 3), "first": img(i, 3, 9, 8), "grey": grey, "label": i % 2});
            text.push_str(&row.to_string());
            text.push('\n');
        }
        let o = InferOptions {
            label: Some("label".into()),
            id: "nested-v1".into(),
            ..InferOptions::default()
        };
        let got = infer_lines(&text, &o).unwrap();
        let tensors = got.schema["x-guard"]["tensors"].as_array().unwrap();
        let by = |n: &str| tensors.iter().find(|t| t["name"] == n).unwrap().clone();
        assert_eq!(by("rgb")["shape"], json!([9, 8, 3]));
        assert_eq!(by("rgb")["channels"], json!("last"));
        // [3, 9, 8]: the last axis is no channel axis (8 > 4); the default, channels first.
        assert_eq!(
            (by("first")["shape"].clone(), by("first").get("channels").cloned()),
            (json!([3, 9, 8]), None)
        );
        assert_eq!(by("grey")["shape"], json!([10, 12]));
        let line = got.review.iter().find(|l| l.starts_with("rgb:")).unwrap();
        assert!(line.contains("channels last"), "{line}");
        // The schema compiles and accepts every row it came from, and refuses a ragged one.
        let schema = guard_validate::DomainSchema::from_value(&got.schema).unwrap();
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(schema.check(&v).is_ok(), "{l}");
        }
        let mut v: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        v["rgb"][0][0] = json!([1, 2]);
        assert!(schema.check(&v).is_err());
        // Ragged nesting and mixed flat / nested rows are refused by name.
        for bad in [
            "{\"a\": [[1, 2], [3]]}\n{\"a\": [[1, 2], [3, 4]]}\n",
            "{\"a\": [[1, 2], [3, 4]]}\n{\"a\": [1, 2, 3, 4]}\n",
            "{\"a\": [[1, \"x\"], [3, 4]]}\n",
        ] {
            let e = infer_lines(bad, &InferOptions::default()).err().unwrap().to_string();
            assert!(e.contains("\"a\""), "{e}");
        }
    }
}
