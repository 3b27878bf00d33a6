//! Login, tokens, lockout and the `user` commands; the smoke checks' login; TLS from the server
//! to PostgreSQL, and `health` and `smoke` over https through a TLS front.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::xtask_json;
use crate::support::{
    SMOKE_PASSWORD, SMOKE_USER, Server, TestDb, add_smoke_user, clone, eventually, free_port, get,
    get_json, server_command, text, user_command, xtask,
};

pub const PASSWORD: &str = "Cashier-pa55 with spaces & quotes\"";

/// A staging server on `db` with `extra` settings, its database holding user `ann` (cashier).
pub fn staging_server(db: &TestDb, extra: &[(&str, &str)]) -> Server {
    let added = user_command(
        db,
        &["add", "ann", "--role", "cashier"],
        &format!("{PASSWORD}\n"),
    );
    assert!(added.status.success(), "{}", text(&added));
    assert_eq!(
        String::from_utf8_lossy(&added.stdout),
        "added user ann (cashier)\n"
    );
    let url = db.url();
    let mut envs = vec![
        ("SAULPOS_PROFILE", "staging"),
        ("SAULPOS_DB_URL", url.as_str()),
        ("SAULPOS_DB_USERNAME", "postgres"),
    ];
    envs.extend_from_slice(extra);
    Server::start(&envs)
}

/// A request with headers; the status, the headers asked for, and the body as JSON (or null).
pub fn call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = match (method, body) {
        ("GET", _) => {
            let mut request = agent.get(url);
            if let Some(token) = token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            request.call()
        }
        (_, body) => {
            let mut request = agent.post(url);
            if let Some(token) = token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            match body {
                Some(body) => request.send_json(body),
                None => request.send_empty(),
            }
        }
    }
    .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let text = response.into_body().read_to_string().unwrap_or_default();
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// A staging server on `db`, whose database holds the smoke user.
fn smoke_ready_server(db: &TestDb) -> Server {
    add_smoke_user(db);
    let url = db.url();
    Server::start(&[
        ("SAULPOS_PROFILE", "staging"),
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_DB_USERNAME", "postgres"),
    ])
}

pub fn login(server: &Server, username: &str, password: &str) -> (u16, Option<String>, Value) {
    call(
        "POST",
        &server.url("/api/v1/auth/login"),
        None,
        Some(json!({"username": username, "password": password})),
    )
}

#[test]
fn login_gives_a_token_that_opens_the_api_until_logout_or_expiry() {
    let db = TestDb::new("login");
    let server = staging_server(&db, &[("SAULPOS_AUTH_TOKEN_TTL_SECONDS", "2")]);
    let product = server.url("/api/v1/products/NOPE-1");

    // Without a token: 401, the actuator stays open.
    let (status, _, body) = call("GET", &product, None, None);
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(get_json(&server.url("/actuator/health")).0, 200);
    assert_eq!(call("GET", &product, Some("0123abcd"), None).0, 401);

    // Unknown user and wrong password: the same status and body.
    let unknown = login(&server, "nobody", PASSWORD);
    let wrong = login(&server, "ann", "not the password");
    assert_eq!(unknown.0, 401);
    assert_eq!(unknown, wrong);

    let (status, _, issued) = login(&server, "ann", PASSWORD);
    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["tokenType"], "Bearer");
    assert_eq!(issued["role"], "cashier");
    assert_eq!(issued["expiresIn"], 2);
    assert!(issued["expiresAt"].as_str().unwrap().ends_with('Z'));
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 64);
    // Stored only as its hash.
    assert_eq!(
        db.query(&format!(
            "SELECT count(*) FROM auth_token WHERE token_sha256 = sha256('{token}'::bytea)"
        )),
        "1"
    );
    assert!(
        !db.query("SELECT encode(token_sha256, 'hex') FROM auth_token")
            .contains(&token)
    );
    assert!(
        !db.query("SELECT password_hash FROM app_user")
            .contains(PASSWORD)
    );
    assert!(
        db.query("SELECT password_hash FROM app_user")
            .starts_with("$argon2id$")
    );

    let (status, _, body) = call("GET", &product, Some(&token), None);
    assert_eq!(status, 404, "{body}");
    let cart = json!({"items": [{"sku": "NOPE-1", "quantity": 1}]});
    let (status, _, _) = call(
        "POST",
        &server.url("/api/v1/checkout/dry-run"),
        Some(&token),
        Some(cart),
    );
    assert_eq!(status, 422);

    // Logout ends it.
    let logout = server.url("/api/v1/auth/logout");
    assert_eq!(call("POST", &logout, Some(&token), None).0, 204);
    assert_eq!(call("GET", &product, Some(&token), None).0, 401);
    assert_eq!(call("POST", &logout, Some(&token), None).0, 401);

    // A token that expires is refused after its time.
    let (_, _, issued) = login(&server, "ann", PASSWORD);
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(call("GET", &product, Some(&token), None).0, 404);
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _, body) = call("GET", &product, Some(&token), None);
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    assert!(!server.output().contains(PASSWORD));
    assert!(!server.output().contains(&token));
}

