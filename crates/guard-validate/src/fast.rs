//! The typed fast path: decode, validate and extract in one pass, without building a tree.
//!
//! A domain schema written in the common subset of JSON Schema (objects with `properties`,
//! `required` and `additionalProperties: false`; arrays with `items`, `minItems`, `maxItems`;
//! numbers and integers with bounds, integer `enum` and a `multipleOf` that is a power of two
//! (whose test is exact in binary); strings with lengths and `enum`;
//! booleans) compiles into a [`Shape`]. A record is then decoded by serde straight against the
//! shape: every value is checked as it is read, and the `x-guard` fields go straight into the
//! batch's typed row ([`FeatureRows`]), so no `serde_json::Value` is built.
//!
//! The fast path only ever **accepts**. Anything it is not sure of (a value out of bounds, an
//! unknown or duplicate key, `1.0` where an integer is wanted, a syntax error) makes it give
//! up, and the record takes the full path (tree decode, JSON Schema validator, x-guard rules)
//! that produces the exact reasons. So a record the fast path accepts is one the full path
//! accepts too; `tests::fast_path_agrees_with_the_full_path` and the fuzz target check that.
//! A schema with any keyword outside the subset (`pattern`, `$ref`, `oneOf`, `format`, ...)
//! does not compile, and all its records take the full path.

use guard_core::{FeatureRows, FieldPath, GuardSection};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Largest integer every f64 holds exactly; integers beyond it go the full path.
const EXACT_INT: u64 = 1 << 53;

/// Keywords that only annotate (they never change what is valid).
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "x-guard",
];

/// Where an extracted value goes in the typed row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sink {
    Numeric(usize),
    Categorical(usize),
    Source,
}

#[derive(Debug, Clone, Default)]
struct NumberRule {
    integer: bool,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    /// Allowed integers (`enum` of integers only).
    one_of: Option<Vec<i64>>,
    /// `multipleOf`, a power of two (`x / m` is then exact, and whole exactly when the full
    /// path's exact fraction test says so).
    multiple_of: Option<f64>,
}

#[derive(Debug, Clone)]
enum Kind {
    Object {
        props: Vec<(String, Shape)>,
        required: u64,
    },
    Array {
        items: Box<Shape>,
        min: usize,
        max: Option<usize>,
        /// Per index, where the element goes (`/features/3`).
        at: Vec<(usize, Sink)>,
        /// The whole array is tensor `t` of this many elements.
        tensor: Option<(usize, usize)>,
        /// A tensor nested as its shape (`[[..], ..]`): the shape, level by level (empty: a
        /// flat tensor, or no tensor).
        dims: Vec<usize>,
    },
    Number(NumberRule),
    String {
        min: usize,
        max: Option<usize>,
        one_of: Option<Vec<String>>,
    },
    Bool,
}

/// A compiled schema node and what its value feeds.
#[derive(Debug, Clone)]
pub struct Shape {
    kind: Kind,
    sinks: Vec<Sink>,
}

impl Shape {
    /// Compile `schema` with the `x-guard` fields of `guard`; `None` when the schema uses
    /// anything outside the subset (its records then take the full path).
    pub fn compile(schema: &Value, guard: &GuardSection) -> Option<Self> {
        let mut root = compile_node(schema)?;
        for (col, f) in guard.numeric.iter().enumerate() {
            root.attach(&FieldPath::parse(&f.pointer).ok()?, Sink::Numeric(col))?;
        }
        let categorical = guard.categorical.iter().map(|f| f.pointer.as_str());
        for (j, p) in categorical.chain(guard.label.as_deref()).enumerate() {
            root.attach(&FieldPath::parse(p).ok()?, Sink::Categorical(j))?;
        }
        if let Some(p) = &guard.source {
            root.attach(&FieldPath::parse(p).ok()?, Sink::Source)?;
        }
        for (t, tf) in guard.tensors.iter().enumerate() {
            let len = tf.len()?;
            let node = root.find_mut(FieldPath::parse(&tf.pointer).ok()?.tokens().map(|(k, _)| k))?;
            let nested = nested_chain(node, tf.shape.len());
            match &mut node.kind {
                Kind::Array { items, tensor, .. } if tensor.is_none() && matches!(items.kind, Kind::Number(_)) => {
                    *tensor = Some((t, len));
                }
                Kind::Array { tensor, dims, at, .. } if tensor.is_none() && at.is_empty() && nested => {
                    *tensor = Some((t, len));
                    dims.clone_from(&tf.shape);
                }
                _ => return None,
            }
        }
        Some(root)
    }

