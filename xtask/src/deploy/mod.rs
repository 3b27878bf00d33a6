//! Running releases on a host: `deploy`, `rollback`, `status`, `health`, `smoke`, and what they
//! share (the installed payload folder, safe extraction, HTTP).

#[allow(clippy::module_inception)]
pub mod deploy;
pub mod extract;
pub mod health;
pub mod http;
pub mod payload;
pub mod rollback;
pub mod shipped;
pub mod smoke;
pub mod status;
