//! The envelope: key, headers and the record's total size, checked before the payload.
//!
//! Every check reads the sizes the consumer saw on the wire ([`Envelope`]), never the bounded
//! copies it kept, so a record cut down to its limits is still judged by what it was.

use guard_core::{Envelope, Limits, Reason, ReasonCode, Record};

/// Every envelope limit the record breaks, in a fixed order (empty: the envelope is fine).
/// At most six reasons, whatever the record holds.
pub fn check_envelope(record: &Record, limits: &Limits) -> Vec<Reason> {
    let e: &Envelope = &record.envelope;
    let mut out = Vec::new();
    if let Some(i) = e.bad_header_key {
        let shown = record
            .headers
            .get(i)
            .map_or_else(String::new, |h| format!(" ({:?})", h.key));
        out.push(
            Reason::new(
                ReasonCode::DECODE_HEADER_KEY,
                format!("header {i} key is not UTF-8{shown}"),
            )
            .at(format!("header[{i}]")),
        );
    }
    if e.key_len > limits.max_key_bytes {
        out.push(Reason::new(
            ReasonCode::LIMIT_KEY_BYTES,
            format!("key is {} bytes, limit {}", e.key_len, limits.max_key_bytes),
        ));
    }
    if e.header_count > limits.max_headers {
        out.push(Reason::new(
            ReasonCode::LIMIT_HEADERS,
            format!("{} headers, limit {}", e.header_count, limits.max_headers),
        ));
    }
    if e.header_bytes > limits.max_header_bytes {
        out.push(Reason::new(
            ReasonCode::LIMIT_HEADER_BYTES,
            format!(
                "header keys and values are {} bytes, limit {}",
                e.header_bytes, limits.max_header_bytes
            ),
        ));
    }
    if record.payload_len > limits.max_bytes {
        out.push(Reason::new(
            ReasonCode::LIMIT_BYTES,
            format!("payload is {} bytes, limit {}", record.payload_len, limits.max_bytes),
        ));
    }
    let total = record.wire_bytes();
    if total > limits.max_record_bytes {
        out.push(Reason::new(
            ReasonCode::LIMIT_RECORD_BYTES,
            format!(
                "key, payload and headers are {total} bytes, limit {}",
                limits.max_record_bytes
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use guard_core::Header;

    fn codes(r: &Record, l: &Limits) -> Vec<&'static str> {
        check_envelope(r, l).iter().map(|r| r.code.as_str()).collect()
    }

    #[test]
    fn each_limit_has_its_code() {
        let l = Limits {
            max_key_bytes: 4,
            max_headers: 2,
            max_header_bytes: 10,
            max_bytes: 100,
            max_record_bytes: 50,
            ..Limits::default()
        };
        let ok = Record::whole(0, None, Some(b"k".to_vec()), vec![], Some(b"{}".to_vec()));
        assert!(codes(&ok, &l).is_empty());
        let key = Record::whole(0, None, Some(b"kkkkk".to_vec()), vec![], Some(b"{}".to_vec()));
        assert_eq!(codes(&key, &l), ["limit.key_bytes"]);
        let h = |k: &str, v: &[u8]| Header {
            key: k.into(),
            value: Some(v.to_vec()),
        };
        let many = Record::whole(0, None, None, vec![h("a", b""), h("b", b""), h("c", b"")], None);
        assert_eq!(codes(&many, &l), ["limit.headers"]);
        let big = Record::whole(0, None, None, vec![h("a", b"0123456789")], None);
        assert_eq!(codes(&big, &l), ["limit.header_bytes"]);
        let total = Record::whole(0, None, None, vec![], Some(vec![b' '; 60]));
        assert_eq!(codes(&total, &l), ["limit.record_bytes"]);
        let mut bad = Record::whole(0, None, None, vec![h("\u{fffd}", b"v")], None);
        bad.envelope.bad_header_key = Some(0);
        assert_eq!(codes(&bad, &l), ["decode.header_key"]);
    }

    #[test]
    fn wire_sizes_are_judged_not_the_kept_copies() {
        let l = Limits::default();
        let mut r = Record::whole(0, None, Some(vec![b'k'; 8]), vec![], Some(b"{}".to_vec()));
        r.envelope.key_len = usize::MAX;
        r.envelope.header_bytes = usize::MAX;
        let c = codes(&r, &l);
        assert_eq!(c, ["limit.key_bytes", "limit.header_bytes", "limit.record_bytes"]);
    }
}
