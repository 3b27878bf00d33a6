//! `cargo xtask archive`: continuous archiving with a real pgBackRest into an encrypted
//! repository, and point-in-time restores of a real PostgreSQL cluster of the test's own, as an
//! operator runs them: the rows as they were, a table back as a dump, a switch in place of the
//! live cluster, archiving that fails and recovers, commands killed part-way.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::metrics::sample;
use crate::support::{
    ArchivedCluster, Server, Sshd, TestDb, clone, clusters_named, eventually, free_port, get,
    run_ok, text, xtask_command,
};

/// A shop database with five sales, a time T, then three more sales and two deleted: the rows
/// committed before T are ids 1 to 5, the live ones 3 to 8.
fn sales_around_a_time(cluster: &ArchivedCluster) -> String {
    cluster.sql("postgres", "CREATE DATABASE shop");
    cluster.sql(
        "shop",
        "CREATE TABLE sales (id serial PRIMARY KEY, amount_cents integer NOT NULL);
         INSERT INTO sales (amount_cents) SELECT g * 100 FROM generate_series(1, 5) g",
    );
    std::thread::sleep(Duration::from_millis(1100));
    let target = cluster.now();
    std::thread::sleep(Duration::from_millis(1100));
    cluster.sql(
        "shop",
        "INSERT INTO sales (amount_cents) SELECT g * 100 FROM generate_series(6, 8) g",
    );
    cluster.sql("shop", "DELETE FROM sales WHERE id < 3");
    assert_eq!(ids(cluster.port, "shop"), "3,4,5,6,7,8");
    target
}

