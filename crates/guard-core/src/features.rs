//! The `x-guard` contract and the typed rows it defines.
//!
//! A domain schema's `x-guard` section ([`GuardSection`]) names where a record keeps its numeric
//! and categorical features, its tensors, its label and its source. [`FeatureLayout`] compiles
//! those pointers once; [`FeatureRows`] holds one batch's extracted rows in columns (Arrow's
//! layout: one flat buffer per column), so the record is walked once and drift, scoring,
//! explanations and quarantine all read the same values.
//!
//! Extraction never fails: a missing or non-numeric value is `NaN` (numeric, tensor element),
//! a missing, null, object or array value is absent (categorical, label).
//!
//! A tensor is read in one of two forms ([`extend_tensor`]): a flat array of its element
//! count, or arrays nested exactly as its shape (what `ndarray.tolist()` writes); both give
//! the same row-major elements.

use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;

/// The `x-guard` section of a domain schema.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuardSection {
    /// Stable schema identity written with every verdict, e.g. `shuttle-v1`.
    pub id: String,
    /// JSON pointer to the producer/source field, if records carry one.
    #[serde(default)]
    pub source: Option<String>,
    /// JSON pointer to the label.
    #[serde(default)]
    pub label: Option<String>,
    /// Number of label classes, for categorical labels `0..classes`.
    #[serde(default)]
    pub label_classes: Option<usize>,
    /// Numeric features in model input order.
    #[serde(default)]
    pub numeric: Vec<FeatureField>,
    /// Categorical features.
    #[serde(default)]
    pub categorical: Vec<FeatureField>,
    /// Tensor fields (flat row-major or nested) with their shape.
    #[serde(default)]
    pub tensors: Vec<TensorField>,
}

impl GuardSection {
    /// Names of the categorical statistics, in order: `categorical`, then `label` when the
    /// section names a label (the label is watched like a categorical feature).
    pub fn categorical_names(&self) -> Vec<String> {
        self.categorical
            .iter()
            .map(|f| f.name.clone())
            .chain(self.label.as_ref().map(|_| "label".to_owned()))
            .collect()
    }
}

/// A named feature at a JSON pointer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeatureField {
    /// Feature name, unique within the schema.
    pub name: String,
    /// JSON pointer to the value.
    pub pointer: String,
}

/// A tensor field: a numeric array with a declared shape, flat (row-major) or nested as the
/// shape.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorField {
    /// Tensor name, unique within the schema.
    pub name: String,
    /// JSON pointer to the array.
    pub pointer: String,
    /// Shape, e.g. `[28, 28]`: a flat array holds the product of its elements, a nested one
    /// has exactly these lengths level by level.
    pub shape: Vec<usize>,
    /// Where an image's channel axis is (default `first`: the axes before the last two are
    /// channels, `[3, 32, 32]`; `last`: the last axis is, `[32, 32, 3]`). Read by the trainer
    /// (convolutions, median smoothing) and the trigger attacks; extraction does not use it.
    #[serde(default)]
    pub channels: Channels,
}

/// Where a tensor's channel axis is ([`TensorField::channels`]).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// The axes before the last two (`[c, h, w]`, or none: `[h, w]`).
    #[default]
    First,
    /// The last axis (`[h, w, c]`).
    Last,
}

/// Append tensor `value`'s `n` elements (shape `shape`, product `n`) to `out` in row-major
/// order: from a flat array (its first `n` items, `NaN`-padded when short), or from arrays
/// nested exactly as `shape`. Anything else, and a non-number element, is `NaN`. The walk
/// goes no deeper than the shape (which the schema sets, not the record).
pub fn extend_tensor(value: Option<&Value>, shape: &[usize], n: usize, out: &mut Vec<f32>) {
    let start = out.len();
    match value {
        Some(Value::Array(a)) if shape.len() >= 2 && a.first().is_some_and(Value::is_array) => {
            if !nested_into(a, shape, out) {
                out.truncate(start);
                out.extend(std::iter::repeat_n(f32::NAN, n));
            }
        }
        Some(Value::Array(a)) => {
            out.extend(a.iter().take(n).map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32)));
            out.extend(std::iter::repeat_n(f32::NAN, n.saturating_sub(a.len())));
        }
        _ => out.extend(std::iter::repeat_n(f32::NAN, n)),
    }
}

