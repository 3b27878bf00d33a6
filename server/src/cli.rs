//! The server process: flags, configuration, startup (database, migrations), serving, and a
//! bounded graceful shutdown on SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::auth::Auth;
use crate::auth::user_command::UserCommand;
use crate::auth::users;
use crate::config::Config;
use crate::routes;
use crate::{build_info, catalogue, db, serve, telemetry};

/// SaulPOS server. Configuration comes from the profile files and SAULPOS_* variables:
/// SAULPOS_PROFILE (dev, staging, prod), SAULPOS_DB_URL, SAULPOS_DB_USERNAME, SAULPOS_DB_PASSWORD,
/// SAULPOS_SERVER_ADDRESS, SAULPOS_SERVER_PORT, and optional policy settings (see docs/).
/// `saulpos-server user ...` manages the users who can log in, with the same configuration.
#[derive(Parser)]
#[command(name = "saulpos-server", version = build_info::long_version())]
struct Flags {
    /// Check the configuration, print it with secrets redacted, and exit without starting.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    #[command(subcommand)]
    User(UserCommand),
}

pub fn main() -> ExitCode {
    let flags = Flags::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("saulpos-server: {error}");
            return ExitCode::from(2);
        }
    };
    if flags.check_config {
        for (key, value) in config.describe() {
            println!("{key} = {value}");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(Command::User(command)) = flags.command {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("saulpos-server: cannot start the async runtime: {error}");
                return ExitCode::FAILURE;
            }
        };
        return match runtime.block_on(command.run(config)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("saulpos-server: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    telemetry::init(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("saulpos-server: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("saulpos-server stopped: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, migrates, and serves until a shutdown signal.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    tracing::info!(
        version = build_info::VERSION,
        commit = build_info::COMMIT,
        build_time = build_info::BUILD_TIME,
        "starting saulpos-server"
    );
    for (key, value) in config.describe() {
        tracing::info!("config {key} = {value}");
    }
    let pool = db::connect_with_retry(&config.database).await?;
    db::migrate(&pool).await?;
    let auth = Arc::new(Auth::new(&config.auth)?);
    if config.load_demo_catalogue {
        catalogue::load_demo(&pool)
            .await
            .context("cannot load the demo catalogue")?;
        users::add_demo_cashier(&pool, &auth.hasher)
            .await
            .context("cannot add the demo cashier")?;
    }
    let address = (config.server.address, config.server.port);
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on {}:{}; free the port or set SAULPOS_SERVER_PORT / SAULPOS_SERVER_ADDRESS",
            address.0, address.1
        )
    })?;
    tracing::info!(
        "listening on http://{} (profile {})",
        listener.local_addr()?,
        config.profile
    );
    let state = routes::state(pool.clone(), &config, auth);
    let max_connections =
        serve::connection_cap(config.server.max_connections, config.database.pool_size);
    if max_connections < config.server.max_connections {
        tracing::warn!(
            "serving at most {max_connections} connections at once, not {}: the open file limit allows no more (raise LimitNOFILE or ulimit -n)",
            config.server.max_connections
        );
    }
    let stopping = Arc::new(Notify::new());
    let signalled = stopping.clone();
    let server = serve::serve(
        listener,
        routes::app(state),
        &config.server,
        max_connections,
        async move {
            shutdown_signal().await;
            signalled.notify_one();
        },
    );
    let grace = config.server.shutdown_grace;
    tokio::select! {
        () = server => {},
        () = async { stopping.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("requests still in flight after {} s; stopping anyway", grace.as_secs());
        }
    }
    pool.close().await;
    tracing::info!("saulpos-server stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received: finishing requests in flight");
}
