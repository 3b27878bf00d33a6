//! The files of a deploy payload, defined once: what `package` puts beside the release in
//! `saulpos-<env>-<version>.tar.gz`, and what `cargo xtask deploy` and the payload's `install.sh`
//! lay out from it in `<dest>/saulpos-<env>/`. The scripts are the templates in
//! `xtask/templates/`, with `common.sh` spliced into install.sh and rollback.sh.

pub const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];

/// Stands for `<dest>/saulpos-<env>` in the payload's systemd unit until an install fills it in.
pub const PAYLOAD_DIR: &str = "@PAYLOAD_DIR@";

/// gzip level of the payloads: nearly all of a payload is the already compressed server
/// archive, which no level makes smaller.
pub const LEVEL: u32 = 1;

/// `saulpos-<env>-<version>`: the payload's top folder, and its archive's name without `.tar.gz`.
pub fn payload_name(env: &str, version: &str) -> String {
    format!("saulpos-{env}-{version}")
}

pub fn payload_archive_name(env: &str, version: &str) -> String {
    format!("{}.tar.gz", payload_name(env, version))
}

pub fn unit_name(env: &str) -> String {
    format!("saulpos-{env}.service")
}

/// The release's core files, which every payload carries beside its own files: the server
/// archive, its `.sha256`, the manifests, the SBOM and the provenance.
pub fn core_files(version: &str, archive_name: &str) -> Vec<String> {
    vec![
        archive_name.to_owned(),
        format!("{archive_name}.sha256"),
        crate::release::manifest::TEXT_NAME.to_owned(),
        crate::release::manifest::JSON_NAME.to_owned(),
        crate::release::sbom::file_name(version),
        crate::release::provenance::FILE_NAME.to_owned(),
    ]
}

/// One file of a payload, at its top folder.
pub struct PayloadFile {
    pub name: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// The files `package` writes into every payload besides the release itself (the server
/// archive, its `.sha256` and the manifests).
pub fn generated(env: &str, version: &str, archive_name: &str) -> Vec<PayloadFile> {
    let script = |template: &str| {
        template
            .replace("# @COMMON@\n", include_str!("../../templates/common.sh"))
            .replace(
                "# @ENV_FILE@\n",
                include_str!("../../templates/env_file.sh"),
            )
            .replace("@ENV@", env)
            .replace("@VERSION@", version)
            .replace("@ARCHIVE@", archive_name)
            .replace("@REQUIRED@", required(env))
            .into_bytes()
    };
    let file = |name: &str, mode: u32, contents: Vec<u8>| PayloadFile {
        name: name.to_owned(),
        mode,
        contents,
    };
    vec![
        file(
            "README.md",
            0o644,
            readme(env, version, archive_name).into_bytes(),
        ),
        file(
            "install.sh",
            0o755,
            script(include_str!("../../templates/install.sh")),
        ),
        file(
            "rollback.sh",
            0o755,
            script(include_str!("../../templates/rollback.sh")),
        ),
        file(
            "run.sh",
            0o755,
            script(include_str!("../../templates/run.sh")),
        ),
        file("saulpos.env.example", 0o644, env_example(env).into_bytes()),
        file(&unit_name(env), 0o644, systemd_unit(env).into_bytes()),
    ]
}

/// The variables run.sh refuses to start without.
fn required(env: &str) -> &'static str {
    if env == "dev" {
        ""
    } else {
        "SAULPOS_DB_URL SAULPOS_DB_USERNAME"
    }
}

fn readme(env: &str, version: &str, archive_name: &str) -> String {
    let name = payload_name(env, version);
    format!(
        "# {name}: saulpos-server {version} for the {env} environment\n\n\
         Installs on a Linux host with bash, coreutils, GNU tar and util-linux; no Rust toolchain,\n\
         no checkout. Check the download first, beside the payload:\n\
         `sha256sum -c {name}.tar.gz.sha256`.\n\n\
         1. Install (checks {archive_name} against its checksum and manifest, then switches the\n   \
         live release in one rename):\n\n   \
         ```sh\n   \
         ./install.sh /opt/saulpos --reason CHG-123\n   \
         ```\n\n\
         2. Configure, once per host (every variable is in the example, with a comment):\n\n   \
         ```sh\n   \
         cd /opt/saulpos/saulpos-{env} && cp saulpos.env.example saulpos.env && chmod 600 saulpos.env && \"${{EDITOR:-vi}}\" saulpos.env\n   \
         ```\n\n\
         3. Start, with systemd (the unit runs the server as an unprivileged user) or by hand:\n\n   \
         ```sh\n   \
         sudo systemctl link /opt/saulpos/saulpos-{env}/saulpos-{env}.service && sudo systemctl enable --now saulpos-{env}\n   \
         /opt/saulpos/saulpos-{env}/run.sh        # or by hand, in the foreground\n   \
         ```\n\n\
         To go back to the release before: `/opt/saulpos/saulpos-{env}/rollback.sh --reason INC-42`.\n\
         `./install.sh --help` and `rollback.sh --help` list every option.\n"
    )
}

