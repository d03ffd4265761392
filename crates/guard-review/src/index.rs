//! The review index: one small entry per quarantined row, built from the quarantine files'
//! filter columns only (never the payloads), refreshed incrementally as files appear.
//!
//! Quarantine files are immutable once visible (written whole, renamed into place), so a file
//! is scanned once. The explorer filters, sorts and pages over this index in memory; a record's
//! full row is then read from its file with a row selection that skips every other row group.

use crate::ReviewError;
use guard_quarantine::{file_rows, list_files, scan_summaries, FileInfo, QuarantineStore};
use std::collections::HashMap;
use std::sync::Arc;

/// Reason codes are a bit mask: the first 63 distinct codes get a bit each, the rest share
/// the last one.
const OTHER_REASON_BIT: u32 = 63;

/// One quarantine file in the index.
#[derive(Debug, Clone)]
pub struct IndexedFile {
    /// Name in the quarantine store.
    pub name: String,
    /// Rows indexed from it.
    pub rows: u32,
}

/// One quarantined row.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Index of the file in [`Index::files`].
    pub file: u32,
    /// Row number in that file.
    pub row: u32,
    /// Topic (interned).
    pub topic: u16,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Quarantine time (ms).
    pub at_ms: i64,
    /// Kafka timestamp (ms; `i64::MIN` when absent).
    pub kafka_ts_ms: i64,
    /// Reason codes, as a bit mask over [`Index::reasons`].
    pub reasons: u64,
    /// Anomaly score (NaN when absent).
    pub anomaly: f32,
    /// Label score (NaN when absent).
    pub label: f32,
    /// Source (interned; 0 is "unknown").
    pub source: u32,
}

/// Which score a score-range filter and sort apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreField {
    /// The larger of the two.
    #[default]
    Any,
    /// Anomaly score.
    Anomaly,
    /// Label-consistency score.
    Label,
}

/// Sort keys of the explorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortKey {
    /// Quarantine time.
    #[default]
    Time,
    /// Topic, partition, offset.
    Offset,
    /// Anomaly score (absent scores last).
    Anomaly,
    /// Label score (absent scores last).
    Label,
}

/// Explorer filters; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Quarantined at or after (ms since epoch).
    pub from: Option<i64>,
    /// Quarantined before (ms since epoch).
    pub to: Option<i64>,
    /// Topic.
    pub topic: Option<String>,
    /// Partition.
    pub partition: Option<i32>,
    /// Reason code (exact, e.g. `score.anomaly`) or a prefix ending in `.` (e.g. `limits.`).
    pub reason: Option<String>,
    /// Which score `score_min`/`score_max` apply to.
    pub score: ScoreField,
    /// Score at least.
    pub score_min: Option<f32>,
    /// Score at most.
    pub score_max: Option<f32>,
    /// Source (exact).
    pub source: Option<String>,
    /// Review state: `undecided`, `confirmed_poison`, `false_positive` or `released`.
    pub decision: Option<String>,
    /// Sort key.
    pub sort: SortKey,
    /// Ascending (default: descending).
    pub asc: bool,
    /// Page number, from 0.
    pub page: usize,
    /// Rows per page (at most 500; default 50).
    pub page_size: Option<usize>,
}

/// A record's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RecordKey {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

impl std::fmt::Display for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// Most distinct sources the index names; more are counted as [`OTHER_SOURCE`].
pub const MAX_SOURCES: usize = 65_536;
/// The name every source beyond [`MAX_SOURCES`] is indexed under.
pub const OTHER_SOURCE: &str = "(other)";

#[derive(Debug, Default)]
struct Interner {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let a: Arc<str> = Arc::from(s);
        self.names.push(Arc::clone(&a));
        self.ids.insert(a, i);
        i
    }
    /// As [`Interner::id`] for producer-chosen names: cut to `MAX_SOURCE_LEN` bytes, and once
    /// [`MAX_SOURCES`] names are known, every new one counts as `(other)`.
    fn id_capped(&mut self, s: &str) -> u32 {
        let s = guard_core::cap_source(s);
        if !self.ids.contains_key(s) && self.names.len() >= MAX_SOURCES {
            return self.id(OTHER_SOURCE);
        }
        self.id(s)
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", |s| s)
    }
}

/// The in-memory index of a quarantine folder.
#[derive(Debug, Default)]
pub struct Index {
    source_header: Option<String>,
    max_rows: usize,
    files: Vec<IndexedFile>,
    known: HashMap<String, u32>,
    entries: Vec<Entry>,
    by_key: HashMap<(u16, i32, i64), u32>,
    topics: Interner,
    reasons: Interner,
    sources: Interner,
    /// Files left out because the index was full.
    skipped_files: usize,
    /// Files that could not be read (logged).
    unreadable: HashMap<String, String>,
}

