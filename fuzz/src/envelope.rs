//! Fuzz target: a producer-controlled envelope (key, headers, payload), read as
//! `[key len][key][header count]{[key len][key][value len, 255 = null][value]}[payload]`,
//! through the bounded copy and the judge, under small limits.
use guard_core::{EnvelopeBuilder, Limits, Record};

mod common;

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (a, b) = data.split_at(n);
    *data = b;
    a
}

fn byte(data: &mut &[u8]) -> usize {
    take(data, 1).first().copied().unwrap_or(0) as usize
}

fn main() {
    let limits = Limits {
        max_bytes: 200,
        max_key_bytes: 8,
        max_headers: 4,
        max_header_bytes: 40,
        max_record_bytes: 256,
        max_string_len: 64,
        ..Limits::default()
    };
    let judge = std::panic::AssertUnwindSafe(common::judge(limits.clone()));
    afl::fuzz!(|input: &[u8]| {
        let mut data = input;
        let mut b = EnvelopeBuilder::new(&limits);
        let key_len = byte(&mut data);
        let key = (key_len != 255).then(|| take(&mut data, key_len));
        let key = b.key(key);
        for _ in 0..byte(&mut data) {
            let k = byte(&mut data);
            let k = take(&mut data, k);
            let v = match byte(&mut data) {
                255 => None,
                n => Some(take(&mut data, n)),
            };
            b.header(k, v);
        }
        let (headers, envelope) = b.finish();
        assert!(key.as_ref().map_or(0, Vec::len) <= limits.max_key_bytes);
        assert!(headers.len() <= limits.max_headers);
        let kept: usize = headers
            .iter()
            .map(|h| h.key.len() + h.value.as_ref().map_or(0, Vec::len))
            .sum();
        assert!(kept <= limits.max_header_bytes, "kept {kept} header bytes");
        let payload = data.to_vec();
        let record = Record {
            offset: 0,
            timestamp_ms: None,
            key,
            headers,
            payload_len: payload.len(),
            payload: Some(payload),
            envelope,
        };
        let j = judge.judge("shuttle", &record);
        assert!(!(envelope.cut && j.verdict.is_pass()), "a cut envelope passed");
    });
}
