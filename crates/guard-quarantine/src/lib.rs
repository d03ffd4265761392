//! The quarantine: Parquet files of held records with machine-readable reasons.
//!
//! Invariants this crate keeps (DESIGN.md 1 and 2):
//! * a file becomes visible only whole: it is written to a temporary name, fsynced, renamed, and
//!   its folder fsynced ([`LocalDirStore::put`]); only then may the offsets in it be committed;
//! * a file's name carries topic, partition and the **input** offset range it covers
//!   (`topic=T/partition=P/<first>-<last>.parquet`, offsets zero-padded), so after a crash the
//!   guard knows which offsets are already durable ([`stored_offsets`], by exact offset) and a
//!   replay does not write the same records twice; a file is never replaced.
//!
//! Writing and reading go through the small [`QuarantineStore`] trait: a local folder
//! ([`LocalDirStore`]) or S3-compatible object storage ([`ObjectStoreQuarantine`], conditional
//! puts so a file is never replaced).

mod buffer;
mod encode;
mod object;
mod read;
mod store;

pub use buffer::{PartitionBuffer, RollPolicy};
pub use encode::{arrow_schema, encode, QuarantineRow, ReasonEntry};
pub use object::{parse_url, ObjectSettings, ObjectStoreQuarantine};
pub use read::{
    file_rows, list_files, offsets_in, read_all, read_batches_at, read_file, read_raw_at, read_rows_at, scan_summaries,
    FileInfo, RawRecord, RowSummary, StoredRow,
};
pub use store::{
    file_name, file_name_alt, parse_file_name, partition_prefix, stored_offsets, LocalDirStore, QuarantineStore, Stored,
};

/// Errors of the quarantine store and codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuarantineError {
    /// Filesystem (or object store) failure: retry with back-off, report not-ready.
    #[error("quarantine i/o error on {path}: {source}")]
    Io {
        /// Path involved.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Parquet or Arrow failure while encoding or decoding.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow failure while building a batch.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A file does not have the quarantine layout.
    #[error("not a quarantine file: {0}")]
    Format(String),
    /// A file of that name exists already (files are never replaced).
    #[error("quarantine file exists already: {0}")]
    Exists(String),
}

impl QuarantineError {
    /// Which domain the error belongs to: storage failures are external (retry with back-off,
    /// report not-ready); encoding failures are internal (a bug); a foreign file is a bad input.
    pub fn domain(&self) -> guard_core::ErrorDomain {
        match self {
            QuarantineError::Io { .. } => guard_core::ErrorDomain::External,
            QuarantineError::Parquet(_) | QuarantineError::Arrow(_) => guard_core::ErrorDomain::Internal,
            QuarantineError::Format(_) => guard_core::ErrorDomain::BadRecord,
            QuarantineError::Exists(_) => guard_core::ErrorDomain::External,
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_string(),
            source,
        }
    }
}
