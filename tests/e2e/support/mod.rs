//! What the end-to-end tests share: a database of their own, the server as a process, HTTP,
//! and a TCP proxy that can cut the server off from PostgreSQL.

mod clusters;
mod deploying;
pub mod hostile;
mod keys;
mod releases;
mod ssh_hosts;

pub use clusters::*;
pub use deploying::*;
pub use keys::*;
pub use releases::{release_1_0_0, release_1_2_0, release_with_errors, release_with_latency};
pub use ssh_hosts::*;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

const HOW_TO_START_POSTGRES: &str = "these tests need PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth); start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` or install it with `apt-get install postgresql`";

/// Runs `psql` against `database` and returns its unaligned output; panics with psql's message.
pub fn psql(database: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            PG_HOST,
            "-U",
            "postgres",
        ])
        .arg("-d")
        // A conninfo string, so that any database name (spaces, quotes, `=`) means itself.
        .arg(format!(
            "dbname='{}'",
            database.replace('\\', "\\\\").replace('\'', "\\'")
        ))
        .arg("-c")
        .arg(sql)
        .output()
        .unwrap_or_else(|error| panic!("cannot run psql ({error}): {HOW_TO_START_POSTGRES}"));
    assert!(
        output.status.success(),
        "psql failed on {sql:?}: {}\n{HOW_TO_START_POSTGRES}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .trim_end()
        .to_owned()
}

/// A database made for one test and dropped when the test ends.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub fn new(purpose: &str) -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "e2e_{purpose}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        TestDb::named(&name)
    }

    /// A database with exactly this name (any characters).
    pub fn named(name: &str) -> TestDb {
        psql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_identifier(name)),
        );
        TestDb {
            name: name.to_owned(),
        }
    }

    pub fn query(&self, sql: &str) -> String {
        psql(&self.name, sql)
    }

    pub fn url(&self) -> String {
        format!("postgres://{PG_HOST}:{PG_PORT}/{}", self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The database, and those restores of it kept aside (`<name>_before_<time>`).
        let kept = Command::new("psql")
            .args([
                "-X", "-q", "-At", "-h", PG_HOST, "-U", "postgres", "-d", "postgres", "-c",
            ])
            .arg(format!(
                "SELECT datname FROM pg_database WHERE starts_with(datname, '{}_before_')",
                self.name.replace('\'', "''")
            ))
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        for name in std::iter::once(self.name.as_str()).chain(kept.lines()) {
            let _ = Command::new("psql")
                .args([
                    "-X", "-q", "-h", PG_HOST, "-U", "postgres", "-d", "postgres", "-c",
                ])
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_identifier(name)
                ))
                .output();
        }
    }
}

/// An SQL identifier in double quotes.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server binary, with every `SAULPOS_*` variable of the test's own environment removed.
pub fn server_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_saulpos-server-under-test"));
    for (name, _) in std::env::vars() {
        if name.starts_with("SAULPOS_") || name.starts_with("PG") {
            command.env_remove(name);
        }
    }
    command
}