#[test]
fn repeated_failures_make_a_user_wait_a_while_and_success_resets() {
    let db = TestDb::new("lockout");
    let server = staging_server(
        &db,
        &[
            ("SAULPOS_AUTH_MAX_FAILURES", "3"),
            ("SAULPOS_AUTH_LOCKOUT_SECONDS", "2"),
        ],
    );
    // Two failures, then a success: the count starts again.
    for _ in 0..2 {
        assert_eq!(login(&server, "ann", "wrong").0, 401);
    }
    assert_eq!(login(&server, "ann", PASSWORD).0, 200);
    for _ in 0..2 {
        assert_eq!(login(&server, "ann", "wrong").0, 401);
    }
    // The third failure in a row starts the wait: even the right password waits.
    assert_eq!(login(&server, "ann", "wrong").0, 401);
    let (status, retry_after, body) = login(&server, "ann", PASSWORD);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&seconds), "{seconds}");
    std::thread::sleep(Duration::from_millis(2200));
    // One more failure after the wait doubles it.
    assert_eq!(login(&server, "ann", "wrong").0, 401);
    let (status, retry_after, _) = login(&server, "ann", PASSWORD);
    assert_eq!(status, 429);
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((3..=4).contains(&seconds), "{seconds}");
    std::thread::sleep(Duration::from_millis(4200));
    assert_eq!(login(&server, "ann", PASSWORD).0, 200, "the wait ended");
    assert!(
        server
            .output()
            .contains("logins of this user from this address now wait after repeated failures"),
        "{}",
        server.output()
    );
}

