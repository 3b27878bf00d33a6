//! End-to-end tests: the server and `cargo xtask` driven as users drive them, on a real
//! PostgreSQL. Each test makes its own database and its own folders.

mod archive;
mod auth;
mod backup;
mod canary;
mod deploy;
mod fleet;
mod hostile_clients;
mod image;
mod incident;
mod install;
mod metrics;
mod monitoring;
mod package;
mod release_cut;
mod release_day;
mod rollback_data;
mod runbooks;
mod server;
mod signing;
mod support;
