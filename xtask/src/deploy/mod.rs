//! Running releases on a host or a fleet of them: `deploy`, `rollback`, `status`, `health`,
//! `smoke`, and what they share (the installed folder, the server it runs, HTTP, SSH).

#[allow(clippy::module_inception)]
pub mod deploy;
pub mod destination;
pub mod fleet;
pub mod health;
pub mod http;
pub mod installation;
pub mod remote;
pub mod rollback;
pub mod service;
pub mod smoke;
pub mod status;
