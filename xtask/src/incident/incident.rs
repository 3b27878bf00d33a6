//! `cargo xtask incident <env> <dest>`: capture evidence into one bundle,
//! `incident-<UTC time>-<severity>.tar.gz` with its `.sha256`. Every collector is bounded in
//! time and size; one that fails is recorded and never stops the capture. Secrets are redacted
//! from everything in the bundle.

use std::fs;
use std::io::{BufWriter, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use xshell::Shell;

use crate::deploy::http::{self, BaseUrl};
use crate::deploy::installation::Installation;
use crate::incident::redact::Redactor;
use crate::release::archive::{self, Entry};
use crate::release::checksum::{self, HashingWriter};
use crate::{flags, release::manifest, util::durable, util::env_file, util::utc};

/// The most any one collected file may hold; logs keep their end.
const FILE_LIMIT: usize = 4 * 1024 * 1024;
/// How long any one collector may run.
const COLLECTOR_TIMEOUT: Duration = Duration::from_secs(10);

impl flags::Incident {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let installation = Installation::new(self.env, &self.dest)?;
        let out_dir = self
            .out
            .clone()
            .unwrap_or_else(|| installation.dir.join("incidents"));
        // Evidence holds logs and customer data: the folder and the files, the owner's alone.
        durable::create_private_dir_all(&out_dir)
            .with_context(|| format!("cannot create the output folder {}", out_dir.display()))?;
        let now = utc::now();
        let severity = self.severity.label();
        let stem = format!("incident-{}-{severity}", utc::compact(now));
        let env_text = fs::read_to_string(installation.dir.join("saulpos.env")).unwrap_or_default();
        let mut redactor = Redactor::new(&env_text);

        let mut bundle = Bundle::default();
        let live = installation.live();
        bundle.collect("release", "release.txt", || {
            if !installation.dir.is_dir() {
                bail!(
                    "nothing is installed for this environment at {}",
                    installation.dir.display()
                );
            }
            let manifest =
                fs::read_to_string(installation.dir.join("current").join(manifest::TEXT_NAME))
                    .with_context(|| {
                        format!("no live release under {}", installation.dir.display())
                    })?;
            Ok(format!(
                "live: {}\nprevious: {}\n\n{manifest}",
                live.as_deref().unwrap_or("none"),
                installation.previous().as_deref().unwrap_or("none")
            ))
        });
        bundle.collect("deploy history", "history.log", || {
            fs::read_to_string(installation.dir.join(crate::deploy::installation::HISTORY))
                .context("no deploy history yet")
        });
        let url = self
            .url
            .clone()
            .unwrap_or_else(|| installation.health_url());
        let mut health_status = String::from("unknown");
        let base = BaseUrl::parse(&url);
        for (name, path, file) in [
            ("health", "/actuator/health", "health.json"),
            ("info", "/actuator/info", "info.json"),
            ("metrics snapshot", "/actuator/prometheus", "metrics.txt"),
        ] {
            bundle.collect(name, file, || {
                let base = base
                    .as_ref()
                    .map_err(|error| anyhow::anyhow!("{error:#}"))?;
                let response = http::request(base, "GET", path, None, Duration::from_secs(5))?;
                let text = response.text();
                if name == "health" {
                    health_status = format!("HTTP {} {}", response.status, http::truncate(&text));
                }
                Ok(format!(
                    "GET {} -> {}\n{text}\n",
                    base.show(path),
                    response.status
                ))
            });
        }
        if bundle.failed("health") {
            health_status = "unreachable (see collectors.json)".to_owned();
        }
        // The database of the payload (dev's local default when saulpos.env names none).
        let (db_host, db_port) = env_file::database(&env_text)
            .map(|database| (database.host, database.port))
            .unwrap_or_else(|| ("127.0.0.1".to_owned(), "5432".to_owned()));
        bundle.collect("database availability", "database.txt", || {
            let started = Instant::now();
            let output = bounded(
                Command::new("pg_isready").args(["-h", &db_host, "-p", &db_port, "-t", "5"]),
            )?;
            Ok(format!(
                "pg_isready -h {db_host} -p {db_port}: {output}latency: {:.0} ms\n",
                started.elapsed().as_secs_f64() * 1000.0
            ))
        });
        bundle.collect("service log", "logs/saulpos.log", || {
            tail(&installation.dir.join("logs/saulpos.log"))
        });
        bundle.collect("journal", "logs/journal.txt", || {
            bounded(Command::new("journalctl").args([
                "-u",
                &format!("{}.service", installation.service_name()),
                "-n",
                "5000",
                "--no-pager",
            ]))
        });
        bundle.collect("environment", "environment.txt", || {
            if env_text.is_empty() {
                bail!("no saulpos.env in {}", installation.dir.display());
            }
            Ok(env_text.clone())
        });
        bundle.collect("archive status", "archive-status.txt", || {
            let (report, passphrase) = crate::database::archive::status::for_bundle(
                &self.archive_config,
                &self.archive_stanza,
            )?;
            if let Some(passphrase) = passphrase {
                redactor.learn(&passphrase);
            }
            Ok(report)
        });
        bundle.collect("host", "host.txt", || {
            let mut text = String::new();
            for (title, program, args) in [
                ("kernel", "uname", &["-a"][..]),
                ("uptime", "uptime", &[][..]),
                ("disk", "df", &["-h"][..]),
                ("memory", "free", &["-m"][..]),
            ] {
                let result = bounded(Command::new(program).args(args))
                    .unwrap_or_else(|error| format!("(failed: {error:#})\n"));
                text.push_str(&format!(
                    "## {title}: {program} {}\n{result}\n",
                    args.join(" ")
                ));
            }
            let load =
                fs::read_to_string("/proc/loadavg").unwrap_or_else(|_| "(unavailable)".into());
            text.push_str(&format!("## load: /proc/loadavg\n{load}\n"));
            Ok(text)
        });

        let report = incident_markdown(
            severity,
            now,
            &installation,
            live.as_deref(),
            &url,
            &health_status,
            &bundle,
        );
        bundle
            .files
            .push(("incident.md".to_owned(), report.into_bytes()));
        let collectors: Vec<Value> = bundle.results.clone();
        bundle.files.push((
            "collectors.json".to_owned(),
            format!("{}\n", serde_json::to_string_pretty(&collectors)?).into_bytes(),
        ));

        // Everything through the redactor, then one deterministic archive.
        let mut entries = vec![Entry {
            path: stem.clone(),
            mode: 0o755,
            contents: None,
        }];
        let mut folders = std::collections::BTreeSet::new();
        for (name, bytes) in &bundle.files {
            if let Some((folder, _)) = name.rsplit_once('/') {
                folders.insert(folder.to_owned());
            }
            let text = String::from_utf8_lossy(bytes);
            entries.push(Entry {
                path: format!("{stem}/{name}"),
                mode: 0o644,
                contents: Some(redactor.redact(&text).into_bytes()),
            });
        }
        for folder in folders {
            entries.push(Entry {
                path: format!("{stem}/{folder}"),
                mode: 0o755,
                contents: None,
            });
        }
        let name = format!("{stem}.tar.gz");
        let final_path = out_dir.join(&name);
        let temporary = durable::temporary_name(&final_path);
        let file = durable::create_private(&temporary)
            .with_context(|| format!("cannot create {}", temporary.display()))?;
        let mut writer = HashingWriter::new(BufWriter::new(file));
        let written =
            archive::write_tar_gz(&mut entries, now.max(0) as u64, archive::LEVEL, &mut writer)
                .and_then(|()| {
                    let (buffered, digest, size) = writer.finish();
                    let file = buffered.into_inner().map_err(|error| error.into_error())?;
                    file.sync_all()?;
                    Ok((digest, size))
                });
        let (digest, size) = match written {
            Ok(done) => done,
            Err(error) => {
                let _ = fs::remove_file(&temporary);
                return Err(error).context(format!("cannot write {}", final_path.display()));
            }
        };
        fs::rename(&temporary, &final_path)?;
        durable::write_with_mode(
            &out_dir.join(format!("{name}.sha256")),
            checksum::line(&digest, &name).as_bytes(),
            0o600,
        )?;
        let failed: Vec<&str> = bundle
            .results
            .iter()
            .filter(|result| result["ok"] == false)
            .filter_map(|result| result["collector"].as_str())
            .collect();
        eprintln!(
            "captured {} ({size} bytes) in {:.1}s; {} collector(s) failed{}",
            final_path.display(),
            started.elapsed().as_secs_f64(),
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(": {}", failed.join(", "))
            }
        );
        eprintln!(
            "checksum: {}.sha256; next: fill in incident.md (timeline, root cause, preventive action)",
            final_path.display()
        );
        if self.json {
            let out = json!({
                "bundle": final_path,
                "checksum_file": out_dir.join(format!("{name}.sha256")),
                "sha256": digest,
                "size": size,
                "severity": severity,
                "failed_collectors": failed,
            });
            println!("{out}");
        } else {
            println!("{}", final_path.display());
        }
        Ok(())
    }
}

