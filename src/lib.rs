//! riskid: termly school data in, next-term risk scores and reviewed cohorts out.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod cohort;
pub mod demo;
pub mod domain;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod outcomes;
pub mod par;
pub mod review;
pub mod scoring;
pub mod server;
pub mod storage;

/// mimalloc for every binary that links riskid (the server, the CLI, the benchmarks and
/// tests that run the server in process): many small allocations on several threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub mod synth;
pub mod web;
