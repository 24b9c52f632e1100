//! riskid: termly school data in, next-term risk scores and reviewed cohorts out.

pub mod domain;
pub mod ingest;
pub mod model;
pub mod synth;