/// What was collected, and how each collector did.
#[derive(Default)]
struct Bundle {
    files: Vec<(String, Vec<u8>)>,
    results: Vec<Value>,
}

impl Bundle {
    /// Runs one collector; its output becomes `file`, its failure a line in collectors.json.
    fn collect(
        &mut self,
        collector: &str,
        file: &str,
        work: impl FnOnce() -> anyhow::Result<String>,
    ) {
        let started = Instant::now();
        let outcome = work();
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(mut text) => {
                if text.len() > FILE_LIMIT {
                    let mut cut = text.len() - FILE_LIMIT;
                    while !text.is_char_boundary(cut) {
                        cut += 1;
                    }
                    text = format!(
                        "[... the first {cut} bytes were left out ...]\n{}",
                        &text[cut..]
                    );
                }
                self.files.push((file.to_owned(), text.into_bytes()));
                self.results
                    .push(json!({"collector": collector, "file": file, "ok": true, "ms": millis}));
                eprintln!("  ok      {collector} ({millis:.0} ms)");
            }
            Err(error) => {
                let message = format!("{error:#}");
                eprintln!("  failed  {collector}: {message}");
                self.results.push(json!({"collector": collector, "file": file, "ok": false, "error": message, "ms": millis}));
            }
        }
    }

    fn failed(&self, collector: &str) -> bool {
        self.results
            .iter()
            .any(|result| result["collector"] == collector && result["ok"] == false)
    }
}

