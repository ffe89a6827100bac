//! `auth-server`: OAuth2 authorization-code flow into the token store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Obtain OAuth tokens for chat platforms and keep them refreshed in the token store.
#[derive(Parser, Debug)]
#[command(name = "auth-server", version, about)]
struct Cli {
    /// Config file (TOML, YAML or JSON). Environment variables override it.
    #[arg(long, env = "CHATBUS_CONFIG")]
    config: Option<PathBuf>,
    /// What to do; without a command, serve.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the status page and the OAuth flow, and keep tokens fresh (the default).
    Serve,
    /// Print every account in the token store with its expiry and state.
    Status,
    /// Refresh now: one account (e.g. twitch:mybot) or every account.
    Refresh {
        /// Account key `<platform>:<login>`; all accounts when omitted.
        account: Option<String>,
    },
    /// Revoke an account's tokens at the provider and remove it from the store.
    Revoke {
        /// Account key `<platform>:<login>`.
        account: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: auth_server::Config = match common::service::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => return common::service::run(config, auth_server::run).await,
        Command::Status => auth_server::commands::status(&config)
            .await
            .map(|text| print!("{text}")),
        Command::Refresh { account } => {
            match auth_server::commands::refresh(&config, account.as_deref()).await {
                Ok(report) => {
                    report.lines.iter().for_each(|l| println!("{l}"));
                    if report.failures > 0 {
                        return ExitCode::FAILURE;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Command::Revoke { account } => auth_server::commands::revoke(&config, &account)
            .await
            .map(|line| println!("{line}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("auth-server failed: {e:#}");
            eprintln!("auth-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