/// Whether tensor `value` has one of the two forms [`extend_tensor`] reads exactly: a flat
/// array of `n` items or arrays nested exactly as `shape` (the items' types are the JSON
/// Schema's to check).
pub fn tensor_form_ok(value: Option<&Value>, shape: &[usize], n: usize) -> bool {
    fn nested(a: &[Value], shape: &[usize]) -> bool {
        match shape {
            [d] => a.len() == *d,
            [d, rest @ ..] => a.len() == *d && a.iter().all(|v| v.as_array().is_some_and(|b| nested(b, rest))),
            [] => false,
        }
    }
    match value {
        Some(Value::Array(a)) if shape.len() >= 2 && a.first().is_some_and(Value::is_array) => nested(a, shape),
        Some(Value::Array(a)) => a.len() == n,
        _ => false,
    }
}

fn nested_into(a: &[Value], shape: &[usize], out: &mut Vec<f32>) -> bool {
    match shape {
        [d] => {
            if a.len() != *d {
                return false;
            }
            out.extend(a.iter().map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32)));
            true
        }
        [d, rest @ ..] => {
            a.len() == *d
                && a.iter()
                    .all(|v| v.as_array().is_some_and(|b| nested_into(b, rest, out)))
        }
        [] => false,
    }
}

impl TensorField {
    /// Element count (product of the shape); `None` when it overflows or is zero.
    pub fn len(&self) -> Option<usize> {
        let n = self.shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))?;
        (n > 0 && !self.shape.is_empty()).then_some(n)
    }

    /// Whether the shape holds no element (a schema with such a tensor is refused).
    pub fn is_empty(&self) -> bool {
        self.len().is_none()
    }

    /// The image grid `(height, width)` and channel count, when the shape has two axes or more
    /// (`None` for a vector).
    pub fn grid(&self) -> Option<(usize, usize, usize)> {
        let n = self.len()?;
        let (h, w) = match (self.channels, self.shape.as_slice()) {
            (Channels::Last, [.., h, w, _]) | (Channels::First, [.., h, w]) => (*h, *w),
            _ => return None,
        };
        Some((h, w, n / (h * w).max(1)))
    }

    /// Row-major offset of element `(row, col)` of the grid in channel `c` (see
    /// [`TensorField::grid`]).
    pub fn grid_offset(&self, row: usize, col: usize, c: usize) -> Option<usize> {
        let (h, w, ch) = self.grid()?;
        if row >= h || col >= w || c >= ch {
            return None;
        }
        Some(match self.channels {
            Channels::First => (c * h + row) * w + col,
            Channels::Last => (row * w + col) * ch + c,
        })
    }
}

/// A JSON pointer (RFC 6901) parsed once: looking a value up allocates nothing, unlike
/// `serde_json::Value::pointer`, which unescapes every token of the text on every call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    key: String,
    /// The token as an array index, when it is one (no sign, no leading zero).
    index: Option<usize>,
}

impl FieldPath {
    /// Parse `text` (`""` is the whole value; otherwise it starts with `/`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Self {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!("{text:?} is not a JSON pointer (must start with '/')"));
        };
        let tokens = rest
            .split('/')
            .map(|t| {
                let key = t.replace("~1", "/").replace("~0", "~");
                let index = if key.starts_with('+') || (key.starts_with('0') && key.len() != 1) {
                    None
                } else {
                    key.parse().ok()
                };
                Token { key, index }
            })
            .collect();
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The unescaped tokens, each with its value as an array index when it is one.
    pub fn tokens(&self) -> impl Iterator<Item = (&str, Option<usize>)> + '_ {
        self.tokens.iter().map(|t| (t.key.as_str(), t.index))
    }

    /// The value at this pointer, as `serde_json::Value::pointer` finds it.
    #[inline]
    pub fn get<'v>(&self, mut value: &'v Value) -> Option<&'v Value> {
        for t in &self.tokens {
            value = match value {
                Value::Object(m) => m.get(&t.key)?,
                Value::Array(a) => a.get(t.index?)?,
                _ => return None,
            };
        }
        Some(value)
    }
}

/// The compiled `x-guard` section: where each column of a [`FeatureRows`] comes from.
#[derive(Debug, Clone)]
pub struct FeatureLayout {
    numeric: Vec<FieldPath>,
    /// `x-guard.categorical`, then the label when the schema names one.
    categorical: Vec<FieldPath>,
    has_label: bool,
    tensors: Vec<(FieldPath, usize, Vec<usize>)>,
    source: Option<FieldPath>,
}

