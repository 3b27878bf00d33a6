//! What this binary was built from: the release version, git commit and build time.
//!
//! `cargo xtask package` sets `SAULPOS_RELEASE_VERSION`, `SAULPOS_GIT_COMMIT` and
//! `SAULPOS_BUILD_TIME` at build time; an unpackaged build shows the workspace's development
//! version and `unknown` for the rest.

/// The release version (or the workspace's development version).
pub const VERSION: &str = match option_env!("SAULPOS_RELEASE_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// The git commit the release was built from.
pub const COMMIT: &str = match option_env!("SAULPOS_GIT_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// When the release was built: the commit's time, so that rebuilding gives the same binary.
pub const BUILD_TIME: &str = match option_env!("SAULPOS_BUILD_TIME") {
    Some(time) => time,
    None => "unknown",
};

/// The name the service reports in `/actuator/info`.
pub const NAME: &str = "saulpos-server";

/// The text of `saulpos-server --version` after the program name.
pub fn long_version() -> &'static str {
    static LONG_VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LONG_VERSION.get_or_init(|| format!("{VERSION} (commit {COMMIT}, built {BUILD_TIME})"))
}
