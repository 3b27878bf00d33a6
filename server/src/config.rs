//! Runtime configuration in layers: `application.toml`, then `application-<profile>.toml`,
//! then the `SAULPOS_*` environment variables.
//!
//! Every problem is collected, so one failed start names all of them and the variable to set.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The profiles a server can run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Dev,
    Staging,
    Prod,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Dev, Profile::Staging, Profile::Prod];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        }
    }

    fn embedded_file(self) -> &'static str {
        match self {
            Profile::Dev => include_str!("../config/application-dev.toml"),
            Profile::Staging => include_str!("../config/application-staging.toml"),
            Profile::Prod => include_str!("../config/application-prod.toml"),
        }
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|profile| profile.as_str() == text)
            .ok_or_else(|| format!("unknown profile {text:?}: use one of dev, staging, prod"))
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that must never be printed: its `Debug` and `Display` show a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// PostgreSQL's TLS negotiation, as `sslmode` in the URL says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    /// TLS, and the server's certificate must chain to the root certificate.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The whole effective configuration of one server process.
#[derive(Clone, Debug)]
pub struct Config {
    pub profile: Profile,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub show_health_details: bool,
    /// Whether requests are measured and `/actuator/prometheus` serves the metrics.
    pub metrics_enabled: bool,
    pub log_format: LogFormat,
    pub log_level: String,
    pub load_demo_catalogue: bool,
    pub auth: AuthConfig,
    /// Where the profile files were read from: a folder, or the copies built into the binary.
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub address: IpAddr,
    pub port: u16,
    pub shutdown_grace: Duration,
    /// A client must send a request's headers within this, or the connection is closed; it is
    /// also how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// A whole request, body and handler, must be done within this (408 otherwise).
    pub request_timeout: Duration,
    /// Connections open at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// Proxies whose `X-Forwarded-For` names the client (for the login throttle and the logs).
    pub trusted_proxies: Vec<IpNet>,
}

/// Login: token lifetime, Argon2id cost, lockout.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub token_ttl: Duration,
    pub argon2: Argon2Config,
    /// Failed logins for one user from one client address before logins wait.
    pub max_failures: u32,
    /// The first wait; it doubles with each further failure.
    pub lockout: Duration,
    /// Failed logins for one user from every address together before that user's logins wait.
    pub max_failures_per_user: u32,
    /// Failed logins from one address for every user together before its logins wait.
    pub max_failures_per_client: u32,
    /// Password hashes computed at once (each takes the Argon2 memory).
    pub max_hashes: usize,
    /// How long a login may wait for a hash slot before it is answered 503.
    pub hash_wait: Duration,
}

/// Argon2id's cost: memory in KiB, passes, lanes.
#[derive(Clone, Debug)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub ssl_mode: SslMode,
    /// The CA certificate(s) the database's certificate must chain to (PEM), for verify-ca and
    /// verify-full; without one, the built-in Mozilla roots.
    pub ssl_root_cert: Option<PathBuf>,
    pub username: String,
    pub password: Option<Secret>,
    pub pool_size: u32,
    pub connect_timeout: Duration,
    pub startup_timeout: Duration,
    pub health_timeout: Duration,
}

/// Every problem found in the configuration, each naming what to set.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problems):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        write!(
            f,
            "Fix the variables above (see the example environment file or docs/) and start again."
        )
    }
}

impl std::error::Error for ConfigError {}

/// The shape of the profile files, once merged.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: FileServer,
    database: FileDatabase,
    health: FileHealth,
    logging: FileLogging,
    catalogue: FileCatalogue,
    #[serde(default)]
    metrics: FileMetrics,
    #[serde(default)]
    auth: FileAuth,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileAuth {
    token_ttl_seconds: u64,
    argon2_memory_kib: u32,
    argon2_iterations: u32,
    argon2_parallelism: u32,
    max_failures: u32,
    lockout_seconds: u64,
    max_failures_per_user: u32,
    max_failures_per_client: u32,
    max_hashes: u64,
    hash_wait_ms: u64,
}

