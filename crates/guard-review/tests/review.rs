//! The review service over real quarantine files: index and queries, record reads, export,
//! decisions, feedback, and release bookkeeping with an in-memory publisher (the real broker
//! path is tested in the binary's integration tests).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use guard_core::Header;
use guard_quarantine::{encode, file_name, LocalDirStore, QuarantineRow, QuarantineStore, RawRecord, ReasonEntry};
use guard_review::audit::Action;
use guard_review::auth::Auth;
use guard_review::index::{Filter, RecordKey, ScoreField, SortKey};
use guard_review::{Live, Publisher, Review, Settings};
use std::sync::{Arc, Mutex};

fn row(topic: &str, partition: i32, offset: i64, code: &str, anomaly: Option<f32>, source: &str) -> QuarantineRow {
    QuarantineRow {
        topic: Arc::from(topic),
        partition,
        offset,
        timestamp_ms: Some(1_000 + offset),
        key: Some(format!("k{offset}").into_bytes()),
        headers: vec![Header {
            key: "h".into(),
            value: Some(b"v".to_vec()),
        }],
        payload: Some(format!("{{\"x\":{offset},\"s\":\"<script>alert(1)</script>\"}}").into_bytes()),
        payload_len: 0,
        reasons: vec![ReasonEntry {
            code: code.into(),
            path: None,
            detail: "d".into(),
        }],
        schema_id: Some(Arc::from("s-v1")),
        guard_version: "0",
        quarantined_at_ms: 10_000 + offset * 1_000,
        anomaly_score: anomaly,
        label_score: None,
        model_id: anomaly.map(|_| "m".into()),
        explanation: None,
        source: Some(source.into()),
        envelope_cut: false,
    }
}

/// 2 topics, 3 files, 30 rows.
fn fixture(dir: &std::path::Path) {
    let store = LocalDirStore::new(dir);
    for (topic, p, first) in [("a", 0, 0i64), ("a", 1, 0), ("b", 0, 100)] {
        let rows: Vec<QuarantineRow> = (first..first + 10)
            .map(|o| {
                let mut r = row(
                    topic,
                    p,
                    o,
                    if o % 2 == 0 { "score.anomaly" } else { "schema.type" },
                    (o % 2 == 0).then_some(o as f32 / 10.0),
                    if o % 3 == 0 { "evil" } else { "good" },
                );
                let len = r.payload.as_ref().map_or(0, Vec::len);
                r.payload_len = len as i64;
                r
            })
            .collect();
        let bytes = encode(&rows, 3).unwrap();
        store.put(&file_name(topic, p, first, first + 9), &bytes).unwrap();
    }
}

/// A produced record and the headers the release added.
type Produced = (RawRecord, Vec<(String, String)>);

#[derive(Default)]
struct MemPublisher {
    topic: Mutex<Vec<Produced>>,
    fail_next: Mutex<bool>,
}

impl Publisher for MemPublisher {
    fn end_offsets(&self, _topic: &str) -> Result<Vec<(i32, i64)>, String> {
        Ok(vec![(0, self.topic.lock().unwrap().len() as i64)])
    }
    fn publish(&self, _topic: &str, record: &RawRecord, extra: &[(String, String)]) -> Result<(i32, i64), String> {
        let mut t = self.topic.lock().unwrap();
        t.push((record.clone(), extra.to_vec()));
        if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
            // Written, but the acknowledgement was lost.
            return Err("timed out".into());
        }
        Ok((0, t.len() as i64 - 1))
    }
    fn find(
        &self,
        _topic: &str,
        since: &[(i32, i64)],
        header: &str,
        value: &str,
    ) -> Result<Option<(i32, i64)>, String> {
        let from = since.first().map_or(0, |s| s.1) as usize;
        let t = self.topic.lock().unwrap();
        Ok(t.iter()
            .enumerate()
            .skip(from)
            .find(|(_, (_, h))| h.iter().any(|(k, v)| k == header && v == value))
            .map(|(i, _)| (0, i as i64)))
    }
}

