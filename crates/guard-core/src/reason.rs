//! Stable reason codes. They are written into Parquet, used as metric labels and shown on the
//! dashboard, so a code never changes meaning and the set of codes is bounded.

use serde::Serialize;

/// A stable reason code such as `limit.depth` or `schema.maximum`.
///
/// The set is closed: schema keywords the guard does not know map to `schema.other`, which keeps
/// metric label cardinality bounded whatever a schema contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ReasonCode(&'static str);

macro_rules! schema_keywords {
    ($($kw:literal),* $(,)?) => {
        /// JSON Schema keywords with their own `schema.<keyword>` code.
        const SCHEMA_CODES: &[(&str, &str)] = &[$(($kw, concat!("schema.", $kw))),*];
    };
}

schema_keywords!(
    "additionalItems",
    "additionalProperties",
    "allOf",
    "anyOf",
    "const",
    "contains",
    "contentEncoding",
    "contentMediaType",
    "dependentRequired",
    "dependentSchemas",
    "enum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "false",
    "format",
    "if",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "multipleOf",
    "not",
    "oneOf",
    "pattern",
    "prefixItems",
    "propertyNames",
    "required",
    "type",
    "unevaluatedItems",
    "unevaluatedProperties",
    "uniqueItems",
    "$ref",
);

impl ReasonCode {
    /// Message larger than `limits.max_bytes`.
    pub const LIMIT_BYTES: Self = Self("limit.bytes");
    /// Nesting deeper than `limits.max_depth`.
    pub const LIMIT_DEPTH: Self = Self("limit.depth");
    /// An object with more members than `limits.max_fields`.
    pub const LIMIT_FIELDS: Self = Self("limit.fields");
    /// An array with more elements than `limits.max_array_len`.
    pub const LIMIT_ARRAY_LEN: Self = Self("limit.array_len");
    /// A string (or object key) longer than `limits.max_string_len` bytes.
    pub const LIMIT_STRING_LEN: Self = Self("limit.string_len");
    /// Payload is not valid UTF-8.
    pub const DECODE_UTF8: Self = Self("decode.utf8");
    /// Payload is not valid JSON.
    pub const DECODE_JSON: Self = Self("decode.json");
    /// Payload is empty, whitespace only, or a tombstone (null value).
    pub const DECODE_EMPTY: Self = Self("decode.empty");
    /// An object repeats a key; which value a consumer sees would be parser-dependent.
    pub const DECODE_DUPLICATE_KEY: Self = Self("decode.duplicate_key");
    /// A number is NaN, infinite, or overflows a 64-bit float (e.g. `1e999`).
    pub const VALUE_NON_FINITE: Self = Self("value.non_finite");
    /// The record's topic has no schema route and `unrouted = "quarantine"`.
    pub const ROUTE_UNKNOWN_TOPIC: Self = Self("route.unknown_topic");
    /// A schema keyword the guard has no specific code for.
    pub const SCHEMA_OTHER: Self = Self("schema.other");
    /// Anomaly model score over threshold.
    pub const SCORE_ANOMALY: Self = Self("score.anomaly");
    /// Label-consistency model score over threshold.
    pub const SCORE_LABEL: Self = Self("score.label");
    /// Adversarial-example model (feature squeezing) score over threshold.
    pub const SCORE_ADVERSARIAL: Self = Self("score.adversarial");
    /// The window scan found the record in a cluster of its label class (or doubted its label
    /// in a class window that holds one).
    pub const SCAN_SPECTRAL: Self = Self("scan.spectral");
    /// The record's source repeats itself: its near-duplicate cell holds far more of the
    /// source's recent records than the trusted data predicts.
    pub const FLOOD_NEAR_DUPLICATE: Self = Self("flood.near_duplicate");
    /// The record's source is blocked (over its flood or quarantine budget) until a reviewer
    /// releases it.
    pub const SOURCE_BLOCKED: Self = Self("source.blocked");
    /// A scoring model failed on the record's batch (the record is held back, not passed).
    pub const SCORE_ERROR: Self = Self("score.error");
    /// The breaker is open (`drift.breaker`): every record is quarantined until an operator
    /// clears it.
    pub const BREAKER_OPEN: Self = Self("breaker.open");
    /// Key longer than `limits.max_key_bytes`.
    pub const LIMIT_KEY_BYTES: Self = Self("limit.key_bytes");
    /// More headers than `limits.max_headers`.
    pub const LIMIT_HEADERS: Self = Self("limit.headers");
    /// Header keys and values larger than `limits.max_header_bytes` together.
    pub const LIMIT_HEADER_BYTES: Self = Self("limit.header_bytes");
    /// Key, payload and headers larger than `limits.max_record_bytes` together.
    pub const LIMIT_RECORD_BYTES: Self = Self("limit.record_bytes");
    /// A header key is not UTF-8.
    pub const DECODE_HEADER_KEY: Self = Self("decode.header_key");
    /// The clean topic's broker refused the record for good (too large, invalid, not
    /// authorized, unknown topic): it is quarantined instead of being retried forever.
    pub const SINK_REJECTED: Self = Self("sink.rejected");
    /// Judging the record panicked (a bug in the guard): the record is quarantined and the
    /// guard goes on.
    pub const INTERNAL_PANIC: Self = Self("internal.panic");

