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
pub mod synth;
pub mod web;