impl FeatureLayout {
    /// Compile `g`; the error names the offending key.
    pub fn new(g: &GuardSection) -> Result<Self, (String, String)> {
        let path = |key: &str, p: &str| FieldPath::parse(p).map_err(|m| (key.to_owned(), m));
        let numeric = g
            .numeric
            .iter()
            .map(|f| path(&format!("x-guard.{}", f.name), &f.pointer))
            .collect::<Result<_, _>>()?;
        let mut categorical: Vec<FieldPath> = g
            .categorical
            .iter()
            .map(|f| path(&format!("x-guard.{}", f.name), &f.pointer))
            .collect::<Result<_, _>>()?;
        if let Some(l) = &g.label {
            categorical.push(path("x-guard", l)?);
        }
        let tensors = g
            .tensors
            .iter()
            .map(|t| {
                let key = format!("x-guard.{}", t.name);
                let n = t
                    .len()
                    .ok_or_else(|| (key.clone(), "tensor shape must be non-empty and non-zero".to_owned()))?;
                Ok((path(&key, &t.pointer)?, n, t.shape.clone()))
            })
            .collect::<Result<_, (String, String)>>()?;
        let source = g.source.as_deref().map(|s| path("x-guard", s)).transpose()?;
        Ok(Self {
            numeric,
            categorical,
            has_label: g.label.is_some(),
            tensors,
            source,
        })
    }

    /// Numeric columns.
    pub fn numeric_width(&self) -> usize {
        self.numeric.len()
    }

    /// Categorical columns (the label last, when the schema names one).
    pub fn categorical_width(&self) -> usize {
        self.categorical.len()
    }

    /// Element count of each tensor.
    pub fn tensor_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.tensors.iter().map(|(_, n, _)| *n)
    }

    /// Pointer of each tensor.
    pub fn tensor_paths(&self) -> impl Iterator<Item = &FieldPath> + '_ {
        self.tensors.iter().map(|(p, _, _)| p)
    }

    /// Numeric features of `value` in declared order into `out` (cleared first).
    pub fn numeric_into(&self, value: &Value, out: &mut Vec<f64>) {
        out.clear();
        out.extend(self.numeric.iter().map(|p| number(p.get(value))));
    }

    /// `f(j, text)` for each categorical column of `value`: strings as they are, numbers and
    /// booleans as their JSON text, `None` when absent, null, an object or an array.
    pub fn each_categorical(&self, value: &Value, mut f: impl FnMut(usize, Option<&str>)) {
        let mut buf = String::new();
        for (j, p) in self.categorical.iter().enumerate() {
            buf.clear();
            f(j, category_text(p.get(value), &mut buf).then_some(buf.as_str()));
        }
    }

    /// The record's label as text (as a categorical column renders it).
    pub fn label(&self, value: &Value) -> Option<String> {
        if !self.has_label {
            return None;
        }
        let mut buf = String::new();
        category_text(self.categorical.last()?.get(value), &mut buf).then_some(buf)
    }

    /// The record's source field, if the schema names one and it is a string.
    pub fn source<'v>(&self, value: &'v Value) -> Option<&'v str> {
        self.source.as_ref()?.get(value)?.as_str()
    }
}

