//! Limits, decoding and schema validation: everything the guard decides about one record from
//! its bytes alone.
//!
//! The order is the point: [`prescan`] bounds the work on the raw bytes before [`decode`] builds
//! a tree, and only a bounded, duplicate-free tree reaches the [`DomainSchema`]. Every failure
//! becomes a [`Reason`] with a stable code; nothing here panics or allocates beyond the limits.

mod decode;
mod envelope;
pub mod fast;
mod prescan;
mod schema;

pub use decode::decode;
pub use envelope::check_envelope;
pub use prescan::prescan;
pub use schema::{DomainSchema, FeatureField, GuardSection, TensorField, MAX_REASONS_PER_RECORD};

use guard_core::{FeatureRows, Judgement, Limits, Reason, ReasonCode, Record, Verdict};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors loading schemas. Records never produce errors: they produce reasons.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// A schema file could not be read.
    #[error("cannot read schema file {path}: {source}")]
    SchemaRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A schema file is not a valid domain schema.
    #[error("invalid schema {path} at {key:?}: {message}")]
    SchemaInvalid {
        /// The file.
        path: PathBuf,
        /// The offending key (empty when the file is not JSON).
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ValidateError {
    /// Schema errors are configuration errors found at start-up: the guard refuses to run
    /// (internal to the deployment, never retried).
    pub fn domain(&self) -> guard_core::ErrorDomain {
        guard_core::ErrorDomain::Internal
    }
}

/// Judges records: limits, decoding, and the schema routed by topic.
#[derive(Debug, Clone)]
pub struct Judge {
    limits: Limits,
    routes: HashMap<String, Arc<DomainSchema>>,
}

impl Judge {
    /// A judge with the given limits and topic → schema routes.
    pub fn new(limits: Limits, routes: HashMap<String, Arc<DomainSchema>>) -> Self {
        Self { limits, routes }
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Each route's `x-guard` section, by topic (what scoring extracts and checks models by).
    pub fn sections(&self) -> HashMap<String, GuardSection> {
        self.routes
            .iter()
            .map(|(t, s)| (t.clone(), s.guard().clone()))
            .collect()
    }

    /// The schema routed for a topic.
    pub fn schema_for(&self, topic: &str) -> Option<&Arc<DomainSchema>> {
        self.routes.get(topic)
    }

    /// Judge one record of `topic`. Never panics; bad input yields a quarantine verdict.
    pub fn judge(&self, topic: &str, record: &Record) -> Judgement {
        self.judge_visit(topic, record, |_, _, _| {})
    }

    /// As [`Judge::judge`], and hand every decoded value to `visit` (for statistics) without
    /// decoding it twice, with whether it passed the schema (`false`: decoded but invalid).
    /// Records that fail limits or decoding are never visited.
    pub fn judge_visit(
        &self,
        topic: &str,
        record: &Record,
        visit: impl FnOnce(&DomainSchema, &Value, bool),
    ) -> Judgement {
        let schema = self.routes.get(topic);
        let schema_id = schema.map(|s| Arc::clone(s.id()));
        let verdict = match self.verdict(schema, record) {
            Ok((schema, value)) => match schema.check(&value) {
                Ok(()) => {
                    visit(schema, &value, true);
                    Verdict::Pass
                }
                Err(reasons) => {
                    visit(schema, &value, false);
                    Verdict::Quarantine(reasons)
                }
            },
            Err(reasons) => Verdict::Quarantine(reasons),
        };
        Judgement { verdict, schema_id }
    }

    /// Judge record `index` of a batch of `topic` and, when it passes, append its typed row
    /// to `rows` (made from this topic's schema layout), with `source` as its source when
    /// given (a header) instead of the schema's source field. Records in the schema's typed
    /// subset are decoded, validated and extracted in one pass without a tree
    /// ([`fast::Shape`]); the rest, and every record the fast path is not sure of, take the
    /// full path. `on_invalid` sees records that decoded but failed the schema.
    pub fn judge_row(
        &self,
        topic: &str,
        record: &Record,
        index: usize,
        rows: &mut FeatureRows,
        source: Option<&str>,
        on_invalid: impl FnOnce(&DomainSchema, &Value),
    ) -> Judgement {
        let schema = self.routes.get(topic);
        let schema_id = schema.map(|s| Arc::clone(s.id()));
        let verdict = match self.bounded(record) {
            Err(reasons) => Verdict::Quarantine(reasons),
            Ok(bytes) => {
                if let Some(shape) = schema.and_then(|s| s.fast()) {
                    if shape.accept(bytes, rows, index) {
                        if let Some(s) = source {
                            rows.set_source(s);
                        }
                        return Judgement {
                            verdict: Verdict::Pass,
                            schema_id,
                        };
                    }
                }
                match self.decoded(schema, bytes) {
                    Err(reasons) => Verdict::Quarantine(reasons),
                    Ok((schema, value)) => match schema.check(&value) {
                        Ok(()) => {
                            rows.push(schema.layout(), index, &value, source);
                            Verdict::Pass
                        }
                        Err(reasons) => {
                            on_invalid(schema, &value);
                            Verdict::Quarantine(reasons)
                        }
                    },
                }
            }
        };
        Judgement { verdict, schema_id }
    }

    /// Envelope, payload and limits: the bytes a decoder may read.
    fn bounded<'r>(&self, record: &'r Record) -> Result<&'r [u8], Vec<Reason>> {
        let envelope = check_envelope(record, &self.limits);
        if !envelope.is_empty() {
            return Err(envelope);
        }
        let Some(bytes) = record.payload.as_deref() else {
            return Err(vec![Reason::new(ReasonCode::DECODE_EMPTY, "tombstone (null payload)")]);
        };
        prescan(bytes, &self.limits).map_err(|r| vec![r])?;
        Ok(bytes)
    }

    /// The tree of bounded bytes, with the topic's schema.
    fn decoded<'s>(
        &self,
        schema: Option<&'s Arc<DomainSchema>>,
        bytes: &[u8],
    ) -> Result<(&'s DomainSchema, Value), Vec<Reason>> {
        let value = decode(bytes).map_err(|r| vec![r])?;
        let Some(schema) = schema else {
            return Err(vec![Reason::new(
                ReasonCode::ROUTE_UNKNOWN_TOPIC,
                "no schema is routed for this topic",
            )]);
        };
        Ok((schema, value))
    }

    fn verdict<'s>(
        &self,
        schema: Option<&'s Arc<DomainSchema>>,
        record: &Record,
    ) -> Result<(&'s DomainSchema, Value), Vec<Reason>> {
        let bytes = self.bounded(record)?;
        self.decoded(schema, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: Option<&[u8]>) -> Record {
        Record::whole(0, None, None, vec![], payload.map(<[u8]>::to_vec))
    }

    #[test]
    fn unrouted_topic_is_quarantined() {
        let j = Judge::new(Limits::default(), HashMap::new());
        let v = j.judge("t", &record(Some(b"{}"))).verdict;
        assert_eq!(
            v,
            Verdict::reject(Reason::new(
                ReasonCode::ROUTE_UNKNOWN_TOPIC,
                "no schema is routed for this topic"
            ))
        );
    }

    #[test]
    fn truncated_oversize_payload_is_limit_bytes() {
        let j = Judge::new(Limits::default(), HashMap::new());
        let mut r = record(Some(b"{"));
        r.payload_len = Limits::default().max_bytes + 1;
        match j.judge("t", &r).verdict {
            Verdict::Quarantine(rs) => assert_eq!(rs[0].code, ReasonCode::LIMIT_BYTES),
            Verdict::Pass => panic!("must not pass"),
        }
        match j.judge("t", &record(None)).verdict {
            Verdict::Quarantine(rs) => assert_eq!(rs[0].code, ReasonCode::DECODE_EMPTY),
            Verdict::Pass => panic!("must not pass"),
        }
    }
}
