//! The server: configuration, migrations, health, the catalogue API and graceful shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{
    Proxy, Server, TestDb, demo_token, eventually, get, get_json, get_json_as, post_json_as,
    server_command, text,
};

const PASSWORD: &str = "s3cr:t@p/ss#w%rd";

fn check_config(envs: &[(&str, &str)]) -> (i32, String) {
    let mut command = server_command();
    command.arg("--check-config");
    for (name, value) in envs {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    (output.status.code().unwrap(), text(&output))
}

#[test]
fn each_profile_layers_its_file_and_the_environment_overrides_it() {
    let (code, dev) = check_config(&[]);
    assert_eq!(code, 0, "{dev}");
    assert!(dev.contains("profile = dev\n"), "{dev}");
    assert!(
        dev.contains("database.url = postgres://127.0.0.1:5432/saulpos_dev\n"),
        "{dev}"
    );
    assert!(dev.contains("catalogue.load_demo = true\n"), "{dev}");
    assert!(dev.contains("logging.format = text\n"), "{dev}");
    assert!(dev.contains("server.port = 8080\n"), "{dev}");

    let staging_env = [
        ("SAULPOS_PROFILE", "staging"),
        (
            "SAULPOS_DB_URL",
            "jdbc:postgresql://db.staging:6543/saulpos",
        ),
        ("SAULPOS_DB_USERNAME", "saulpos"),
        ("SAULPOS_DB_PASSWORD", PASSWORD),
        ("SAULPOS_SERVER_PORT", "9090"),
        ("SAULPOS_DB_POOL_SIZE", "4"),
        ("SAULPOS_LOG_FORMAT", "text"),
    ];
    let (code, staging) = check_config(&staging_env);
    assert_eq!(code, 0, "{staging}");
    for line in [
        "profile = staging",
        "database.url = postgres://db.staging:6543/saulpos",
        "database.username = saulpos",
        "database.password = <redacted>",
        "server.port = 9090",
        "database.pool_size = 4",
        "logging.format = text",
        "health.show_details = true",
        "catalogue.load_demo = false",
    ] {
        assert!(
            staging.contains(&format!("{line}\n")),
            "{line} in {staging}"
        );
    }
    assert!(!staging.contains(PASSWORD));

    let mut prod_env = staging_env;
    prod_env[0] = ("SAULPOS_PROFILE", "prod");
    prod_env[6] = ("SAULPOS_LOG_LEVEL", "info,sqlx=warn");
    let (code, prod) = check_config(&prod_env);
    assert_eq!(code, 0, "{prod}");
    assert!(prod.contains("health.show_details = false\n"), "{prod}");
    assert!(prod.contains("logging.format = json\n"), "{prod}");
    assert!(prod.contains("logging.level = info,sqlx=warn\n"), "{prod}");
}

#[test]
fn a_bad_configuration_names_every_problem_and_the_variable_to_set() {
    let (code, message) = check_config(&[("SAULPOS_PROFILE", "production")]);
    assert_eq!(code, 2);
    assert!(
        message.contains(
            "SAULPOS_PROFILE: unknown profile \"production\": use one of dev, staging, prod"
        ),
        "{message}"
    );

    let (code, message) = check_config(&[
        ("SAULPOS_PROFILE", "prod"),
        ("SAULPOS_SERVER_PORT", "eighty"),
        ("SAULPOS_LOG_FORMAT", "xml"),
        ("SAULPOS_DB_POOL_SIZE", "0"),
    ]);
    assert_eq!(code, 2, "{message}");
    for expected in [
        "invalid configuration (5 problems):",
        "SAULPOS_SERVER_PORT: \"eighty\" is not a whole number; use one from 1 to 65535",
        "SAULPOS_DB_URL is not set",
        "SAULPOS_DB_USERNAME is not set",
        "SAULPOS_DB_POOL_SIZE: 0 is out of range; use one from 1 to 1000",
        "SAULPOS_LOG_FORMAT: \"xml\" is not a log format; use text or json",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }

    let (code, message) = check_config(&[("SAULPOS_DB_URL", "mysql://db:3306/saulpos")]);
    assert_eq!(code, 2);
    assert!(
        message.contains("SAULPOS_DB_URL: must start with postgres:// (or jdbc:postgresql://)"),
        "{message}"
    );

    let (code, message) = check_config(&[(
        "SAULPOS_DB_URL",
        "postgres://saulpos:hunter2@db:5432/saulpos",
    )]);
    assert_eq!(code, 2);
    assert!(
        message.contains("SAULPOS_DB_URL: credentials do not belong in the URL"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn a_fresh_database_is_migrated_and_dev_loads_the_demo_catalogue() {
    let db = TestDb::new("fresh");
    let url = db.url();
    let server = Server::start(&[("SAULPOS_DB_URL", &url)]);
    assert_eq!(
        db.query("SELECT version, description, success FROM _sqlx_migrations ORDER BY version"),
        "20260101000001|catalogue|t\n20260201000001|users|t\n20260301000001|login throttle|t"
    );
    assert_eq!(
        db.query("SELECT username, role, disabled FROM app_user"),
        "demo-cashier|cashier|f"
    );
    assert_eq!(
        db.query("SELECT sku FROM product ORDER BY sku"),
        "DEMO-BREAD\nDEMO-COFFEE-250G\nDEMO-MILK-1L"
    );

    let token = demo_token(&server.url(""));
    let (status, product) = get_json_as(&server.url("/api/v1/products/DEMO-BREAD"), &token);
    assert_eq!(status, 200);
    assert_eq!(
        product,
        json!({"sku": "DEMO-BREAD", "name": "Sourdough loaf", "unitPriceCents": 450, "currency": "USD"})
    );
    let (status, missing) = get_json_as(&server.url("/api/v1/products/NOPE-1"), &token);
    assert_eq!(status, 404);
    assert_eq!(
        missing,
        json!({"error": {"code": "not_found", "message": "no product with SKU \"NOPE-1\""}})
    );
}

#[test]
fn staging_and_prod_load_no_demo_catalogue() {
    let db = TestDb::new("nodemo");
    let url = db.url();
    let _server = Server::start(&[
        ("SAULPOS_PROFILE", "staging"),
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_DB_USERNAME", "postgres"),
        ("SAULPOS_DB_PASSWORD", PASSWORD),
    ]);
    assert_eq!(db.query("SELECT count(*) FROM product"), "0");
    assert_eq!(
        db.query("SELECT count(*) FROM app_user"),
        "0",
        "staging creates no demo user"
    );
}

#[test]
fn the_checkout_dry_run_prices_a_cart_and_writes_nothing() {
    let db = TestDb::new("checkout");
    let url = db.url();
    let server = Server::start(&[("SAULPOS_DB_URL", &url)]);
    // Every row of every table, as a digest per table; the login's token is written before.
    let token = demo_token(&server.url(""));
    let snapshot = "SELECT string_agg(format('%s:%s', table_name, (xpath('/row/c/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS c FROM %I t', ',', '', table_name), false, true, '')))[1]::text), ' ' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'public'";
    let before = db.query(snapshot);
    assert!(
        before.contains("product:") && before.contains("auth_token:"),
        "{before}"
    );
    let dry_run = server.url("/api/v1/checkout/dry-run");
    let post_json = |url: &str, body: &str| post_json_as(url, &token, body);

    let (status, priced) = post_json(
        &dry_run,
        r#"{"items":[{"sku":"DEMO-BREAD","quantity":2},{"sku":"DEMO-MILK-1L","quantity":3}]}"#,
    );
    assert_eq!(status, 200, "{priced}");
    assert_eq!(priced["dryRun"], true);
    assert_eq!(priced["totalCents"], 2 * 450 + 3 * 129);
    assert_eq!(priced["total"], "12.87");
    assert_eq!(priced["lines"][1]["lineTotalCents"], 387);

    let (status, error) = post_json(&dry_run, r#"{"items":[{"sku":"NOPE-1","quantity":1}]}"#);
    assert_eq!(status, 422);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("item 1: unknown SKU \"NOPE-1\""),
        "{error}"
    );
    let (status, error) = post_json(&dry_run, r#"{"items":[{"sku":"DEMO-BREAD","quantity":0}]}"#);
    assert_eq!(status, 422);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quantity 0 for SKU \"DEMO-BREAD\" is out of range; use 1 to 10000"),
        "{error}"
    );
    let (status, error) = post_json(&dry_run, r#"{"items":[]}"#);
    assert_eq!(status, 422, "{error}");
    let (status, error) = post_json(&dry_run, r#"{"items": "#);
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "bad_request");

    let after = db.query(snapshot);
    assert_eq!(before, after, "the dry-run wrote to the database");
    assert_eq!(db.query("SELECT count(*) FROM product"), "3");
}

#[test]
fn a_changed_migration_stops_startup_naming_it() {
    let db = TestDb::new("changed");
    let url = db.url();
    drop(Server::start(&[("SAULPOS_DB_URL", &url)]));
    // What the database recorded no longer matches the file built into the binary.
    db.query("UPDATE _sqlx_migrations SET checksum = '\\x00'::bytea");
    let mut server = Server::spawn(&[("SAULPOS_DB_URL", &url)]);
    assert_eq!(server.wait(Duration::from_secs(20)), Some(1));
    let output = server.output();
    assert!(
        output.contains(
            "migration 20260101000001 was changed after it was applied to this database; restore the original file 20260101000001_catalogue.sql"
        ),
        "{output}"
    );
}

#[test]
fn a_schema_migrated_by_a_newer_release_is_tolerated_with_a_warning() {
    let db = TestDb::new("newer");
    let url = db.url();
    drop(Server::start(&[("SAULPOS_DB_URL", &url)]));
    db.query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (29990101000000, 'from the future', true, '\\x01'::bytea, 1)",
    );
    let server = Server::start(&[("SAULPOS_DB_URL", &url)]);
    let (status, _) = get(&server.url("/actuator/health")).unwrap();
    assert_eq!(status, 200);
    let output = server.output();
    assert!(
        output.contains("the database has a migration this release does not know")
            && output.contains("29990101000000"),
        "{output}"
    );
}

#[test]
fn health_shows_details_in_dev_and_only_the_status_in_prod() {
    let db = TestDb::new("health");
    let url = db.url();
    let dev = Server::start(&[("SAULPOS_DB_URL", &url)]);
    let (status, health) = get_json(&dev.url("/actuator/health"));
    assert_eq!(status, 200);
    assert_eq!(health["status"], "UP");
    assert_eq!(health["components"]["db"]["status"], "UP");
    assert_eq!(
        health["components"]["db"]["details"]["database"],
        "PostgreSQL"
    );
    let (status, info) = get_json(&dev.url("/actuator/info"));
    assert_eq!(status, 200);
    assert_eq!(info["name"], "saulpos-server");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["profile"], "dev");

    let prod = Server::start(&[
        ("SAULPOS_PROFILE", "prod"),
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_DB_USERNAME", "postgres"),
        ("SAULPOS_DB_PASSWORD", PASSWORD),
    ]);
    for path in ["/actuator/health", "/actuator/health/readiness"] {
        let (status, body) = get(&prod.url(path)).unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"status":"UP"}"#),
            "{path}"
        );
    }
    let (status, body) = get(&prod.url("/actuator/health/liveness")).unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"UP"}"#));
}