#[test]
fn user_commands_add_list_passwd_and_disable_with_the_password_never_an_argument() {
    let db = TestDb::new("users");
    let server = staging_server(&db, &[]);
    let run = |args: &[&str], stdin: &str| {
        let output = user_command(&db, args, stdin);
        (output.status.code(), text(&output))
    };
    let (code, message) = run(&["add", "ann", "--role", "cashier"], "another-one\n");
    assert_eq!(code, Some(1));
    assert!(
        message.contains("user ann exists: use `saulpos-server user passwd ann`"),
        "{message}"
    );
    let (code, message) = run(&["add", "bob", "--role", "owner"], "long-enough\n");
    assert_eq!(code, Some(2));
    assert!(message.contains("unknown role \"owner\""), "{message}");
    let (code, message) = run(&["add", "bob", "--role", "manager"], "short\n");
    assert_eq!(code, Some(1));
    assert!(message.contains("shorter than 8 characters"), "{message}");
    let (code, message) = run(&["add", "Bob!", "--role", "manager"], "long-enough\n");
    assert_eq!(code, Some(1));
    assert!(message.contains("is not a user name"), "{message}");
    let (code, message) = run(&["add", "bob", "--role", "manager"], "bob's password\n");
    assert_eq!(
        (code, message.as_str()),
        (Some(0), "added user bob (manager)\n")
    );

    let (code, listed) = run(&["list", "--json"], "");
    assert_eq!(code, Some(0));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<(&str, &str, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|user| {
            (
                user["username"].as_str().unwrap(),
                user["role"].as_str().unwrap(),
                user["disabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("ann", "cashier", false), ("bob", "manager", false)]
    );
    let (_, table) = run(&["list"], "");
    assert!(
        table.contains("bob                      manager  enabled"),
        "{table}"
    );

    // A new password: the old one and the tokens made with it end.
    let (_, _, issued) = login(&server, "bob", "bob's password");
    let token = issued["token"].as_str().unwrap().to_owned();
    let (code, message) = run(&["passwd", "bob"], "bob's new password\r\n");
    assert_eq!(code, Some(0), "{message}");
    assert_eq!(login(&server, "bob", "bob's password").0, 401);
    let product = server.url("/api/v1/products/X");
    assert_eq!(call("GET", &product, Some(&token), None).0, 401);
    let (status, _, issued) = login(&server, "bob", "bob's new password");
    assert_eq!(status, 200);
    let token = issued["token"].as_str().unwrap().to_owned();

    // Disabled: no login, and the token in hand stops working.
    let (code, message) = run(&["disable", "bob"], "");
    assert_eq!(
        (code, message.as_str()),
        (Some(0), "disabled bob; their tokens ended\n")
    );
    assert_eq!(login(&server, "bob", "bob's new password").0, 401);
    assert_eq!(call("GET", &product, Some(&token), None).0, 401);
    let (code, message) = run(&["disable", "carol"], "");
    assert_eq!(code, Some(1));
    assert!(message.contains("no user carol"), "{message}");
    let (_, table) = run(&["list"], "");
    assert!(
        table.contains("bob                      manager  disabled"),
        "{table}"
    );
}

#[test]
fn smoke_logs_in_as_the_smoke_user_and_a_wrong_password_fails_that_check_without_showing_it() {
    let db = TestDb::new("smokeauth");
    let server = smoke_ready_server(&db);
    let base = server.url("");
    let work = tempfile::tempdir().unwrap();
    let env_file = work.path().join("saulpos.env");
    fs::write(
        &env_file,
        format!("SAULPOS_SMOKE_USERNAME={SMOKE_USER}\nSAULPOS_SMOKE_PASSWORD='{SMOKE_PASSWORD}'\n"),
    )
    .unwrap();
    let passed = xtask(
        &clone().dir,
        &[
            "smoke",
            "--url",
            &base,
            "--env-file",
            env_file.to_str().unwrap(),
            "--json",
        ],
    );
    let message = text(&passed);
    assert!(passed.status.success(), "{message}");
    for line in [
        "PASS login",
        "200 as smoke (cashier)",
        "PASS product lookup (404 path)",
        "PASS checkout dry-run",
        "PASS logout",
        "all 6 smoke checks passed",
    ] {
        assert!(message.contains(line), "{line}: {message}");
    }
    assert!(!message.contains(SMOKE_PASSWORD), "{message}");
    assert_eq!(
        db.query("SELECT count(*) FROM auth_token"),
        "0",
        "logout ended the token"
    );

    // From the environment, with a wrong password: the login check fails and says so.
    let mut command = crate::support::xtask_command(&clone().dir, &["smoke", "--url", &base]);
    command
        .env("SAULPOS_SMOKE_USERNAME", SMOKE_USER)
        .env("SAULPOS_SMOKE_PASSWORD", "Wr0ng-password-here");
    let failed = command.output().unwrap();
    let message = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{message}");
    assert!(
        message.contains("FAIL login")
            && message.contains("401 for smoke: wrong SAULPOS_SMOKE_PASSWORD"),
        "{message}"
    );
    assert!(message.contains("smoke checks failed"), "{message}");
    assert!(!message.contains("Wr0ng-password-here"), "{message}");

    // No smoke user at all outside dev: named, with the fix.
    let mut command = crate::support::xtask_command(&clone().dir, &["smoke", "--url", &base]);
    command
        .env_remove("SAULPOS_SMOKE_USERNAME")
        .env_remove("SAULPOS_SMOKE_PASSWORD");
    let missing = command.output().unwrap();
    let message = text(&missing);
    assert_eq!(missing.status.code(), Some(1), "{message}");
    assert!(
        message.contains("no smoke user: set SAULPOS_SMOKE_USERNAME"),
        "{message}"
    );
}

/// The server's startup against `db` with `url_suffix` and `extra`, to its end or to UP.
fn start_with_tls(db: &TestDb, host: &str, query: &str, extra: &[(&str, &str)]) -> Server {
    let url = format!("postgres://{host}:5432/{}?{query}", db.name);
    let mut envs = vec![
        ("SAULPOS_PROFILE", "staging"),
        ("SAULPOS_DB_URL", url.as_str()),
        ("SAULPOS_DB_USERNAME", "postgres"),
    ];
    envs.extend_from_slice(extra);
    Server::spawn(&envs)
}

fn ssl_in_use(db: &TestDb) -> String {
    db.query(
        "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'saulpos-server' AND a.datname = current_database()",
    )
}

#[test]
fn the_server_speaks_tls_to_postgres_as_sslmode_says_and_a_certificate_problem_stops_it_once() {
    let db = TestDb::new("tls");
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    for (host, query, extra) in [
        ("127.0.0.1", "sslmode=require", vec![]),
        (
            "127.0.0.1",
            "sslmode=verify-ca",
            vec![("SAULPOS_DB_SSLROOTCERT", snakeoil)],
        ),
        (
            "localhost",
            "sslmode=verify-full",
            vec![("SAULPOS_DB_SSLROOTCERT", snakeoil)],
        ),
        (
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={snakeoil}"),
            vec![],
        ),
    ] {
        let server = start_with_tls(&db, host, query, &extra);
        let up = eventually(Duration::from_secs(20), || {
            get(&server.url("/actuator/health")).is_ok_and(|(status, _)| status == 200)
        });
        assert!(up, "{query}: {}", server.output());
        let (in_use, total) = ssl_in_use(&db)
            .split_once('/')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert!(
            total != "0" && in_use == total,
            "{query}: {in_use}/{total} over TLS"
        );
        assert!(
            server.output().contains(&format!(
                "database.sslmode = {}",
                query
                    .trim_start_matches("sslmode=")
                    .split('&')
                    .next()
                    .unwrap()
            )),
            "{}",
            server.output()
        );
    }

    // verify-full with a host the certificate does not name, and verify-ca with another CA:
    // one clear error, at once, not retried as if the database were down.
    let work = tempfile::tempdir().unwrap();
    let (other_ca, _) = make_certificate(work.path(), "other-ca");
    for (host, query, extra, expected) in [
        (
            "127.0.0.1",
            "sslmode=verify-full",
            vec![("SAULPOS_DB_SSLROOTCERT", snakeoil.to_owned())],
            "TLS to the database at 127.0.0.1:5432 failed (sslmode=verify-full",
        ),
        (
            "127.0.0.1",
            "sslmode=verify-ca",
            vec![(
                "SAULPOS_DB_SSLROOTCERT",
                other_ca.to_string_lossy().into_owned(),
            )],
            "TLS to the database at 127.0.0.1:5432 failed (sslmode=verify-ca",
        ),
    ] {
        let extra: Vec<(&str, &str)> = extra.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let started = Instant::now();
        let mut server = start_with_tls(&db, host, query, &extra);
        let code = server.wait(Duration::from_secs(20));
        let took = started.elapsed();
        let output = server.output();
        assert_eq!(code, Some(1), "{query}: {output}");
        assert!(output.contains(expected), "{query}: {output}");
        assert!(
            !output.contains("retrying"),
            "{query}: a certificate problem is not retried: {output}"
        );
        assert!(took < Duration::from_secs(10), "{query}: took {took:?}");
    }

    // A missing root certificate file is a configuration problem, named.
    let output = server_command()
        .arg("--check-config")
        .env("SAULPOS_PROFILE", "staging")
        .env(
            "SAULPOS_DB_URL",
            format!("postgres://127.0.0.1:5432/{}?sslmode=verify-ca", db.name),
        )
        .env("SAULPOS_DB_USERNAME", "postgres")
        .env("SAULPOS_DB_SSLROOTCERT", "/nonexistent/ca.pem")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("SAULPOS_DB_SSLROOTCERT: /nonexistent/ca.pem is not a file"),
        "{}",
        text(&output)
    );
}

/// A throwaway self-signed certificate for localhost and 127.0.0.1: (cert, key).
fn make_certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (.ci/run installs it)");
    assert!(output.status.success(), "{}", text(&output));
    (cert, key)
}

/// socat terminating TLS on a free port in front of `target_port`.
struct TlsFront {
    child: Child,
    port: u16,
}

impl TlsFront {
    fn start(cert: &Path, key: &Path, target_port: u16) -> TlsFront {
        let port = free_port();
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{target_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (.ci/run installs it)");
        assert!(eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }));
        TlsFront { child, port }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn health_and_smoke_check_a_server_behind_https_with_cacert_and_name_a_certificate_problem() {
    let db = TestDb::new("https");
    let server = smoke_ready_server(&db);
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = make_certificate(work.path(), "front");
    let front = TlsFront::start(&cert, &key, server.port);
    let https = format!("https://127.0.0.1:{}", front.port);
    let cacert = cert.to_str().unwrap();

    let summary: Value = xtask_json(
        &clone().dir,
        &[
            "health",
            "--url",
            &https,
            "--cacert",
            cacert,
            "--timeout",
            "20s",
            "--json",
        ],
    );
    assert_eq!(summary["status"], "UP");

    let mut command = crate::support::xtask_command(
        &clone().dir,
        &["smoke", "--url", &https, "--cacert", cacert],
    );
    command
        .env("SAULPOS_SMOKE_USERNAME", SMOKE_USER)
        .env("SAULPOS_SMOKE_PASSWORD", SMOKE_PASSWORD);
    let smoked = command.output().unwrap();
    let message = text(&smoked);
    assert!(smoked.status.success(), "{message}");
    assert!(message.contains("all 6 smoke checks passed"), "{message}");
    assert!(!message.contains(SMOKE_PASSWORD), "{message}");

    // Without --cacert the throwaway certificate is not trusted: one clear line.
    let refused = xtask(
        &clone().dir,
        &["health", "--url", &https, "--timeout", "2s"],
    );
    let message = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains("the TLS certificate does not check out")
            && message.contains("give --cacert FILE"),
        "{message}"
    );
    let refused = xtask(
        &clone().dir,
        &[
            "smoke",
            "--url",
            &format!("http://127.0.0.1:{}", server.port),
            "--cacert",
            cacert,
        ],
    );
    assert!(
        text(&refused).contains("--cacert") && text(&refused).contains("is for https:// URLs"),
        "{}",
        text(&refused)
    );
}
