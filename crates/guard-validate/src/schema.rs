//! Domain schemas: a JSON Schema (draft 2020-12) plus the `x-guard` section that names the
//! features, the label, tensor fields and the source field.
//!
//! One file drives validation, feature extraction, statistics and (later) the model's input
//! order, so it is checked hard at load time: every pointer must be well formed and every
//! feature name unique.

use crate::ValidateError;
pub use guard_core::{FeatureField, GuardSection, TensorField};
use guard_core::{FeatureLayout, Reason, ReasonCode};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// Most schema errors reported for one record; the rest are summarised.
pub const MAX_REASONS_PER_RECORD: usize = 8;

/// A loaded, compiled domain schema.
pub struct DomainSchema {
    id: Arc<str>,
    guard: GuardSection,
    validator: jsonschema::Validator,
    tensor_lens: Vec<usize>,
    layout: FeatureLayout,
    fast: Option<crate::fast::Shape>,
}

impl std::fmt::Debug for DomainSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainSchema")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DomainSchema {
    /// Load and compile a schema file.
    pub fn load(path: &Path) -> Result<Self, ValidateError> {
        let text = std::fs::read(path).map_err(|source| ValidateError::SchemaRead {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_slice(&text).map_err(|e| ValidateError::SchemaInvalid {
            path: path.to_path_buf(),
            key: String::new(),
            message: e.to_string(),
        })?;
        Self::from_value(&value).map_err(|(key, message)| ValidateError::SchemaInvalid {
            path: path.to_path_buf(),
            key,
            message,
        })
    }

    /// Compile a schema document; errors name the offending key.
    pub fn from_value(value: &Value) -> Result<Self, (String, String)> {
        let section = value
            .get("x-guard")
            .ok_or_else(|| ("x-guard".to_owned(), "missing x-guard section".to_owned()))?;
        let guard: GuardSection =
            serde_json::from_value(section.clone()).map_err(|e| ("x-guard".to_owned(), e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        let named = guard
            .numeric
            .iter()
            .chain(&guard.categorical)
            .map(|f| f.name.as_str())
            .chain(guard.tensors.iter().map(|t| t.name.as_str()));
        for name in named {
            if !names.insert(name.to_owned()) {
                return Err(("x-guard".to_owned(), format!("feature name {name:?} is used twice")));
            }
        }
        // Pointers and tensor shapes are checked by compiling them (the error names the key).
        let layout = FeatureLayout::new(&guard)?;
        let tensor_lens: Vec<usize> = layout.tensor_lens().collect();
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(value)
            .map_err(|e| (e.instance_path().to_string(), e.to_string()))?;
        let fast = crate::fast::Shape::compile(value, &guard);
        Ok(Self {
            id: Arc::from(guard.id.as_str()),
            guard,
            validator,
            tensor_lens,
            layout,
            fast,
        })
    }

    /// The schema identity (`x-guard.id`).
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// The `x-guard` section.
    pub fn guard(&self) -> &GuardSection {
        &self.guard
    }

    /// The typed fast path, when the schema is written in the subset it understands.
    pub fn fast(&self) -> Option<&crate::fast::Shape> {
        self.fast.as_ref()
    }

    /// The compiled `x-guard` pointers: what a record's typed row is extracted by.
    pub fn layout(&self) -> &FeatureLayout {
        &self.layout
    }

    /// Validate a decoded record: JSON Schema first, then the x-guard rules (tensor shapes).
    pub fn check(&self, value: &Value) -> Result<(), Vec<Reason>> {
        if self.validator.is_valid(value) {
            return self.check_tensors(value);
        }
        let mut reasons = Vec::new();
        let mut total = 0usize;
        for err in self.validator.iter_errors(value) {
            total += 1;
            if reasons.len() < MAX_REASONS_PER_RECORD {
                reasons.push(
                    Reason::new(ReasonCode::schema(err.kind().keyword()), err.to_string())
                        .at(err.instance_path().to_string()),
                );
            }
        }
        if total > reasons.len() {
            if let Some(last) = reasons.last_mut() {
                last.detail
                    .push_str(&format!(" (+{} more errors)", total - MAX_REASONS_PER_RECORD));
            }
        }
        if reasons.is_empty() {
            // is_valid and iter_errors disagreeing would be a validator bug; still never pass it.
            reasons.push(Reason::new(ReasonCode::SCHEMA_OTHER, "schema rejected the record"));
        }
        Err(reasons)
    }

    fn check_tensors(&self, value: &Value) -> Result<(), Vec<Reason>> {
        for ((t, want), path) in self
            .guard
            .tensors
            .iter()
            .zip(&self.tensor_lens)
            .zip(self.layout.tensor_paths())
        {
            let v = path.get(value);
            if !guard_core::tensor_form_ok(v, &t.shape, *want) {
                let got = v.and_then(Value::as_array).map(Vec::len);
                return Err(vec![Reason::new(
                    ReasonCode::schema("items"),
                    format!(
                        "tensor {} must be a flat array of {} elements or arrays nested as shape {:?}; \
                         its top level has {:?} items",
                        t.name, want, t.shape, got
                    ),
                )
                .at(t.pointer.clone())]);
            }
        }
        Ok(())
    }

    /// Numeric features in declared order (`NaN` where absent or not a number), for statistics
    /// and scoring.
    pub fn numeric_features(&self, value: &Value) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.layout.numeric_width());
        self.layout.numeric_into(value, &mut out);
        out
    }

    /// Numeric features in declared order into `out` (cleared first; no allocation once
    /// `out` has grown to the feature count).
    pub fn numeric_features_into(&self, value: &Value, out: &mut Vec<f64>) {
        self.layout.numeric_into(value, out);
    }

    /// Names of the categorical statistics, in order: `x-guard.categorical`, then `label` when
    /// the schema names a label (the label is watched like a categorical feature).
    pub fn categorical_names(&self) -> Vec<String> {
        self.guard.categorical_names()
    }

    /// Calls `f(i, value)` for each categorical statistic of [`DomainSchema::categorical_names`]:
    /// strings as they are, numbers and booleans as their JSON text, `None` when absent or
    /// null. Objects and arrays count as absent.
    pub fn for_each_categorical(&self, value: &Value, f: impl FnMut(usize, Option<&str>)) {
        self.layout.each_categorical(value, f);
    }

    /// The record's label as text (as a categorical statistic renders it), if the schema
    /// names one and the record has it.
    pub fn label(&self, value: &Value) -> Option<String> {
        self.layout.label(value)
    }

    /// The record's source (producer) field, if the schema names one.
    pub fn source<'v>(&self, value: &'v Value) -> Option<&'v str> {
        self.layout.source(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> DomainSchema {
        let v = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "required": ["features", "label"],
            "properties": {
                "features": {"type": "array", "items": {"type": "number", "maximum": 10}, "minItems": 2, "maxItems": 2},
                "label": {"type": "integer", "minimum": 0, "maximum": 1},
                "img": {"type": "array", "items": {"type": "integer"}}
            },
            "x-guard": {
                "id": "t-v1", "label": "/label", "label_classes": 2,
                "numeric": [{"name": "a", "pointer": "/features/0"}, {"name": "b", "pointer": "/features/1"}],
                "tensors": [{"name": "img", "pointer": "/img", "shape": [2, 2]}]
            }
        });
        match DomainSchema::from_value(&v) {
            Ok(s) => s,
            Err(e) => panic!("schema should compile: {e:?}"),
        }
    }

    #[test]
    fn keeps_keyword_and_instance_path() {
        let s = schema();
        let errs = s
            .check(&json!({"features": [1, 11], "label": 0, "img": [0,0,0,0]}))
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].code.as_str(), "schema.maximum");
        assert_eq!(errs[0].path.as_deref(), Some("/features/1"));
        let errs = s.check(&json!({"features": [1, 2]})).err().unwrap_or_default();
        assert_eq!(errs[0].code.as_str(), "schema.required");
    }

    #[test]
    fn tensor_shape_is_enforced() {
        let s = schema();
        assert!(s
            .check(&json!({"features": [1, 2], "label": 1, "img": [0,0,0,0]}))
            .is_ok());
        let errs = s
            .check(&json!({"features": [1, 2], "label": 1, "img": [0,0,0]}))
            .err()
            .unwrap_or_default();
        assert_eq!(errs[0].code.as_str(), "schema.items");
    }

    #[test]
    fn nested_tensors_pass_only_as_their_shape() {
        let v = json!({
            "type": "object",
            "properties": {"img": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}},
            "x-guard": {"id": "n-v1", "tensors": [{"name": "img", "pointer": "/img", "shape": [2, 3]}]}
        });
        let s = DomainSchema::from_value(&v).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(s.check(&json!({"img": [[1, 2, 3], [4, 5, 6]]})).is_ok());
        for bad in [
            json!([[1, 2, 3], [4, 5]]),
            json!([[1, 2], [3, 4], [5, 6]]),
            json!([[1, 2, 3]]),
        ] {
            let errs = s.check(&json!({ "img": bad })).err().unwrap_or_default();
            assert_eq!(errs.first().map(|e| e.code.as_str()), Some("schema.items"), "{bad}");
            assert!(errs[0].detail.contains("nested as shape [2, 3]"), "{}", errs[0].detail);
        }
    }

    #[test]
    fn extracts_features_and_label() {
        let s = schema();
        let v = json!({"features": [1.5, 2], "label": 1});
        assert_eq!(s.numeric_features(&v), vec![1.5, 2.0]);
        assert_eq!(s.label(&v).as_deref(), Some("1"));
    }

    #[test]
    fn bad_x_guard_is_refused_with_key() {
        let v = json!({"type": "object", "x-guard": {"id": "x", "numeric": [{"name": "a", "pointer": "nope"}]}});
        let err = DomainSchema::from_value(&v).err();
        assert_eq!(err.map(|e| e.0), Some("x-guard.a".to_owned()));
        let v = json!({"type": "object", "x-guard": {"id": "x", "bogus": 1}});
        assert!(DomainSchema::from_value(&v)
            .err()
            .is_some_and(|e| e.1.contains("bogus")));
    }
}