fn open(dir: &std::path::Path, publisher: Option<Arc<dyn Publisher>>, read_only: bool) -> Review {
    Review::open(
        Settings {
            quarantine: dir.display().to_string(),
            audit_dir: dir.join("_review"),
            read_only,
            release_topic: Some("clean".into()),
            source_header: None,
            max_indexed_rows: 1_000,
            provenance_header: Some("x-guard-source".into()),
        },
        Arc::new(LocalDirStore::new(dir)),
        Auth::new(vec![], std::time::Duration::from_secs(60)),
        publisher,
        Live::default(),
    )
    .unwrap()
}

fn key(t: &str, p: i32, o: i64) -> RecordKey {
    RecordKey {
        topic: t.into(),
        partition: p,
        offset: o,
    }
}

fn undecided(_: &RecordKey) -> &'static str {
    "undecided"
}

#[test]
fn index_filters_sorts_pages_and_reads_rows() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let r = open(dir.path(), None, false);
    let idx = r.index();
    assert_eq!((idx.len(), idx.files().len()), (30, 3));
    let q = |f: Filter| {
        let (total, page) = idx.query(&f, &undecided);
        (
            total,
            page.iter()
                .map(|&i| idx.key(&idx.entries()[i as usize]))
                .collect::<Vec<_>>(),
        )
    };
    // Three conditions: topic, reason, score range; sorted by anomaly score, descending.
    let (total, rows) = q(Filter {
        topic: Some("a".into()),
        reason: Some("score.anomaly".into()),
        score: ScoreField::Anomaly,
        score_min: Some(0.4),
        sort: SortKey::Anomaly,
        ..Filter::default()
    });
    assert_eq!(total, 6, "offsets 4, 6, 8 in two partitions");
    assert_eq!(
        rows.iter().map(|k| k.offset).collect::<Vec<_>>(),
        vec![8, 8, 6, 6, 4, 4]
    );
    // A reason prefix, a source, a time range.
    assert_eq!(
        q(Filter {
            reason: Some("schema.".into()),
            ..Filter::default()
        })
        .0,
        15
    );
    assert_eq!(
        q(Filter {
            source: Some("evil".into()),
            topic: Some("b".into()),
            ..Filter::default()
        })
        .0,
        3
    );
    assert_eq!(
        q(Filter {
            from: Some(10_000 + 105_000),
            ..Filter::default()
        })
        .0,
        5
    );
    assert_eq!(
        q(Filter {
            topic: Some("nope".into()),
            ..Filter::default()
        })
        .0,
        0
    );
    assert_eq!(
        q(Filter {
            reason: Some("nope".into()),
            ..Filter::default()
        })
        .0,
        0
    );
    // Paging: time descending, 7 per page.
    let p1 = q(Filter {
        page_size: Some(7),
        ..Filter::default()
    })
    .1;
    let p5 = q(Filter {
        page_size: Some(7),
        page: 4,
        ..Filter::default()
    })
    .1;
    assert_eq!((p1.len(), p5.len()), (7, 2));
    assert_eq!(p1[0], key("b", 0, 109));
    let asc = q(Filter {
        sort: SortKey::Offset,
        asc: true,
        page_size: Some(3),
        ..Filter::default()
    })
    .1;
    assert_eq!(asc, vec![key("a", 0, 0), key("a", 0, 1), key("a", 0, 2)]);
    drop(idx);
    // One row read from its file.
    let s = r.record(&key("b", 0, 107)).unwrap();
    assert_eq!(
        (s.offset, s.key.as_deref(), s.source.as_deref()),
        (107, Some("k107"), Some("good"))
    );
    assert!(matches!(
        r.record(&key("b", 0, 7)),
        Err(guard_review::ReviewError::NotFound(_))
    ));
    assert_eq!(
        r.index()
            .timeline(10_000 + 110_000, 10_000, 3)
            .iter()
            .map(|(_, m)| m.values().sum::<u64>())
            .sum::<u64>(),
        10
    );
}