/// The first file named `name` under `dir`.
fn walk_find(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_find(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

fn ids(port: u16, database: &str) -> String {
    ArchivedCluster::sql_at(
        port,
        database,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM sales",
    )
}

/// `archive restore --to TARGET --switch --yes --json` on a free port, which must succeed and
/// say it switched: what it printed and its JSON.
fn switch_to(cluster: &ArchivedCluster, target: &str) -> (String, serde_json::Value) {
    let port = free_port().to_string();
    let said = cluster.archive_ok(&[
        "restore",
        "--to",
        target,
        "--pg-port",
        &port,
        "--switch",
        "--yes",
        "--json",
    ]);
    let summary = json_of(&said);
    assert_eq!(summary["switched"], true, "{said}");
    (said, summary)
}

fn json_of(output: &str) -> serde_json::Value {
    let line = output
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON object in:\n{output}"));
    serde_json::from_str(line).unwrap()
}

#[test]
fn a_restore_to_a_time_has_exactly_the_rows_before_it_and_extract_gives_them_as_a_dump_restore_loads()
 {
    let cluster = ArchivedCluster::new("pitr");
    let mut said = cluster.set_up();
    assert!(said.contains("first full backup"), "{said}");
    assert!(said.contains("archiving is set up"), "{said}");
    let config = fs::metadata(cluster.config()).unwrap();
    assert_eq!(
        config.mode() & 0o777,
        0o600,
        "the configuration is the postgres user's alone"
    );
    let postgres_uid = fs::metadata(&cluster.data_dir).unwrap().uid();
    assert_eq!(config.uid(), postgres_uid);
    assert_eq!(cluster.sql("postgres", "SHOW archive_mode"), "on");
    let passphrase = cluster.passphrase();
    assert!(passphrase.len() >= 32, "a long generated passphrase");
    let target = sales_around_a_time(&cluster);

    // Times outside the window are refused before anything is made.
    for outside in ["2020-01-01 00:00:00+00", "2099-01-01T00:00:00Z"] {
        let port = free_port().to_string();
        let output = cluster.archive(&["restore", "--to", outside, "--pg-port", &port]);
        let message = text(&output);
        assert!(!output.status.success(), "{message}");
        assert!(
            message.contains("is outside the restorable window"),
            "{message}"
        );
        assert!(message.contains("nothing was created"), "{message}");
        assert_eq!(
            clusters_named(&format!("{}-", cluster.name)),
            Vec::<String>::new()
        );
    }
    let no_offset = cluster.archive(&[
        "restore",
        "--to",
        "2026-12-06 14:05:00",
        "--pg-port",
        "5999",
    ]);
    assert!(!no_offset.status.success());
    assert!(
        text(&no_offset).contains("has no offset"),
        "{}",
        text(&no_offset)
    );

    // restore --to T: a new cluster beside the live one with the rows committed before T.
    let port = free_port();
    let restored = cluster.archive_ok(&[
        "restore",
        "--to",
        &target,
        "--pg-port",
        &port.to_string(),
        "--json",
    ]);
    said.push_str(&restored);
    let summary = json_of(&restored);
    assert_eq!(summary["switched"], false);
    assert!(
        summary["restored"]["stopped_before"]
            .as_str()
            .unwrap()
            .starts_with("commit of transaction")
    );
    assert_eq!(ids(port, "shop"), "1,2,3,4,5");
    assert_eq!(
        ArchivedCluster::sql_at(port, "postgres", "SHOW archive_mode"),
        "off"
    );
    assert_eq!(
        ids(cluster.port, "shop"),
        "3,4,5,6,7,8",
        "the live cluster is unchanged"
    );

    // extract --to T --table sales, over SSH: a dump and its checksum that `restore` loads.
    let sshd = Sshd::start();
    let on = sshd.destination(Path::new("/"));
    let out = cluster.out();
    let extracted = cluster.archive_ok(&[
        "--on",
        on.trim_end_matches('/'),
        "--ssh-config",
        &sshd.config(),
        "extract",
        "--to",
        &target,
        "--table",
        "sales",
        "--database",
        "shop",
        out.to_str().unwrap(),
        "--json",
    ]);
    said.push_str(&extracted);
    let summary = json_of(&extracted);
    let dump = summary["dumps"][0]["dump"].as_str().unwrap().to_owned();
    let checksum = summary["dumps"][0]["checksum_file"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        Path::new(&dump)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("sales-")
    );
    let sha = String::from_utf8(
        Command::new("sha256sum")
            .arg("-c")
            .arg(&checksum)
            .current_dir(&out)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(sha.ends_with(": OK\n"), "{sha}");
    assert_eq!(
        clusters_named(&format!("{}-extract-", cluster.name)),
        Vec::<String>::new(),
        "the scratch cluster is gone"
    );
    let recovered = TestDb::new("pitr_recovered");
    said.push_str(&run_ok(&[
        "restore",
        "127.0.0.1",
        "5432",
        &recovered.name,
        "postgres",
        &dump,
        &checksum,
        "--yes",
    ]));
    assert_eq!(
        recovered.query("SELECT string_agg(id || ':' || amount_cents, ',' ORDER BY id) FROM sales"),
        "1:100,2:200,3:300,4:400,5:500"
    );
    assert_eq!(
        ids(cluster.port, "shop"),
        "3,4,5,6,7,8",
        "the live cluster is unchanged"
    );

    // status: the backups, the window up to now, a healthy archiver.
    let status = cluster.archive_ok(&["status", "--json"]);
    said.push_str(&status);
    let report = json_of(&status);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["cipher"], "aes-256-cbc");
    assert_eq!(report["backups"].as_array().unwrap().len(), 1);
    assert_eq!(report["window"]["missing_wal"], serde_json::json!([]));
    assert_eq!(report["archiver"]["failing"], false);

    // An incident bundle holds this status, and no passphrase.
    let incident_dest = cluster.dir.path().join("opt");
    let bundles = cluster.dir.path().join("incidents");
    fs::create_dir_all(&incident_dest).unwrap();
    let captured = run_ok(&[
        "incident",
        "prod",
        incident_dest.to_str().unwrap(),
        "--out",
        bundles.to_str().unwrap(),
        "--archive-config",
        cluster.config().to_str().unwrap(),
        "--archive-stanza",
        &cluster.name,
    ]);
    said.push_str(&captured);
    let bundle = fs::read_dir(&bundles)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|extension| extension == "gz"))
        .expect("a bundle");
    let unpacked = cluster.dir.path().join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&bundle)
        .arg("-C")
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(untar.status.success(), "{}", text(&untar));
    let status_file =
        walk_find(&unpacked, "archive-status.txt").expect("archive-status.txt in the bundle");
    let in_bundle = fs::read_to_string(status_file).unwrap();
    assert!(
        in_bundle.contains("restorable window:") && in_bundle.contains("status: ok"),
        "{in_bundle}"
    );
    let everything = Command::new("grep")
        .args(["-r", "-F", &passphrase])
        .arg(&unpacked)
        .output()
        .unwrap();
    assert!(
        everything.stdout.is_empty(),
        "the bundle holds the passphrase"
    );

    // The passphrase is in the configuration and nowhere else.
    assert!(!said.contains(&passphrase), "the passphrase was printed");
    assert!(
        !cluster
            .sql("postgres", "SHOW archive_command")
            .contains(&passphrase)
    );
    for entry in fs::read_dir("/var/log/pgbackrest").unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(&cluster.name)
        {
            let log = fs::read_to_string(entry.path()).unwrap();
            assert!(
                !log.contains(&passphrase),
                "{} holds the passphrase",
                entry.path().display()
            );
            assert!(log.contains("--repo1-cipher-pass=<redacted>") || !log.contains("cipher-pass"));
        }
    }
}

