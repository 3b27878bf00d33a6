//! Pre-deploy backups and `rollback --with-data`, end to end: a deploy backs up the environment's
//! database before it switches, a release whose migration adds a column and rows goes out, and
//! the rollback puts back exactly the rows of that backup.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::deploy_ok;
use crate::support::hostile::flip_a_byte;
use crate::support::release_1_0_0;
use crate::support::release_1_2_0;
use crate::support::{Configured, TestDb, clone, lock, psql, text, xtask};
use crate::support::{deploy, live, run};
use crate::support::{install_sh, payload_copy};

const MIGRATION: &str = "server/migrations/20261125000001_loyalty.sql";

/// Version 1.5.0: the same server with one more migration, which adds a column and a row.
fn release_1_5_0() -> &'static Path {
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    RELEASE.get_or_init(|| {
        release_1_0_0();
        let clone = clone();
        let _guard = lock(clone);
        let migration = clone.dir.join(MIGRATION);
        fs::write(
            &migration,
            "-- Loyalty points per product, and the loyalty card itself.\n\
             ALTER TABLE product ADD COLUMN loyalty_points INTEGER NOT NULL DEFAULT 0;\n\
             INSERT INTO product (sku, name, unit_price_cents, loyalty_points) VALUES ('LOYALTY-CARD', 'Loyalty card', 0, 100);\n",
        )
        .unwrap();
        let output = xtask(&clone.dir, &["package", "1.5.0", "--allow-dirty"]);
        fs::remove_file(&migration).unwrap();
        assert!(output.status.success(), "package 1.5.0: {}", text(&output));
        clone.dir.join("dist/1.5.0")
    })
}

fn skus(db: &TestDb) -> String {
    db.query("SELECT string_agg(sku || ':' || unit_price_cents, ',' ORDER BY sku) FROM product")
}

fn last_event(installed: &Path, back: usize) -> serde_json::Value {
    let history = fs::read_to_string(installed.join("history.log")).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    serde_json::from_str(lines[lines.len() - 1 - back]).unwrap()
}