impl Default for FileAuth {
    /// OWASP's Argon2id minimum (19 MiB, 2 passes, 1 lane), 8-hour tokens, 5 failures, 60 s;
    /// ceilings of 100 per user and per address; one hash a core (0: the number of cores).
    fn default() -> FileAuth {
        FileAuth {
            token_ttl_seconds: 8 * 3600,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_failures: 5,
            lockout_seconds: 60,
            max_failures_per_user: 100,
            max_failures_per_client: 100,
            max_hashes: 0,
            hash_wait_ms: 2000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    address: String,
    port: u16,
    shutdown_grace_seconds: u64,
    header_timeout_seconds: u64,
    request_timeout_seconds: u64,
    max_connections: u64,
    trusted_proxies: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatabase {
    url: String,
    username: String,
    pool_size: u32,
    connect_timeout_ms: u64,
    startup_timeout_seconds: u64,
    health_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    show_details: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLogging {
    format: LogFormat,
    level: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileMetrics {
    enabled: bool,
}

impl Default for FileMetrics {
    fn default() -> FileMetrics {
        FileMetrics { enabled: true }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCatalogue {
    load_demo: bool,
}

/// The database a URL points at.
#[derive(Debug, PartialEq, Eq)]
pub struct DbTarget {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub ssl_mode: SslMode,
    pub ssl_root_cert: Option<String>,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::load(&|name| std::env::var(name).ok())
    }

    /// Reads the configuration with `env` standing for the environment (tests pass a map).
    pub fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let profile = match env("SAULPOS_PROFILE").as_deref() {
            None | Some("") => Profile::Dev,
            Some(text) => match text.parse() {
                Ok(profile) => profile,
                Err(message) => {
                    return Err(ConfigError {
                        problems: vec![format!("SAULPOS_PROFILE: {message}")],
                    });
                }
            },
        };
        let (files, source) = match read_profile_files(profile, env) {
            Ok(found) => found,
            Err(message) => {
                return Err(ConfigError {
                    problems: vec![message],
                });
            }
        };
        let file: FileConfig = match merge_files(&files) {
            Ok(file) => file,
            Err(message) => {
                return Err(ConfigError {
                    problems: vec![message],
                });
            }
        };

        let overridden = |name: &str, from_file: String| -> (String, bool) {
            match env(name) {
                Some(value) => (value, true),
                None => (from_file, false),
            }
        };

        let (address_text, _) = overridden("SAULPOS_SERVER_ADDRESS", file.server.address);
        let address = address_text.parse::<IpAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "SAULPOS_SERVER_ADDRESS: {address_text:?} is not an IP address; use e.g. 0.0.0.0 or 127.0.0.1"
            ));
            IpAddr::from([0, 0, 0, 0])
        });
        let port = number(
            env,
            "SAULPOS_SERVER_PORT",
            file.server.port,
            1..=65535,
            &mut problems,
        );
        let shutdown_grace_seconds = number(
            env,
            "SAULPOS_SHUTDOWN_GRACE_SECONDS",
            file.server.shutdown_grace_seconds,
            0..=3600,
            &mut problems,
        );

        let header_timeout_seconds = number(
            env,
            "SAULPOS_SERVER_HEADER_TIMEOUT_SECONDS",
            file.server.header_timeout_seconds,
            1..=30,
            &mut problems,
        );
        let request_timeout_seconds = number(
            env,
            "SAULPOS_SERVER_REQUEST_TIMEOUT_SECONDS",
            file.server.request_timeout_seconds,
            1..=3600,
            &mut problems,
        );
        let max_connections = number(
            env,
            "SAULPOS_SERVER_MAX_CONNECTIONS",
            file.server.max_connections,
            1..=1_000_000,
            &mut problems,
        );
        let (proxies_text, _) = overridden("SAULPOS_TRUSTED_PROXIES", file.server.trusted_proxies);
        let trusted_proxies = parse_proxies(&proxies_text).unwrap_or_else(|message| {
            problems.push(format!("SAULPOS_TRUSTED_PROXIES: {message}"));
            Vec::new()
        });

        let (url, url_from_env) = overridden("SAULPOS_DB_URL", file.database.url);
        let (username, _) = overridden("SAULPOS_DB_USERNAME", file.database.username);
        let password = env("SAULPOS_DB_PASSWORD")
            .filter(|password| !password.is_empty())
            .map(Secret);
        let target = if url.trim().is_empty() {
            problems.push(
                "SAULPOS_DB_URL is not set: set it to postgres://host:port/database".to_owned(),
            );
            None
        } else {
            match parse_db_url(&url) {
                Ok(target) => Some(target),
                Err(message) => {
                    let origin = if url_from_env {
                        "SAULPOS_DB_URL".to_owned()
                    } else {
                        format!("database.url in the {profile} profile")
                    };
                    problems.push(format!("{origin}: {message}"));
                    None
                }
            }
        };
        if username.trim().is_empty() {
            problems.push(
                "SAULPOS_DB_USERNAME is not set: set it to the database user the server logs in as"
                    .to_owned(),
            );
        }
        let pool_size = number(
            env,
            "SAULPOS_DB_POOL_SIZE",
            file.database.pool_size,
            1..=1000,
            &mut problems,
        );
        let connect_timeout_ms = number(
            env,
            "SAULPOS_DB_CONNECT_TIMEOUT_MS",
            file.database.connect_timeout_ms,
            50..=600_000,
            &mut problems,
        );
        let startup_timeout_seconds = number(
            env,
            "SAULPOS_DB_STARTUP_TIMEOUT_SECONDS",
            file.database.startup_timeout_seconds,
            0..=3600,
            &mut problems,
        );
        let health_timeout_ms = number(
            env,
            "SAULPOS_HEALTH_TIMEOUT_MS",
            file.database.health_timeout_ms,
            10..=60_000,
            &mut problems,
        );

        let ssl_root_cert = env("SAULPOS_DB_SSLROOTCERT")
            .filter(|path| !path.is_empty())
            .or_else(|| {
                target
                    .as_ref()
                    .and_then(|target| target.ssl_root_cert.clone())
            })
            .map(PathBuf::from);
        if let Some(path) = &ssl_root_cert
            && !path.is_file()
        {
            problems.push(format!(
                "SAULPOS_DB_SSLROOTCERT: {} is not a file; point it at the PEM file of the CA that signed the database's certificate",
                path.display()
            ));
        }
        let token_ttl_seconds = number(
            env,
            "SAULPOS_AUTH_TOKEN_TTL_SECONDS",
            file.auth.token_ttl_seconds,
            1..=30 * 24 * 3600,
            &mut problems,
        );
        let argon2 = Argon2Config {
            memory_kib: number(
                env,
                "SAULPOS_AUTH_ARGON2_MEMORY_KIB",
                file.auth.argon2_memory_kib,
                8..=4 * 1024 * 1024,
                &mut problems,
            ),
            iterations: number(
                env,
                "SAULPOS_AUTH_ARGON2_ITERATIONS",
                file.auth.argon2_iterations,
                1..=100,
                &mut problems,
            ),
            parallelism: number(
                env,
                "SAULPOS_AUTH_ARGON2_PARALLELISM",
                file.auth.argon2_parallelism,
                1..=64,
                &mut problems,
            ),
        };
        if argon2.memory_kib < 8 * argon2.parallelism {
            problems.push(format!(
                "SAULPOS_AUTH_ARGON2_MEMORY_KIB: {} KiB is less than 8 per lane ({} lanes); raise it",
                argon2.memory_kib, argon2.parallelism
            ));
        }
        let max_failures = number(
            env,
            "SAULPOS_AUTH_MAX_FAILURES",
            file.auth.max_failures,
            1..=1000,
            &mut problems,
        );
        let lockout_seconds = number(
            env,
            "SAULPOS_AUTH_LOCKOUT_SECONDS",
            file.auth.lockout_seconds,
            1..=86_400,
            &mut problems,
        );
        let max_failures_per_user = number(
            env,
            "SAULPOS_AUTH_MAX_FAILURES_PER_USER",
            file.auth.max_failures_per_user,
            1..=1_000_000,
            &mut problems,
        );
        let max_failures_per_client = number(
            env,
            "SAULPOS_AUTH_MAX_FAILURES_PER_CLIENT",
            file.auth.max_failures_per_client,
            1..=1_000_000,
            &mut problems,
        );
        let max_hashes = number(
            env,
            "SAULPOS_AUTH_MAX_HASHES",
            file.auth.max_hashes,
            0..=1024,
            &mut problems,
        );
        let hash_wait_ms = number(
            env,
            "SAULPOS_AUTH_HASH_WAIT_MS",
            file.auth.hash_wait_ms,
            0..=60_000,
            &mut problems,
        );

        let log_format = match env("SAULPOS_LOG_FORMAT").as_deref() {
            None => file.logging.format,
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                problems.push(format!(
                    "SAULPOS_LOG_FORMAT: {other:?} is not a log format; use text or json"
                ));
                LogFormat::Text
            }
        };
        let metrics_enabled = match env("SAULPOS_METRICS_ENABLED").as_deref() {
            None => file.metrics.enabled,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                problems.push(format!(
                    "SAULPOS_METRICS_ENABLED: {other:?} is neither true nor false; give one of them"
                ));
                true
            }
        };
        let (log_level, _) = overridden("SAULPOS_LOG_LEVEL", file.logging.level);
        if log_level
            .parse::<tracing_subscriber::filter::Targets>()
            .is_err()
        {
            problems.push(format!(
                "SAULPOS_LOG_LEVEL: {log_level:?} is not a log filter; use e.g. info or info,sqlx=warn"
            ));
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let target = target.expect("a missing URL is a problem reported above");
        Ok(Config {
            profile,
            server: ServerConfig {
                address,
                port,
                shutdown_grace: Duration::from_secs(shutdown_grace_seconds),
                header_timeout: Duration::from_secs(header_timeout_seconds),
                request_timeout: Duration::from_secs(request_timeout_seconds),
                max_connections: max_connections as usize,
                trusted_proxies,
            },
            database: DatabaseConfig {
                host: target.host,
                port: target.port,
                name: target.name,
                ssl_mode: target.ssl_mode,
                ssl_root_cert,
                username,
                password,
                pool_size,
                connect_timeout: Duration::from_millis(connect_timeout_ms),
                startup_timeout: Duration::from_secs(startup_timeout_seconds),
                health_timeout: Duration::from_millis(health_timeout_ms),
            },
            show_health_details: file.health.show_details,
            metrics_enabled,
            log_format,
            log_level,
            load_demo_catalogue: file.catalogue.load_demo,
            auth: AuthConfig {
                token_ttl: Duration::from_secs(token_ttl_seconds),
                argon2,
                max_failures,
                lockout: Duration::from_secs(lockout_seconds),
                max_failures_per_user,
                max_failures_per_client,
                max_hashes: match max_hashes {
                    0 => std::thread::available_parallelism().map_or(2, |cores| cores.get()),
                    given => given as usize,
                },
                hash_wait: Duration::from_millis(hash_wait_ms),
            },
            source,
        })
    }

