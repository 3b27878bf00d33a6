//! `incident`: the evidence bundle and the redaction of secrets in it.

#[allow(clippy::module_inception)]
pub mod incident;
pub mod redact;
