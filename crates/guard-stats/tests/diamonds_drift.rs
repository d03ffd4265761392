//! Drift alarms on real mixed-type data: ggplot2's diamonds (53,940 rows; plotnine==0.15.9
//! ships it as a CSV, turned into `.data/diamonds.jsonl` by scripts/setup.sh). Seven numeric
//! features, colour and clarity as categorical features, the cut grade as the label.
//!
//! * Random halves of the same data raise nothing.
//! * A baseline of Ideal-cut rows against windows of Fair-cut rows raises alarms exactly on the
//!   features that differ: every feature whose whole-sample difference is large (KS ≥ 0.2 for
//!   numeric ones, PSI ≥ 0.25 for categorical ones, computed here on the raw data), and none
//!   whose difference is small (PSI < 0.1, "no significant change" by the usual PSI rule).

use guard_stats::{ks_2samp, psi, AlarmPolicy, AlarmState, Baseline, BaselineBuilder, Transition, WindowProfile};
use std::collections::{BTreeMap, BTreeSet};

const NUMERIC: [&str; 7] = ["carat", "depth", "table", "price", "x", "y", "z"];
const CATEGORICAL: [&str; 3] = ["color", "clarity", "label"];

#[derive(Clone)]
struct Row {
    num: [f64; 7],
    cat: [String; 3],
}

fn rows() -> Vec<Row> {
    let path = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
    )
    .join("../../.data/diamonds.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/setup.sh first", path.display()));
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let mut num = [0.0; 7];
            for (i, k) in NUMERIC.iter().enumerate() {
                num[i] = v[*k].as_f64()?;
            }
            let s = |k: &str| v[k].as_str().map(str::to_owned);
            Some(Row {
                num,
                cat: [s("color")?, s("clarity")?, s("cut")?],
            })
        })
        .collect()
}