impl Index {
    /// An empty index.
    pub fn new(source_header: Option<String>, max_rows: usize) -> Self {
        let mut sources = Interner::default();
        sources.id("(unknown)");
        Self {
            source_header,
            max_rows,
            sources,
            ..Self::default()
        }
    }

    /// Scan for files not yet indexed; files that disappeared (retention) are dropped.
    /// Returns the number of new rows.
    pub fn refresh(&mut self, store: &dyn QuarantineStore) -> Result<usize, ReviewError> {
        let listed = list_files(store)?;
        if self.stale(&listed) {
            self.reset();
        }
        self.skipped_files = 0;
        let mut added = 0;
        for f in &listed {
            if self.wants(f) {
                added += self.add_listed(store, f);
            }
        }
        Ok(added)
    }

    /// Whether a file this index holds is no longer listed (then [`Index::reset`] it).
    pub fn stale(&self, listed: &[FileInfo]) -> bool {
        let present: std::collections::HashSet<&str> = listed.iter().map(|f| f.name.as_str()).collect();
        self.files.iter().any(|f| !present.contains(f.name.as_str()))
    }

    /// Start a refresh pass: the count of files left out is recounted.
    pub fn start_pass(&mut self) {
        self.skipped_files = 0;
    }

    /// Forget everything (the next additions rebuild it).
    pub fn reset(&mut self) {
        let fresh = Self::new(self.source_header.take(), self.max_rows);
        *self = fresh;
    }

    /// Whether a listed file is still to be indexed.
    pub fn wants(&self, f: &FileInfo) -> bool {
        !self.known.contains_key(&f.name) && !self.unreadable.contains_key(&f.name)
    }

