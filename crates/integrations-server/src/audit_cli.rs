//! `integrations-server audit verify`: checks the audit hash chain of the configured database.

use std::io::Write;
use std::process::ExitCode;

use integrations_core::audit_chain::verify_chain;
use integrations_core::StoreError;
use secrecy::ExposeSecret;

use crate::config::AuditVerifyConfig;
use crate::server::open_store;

/// Exit status when the chain is broken.
const EXIT_BROKEN: u8 = 1;

/// Exit status when the database cannot be opened or read.
const EXIT_ERROR: u8 = 2;

/// Verifies the chain and prints the result on stdout: `audit chain intact: N events` and
/// exit 0, or the first broken event and exit 1. Errors go to the log and exit 2.
pub async fn verify(config: &AuditVerifyConfig) -> ExitCode {
    let has_url = config
        .database
        .database_url
        .as_ref()
        .is_some_and(|url| !url.expose_secret().trim().is_empty());
    let file = config
        .database
        .data_dir
        .join(integrations_store::DATABASE_FILE);
    if !has_url && !file.is_file() {
        // Opening would create an empty database, which would verify as intact.
        tracing::error!(
            path = %file.display(),
            "no audit database found; pass the server's --data-dir or set DATABASE_URL"
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let (store, _) = match open_store(
        config.database.database_url.as_ref(),
        &config.database.data_dir,
    )
    .await
    {
        Ok(store) => store,
        Err(error) => {
            tracing::error!(error = %error, "failed to open the database");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let verification = match verify_chain(store.as_ref()).await {
        Ok(verification) => verification,
        // A row that does not decode was written or edited by hand: the log is broken, not
        // unreachable.
        Err(StoreError::Corrupt(message)) => {
            let mut stdout = std::io::stdout();
            let _ = writeln!(
                stdout,
                "audit chain broken: a stored event is invalid ({message})"
            );
            return ExitCode::from(EXIT_BROKEN);
        }
        Err(error) => {
            tracing::error!(error = %error, "failed to read the audit log");
            return ExitCode::from(EXIT_ERROR);
        }
    };

    let (line, code) = match &verification.first_break {
        None => (
            format!("audit chain intact: {} events", verification.checked),
            ExitCode::SUCCESS,
        ),
        Some(broken) => (
            format!("audit chain broken at {broken}"),
            ExitCode::from(EXIT_BROKEN),
        ),
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::from(EXIT_ERROR);
    }
    code
}