#[test]
fn health_is_down_with_503_while_the_database_is_cut_off_and_up_again_after() {
    let db = TestDb::new("outage");
    let proxy = Proxy::start();
    let url = format!("postgres://127.0.0.1:{}/{}", proxy.port, db.name);
    let server = Server::start(&[
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_HEALTH_TIMEOUT_MS", "500"),
    ]);
    assert_eq!(get(&server.url("/actuator/health")).unwrap().0, 200);

    proxy.cut();
    let started = Instant::now();
    let (status, health) = get_json(&server.url("/actuator/health"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the health probe hung"
    );
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "DOWN");
    assert_eq!(health["components"]["db"]["status"], "DOWN");
    assert_eq!(
        get(&server.url("/actuator/health/readiness")).unwrap().0,
        503
    );
    assert_eq!(
        get(&server.url("/actuator/health/liveness")).unwrap().0,
        200
    );

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(10), || {
            get(&server.url("/actuator/health")).unwrap().0 == 200
        }),
        "health did not return to UP; output:\n{}",
        server.output()
    );
}

#[test]
fn startup_gives_up_on_an_unreachable_database_naming_host_and_port() {
    let port = crate::support::free_port();
    let url = format!("postgres://127.0.0.1:{port}/saulpos");
    let mut server = Server::spawn(&[
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_DB_STARTUP_TIMEOUT_SECONDS", "1"),
    ]);
    assert_eq!(server.wait(Duration::from_secs(20)), Some(1));
    let output = server.output();
    assert!(
        output.contains(&format!("cannot reach the database at 127.0.0.1:{port}")),
        "{output}"
    );
}

