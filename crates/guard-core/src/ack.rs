//! Per-batch acknowledgement tokens (the pattern of Vector's `BatchNotifier`): each batch the
//! source hands on carries a [`BatchAck`] with two parts, one for the clean sink and one for
//! the quarantine. Stages acknowledge their part on the token itself, without a shared lock;
//! when the last part is acknowledged, the token tells the source through a channel, and the
//! source alone keeps commit order (it commits only a contiguous prefix of finished batches).
//!
//! A token also knows whether its partition is still assigned here ([`Lease`]): work for a
//! revoked partition is dropped (its next owner reads it again), never committed from here.

use crate::TopicPartition;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Which sink acknowledges part of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All passing records were acknowledged by the broker (or there were none).
    Clean,
    /// All quarantined records are inside a durable file (or there were none).
    Quarantine,
    /// Pending only for a batch whose passing records were held for the window scan
    /// ([`BatchAck::hold`]): the records the scan flagged are inside a durable file (or there
    /// were none). Their clean ones acknowledge [`Part::Clean`] when released.
    Held,
}

impl Part {
    fn bit(self) -> u8 {
        match self {
            Part::Clean => 1,
            Part::Quarantine => 2,
            Part::Held => 4,
        }
    }
}

/// One assignment of one partition to this instance; revoked when the partition leaves.
#[derive(Debug, Default)]
pub struct Lease {
    revoked: AtomicBool,
}

impl Lease {
    /// A current lease.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The partition left this instance: its in-flight batches are stale.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    /// Whether the partition is still assigned here in this lease.
    pub fn is_current(&self) -> bool {
        !self.revoked.load(Ordering::SeqCst)
    }
}

/// A batch whose every part is acknowledged: the source may commit past it once every
/// earlier batch of its partition is done too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The batch's partition.
    pub tp: TopicPartition,
    /// The assignment generation it was consumed in.
    pub generation: u64,
    /// Its sequence number within the partition and generation.
    pub seq: u64,
}

#[derive(Debug)]
struct Inner {
    finished: Finished,
    pending: AtomicU8,
    lease: Arc<Lease>,
    done: Sender<Finished>,
}

/// The acknowledgement token of one batch (cheap to clone; all clones share the parts).
#[derive(Debug, Clone)]
pub struct BatchAck(Arc<Inner>);

impl BatchAck {
    /// A token for batch `seq` of `tp` in `generation`, both parts pending; `done` hears of
    /// it once both are acknowledged.
    pub fn new(tp: TopicPartition, generation: u64, seq: u64, lease: Arc<Lease>, done: Sender<Finished>) -> Self {
        Self(Arc::new(Inner {
            finished: Finished { tp, generation, seq },
            pending: AtomicU8::new(Part::Clean.bit() | Part::Quarantine.bit()),
            lease,
            done,
        }))
    }

    /// Make [`Part::Held`] pending too. Call it before any other part can be acknowledged (the
    /// judge worker does, right after judging the batch), or the batch may finish without it.
    pub fn hold(&self) {
        self.0.pending.fetch_or(Part::Held.bit(), Ordering::AcqRel);
    }

    /// Acknowledge `part` (again: no effect). The last part tells the source.
    pub fn ack(&self, part: Part) {
        let before = self.0.pending.fetch_and(!part.bit(), Ordering::AcqRel);
        if before == part.bit() {
            // The source may be gone (shutdown): nothing left to commit then.
            let _ = self.0.done.send(self.0.finished.clone());
        }
    }

    /// Whether `part` is still pending.
    pub fn is_pending(&self, part: Part) -> bool {
        self.0.pending.load(Ordering::Acquire) & part.bit() != 0
    }

    /// Whether the batch's partition is still assigned here (else its work is dropped).
    pub fn is_current(&self) -> bool {
        self.0.lease.is_current()
    }

    /// The batch's partition.
    pub fn tp(&self) -> &TopicPartition {
        &self.0.finished.tp
    }

    /// The assignment generation the batch was consumed in.
    pub fn generation(&self) -> u64 {
        self.0.finished.generation
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tp() -> TopicPartition {
        TopicPartition {
            topic: Arc::from("t"),
            partition: 0,
        }
    }

    #[test]
    fn the_source_hears_once_both_parts_are_acknowledged() {
        let (tx, rx) = std::sync::mpsc::channel();
        let lease = Lease::new();
        let a = BatchAck::new(tp(), 3, 7, Arc::clone(&lease), tx);
        let b = a.clone();
        a.ack(Part::Clean);
        a.ack(Part::Clean);
        // Held is not pending unless asked for.
        assert!(!a.is_pending(Part::Held));
        assert!(rx.try_recv().is_err(), "one part is not the batch");
        assert!(b.is_pending(Part::Quarantine) && !b.is_pending(Part::Clean));
        b.ack(Part::Quarantine);
        assert_eq!(
            rx.try_recv().unwrap(),
            Finished {
                tp: tp(),
                generation: 3,
                seq: 7
            }
        );
        b.ack(Part::Quarantine);
        assert!(rx.try_recv().is_err(), "told exactly once");
        assert!(a.is_current());
        lease.revoke();
        assert!(!b.is_current());
    }

    #[test]
    fn a_held_batch_waits_for_its_release() {
        let (tx, rx) = std::sync::mpsc::channel();
        let a = BatchAck::new(tp(), 0, 1, Lease::new(), tx);
        a.hold();
        a.ack(Part::Quarantine);
        a.ack(Part::Clean);
        assert!(rx.try_recv().is_err(), "the scan's quarantine rows are not durable yet");
        a.ack(Part::Held);
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn racing_acknowledgements_tell_exactly_once() {
        for _ in 0..200 {
            let (tx, rx) = std::sync::mpsc::channel();
            let a = BatchAck::new(tp(), 0, 0, Lease::new(), tx);
            let b = a.clone();
            let h = std::thread::spawn(move || b.ack(Part::Quarantine));
            a.ack(Part::Clean);
            h.join().unwrap();
            assert!(rx.try_recv().is_ok());
            assert!(rx.try_recv().is_err());
        }
    }
}