fn shuffle(v: &mut [Row], seed: u64) {
    let mut s = seed | 1;
    for i in (1..v.len()).rev() {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let j = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn baseline(rows: &[Row], window: usize) -> Baseline {
    let mut b = BaselineBuilder::new(NUMERIC.iter().map(|s| (*s).to_owned()).collect())
        .with_categorical(CATEGORICAL.iter().map(|s| (*s).to_owned()).collect());
    for r in rows {
        let cats: Vec<Option<&str>> = r.cat.iter().map(|c| Some(c.as_str())).collect();
        b.push_row(&r.num, &cats, Some(&r.cat[2]));
    }
    b.build("diamonds-v1", "test", 20, window, 1000)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Run `rows` through windows of the baseline's size; returns (windows, windows with a firing
/// feature, features whose alarm was raised).
fn monitor(base: &Baseline, rows: &[Row]) -> (usize, usize, BTreeSet<String>) {
    let policy = AlarmPolicy::default();
    let index: Vec<_> = base.features.iter().map(|f| f.category_index()).collect();
    let mut states = vec![AlarmState::default(); base.features.len()];
    let (mut windows, mut firing, mut raised) = (0, 0, BTreeSet::new());
    for chunk in rows.chunks(base.window).filter(|c| c.len() == base.window) {
        let mut w = WindowProfile::for_baseline(base, false);
        for r in chunk {
            for (i, x) in r.num.iter().enumerate() {
                w.push(&base.features[i].bins, i, *x);
            }
            for (j, c) in r.cat.iter().enumerate() {
                let i = NUMERIC.len() + j;
                let f = &base.features[i];
                w.push(&f.bins, i, f.category_value(&index[i], Some(c)));
            }
            w.end_row();
        }
        let eval = base.evaluate(&policy, &w);
        windows += 1;
        firing += usize::from(eval.fired.iter().any(|f| f.any()));
        for (i, f) in eval.fired.iter().enumerate() {
            if states[i].update(&policy, f.any()) == Transition::Raised {
                raised.insert(base.features[i].name.clone());
            }
        }
    }
    (windows, firing, raised)
}

#[test]
fn random_halves_raise_nothing() {
    let all = rows();
    assert_eq!(all.len(), 53_940);
    let (mut total_windows, mut total_firing) = (0, 0);
    for seed in 1..=4u64 {
        let mut v = all.clone();
        shuffle(&mut v, seed);
        let (a, b) = v.split_at(v.len() / 2);
        let base = baseline(a, 1000);
        let (windows, firing, raised) = monitor(&base, b);
        assert_eq!(windows, 26);
        assert!(raised.is_empty(), "seed {seed}: alarms {raised:?} on a random half");
        total_windows += windows;
        total_firing += firing;
    }
    eprintln!("diamonds random halves: {total_firing}/{total_windows} windows with a firing feature, 0 alarms");
    assert!(
        total_firing * 20 <= total_windows,
        "at most 5 % of windows fire: {total_firing}/{total_windows}"
    );
}

#[test]
fn ideal_versus_fair_alarms_on_the_features_that_differ() {
    let all = rows();
    let ideal: Vec<Row> = all.iter().filter(|r| r.cat[2] == "Ideal").cloned().collect();
    let mut fair: Vec<Row> = all.iter().filter(|r| r.cat[2] == "Fair").cloned().collect();
    shuffle(&mut fair, 9);
    // What differs, from the raw data: KS on the whole samples for numeric features, PSI on
    // the category frequencies for categorical ones.
    let mut differ: BTreeMap<String, f64> = BTreeMap::new();
    for (i, name) in NUMERIC.iter().enumerate() {
        let a: Vec<f64> = ideal.iter().map(|r| r.num[i]).collect();
        let b: Vec<f64> = fair.iter().map(|r| r.num[i]).collect();
        differ.insert(
            (*name).to_owned(),
            ks_2samp(&a, &b).unwrap_or_else(|e| panic!("{e}")).statistic,
        );
    }
    for (j, name) in CATEGORICAL.iter().enumerate() {
        let cats: BTreeSet<&str> = all.iter().map(|r| r.cat[j].as_str()).collect();
        let freq = |rows: &[Row]| -> Vec<f64> {
            cats.iter()
                .map(|c| rows.iter().filter(|r| r.cat[j] == *c).count() as f64)
                .collect()
        };
        differ.insert(
            (*name).to_owned(),
            psi(&freq(&ideal), &freq(&fair)).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let large: BTreeSet<String> = differ
        .iter()
        .filter(|(n, d)| {
            if NUMERIC.contains(&n.as_str()) {
                **d >= 0.2
            } else {
                **d >= 0.25
            }
        })
        .map(|(n, _)| n.clone())
        .collect();
    let small: BTreeSet<String> = differ
        .iter()
        .filter(|(n, d)| !NUMERIC.contains(&n.as_str()) && **d < 0.1)
        .map(|(n, _)| n.clone())
        .collect();
    // Fair has 1,610 rows: windows of 500 give three, enough for two in a row.
    let base = baseline(&ideal, 500);
    let (windows, _, raised) = monitor(&base, &fair);
    eprintln!("diamonds Ideal vs Fair: differences {differ:?}; {windows} windows; alarms {raised:?}");
    assert!(large.len() >= 8, "the data set's known differences: {differ:?}");
    assert!(
        large.is_subset(&raised),
        "missed: {:?}",
        large.difference(&raised).collect::<Vec<_>>()
    );
    assert!(
        raised.is_disjoint(&small),
        "alarm on a feature that barely differs: {:?}",
        raised.intersection(&small).collect::<Vec<_>>()
    );
    // And Ideal rows held out from the baseline raise nothing at that window size.
    let mut ideal = ideal;
    shuffle(&mut ideal, 3);
    let (train, held) = ideal.split_at(15_000);
    let base = baseline(train, 500);
    let (_, _, raised) = monitor(&base, held);
    assert!(raised.is_empty(), "held-out Ideal rows: {raised:?}");
}
