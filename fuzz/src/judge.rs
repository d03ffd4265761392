//! Fuzz target: pre-scan, decoder and schema on arbitrary payloads, through both paths: the
//! typed fast path the pipeline runs (`Judge::judge_row`) must reach the same verdict as the
//! full path (`Judge::judge`: tree decode + JSON Schema validator), and a passing record's
//! typed row must equal the row extracted from the tree.
use guard_core::{FeatureRows, Limits, Record};

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
        let full = judge.judge(topic, &r);
        let schema = judge.schema_for(topic).expect("routed");
        let mut rows = FeatureRows::new(schema.layout(), true);
        let fast = judge.judge_row(topic, &r, 0, &mut rows, None, |_, _| {});
        assert_eq!(full, fast, "fast and full paths disagree");
        if fast.verdict.is_pass() {
            let value: serde_json::Value = serde_json::from_slice(payload).expect("a passing record is JSON");
            let mut want = FeatureRows::new(schema.layout(), true);
            want.push(schema.layout(), 0, &value, None);
            let (a, b) = (rows.row(0), want.row(0));
            let bits = |x: &[f64]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a.numeric()), bits(b.numeric()));
            assert_eq!(a.tensor(0).len(), b.tensor(0).len());
            assert!(a.tensor(0).iter().zip(b.tensor(0)).all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_eq!((a.label(), a.source()), (b.label(), b.source()));
        }
    });
}
