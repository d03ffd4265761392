//! Fuzz target: pre-scan, decoder and schema on arbitrary payloads.
use guard_core::{Limits, Record};

mod common;

fn main() {
    // The judge holds no state a panic could leave half-updated.
    let judge = std::panic::AssertUnwindSafe(common::judge(Limits::default()));
    afl::fuzz!(|data: &[u8]| {
        let (topic, payload) = match data.split_first() {
            Some((b, rest)) if b % 2 == 0 => ("shuttle", rest),
            Some((_, rest)) => ("mnist", rest),
            None => ("shuttle", data),
        };
        let r = Record::whole(0, None, None, Vec::new(), Some(payload.to_vec()));
        let _ = judge.judge(topic, &r);
    });
}
