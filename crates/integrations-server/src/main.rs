//! `integrations-server`: serves the sfp Integrations API, prints a bearer token, or verifies
//! the audit hash chain.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use integrations_core::Role;
use integrations_server::auth::TokenSigner;
use integrations_server::{rotation, AuditCommand, Cli, Command, TokenConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();

    match cli.command {
        Some(Command::Token(config)) => print_token(&config),
        Some(Command::Serve(config)) => serve(config),
        Some(Command::RotateKey(config)) => rotate_key(&config),
        Some(Command::RotateMasterKey(config)) => rotate_master_key(&config),
        Some(Command::Audit(AuditCommand::Verify(config))) => verify_audit(&config),
        None => serve(cli.serve),
    }
}

fn serve(config: integrations_server::ServeConfig) -> ExitCode {
    match block_on(integrations_server::run(config)) {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            tracing::error!("server did not start: {error}");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

/// Runs `work` on a new multi-threaded runtime; `None` when the runtime cannot start, which is
/// logged.
fn block_on<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => Some(runtime.block_on(work)),
        Err(error) => {
            tracing::error!(error = %error, "failed to start the async runtime");
            None
        }
    }
}

/// Exits 0 when every integration is sealed by the new primary data key, 130 when stopped by a
/// signal, 1 otherwise.
fn rotate_key(config: &integrations_server::RotateKeyConfig) -> ExitCode {
    let mut stdout = std::io::stdout();
    let outcome = block_on(async {
        tokio::select! {
            result = rotation::rotate_key(config, &mut stdout) => Some(result),
            () = integrations_server::server::shutdown_signal() => None,
        }
    });
    match outcome {
        None => ExitCode::FAILURE,
        Some(None) => {
            // Each row is replaced in its own write, so stopping between two leaves every
            // integration readable.
            tracing::warn!("rotate-key interrupted; run it again to resume with the same data key");
            ExitCode::from(130)
        }
        Some(Some(Ok(report))) if report.complete() => ExitCode::SUCCESS,
        Some(Some(Ok(_))) => {
            tracing::error!("some integrations are not sealed by the new data key yet; fix or replace the ones listed, then run rotate-key again");
            ExitCode::FAILURE
        }
        Some(Some(Err(error))) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn rotate_master_key(config: &integrations_server::RotateMasterKeyConfig) -> ExitCode {
    let mut stdout = std::io::stdout();
    match block_on(rotation::rotate_master_key(config, &mut stdout)) {
        Some(Ok(_)) => ExitCode::SUCCESS,
        Some(Err(error)) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

/// Exits as `audit_cli::verify` decides, or 2 when the runtime cannot start.
fn verify_audit(config: &integrations_server::config::AuditVerifyConfig) -> ExitCode {
    block_on(integrations_server::audit_cli::verify(config)).unwrap_or(ExitCode::from(2))
}

fn print_token(config: &TokenConfig) -> ExitCode {
    let role = match config.role.parse::<Role>() {
        Ok(role) => role,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::from(2);
        }
    };
    let token = TokenSigner::from_config(&config.jwt, &config.data_dir)
        .and_then(|signer| signer.sign(role, &config.subject, config.ttl_seconds));
    match token {
        Ok(token) => {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{token}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!("failed to create a token: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` selects levels, default `info` with sqlx notices at `warn`.
fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