#[test]
fn a_deploy_takes_a_backup_and_rollback_with_data_brings_back_exactly_its_rows() {
    let (first, second) = (release_1_0_0(), release_1_5_0());
    assert!(first.is_dir() && second.is_dir() && release_1_2_0().is_dir());
    let db = TestDb::new("with_data");
    let configured = Configured::new("staging", &db);
    let (dest, dest_arg, installed) = (
        &configured.dest,
        configured.dest_arg(),
        &configured.installed,
    );

    deploy_ok("staging", "1.0.0", dest.path(), &["--restart"]);
    db.query("INSERT INTO product (sku, name, unit_price_cents) VALUES ('ROW-1', 'one', 100), ('ROW-2', 'two', 200)");
    let before_deploy = skus(&db);

    // Version 1.5.0: the backup first (private, verified, named in the history), then the switch.
    let output = deploy("staging", "1.5.0", dest.path(), &["--restart", "--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["hosts"][0]["outcome"], "deployed", "{summary}");
    let backup = PathBuf::from(last_event(installed, 0)["backup"].as_str().unwrap());
    assert_eq!(backup.parent().unwrap(), installed.join("backups"));
    let event = last_event(installed, 0);
    assert_eq!(
        (event["action"].as_str(), event["to"].as_str()),
        (Some("deploy"), Some("1.5.0"))
    );
    assert_eq!(event["backup"], backup.to_str().unwrap());
    let sha = crate::support::tool(dest.path(), "sha256sum", &[backup.to_str().unwrap()]);
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(
        event["backup_sha256"],
        sha.split_whitespace().next().unwrap()
    );
    let checksum_file = format!("{}.sha256", backup.display());
    let checked = crate::support::tool(
        installed.join("backups").as_path(),
        "sha256sum",
        &["-c", &checksum_file],
    );
    assert!(checked.status.success(), "{}", text(&checked));
    assert_eq!(
        fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(installed.join("backups"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // The migration ran: a column and a row more; then the new release writes a row of its own.
    assert_eq!(
        db.query("SELECT loyalty_points FROM product WHERE sku = 'LOYALTY-CARD'"),
        "100"
    );
    db.query("INSERT INTO product (sku, name, unit_price_cents) VALUES ('ROW-3', 'three', 300)");

    // status shows the backup taken before each deploy.
    let output = run(&["status", "staging", dest_arg]);
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        shown.contains("before 1.5.0") && shown.contains(backup.to_str().unwrap()),
        "{shown}"
    );

    // Rollback with the data: exactly the rows of the pre-deploy backup, the column gone.
    let output = run(&[
        "rollback",
        "staging",
        dest_arg,
        "--with-data",
        "--yes",
        "--reason",
        "INC-7",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(skus(&db), before_deploy);
    let columns = db.query("SELECT count(*) FROM information_schema.columns WHERE table_name = 'product' AND column_name = 'loyalty_points'");
    assert_eq!(columns, "0");
    assert_eq!(live(installed), "releases/1.0.0");
    let restore = last_event(installed, 1);
    assert_eq!(
        (
            restore["action"].as_str(),
            restore["from"].as_str(),
            restore["to"].as_str()
        ),
        (Some("restore"), Some("1.5.0"), Some("1.0.0"))
    );
    assert_eq!(restore["backup"], backup.to_str().unwrap());
    let rollback = last_event(installed, 0);
    assert_eq!(
        (rollback["action"].as_str(), rollback["reason"].as_str()),
        (Some("rollback"), Some("INC-7"))
    );
    // The replaced database is kept under a dated name, as restore keeps it.
    let kept = psql(
        "postgres",
        &format!(
            "SELECT datname FROM pg_database WHERE datname LIKE '{}_before_%'",
            db.name
        ),
    );
    assert!(!kept.trim().is_empty(), "the replaced database is kept");
    for name in kept.lines().filter(|line| !line.trim().is_empty()) {
        psql(
            "postgres",
            &format!("DROP DATABASE \"{}\" WITH (FORCE)", name.trim()),
        );
    }
    // And 1.0.0, restarted, serves on the data it knew.
    let restarted = std::process::Command::new(installed.join("run.sh"))
        .arg("restart")
        .output()
        .unwrap();
    assert!(restarted.status.success(), "{}", text(&restarted));
    let token = crate::support::token_for(
        &configured.url,
        crate::support::SMOKE_USER,
        crate::support::SMOKE_PASSWORD,
    );
    let (status, _) =
        crate::support::get_json_as(&format!("{}/api/v1/products/ROW-2", configured.url), &token);
    assert_eq!(status, 200);

    // Backups go with the release they were taken before: 1.5.0 pruned, its backup goes; the
    // one the live release's deploy took stays.
    let output = deploy("staging", "1.2.0", dest.path(), &["--keep", "2"]);
    let said = text(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("removed the old release"), "{said}");
    assert!(!installed.join("releases/1.5.0").exists(), "{said}");
    let latest = PathBuf::from(last_event(installed, 0)["backup"].as_str().unwrap());
    assert!(
        !backup.exists() && !Path::new(&checksum_file).exists(),
        "pruned with 1.5.0"
    );
    assert!(latest.is_file(), "the live release's backup stays");
}

#[test]
fn no_backup_no_deploy_and_a_missing_or_tampered_backup_refuses_with_data() {
    let (first, second) = (release_1_0_0(), release_1_2_0());
    let db = TestDb::new("no_backup");
    let configured = Configured::new("prod", &db);
    let (dest, dest_arg, installed) = (
        &configured.dest,
        configured.dest_arg(),
        &configured.installed,
    );
    let good_env = fs::read_to_string(installed.join("saulpos.env")).unwrap();

    // A database that cannot be backed up: the deploy and install.sh are refused, nothing changed.
    fs::write(
        installed.join("saulpos.env"),
        good_env.replace(&db.name, "saulpos_no_such_database"),
    )
    .unwrap();
    let output = deploy("prod", "1.0.0", dest.path(), &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("refused: the backup of saulpos_no_such_database")
            && message.contains("nothing was changed"),
        "{message}"
    );
    let (_host, payload) = payload_copy(first, "prod", "1.0.0");
    let output = install_sh(&payload, &[dest_arg]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("refused: the backup of saulpos_no_such_database"),
        "{message}"
    );
    assert!(!installed.join("current").exists() && !installed.join("history.log").exists());
    let leftovers: Vec<_> = fs::read_dir(installed.join("backups")).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "no partial backup left: {leftovers:?}"
    );

    // --no-backup is recorded; the next deploy, by install.sh, backs up.
    fs::write(installed.join("saulpos.env"), &good_env).unwrap();
    deploy_ok("prod", "1.0.0", dest.path(), &["--no-backup"]);
    assert_eq!(last_event(installed, 0)["backup_skipped"], "--no-backup");
    let (_host, payload) = payload_copy(second, "prod", "1.2.0");
    let output = install_sh(&payload, &[dest_arg]);
    assert!(output.status.success(), "{}", text(&output));
    let event = last_event(installed, 0);
    let backup = PathBuf::from(event["backup"].as_str().unwrap());
    assert!(backup.is_file(), "{event}");

    // A tampered backup, then a missing one: refused, the release and the data unchanged.
    db.query("CREATE TABLE marker (id int)");
    flip_a_byte(&backup);
    let output = run(&["rollback", "prod", dest_arg, "--with-data", "--yes"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("does not match the checksum the deploy recorded"),
        "{message}"
    );
    fs::remove_file(&backup).unwrap();
    let output = run(&["rollback", "prod", dest_arg, "--with-data", "--yes"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("is missing; nothing was changed"),
        "{message}"
    );
    assert_eq!(live(installed), "releases/1.2.0");
    assert_eq!(db.query("SELECT count(*) FROM marker"), "0");
}