    /// The effective configuration as `key = value` lines, with secrets redacted.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let database = &self.database;
        vec![
            ("profile", self.profile.to_string()),
            ("config_source", self.source.clone()),
            ("server.address", self.server.address.to_string()),
            ("server.port", self.server.port.to_string()),
            (
                "server.shutdown_grace_seconds",
                self.server.shutdown_grace.as_secs().to_string(),
            ),
            (
                "server.header_timeout_seconds",
                self.server.header_timeout.as_secs().to_string(),
            ),
            (
                "server.request_timeout_seconds",
                self.server.request_timeout.as_secs().to_string(),
            ),
            (
                "server.max_connections",
                self.server.max_connections.to_string(),
            ),
            (
                "server.trusted_proxies",
                if self.server.trusted_proxies.is_empty() {
                    "<none>".to_owned()
                } else {
                    self.server
                        .trusted_proxies
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ),
            (
                "database.url",
                format!(
                    "postgres://{}:{}/{}",
                    database.host, database.port, database.name
                ),
            ),
            ("database.sslmode", database.ssl_mode.as_str().to_owned()),
            (
                "database.sslrootcert",
                database
                    .ssl_root_cert
                    .as_ref()
                    .map_or("<built-in roots>".to_owned(), |path| {
                        path.display().to_string()
                    }),
            ),
            ("database.username", database.username.clone()),
            (
                "database.password",
                match database.password {
                    Some(_) => "<redacted>".to_owned(),
                    None => "<not set>".to_owned(),
                },
            ),
            ("database.pool_size", database.pool_size.to_string()),
            (
                "database.connect_timeout_ms",
                database.connect_timeout.as_millis().to_string(),
            ),
            (
                "database.startup_timeout_seconds",
                database.startup_timeout.as_secs().to_string(),
            ),
            (
                "database.health_timeout_ms",
                database.health_timeout.as_millis().to_string(),
            ),
            ("health.show_details", self.show_health_details.to_string()),
            ("metrics.enabled", self.metrics_enabled.to_string()),
            (
                "logging.format",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            ("logging.level", self.log_level.clone()),
            ("catalogue.load_demo", self.load_demo_catalogue.to_string()),
            (
                "auth.token_ttl_seconds",
                self.auth.token_ttl.as_secs().to_string(),
            ),
            (
                "auth.argon2",
                format!(
                    "m={} KiB, t={}, p={}",
                    self.auth.argon2.memory_kib,
                    self.auth.argon2.iterations,
                    self.auth.argon2.parallelism
                ),
            ),
            ("auth.max_failures", self.auth.max_failures.to_string()),
            (
                "auth.lockout_seconds",
                self.auth.lockout.as_secs().to_string(),
            ),
            (
                "auth.max_failures_per_user",
                self.auth.max_failures_per_user.to_string(),
            ),
            (
                "auth.max_failures_per_client",
                self.auth.max_failures_per_client.to_string(),
            ),
            ("auth.max_hashes", self.auth.max_hashes.to_string()),
            (
                "auth.hash_wait_ms",
                self.auth.hash_wait.as_millis().to_string(),
            ),
        ]
    }
}

/// `SAULPOS_TRUSTED_PROXIES`: addresses or CIDR ranges, separated by commas or spaces.
fn parse_proxies(text: &str) -> Result<Vec<IpNet>, String> {
    text.split([',', ' '])
        .filter(|word| !word.is_empty())
        .map(|word| {
            word.parse::<IpNet>()
                .or_else(|_| word.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{word:?} is not an IP address or a CIDR range; give e.g. 10.0.0.5,10.1.0.0/16"
                    )
                })
        })
        .collect()
}