#[test]
fn new_files_are_picked_up_and_removed_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let r = open(dir.path(), None, false);
    let store = LocalDirStore::new(dir.path());
    let bytes = encode(&[row("c", 0, 5, "limits.depth", None, "x")], 3).unwrap();
    store.put(&file_name("c", 0, 5, 5), &bytes).unwrap();
    assert_eq!(r.refresh().unwrap(), 1);
    assert_eq!(r.index().len(), 31);
    let gone = r.index().files()[0].name.clone();
    std::fs::remove_file(dir.path().join(gone)).unwrap();
    r.refresh().unwrap();
    assert_eq!(r.index().len(), 21);
}

#[test]
fn export_writes_the_view_in_three_formats() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let r = open(dir.path(), None, false);
    let f = Filter {
        topic: Some("a".into()),
        partition: Some(1),
        sort: SortKey::Offset,
        asc: true,
        ..Filter::default()
    };
    let (jsonl, _, n, truncated) = guard_review::export::export(&r, &f, "jsonl").unwrap();
    assert_eq!((n, truncated), (10, false));
    let lines: Vec<serde_json::Value> = String::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(
        (lines[0]["offset"].as_i64(), lines[9]["offset"].as_i64()),
        (Some(0), Some(9))
    );
    let (csv, _, _, _) = guard_review::export::export(&r, &f, "csv").unwrap();
    let text = String::from_utf8(csv).unwrap();
    assert_eq!(text.lines().count(), 11, "header + 10 rows");
    assert!(text.contains("\"{\"\"x\"\":3,"), "payload quoted per RFC 4180: {text}");
    let (pq, _, _, _) = guard_review::export::export(&r, &f, "parquet").unwrap();
    let out = dir.path().join("export.parquet");
    std::fs::write(&out, pq).unwrap();
    let back = guard_quarantine::read_file(&std::fs::read(&out).unwrap().into()).unwrap();
    assert_eq!(back.len(), 10);
    assert!(back.iter().all(|s| s.topic == "a" && s.partition == 1));
}

#[test]
fn decisions_feedback_and_suggestions() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let r = open(dir.path(), None, false);
    // Scores 0.0, 0.2, ..., 0.8 on partition 0: the low ones are false positives.
    for o in [0, 2, 4] {
        r.decide("alice", &key("a", 0, o), Action::FalsePositive, "looks fine")
            .unwrap();
    }
    for o in [6, 8] {
        r.decide("bob", &key("a", 0, o), Action::ConfirmedPoison, "trigger")
            .unwrap();
    }
    r.decide("bob", &key("a", 0, 1), Action::ConfirmedPoison, "bad type")
        .unwrap();
    assert!(r.decide("bob", &key("a", 0, 99), Action::ConfirmedPoison, "").is_err());
    let (by_reason, by_model) = r.feedback();
    assert_eq!(by_reason["score.anomaly"].reviewed, 5);
    assert_eq!(by_reason["score.anomaly"].false_positive, 3);
    assert!((by_reason["score.anomaly"].false_positive_rate - 0.6).abs() < 1e-9);
    assert_eq!(by_reason["schema.type"].confirmed_poison, 1);
    assert_eq!(by_model["a:anomaly"].reviewed, 5);
    let s = &r.suggestions(0.0)["a"][0];
    assert_eq!(
        (s.score, s.threshold, s.poison_kept, s.false_positives_kept),
        ("anomaly", Some(0.6), 2, 0)
    );
    // The decision filter sees the audit state.
    let idx = r.index();
    let (n, _) = r.audit().with_states(|st| {
        idx.query(
            &Filter {
                decision: Some("confirmed_poison".into()),
                ..Filter::default()
            },
            &|k| st.get(k).map_or("undecided", |s| s.name()),
        )
    });
    assert_eq!(n, 3);
    drop(idx);
    // Decisions survive a restart.
    drop(r);
    let r = open(dir.path(), None, true);
    assert_eq!(r.audit().state(&key("a", 0, 6)).name(), "confirmed_poison");
    assert!(matches!(
        r.decide("bob", &key("a", 0, 3), Action::FalsePositive, ""),
        Err(guard_review::ReviewError::Refused(_))
    ));
}