#[test]
fn restore_with_switch_puts_the_data_as_of_the_time_in_place_of_the_live_cluster() {
    let cluster = ArchivedCluster::new("switch");
    cluster.set_up();
    let target = sales_around_a_time(&cluster);
    let port = free_port().to_string();
    let without_yes =
        cluster.archive(&["restore", "--to", &target, "--pg-port", &port, "--switch"]);
    assert!(!without_yes.status.success());
    assert!(
        text(&without_yes).contains("pass --yes to confirm; nothing was created"),
        "{}",
        text(&without_yes)
    );
    assert_eq!(ids(cluster.port, "shop"), "3,4,5,6,7,8");

    let (said, summary) = switch_to(&cluster, &target);
    // The live cluster, on its own port and data directory, has the rows as of the time.
    assert_eq!(ids(cluster.port, "shop"), "1,2,3,4,5");
    assert_eq!(cluster.sql("postgres", "SELECT pg_is_in_recovery()"), "f");
    assert_eq!(cluster.sql("postgres", "SHOW archive_mode"), "on");
    assert_eq!(
        cluster.sql(
            "postgres",
            "SELECT timeline_id FROM pg_control_checkpoint()"
        ),
        "2",
        "a new timeline"
    );
    let kept = summary["kept_data_directory"].as_str().unwrap();
    assert!(
        kept.starts_with(&format!("{}.before-", cluster.data_dir)),
        "{kept}"
    );
    assert!(
        Path::new(kept).join("PG_VERSION").is_file(),
        "the old data directory is kept"
    );
    assert!(said.contains(&format!("rm -rf {kept}")), "{said}");
    assert_eq!(
        clusters_named(&format!("{}-", cluster.name)),
        Vec::<String>::new(),
        "only the live cluster is left"
    );
    // It archives and backs up on its new timeline.
    cluster.sql("shop", "INSERT INTO sales (amount_cents) VALUES (900)");
    cluster.archive_ok(&["backup", "--type", "full"]);
    let report = json_of(&cluster.archive_ok(&["status", "--json"]));
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["backups"].as_array().unwrap().len(), 2);
}

#[test]
fn a_lost_data_directory_comes_back_as_of_a_time_in_its_place() {
    let cluster = ArchivedCluster::new("lost");
    cluster.set_up();
    let target = sales_around_a_time(&cluster);
    // The day's WAL reaches the repository; then the cluster's disk is lost.
    let segment = cluster.sql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    cluster.sql("postgres", "SELECT pg_switch_wal()");
    let archived = eventually(Duration::from_secs(30), || {
        cluster.sql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        ) >= segment
    });
    assert!(archived, "{segment} never reached the repository");
    let stopped = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &cluster.version,
            &cluster.name,
            "stop",
        ])
        .output()
        .unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped));
    fs::remove_dir_all(&cluster.data_dir).unwrap();

    let status = cluster.archive(&["status"]);
    assert!(!status.status.success());
    assert!(
        text(&status).contains("does not answer, so nothing is being archived"),
        "{}",
        text(&status)
    );

    let (said, summary) = switch_to(&cluster, &target);
    assert_eq!(summary["kept_data_directory"], serde_json::Value::Null);
    assert!(
        said.contains("there was no old data directory to keep"),
        "{said}"
    );
    assert_eq!(
        ids(cluster.port, "shop"),
        "1,2,3,4,5",
        "the day's sales up to the time are back"
    );
    assert_eq!(cluster.sql("postgres", "SHOW archive_mode"), "on");
    assert_eq!(
        clusters_named(&format!("{}-", cluster.name)),
        Vec::<String>::new()
    );
}