/// Runs a command with its output captured, killed after COLLECTOR_TIMEOUT.
fn bounded(command: &mut Command) -> anyhow::Result<String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = (&mut stdout)
            .take(FILE_LIMIT as u64)
            .read_to_end(&mut bytes);
        bytes
    });
    let stderr = crate::database::backup::collect_stderr(&mut child);
    let deadline = Instant::now() + COLLECTOR_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{program} did not finish within {}s",
                COLLECTOR_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let err = stderr.join().unwrap_or_default();
    if !status.success() {
        bail!("{program} failed ({status}): {}{}", out.trim(), err.trim());
    }
    Ok(out)
}

/// The end of a log file, at most FILE_LIMIT bytes.
fn tail(path: &Path) -> anyhow::Result<String> {
    use std::io::{Seek, SeekFrom};
    let mut file =
        fs::File::open(path).with_context(|| format!("no log file at {}", path.display()))?;
    let size = file.metadata()?.len();
    let start = size.saturating_sub(FILE_LIMIT as u64);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn incident_markdown(
    severity: &str,
    now: i64,
    installation: &Installation,
    live: Option<&str>,
    url: &str,
    health: &str,
    bundle: &Bundle,
) -> String {
    let time = utc::rfc3339(now);
    let collected: Vec<String> = bundle
        .results
        .iter()
        .map(|result| {
            let name = result["collector"].as_str().unwrap_or("?");
            match result["error"].as_str() {
                Some(error) => format!("- {name}: FAILED: {error}"),
                None => format!("- {name}: `{}`", result["file"].as_str().unwrap_or("?")),
            }
        })
        .collect();
    format!(
        "# Incident {time} ({severity})\n\n\
         ## Severity\n\n{severity}: {definition}\n\n\
         ## Summary\n\n\
         - environment: {env} (folder {folder})\n\
         - live release: {live}\n\
         - health at capture ({url}): {health}\n\
         - captured by: {user} at {time}\n\n\
         ## Timeline (UTC)\n\n\
         - {time}: evidence captured with `cargo xtask incident {env} ...`\n\
         - _when it started, when it was detected, each action taken, when it was resolved_\n\n\
         ## Root cause\n\n_what failed and why; link the evidence files below_\n\n\
         ## Stabilisation\n\n_what restored service (rollback, restart, restore), with the commands run_\n\n\
         ## Preventive action\n\n_what changes so it does not happen again, each with an owner and a date_\n\n\
         ## Evidence in this bundle\n\n{collected}\n",
        definition = flags::Severity::definition_of(severity),
        env = installation.env,
        folder = installation.dir.display(),
        live = live.unwrap_or("none"),
        user = crate::deploy::installation::user(),
        collected = collected.join("\n"),
    )
}
