//! Records as consumed from Kafka and the per-partition batches that flow through the pipeline.

use std::sync::Arc;

/// A Kafka topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// One Kafka header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is a null header value.
    pub value: Option<Vec<u8>>,
}

/// What the consumer saw of a record's key and headers on the wire, before it kept only
/// bounded prefixes of them. The envelope limits are checked against these facts, never
/// against the (possibly cut) copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Key length on the wire (0 for a null key).
    pub key_len: usize,
    /// Headers on the wire.
    pub header_count: usize,
    /// Bytes of all header keys and values on the wire.
    pub header_bytes: usize,
    /// Index of the first header whose key is not UTF-8, if any.
    pub bad_header_key: Option<usize>,
    /// Part of the key or the headers was not kept (over a limit, or a key that is not
    /// UTF-8): the stored record is not the original and must not be released as if it were.
    pub cut: bool,
}

impl Envelope {
    /// The facts of a key and headers held whole in memory (records not read from Kafka).
    pub fn of(key: Option<&[u8]>, headers: &[Header]) -> Self {
        Self {
            key_len: key.map_or(0, <[u8]>::len),
            header_count: headers.len(),
            header_bytes: headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
                .sum(),
            bad_header_key: None,
            cut: false,
        }
    }
}

/// Copies a record's key and headers as they are read off the wire, keeping no more than the
/// limits allow while counting everything that was there. Memory per record is bounded by
/// `max_key_bytes` + `max_header_bytes` (plus a small per-header cost for at most
/// `max_headers` headers), whatever the producer sent.
#[derive(Debug)]
pub struct EnvelopeBuilder<'l> {
    limits: &'l crate::Limits,
    headers: Vec<Header>,
    kept_bytes: usize,
    envelope: Envelope,
}

impl<'l> EnvelopeBuilder<'l> {
    /// Start a record's envelope under `limits`.
    pub fn new(limits: &'l crate::Limits) -> Self {
        Self {
            limits,
            headers: Vec::new(),
            kept_bytes: 0,
            envelope: Envelope::default(),
        }
    }

    /// Count the key and return the part of it that is kept (a prefix when over the limit).
    pub fn key(&mut self, key: Option<&[u8]>) -> Option<Vec<u8>> {
        let key = key?;
        self.envelope.key_len = key.len();
        if key.len() > self.limits.max_key_bytes {
            self.envelope.cut = true;
        }
        Some(key[..key.len().min(self.limits.max_key_bytes)].to_vec())
    }

    /// Count one header and keep it if it fits. A key that is not UTF-8 is kept with its
    /// bytes escaped (`\xff`) and marked.
    pub fn header(&mut self, key: &[u8], value: Option<&[u8]>) {
        let index = self.envelope.header_count;
        let size = key.len().saturating_add(value.map_or(0, <[u8]>::len));
        self.envelope.header_count += 1;
        self.envelope.header_bytes = self.envelope.header_bytes.saturating_add(size);
        let name = match std::str::from_utf8(key) {
            Ok(k) => k.to_owned(),
            Err(_) => {
                if self.envelope.bad_header_key.is_none() {
                    self.envelope.bad_header_key = Some(index);
                }
                self.envelope.cut = true;
                if self.headers.len() >= self.limits.max_headers {
                    return;
                }
                // Escaped text of a key is at most 4x its bytes: bound what is kept.
                let room = self.limits.max_header_bytes.saturating_sub(self.kept_bytes) / 4;
                let shown = key[..key.len().min(room)].escape_ascii().to_string();
                self.kept_bytes += shown.len();
                self.headers.push(Header {
                    key: shown,
                    value: None,
                });
                return;
            }
        };
        if self.headers.len() >= self.limits.max_headers
            || self.kept_bytes.saturating_add(size) > self.limits.max_header_bytes
        {
            self.envelope.cut = true;
            return;
        }
        self.kept_bytes += size;
        self.headers.push(Header {
            key: name,
            value: value.map(<[u8]>::to_vec),
        });
    }

