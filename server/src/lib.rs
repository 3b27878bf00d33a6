//! SaulPOS server: a PostgreSQL-backed HTTP service with actuator health and a small catalogue.
//!
//! `cli::main` is what the binary runs; `routes::app` builds the router so tests can drive it
//! without a socket.

pub mod auth;
pub mod build_info;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod telemetry;
