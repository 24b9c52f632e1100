//! Integration tests against a real server on 127.0.0.1:0, through the generated clients.

mod cli;
mod feed;
mod helpers;
mod service;
mod tls;
mod risk;
