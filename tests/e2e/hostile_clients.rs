//! Clients as an attacker on the same network drives them, each test named after the attack it
//! pins down: parallel and spread-out password guessing, lockouts used to deny service, forged
//! forwarded addresses, login storms, half-sent requests, a logout raced by requests in flight,
//! and control characters in names.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::{PASSWORD, call, login, staging_server};
use crate::support::{Server, TestDb, text, user_command_with};

/// A login sent from the loopback address `from` (127.0.0.2, ...) with curl, the body on its
/// standard input, and `headers` added; the status.
fn login_from(
    server: &Server,
    from: &str,
    username: &str,
    password: &str,
    headers: &[&str],
) -> u16 {
    let mut command = Command::new("curl");
    command
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            from,
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    for header in headers {
        command.args(["-H", header]);
    }
    let mut child = command
        .arg(server.url("/api/v1/auth/login"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("these tests need curl (apt-get install curl)");
    let body = json!({"username": username, "password": password}).to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let status = String::from_utf8_lossy(&output.stdout).to_string();
    status
        .parse()
        .unwrap_or_else(|_| panic!("curl from {from} printed {status:?}"))
}

/// The statuses of `count` logins sent all at once, each from its own thread.
fn parallel_logins(server: &Server, count: usize, username: &str, password: &str) -> Vec<u16> {
    let start = Arc::new(std::sync::Barrier::new(count));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|_| {
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    start.wait();
                    login(server, username, password).0
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    })
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|found| **found == status).count()
}

#[test]
fn parallel_guesses_get_no_more_tries_than_guesses_one_at_a_time() {
    let db = TestDb::new("parallel_guesses");
    let server = staging_server(&db, &[]);
    // 16 guesses at once, where one at a time gives 401 five times, then 429.
    let statuses = parallel_logins(&server, 16, "ann", "not the password");
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 11, "{statuses:?}");
    // The right password now waits too.
    assert_eq!(login(&server, "ann", PASSWORD).0, 429);
}

#[test]
fn a_restart_or_a_second_replica_gives_a_guesser_no_new_tries() {
    let db = TestDb::new("replica_guesses");
    let mut first = staging_server(&db, &[]);
    let url = db.url();
    let second = Server::start(&[
        ("SAULPOS_PROFILE", "staging"),
        ("SAULPOS_DB_URL", url.as_str()),
        ("SAULPOS_DB_USERNAME", "postgres"),
    ]);
    for server in [&first, &second, &first, &second, &first] {
        assert_eq!(login(server, "ann", "guess").0, 401);
    }
    assert_eq!(
        login(&second, "ann", PASSWORD).0,
        429,
        "counted across replicas"
    );
    first.terminate();
    assert_eq!(first.wait(Duration::from_secs(30)), Some(0));
    let restarted = Server::start(&[
        ("SAULPOS_PROFILE", "staging"),
        ("SAULPOS_DB_URL", url.as_str()),
        ("SAULPOS_DB_USERNAME", "postgres"),
    ]);
    assert_eq!(
        login(&restarted, "ann", PASSWORD).0,
        429,
        "kept over a restart"
    );
}

#[test]
fn guessing_from_one_address_does_not_lock_the_user_out_everywhere() {
    let db = TestDb::new("lockout_dos");
    let server = staging_server(&db, &[]);
    // An attacker at 127.0.0.2 fails ann five times (say ann is the smoke user the deploy gate
    // logs in as): ann from 127.0.0.2 waits, ann from 127.0.0.3 and 127.0.0.1 does not.
    for _ in 0..5 {
        assert_eq!(login_from(&server, "127.0.0.2", "ann", "guess", &[]), 401);
    }
    assert_eq!(login_from(&server, "127.0.0.2", "ann", PASSWORD, &[]), 429);
    assert_eq!(login_from(&server, "127.0.0.3", "ann", PASSWORD, &[]), 200);
    assert_eq!(login(&server, "ann", PASSWORD).0, 200);
    // 20 failures for made-up names from one address lock nobody out (behind a proxy every
    // client shares one address).
    for index in 0..20 {
        assert_eq!(login(&server, &format!("made-up-{index}"), "x").0, 401);
    }
    assert_eq!(login(&server, "ann", PASSWORD).0, 200);
}

#[test]
fn an_address_spraying_names_meets_its_ceiling_and_its_own_login_does_not_reset_it() {
    let db = TestDb::new("spray");
    let server = staging_server(&db, &[("SAULPOS_AUTH_MAX_FAILURES_PER_CLIENT", "6")]);
    for index in 0..5 {
        assert_eq!(
            login_from(&server, "127.0.0.2", &format!("spray-{index}"), "x", &[]),
            401
        );
    }
    // The attacker's own account logs in from the same address: the count stays.
    assert_eq!(login_from(&server, "127.0.0.2", "ann", PASSWORD, &[]), 200);
    assert_eq!(login_from(&server, "127.0.0.2", "spray-5", "x", &[]), 401);
    assert_eq!(login_from(&server, "127.0.0.2", "spray-6", "x", &[]), 429);
    assert_eq!(login_from(&server, "127.0.0.2", "ann", PASSWORD, &[]), 429);
    // Everyone else is untouched.
    assert_eq!(login_from(&server, "127.0.0.3", "ann", PASSWORD, &[]), 200);
}