    /// The `schema.<keyword>` code for a JSON Schema keyword (`schema.other` if unknown).
    pub fn schema(keyword: &str) -> Self {
        SCHEMA_CODES
            .iter()
            .find(|(kw, _)| *kw == keyword)
            .map_or(Self::SCHEMA_OTHER, |(_, code)| Self(code))
    }

    /// Every code the guard can emit, for documentation and pre-registering metrics.
    pub fn all() -> impl Iterator<Item = ReasonCode> {
        [
            Self::LIMIT_BYTES,
            Self::LIMIT_DEPTH,
            Self::LIMIT_FIELDS,
            Self::LIMIT_ARRAY_LEN,
            Self::LIMIT_STRING_LEN,
            Self::DECODE_UTF8,
            Self::DECODE_JSON,
            Self::DECODE_EMPTY,
            Self::DECODE_DUPLICATE_KEY,
            Self::VALUE_NON_FINITE,
            Self::ROUTE_UNKNOWN_TOPIC,
            Self::SCHEMA_OTHER,
            Self::SCORE_ANOMALY,
            Self::SCORE_LABEL,
            Self::SCORE_ADVERSARIAL,
            Self::SCAN_SPECTRAL,
            Self::FLOOD_NEAR_DUPLICATE,
            Self::SOURCE_BLOCKED,
            Self::BREAKER_OPEN,
            Self::SCORE_ERROR,
            Self::LIMIT_KEY_BYTES,
            Self::LIMIT_HEADERS,
            Self::LIMIT_HEADER_BYTES,
            Self::LIMIT_RECORD_BYTES,
            Self::DECODE_HEADER_KEY,
            Self::SINK_REJECTED,
            Self::INTERNAL_PANIC,
        ]
        .into_iter()
        .chain(SCHEMA_CODES.iter().map(|(_, code)| Self(code)))
    }

    /// The stable string form.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// One reason a record was quarantined: the code, where in the record, and a human detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// Stable code, e.g. `schema.maximum`.
    pub code: ReasonCode,
    /// JSON pointer into the record (e.g. `/features/3`), or a byte offset as `@123`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Human-readable detail, bounded in length.
    pub detail: String,
}

/// Longest detail string kept, so a hostile record cannot bloat the quarantine file via messages.
pub const MAX_DETAIL_LEN: usize = 256;

impl Reason {
    /// A reason with a detail (truncated to [`MAX_DETAIL_LEN`] bytes on a char boundary).
    pub fn new(code: ReasonCode, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_DETAIL_LEN {
            let mut cut = MAX_DETAIL_LEN;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        Self {
            code,
            path: None,
            detail,
        }
    }

    /// Attach a location (JSON pointer or `@byte`).
    pub fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_codes_are_bounded() {
        assert_eq!(ReasonCode::schema("maximum").as_str(), "schema.maximum");
        assert_eq!(ReasonCode::schema("x-evil-keyword"), ReasonCode::SCHEMA_OTHER);
        let all: std::collections::BTreeSet<_> = ReasonCode::all().collect();
        assert_eq!(all.len(), ReasonCode::all().count(), "codes are unique");
    }

    #[test]
    fn detail_is_truncated_on_char_boundary() {
        let r = Reason::new(ReasonCode::DECODE_JSON, "é".repeat(400));
        assert!(r.detail.len() <= MAX_DETAIL_LEN + '…'.len_utf8());
        assert!(r.detail.ends_with('…'));
    }
}
