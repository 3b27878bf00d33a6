//! `cargo xtask backup` and `cargo xtask restore` on a real PostgreSQL with the real `pg_dump`,
//! `pg_restore` and `sha256sum`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    PG_HOST, TestDb, clone, eventually, psql, quote_identifier, text, tool, xtask, xtask_command,
};

/// Tables with what real data has: non-ASCII text, numerics, bytea, a foreign key, sequences.
const CONTENT: &str = "
CREATE TABLE customer (id serial PRIMARY KEY, name text NOT NULL, balance numeric(14,4), photo bytea);
CREATE TABLE purchase (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customer(id), total numeric, note text);
CREATE INDEX purchase_note ON purchase (note);
INSERT INTO customer (name, balance, photo)
  SELECT 'Zoë Ångström 名前 ' || g, g * 1.2345, decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g;
INSERT INTO purchase (customer_id, total, note)
  SELECT 1 + g % 2000, g / 7.0, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END FROM generate_series(1, 5000) g;
";

/// A fingerprint of every table's content and every sequence's position.
fn fingerprint(database: &str) -> String {
    psql(
        database,
        "SELECT (SELECT md5(string_agg(c::text, '|' ORDER BY id)) FROM customer c) || ' ' ||
                (SELECT md5(string_agg(p::text, '|' ORDER BY id)) FROM purchase p) || ' ' ||
                (SELECT last_value FROM customer_id_seq) || ' ' || (SELECT last_value FROM purchase_id_seq) || ' ' ||
                (SELECT count(*) FROM pg_indexes WHERE indexname = 'purchase_note') || ' ' ||
                (SELECT count(*) FROM pg_constraint WHERE contype = 'f')",
    )
}

/// Databases whose names start with `prefix` (the ones restore keeps aside).
fn databases_like(prefix: &str) -> Vec<String> {
    let all = psql("postgres", "SELECT datname FROM pg_database ORDER BY 1");
    all.lines()
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Drops what restore kept aside or left behind, whatever the test's outcome.
struct DropAfter(String);

impl Drop for DropAfter {
    fn drop(&mut self) {
        for name in databases_like(&self.0) {
            psql(
                "postgres",
                &format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    quote_identifier(&name)
                ),
            );
        }
    }
}

fn backup(database: &str, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "backup",
        PG_HOST,
        "5432",
        database,
        "postgres",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&clone().dir, &args)
}

