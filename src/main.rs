use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use tollgate::config::{Cli, Command};
use tollgate::startup::Application;
use tollgate::{store, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => store::connect(&args.store_options())
            .await
            .map(|_| tracing::info!("migrations applied"))
            .context("could not apply migrations"),
        Command::Admin(args) => tollgate::cli::run(args).await.map(|out| println!("{out}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("tollgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: tollgate::config::ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown_signal())
        .await
        .context("server failed")
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
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
}