/// Reads a number from `name` if set, else keeps the file's value; out of range is a problem.
fn number<T>(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    from_file: T,
    range: std::ops::RangeInclusive<T>,
    problems: &mut Vec<String>,
) -> T
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let value = match env(name) {
        None => from_file,
        Some(text) => match text.trim().parse::<T>() {
            Ok(value) => value,
            Err(_) => {
                problems.push(format!(
                    "{name}: {text:?} is not a whole number; use one from {} to {}",
                    range.start(),
                    range.end()
                ));
                return from_file;
            }
        },
    };
    if !range.contains(&value) {
        problems.push(format!(
            "{name}: {value} is out of range; use one from {} to {}",
            range.start(),
            range.end()
        ));
    }
    value
}

/// The base file and the profile's file, from a folder or from the copies built in.
fn read_profile_files(
    profile: Profile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<([String; 2], String), String> {
    let folder = match env("SAULPOS_CONFIG_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if !dir.is_dir() {
                return Err(format!(
                    "SAULPOS_CONFIG_DIR: {} is not a folder; point it at the folder holding application.toml",
                    dir.display()
                ));
            }
            Some(dir)
        }
        // A packaged release keeps its profiles in `config/` beside `bin/`.
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("config")))
            .filter(|dir| dir.join("application.toml").is_file()),
    };
    match folder {
        Some(dir) => {
            let read = |name: String| -> Result<String, String> {
                let path = dir.join(&name);
                std::fs::read_to_string(&path)
                    .map_err(|error| format!("cannot read {}: {error}", path.display()))
            };
            let base = read("application.toml".to_owned())?;
            let overlay = read(format!("application-{profile}.toml"))?;
            Ok(([base, overlay], display_path(&dir)))
        }
        None => Ok((
            [
                include_str!("../config/application.toml").to_owned(),
                profile.embedded_file().to_owned(),
            ],
            "built-in profiles".to_owned(),
        )),
    }
}