#[test]
fn a_request_in_flight_completes_across_sigterm_and_the_server_exits_0() {
    let db = TestDb::new("sigterm");
    let url = db.url();
    let mut server = Server::start(&[("SAULPOS_DB_URL", &url)]);
    let token = demo_token(&server.url(""));
    let body = r#"{"items":[{"sku":"DEMO-COFFEE-250G","quantity":1}]}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /api/v1/checkout/dry-run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.terminate();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body.as_bytes()[10..]).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains(r#""totalCents":799"#), "{response}");
    assert_eq!(server.wait(Duration::from_secs(10)), Some(0));
    assert!(server.output().contains("saulpos-server stopped"));
}

#[test]
fn the_password_appears_nowhere_in_what_the_server_prints() {
    let db = TestDb::new("secret");
    let url = db.url();
    for profile in ["staging", "prod"] {
        let mut server = Server::start(&[
            ("SAULPOS_PROFILE", profile),
            ("SAULPOS_DB_URL", &url),
            ("SAULPOS_DB_USERNAME", "postgres"),
            ("SAULPOS_DB_PASSWORD", PASSWORD),
            ("SAULPOS_LOG_LEVEL", "trace"),
        ]);
        get(&server.url("/actuator/health")).unwrap();
        get(&server.url("/api/v1/products/NOPE")).unwrap();
        server.terminate();
        assert_eq!(server.wait(Duration::from_secs(10)), Some(0));
        let output = server.output();
        assert!(output.contains("database.password"), "{output}");
        assert!(
            !output.contains(PASSWORD),
            "{profile}: password in {output}"
        );
    }
}

