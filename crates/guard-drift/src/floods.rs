//! Floods and per-source blocks of this instance: one near-duplicate detector per route whose
//! baseline carries a flood profile (`guard_stats::flood`), each source's flood flags and
//! quarantine budget, and the blocks in force. Blocks and releases leave through an outbox
//! that the binary publishes to the compacted blocks topic, and come back (this instance's and
//! the others') through [`Floods::apply`], so every instance of the group blocks and releases
//! the same sources.

use guard_config::FloodConfig;
use guard_core::{lock, BlockDoc, BlockRelease, BlockedSource, SourceBlocks};
use guard_stats::{FloodDetector, FloodFlag, FloodReference, FloodSettings};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Released block ids remembered (so a block document read again after its release, from a
/// slow instance, does not block again).
const RELEASED_MEMORY: usize = 10_000;
/// Per-source budget counters kept before they are reset (bounds memory under a flood of
/// never-repeating sources).
const MAX_COUNTERS: usize = 100_000;
/// Blocks in force at most (a producer inventing sources cannot grow the table without
/// bound; beyond it, flooding records are still quarantined one by one).
const MAX_BLOCKS: usize = 10_000;

type Key = (String, String);

#[derive(Default)]
struct Budgets {
    /// Flood flags per (topic, source) since the last release.
    flags: HashMap<Key, u32>,
    /// Records and quarantined records of the current tumbling window per (topic, source).
    outcomes: HashMap<Key, (u64, u64)>,
}

/// See the module docs.
pub struct Floods {
    cfg: FloodConfig,
    instance: String,
    detectors: HashMap<String, Mutex<FloodDetector>>,
    blocks: RwLock<HashMap<Key, BlockedSource>>,
    any: AtomicBool,
    released: Mutex<(HashSet<String>, VecDeque<String>)>,
    budgets: Mutex<Budgets>,
    outbox: Mutex<Vec<BlockDoc>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The detector's settings from the `[flood]` section.
fn settings(cfg: &FloodConfig) -> FloodSettings {
    FloodSettings {
        window: cfg.window_records,
        min_copies: cfg.min_copies,
        alpha: cfg.alpha,
        rate: cfg.rate,
        min_window: cfg.min_window,
        max_sources: cfg.max_sources,
    }
}

impl Floods {
    /// Detectors for the routes in `references` (topic → its baseline's flood profile) when
    /// `cfg.enabled`; blocks work either way (the quarantine budget needs no profile).
    pub fn new(cfg: &FloodConfig, instance: &str, references: HashMap<String, Arc<FloodReference>>) -> Self {
        let settings = settings(cfg);
        let detectors = if cfg.enabled {
            references
                .into_iter()
                .map(|(t, r)| (t, Mutex::new(FloodDetector::new(r, settings.clone()))))
                .collect()
        } else {
            HashMap::new()
        };
        Self {
            cfg: cfg.clone(),
            instance: instance.to_owned(),
            detectors,
            blocks: RwLock::new(HashMap::new()),
            any: AtomicBool::new(false),
            released: Mutex::new((HashSet::new(), VecDeque::new())),
            budgets: Mutex::new(Budgets::default()),
            outbox: Mutex::new(Vec::new()),
        }
    }

    /// Nothing judged, nothing blocked (tests and routes without baselines).
    pub fn off() -> Self {
        Self::new(
            &FloodConfig {
                enabled: false,
                ..FloodConfig::default()
            },
            "",
            HashMap::new(),
        )
    }

    /// Whether floods are judged on `topic`.
    pub fn judges(&self, topic: &str) -> bool {
        self.detectors.contains_key(topic)
    }

    /// Judge a batch's rows of `topic`: `(source, values)` per row; a flag per row. One lock
    /// per batch.
    pub fn observe<'a, I, V>(&self, topic: &str, rows: I) -> Vec<Option<FloodFlag>>
    where
        I: Iterator<Item = (&'a str, V)>,
        V: IntoIterator<Item = f32>,
    {
        let Some(d) = self.detectors.get(topic) else {
            return rows.map(|_| None).collect();
        };
        let mut d = lock(d);
        rows.map(|(source, values)| d.observe(source, values)).collect()
    }

    /// Count a flood flag of `source` (its record at `partition`/`offset`); the block it
    /// trips, if it trips one.
    pub fn note_flag(&self, topic: &str, source: &str, partition: i32, offset: i64) -> Option<BlockedSource> {
        if self.cfg.block_after_flags == 0 {
            return None;
        }
        let n = {
            let mut b = lock(&self.budgets);
            if b.flags.len() >= MAX_COUNTERS {
                b.flags.clear();
            }
            let n = b.flags.entry((topic.to_owned(), source.to_owned())).or_default();
            *n += 1;
            *n
        };
        (n >= self.cfg.block_after_flags).then(|| {
            self.block(
                topic,
                source,
                partition,
                offset,
                format!(
                    "{n} near-duplicate flood flags (flood.block_after_flags = {})",
                    self.cfg.block_after_flags
                ),
            )
        })?
    }

    /// Count one judged record of `source` for the quarantine budget; the block it trips.
    pub fn note_outcome(
        &self,
        topic: &str,
        source: &str,
        quarantined: bool,
        partition: i32,
        offset: i64,
    ) -> Option<BlockedSource> {
        let share = self.cfg.block_quarantine_share;
        if share <= 0.0 {
            return None;
        }
        let done = {
            let mut b = lock(&self.budgets);
            if b.outcomes.len() >= MAX_COUNTERS {
                b.outcomes.clear();
            }
            let key = (topic.to_owned(), source.to_owned());
            let w = b.outcomes.entry(key.clone()).or_default();
            w.0 += 1;
            w.1 += u64::from(quarantined);
            let full = w.0 >= self.cfg.block_quarantine_records;
            let out = *w;
            if full {
                b.outcomes.remove(&key);
            }
            full.then_some(out)
        };
        let (records, bad) = done?;
        (bad as f64 >= share * records as f64).then(|| {
            self.block(
                topic,
                source,
                partition,
                offset,
                format!("{bad} of {records} consecutive records quarantined (flood.block_quarantine_share = {share})"),
            )
        })?
    }

    fn block(&self, topic: &str, source: &str, partition: i32, offset: i64, why: String) -> Option<BlockedSource> {
        let key = (topic.to_owned(), source.to_owned());
        let mut blocks = self.blocks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if blocks.contains_key(&key) {
            return None;
        }
        if blocks.len() >= MAX_BLOCKS {
            metrics::counter!("guard_flood_blocks_refused_total").increment(1);
            tracing::warn!(topic, source, "not blocked: {MAX_BLOCKS} sources are blocked already");
            return None;
        }
        let since_ms = now_ms();
        let b = BlockedSource {
            topic: topic.to_owned(),
            source: source.to_owned(),
            id: format!("{}-{since_ms}-{partition}-{offset}", self.instance),
            since_ms,
            why,
            instance: self.instance.clone(),
            partition,
            offset,
        };
        blocks.insert(key, b.clone());
        self.any.store(true, Ordering::Release);
        metrics::gauge!("guard_flood_blocked_sources").set(blocks.len() as f64);
        metrics::counter!("guard_flood_blocks_total").increment(1);
        tracing::warn!(topic, source, partition, offset, id = %b.id, why = %b.why, "source blocked");
        if self.cfg.blocks_topic.is_some() {
            lock(&self.outbox).push(BlockDoc {
                block: b.clone(),
                released: None,
            });
        }
        Some(b)
    }

    /// The block in force for `source` on `topic`, if any (no lock while nothing is blocked).
    pub fn blocked_source(&self, topic: &str, source: &str) -> Option<BlockedSource> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let blocks = self.blocks.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        blocks.get(&(topic.to_owned(), source.to_owned())).cloned()
    }

    /// Documents to publish to the blocks topic (taken: the caller puts back what failed;
    /// nothing is queued without a `blocks_topic`).
    pub fn take_outbox(&self) -> Vec<BlockDoc> {
        std::mem::take(&mut *lock(&self.outbox))
    }

    /// Put back documents that could not be published (they go first next time).
    pub fn put_back(&self, mut docs: Vec<BlockDoc>) {
        let mut o = lock(&self.outbox);
        docs.append(&mut o);
        *o = docs;
    }

    /// Apply a document of the blocks topic (this instance's or another's).
    pub fn apply(&self, doc: BlockDoc) {
        match doc.released {
            Some(r) => {
                self.lift(&doc.block, &r.by, false);
            }
            None => {
                if lock(&self.released).0.contains(&doc.block.id) {
                    return;
                }
                let key = (doc.block.topic.clone(), doc.block.source.clone());
                let mut blocks = self.blocks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                if blocks.len() >= MAX_BLOCKS {
                    return;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = blocks.entry(key) {
                    tracing::warn!(topic = %doc.block.topic, source = %doc.block.source, id = %doc.block.id, "source blocked by another instance");
                    e.insert(doc.block);
                    self.any.store(true, Ordering::Release);
                    metrics::gauge!("guard_flood_blocked_sources").set(blocks.len() as f64);
                }
            }
        }
    }

    /// Lift block `b` here: forget the source's window and budgets; with `publish`, tell the
    /// other instances. False when that block is not in force here.
    fn lift(&self, b: &BlockedSource, by: &str, publish: bool) -> bool {
        {
            let mut r = lock(&self.released);
            if r.0.insert(b.id.clone()) {
                r.1.push_back(b.id.clone());
                if r.1.len() > RELEASED_MEMORY {
                    if let Some(old) = r.1.pop_front() {
                        r.0.remove(&old);
                    }
                }
            }
        }
        let key = (b.topic.clone(), b.source.clone());
        let lifted = {
            let mut blocks = self.blocks.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            let lifted = blocks.get(&key).is_some_and(|x| x.id == b.id);
            if lifted {
                blocks.remove(&key);
            }
            self.any.store(!blocks.is_empty(), Ordering::Release);
            metrics::gauge!("guard_flood_blocked_sources").set(blocks.len() as f64);
            lifted
        };
        if lifted {
            if let Some(d) = self.detectors.get(&b.topic) {
                lock(d).forget(&b.source);
            }
            let mut budgets = lock(&self.budgets);
            budgets.flags.remove(&key);
            budgets.outcomes.remove(&key);
            tracing::warn!(topic = %b.topic, source = %b.source, id = %b.id, reviewer = by, "source block released");
        }
        if publish && self.cfg.blocks_topic.is_some() {
            lock(&self.outbox).push(BlockDoc {
                block: b.clone(),
                released: Some(BlockRelease {
                    by: by.to_owned(),
                    at_ms: now_ms(),
                }),
            });
        }
        lifted
    }
}

impl SourceBlocks for Floods {
    fn blocked(&self) -> Vec<BlockedSource> {
        let blocks = self.blocks.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<BlockedSource> = blocks.values().cloned().collect();
        v.sort_by(|a, b| (a.since_ms, &a.topic, &a.source).cmp(&(b.since_ms, &b.topic, &b.source)));
        v
    }

    fn release(&self, topic: &str, source: &str, id: &str, by: &str) -> bool {
        let Some(b) = self.blocked_source(topic, source).filter(|b| b.id == id) else {
            return false;
        };
        metrics::counter!("guard_flood_releases_total").increment(1);
        self.lift(&b, by, true)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn floods(cfg: FloodConfig) -> Floods {
        Floods::new(&cfg, "i1", HashMap::new())
    }

    #[test]
    fn the_config_defaults_are_the_detectors_defaults() {
        assert_eq!(settings(&FloodConfig::default()), FloodSettings::default());
    }

    #[test]
    fn flags_over_the_budget_block_once_and_a_release_lifts_it_once() {
        let f = floods(FloodConfig {
            block_after_flags: 3,
            blocks_topic: Some("blocks".into()),
            ..FloodConfig::default()
        });
        assert!(f.note_flag("t", "s", 0, 1).is_none());
        assert!(f.note_flag("t", "s", 0, 2).is_none());
        let b = f.note_flag("t", "s", 0, 3).unwrap();
        assert!(f.note_flag("t", "s", 0, 4).is_none(), "already blocked");
        assert_eq!(f.blocked_source("t", "s").unwrap().id, b.id);
        assert!(f.blocked_source("t", "other").is_none());
        assert_eq!(f.take_outbox().len(), 1);
        assert!(!f.release("t", "s", "wrong-id", "ann"));
        assert!(f.release("t", "s", &b.id, "ann"));
        assert!(!f.release("t", "s", &b.id, "ann"), "exactly once");
        assert!(f.blocked_source("t", "s").is_none());
        let out = f.take_outbox();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].released.as_ref().unwrap().by, "ann");
        // The old block document read again (another instance's replay) does not block.
        f.apply(BlockDoc {
            block: b.clone(),
            released: None,
        });
        assert!(f.blocked_source("t", "s").is_none());
        // Budgets start afresh after a release.
        assert!(f.note_flag("t", "s", 0, 5).is_none());
    }

    #[test]
    fn another_instances_block_and_release_apply_here() {
        let f = floods(FloodConfig::default());
        let b = BlockedSource {
            topic: "t".into(),
            source: "s".into(),
            id: "i2-1".into(),
            since_ms: 1,
            why: "w".into(),
            instance: "i2".into(),
            partition: 0,
            offset: 9,
        };
        f.apply(BlockDoc {
            block: b.clone(),
            released: None,
        });
        assert_eq!(f.blocked().len(), 1);
        f.apply(BlockDoc {
            block: b,
            released: Some(BlockRelease {
                by: "bo".into(),
                at_ms: 2,
            }),
        });
        assert!(f.blocked().is_empty());
        assert!(f.take_outbox().is_empty(), "nothing to publish for a remote release");
    }

    #[test]
    fn the_quarantine_budget_is_off_by_default_and_counts_tumbling_windows() {
        let off = floods(FloodConfig::default());
        assert!((0..5_000).all(|i| off.note_outcome("t", "s", true, 0, i).is_none()));
        let f = floods(FloodConfig {
            block_quarantine_share: 0.5,
            block_quarantine_records: 10,
            ..FloodConfig::default()
        });
        // 4 of 10 quarantined: not blocked; then 6 of 10: blocked.
        assert!((0..10).all(|i| f.note_outcome("t", "s", i < 4, 0, i).is_none()));
        let hits: Vec<_> = (0..10).filter_map(|i| f.note_outcome("t", "s", i < 6, 0, i)).collect();
        assert_eq!(hits.len(), 1);
    }
}