#[test]
fn status_fails_naming_the_wal_and_the_lag_while_archiving_fails_and_is_clean_once_it_recovers() {
    let cluster = ArchivedCluster::new("failing");
    cluster.set_up();
    // A server on this cluster, whose metrics the shipped alerts read.
    cluster.sql("postgres", "ALTER USER postgres PASSWORD 'archive-e2e'");
    cluster.sql("postgres", "CREATE DATABASE pos");
    let url = format!("postgres://127.0.0.1:{}/pos", cluster.port);
    let server = Server::start(&[
        ("SAULPOS_DB_URL", &url),
        ("SAULPOS_DB_USERNAME", "postgres"),
        ("SAULPOS_DB_PASSWORD", "archive-e2e"),
    ]);
    let scrape = || get(&server.url("/actuator/prometheus")).unwrap().1;
    let failing_in_metrics = |body: &str| {
        sample(
            body,
            "saulpos_db_wal_last_archive_failure_timestamp_seconds",
        ) > sample(body, "saulpos_db_wal_last_archived_timestamp_seconds")
    };
    let body = scrape();
    assert_eq!(sample(&body, "saulpos_db_wal_archiving_enabled"), Some(1.0));
    assert!(sample(&body, "saulpos_db_wal_last_archived_timestamp_seconds").unwrap() > 0.0);
    assert!(!failing_in_metrics(&body), "{body}");
    let archive = cluster.repo().join("archive");
    let set_writable = |writable: bool| {
        let changed = Command::new("chmod")
            .args(["-R", if writable { "u+w" } else { "a-w" }])
            .arg(&archive)
            .status()
            .unwrap();
        assert!(changed.success());
    };
    set_writable(false);
    cluster.sql(
        "postgres",
        "CREATE TABLE filler AS SELECT g FROM generate_series(1, 1000) g",
    );
    cluster.sql("postgres", "SELECT pg_switch_wal()");
    let mut last = String::new();
    let failed = eventually(Duration::from_secs(60), || {
        let output = cluster.archive(&["status", "--max-lag", "1s", "--json"]);
        last = text(&output);
        !output.status.success()
            && last.contains("archiving fails")
            && last.contains("archiving lags")
    });
    assert!(failed, "status never reported the failure:\n{last}");
    let report = json_of(&last);
    let failed_wal = report["archiver"]["last_failed_wal"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        last.contains(&format!("archiving fails: {failed_wal} failed at")),
        "{last}"
    );
    assert!(
        report["archiver"]["lag_seconds"].as_f64().unwrap() > 1.0,
        "{report}"
    );
    assert!(last.contains("error: archive status:"), "{last}");
    // The server's metrics say so too: what SaulposWalArchivingFailing and
    // SaulposWalArchiveLagging watch.
    let mut body = String::new();
    let seen = eventually(Duration::from_secs(30), || {
        cluster.sql("postgres", "INSERT INTO filler VALUES (0)");
        cluster.sql("postgres", "SELECT pg_switch_wal()");
        body = scrape();
        failing_in_metrics(&body)
            && sample(&body, "saulpos_db_wal_segments_waiting")
                .is_some_and(|waiting| waiting >= 1.0)
    });
    assert!(seen, "{body}");
    assert!(sample(&body, "saulpos_db_wal_archive_failures").unwrap() >= 1.0);

    set_writable(true);
    let mut last = String::new();
    let recovered = eventually(Duration::from_secs(90), || {
        // New WAL wakes the archiver, which retries the segments waiting, in order.
        cluster.sql("postgres", "INSERT INTO filler VALUES (0)");
        cluster.sql("postgres", "SELECT pg_switch_wal()");
        let output = cluster.archive(&["status", "--max-lag", "5s", "--json"]);
        last = text(&output);
        output.status.success()
    });
    assert!(recovered, "status never became clean:\n{last}");
    let report = json_of(&last);
    assert_eq!(
        report["window"]["missing_wal"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["archiver"]["failing"], false);
    // The segment that failed is in the repository now.
    let listed = Command::new("find")
        .arg(cluster.repo().join("archive"))
        .args(["-name", &format!("{failed_wal}-*")])
        .output()
        .unwrap();
    assert!(
        !listed.stdout.is_empty(),
        "{failed_wal} never reached the repository"
    );
    // The segment just switched may wait a moment; then nothing does.
    let mut body = String::new();
    let caught_up = eventually(Duration::from_secs(30), || {
        body = scrape();
        !failing_in_metrics(&body) && sample(&body, "saulpos_db_wal_segments_waiting") == Some(0.0)
    });
    assert!(caught_up, "{body}");
}

/// Runs `cargo xtask archive <args>` in a process group of its own, SIGKILLs the group as soon
/// as `point` holds, and returns everything it (and its guard) printed.
fn killed_at(cluster: &ArchivedCluster, args: &[&str], point: impl Fn() -> bool) -> String {
    let all = cluster.args(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut child = xtask_command(&clone().dir, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let reached = eventually(Duration::from_secs(120), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the command ended before it could be killed"
        );
        point()
    });
    assert!(reached, "the command never reached the point to kill it at");
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    // The guard keeps stderr open until it has cleaned up.
    let mut said = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    child.wait().unwrap();
    said
}

#[test]
fn restore_and_extract_killed_at_any_point_leave_the_live_cluster_as_it_was_and_nothing_behind() {
    let cluster = ArchivedCluster::new("killed");
    cluster.set_up();
    let target = sales_around_a_time(&cluster);
    let port = free_port().to_string();
    let out = cluster.out();
    let restore = [
        "restore",
        "--to",
        target.as_str(),
        "--pg-port",
        port.as_str(),
    ];
    let extract = [
        "extract",
        "--to",
        target.as_str(),
        "--table",
        "sales",
        "--database",
        "shop",
        out.to_str().unwrap(),
    ];
    let prefix = format!("{}-", cluster.name);
    let made = || !clusters_named(&prefix).is_empty();
    let data_dir_filled = || {
        clusters_named(&prefix).first().is_some_and(|name| {
            Path::new(&format!(
                "/var/lib/postgresql/{}/{name}/PG_VERSION",
                cluster.version
            ))
            .exists()
        })
    };
    let running = || {
        crate::support::clusters()
            .iter()
            .any(|row| row[1].starts_with(&prefix) && row[3].starts_with("online"))
    };
    let points: [(&str, &dyn Fn() -> bool); 3] = [
        ("its cluster was made", &made),
        ("pgBackRest restored files", &data_dir_filled),
        ("its cluster replays WAL", &running),
    ];
    for args in [&restore[..], &extract[..]] {
        for (point, reached) in points {
            let said = killed_at(&cluster, args, reached);
            assert!(
                said.contains("did not finish: removed that cluster and its data directory"),
                "{} killed when {point}:\n{said}",
                args[0]
            );
            assert!(said.contains("the live cluster was not touched"), "{said}");
            assert_eq!(
                clusters_named(&prefix),
                Vec::<String>::new(),
                "{} killed when {point}",
                args[0]
            );
            let left: Vec<String> = fs::read_dir(Path::new(&cluster.data_dir).parent().unwrap())
                .unwrap()
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect();
            assert_eq!(left, Vec::<String>::new(), "no data directory is left");
            let finals = fs::read_dir(&out)
                .unwrap()
                .flatten()
                .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
                .count();
            assert_eq!(finals, 0, "no dump is left under a final name");
            assert_eq!(
                ids(cluster.port, "shop"),
                "3,4,5,6,7,8",
                "the live cluster is as it was"
            );
        }
    }
    // The same commands run again work.
    cluster.archive_ok(&restore);
    assert_eq!(ids(port.parse().unwrap(), "shop"), "1,2,3,4,5");
    cluster.archive_ok(&extract);
    let dumps: Vec<_> = fs::read_dir(&out).unwrap().flatten().collect();
    assert_eq!(
        dumps.len(),
        2,
        "the dump and its checksum, and no partial file of a killed run"
    );
    for dump in dumps {
        assert_eq!(dump.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
}