/// Every variable the server reads, with a comment; the required ones uncommented.
fn env_example(env: &str) -> String {
    let required = env != "dev";
    let mut text = format!(
        "# Environment of saulpos-{env}. Copy it to saulpos.env beside run.sh, readable by its\n\
         # owner only (install -m 600 saulpos.env.example saulpos.env: it holds the database\n\
         # password), and fill it in. run.sh loads it; the\n\
         # profile ({env}) is set by run.sh. Values here override config/application*.toml.\n\n"
    );
    let line = |text: &mut String, comment: &str, name: &str, value: &str, set: bool| {
        text.push_str(&format!(
            "# {comment}\n{}{name}={value}\n\n",
            if set { "" } else { "# " }
        ));
    };
    let requirement = if required {
        "Required."
    } else {
        "Optional in dev."
    };
    line(
        &mut text,
        &format!(
            "{requirement} The database: postgres://host:port/database (jdbc:postgresql://host:port/database works too); no credentials in it."
        ),
        "SAULPOS_DB_URL",
        "postgres://db.internal:5432/saulpos",
        required,
    );
    line(
        &mut text,
        &format!("{requirement} The database user."),
        "SAULPOS_DB_USERNAME",
        "saulpos",
        required,
    );
    line(
        &mut text,
        "Optional. The database password; any characters; never logged. Without it, the server's user's ~/.pgpass, or trust or certificate authentication.",
        "SAULPOS_DB_PASSWORD",
        "",
        false,
    );
    line(
        &mut text,
        "The CA certificate (PEM) the database's certificate must chain to, for sslmode=verify-ca or verify-full in SAULPOS_DB_URL (default: the built-in Mozilla roots).",
        "SAULPOS_DB_SSLROOTCERT",
        "/etc/ssl/certs/saulpos-db-ca.pem",
        false,
    );
    line(
        &mut text,
        "The smoke checks' user (cargo xtask smoke --env-file this file, and deploy --restart); create it once with `run.sh user add smoke --role cashier`. Never used by the server.",
        "SAULPOS_SMOKE_USERNAME",
        "smoke",
        false,
    );
    line(
        &mut text,
        "The smoke user's password; never logged or printed.",
        "SAULPOS_SMOKE_PASSWORD",
        "",
        false,
    );
    line(
        &mut text,
        "The address to listen on (default 0.0.0.0).",
        "SAULPOS_SERVER_ADDRESS",
        "0.0.0.0",
        false,
    );
    line(
        &mut text,
        "The port to listen on (default 8080).",
        "SAULPOS_SERVER_PORT",
        "8080",
        false,
    );
    line(
        &mut text,
        "Seconds requests in flight may take to finish on SIGTERM (default 20).",
        "SAULPOS_SHUTDOWN_GRACE_SECONDS",
        "20",
        false,
    );
    line(
        &mut text,
        "Database connections in the pool (default 10).",
        "SAULPOS_DB_POOL_SIZE",
        "10",
        false,
    );
    line(
        &mut text,
        "Milliseconds one connection attempt may take (default 3000).",
        "SAULPOS_DB_CONNECT_TIMEOUT_MS",
        "3000",
        false,
    );
    line(
        &mut text,
        "Seconds startup retries an unreachable database before giving up (default 30).",
        "SAULPOS_DB_STARTUP_TIMEOUT_SECONDS",
        "30",
        false,
    );
    line(
        &mut text,
        "Milliseconds after which health reports the database DOWN (default 1000).",
        "SAULPOS_HEALTH_TIMEOUT_MS",
        "1000",
        false,
    );
    line(
        &mut text,
        "Log format: text or json.",
        "SAULPOS_LOG_FORMAT",
        if env == "dev" { "text" } else { "json" },
        false,
    );
    line(
        &mut text,
        "Log filter, e.g. info or info,sqlx=warn (default info).",
        "SAULPOS_LOG_LEVEL",
        "info",
        false,
    );
    line(
        &mut text,
        "Where run.sh sends logs when started by hand (default logs/saulpos.log; - for the terminal).",
        "SAULPOS_LOG_FILE",
        "-",
        false,
    );
    text
}

/// The systemd unit: runs run.sh as a dynamic unprivileged user that may write nothing, with
/// saulpos.env read by systemd (so it can stay root-owned 0600). `@PAYLOAD_DIR@` is filled in at
/// install time.
fn systemd_unit(env: &str) -> String {
    let service = format!("saulpos-{env}");
    format!(
        "# {service}.service, from the payload; installed beside run.sh. Enable it with:\n\
         #   sudo systemctl link {PAYLOAD_DIR}/{service}.service && sudo systemctl enable --now {service}\n\
         [Unit]\n\
         Description=SaulPOS server ({env})\n\
         Wants=network-online.target\n\
         After=network-online.target postgresql.service\n\
         \n\
         [Service]\n\
         Type=exec\n\
         DynamicUser=yes\n\
         WorkingDirectory={PAYLOAD_DIR}\n\
         EnvironmentFile=-{PAYLOAD_DIR}/saulpos.env\n\
         ExecStart={PAYLOAD_DIR}/run.sh\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=30\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         UMask=0077\n\
         CapabilityBoundingSet=\n\
         AmbientCapabilities=\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         PrivateDevices=yes\n\
         PrivateUsers=yes\n\
         DevicePolicy=closed\n\
         ProtectHostname=yes\n\
         ProtectClock=yes\n\
         ProtectKernelTunables=yes\n\
         ProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\n\
         ProtectProc=invisible\n\
         ProcSubset=pid\n\
         RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n\
         RestrictNamespaces=yes\n\
         RestrictRealtime=yes\n\
         RestrictSUIDSGID=yes\n\
         LockPersonality=yes\n\
         MemoryDenyWriteExecute=yes\n\
         RemoveIPC=yes\n\
         KeyringMode=private\n\
         SystemCallArchitectures=native\n\
         SystemCallFilter=@system-service\n\
         SystemCallFilter=~@privileged @resources\n\
         SystemCallErrorNumber=EPERM\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}
