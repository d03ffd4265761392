//! Bounded categorical statistics: heavy hitters plus "other", and a per-source table with
//! eviction. Memory depends on the configured capacity, never on how many distinct values or
//! sources the stream carries (a flood of random categories cannot grow it).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Frequent values of a categorical feature (or label) with the Space-Saving algorithm
/// (Metwally et al.): at most `capacity` tracked values; a new value replaces the least
/// frequent one and inherits its count as over-estimation `error`. Any value whose true count
/// exceeds `total / capacity` is guaranteed to be tracked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeavyHitters {
    capacity: usize,
    total: u64,
    counts: HashMap<String, (u64, u64)>,
}

impl HeavyHitters {
    /// Track at most `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            total: 0,
            counts: HashMap::new(),
        }
    }

    /// Count one occurrence.
    pub fn push(&mut self, value: &str) {
        self.total += 1;
        if let Some(c) = self.counts.get_mut(value) {
            c.0 += 1;
            return;
        }
        if self.counts.len() < self.capacity {
            self.counts.insert(value.to_owned(), (1, 0));
            return;
        }
        // Replace the minimum (O(capacity); capacities are small, tens to hundreds).
        let min = self
            .counts
            .iter()
            .min_by_key(|(_, (c, _))| *c)
            .map(|(k, (c, _))| (k.clone(), *c));
        if let Some((key, min_count)) = min {
            self.counts.remove(&key);
            self.counts.insert(value.to_owned(), (min_count + 1, min_count));
        }
    }

    /// Values seen.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Estimated count of `value` (an upper bound; 0 if untracked).
    pub fn estimate(&self, value: &str) -> u64 {
        self.counts.get(value).map_or(0, |c| c.0)
    }

    /// Tracked values with estimated counts and error bounds, most frequent first.
    pub fn top(&self) -> Vec<(String, u64, u64)> {
        let mut v: Vec<_> = self.counts.iter().map(|(k, (c, e))| (k.clone(), *c, *e)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }

    /// Counts over `categories` plus a final "other" bucket, for chi-squared/PSI against a
    /// baseline's categories.
    pub fn counts_over(&self, categories: &[String]) -> Vec<f64> {
        let mut out: Vec<f64> = categories.iter().map(|c| self.estimate(c) as f64).collect();
        let known: f64 = out.iter().sum();
        out.push((self.total as f64 - known).max(0.0));
        out
    }
}

/// Per-source volume, reject and quarantine counts, bounded with least-recently-seen eviction.
///
/// When full, the least recently seen half is evicted at once (a sort of the table), so a
/// flood of never-repeating sources costs O(log capacity) per record amortised, not a scan
/// of the table per record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTable {
    capacity: usize,
    tick: u64,
    evicted: u64,
    rows: HashMap<String, SourceStats>,
}

/// Counters of one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStats {
    /// Records seen.
    pub records: u64,
    /// Records rejected by limits, decoding or the schema.
    #[serde(default)]
    pub rejected: u64,
    /// Records quarantined for any reason (rejected ones included).
    pub quarantined: u64,
    /// Last time (tick) the source was seen, for eviction.
    pub last_seen: u64,
}

impl SourceStats {
    /// Share of this source's records that were rejected.
    pub fn reject_rate(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.rejected as f64 / self.records as f64
        }
    }

    /// Share of this source's records that were quarantined.
    pub fn quarantine_rate(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.quarantined as f64 / self.records as f64
        }
    }
}

