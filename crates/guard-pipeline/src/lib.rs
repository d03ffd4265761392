//! The record path of ingest-guard, from a consumed batch to its two durable ends.
//!
//! * [`BatchJudge`]: the stages a batch flows through on a judge worker — checks (limits,
//!   decode, schema: `guard-validate`), observers (drift windows and the source table:
//!   `guard-drift`), scorers (the models: `guard-score`) — and the policy that turns checks and
//!   scores into one verdict per record (the model thresholds, then the breaker). Each record
//!   that passes its checks is extracted once into a typed row that the observers, the models
//!   and the explanations share. `tools evaluate` calls the same batch judge.
//! * [`worker`]: a judge thread's loop: judge, hand the passing records to the clean sink (a
//!   [`CleanOut`]; the Kafka producer implements it), turn the rest into quarantine rows.
//! * [`QuarantineStage`]: writes the rows durably and acknowledges their part of each batch.
//! * [`AckTracker`]: acknowledgements and ordered offset commits (the no-loss commit rule).
//!
//! The binary builds these from the configuration and wires them to the Kafka source; this
//! crate never talks to Kafka itself.

mod ack;
mod judge;
mod quarantine;
mod sink;
mod worker;

pub use ack::{AckTracker, ByteBudget, BytesHeld, Part};
pub use judge::{header_source, BatchJudge, Judged};
pub use quarantine::{QuarantineStage, QuarantineWork, Summary};
pub use sink::{CleanOut, FlushSignal, OnDelivered, Rejected};
pub use worker::{worker, WorkerCtx};
