//! Integration tests against a real server on 127.0.0.1:0, through the generated clients.

mod cli;
mod cohort;
mod conventions;
mod crash;
mod ctf;
mod demo;
mod feed;
mod helpers;
mod hostile;
mod inference;
mod integrity;
mod lifecycle;
mod metrics;
mod model;
mod privacy;
mod risk;
mod service;
mod tls;