/// A running server with its output going to files in its own folder.
pub struct Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server on a free port with `envs`, and waits until liveness answers.
    pub fn start(envs: &[(&str, &str)]) -> Server {
        let server = Server::spawn(envs);
        server.wait_until_live();
        server
    }

    /// Starts the server without waiting.
    pub fn spawn(envs: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = server_command();
        command
            .env("SAULPOS_SERVER_ADDRESS", "127.0.0.1")
            .env("SAULPOS_SERVER_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        for (name, value) in envs {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        Server { child, port, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_until_live(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = get(&self.url("/actuator/health/liveness"))
                && response.0 == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "the server did not come up within 30 s; its output:\n{}",
            self.output()
        );
    }

    /// Everything the server printed so far, stdout then stderr.
    pub fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`; returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the server did not exit within {limit:?}; its output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GET: the status and the body.
pub fn get(url: &str) -> Result<(u16, String), ureq::Error> {
    let mut response = agent().get(url).call()?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// POST with a JSON body: the status and the body parsed as JSON.
pub fn post_json(url: &str, body: &str) -> (u16, serde_json::Value) {
    json_of(
        agent()
            .post(url)
            .header("content-type", "application/json")
            .send(body)
            .unwrap(),
    )
}

/// The status and the body parsed as JSON.
fn json_of(mut response: ureq::http::Response<ureq::Body>) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// Logs in at the server at `base` (http://host:port); the bearer token.
pub fn token_for(base: &str, username: &str, password: &str) -> String {
    let body = serde_json::json!({"username": username, "password": password}).to_string();
    let (status, answer) = post_json(&format!("{base}/api/v1/auth/login"), &body);
    assert_eq!(status, 200, "login as {username}: {answer}");
    answer["token"].as_str().unwrap().to_owned()
}

/// A token of dev's demo cashier.
pub fn demo_token(base: &str) -> String {
    token_for(base, "demo-cashier", "demo-cashier-password")
}

/// GET with a bearer token; the body parsed as JSON.
pub fn get_json_as(url: &str, token: &str) -> (u16, serde_json::Value) {
    json_of(
        agent()
            .get(url)
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap(),
    )
}

/// POST a JSON body with a bearer token; the body parsed as JSON.
pub fn post_json_as(url: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    json_of(
        agent()
            .post(url)
            .header("content-type", "application/json")
            .header("authorization", &format!("Bearer {token}"))
            .send(body)
            .unwrap(),
    )
}

/// GET and parse the body as JSON.
pub fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(url).unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")),
    )
}

/// A TCP proxy to PostgreSQL that a test can cut and restore.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (accept_open, accept_connections) = (open.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accept_open.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect((PG_HOST, PG_PORT)) else {
                    continue;
                };
                let mut tracked = accept_connections.lock().unwrap();
                tracked.push(client.try_clone().unwrap());
                tracked.push(upstream.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Proxy {
            port,
            open,
            connections,
        }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if to.write_all(&buffer[..read]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Polls `check` until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The process output as text, for messages.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The `origin` remote of the snapshot clones.
pub const SOURCE_URL: &str = "https://git.example.invalid/saulpos/saulpos.git";

/// A fresh git repository at `dest` holding the workspace's files as they are now (tracked and
/// untracked, less what git ignores), in one commit with a fixed date. A `target/` folder left
/// there by an earlier run is kept, so builds stay incremental.
pub fn snapshot_workspace(dest: &Path) {
    if dest.exists() {
        for entry in std::fs::read_dir(dest).unwrap().flatten() {
            if entry.file_name() != "target" {
                let path = entry.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
    }
    std::fs::create_dir_all(dest).unwrap();
    let root = workspace_root();
    let listing = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", text(&listing));
    for name in listing
        .stdout
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
    {
        let relative = Path::new(std::str::from_utf8(name).unwrap());
        let source = root.join(relative);
        if !source.is_file() {
            continue; // deleted in the work tree but not yet in the index
        }
        let target = dest.join(relative);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&source, &target).unwrap();
    }
    git(dest, &["init", "-q", "-b", "main"]);
    // Where the source lives, as a real clone would say (the image's source annotation).
    git(dest, &["remote", "add", "origin", SOURCE_URL]);
    git(dest, &["add", "-A"]);
    git(
        dest,
        &["commit", "-q", "-m", "snapshot for the end-to-end tests"],
    );
}

/// Runs git in `dir` with a fixed identity and date; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", text(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// `cargo xtask <args>` in the workspace at `dir`, as a user would type it.
pub fn xtask_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.arg("xtask").args(args).current_dir(dir);
    for name in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
        "SOURCE_DATE_EPOCH",
    ] {
        command.env_remove(name);
    }
    command
}

/// Runs `cargo xtask <args>` in `dir` and returns what it did.
pub fn xtask(dir: &Path, args: &[&str]) -> Output {
    xtask_command(dir, args).output().unwrap()
}

/// Runs `cargo xtask <args>` in `dir`, which must succeed: what it did, and its whole output
/// (stdout then stderr). On failure it panics with the command, its folder and everything it
/// printed.
#[track_caller]
fn xtask_succeeded(dir: &Path, args: &[&str]) -> (Output, String) {
    let output = xtask(dir, args);
    let printed = text(&output);
    assert!(
        output.status.success(),
        "`cargo xtask {}` in {} failed ({}):\n{printed}",
        args.join(" "),
        dir.display(),
        output.status
    );
    (output, printed)
}

/// Runs `cargo xtask <args>` in `dir`, which must succeed; its whole output.
#[track_caller]
pub fn xtask_ok(dir: &Path, args: &[&str]) -> String {
    xtask_succeeded(dir, args).1
}

/// Runs `cargo xtask <args>` in `dir`, which must succeed, and reads its standard output as one
/// JSON object; panics with the command, its folder and its whole output otherwise.
#[track_caller]
pub fn xtask_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let (output, printed) = xtask_succeeded(dir, args);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "`cargo xtask {}` in {} printed no JSON object on stdout ({error}):\n{printed}",
            args.join(" "),
            dir.display()
        )
    })
}

/// Runs `cargo xtask <args>` in `dir`, which must fail; its whole output. If it succeeds, it
/// panics with the command, its folder and everything it printed.
#[track_caller]
pub fn xtask_fails(dir: &Path, args: &[&str]) -> String {
    let output = xtask(dir, args);
    let printed = text(&output);
    assert!(
        !output.status.success(),
        "`cargo xtask {}` in {} succeeded, but should have failed:\n{printed}",
        args.join(" "),
        dir.display()
    );
    printed
}

/// Runs a plain tool (`tar`, `sha256sum`, ...) in `dir`.
pub fn tool(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

/// The snapshot clone that tests run `cargo xtask` in (its own target folder, so no test waits
/// on the build lock of the `cargo test` running it). Package runs in it take `lock`, because
/// some tests change its tree.
pub struct SharedClone {
    pub dir: PathBuf,
    lock: Mutex<()>,
}

pub fn clone() -> &'static SharedClone {
    static CLONE: OnceLock<SharedClone> = OnceLock::new();
    CLONE.get_or_init(|| {
        let dir = workspace_root().join("target/e2e/release-clone");
        snapshot_workspace(&dir);
        SharedClone {
            dir,
            lock: Mutex::new(()),
        }
    })
}

pub fn lock(clone: &SharedClone) -> MutexGuard<'_, ()> {
    clone
        .lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The smoke user `write_env` creates and names in saulpos.env.
pub const SMOKE_USER: &str = "smoke";
pub const SMOKE_PASSWORD: &str = "smoke-Pa55word!";

/// `saulpos-server user <args>` against `db` (staging), `stdin` as its standard input.
pub fn user_command(db: &TestDb, args: &[&str], stdin: &str) -> Output {
    user_command_with(db, args, stdin, &[])
}

/// `user_command` with more settings (`SAULPOS_*` variables) in its environment.
pub fn user_command_with(db: &TestDb, args: &[&str], stdin: &str, envs: &[(&str, &str)]) -> Output {
    let mut child = server_command()
        .arg("user")
        .args(args)
        .env("SAULPOS_PROFILE", "staging")
        .env("SAULPOS_DB_URL", db.url())
        .env("SAULPOS_DB_USERNAME", "postgres")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    // A command refused on its arguments exits before it reads: its answer is what counts.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Creates the smoke user in `db` unless it is there.
pub fn add_smoke_user(db: &TestDb) {
    let output = user_command(
        db,
        &["add", SMOKE_USER, "--role", "cashier"],
        &format!("{SMOKE_PASSWORD}\n"),
    );
    let message = text(&output);
    assert!(
        output.status.success() || message.contains("user smoke exists"),
        "{message}"
    );
}

/// Writes an environment folder's saulpos.env (0600) for `db`, listening on 127.0.0.1:`port`,
/// with no password (trust, as the test PostgreSQL has it), and the smoke user, which it creates.
pub fn write_env(installed: &Path, db: &TestDb, port: u16) {
    use std::os::unix::fs::PermissionsExt;
    add_smoke_user(db);
    std::fs::write(
        installed.join("saulpos.env"),
        format!(
            "SAULPOS_DB_URL={}\nSAULPOS_DB_USERNAME=postgres\nSAULPOS_SERVER_ADDRESS=127.0.0.1\nSAULPOS_SERVER_PORT={port}\nSAULPOS_SMOKE_USERNAME={SMOKE_USER}\nSAULPOS_SMOKE_PASSWORD={SMOKE_PASSWORD}\n",
            db.url()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        installed.join("saulpos.env"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// A destination folder with the environment folder of `env` configured for a database on a
/// free port (its saulpos.env, as `write_env` writes it); the server run.sh starts there is
/// stopped at the end.
pub struct Configured {
    // First: dropped, so the server stopped, before the folder goes.
    _stop: StopServers,
    pub dest: tempfile::TempDir,
    pub installed: PathBuf,
    pub url: String,
}

impl Configured {
    pub fn new(env: &str, db: &TestDb) -> Configured {
        let dest = tempfile::tempdir().unwrap();
        let installed = dest.path().join(format!("saulpos-{env}"));
        std::fs::create_dir_all(&installed).unwrap();
        let port = free_port();
        write_env(&installed, db, port);
        Configured {
            _stop: StopServers(vec![installed.clone()]),
            dest,
            installed,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn dest_arg(&self) -> &str {
        self.dest.path().to_str().unwrap()
    }
}

/// Stops the servers `run.sh start` left running in these environment folders, whatever happens.
pub struct StopServers(pub Vec<PathBuf>);

impl Drop for StopServers {
    fn drop(&mut self) {
        for installed in &self.0 {
            let _ = Command::new(installed.join("run.sh")).arg("stop").output();
        }
    }
}