fn restore(database: &str, dump: &Path, checksum: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "restore",
        PG_HOST,
        "5432",
        database,
        "postgres",
        dump.to_str().unwrap(),
        checksum.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask_command(&clone().dir, &args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The dump and checksum files in `dir`, and every other name there.
fn backup_files(dir: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let dump = names
        .iter()
        .find(|name| name.ends_with(".dump"))
        .unwrap_or_else(|| panic!("no dump in {names:?}"));
    (dir.join(dump), dir.join(format!("{dump}.sha256")), names)
}

#[test]
fn a_backup_restores_into_another_database_with_identical_content() {
    let source = TestDb::new("bk_source");
    source.query(CONTENT);
    let dir = tempfile::tempdir().unwrap();
    let textfiles = tempfile::tempdir().unwrap();
    let metrics = textfiles.path().join("saulpos-backup.prom");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let output = backup(
        &source.name,
        dir.path(),
        &["--json", "--metrics-file", metrics.to_str().unwrap()],
    );
    assert!(output.status.success(), "{}", text(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let (dump, checksum, names) = backup_files(dir.path());
    assert_eq!(names.len(), 2, "{names:?}");
    // The textfile node_exporter reads, which the shipped SaulposBackupTooOld alert watches.
    let exposition = fs::read_to_string(&metrics).unwrap();
    let label = format!("{{database=\"{}\"}}", source.name);
    let value = |name: &str| -> f64 {
        crate::metrics::sample(&exposition, &format!("{name}{label}"))
            .unwrap_or_else(|| panic!("no {name} in {exposition}"))
    };
    let finished = value("saulpos_backup_last_success_timestamp_seconds");
    assert!(
        finished >= before.floor() && finished < before + 120.0,
        "{exposition}"
    );
    assert_eq!(
        value("saulpos_backup_last_size_bytes"),
        summary["size"].as_f64().unwrap()
    );
    assert!(value("saulpos_backup_last_duration_seconds") > 0.0);
    let linted = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(&metrics).unwrap())
        .output()
        .unwrap();
    assert!(linted.status.success(), "{}", text(&linted));
    assert_eq!(
        fs::read_dir(textfiles.path()).unwrap().count(),
        1,
        "a partial file was left"
    );
    let dump_name = dump.file_name().unwrap().to_str().unwrap();
    assert!(
        dump_name.starts_with(&format!("{}-", source.name)),
        "{dump_name}"
    );
    assert_eq!(
        summary["sha256"].as_str().unwrap(),
        &fs::read_to_string(&checksum).unwrap()[..64]
    );
    assert_eq!(summary["size"], fs::metadata(&dump).unwrap().len());
    let checked = tool(
        dir.path(),
        "sha256sum",
        &["-c", checksum.file_name().unwrap().to_str().unwrap()],
    );
    assert!(checked.status.success(), "{}", text(&checked));
    let listed = tool(
        dir.path(),
        "pg_restore",
        &["--list", dump.to_str().unwrap()],
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("Format: CUSTOM"));

    let target = format!("{}_copy", source.name);
    let _cleanup = DropAfter(target.clone());
    let output = restore(&target, &dump, &checksum, &["--json"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = text(&output);
    assert!(report.contains("public.customer: 2000 rows"), "{report}");
    assert!(report.contains("public.purchase: 5000 rows"), "{report}");
    // Progress: each table loaded and each index built, as pg_restore finishes it.
    assert!(
        report.contains("finished TABLE DATA purchase (")
            && report.contains("finished INDEX purchase_note ("),
        "{report}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["tables"][0]["counted"], true, "{summary}");
    assert_eq!(fingerprint(&target), fingerprint(&source.name));
    assert_eq!(
        databases_like(&target),
        std::slice::from_ref(&target),
        "a scratch database was left"
    );
}

#[test]
fn a_restore_over_a_live_database_ends_its_connections_and_keeps_the_old_data_aside() {
    let source = TestDb::new("bk_live_src");
    source.query(CONTENT);
    let target = TestDb::new("bk_live_dst");
    let _cleanup = DropAfter(format!("{}_", target.name));
    target
        .query("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('before the restore')");
    let dir = tempfile::tempdir().unwrap();
    assert!(backup(&source.name, dir.path(), &[]).status.success());
    let (dump, checksum, _) = backup_files(dir.path());

    // Without --yes and without a terminal, restoring over a database is refused.
    let refused = restore(&target.name, &dump, &checksum, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused).contains("pass --yes to confirm; nothing was restored"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        target.query("SELECT note FROM marker"),
        "before the restore"
    );

    let mut session = open_session(&target.name, "SELECT 1;\n");
    let opened = Instant::now();
    while psql(
        "postgres",
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'",
            target.name
        ),
    ) != "1"
    {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "the session never connected"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Counting no table exactly: each shows the row count its index build recorded.
    let output = restore(
        &target.name,
        &dump,
        &checksum,
        &["--yes", "--count-rows-up-to-mb", "0", "--json"],
    );
    let _ = session.kill();
    let _ = session.wait();
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    // Who is connected is said before their sessions are ended.
    assert!(
        report.contains(&format!(
            "ending 1 open connection(s) to {:?} to swap the restored data in: postgres from {PG_HOST} (psql)",
            target.name
        )),
        "{report}"
    );
    assert!(report.contains("ended 1 open connection(s)"), "{report}");
    assert!(
        report.contains("public.customer: about 2000 rows (too big to count quickly"),
        "{report}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        summary["tables"],
        serde_json::json!([
            {"table": "public.customer", "rows": 2000, "counted": false},
            {"table": "public.purchase", "rows": 5000, "counted": false},
        ])
    );
    assert!(
        report.contains("the previous data is kept as database"),
        "{report}"
    );
    assert_eq!(fingerprint(&target.name), fingerprint(&source.name));
    let kept: Vec<String> = databases_like(&format!("{}_before_", target.name));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        psql(&kept[0], "SELECT note FROM marker"),
        "before the restore"
    );
    assert!(databases_like(&format!("{}_restoring_", target.name)).is_empty());
}

/// Drops a role made for one test, after the databases that name it.
struct DropRole(String);

impl Drop for DropRole {
    fn drop(&mut self) {
        psql(
            "postgres",
            &format!("DROP ROLE IF EXISTS {}", quote_identifier(&self.0)),
        );
    }
}

/// What a database has that its dump does not carry, as one comparable text.
fn database_properties(database: &str) -> String {
    psql(
        "postgres",
        &format!(
            "SELECT concat_ws(' | ', pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding),
                    d.datcollate, d.datctype, d.datconnlimit, t.spcname,
                    shobj_description(d.oid, 'pg_database'),
                    (SELECT string_agg(concat_ws(' ', a.grantee::regrole, a.privilege_type, a.is_grantable), ', '
                                       ORDER BY a.grantee, a.privilege_type) FROM aclexplode(d.datacl) a),
                    (SELECT string_agg(concat_ws(' ', s.setrole, c), ', ' ORDER BY s.setrole, c)
                     FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid))
             FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
             WHERE d.datname = '{}'",
            database.replace('\'', "''")
        ),
    )
}

#[test]
fn a_restore_over_a_database_keeps_its_owner_locale_settings_privileges_and_comment() {
    let source = TestDb::new("bk_props_src");
    source.query(CONTENT);
    let owner = format!("e2e owner \"it's\" {}", std::process::id());
    let _role = DropRole(owner.clone());
    let target = format!("e2e bk props 'x' {}", std::process::id());
    let _cleanup = DropAfter(target.clone());
    let (owner_id, target_id) = (quote_identifier(&owner), quote_identifier(&target));
    psql("postgres", &format!("CREATE ROLE {owner_id}"));
    psql(
        "postgres",
        &format!(
            "CREATE DATABASE {target_id} OWNER {owner_id} TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C' CONNECTION LIMIT 7"
        ),
    );
    // Among the settings, one that would stop pg_restore if it reached its sessions.
    for sql in [
        format!("ALTER DATABASE {target_id} SET search_path = \"$user\", public, \"My Schema\""),
        format!("ALTER DATABASE {target_id} SET timezone = 'Pacific/Auckland'"),
        format!("ALTER DATABASE {target_id} SET default_transaction_read_only = on"),
        format!("ALTER ROLE {owner_id} IN DATABASE {target_id} SET work_mem = '8MB'"),
        format!("ALTER ROLE {owner_id} IN DATABASE {target_id} SET search_path = ''"),
        format!("REVOKE CONNECT ON DATABASE {target_id} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {target_id} TO {owner_id} WITH GRANT OPTION"),
        format!("COMMENT ON DATABASE {target_id} IS 'the tills'"),
    ] {
        psql("postgres", &sql);
    }
    let before = database_properties(&target);
    assert!(
        before.contains("| C | C | 7 | pg_default | the tills |"),
        "{before}"
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(backup(&source.name, dir.path(), &[]).status.success());
    let (dump, checksum, _) = backup_files(dir.path());

    // A user who may create databases but not ones owned by the target's owner is refused
    // before anything is created, and the target keeps all it had.
    let operator = format!("e2e operator {}", std::process::id());
    let _operator_role = DropRole(operator.clone());
    psql(
        "postgres",
        &format!("CREATE ROLE {} LOGIN CREATEDB", quote_identifier(&operator)),
    );
    let refused = xtask_command(
        &clone().dir,
        &[
            "restore",
            PG_HOST,
            "5432",
            &target,
            &operator,
            dump.to_str().unwrap(),
            checksum.to_str().unwrap(),
            "--yes",
        ],
    )
    .stdin(Stdio::null())
    .output()
    .unwrap();
    let message = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!(
            "cannot create the scratch database with the owner, encoding, locale and tablespace of {target:?} (restore as a superuser, or as a member of its owner's role); nothing was restored"
        )),
        "{message}"
    );
    assert!(message.contains("must be member of role"), "{message}");
    assert!(
        !message.contains("dropped the scratch database"),
        "{message}"
    );
    assert!(databases_like(&format!("{target}_")).is_empty());
    assert_eq!(database_properties(&target), before);

    let output = restore(&target, &dump, &checksum, &["--yes"]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains("with the target's owner, encoding, locale and tablespace"),
        "{report}"
    );
    assert_eq!(database_properties(&target), before);
    assert_eq!(
        psql(&target, "SHOW search_path"),
        "\"$user\", public, \"My Schema\""
    );
    assert_eq!(fingerprint(&target), fingerprint(&source.name));
    // The old data kept aside has them too, so swapping it back loses nothing either.
    let kept = databases_like(&format!("{target}_before_"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(database_properties(&kept[0]), before);
}

#[test]
fn a_damaged_dump_or_a_checksum_for_another_file_is_refused_and_the_target_is_unchanged() {
    let source = TestDb::new("bk_damage_src");
    source.query(CONTENT);
    let target = TestDb::new("bk_damage_dst");
    let _cleanup = DropAfter(format!("{}_", target.name));
    target.query("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('untouched')");
    let dir = tempfile::tempdir().unwrap();
    assert!(backup(&source.name, dir.path(), &[]).status.success());
    let (dump, checksum, _) = backup_files(dir.path());
    let original = fs::read(&dump).unwrap();

    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 0x40;
    fs::write(&dump, &flipped).unwrap();
    let output = restore(&target.name, &dump, &checksum, &["--yes"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("does not match its checksum"),
        "{}",
        text(&output)
    );

    fs::write(&dump, &original[..original.len() - 1000]).unwrap();
    let output = restore(&target.name, &dump, &checksum, &["--yes"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("does not match its checksum"),
        "{}",
        text(&output)
    );

    fs::write(&dump, &original).unwrap();
    let other = dir.path().join("other.dump");
    fs::write(&other, &original).unwrap();
    let output = restore(&target.name, &other, &checksum, &["--yes"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains("is for") && message.contains("not for \"other.dump\""),
        "{message}"
    );

    let output = restore(&target.name, &dump, &dump, &["--yes"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains("is not a checksum file")
            && message.contains("give the <dump>.sha256 that backup wrote beside the dump"),
        "{message}"
    );

    let missing = dir.path().join("missing.dump.sha256");
    let output = restore(&target.name, &dump, &missing, &["--yes"]);
    assert_eq!(output.status.code(), Some(1));
    let message = text(&output);
    assert!(
        message.contains(&format!("cannot read checksum file {}", missing.display()))
            && message.contains("nothing was restored"),
        "{message}"
    );

    assert_eq!(target.query("SELECT note FROM marker"), "untouched");
    assert_eq!(
        databases_like(&format!("{}_", target.name)),
        Vec::<String>::new()
    );
}

#[test]
fn a_restore_that_fails_part_way_leaves_the_target_unchanged() {
    // The dump names an owner role that no longer exists where it is restored.
    let role = format!("e2e_owner_{}", std::process::id());
    psql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role}"),
    );
    let dir = tempfile::tempdir().unwrap();
    {
        let source = TestDb::new("bk_fail_src");
        source.query(CONTENT);
        source.query(&format!("ALTER TABLE purchase OWNER TO {role}"));
        assert!(backup(&source.name, dir.path(), &[]).status.success());
    }
    psql("postgres", &format!("DROP ROLE {role}"));
    let (dump, checksum, _) = backup_files(dir.path());
    let target = TestDb::new("bk_fail_dst");
    let _cleanup = DropAfter(format!("{}_", target.name));
    target.query("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('untouched')");

    let output = restore(&target.name, &dump, &checksum, &["--yes"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("role \"{role}\" does not exist")),
        "{message}"
    );
    assert!(
        message.contains("the target database was not changed"),
        "{message}"
    );
    assert!(
        message.contains("dropped the scratch database"),
        "{message}"
    );
    assert_eq!(target.query("SELECT note FROM marker"), "untouched");
    assert_eq!(
        databases_like(&format!("{}_", target.name)),
        Vec::<String>::new()
    );
}

#[test]
fn a_killed_restore_leaves_the_target_unchanged_and_its_scratch_database_dropped_or_named() {
    let source = TestDb::new("bk_kill_src");
    source.query(CONTENT);
    // Enough rows that the restore is still loading when it is killed.
    source.query(
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) AS digest FROM generate_series(1, 1000000) g;
         ALTER TABLE bulk ADD PRIMARY KEY (id)",
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(backup(&source.name, dir.path(), &[]).status.success());
    let (dump, checksum, _) = backup_files(dir.path());
    let target = TestDb::new("bk_kill_dst");
    let _cleanup = DropAfter(format!("{}_", target.name));
    target.query("CREATE TABLE marker (note text); INSERT INTO marker VALUES ('untouched')");
    let scratch_prefix = format!("{}_restoring_", target.name);
    // A restore in a process group of its own, as a terminal runs it, once its scratch database
    // and the guard of it exist (the restore is loading then).
    let start = || {
        let mut child = xtask_command(
            &clone().dir,
            &[
                "restore",
                PG_HOST,
                "5432",
                &target.name,
                "postgres",
                dump.to_str().unwrap(),
                checksum.to_str().unwrap(),
                "--yes",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
        let started = eventually(Duration::from_secs(120), || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the restore ended before it could be killed"
            );
            databases_like(&scratch_prefix).len() == 1
        });
        assert!(started, "the restore never created its scratch database");
        let scratch = databases_like(&scratch_prefix).remove(0);
        let guarded = eventually(Duration::from_secs(10), || {
            find_process(&["restore-guard", &scratch]).is_some()
        });
        assert!(guarded, "the restore started no guard for {scratch:?}");
        (child, scratch)
    };
    let kill = |signal: &str, pid: String| {
        let killed = Command::new("kill")
            .args(["-s", signal, "--", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
    };

    // Killed as Ctrl-C or a lost session would (the whole process group): its guard, which runs
    // apart, drops the scratch database and says so.
    let (child, scratch) = start();
    kill("TERM", format!("-{}", child.id()));
    let output = child.wait_with_output().unwrap();
    let report = text(&output);
    assert!(!output.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "restore of {:?} was interrupted: dropped its scratch database {scratch:?}; {:?} was not changed",
            target.name, target.name
        )),
        "{report}"
    );
    assert_eq!(
        databases_like(&format!("{}_", target.name)),
        Vec::<String>::new()
    );
    assert_eq!(target.query("SELECT note FROM marker"), "untouched");

    // Killed with its guard (as when the machine goes down): the scratch database stays, and the
    // next restore succeeds and says which database the killed one left and how to drop it.
    let (mut child, scratch) = start();
    let guard = find_process(&["restore-guard", &scratch]).unwrap();
    kill("KILL", guard.to_string());
    kill("KILL", format!("-{}", child.id()));
    child.wait().unwrap();
    assert_eq!(target.query("SELECT note FROM marker"), "untouched");
    assert_eq!(
        databases_like(&scratch_prefix),
        std::slice::from_ref(&scratch)
    );
    let output = restore(&target.name, &dump, &checksum, &["--yes"]);
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    assert!(
        report.contains(&format!(
            "note: database {scratch:?} was left by a restore of {:?} that was killed",
            target.name
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("-c 'DROP DATABASE \"{scratch}\"'")),
        "{report}"
    );
    assert_eq!(databases_like(&scratch_prefix), [scratch], "it was dropped");
    assert_eq!(fingerprint(&target.name), fingerprint(&source.name));
    assert_eq!(target.query("SELECT count(*) FROM bulk"), "1000000");
}

#[test]
fn a_failed_backup_leaves_no_file_and_says_what_pg_dump_said() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port().to_string();
    let output = xtask(
        &clone().dir,
        &[
            "backup",
            PG_HOST,
            &port,
            "postgres",
            "postgres",
            dir.path().to_str().unwrap(),
        ],
    );
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("pg_dump of database \"postgres\""),
        "{message}"
    );
    assert!(
        message.contains("Connection refused") || message.contains("connection"),
        "{message}"
    );
    assert!(
        message.contains("hint: check the host and port"),
        "{message}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    // A metrics file node_exporter would not read is refused before pg_dump runs.
    for (file, said) in [
        ("backup.txt", "reads only *.prom files"),
        ("missing/backup.prom", "the folder"),
    ] {
        let path = dir.path().join(file);
        let output = backup(
            "postgres",
            dir.path(),
            &["--metrics-file", path.to_str().unwrap()],
        );
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message.contains(said) && message.contains(file),
            "{message}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    let output = backup("e2e_no_such_database", dir.path(), &[]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("database \"e2e_no_such_database\" does not exist"),
        "{message}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    let output = backup("postgres", &dir.path().join("missing"), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("does not exist; create it"),
        "{}",
        text(&output)
    );
}

#[test]
fn a_killed_pg_dump_leaves_no_final_file_and_no_temporary_file() {
    let source = TestDb::new("bk_killed");
    source.query(CONTENT);
    // Hold a lock that makes pg_dump wait, so it can be killed while the backup runs.
    let mut blocker = open_session(
        &source.name,
        "BEGIN; LOCK TABLE purchase IN ACCESS EXCLUSIVE MODE;\n",
    );
    let held = eventually(Duration::from_secs(30), || {
        source.query(
            "SELECT count(*) FROM pg_locks \
             WHERE relation = 'purchase'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        ) == "1"
    });
    assert!(held, "the blocking lock was never taken");
    let dir = tempfile::tempdir().unwrap();
    let run = xtask_command(
        &clone().dir,
        &[
            "backup",
            PG_HOST,
            "5432",
            &source.name,
            "postgres",
            dir.path().to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let pg_dump = loop {
        if let Some(pid) = find_process(&["pg_dump", &source.name]) {
            break pid;
        }
        assert!(Instant::now() < deadline, "pg_dump never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        Command::new("kill")
            .args(["-KILL", &pg_dump.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = run.wait_with_output().unwrap();
    let _ = blocker.kill();
    let _ = blocker.wait();
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("failed (signal: 9"), "{message}");
    assert!(message.contains("no backup was written"), "{message}");
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A psql session on `database` that has been sent `sql` and stays open until killed.
fn open_session(database: &str, sql: &str) -> std::process::Child {
    use std::io::Write;
    let mut session = Command::new("psql")
        .args(["-X", "-q", "-h", PG_HOST, "-U", "postgres", "-d", database])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    session
        .stdin
        .as_mut()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    session
}

/// The pid of a process whose arguments include all of `words`.
fn find_process(words: &[&str]) -> Option<u32> {
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if words.iter().all(|word| {
            args.iter()
                .any(|arg| arg.ends_with(word) || arg.contains(&format!("'{word}'")))
        }) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn awkward_database_names_back_up_and_restore() {
    let source = TestDb::named(&format!(
        "e2e bk \"quoted\" it's ünï côde {}",
        std::process::id()
    ));
    source.query(CONTENT);
    let target_name = format!("e2e bk copy=ß 'x' {}", std::process::id());
    let _cleanup = DropAfter(target_name.clone());
    let dir = tempfile::tempdir().unwrap();
    let output = backup(&source.name, dir.path(), &[]);
    assert!(output.status.success(), "{}", text(&output));
    let (dump, checksum, _) = backup_files(dir.path());
    let checked = tool(
        dir.path(),
        "sha256sum",
        &["-c", checksum.file_name().unwrap().to_str().unwrap()],
    );
    assert!(checked.status.success(), "{}", text(&checked));
    let output = restore(&target_name, &dump, &checksum, &[]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(fingerprint(&target_name), fingerprint(&source.name));
}

#[test]
fn retention_keeps_the_newest_verified_backups_of_that_database_only() {
    let source = TestDb::new("bk_keep");
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("other_db-20200101T000000Z.dump"),
        b"not ours",
    )
    .unwrap();
    fs::write(
        dir.path().join("other_db-20200101T000000Z.dump.sha256"),
        b"x",
    )
    .unwrap();
    for _ in 0..3 {
        let output = backup(&source.name, dir.path(), &["--keep", "2"]);
        assert!(output.status.success(), "{}", text(&output));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (_, _, names) = backup_files(dir.path());
    let ours: Vec<&String> = names
        .iter()
        .filter(|name| name.starts_with(&source.name))
        .collect();
    assert_eq!(ours.len(), 4, "two dumps and their checksums: {names:?}");
    assert!(names.contains(&"other_db-20200101T000000Z.dump".to_owned()));
}

#[test]
fn the_password_never_appears_in_any_process_arguments_or_output() {
    let password = format!("pw-{}-never-shown", std::process::id());
    let source = TestDb::new("bk_secret");
    source.query(CONTENT);
    let target = format!("{}_copy", source.name);
    let _cleanup = DropAfter(target.clone());
    let dir = tempfile::tempdir().unwrap();
    let backup_args = [
        "backup",
        PG_HOST,
        "5432",
        &source.name,
        "postgres",
        dir.path().to_str().unwrap(),
    ];
    let (output, seen) = run_watching(&backup_args, &password);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!seen, "the password was on a command line");
    assert!(!text(&output).contains(&password));

    let (dump, checksum, _) = backup_files(dir.path());
    let restore_args = [
        "restore",
        PG_HOST,
        "5432",
        &target,
        "postgres",
        dump.to_str().unwrap(),
        checksum.to_str().unwrap(),
    ];
    let (output, seen) = run_watching(&restore_args, &password);
    assert!(output.status.success(), "{}", text(&output));
    assert!(!seen, "the password was on a command line");
    assert!(!text(&output).contains(&password));
}

/// Runs `cargo xtask <args>` with PGPASSWORD set, scanning every process's arguments for the
/// password while it runs; returns the output and whether the password was seen.
fn run_watching(args: &[&str], password: &str) -> (Output, bool) {
    let mut child = xtask_command(&clone().dir, args)
        .env("PGPASSWORD", password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = false;
    let mut scans = 0;
    while child.try_wait().unwrap().is_none() {
        seen |= find_process(&[password]).is_some();
        scans += 1;
    }
    assert!(scans > 0);
    (child.wait_with_output().unwrap(), seen)
}

/// A tmpfs of `size` mounted for a test, unmounted when it ends (the folder holding the mount
/// point goes after).
#[allow(dead_code)]
struct SmallDisk(PathBuf, tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("small");
        fs::create_dir(&mount_point).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .output()
            .expect("mount is needed (util-linux), as root");
        assert!(
            mounted.status.success(),
            "cannot mount a tmpfs (these tests run as root): {}",
            text(&mounted)
        );
        SmallDisk(mount_point, dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_backup_onto_a_full_disk_ends_at_once_naming_the_cause_and_leaves_nothing() {
    let db = TestDb::new("full_disk");
    // About 8 MB of rows that do not compress: a dump far larger than the disk.
    db.query(
        "CREATE TABLE noise AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS body FROM generate_series(1, 80000) AS g",
    );
    let disk = SmallDisk::mount("1m");
    let mut child = xtask_command(
        &clone().dir,
        &[
            "backup",
            PG_HOST,
            "5432",
            &db.name,
            "postgres",
            disk.0.to_str().unwrap(),
            "--compress",
            "0",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("backup onto a full disk did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains(&format!(
            "the backup into {} failed; no backup was written",
            disk.0.display()
        )),
        "{message}"
    );
    let left: Vec<_> = fs::read_dir(&disk.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "the full disk still holds {left:?}");
    // No pg_dump is left waiting on a pipe.
    let dumps = Command::new("pgrep")
        .args(["-f", &format!("pg_dump.*{}", db.name)])
        .output()
        .unwrap();
    assert!(
        dumps.stdout.is_empty(),
        "pg_dump still runs: {}",
        text(&dumps)
    );
}

#[test]
fn backups_and_their_checksums_are_the_owners_alone_whatever_the_umask() {
    let db = TestDb::new("private_backup");
    db.query("CREATE TABLE customer (name text); INSERT INTO customer VALUES ('Ada')");
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" xtask backup 127.0.0.1 5432 \"$1\" postgres \"$2\"")
        .arg(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .arg(&db.name)
        .arg(dir.path())
        .current_dir(&clone().dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let mut modes = Vec::new();
    for entry in fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&entry.metadata().unwrap().permissions());
        modes.push((entry.file_name().into_string().unwrap(), mode & 0o777));
    }
    assert_eq!(modes.len(), 2, "{modes:?}");
    assert!(modes.iter().all(|(_, mode)| *mode == 0o600), "{modes:?}");
    assert!(text(&output).contains("checksum: "), "{}", text(&output));
}