#[test]
fn a_forged_forwarded_header_buys_no_tries_and_a_trusted_proxy_names_the_client() {
    let db = TestDb::new("forwarded");
    // Not behind a trusted proxy: X-Forwarded-For is the client's own word, and ignored.
    let server = staging_server(&db, &[]);
    for index in 0..5 {
        let forged = format!("X-Forwarded-For: 198.51.100.{index}");
        assert_eq!(
            login_from(&server, "127.0.0.2", "ann", "guess", &[&forged]),
            401
        );
    }
    let forged = "X-Forwarded-For: 198.51.100.99";
    assert_eq!(
        login_from(&server, "127.0.0.2", "ann", PASSWORD, &[forged]),
        429
    );
    drop(server);

    // Behind the TLS front at 127.0.0.4, trusted: each client behind it counts on its own.
    let db = TestDb::new("proxied");
    let server = staging_server(&db, &[("SAULPOS_TRUSTED_PROXIES", "127.0.0.4")]);
    let first = "X-Forwarded-For: 198.51.100.1";
    for _ in 0..5 {
        assert_eq!(
            login_from(&server, "127.0.0.4", "ann", "guess", &[first]),
            401
        );
    }
    assert_eq!(
        login_from(&server, "127.0.0.4", "ann", PASSWORD, &[first]),
        429
    );
    let second = "X-Forwarded-For: 203.0.113.7, 198.51.100.2";
    assert_eq!(
        login_from(&server, "127.0.0.4", "ann", PASSWORD, &[second]),
        200
    );
}

/// The peak resident memory of a process, in KiB (VmHWM).
fn peak_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

#[test]
fn a_login_storm_hashes_a_few_at_a_time_and_the_rest_are_told_to_come_back() {
    let db = TestDb::new("storm");
    // One hash at a time, no waiting for a slot: the others are answered 503 at once.
    let server = staging_server(
        &db,
        &[
            ("SAULPOS_AUTH_MAX_HASHES", "1"),
            ("SAULPOS_AUTH_HASH_WAIT_MS", "0"),
            ("SAULPOS_AUTH_MAX_FAILURES", "100"),
        ],
    );
    let statuses = parallel_logins(&server, 16, "ann", "guess");
    assert!(count(&statuses, 503) > 0, "{statuses:?}");
    assert_eq!(
        count(&statuses, 401) + count(&statuses, 503),
        16,
        "{statuses:?}"
    );
    let busy = (0..50)
        .map(|_| {
            call(
                "POST",
                &server.url("/api/v1/auth/login"),
                None,
                Some(json!({"username": "ann", "password": "x"})),
            )
        })
        .find(|answer| answer.0 == 503);
    if let Some((_, retry_after, body)) = busy {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"]["code"], "busy", "{body}");
    }
    drop(server);

    // With the defaults (a hash a core), 16 logins at once stay within a few hashes' memory.
    let db = TestDb::new("storm_memory");
    let server = staging_server(&db, &[("SAULPOS_AUTH_MAX_FAILURES", "100")]);
    let before = peak_memory_kib(server.pid());
    let statuses = parallel_logins(&server, 16, "ann", "guess");
    assert_eq!(count(&statuses, 401), 16, "{statuses:?}");
    let after = peak_memory_kib(server.pid());
    let cores = std::thread::available_parallelism().unwrap().get() as u64;
    // Each Argon2id hash takes 19 MiB; 16 at once took the server from 113 MB to 406 MB.
    let allowed = before + (cores + 1) * 19 * 1024 + 16 * 1024;
    assert!(
        after <= allowed,
        "peak memory went from {before} KiB to {after} KiB under 16 logins (allowed {allowed})"
    );
}

/// A raw connection to the server that has sent `sent`; waits for the server to close it, at
/// most `limit`; whether it did.
fn closed_by_the_server(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 512];
    let started = Instant::now();
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
        if started.elapsed() > limit {
            return false;
        }
    }
}

