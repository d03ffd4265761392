//! Integration tests: the real `ingest-guard` binary against a real Kafka-protocol broker
//! (Tansu, one per test, on loopback) with records built from real data sets.
//!
//! Run through `scripts/test.sh`, which installs the broker and sets `TANSU_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

mod alerts;
mod attacks;
mod baseline;
mod browser;
mod check;
mod crash;
mod deploy;
mod detection;
mod domain;
mod drift;
mod e2e;
mod faults;
mod flood;
mod group;
mod hostile;
mod objstore;
mod review;
mod scoring;
mod tls;
