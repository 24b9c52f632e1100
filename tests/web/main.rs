//! The web app over HTTP: every page and action with each role, refusals, CSRF, sessions.

mod analyst;
mod feeds;
mod helpers;
mod review;
mod session;
mod tls;