#[test]
fn half_sent_headers_and_idle_sockets_are_closed_and_never_starve_liveness() {
    let db = TestDb::new("slowloris");
    let server = staging_server(
        &db,
        &[
            ("SAULPOS_SERVER_HEADER_TIMEOUT_SECONDS", "1"),
            ("SAULPOS_SERVER_REQUEST_TIMEOUT_SECONDS", "2"),
            ("SAULPOS_SERVER_MAX_CONNECTIONS", "4"),
        ],
    );
    let address = format!("127.0.0.1:{}", server.port);
    // As many sockets as the server takes at once, each with half its headers sent.
    let mut sockets: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"GET /actuator/health HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            stream
        })
        .collect();
    // Liveness still answers: the half-sent sockets are closed after the header timeout.
    let started = Instant::now();
    let (status, _) = crate::support::get(&server.url("/actuator/health/liveness")).unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for socket in &mut sockets {
        assert!(closed_by_the_server(socket, Duration::from_secs(3)));
    }
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /actuator/health/liveness HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(closed_by_the_server(&mut idle, Duration::from_secs(4)));
    // A body sent a little at a time: 408 once the request's time is up.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
}

#[test]
fn a_logout_raced_by_requests_in_flight_leaves_no_usable_token() {
    let db = TestDb::new("logout_race");
    let server = staging_server(&db, &[]);
    let product = server.url("/api/v1/products/NOPE-1");
    for round in 0..5 {
        let (_, _, issued) = login(&server, "ann", PASSWORD);
        let token = issued["token"].as_str().unwrap().to_owned();
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    while !stop.load(Ordering::SeqCst) {
                        call("GET", &product, Some(&token), None);
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(50));
            let logout = call(
                "POST",
                &server.url("/api/v1/auth/logout"),
                Some(&token),
                None,
            );
            assert_eq!(logout.0, 204);
            // Every request that starts after the logout answered is refused.
            let until = Instant::now() + Duration::from_millis(1200);
            while Instant::now() < until {
                let (status, _, body) = call("GET", &product, Some(&token), None);
                assert_eq!(
                    status, 401,
                    "round {round}: a logged-out token still works: {body}"
                );
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
}

#[test]
fn a_hash_of_another_cost_is_made_again_at_the_next_login() {
    let db = TestDb::new("rehash");
    // A user added with a cheaper cost (an older configuration).
    let added = user_command_with(
        &db,
        &["add", "old", "--role", "cashier"],
        "old-cost-password\n",
        &[
            ("SAULPOS_AUTH_ARGON2_MEMORY_KIB", "1024"),
            ("SAULPOS_AUTH_ARGON2_ITERATIONS", "1"),
        ],
    );
    assert!(added.status.success(), "{}", text(&added));
    let hash = || db.query("SELECT password_hash FROM app_user WHERE username = 'old'");
    assert!(
        hash().starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
        "{}",
        hash()
    );
    let server = staging_server(&db, &[]);
    let (status, _, first) = login(&server, "old", "old-cost-password");
    assert_eq!(status, 200);
    assert!(
        hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        hash()
    );
    // The same password still works, and the token from before the rehash too.
    assert_eq!(login(&server, "old", "old-cost-password").0, 200);
    let token = first["token"].as_str().unwrap();
    let product = server.url("/api/v1/products/NOPE-1");
    assert_eq!(call("GET", &product, Some(token), None).0, 404);
    assert!(
        server
            .output()
            .contains("password hash made again at the current cost")
    );
}

#[test]
fn control_characters_in_names_are_refused_and_forge_no_log_line() {
    let db = TestDb::new("control_chars");
    let server = staging_server(&db, &[("SAULPOS_LOG_FORMAT", "text")]);
    let (status, _, body) = login(&server, "ann\u{0}", PASSWORD);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("control character")
    );
    let (status, _, _) = login(
        &server,
        "ann\n2026-12-02T00:00:00Z  INFO forged: login",
        "x",
    );
    assert_eq!(status, 400);
    let (_, _, issued) = login(&server, "ann", PASSWORD);
    let token = issued["token"].as_str().unwrap();
    let (status, _, body) = call(
        "GET",
        &server.url("/api/v1/products/A%00B"),
        Some(token),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let cart = json!({"items": [{"sku": "A\u{0}B", "quantity": 1}]});
    let (status, _, body) = call(
        "POST",
        &server.url("/api/v1/checkout/dry-run"),
        Some(token),
        Some(cart),
    );
    assert_eq!(status, 400, "{body}");
    let output = server.output();
    assert!(!output.contains("ERROR"), "{output}");
    assert!(
        !output.lines().any(|line| line.contains("INFO forged")),
        "{output}"
    );
}

#[test]
fn a_burst_of_right_and_wrong_logins_at_once_never_deadlocks_into_a_500() {
    let db = TestDb::new("login_burst");
    let server = staging_server(&db, &[("SAULPOS_AUTH_MAX_FAILURES", "1000")]);
    for _ in 0..4 {
        let start = std::sync::Barrier::new(24);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..24)
                .map(|index| {
                    let (server, start) = (&server, &start);
                    scope.spawn(move || {
                        start.wait();
                        let password = if index % 2 == 0 { PASSWORD } else { "wrong" };
                        login(server, "ann", password).0
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        assert_eq!(
            count(&statuses, 200) + count(&statuses, 401),
            24,
            "{statuses:?}"
        );
    }
    assert!(!server.output().contains("deadlock"), "{}", server.output());
}