impl SourceTable {
    /// Keep at most `capacity` sources (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            evicted: 0,
            rows: HashMap::new(),
        }
    }

    /// Count a record of `source`.
    pub fn record(&mut self, source: &str, quarantined: bool) {
        self.add(
            source,
            SourceStats {
                records: 1,
                rejected: u64::from(quarantined),
                quarantined: u64::from(quarantined),
                last_seen: 0,
            },
        );
    }

    /// Add counts for `source` (e.g. a batch's worth).
    pub fn add(&mut self, source: &str, counts: SourceStats) {
        self.tick += 1;
        if !self.rows.contains_key(source) && self.rows.len() >= self.capacity {
            let mut by_age: Vec<(u64, String)> = self.rows.iter().map(|(k, s)| (s.last_seen, k.clone())).collect();
            by_age.sort_unstable();
            let drop = (self.rows.len() / 2).max(1);
            for (_, k) in by_age.into_iter().take(drop) {
                self.rows.remove(&k);
                self.evicted += 1;
            }
        }
        let s = self.rows.entry(source.to_owned()).or_default();
        s.records += counts.records;
        s.rejected += counts.rejected;
        s.quarantined += counts.quarantined;
        s.last_seen = self.tick;
    }

    /// The `n` sources with the most records.
    pub fn top_by_volume(&self, n: usize) -> Vec<(String, SourceStats)> {
        let mut v: Vec<_> = self.rows.iter().map(|(k, s)| (k.clone(), *s)).collect();
        v.sort_by(|a, b| b.1.records.cmp(&a.1.records).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Sources evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Number of sources tracked.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The `n` sources with the highest quarantine rate among those with at least
    /// `min_records` records.
    pub fn top_by_quarantine_rate(&self, n: usize, min_records: u64) -> Vec<(String, SourceStats)> {
        let mut v: Vec<_> = self
            .rows
            .iter()
            .filter(|(_, s)| s.records >= min_records)
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        v.sort_by(|a, b| {
            b.1.quarantine_rate()
                .total_cmp(&a.1.quarantine_rate())
                .then_with(|| a.0.cmp(&b.0))
        });
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Space-Saving guarantees: estimates never under-count, over-count by at most the
        /// recorded error, every value above total/capacity is tracked, memory is bounded.
        #[test]
        fn space_saving_bounds(values in prop::collection::vec(0u8..40, 0..2000), cap in 1usize..20) {
            let mut hh = HeavyHitters::new(cap);
            let mut truth: HashMap<String, u64> = HashMap::new();
            for v in &values {
                let k = v.to_string();
                hh.push(&k);
                *truth.entry(k).or_default() += 1;
            }
            prop_assert!(hh.top().len() <= cap);
            for (k, est, err) in hh.top() {
                let t = truth.get(&k).copied().unwrap_or(0);
                prop_assert!(est >= t, "under-count {} {} {}", k, est, t);
                prop_assert!(est - err <= t, "error bound {} {} {} {}", k, est, err, t);
            }
            for (k, t) in &truth {
                if *t > values.len() as u64 / cap as u64 {
                    prop_assert!(hh.estimate(k) >= *t, "heavy hitter {} missing", k);
                }
            }
            let counts = hh.counts_over(&["1".to_owned(), "2".to_owned()]);
            prop_assert_eq!(counts.len(), 3);
            prop_assert!((counts.iter().sum::<f64>() - values.len() as f64).abs() < 1e-9 || counts[..2].iter().sum::<f64>() > values.len() as f64);
        }
    }

    #[test]
    fn source_table_is_bounded_and_ranks_by_quarantine_rate() {
        let mut t = SourceTable::new(3);
        for i in 0..100 {
            t.record("good", false);
            t.record("bad", i % 2 == 0);
        }
        for i in 0..1000 {
            t.record(&format!("flood-{i}"), true);
        }
        assert!(t.len() <= 3, "bounded");
        assert!(t.evicted() >= 997);
        let mut t = SourceTable::new(10);
        for i in 0..100 {
            t.record("good", false);
            t.record("bad", i % 2 == 0);
        }
        let top = t.top_by_quarantine_rate(1, 10);
        assert_eq!(top[0].0, "bad");
        assert!((top[0].1.quarantine_rate() - 0.5).abs() < 1e-9);
    }
}