    /// Index one listed file (skipped, and counted, when the index would outgrow
    /// `max_rows`; an unreadable file is logged and not tried again). New rows.
    pub fn add_listed(&mut self, store: &dyn QuarantineStore, f: &FileInfo) -> usize {
        let data = match store.get_bytes(&f.name) {
            Ok(d) => d,
            Err(e) => {
                // The store is failing (not the file): try again at the next refresh.
                tracing::warn!(file = %f.name, error = %e, "cannot read a quarantine file; retrying later");
                return 0;
            }
        };
        let rows = file_rows(&data).unwrap_or(0);
        if self.entries.len() + usize::try_from(rows.max(0)).unwrap_or(0) > self.max_rows {
            self.skipped_files += 1;
            return 0;
        }
        match self.add_file(&data, &f.name, &f.topic, f.partition) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(file = %f.name, error = %e, "not a readable quarantine file; not indexed");
                metrics::counter!("guard_quarantine_unreadable_files_total").increment(1);
                self.unreadable.insert(f.name.clone(), e.to_string());
                0
            }
        }
    }

    fn add_file(&mut self, data: &bytes::Bytes, name: &str, topic: &str, partition: i32) -> Result<usize, ReviewError> {
        let file_id = u32::try_from(self.files.len()).map_err(|_| ReviewError::Full)?;
        let topic_id = u16::try_from(self.topics.id(topic)).map_err(|_| ReviewError::Full)?;
        let mut new_entries = Vec::new();
        let (reasons, sources) = (&mut self.reasons, &mut self.sources);
        let header = self.source_header.as_deref();
        scan_summaries(data, header, |s, codes| {
            let mut mask = 0u64;
            for c in codes {
                let bit = reasons.id(c).min(OTHER_REASON_BIT);
                mask |= 1u64 << bit;
            }
            new_entries.push(Entry {
                file: file_id,
                row: u32::try_from(s.row).unwrap_or(u32::MAX),
                topic: topic_id,
                partition,
                offset: s.offset,
                at_ms: s.quarantined_at_ms,
                kafka_ts_ms: s.kafka_timestamp_ms.unwrap_or(i64::MIN),
                reasons: mask,
                anomaly: s.anomaly_score.unwrap_or(f32::NAN),
                label: s.label_score.unwrap_or(f32::NAN),
                source: s.source.map_or(0, |x| sources.id_capped(x)),
            });
        })?;
        let n = new_entries.len();
        for e in new_entries {
            let i = u32::try_from(self.entries.len()).map_err(|_| ReviewError::Full)?;
            self.by_key.insert((e.topic, e.partition, e.offset), i);
            self.entries.push(e);
        }
        self.known.insert(name.to_owned(), file_id);
        self.files.push(IndexedFile {
            name: name.to_owned(),
            rows: u32::try_from(n).unwrap_or(u32::MAX),
        });
        Ok(n)
    }

    /// Rows indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No rows indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Files indexed.
    pub fn files(&self) -> &[IndexedFile] {
        &self.files
    }

    /// Files left out because `max_indexed_rows` was reached.
    pub fn skipped_files(&self) -> usize {
        self.skipped_files
    }

    /// All entries.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Topic name of an entry.
    pub fn topic(&self, e: &Entry) -> &str {
        self.topics.name(u32::from(e.topic))
    }

    /// Source name of an entry.
    pub fn source(&self, e: &Entry) -> &str {
        self.sources.name(e.source)
    }

    /// Reason codes of an entry.
    pub fn reason_codes(&self, e: &Entry) -> Vec<&str> {
        (0..64u32)
            .filter(|b| e.reasons & (1u64 << b) != 0)
            .map(|b| self.reason_name(b))
            .collect()
    }

    /// Every reason code seen.
    pub fn reason_names(&self) -> Vec<&str> {
        self.reasons.names.iter().map(|s| &**s).collect()
    }

    /// Every topic seen.
    pub fn topic_names(&self) -> Vec<&str> {
        self.topics.names.iter().map(|s| &**s).collect()
    }

    /// The key of an entry.
    pub fn key(&self, e: &Entry) -> RecordKey {
        RecordKey {
            topic: self.topic(e).to_owned(),
            partition: e.partition,
            offset: e.offset,
        }
    }

    /// Where a record is: its entry.
    pub fn find(&self, key: &RecordKey) -> Option<&Entry> {
        let t = u16::try_from(self.topics.get(&key.topic)?).ok()?;
        let i = *self.by_key.get(&(t, key.partition, key.offset))?;
        self.entries.get(i as usize)
    }

    /// The file (its name in the store) of an entry.
    pub fn file_name(&self, e: &Entry) -> Option<&str> {
        self.files.get(e.file as usize).map(|f| f.name.as_str())
    }

    /// Entries matching `f` (all filters but paging), sorted as asked, and the total count;
    /// `decision` maps a key to its review state for the decision filter.
    pub fn query(&self, f: &Filter, decision: &dyn Fn(&RecordKey) -> &'static str) -> (usize, Vec<u32>) {
        let mut hits = self.matching(f, decision);
        let total = hits.len();
        let page_size = f.page_size.unwrap_or(50).clamp(1, 500);
        let want = (f.page.saturating_add(1)).saturating_mul(page_size).min(total);
        let cmp = |a: &u32, b: &u32| self.compare(f, *a, *b);
        if want > 0 && want < total {
            hits.select_nth_unstable_by(want - 1, cmp);
            hits.truncate(want);
        }
        hits.sort_unstable_by(cmp);
        let start = f.page.saturating_mul(page_size).min(hits.len());
        let page: Vec<u32> = hits[start..].iter().take(page_size).copied().collect();
        (total, page)
    }

    /// The order of the explorer's sort between entries `a` and `b`.
    fn compare(&self, f: &Filter, a: u32, b: u32) -> std::cmp::Ordering {
        let (ea, eb) = (&self.entries[a as usize], &self.entries[b as usize]);
        let score = |e: &Entry| match f.sort {
            SortKey::Anomaly => e.anomaly,
            SortKey::Label => e.label,
            _ => 0.0,
        };
        let ord = match f.sort {
            SortKey::Time => ea.at_ms.cmp(&eb.at_ms).then(ea.offset.cmp(&eb.offset)),
            SortKey::Offset => (ea.topic, ea.partition, ea.offset).cmp(&(eb.topic, eb.partition, eb.offset)),
            SortKey::Anomaly | SortKey::Label => {
                let (sa, sb) = (score(ea), score(eb));
                // Absent scores sort last either way.
                match (sa.is_nan(), sb.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => return std::cmp::Ordering::Greater,
                    (false, true) => return std::cmp::Ordering::Less,
                    (false, false) => sa.total_cmp(&sb),
                }
            }
        };
        if f.asc {
            ord
        } else {
            ord.reverse()
        }
    }

    /// Entries matching `f`'s filters (not paged, not sorted).
    pub fn matching(&self, f: &Filter, decision: &dyn Fn(&RecordKey) -> &'static str) -> Vec<u32> {
        let topic = match &f.topic {
            Some(t) => match self.topics.get(t) {
                Some(id) => Some(u16::try_from(id).unwrap_or(u16::MAX)),
                None => return Vec::new(),
            },
            None => None,
        };
        let reason_mask = match &f.reason {
            Some(r) if r.ends_with('.') => {
                let mut m = 0u64;
                for (i, n) in self.reasons.names.iter().enumerate() {
                    if n.starts_with(r.as_str()) {
                        m |= 1u64 << (i as u32).min(OTHER_REASON_BIT);
                    }
                }
                if m == 0 {
                    return Vec::new();
                }
                Some(m)
            }
            Some(r) => match self.reasons.get(r) {
                Some(i) => Some(1u64 << i.min(OTHER_REASON_BIT)),
                None => return Vec::new(),
            },
            None => None,
        };
        let source = match &f.source {
            Some(s) => match self.sources.get(s) {
                Some(id) => Some(id),
                None => return Vec::new(),
            },
            None => None,
        };
        let score_of = |e: &Entry| -> f32 {
            match f.score {
                ScoreField::Anomaly => e.anomaly,
                ScoreField::Label => e.label,
                ScoreField::Any => match (e.anomaly.is_nan(), e.label.is_nan()) {
                    (true, true) => f32::NAN,
                    (true, false) => e.label,
                    (false, true) => e.anomaly,
                    (false, false) => e.anomaly.max(e.label),
                },
            }
        };
        let mut hits: Vec<u32> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if f.from.is_some_and(|t| e.at_ms < t)
                || f.to.is_some_and(|t| e.at_ms >= t)
                || topic.is_some_and(|t| e.topic != t)
                || f.partition.is_some_and(|p| e.partition != p)
                || reason_mask.is_some_and(|m| e.reasons & m == 0)
                || source.is_some_and(|s| e.source != s)
            {
                continue;
            }
            if f.score_min.is_some() || f.score_max.is_some() {
                let s = score_of(e);
                if s.is_nan() || f.score_min.is_some_and(|m| s < m) || f.score_max.is_some_and(|m| s > m) {
                    continue;
                }
            }
            if let Some(d) = &f.decision {
                if decision(&self.key(e)) != d.as_str() {
                    continue;
                }
            }
            hits.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        hits
    }

    /// Quarantined rows per reason per time bucket (`bucket_ms` wide), the last `buckets`
    /// buckets up to `now_ms`.
    pub fn timeline(&self, now_ms: i64, bucket_ms: i64, buckets: usize) -> Vec<(i64, HashMap<String, u64>)> {
        let bucket_ms = bucket_ms.max(1);
        let n = i64::try_from(buckets).unwrap_or(0);
        let start = (now_ms / bucket_ms - n + 1) * bucket_ms;
        // Counts per bucket by the row's lowest reason bit (64: no reason), named at the end.
        let mut counts = vec![[0u64; 65]; buckets];
        for e in &self.entries {
            if e.at_ms < start {
                continue;
            }
            let k = usize::try_from((e.at_ms - start) / bucket_ms).unwrap_or(usize::MAX);
            if let Some(c) = counts.get_mut(k) {
                c[e.reasons.trailing_zeros() as usize] += 1;
            }
        }
        (0i64..)
            .zip(counts)
            .map(|(k, c)| {
                let by_reason = c
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(bit, n)| {
                        let bit = u32::try_from(bit).unwrap_or(64);
                        let name = if bit >= 64 { "(none)" } else { self.reason_name(bit) };
                        (name.to_owned(), *n)
                    })
                    .collect();
                (start + k * bucket_ms, by_reason)
            })
            .collect()
    }

    /// The name of a reason bit.
    fn reason_name(&self, bit: u32) -> &str {
        if bit == OTHER_REASON_BIT {
            "(other)"
        } else {
            self.reasons.name(bit)
        }
    }

    /// Quarantined rows per source, most first.
    pub fn top_sources(&self, n: usize) -> Vec<(String, u64)> {
        let mut counts = vec![0u64; self.sources.names.len()];
        for e in &self.entries {
            if let Some(c) = counts.get_mut(e.source as usize) {
                *c += 1;
            }
        }
        let mut v: Vec<(String, u64)> = counts
            .into_iter()
            .enumerate()
            .filter(|(_, c)| *c > 0)
            .map(|(i, c)| (self.sources.name(u32::try_from(i).unwrap_or(0)).to_owned(), c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// Quarantined rows per reason code (every code of a row counts).
    pub fn reason_counts(&self) -> Vec<(String, u64)> {
        let mut counts = [0u64; 64];
        for e in &self.entries {
            let mut m = e.reasons;
            while m != 0 {
                let b = m.trailing_zeros();
                counts[b as usize] += 1;
                m &= m - 1;
            }
        }
        let mut v: Vec<(String, u64)> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, c)| {
                let b = u32::try_from(b).unwrap_or(0);
                (self.reason_name(b).to_owned(), *c)
            })
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_chosen_sources_are_bounded_in_length_and_count() {
        let mut i = Interner::default();
        let long = "x".repeat(10_000);
        let a = i.id_capped(&long);
        assert_eq!(i.name(a).len(), guard_core::MAX_SOURCE_LEN);
        for n in 0..MAX_SOURCES + 10 {
            i.id_capped(&format!("s{n}"));
        }
        assert!(i.names.len() <= MAX_SOURCES + 1, "{}", i.names.len());
        let late = i.id_capped("one-more");
        assert_eq!(i.name(late), OTHER_SOURCE);
    }
}
