//! Records as consumed from Kafka and the per-partition batches that flow through the pipeline.

use std::sync::Arc;

/// A Kafka topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// One Kafka header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is a null header value.
    pub value: Option<Vec<u8>>,
}

/// One consumed record, owned, with its Kafka coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset within the partition.
    pub offset: i64,
    /// Kafka timestamp in milliseconds since the epoch, if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Message key (`None` for a null key).
    pub key: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Payload (`None` for a tombstone). May be a prefix when the message was oversize.
    pub payload: Option<Vec<u8>>,
    /// Length of the payload on the wire, which can exceed `payload.len()` when truncated.
    pub payload_len: usize,
}

impl Record {
    /// True when only a prefix of the payload was kept because it exceeded the byte limit.
    pub fn is_truncated(&self) -> bool {
        self.payload.as_ref().map_or(0, Vec::len) < self.payload_len
    }
}

/// Records of one partition, in offset order, consumed in one assignment generation.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Where the records came from.
    pub tp: TopicPartition,
    /// Sequence number of this batch within its partition and generation.
    pub seq: u64,
    /// Assignment generation; a batch from an older generation is stale after a rebalance.
    pub generation: u64,
    /// The records, in increasing offset order; never empty.
    pub records: Vec<Record>,
}

impl Batch {
    /// First offset in the batch.
    pub fn first_offset(&self) -> i64 {
        self.records.first().map_or(-1, |r| r.offset)
    }

    /// Last offset in the batch.
    pub fn last_offset(&self) -> i64 {
        self.records.last().map_or(-1, |r| r.offset)
    }

    /// Sum of payload lengths as received.
    pub fn payload_bytes(&self) -> usize {
        self.records.iter().map(|r| r.payload_len).sum()
    }
}
