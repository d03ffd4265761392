//! Hard limits checked before a record is parsed.

use serde::{Deserialize, Serialize};

/// Default for [`Limits::max_bytes`]: 1,000,000 bytes (as `DEFAULT_MAX_RECORD_BYTES`).
pub const DEFAULT_MAX_BYTES: usize = 1_000_000;
/// Default for [`Limits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Default for [`Limits::max_fields`].
pub const DEFAULT_MAX_FIELDS: usize = 1_024;
/// Default for [`Limits::max_array_len`]: room for a 224×224 RGB tensor flattened.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 200_000;
/// Default for [`Limits::max_string_len`]: 64 KiB.
pub const DEFAULT_MAX_STRING_LEN: usize = 64 * 1024;
/// Default for [`Limits::max_key_bytes`]: 4 KiB.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default for [`Limits::max_headers`].
pub const DEFAULT_MAX_HEADERS: usize = 32;
/// Default for [`Limits::max_header_bytes`]: 8 KiB of header keys and values together.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
/// Default for [`Limits::max_record_bytes`]: 1,000,000 bytes, librdkafka's and the Java
/// producer's default `message.max.bytes`, so whatever passes fits a default clean topic.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;
/// Most rows one quarantine file may hold: `quarantine.roll_max_rows` is validated against it,
/// and a file whose footer declares more is not read (it is not the guard's).
pub const MAX_ROWS_PER_QUARANTINE_FILE: i64 = 1 << 24;
/// Largest depth a configuration may ask for; the JSON decoder's own recursion guard is 128.
pub const MAX_CONFIGURABLE_DEPTH: usize = 120;

/// Bounds enforced on the raw bytes before any tree is built. Work spent on a record is bounded
/// by these numbers, not by the record's size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest accepted message payload in bytes; larger ones are quarantined as `limit.bytes`
    /// without being scanned.
    pub max_bytes: usize,
    /// Deepest accepted nesting of arrays and objects (`limit.depth`); at most 120.
    pub max_depth: usize,
    /// Most members one object may have (`limit.fields`).
    pub max_fields: usize,
    /// Most elements one array may have (`limit.array_len`).
    pub max_array_len: usize,
    /// Longest string or key, in bytes of its JSON text (`limit.string_len`).
    pub max_string_len: usize,
    /// Largest message key in bytes (`limit.key_bytes`); only this much of a longer key is kept.
    pub max_key_bytes: usize,
    /// Most headers one record may carry (`limit.headers`); only this many are kept.
    pub max_headers: usize,
    /// Most bytes of header keys and values together (`limit.header_bytes`); only this much
    /// is kept.
    pub max_header_bytes: usize,
    /// Largest whole record: key, payload and headers together (`limit.record_bytes`). The
    /// clean producer's `message.max.bytes` is derived from it, so what passes can be delivered.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_fields: DEFAULT_MAX_FIELDS,
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
            max_string_len: DEFAULT_MAX_STRING_LEN,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}
