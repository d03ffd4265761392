//! Per-source blocks: the vocabulary the pipeline (which blocks sources), the review (which
//! releases them) and the blocks topic (which carries both between instances) share; and
//! [`SideTopics`], the drift hub's state that the Kafka side topics carry.

use serde::{Deserialize, Serialize};

/// A blocked source of one input topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedSource {
    /// Input topic.
    pub topic: String,
    /// The source (capped like every source).
    pub source: String,
    /// This block's identity (instance and time): a release names it, so a release is for one
    /// block and a later block of the same source needs its own.
    pub id: String,
    /// When it was blocked (ms since epoch).
    pub since_ms: i64,
    /// Why, in words (the budget it went over).
    pub why: String,
    /// The instance that blocked it.
    pub instance: String,
    /// The record that tripped it: partition ...
    pub partition: i32,
    /// ... and offset.
    pub offset: i64,
}

/// Who released a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRelease {
    /// Reviewer.
    pub by: String,
    /// When (ms since epoch).
    pub at_ms: i64,
}

/// One document of the blocks topic (keyed `topic/source`, compacted): a block, released or
/// not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDoc {
    /// The block.
    pub block: BlockedSource,
    /// Its release, once released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<BlockRelease>,
}

impl BlockDoc {
    /// The compaction key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.block.topic, self.block.source)
    }
}

/// The blocks of a running guard, as the review sees them.
pub trait SourceBlocks: Send + Sync {
    /// The sources blocked now.
    fn blocked(&self) -> Vec<BlockedSource>;
    /// Release block `id` of `source` on `topic` (the release is published to the other
    /// instances). False when no such block is in force.
    fn release(&self, topic: &str, source: &str, id: &str, by: &str) -> bool;
}

/// The drift hub's state that travels through the compacted side topics: partition views
/// (group statistics) and source blocks. The hub (guard-drift) encodes and applies; the Kafka
/// side (guard-kafka) only moves keyed bytes.
pub trait SideTopics: Send + Sync {
    /// Changed partition views to publish, keyed.
    fn take_views(&self) -> Vec<(String, Vec<u8>)>;
    /// A partition view read back (`None`: a tombstone).
    fn put_view(&self, key: &str, payload: Option<&[u8]>);
    /// Block documents to publish, keyed.
    fn take_blocks(&self) -> Vec<(String, Vec<u8>)>;
    /// Block documents that could not be published (sent again next time).
    fn put_back_blocks(&self, docs: Vec<(String, Vec<u8>)>);
    /// A block document read back.
    fn apply_block(&self, key: &str, payload: Option<&[u8]>);
}