    /// The header block could not be parsed at all: treat it as a key that is not UTF-8.
    pub fn unreadable_headers(&mut self) {
        if self.envelope.bad_header_key.is_none() {
            self.envelope.bad_header_key = Some(self.envelope.header_count);
        }
        self.envelope.cut = true;
    }

    /// The kept headers and the wire facts.
    pub fn finish(self) -> (Vec<Header>, Envelope) {
        (self.headers, self.envelope)
    }
}

/// One consumed record, owned, with its Kafka coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset within the partition.
    pub offset: i64,
    /// Kafka timestamp in milliseconds since the epoch, if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Message key (`None` for a null key).
    pub key: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Payload (`None` for a tombstone). May be a prefix when the message was oversize.
    pub payload: Option<Vec<u8>>,
    /// Length of the payload on the wire, which can exceed `payload.len()` when truncated.
    pub payload_len: usize,
    /// Key and header sizes on the wire.
    pub envelope: Envelope,
}

impl Record {
    /// A record held whole in memory (tools, tests, benches): lengths are those of the parts.
    pub fn whole(
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<Vec<u8>>,
        headers: Vec<Header>,
        payload: Option<Vec<u8>>,
    ) -> Self {
        let envelope = Envelope::of(key.as_deref(), &headers);
        Self {
            offset,
            timestamp_ms,
            payload_len: payload.as_ref().map_or(0, Vec::len),
            key,
            headers,
            payload,
            envelope,
        }
    }

    /// Key, payload and headers together, in bytes on the wire.
    pub fn wire_bytes(&self) -> usize {
        self.envelope
            .key_len
            .saturating_add(self.payload_len)
            .saturating_add(self.envelope.header_bytes)
    }

    /// True when only a prefix of the payload was kept because it exceeded the byte limit.
    pub fn is_truncated(&self) -> bool {
        self.payload.as_ref().map_or(0, Vec::len) < self.payload_len
    }
}

/// Records of one partition, in offset order, consumed in one assignment generation.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where the records came from.
    pub tp: TopicPartition,
    /// The batch's acknowledgement token (its sequence number, assignment generation and
    /// lease): the clean sink and the quarantine each acknowledge their part on it.
    pub ack: crate::BatchAck,
    /// The records, in increasing offset order; never empty.
    pub records: Vec<Record>,
}

impl Batch {
    /// First offset in the batch.
    pub fn first_offset(&self) -> i64 {
        self.records.first().map_or(-1, |r| r.offset)
    }

    /// Last offset in the batch.
    pub fn last_offset(&self) -> i64 {
        self.records.last().map_or(-1, |r| r.offset)
    }

    /// Sum of payload lengths as received.
    pub fn payload_bytes(&self) -> usize {
        self.records.iter().map(|r| r.payload_len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn builder_keeps_bounded_copies_and_counts_the_wire() {
        let l = Limits {
            max_key_bytes: 4,
            max_headers: 2,
            max_header_bytes: 8,
            ..Limits::default()
        };
        let mut b = EnvelopeBuilder::new(&l);
        assert_eq!(b.key(Some(b"0123456789")), Some(b"0123".to_vec()));
        b.header(b"a", Some(b"12"));
        b.header(b"\xff\xfe", Some(b"x"));
        b.header(b"c", Some(&[0u8; 1000]));
        let (headers, e) = b.finish();
        assert_eq!(e.key_len, 10);
        assert_eq!(e.header_count, 3);
        assert_eq!(e.header_bytes, 3 + 3 + 1001);
        assert_eq!(e.bad_header_key, Some(1));
        assert!(e.cut);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[1].key, "\\xff", "escaped, cut to the room left");
        let kept: usize = headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
            .sum();
        assert!(kept <= 8 + 8, "kept {kept}");
    }

    #[test]
    fn small_envelopes_are_kept_whole() {
        let l = Limits::default();
        let mut b = EnvelopeBuilder::new(&l);
        assert_eq!(b.key(None), None);
        b.header(b"trace", Some(b"abc"));
        b.header(b"null", None);
        let (headers, e) = b.finish();
        assert!(!e.cut);
        assert_eq!(e, Envelope::of(None, &headers));
    }
}