    /// The node under the object keys `keys` (array elements have no node of their own).
    fn find_mut<'k>(&mut self, keys: impl IntoIterator<Item = &'k str>) -> Option<&mut Shape> {
        let mut node = self;
        for key in keys {
            node = match &mut node.kind {
                Kind::Object { props, .. } => props.iter_mut().find(|(k, _)| k == key).map(|(_, s)| s)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Route the value at `path` to `sink`. Scalars only: a pointer to an array element names
    /// the array's index.
    fn attach(&mut self, path: &FieldPath, sink: Sink) -> Option<()> {
        let tokens: Vec<(&str, Option<usize>)> = path.tokens().collect();
        let (last, parents) = tokens.split_last()?;
        let node = self.find_mut(parents.iter().map(|(k, _)| *k))?;
        let scalar_ok = |k: &Kind| {
            matches!(
                (sink, k),
                (Sink::Numeric(_), Kind::Number(_))
                    | (Sink::Categorical(_), Kind::Number(_) | Kind::String { .. } | Kind::Bool)
                    | (Sink::Source, Kind::String { .. })
            )
        };
        match &mut node.kind {
            Kind::Object { props, .. } => {
                let child = props.iter_mut().find(|(k, _)| k == last.0).map(|(_, s)| s)?;
                scalar_ok(&child.kind).then(|| child.sinks.push(sink))
            }
            Kind::Array { items, at, .. } => {
                let i = last.1?;
                scalar_ok(&items.kind).then(|| {
                    let pos = at.partition_point(|(j, _)| *j <= i);
                    at.insert(pos, (i, sink));
                })
            }
            _ => None,
        }
    }

    /// Decode `bytes` against this shape into a new row of `rows` (record `index` of the
    /// batch). `false`: the record is not certainly valid; the row was dropped and the record
    /// must take the full path.
    pub fn accept(&self, bytes: &[u8], rows: &mut FeatureRows, index: usize) -> bool {
        rows.start_row(index);
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let features = rows.has_features();
        let ok = Seed {
            shape: self,
            rows,
            features,
            extra: &[],
            tensor: None,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .is_ok();
        if !ok {
            rows.abort_row();
        }
        ok
    }
}

fn compile_node(v: &Value) -> Option<Shape> {
    let m = v.as_object()?;
    let ty = match (m.get("type"), m.get("enum").and_then(Value::as_array)) {
        (Some(t), _) => t.as_str()?,
        // `enum` alone: all strings, or all integers.
        (None, Some(e)) if e.iter().all(Value::is_string) => "string",
        (None, Some(e)) if e.iter().all(|v| v.is_i64() || v.is_u64()) => "number",
        _ => return None,
    };
    let allowed: &[&str] = match ty {
        "object" => &["type", "properties", "required", "additionalProperties"],
        "array" => &["type", "items", "minItems", "maxItems"],
        "number" | "integer" => &[
            "type",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "enum",
            "multipleOf",
        ],
        "string" => &["type", "minLength", "maxLength", "enum"],
        "boolean" => &["type"],
        _ => return None,
    };
    if m.keys()
        .any(|k| !allowed.contains(&k.as_str()) && !ANNOTATIONS.contains(&k.as_str()) && !k.starts_with("x-"))
    {
        return None;
    }
    let count = |k: &str| -> Option<Option<usize>> {
        match m.get(k) {
            None => Some(None),
            Some(v) => Some(Some(usize::try_from(v.as_u64()?).ok()?)),
        }
    };
    let kind = match ty {
        "object" => {
            if m.get("additionalProperties") != Some(&Value::Bool(false)) {
                return None;
            }
            let props: Vec<(String, Shape)> = match m.get("properties") {
                None => Vec::new(),
                Some(p) => p
                    .as_object()?
                    .iter()
                    .map(|(k, v)| Some((k.clone(), compile_node(v)?)))
                    .collect::<Option<_>>()?,
            };
            if props.len() > 64 {
                return None;
            }
            let mut required = 0u64;
            for r in m
                .get("required")
                .map_or(Some(&[][..]), |r| r.as_array().map(Vec::as_slice))?
            {
                let i = props.iter().position(|(k, _)| Some(k.as_str()) == r.as_str())?;
                required |= 1 << i;
            }
            Kind::Object { props, required }
        }
        "array" => Kind::Array {
            items: Box::new(compile_node(m.get("items")?)?),
            min: count("minItems")?.unwrap_or(0),
            max: count("maxItems")?,
            at: Vec::new(),
            tensor: None,
            dims: Vec::new(),
        },
        "number" | "integer" => {
            let bound = |k: &str| -> Option<Option<f64>> {
                match m.get(k) {
                    None => Some(None),
                    Some(v) => Some(Some(exact(v)?)),
                }
            };
            let one_of = match m.get("enum") {
                None => None,
                Some(e) => Some(
                    e.as_array()?
                        .iter()
                        .map(|v| v.as_i64().filter(|x| x.unsigned_abs() < EXACT_INT))
                        .collect::<Option<Vec<i64>>>()?,
                ),
            };
            // Any other divisor: the whole schema takes the full path.
            let multiple_of = match m.get("multipleOf") {
                None => None,
                Some(v) => Some(v.as_f64().filter(|x| power_of_two(*x))?),
            };
            Kind::Number(NumberRule {
                multiple_of,
                integer: ty == "integer",
                minimum: bound("minimum")?,
                maximum: bound("maximum")?,
                exclusive_minimum: bound("exclusiveMinimum")?,
                exclusive_maximum: bound("exclusiveMaximum")?,
                one_of,
            })
        }
        "string" => Kind::String {
            min: count("minLength")?.unwrap_or(0),
            max: count("maxLength")?,
            one_of: match m.get("enum") {
                None => None,
                Some(e) => Some(
                    e.as_array()?
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<_>>()?,
                ),
            },
        },
        _ => Kind::Bool,
    };
    Some(Shape {
        kind,
        sinks: Vec::new(),
    })
}

/// A positive normal f64 with no mantissa bits: 2^k.
fn power_of_two(x: f64) -> bool {
    x.is_normal() && x > 0.0 && x.to_bits() & ((1u64 << 52) - 1) == 0
}

/// A bound as an exact f64 (integers beyond 2^53 and non-numbers do not compile).
fn exact(v: &Value) -> Option<f64> {
    if let Some(i) = v.as_i64() {
        return (i.unsigned_abs() < EXACT_INT).then_some(i as f64);
    }
    if v.as_u64().is_some() {
        return None;
    }
    v.as_f64().filter(|x| x.is_finite())
}

impl NumberRule {
    /// Whether `x` (a float, or an integer when `int` holds it) certainly passes.
    fn accepts(&self, x: f64, int: Option<i64>) -> bool {
        if self.integer && int.is_none() {
            return false;
        }
        if let Some(allowed) = &self.one_of {
            if !int.is_some_and(|i| allowed.contains(&i)) {
                return false;
            }
        }
        self.multiple_of.is_none_or(|m| (x / m).fract() == 0.0)
            && self.minimum.is_none_or(|b| x >= b)
            && self.maximum.is_none_or(|b| x <= b)
            && self.exclusive_minimum.is_none_or(|b| x > b)
            && self.exclusive_maximum.is_none_or(|b| x < b)
    }
}

/// Whether `node` is `rank` levels of arrays (no sinks, no tensor below the top) with numbers
/// at the bottom: the schema of a tensor nested as its shape.
fn nested_chain(node: &Shape, rank: usize) -> bool {
    let mut cur = node;
    for level in 0..rank {
        match &cur.kind {
            Kind::Array { items, at, tensor, .. } if at.is_empty() && (level == 0 || tensor.is_none()) => {
                if level > 0 && !cur.sinks.is_empty() {
                    return false;
                }
                cur = items;
            }
            _ => return false,
        }
    }
    rank >= 2 && matches!(cur.kind, Kind::Number(_)) && cur.sinks.is_empty()
}

/// Decodes one value against a shape. `extra` are the sinks of this array element, `tensor`
/// the tensor slot it fills.
struct Seed<'s, 'r> {
    shape: &'s Shape,
    rows: &'r mut FeatureRows,
    features: bool,
    extra: &'s [(usize, Sink)],
    tensor: Option<(usize, usize)>,
}

/// The fast path gives up (the message is never shown: the full path judges the record).
fn give_up<E: serde::de::Error>() -> E {
    E::custom("fast path: not certain")
}

impl Seed<'_, '_> {
    fn number<E: serde::de::Error>(self, x: f64, int: Option<i64>) -> Result<(), E> {
        let Seed {
            shape,
            rows,
            features,
            extra,
            tensor,
        } = self;
        let Kind::Number(rule) = &shape.kind else {
            return Err(give_up());
        };
        if !rule.accepts(x, int) {
            return Err(give_up());
        }
        if features {
            if let Some((t, i)) = tensor {
                rows.set_tensor(t, i, x as f32);
            }
            for s in shape.sinks.iter().chain(extra.iter().map(|(_, s)| s)) {
                match (*s, int) {
                    (Sink::Numeric(c), _) => rows.set_numeric(c, x),
                    (Sink::Categorical(j), Some(i)) => rows.set_categorical_int(j, i),
                    (Sink::Categorical(j), None) => {
                        let text = serde_json::Number::from_f64(x).map_or_else(String::new, |n| n.to_string());
                        rows.set_categorical(j, &text);
                    }
                    (Sink::Source, _) => {}
                }
            }
        }
        Ok(())
    }

    fn int<E: serde::de::Error>(self, i: i128) -> Result<(), E> {
        if i.unsigned_abs() >= u128::from(EXACT_INT) {
            return Err(give_up());
        }
        let i = i as i64;
        self.number(i as f64, Some(i))
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value of the schema's shape")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        if !matches!(self.shape.kind, Kind::Bool) {
            return Err(give_up());
        }
        if self.features {
            for s in self.shape.sinks.iter().chain(self.extra.iter().map(|(_, s)| s)) {
                if let Sink::Categorical(j) = *s {
                    self.rows.set_categorical(j, if v { "true" } else { "false" });
                }
            }
        }
        Ok(())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.int(i128::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.int(i128::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        if !v.is_finite() {
            return Err(give_up());
        }
        self.number(v, None)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        let Kind::String { min, max, one_of } = &self.shape.kind else {
            return Err(give_up());
        };
        // JSON Schema counts characters (code points); bytes bound them from both sides.
        let chars = if v.is_ascii() { v.len() } else { v.chars().count() };
        if chars < *min || max.is_some_and(|m| chars > m) {
            return Err(give_up());
        }
        if one_of.as_ref().is_some_and(|o| !o.iter().any(|s| s == v)) {
            return Err(give_up());
        }
        for s in self.shape.sinks.iter().chain(self.extra.iter().map(|(_, s)| s)) {
            match *s {
                Sink::Source => self.rows.set_source(v),
                Sink::Categorical(j) if self.features => self.rows.set_categorical(j, v),
                _ => {}
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Seed {
            shape, rows, features, ..
        } = self;
        let Kind::Array {
            items,
            min,
            max,
            at,
            tensor,
            dims,
        } = &shape.kind
        else {
            return Err(give_up());
        };
        if let (Some((t, len)), false) = (tensor, dims.is_empty()) {
            // A tensor nested as its shape: its numbers go straight into the row's slot (a
            // scratch slot when the batch keeps no features).
            let mut scratch = Vec::new();
            let slot = if features {
                rows.tensor_last_mut(*t).ok_or_else(give_up)?
            } else {
                scratch.resize(*len, 0.0);
                &mut scratch[..]
            };
            return nested_elements(&mut seq, items, dims, slot, *min, *max);
        }
        if at.is_empty() {
            if let (Kind::Number(rule), Some((t, len)), true) = (&items.kind, tensor, features) {
                // A tensor: its numbers go straight into the row's slot.
                let slot = rows.tensor_last_mut(*t).ok_or_else(give_up)?;
                return tensor_elements(&mut seq, rule, slot, *min, *max, *len);
            }
        }
        let mut n = 0usize;
        loop {
            if max.is_some_and(|m| n >= m) {
                // One more element would be too many: end of array or give up.
                return match seq.next_element_seed(Seed {
                    shape: items,
                    rows,
                    features: false,
                    extra: &[],
                    tensor: None,
                })? {
                    None => finish(n, *min, *tensor),
                    Some(()) => Err(give_up()),
                };
            }
            let (start, end) = if at.is_empty() {
                (0, 0)
            } else {
                (
                    at.partition_point(|(i, _)| *i < n),
                    at.partition_point(|(i, _)| *i <= n),
                )
            };
            let next = seq.next_element_seed(Seed {
                shape: items,
                rows: &mut *rows,
                features,
                extra: &at[start..end],
                tensor: tensor.map(|(t, _)| (t, n)),
            })?;
            if next.is_none() {
                return finish(n, *min, *tensor);
            }
            n += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Kind::Object { props, required } = &self.shape.kind else {
            return Err(give_up());
        };
        let mut seen = 0u64;
        while let Some(i) = map.next_key_seed(Key(props))? {
            if seen & (1 << i) != 0 {
                return Err(give_up());
            }
            seen |= 1 << i;
            map.next_value_seed(Seed {
                shape: &props[i].1,
                rows: &mut *self.rows,
                features: self.features,
                extra: &[],
                tensor: None,
            })?;
        }
        if seen & required != *required {
            return Err(give_up());
        }
        Ok(())
    }
}

/// The elements of a tensor array, checked by `rule` and written into `slot` (its length).
fn tensor_elements<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    rule: &NumberRule,
    slot: &mut [f32],
    min: usize,
    max: Option<usize>,
    len: usize,
) -> Result<(), A::Error> {
    let mut n = 0usize;
    while let Some(x) = seq.next_element_seed(Element(rule))? {
        // More elements than the tensor holds or the schema allows: the full path says why.
        if n >= len || max.is_some_and(|m| n >= m) {
            return Err(give_up());
        }
        slot[n] = x;
        n += 1;
    }
    finish(n, min, Some((0, len)))
}

/// The levels of a tensor nested as `dims` (this level's length first): each element is a block
/// of the next level's shape `items`, written into its part of `slot`; `min` and `max` are this
/// level's schema bounds. Any other length gives up (the full path says why).
fn nested_elements<'de, A: SeqAccess<'de>>(
    seq: &mut A,
    items: &Shape,
    dims: &[usize],
    slot: &mut [f32],
    min: usize,
    max: Option<usize>,
) -> Result<(), A::Error> {
    let (&d, rest) = dims.split_first().ok_or_else(give_up)?;
    let stride: usize = rest.iter().product();
    let mut n = 0usize;
    loop {
        if n >= d || max.is_some_and(|m| n >= m) {
            return match seq.next_element::<serde::de::IgnoredAny>()? {
                None if n == d && n >= min => Ok(()),
                _ => Err(give_up()),
            };
        }
        let part = slot.get_mut(n * stride..(n + 1) * stride).ok_or_else(give_up)?;
        match seq.next_element_seed(Block {
            shape: items,
            dims: rest,
            slot: part,
        })? {
            Some(()) => n += 1,
            None => return Err(give_up()),
        }
    }
}

/// One block of a nested tensor: an array of shape `shape` nested as `dims`, into `slot`.
struct Block<'s> {
    shape: &'s Shape,
    dims: &'s [usize],
    slot: &'s mut [f32],
}

impl<'de> DeserializeSeed<'de> for Block<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Block<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Kind::Array {
            items, min, max, at, ..
        } = &self.shape.kind
        else {
            return Err(give_up());
        };
        if !at.is_empty() {
            return Err(give_up());
        }
        match (&items.kind, self.dims) {
            (Kind::Number(rule), [len]) => tensor_elements(&mut seq, rule, self.slot, *min, *max, *len),
            (Kind::Array { .. }, [_, _, ..]) => nested_elements(&mut seq, items, self.dims, self.slot, *min, *max),
            _ => Err(give_up()),
        }
    }
}

/// One number of a tensor, checked against its rule.
struct Element<'s>(&'s NumberRule);

impl Element<'_> {
    /// An integer element (beyond 2^53 the full path decides).
    fn int<E: serde::de::Error>(self, v: i128) -> Result<f32, E> {
        if v.unsigned_abs() >= u128::from(EXACT_INT) || !self.0.accepts(v as f64, Some(v as i64)) {
            return Err(give_up());
        }
        Ok(v as f32)
    }
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = f32;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<f32, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = f32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<f32, E> {
        self.int(i128::from(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<f32, E> {
        self.int(i128::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<f32, E> {
        if !v.is_finite() || !self.0.accepts(v, None) {
            return Err(give_up());
        }
        Ok(v as f32)
    }
}

fn finish<E: serde::de::Error>(n: usize, min: usize, tensor: Option<(usize, usize)>) -> Result<(), E> {
    if n < min || tensor.is_some_and(|(_, len)| len != n) {
        return Err(give_up());
    }
    Ok(())
}

/// An object key: the index of a known property (anything else gives up).
struct Key<'s>(&'s [(String, Shape)]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a known property")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<usize, E> {
        self.0.iter().position(|(k, _)| k == v).ok_or_else(give_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DomainSchema, Judge};
    use guard_core::{Limits, Record};
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// The repository (`cargo test` sets `CARGO_MANIFEST_DIR` at run time; the compiled-in
    /// path is stale when a shared build cache was filled from another clone).
    fn root() -> PathBuf {
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()))
            .join("../..")
    }

    fn judge() -> Judge {
        let mut routes = ["shuttle", "mnist", "diamonds"]
            .into_iter()
            .map(|d| {
                let s = DomainSchema::load(&root().join(format!("schemas/{d}.schema.json")))
                    .unwrap_or_else(|e| panic!("{e}"));
                (d.to_owned(), Arc::new(s))
            })
            .collect::<HashMap<_, _>>();
        // MNIST with its pixels nested as `[28][28]` (what `ndarray.tolist()` writes).
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(root().join("schemas/mnist.schema.json")).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        let leaf = v["properties"]["pixels"]["items"].clone();
        v["properties"]["pixels"] = serde_json::json!({"type": "array", "minItems": 28, "maxItems": 28,
            "items": {"type": "array", "minItems": 28, "maxItems": 28, "items": leaf}});
        let s = DomainSchema::from_value(&v).unwrap_or_else(|e| panic!("{e:?}"));
        routes.insert("mnist-nested".to_owned(), Arc::new(s));
        // Shuttle with its features on a grid of quarters (`multipleOf: 0.25`, which the fast
        // path checks itself): 50.5 passes, 50.3 takes the full path and its reason.
        let mut v: Value =
            serde_json::from_slice(&std::fs::read(root().join("schemas/shuttle.schema.json")).unwrap_or_default())
                .unwrap_or_else(|e| panic!("{e}"));
        v["properties"]["features"]["items"]["multipleOf"] = serde_json::json!(0.25);
        let s = DomainSchema::from_value(&v).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(s.fast().is_some(), "the grid keeps the shuttle schema on the fast path");
        routes.insert("shuttle-grid".to_owned(), Arc::new(s));
        Judge::new(Limits::default(), routes)
    }

    /// The MNIST samples with their pixels nested as `[28][28]`.
    fn nested_mnist() -> Vec<Vec<u8>> {
        lines("schemas/samples/mnist.valid.jsonl")
            .iter()
            .map(|l| {
                let mut v: Value = serde_json::from_slice(l).unwrap_or_else(|e| panic!("{e}"));
                let px = v["pixels"].as_array().cloned().unwrap_or_default();
                v["pixels"] = Value::Array(px.chunks(28).map(|c| Value::Array(c.to_vec())).collect());
                serde_json::to_vec(&v).unwrap_or_default()
            })
            .collect()
    }

    fn lines(file: &str) -> Vec<Vec<u8>> {
        std::fs::read(root().join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The two paths agree on the verdict, and on the typed row of a passing record.
    fn agree(j: &Judge, topic: &str, payload: &[u8]) -> bool {
        let r = Record::whole(0, None, None, Vec::new(), Some(payload.to_vec()));
        let full = j.judge(topic, &r);
        let schema = j.schema_for(topic).unwrap_or_else(|| panic!("{topic}"));
        let mut rows = FeatureRows::new(schema.layout(), true);
        let fast = j.judge_row(topic, &r, 0, &mut rows, None, |_, _| {});
        assert_eq!(full, fast, "{topic}: {}", String::from_utf8_lossy(payload));
        if !fast.verdict.is_pass() {
            assert!(rows.is_empty());
            return false;
        }
        let value: Value = serde_json::from_slice(payload).unwrap_or_else(|e| panic!("{e}"));
        let mut want = FeatureRows::new(schema.layout(), true);
        want.push(schema.layout(), 0, &value, None);
        let (a, b) = (rows.row(0), want.row(0));
        let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let bits32 = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a.numeric()), bits(b.numeric()));
        for t in 0..schema.guard().tensors.len() {
            assert_eq!(bits32(a.tensor(t)), bits32(b.tensor(t)));
        }
        for c in 0..a.categorical_width() {
            assert_eq!(a.categorical(c), b.categorical(c));
        }
        assert_eq!((a.label(), a.source()), (b.label(), b.source()));
        true
    }

    fn accepted(j: &Judge, topic: &str, payload: &[u8]) -> bool {
        let schema = j.schema_for(topic).unwrap_or_else(|| panic!("{topic}"));
        let mut rows = FeatureRows::new(schema.layout(), true);
        schema.fast().is_some_and(|s| s.accept(payload, &mut rows, 0))
    }

    #[test]
    fn shipped_schemas_compile_and_take_their_valid_records_fast() {
        let j = judge();
        for d in ["shuttle", "mnist", "diamonds"] {
            assert!(j.schema_for(d).and_then(|s| s.fast()).is_some(), "{d}");
        }
        for (topic, file) in [
            ("shuttle", "schemas/samples/shuttle.valid.jsonl"),
            ("mnist", "schemas/samples/mnist.valid.jsonl"),
        ] {
            for l in lines(file) {
                assert!(accepted(&j, topic, &l), "{}", String::from_utf8_lossy(&l));
                assert!(agree(&j, topic, &l));
            }
        }
        // On the grid of quarters: 50.25 is taken fast; 50.3 is not, and the full path names
        // `multipleOf`.
        let on = br#"{"source":"s","id":"g","features":[50.25,21,77,0,28,0,27,48,22],"label":1}"#;
        let off = br#"{"source":"s","id":"g","features":[50.3,21,77,0,28,0,27,48,22],"label":1}"#;
        assert!(accepted(&j, "shuttle-grid", on) && agree(&j, "shuttle-grid", on));
        assert!(!accepted(&j, "shuttle-grid", off) && !agree(&j, "shuttle-grid", off));
        let r = Record::whole(0, None, None, Vec::new(), Some(off.to_vec()));
        let why = format!("{:?}", j.judge("shuttle-grid", &r).verdict);
        assert!(why.contains("multipleOf"), "{why}");
        // Nested pixels: taken fast, into the same typed row as the flat record's.
        assert!(j.schema_for("mnist-nested").and_then(|s| s.fast()).is_some());
        for (flat, nested) in lines("schemas/samples/mnist.valid.jsonl").iter().zip(nested_mnist()) {
            assert!(accepted(&j, "mnist-nested", &nested) && agree(&j, "mnist-nested", &nested));
            let row = |topic: &str, payload: &[u8]| {
                let schema = j.schema_for(topic).unwrap_or_else(|| panic!("{topic}"));
                let mut rows = FeatureRows::new(schema.layout(), true);
                assert!(schema.fast().is_some_and(|s| s.accept(payload, &mut rows, 0)));
                rows.row(0).tensor(0).iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(row("mnist", flat), row("mnist-nested", &nested));
        }
        // Flat pixels under the nested schema, and nested ones with a row short, a row long or
        // one level too deep: the full path's verdict (refused), never the fast path's.
        let nested = String::from_utf8(nested_mnist()[0].clone()).unwrap_or_default();
        for bad in [
            String::from_utf8(lines("schemas/samples/mnist.valid.jsonl")[0].clone()).unwrap_or_default(),
            nested.replacen("[0,", "[", 1),
            nested.replacen("[0,", "[0,0,", 1),
            nested.replacen("[0,", "[[0],", 1),
        ] {
            assert!(!accepted(&j, "mnist-nested", bad.as_bytes()), "{bad}");
            assert!(!agree(&j, "mnist-nested", bad.as_bytes()), "{bad}");
        }
        let diamond = br#"{"carat":0.23,"cut":"Ideal","color":"E","clarity":"SI2","depth":61.5,"table":55,"price":326,"x":3.95,"y":3.98,"z":2.43}"#;
        assert!(accepted(&j, "diamonds", diamond) && agree(&j, "diamonds", diamond));
    }

    #[test]
    fn doubtful_records_take_the_full_path_and_get_its_reasons() {
        let j = judge();
        let f = r#""features":[50,21,77,0,28,0,27,48,22]"#;
        for (payload, fast, pass) in [
            // An integer written as 1.0 is valid JSON Schema; the fast path leaves it to the full one.
            (format!(r#"{{"source":"s",{f},"label":1.0}}"#), false, true),
            (format!(r#"{{"source":"s",{f},"label":1}}"#), true, true),
            (format!(r#"{{"source":"s",{f},"label":2}}"#), false, false),
            (format!(r#"{{"source":"s",{f},"label":1,"label":0}}"#), false, false),
            (format!(r#"{{"source":"s",{f},"label":1,"extra":0}}"#), false, false),
            (format!(r#"{{"source":"s",{f}}}"#), false, false),
            (format!(r#"{{"source":"",{f},"label":0}}"#), false, false),
            (
                format!(r#"{{"source":"{}",{f},"label":0}}"#, "é".repeat(128)),
                true,
                true,
            ),
            (
                format!(r#"{{"source":"{}",{f},"label":0}}"#, "é".repeat(129)),
                false,
                false,
            ),
            (
                r#"{"source":"s","features":[1,2,3,4,5,6,7,8],"label":0}"#.to_owned(),
                false,
                false,
            ),
            (
                r#"{"source":"s","features":[1,2,3,4,5,6,7,8,9,10],"label":0}"#.to_owned(),
                false,
                false,
            ),
            (
                r#"{"source":"s","features":[1,2,3,4,5,6,7,8,100001],"label":0}"#.to_owned(),
                false,
                false,
            ),
            (
                r#"{"source":"s","features":[1,2,3,4,5,6,7,8,1e999],"label":0}"#.to_owned(),
                false,
                false,
            ),
            (
                r#"{"source":"s","features":[1,2,3,4,5,6,7,8,-0.5e2],"label":0}"#.to_owned(),
                true,
                true,
            ),
            (format!(r#"{{"source":"s",{f},"label":0}} x"#), false, false),
            (format!(r#"{{"source":"s",{f},"label":0}}  "#), true, true),
            (format!(r#"{{"sour\u0063e":"s",{f},"label":0}}"#), true, true),
        ] {
            assert_eq!(accepted(&j, "shuttle", payload.as_bytes()), fast, "{payload}");
            assert_eq!(agree(&j, "shuttle", payload.as_bytes()), pass, "{payload}");
        }
        let short = format!(r#"{{"source":"s","pixels":[{}],"label":3}}"#, vec!["0"; 783].join(","));
        assert!(!accepted(&j, "mnist", short.as_bytes()) && !agree(&j, "mnist", short.as_bytes()));
    }

    #[test]
    fn keywords_outside_the_subset_do_not_compile() {
        let g: GuardSection = serde_json::from_value(serde_json::json!({"id": "t"})).unwrap_or_else(|e| panic!("{e}"));
        let base = serde_json::json!({"type": "object", "additionalProperties": false, "properties": {"a": {"type": "string"}}});
        assert!(Shape::compile(&base, &g).is_some());
        for (path, key, value) in [
            ("/properties/a", "pattern", serde_json::json!("^x")),
            ("/properties/a", "format", serde_json::json!("email")),
            ("", "oneOf", serde_json::json!([])),
            ("", "additionalProperties", serde_json::json!(true)),
            ("/properties/a", "type", serde_json::json!(["string", "null"])),
        ] {
            let mut s = base.clone();
            if let Some(Value::Object(m)) = s.pointer_mut(path) {
                m.insert(key.to_owned(), value);
            }
            assert!(Shape::compile(&s, &g).is_none(), "{path} {key}");
        }
    }

    /// `multipleOf` compiles only for a power of two, and then the fast path accepts exactly
    /// what the JSON Schema validator accepts (inside f64's range; beyond it, it gives up).
    #[test]
    fn multiple_of_compiles_for_powers_of_two_and_agrees_with_the_validator() {
        let g: GuardSection = serde_json::from_value(serde_json::json!({"id": "t"})).unwrap_or_else(|e| panic!("{e}"));
        let schema = |m: f64| {
            serde_json::json!({"type": "object", "additionalProperties": false,
                "properties": {"a": {"type": "number", "multipleOf": m}}})
        };
        for m in [0.1, 3.0, 0.3] {
            assert!(Shape::compile(&schema(m), &g).is_none(), "{m}");
        }
        for m in [0.5, 0.25, 1.0, 2.0, 0.0625] {
            let shape = Shape::compile(&schema(m), &g).unwrap_or_else(|| panic!("{m} compiles"));
            let Kind::Object { props, .. } = &shape.kind else {
                panic!("an object")
            };
            let Kind::Number(rule) = &props[0].1.kind else {
                panic!("a number")
            };
            let full = jsonschema::validator_for(&schema(m)).unwrap_or_else(|e| panic!("{e}"));
            for x in [
                0.0, -0.0, 0.5, 1.5, -2.25, 0.37, 3.0, 7.75, 0.0625, 0.03125, 1e300, 1e-300,
            ] {
                let ok = full.is_valid(&serde_json::json!({ "a": x }));
                assert_eq!(rule.accepts(x, None), ok, "{x} multipleOf {m}");
            }
            // Beyond f64's range the quotient overflows: the fast path gives up, never accepts.
            assert!(!rule.accepts(f64::MAX, None) || full.is_valid(&serde_json::json!({ "a": f64::MAX })));
        }
    }

    fn mutated(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut b = seed.to_vec();
        for (at, op, byte) in edits {
            if b.is_empty() {
                break;
            }
            let i = at % b.len();
            match op % 4 {
                0 => b[i] = *byte,
                1 => b.insert(i, *byte),
                2 => {
                    b.remove(i);
                }
                _ => b.truncate(i),
            }
        }
        b
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(3000))]
        #[test]
        fn fast_path_agrees_with_the_full_path(
            which in 0usize..100,
            edits in proptest::collection::vec((0usize..4000, 0u8..4, proptest::sample::select(
                b"0123456789-+.eE,:{}[]\"\\ atrufn1.5x\xc3\xa9".to_vec())), 0..4),
        ) {
            let j = judge();
            let (topic, seeds) = if which < 45 {
                ("shuttle", lines("schemas/samples/shuttle.valid.jsonl"))
            } else if which < 60 {
                ("shuttle-grid", lines("schemas/samples/shuttle.valid.jsonl"))
            } else if which < 80 {
                ("mnist", lines("schemas/samples/mnist.valid.jsonl"))
            } else {
                ("mnist-nested", nested_mnist())
            };
            let seed = &seeds[which % seeds.len()];
            agree(&j, topic, &mutated(seed, &edits));
        }
    }
}