#[test]
fn release_is_exactly_once_even_after_a_lost_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let publisher = Arc::new(MemPublisher::default());
    let p: Arc<dyn Publisher> = publisher.clone();
    let r = open(dir.path(), Some(Arc::clone(&p)), false);
    let k = key("a", 0, 3);
    let first = r.release("alice", &k, "fine").unwrap();
    assert!(!first.already);
    let again = r.release("bob", &k, "clicked twice").unwrap();
    assert!(again.already);
    assert_eq!(again.landed, first.landed);
    assert_eq!(publisher.topic.lock().unwrap().len(), 1);
    let (raw, extra) = publisher.topic.lock().unwrap()[0].clone();
    assert_eq!((raw.key.as_deref(), raw.offset), (Some(&b"k3"[..]), 3));
    assert_eq!(raw.headers[0].key, "h");
    assert!(extra.contains(&("x-guard-release-id".into(), "a/0/3".into())));
    assert!(extra.contains(&("x-guard-released-by".into(), "alice".into())));
    // The broker wrote it but the acknowledgement was lost: the retry finds it, writes nothing.
    *publisher.fail_next.lock().unwrap() = true;
    let k2 = key("a", 0, 5);
    assert!(r.release("alice", &k2, "").is_err());
    assert_eq!(publisher.topic.lock().unwrap().len(), 2);
    drop(r);
    let r = open(dir.path(), Some(p), false);
    let retried = r.release("alice", &k2, "retry").unwrap();
    assert!(retried.already);
    assert_eq!(retried.landed.offset, 1);
    assert_eq!(publisher.topic.lock().unwrap().len(), 2, "not produced twice");
    assert_eq!(r.audit().state(&k2).name(), "released");
    // Read-only refuses.
    let ro = open(dir.path(), None, true);
    assert!(matches!(
        ro.release("alice", &key("a", 0, 7), ""),
        Err(guard_review::ReviewError::Refused(_))
    ));
}

#[test]
fn two_servers_sharing_the_folder_release_once() {
    // Two review services on one quarantine folder (as two processes would be): the audit
    // log's file lock and catch-up make the second answer "already released".
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let publisher = Arc::new(MemPublisher::default());
    let p: Arc<dyn Publisher> = publisher.clone();
    let a = open(dir.path(), Some(Arc::clone(&p)), false);
    let b = open(dir.path(), Some(p), false);
    let k = key("b", 0, 104);
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.release("alice", &k, "from a"));
        let tb = s.spawn(|| b.release("bob", &k, "from b"));
        (ta.join().unwrap().unwrap(), tb.join().unwrap().unwrap())
    });
    assert_eq!(publisher.topic.lock().unwrap().len(), 1, "produced once");
    assert_eq!(ra.landed, rb.landed);
    assert!(ra.already != rb.already, "exactly one of them released it");
    // Decisions from one are seen by the other.
    a.decide("alice", &key("b", 0, 105), Action::ConfirmedPoison, "")
        .unwrap();
    assert_eq!(b.audit().state(&key("b", 0, 105)).name(), "confirmed_poison");
    assert_eq!(
        b.audit().page(None, None, 0, 10).0,
        3,
        "started, released and the decision, seen by b"
    );
}