fn display_path(dir: &Path) -> String {
    dir.display().to_string()
}

/// Lays the profile file over the base file, key by key, and checks the result's shape.
fn merge_files(files: &[String; 2]) -> Result<FileConfig, String> {
    let names = ["application.toml", "the profile file"];
    let mut tables = Vec::new();
    for (text, name) in files.iter().zip(names) {
        let table: toml::Table = text
            .parse()
            .map_err(|error| format!("{name} is not valid TOML: {error}"))?;
        tables.push(table);
    }
    let overlay = tables.pop().expect("two files");
    let mut base = tables.pop().expect("two files");
    merge_tables(&mut base, overlay);
    toml::Value::Table(base)
        .try_into()
        .map_err(|error| format!("the profile files do not fit the expected settings: {error}"))
}

fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge_tables(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Parses `postgres://host:port/database` or the card's `jdbc:postgresql://host:port/database`.
///
/// Credentials do not belong in the URL (they would end up in logs and process listings), so a
/// URL that carries them is refused; its text is then never repeated in the message.
pub fn parse_db_url(url: &str) -> Result<DbTarget, String> {
    let url = url.trim();
    let rest = ["jdbc:postgresql://", "postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| {
            "must start with postgres:// (or jdbc:postgresql://), e.g. postgres://db.internal:5432/saulpos".to_owned()
        })?;
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    if location.contains('@')
        || query
            .split('&')
            .any(|pair| pair.starts_with("password=") || pair.starts_with("user="))
    {
        return Err(
            "credentials do not belong in the URL: remove them and set SAULPOS_DB_USERNAME and SAULPOS_DB_PASSWORD"
                .to_owned(),
        );
    }
    let (authority, name) = location.split_once('/').ok_or_else(|| {
        format!(
            "{url:?} names no database; add it after the port, e.g. postgres://host:5432/saulpos"
        )
    })?;
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "{url:?} names no single database; use postgres://host:5432/saulpos"
        ));
    }
    let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed [ in its host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!(
            "{url:?} names no host; use postgres://host:5432/saulpos"
        ));
    }
    let port = match port_text {
        None => 5432,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{url:?} has port {text:?}; use a number from 1 to 65535"))?,
    };
    let mut ssl_mode = SslMode::Prefer;
    let mut ssl_root_cert = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "disable")) => ssl_mode = SslMode::Disable,
            Some(("sslmode", "prefer")) => ssl_mode = SslMode::Prefer,
            Some(("sslmode", "require")) => ssl_mode = SslMode::Require,
            Some(("sslmode", "verify-ca")) => ssl_mode = SslMode::VerifyCa,
            Some(("sslmode", "verify-full")) => ssl_mode = SslMode::VerifyFull,
            Some(("sslrootcert", path)) if !path.is_empty() => {
                ssl_root_cert = Some(path.to_owned())
            }
            _ => {
                return Err(format!(
                    "{url:?} has the parameter {pair:?}; only sslmode=disable|prefer|require|verify-ca|verify-full and sslrootcert=FILE are understood"
                ));
            }
        }
    }
    Ok(DbTarget {
        host: host.to_owned(),
        port,
        name: name.to_owned(),
        ssl_mode,
        ssl_root_cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_url_forms_name_the_same_database() {
        let expected = DbTarget {
            host: "db.internal".to_owned(),
            port: 6543,
            name: "saulpos".to_owned(),
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
        };
        assert_eq!(
            parse_db_url("postgres://db.internal:6543/saulpos"),
            Ok(expected)
        );
        let jdbc = parse_db_url("jdbc:postgresql://db.internal/saulpos?sslmode=require").unwrap();
        assert_eq!(
            (jdbc.port, jdbc.ssl_mode, jdbc.name.as_str()),
            (5432, SslMode::Require, "saulpos")
        );
        assert_eq!(parse_db_url("postgres://[::1]:5433/x").unwrap().host, "::1");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges_and_anything_else_is_named() {
        let proxies = parse_proxies("127.0.0.1, 10.1.0.0/16,::1").unwrap();
        let shown: Vec<String> = proxies.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.1.0.0/16", "::1/128"]);
        assert!(parse_proxies("").unwrap().is_empty());
        let message = parse_proxies("10.0.0.1,proxy.internal").unwrap_err();
        assert!(
            message.contains("\"proxy.internal\" is not an IP address"),
            "{message}"
        );
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_repeating_them() {
        let message = parse_db_url("postgres://bob:hunter2@db:5432/x").unwrap_err();
        assert!(message.contains("SAULPOS_DB_PASSWORD"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
