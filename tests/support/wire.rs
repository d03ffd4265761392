//! A minimal Kafka producer that writes the wire format itself (Produce v3, RecordBatch v2),
//! for attacks an ordinary client library will not send: header keys that are not UTF-8,
//! batches with an unknown or broken compression codec. Only what the attack tests need.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One record as the attacker writes it.
#[derive(Debug, Clone, Default)]
pub struct WireRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// CRC-32C (Castagnoli), as RecordBatch v2 uses.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    !crc
}

fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => varint(out, -1),
        Some(b) => {
            varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// The records section of a batch (uncompressed).
pub fn records_section(records: &[WireRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut body = Vec::new();
        body.push(0); // attributes
        varint(&mut body, 0); // timestamp delta
        varint(&mut body, i as i64); // offset delta
        bytes_field(&mut body, r.key.as_deref());
        bytes_field(&mut body, r.value.as_deref());
        varint(&mut body, r.headers.len() as i64);
        for (k, v) in &r.headers {
            varint(&mut body, k.len() as i64);
            body.extend_from_slice(k);
            bytes_field(&mut body, v.as_deref());
        }
        varint(&mut out, body.len() as i64);
        out.extend(body);
    }
    out
}

/// A RecordBatch v2 with `count` records whose records section is `section` (already
/// compressed when `codec` says so), `codec` in the attribute bits 0..2.
pub fn batch(count: usize, section: &[u8], codec: i16) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // From attributes on: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend(codec.to_be_bytes()); // attributes
    tail.extend((count as i32 - 1).to_be_bytes()); // last offset delta
    tail.extend(now.to_be_bytes()); // base timestamp
    tail.extend(now.to_be_bytes()); // max timestamp
    tail.extend((-1i64).to_be_bytes()); // producer id
    tail.extend((-1i16).to_be_bytes()); // producer epoch
    tail.extend((-1i32).to_be_bytes()); // base sequence
    tail.extend((count as i32).to_be_bytes());
    tail.extend_from_slice(section);
    let mut out = Vec::new();
    out.extend(0i64.to_be_bytes()); // base offset
    let batch_len = 4 + 1 + 4 + tail.len(); // leader epoch, magic, crc, rest
    out.extend((batch_len as i32).to_be_bytes());
    out.extend((-1i32).to_be_bytes()); // partition leader epoch
    out.push(2); // magic
    out.extend(crc32c(&tail).to_be_bytes());
    out.extend(tail);
    out
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Send one Produce v3 request with `batch` to `topic`/`partition` on the broker at `addr`
/// (the single broker is every partition's leader) and return the partition's error code.
pub fn produce_batch(addr: &str, topic: &str, partition: i32, batch: &[u8]) -> i16 {
    let mut req = Vec::new();
    req.extend(0i16.to_be_bytes()); // api key: Produce
    req.extend(3i16.to_be_bytes()); // version
    req.extend(7i32.to_be_bytes()); // correlation id
    string(&mut req, "wire-attacker");
    req.extend((-1i16).to_be_bytes()); // transactional id: null
    req.extend((-1i16).to_be_bytes()); // acks: all
    req.extend(30_000i32.to_be_bytes());
    req.extend(1i32.to_be_bytes()); // one topic
    string(&mut req, topic);
    req.extend(1i32.to_be_bytes()); // one partition
    req.extend(partition.to_be_bytes());
    req.extend((batch.len() as i32).to_be_bytes());
    req.extend_from_slice(batch);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    // correlation id, topics (1), name, partitions (1), partition, error code, ...
    let mut at = 4 + 4;
    let name_len = i16::from_be_bytes([resp[at], resp[at + 1]]) as usize;
    at += 2 + name_len + 4 + 4;
    i16::from_be_bytes([resp[at], resp[at + 1]])
}

/// Produce `records` uncompressed in one batch; returns the broker's error code.
pub fn produce(addr: &str, topic: &str, partition: i32, records: &[WireRecord]) -> i16 {
    produce_batch(
        addr,
        topic,
        partition,
        &batch(records.len(), &records_section(records), 0),
    )
}

#[test]
fn crc32c_known_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}