#[inline]
fn number(v: Option<&Value>) -> f64 {
    v.and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Render a categorical value into `buf` (strings as they are, numbers as JSON writes them,
/// booleans as `true`/`false`); false when it has none. Models' categorical inputs and the
/// statistics both read values through this one rendering.
#[inline]
pub fn category_text(v: Option<&Value>, buf: &mut String) -> bool {
    match v {
        Some(Value::String(s)) => buf.push_str(s),
        Some(Value::Number(n)) => {
            let _ = write!(buf, "{n}");
        }
        Some(Value::Bool(b)) => buf.push_str(if *b { "true" } else { "false" }),
        _ => return false,
    }
    true
}

/// Optional strings in one buffer (Arrow's `StringArray` layout): pushing a row allocates
/// nothing once the buffers have grown.
#[derive(Debug, Clone, Default)]
pub struct StrColumn {
    data: String,
    /// End of each row's text in `data` (an absent value ends where the previous row ends).
    ends: Vec<usize>,
    present: Vec<bool>,
}

impl StrColumn {
    fn push(&mut self, v: Option<&str>) {
        if let Some(s) = v {
            self.data.push_str(s);
        }
        self.ends.push(self.data.len());
        self.present.push(v.is_some());
    }

    fn push_value(&mut self, v: Option<&Value>) {
        let start = self.data.len();
        let present = category_text(v, &mut self.data);
        if !present {
            self.data.truncate(start);
        }
        self.ends.push(self.data.len());
        self.present.push(present);
    }

    /// Replace the last row's value (rows are written in order, so its text is at the end).
    fn set_last(&mut self, v: &str) {
        self.set_last_with(|buf| buf.push_str(v));
    }

    /// Replace the last row's value with what `f` writes.
    fn set_last_with(&mut self, f: impl FnOnce(&mut String)) {
        let start = if self.ends.len() >= 2 {
            self.ends[self.ends.len() - 2]
        } else {
            0
        };
        self.data.truncate(start);
        f(&mut self.data);
        if let (Some(end), Some(present)) = (self.ends.last_mut(), self.present.last_mut()) {
            *end = self.data.len();
            *present = true;
        }
    }

    fn truncate(&mut self, rows: usize) {
        if rows < self.ends.len() {
            let end = if rows == 0 { 0 } else { self.ends[rows - 1] };
            self.data.truncate(end);
            self.ends.truncate(rows);
            self.present.truncate(rows);
        }
    }

    /// Row `r`'s text.
    pub fn get(&self, r: usize) -> Option<&str> {
        if !*self.present.get(r)? {
            return None;
        }
        let start = if r == 0 { 0 } else { self.ends[r - 1] };
        self.data.get(start..self.ends[r])
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.present.clear();
    }
}

/// One batch's extracted rows, in columns: the records that passed their checks, each with
/// its index in the batch.
#[derive(Debug, Clone, Default)]
pub struct FeatureRows {
    numeric_width: usize,
    tensor_lens: Vec<usize>,
    /// Whether features are extracted at all (otherwise only the sources are).
    features: bool,
    index: Vec<usize>,
    /// Row-major `[rows, numeric_width]`.
    numeric: Vec<f64>,
    /// Per tensor, row-major `[rows, len]`.
    tensors: Vec<Vec<f32>>,
    categorical: Vec<StrColumn>,
    sources: StrColumn,
    has_label: bool,
}

impl FeatureRows {
    /// Empty rows for `layout`; with `features` false only sources are kept (nothing watches
    /// or scores the topic).
    pub fn new(layout: &FeatureLayout, features: bool) -> Self {
        Self {
            numeric_width: layout.numeric_width(),
            tensor_lens: layout.tensor_lens().collect(),
            features,
            index: Vec::new(),
            numeric: Vec::new(),
            tensors: vec![Vec::new(); layout.tensors.len()],
            categorical: vec![StrColumn::default(); layout.categorical_width()],
            sources: StrColumn::default(),
            has_label: layout.has_label,
        }
    }

    /// Whether feature columns are kept (see [`FeatureRows::new`]).
    pub fn has_features(&self) -> bool {
        self.features
    }

    /// Extract `value` (record `index` of the batch) as the next row. `source` is the record's
    /// source when it comes from elsewhere (a header); otherwise the layout's source field
    /// is read (`(none)` when it has none). Sources are cut to [`crate::MAX_SOURCE_LEN`].
    pub fn push(&mut self, layout: &FeatureLayout, index: usize, value: &Value, source: Option<&str>) {
        self.index.push(index);
        let source = source.or_else(|| layout.source(value)).unwrap_or("(none)");
        self.sources.push(Some(crate::cap_source(source)));
        if !self.features {
            return;
        }
        self.numeric.extend(layout.numeric.iter().map(|p| number(p.get(value))));
        for ((p, n, shape), col) in layout.tensors.iter().zip(&mut self.tensors) {
            extend_tensor(p.get(value), shape, *n, col);
        }
        for (p, col) in layout.categorical.iter().zip(&mut self.categorical) {
            col.push_value(p.get(value));
        }
    }

    /// Start a row written field by field (by a decoder that extracts while it validates):
    /// every column starts absent (`NaN`, no text, source `(none)`) until a setter fills it.
    /// Finish with nothing (the row stands) or [`FeatureRows::abort_row`].
    pub fn start_row(&mut self, index: usize) {
        self.index.push(index);
        self.sources.push(None);
        if !self.features {
            return;
        }
        self.numeric.extend(std::iter::repeat_n(f64::NAN, self.numeric_width));
        for (col, n) in self.tensors.iter_mut().zip(&self.tensor_lens) {
            col.extend(std::iter::repeat_n(f32::NAN, *n));
        }
        for col in &mut self.categorical {
            col.push(None);
        }
    }

    /// Drop the row being written (its record is judged another way).
    pub fn abort_row(&mut self) {
        let Some(rows) = self.index.len().checked_sub(1) else {
            return;
        };
        self.index.truncate(rows);
        self.sources.truncate(rows);
        if !self.features {
            return;
        }
        self.numeric.truncate(rows * self.numeric_width);
        for (col, n) in self.tensors.iter_mut().zip(&self.tensor_lens) {
            col.truncate(rows * n);
        }
        for col in &mut self.categorical {
            col.truncate(rows);
        }
    }

    /// Set numeric column `col` of the row being written.
    #[inline]
    pub fn set_numeric(&mut self, col: usize, x: f64) {
        if let Some(rows) = self.index.len().checked_sub(1) {
            if let Some(v) = self.numeric.get_mut(rows * self.numeric_width + col) {
                *v = x;
            }
        }
    }

    /// Element `i` of tensor `t` of the row being written.
    #[inline]
    pub fn set_tensor(&mut self, t: usize, i: usize, x: f32) {
        let (Some(rows), Some(n)) = (self.index.len().checked_sub(1), self.tensor_lens.get(t)) else {
            return;
        };
        if i < *n {
            if let Some(v) = self.tensors.get_mut(t).and_then(|c| c.get_mut(rows * n + i)) {
                *v = x;
            }
        }
    }

    /// Tensor `t` of the row being written, to fill in place.
    pub fn tensor_last_mut(&mut self, t: usize) -> Option<&mut [f32]> {
        let rows = self.index.len().checked_sub(1)?;
        let n = *self.tensor_lens.get(t)?;
        self.tensors.get_mut(t)?.get_mut(rows * n..(rows + 1) * n)
    }

    /// Set categorical column `j` (the label last) of the row being written.
    pub fn set_categorical(&mut self, j: usize, text: &str) {
        if let Some(col) = self.categorical.get_mut(j) {
            col.set_last(text);
        }
    }

    /// Set categorical column `j` of the row being written to an integer's text.
    pub fn set_categorical_int(&mut self, j: usize, i: i64) {
        if let Some(col) = self.categorical.get_mut(j) {
            col.set_last_with(|buf| {
                let _ = write!(buf, "{i}");
            });
        }
    }

    /// Set the source of the row being written (cut to [`crate::MAX_SOURCE_LEN`]).
    pub fn set_source(&mut self, source: &str) {
        self.sources.set_last(crate::cap_source(source));
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> RowRef<'_> {
        RowRef { rows: self, r }
    }

    /// Forget every row, keeping the buffers.
    pub fn clear(&mut self) {
        self.index.clear();
        self.numeric.clear();
        self.tensors.iter_mut().for_each(Vec::clear);
        self.categorical.iter_mut().for_each(StrColumn::clear);
        self.sources.clear();
    }
}

/// One row of a [`FeatureRows`].
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    rows: &'a FeatureRows,
    r: usize,
}

impl<'a> RowRef<'a> {
    /// Index of the record in its batch.
    pub fn index(&self) -> usize {
        self.rows.index[self.r]
    }

    /// Numeric features in declared order (empty without feature columns).
    pub fn numeric(&self) -> &'a [f64] {
        let w = self.rows.numeric_width;
        self.rows.numeric.get(self.r * w..(self.r + 1) * w).unwrap_or(&[])
    }

    /// Tensor `t`'s elements (empty without feature columns).
    pub fn tensor(&self, t: usize) -> &'a [f32] {
        let (Some(col), Some(n)) = (self.rows.tensors.get(t), self.rows.tensor_lens.get(t)) else {
            return &[];
        };
        col.get(self.r * n..(self.r + 1) * n).unwrap_or(&[])
    }

    /// Numeric features, then every tensor's elements, as `f32` (the near-duplicate
    /// detector's row; empty without feature columns).
    pub fn values(&self) -> impl Iterator<Item = f32> + 'a {
        let this = *self;
        self.numeric()
            .iter()
            .map(|x| *x as f32)
            .chain((0..self.rows.tensors.len()).flat_map(move |t| this.tensor(t).iter().copied()))
    }

    /// Categorical column `j` (the label is the last one when the schema names a label).
    pub fn categorical(&self, j: usize) -> Option<&'a str> {
        self.rows.categorical.get(j)?.get(self.r)
    }

    /// Categorical columns.
    pub fn categorical_width(&self) -> usize {
        self.rows.categorical.len()
    }

    /// The label's text.
    pub fn label(&self) -> Option<&'a str> {
        if !self.rows.has_label {
            return None;
        }
        self.rows.categorical.last()?.get(self.r)
    }

    /// The record's source (capped).
    pub fn source(&self) -> &'a str {
        self.rows.sources.get(self.r).unwrap_or("(none)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_find_what_serde_json_finds() {
        let v = json!({"a": {"b/c": [1, {"~x": 2}], "0": "zero"}, "": 5, "list": [7, 8]});
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/0",
            "/a/b~1c/1/~0x",
            "/a/0",
            "/",
            "/list/1",
            "/list/01",
            "/list/+1",
            "/list/9",
            "/nope",
            "/a/b~1c/0/deeper",
        ] {
            let f = FieldPath::parse(p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(f.get(&v), v.pointer(p), "{p}");
        }
        assert!(FieldPath::parse("nope").is_err());
    }

    fn layout() -> FeatureLayout {
        let g: GuardSection = serde_json::from_value(json!({
            "id": "t",
            "source": "/src",
            "label": "/y",
            "numeric": [{"name": "a", "pointer": "/f/0"}, {"name": "b", "pointer": "/f/1"}],
            "categorical": [{"name": "c", "pointer": "/c"}],
            "tensors": [{"name": "img", "pointer": "/img", "shape": [2, 2]}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        FeatureLayout::new(&g).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn rows_hold_each_column_once() {
        let l = layout();
        let mut rows = FeatureRows::new(&l, true);
        rows.push(
            &l,
            3,
            &json!({"src": "p1", "y": 2, "f": [1.5, "x"], "c": "red", "img": [1, 2, 3, 4]}),
            None,
        );
        rows.push(&l, 7, &json!({"y": "cat", "f": [2], "c": true, "img": [9]}), None);
        rows.push(&l, 8, &json!({"src": 5, "c": {"o": 1}}), Some("header-src"));
        assert_eq!(rows.len(), 3);
        let r0 = rows.row(0);
        assert_eq!(r0.index(), 3);
        assert_eq!(r0.numeric()[0], 1.5);
        assert!(r0.numeric()[1].is_nan());
        assert_eq!(r0.tensor(0), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            (r0.categorical(0), r0.label(), r0.source()),
            (Some("red"), Some("2"), "p1")
        );
        let r1 = rows.row(1);
        assert_eq!(r1.tensor(0)[0], 9.0);
        assert!(r1.tensor(0)[1..].iter().all(|x| x.is_nan()));
        assert_eq!(
            (r1.categorical(0), r1.label(), r1.source()),
            (Some("true"), Some("cat"), "(none)")
        );
        let r2 = rows.row(2);
        assert_eq!((r2.categorical(0), r2.label(), r2.source()), (None, None, "header-src"));
        assert!(r2.numeric().iter().all(|x| x.is_nan()));
        assert_eq!(l.label(&json!({"y": 2})).as_deref(), Some("2"));
        let mut seen = Vec::new();
        l.each_categorical(&json!({"c": 1.5, "y": null}), |j, c| {
            seen.push((j, c.map(str::to_owned)))
        });
        assert_eq!(seen, vec![(0, Some("1.5".to_owned())), (1, None)]);
    }

    #[test]
    fn nested_tensors_read_as_their_flat_form() {
        let shape = [2, 3, 2];
        let flat: Vec<i64> = (0..12).collect();
        let nested = json!([[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        extend_tensor(Some(&json!(flat)), &shape, 12, &mut a);
        extend_tensor(Some(&nested), &shape, 12, &mut b);
        assert_eq!(a, b);
        assert_eq!(b, (0..12).map(|x| x as f32).collect::<Vec<_>>());
        assert!(tensor_form_ok(Some(&nested), &shape, 12) && tensor_form_ok(Some(&json!(flat)), &shape, 12));
        // Ragged, too deep, too shallow, the wrong order of axes, a short flat array: refused,
        // and read as NaN (nested) or NaN-padded (flat) without reading past the shape.
        for bad in [
            json!([[[0, 1], [2, 3]], [[6, 7], [8, 9], [10, 11]]]),
            json!([[[[0]], [1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, 11]]]),
            json!([[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]),
            json!([[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9, 10, 11]]]),
            json!([0, 1, 2]),
            json!({"a": 1}),
        ] {
            assert!(!tensor_form_ok(Some(&bad), &shape, 12), "{bad}");
            let mut out = vec![7.0];
            extend_tensor(Some(&bad), &shape, 12, &mut out);
            assert_eq!(out.len(), 13, "{bad}");
        }
        let mut out = Vec::new();
        extend_tensor(
            Some(&json!([[[0, 1], [2, 3], [4, 5]], [[6, 7], [8, 9], [10, "x"]]])),
            &shape,
            12,
            &mut out,
        );
        assert!(out[11].is_nan() && out[10] == 10.0);
    }

    #[test]
    fn grid_offsets_follow_the_channel_axis() {
        let t = |shape: Vec<usize>, channels| TensorField {
            name: "img".into(),
            pointer: "/img".into(),
            shape,
            channels,
        };
        let first = t(vec![3, 4, 5], Channels::First);
        let last = t(vec![4, 5, 3], Channels::Last);
        assert_eq!((first.grid(), last.grid()), (Some((4, 5, 3)), Some((4, 5, 3))));
        // Element (row 2, col 1) of channel 1: [1][2][1] channels-first, [2][1][1] channels-last.
        assert_eq!(first.grid_offset(2, 1, 1), Some(20 + 2 * 5 + 1));
        assert_eq!(last.grid_offset(2, 1, 1), Some((2 * 5 + 1) * 3 + 1));
        assert_eq!(last.grid_offset(4, 0, 0), None);
        assert_eq!(t(vec![28, 28], Channels::First).grid(), Some((28, 28, 1)));
        assert_eq!(t(vec![10], Channels::First).grid(), None);
        let g: GuardSection = serde_json::from_value(json!({
            "id": "t", "tensors": [{"name": "img", "pointer": "/img", "shape": [4, 5, 3], "channels": "last"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.tensors[0].channels, Channels::Last);
        let bad = serde_json::from_value::<GuardSection>(json!({
            "id": "t", "tensors": [{"name": "img", "pointer": "/img", "shape": [4], "channels": "middle"}]
        }));
        assert!(bad.is_err_and(|e| e.to_string().contains("middle")));
    }

    #[test]
    fn sources_only_without_features() {
        let l = layout();
        let mut rows = FeatureRows::new(&l, false);
        rows.push(&l, 0, &json!({"src": "é".repeat(200), "f": [1, 2]}), None);
        assert!(rows.row(0).numeric().is_empty());
        assert!(rows.row(0).source().len() <= crate::MAX_SOURCE_LEN);
        rows.clear();
        assert!(rows.is_empty());
    }

    #[test]
    fn rows_written_field_by_field_match_rows_pushed_from_json() {
        let l = layout();
        let mut a = FeatureRows::new(&l, true);
        let mut b = FeatureRows::new(&l, true);
        a.push(
            &l,
            0,
            &json!({"src": "p", "y": 3, "f": [1, 2], "img": [1, 2, 3, 4]}),
            None,
        );
        b.start_row(0);
        b.set_numeric(1, 2.0);
        b.set_numeric(0, 1.0);
        (0..4).for_each(|i| b.set_tensor(0, i, (i + 1) as f32));
        b.set_tensor(0, 99, 0.0);
        b.set_categorical(1, "3");
        b.set_source("p");
        b.start_row(1);
        b.set_categorical(0, "gone");
        b.set_source("gone");
        b.abort_row();
        b.start_row(5);
        let (ra, rb) = (a.row(0), b.row(0));
        assert_eq!((ra.numeric(), ra.tensor(0)), (rb.numeric(), rb.tensor(0)));
        assert_eq!(
            (ra.label(), ra.categorical(0), ra.source()),
            (rb.label(), rb.categorical(0), rb.source())
        );
        assert_eq!(b.len(), 2);
        let r = b.row(1);
        assert_eq!(
            (r.index(), r.source(), r.categorical(0), r.label()),
            (5, "(none)", None, None)
        );
        assert!(r.numeric().iter().all(|x| x.is_nan()) && r.tensor(0).len() == 4);
    }
}
