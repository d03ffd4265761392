//! The offline side of ingest-guard: what the commands that judge files rather than a stream
//! share. The run path never imports this crate (`scripts/crate-graph.py` checks it).
//!
//! * [`read`]: trusted record sets from a JSONL file, a Parquet file or an offset range of a
//!   topic, with a reproducible SHA-256 of what was read;
//! * [`baseline`]: a drift baseline built from such a set through the stream's own limits,
//!   decoding and schema checks;
//! * [`evaluate`]: detection quality on attacked held-out streams, judged by the running
//!   guard's batch judge ([`guard_pipeline::BatchJudge`]), with the measures in [`measure`];
//! * [`infer`]: a first domain schema (JSON Schema plus `x-guard`) from trusted records;
//! * [`train`]: models for any schema through the Python training backend, checked by the
//!   guard's own extractor and runtime afterwards;
//! * [`pipebench`]: the plain consume-and-produce pass-through and end-to-end latency the
//!   benchmarks compare the guard with;
//! * [`bench`]: model inference and statistics throughput, and provider parity.

pub mod attack;
pub mod baseline;
pub mod bench;
pub mod drift;
pub mod evaluate;
pub mod infer;
pub mod init;
pub mod measure;
pub mod pipebench;
pub mod read;
pub mod report;
mod scenario;
pub mod split;
pub mod train;

use std::path::PathBuf;

pub use scenario::{committed_split, SCENARIOS};
pub use split::{bucket, SPLIT_SEED};

/// What can go wrong reading record sets, building baselines and evaluating.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// JSON that could not be read or written.
    #[error("{what}: {source}")]
    Json {
        /// What was being read or written.
        what: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// A Parquet file that could not be read.
    #[error("{path}: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// An Arrow batch of a Parquet file that could not be decoded.
    #[error("{path}: {source}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: arrow_schema::ArrowError,
    },
    /// The broker refused or failed a request.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The cause.
        source: rdkafka::error::KafkaError,
    },
    /// A schema that does not load.
    #[error(transparent)]
    Schema(#[from] guard_validate::ValidateError),
    /// A baseline that cannot be built.
    #[error(transparent)]
    Stats(#[from] guard_stats::StatsError),
    /// A quarantine file that cannot be written.
    #[error(transparent)]
    Quarantine(#[from] guard_quarantine::QuarantineError),
    /// A model or runtime that does not load or run.
    #[error(transparent)]
    Score(#[from] guard_score::ScoreError),
    /// The input does not hold what the command needs.
    #[error("{0}")]
    Input(String),
}

impl EvalError {
    fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let what = what.into();
        move |source| Self::Kafka { what, source }
    }
}