#[test]
fn four_servers_started_together_on_an_empty_database_migrate_it_once_and_all_come_up() {
    let db = TestDb::new("replicas");
    let url = db.url();
    // dev: each also loads the demo catalogue, the other write that races at startup.
    let mut servers: Vec<Server> = (0..4)
        .map(|_| Server::spawn(&[("SAULPOS_DB_URL", &url)]))
        .collect();
    for server in &servers {
        assert!(
            eventually(Duration::from_secs(30), || get(
                &server.url("/actuator/health")
            )
            .is_ok_and(|(status, _)| status == 200)),
            "a replica did not come up: {}",
            server.output()
        );
    }
    let migrations =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../server/migrations"))
            .unwrap()
            .count();
    assert_eq!(
        db.query(
            "SELECT count(*), count(DISTINCT version), bool_and(success) FROM _sqlx_migrations"
        ),
        format!("{migrations}|{migrations}|t")
    );
    assert_eq!(
        db.query("SELECT count(*) FROM product WHERE sku LIKE 'DEMO-%'"),
        "3"
    );
    for server in &mut servers {
        let token = demo_token(&server.url(""));
        let (status, product) = get_json_as(&server.url("/api/v1/products/DEMO-BREAD"), &token);
        assert_eq!(status, 200, "{product}");
        server.terminate();
        assert_eq!(
            server.wait(Duration::from_secs(10)),
            Some(0),
            "{}",
            server.output()
        );
    }
}