#[test]
fn release_drops_forged_guard_headers_and_refuses_cut_envelopes() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalDirStore::new(dir.path());
    let mut forged = row("c", 0, 1, "schema.type", None, "x");
    forged.headers = vec![
        Header {
            key: "x-guard-release-id".into(),
            value: Some(b"c/0/999".to_vec()),
        },
        Header {
            key: "X-Guard-Source".into(),
            value: Some(b"victim/0/1".to_vec()),
        },
        Header {
            key: "traceparent".into(),
            value: Some(b"00-1".to_vec()),
        },
    ];
    let mut cut = row("c", 0, 2, "limit.headers", None, "x");
    cut.envelope_cut = true;
    store
        .put(&file_name("c", 0, 1, 2), &encode(&[forged, cut], 3).unwrap())
        .unwrap();
    let publisher = Arc::new(MemPublisher::default());
    let p: Arc<dyn Publisher> = publisher.clone();
    let r = open(dir.path(), Some(p), false);
    r.release("alice", &key("c", 0, 1), "").unwrap();
    let (raw, extra) = publisher.topic.lock().unwrap()[0].clone();
    let names: Vec<&str> = raw.headers.iter().map(|h| h.key.as_str()).collect();
    assert_eq!(names, ["traceparent"], "the record's own x-guard-* headers are dropped");
    assert!(extra.contains(&("x-guard-release-id".into(), "c/0/1".into())));
    assert!(matches!(
        r.release("alice", &key("c", 0, 2), ""),
        Err(guard_review::ReviewError::Refused(m)) if m.contains("headers")
    ));
}

/// A guard's blocks, as the review sees them (unit test double: the broker path is
/// `tests/flood.rs`).
#[derive(Default)]
struct Blocks(Mutex<Vec<guard_core::BlockedSource>>);

impl guard_core::SourceBlocks for Blocks {
    fn blocked(&self) -> Vec<guard_core::BlockedSource> {
        self.0.lock().unwrap().clone()
    }
    fn release(&self, topic: &str, source: &str, id: &str, _by: &str) -> bool {
        let mut v = self.0.lock().unwrap();
        let before = v.len();
        v.retain(|b| !(b.topic == topic && b.source == source && b.id == id));
        v.len() < before
    }
}

#[test]
fn a_source_release_is_audited_once_and_an_audited_block_back_in_force_is_lifted_again() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let block = guard_core::BlockedSource {
        topic: "t".into(),
        source: "flooder".into(),
        id: "i1-1-0-7".into(),
        since_ms: 1,
        why: "10 near-duplicate flood flags".into(),
        instance: "i1".into(),
        partition: 0,
        offset: 7,
    };
    let blocks = Arc::new(Blocks::default());
    blocks.0.lock().unwrap().push(block.clone());
    let live = Live {
        blocks: Some(Arc::clone(&blocks) as Arc<dyn guard_core::SourceBlocks>),
        ..Live::default()
    };
    let settings = Settings {
        quarantine: dir.path().display().to_string(),
        audit_dir: dir.path().join("_review"),
        read_only: false,
        release_topic: None,
        source_header: None,
        max_indexed_rows: 1_000,
        provenance_header: None,
    };
    let store: Arc<dyn QuarantineStore> = Arc::new(LocalDirStore::new(dir.path()));
    let auth = Auth::new(vec![], std::time::Duration::from_secs(60));
    let r = Review::open(settings.clone(), Arc::clone(&store), auth, None, live.clone()).unwrap();
    assert!(
        r.release_source("ann", "t", "flooder", "other-id", "").is_err(),
        "no such block"
    );
    let first = r.release_source("ann", "t", "flooder", &block.id, "checked").unwrap();
    assert!(!first.already);
    assert!(blocks.0.lock().unwrap().is_empty());
    let again = r.release_source("ann", "t", "flooder", &block.id, "").unwrap();
    assert!(again.already);
    let lines = |r: &Review| {
        r.audit()
            .entries()
            .iter()
            .filter(|e| e.action == Action::SourceReleased)
            .count()
    };
    assert_eq!(lines(&r), 1);
    // The guard read the block back (it stopped before the lift): the refresh lifts it, with
    // no new audit line.
    blocks.0.lock().unwrap().push(block.clone());
    r.refresh().unwrap();
    assert!(blocks.0.lock().unwrap().is_empty());
    assert_eq!(lines(&r), 1);
    // Read-only: refused.
    let ro = Review::open(
        Settings {
            read_only: true,
            ..settings
        },
        store,
        Auth::new(vec![], std::time::Duration::from_secs(60)),
        None,
        live,
    )
    .unwrap();
    blocks.0.lock().unwrap().push(block.clone());
    assert!(ro.release_source("ann", "t", "flooder", &block.id, "").is_err());
}
