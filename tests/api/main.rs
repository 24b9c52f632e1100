//! Integration tests against a real server on 127.0.0.1:0, through the generated clients.

mod cli;
mod cohort;
mod crash;
mod demo;
mod feed;
mod helpers;
mod hostile;
mod integrity;
mod lifecycle;
mod model;
mod privacy;
mod risk;
mod service;
mod tls;
