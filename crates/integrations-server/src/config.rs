//! Command line and environment configuration of the server binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;

/// Reference HTTP server for the integrations credential store (sfp Integrations API).
// Options before a subcommand would be read as `serve` options and ignored by the subcommand,
// so they are rejected: `integrations-server audit verify --data-dir X` is the form that works.
#[derive(Debug, Parser)]
#[command(
    name = "integrations-server",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Subcommand to run, `serve` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Server settings used when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeConfig,
}

/// Subcommands of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API (the default).
    Serve(ServeConfig),
    /// Print a signed bearer token for this server on stdout.
    Token(TokenConfig),
    /// Add a new primary data key and re-encrypt every integration with it, while servers keep
    /// serving. A run that was stopped part way resumes where the rows left off.
    RotateKey(RotateKeyConfig),
    /// Rewrap the data keys with a new master key. Restart every server with the new key
    /// afterwards.
    RotateMasterKey(RotateMasterKeyConfig),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// The database, as `serve` finds it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// Directory of the SQLite database (and the key files), used when DATABASE_URL is unset.
    #[arg(long, env = "INTEGRATIONS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: `postgres://...` for PostgreSQL, `sqlite:...` for SQLite; unset uses
    /// SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<SecretString>,
}

/// The database and the master key, as `serve` finds them.
#[derive(Debug, Clone, Args)]
pub struct KeyedStoreConfig {
    /// Database.
    #[command(flatten)]
    pub database: DatabaseConfig,

    /// Current master key (base64 or hexadecimal); default is the data directory's key file.
    #[arg(long, env = "INTEGRATIONS_MASTER_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub master_key: Option<SecretString>,

    /// File holding the current master key.
    #[arg(
        long,
        env = "INTEGRATIONS_MASTER_KEY_FILE",
        conflicts_with = "master_key"
    )]
    pub master_key_file: Option<PathBuf>,
}

/// Settings of `integrations-server rotate-key`.
#[derive(Debug, Clone, Args)]
pub struct RotateKeyConfig {
    /// Database and master key.
    #[command(flatten)]
    pub store: KeyedStoreConfig,

    /// Integrations re-encrypted per batch.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,

    /// Pause between batches, in milliseconds, which leaves the database to the servers.
    #[arg(long, default_value_t = 20)]
    pub pause_ms: u64,
}

/// Settings of `integrations-server rotate-master-key`.
#[derive(Debug, Clone, Args)]
pub struct RotateMasterKeyConfig {
    /// Database and the current master key.
    #[command(flatten)]
    pub store: KeyedStoreConfig,

    /// The new master key (base64 or hexadecimal).
    #[arg(long, env = "INTEGRATIONS_NEW_MASTER_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub new_master_key: Option<SecretString>,

    /// File holding the new master key; refused unless only its owner can read it.
    #[arg(long, conflicts_with = "new_master_key")]
    pub new_master_key_file: Option<PathBuf>,
}

/// Subcommands of `integrations-server audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit hash chain and name the first edited, deleted or reordered event.
    /// Exits 0 when the chain is intact, 1 when it is broken, 2 when the database cannot be
    /// opened.
    Verify(AuditVerifyConfig),
}

/// Settings of `integrations-server audit verify`.
#[derive(Debug, Clone, Args)]
pub struct AuditVerifyConfig {
    /// Database whose audit log is checked.
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// Settings of `integrations-server serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "INTEGRATIONS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the SQLite database and the generated key files; created with mode 0700.
    #[arg(long, env = "INTEGRATIONS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: `postgres://...` for PostgreSQL, `sqlite:...` for SQLite; unset uses
    /// SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: Option<SecretString>,

    /// Master key: 32 bytes as base64 (or 64 hexadecimal digits). It wraps the data keys that
    /// seal credentials. Default is the key file in the data directory.
    #[arg(long, env = "INTEGRATIONS_MASTER_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub master_key: Option<SecretString>,

    /// File holding the master key (base64 or hexadecimal); refused unless only its owner can
    /// read it.
    #[arg(
        long,
        env = "INTEGRATIONS_MASTER_KEY_FILE",
        conflicts_with = "master_key"
    )]
    pub master_key_file: Option<PathBuf>,

    /// Token verification settings.
    #[command(flatten)]
    pub jwt: JwtConfig,

    /// Hosts (comma-separated) for which credential and config URLs may use plain http.
    #[arg(long, env = "INTEGRATIONS_ALLOW_HTTP_HOSTS", value_delimiter = ',')]
    pub allow_http_hosts: Vec<String>,

    /// Maximum number of platform probes running at once during a health check.
    #[arg(long, env = "INTEGRATIONS_HEALTH_CONCURRENCY", default_value_t = 32)]
    pub health_concurrency: usize,

    /// Time limit of one platform probe, in milliseconds.
    #[arg(long, env = "INTEGRATIONS_PROBE_TIMEOUT_MS", default_value_t = 10_000)]
    pub probe_timeout_ms: u64,

    /// Window, in milliseconds, in which repeated authentication failures and denied requests
    /// of one caller and route are counted in one audit event instead of one event each.
    #[arg(
        long,
        env = "INTEGRATIONS_AUDIT_REPEAT_WINDOW_MS",
        default_value_t = 60_000
    )]
    pub audit_repeat_window_ms: u64,
}

/// Bearer token verification settings, also used by `token` for signing.
#[derive(Debug, Clone, Args)]
pub struct JwtConfig {
    /// HS256 secret (at least 32 bytes) used instead of the data directory's `signing.key`.
    #[arg(long, env = "INTEGRATIONS_JWT_HS256_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub jwt_hs256_secret: Option<SecretString>,

    /// PEM public key (RSA or EC) that verifies tokens instead of an HS256 secret.
    #[arg(
        long,
        env = "INTEGRATIONS_JWT_PUBLIC_KEY",
        conflicts_with = "jwt_hs256_secret"
    )]
    pub jwt_public_key: Option<String>,

    /// File holding the PEM public key that verifies tokens.
    #[arg(
        long,
        env = "INTEGRATIONS_JWT_PUBLIC_KEY_PATH",
        conflicts_with_all = ["jwt_hs256_secret", "jwt_public_key"]
    )]
    pub jwt_public_key_path: Option<PathBuf>,

    /// Algorithm of tokens signed with the public key's private half: RS256, RS384, RS512,
    /// PS256, PS384, PS512, ES256 or ES384. Inferred from the key type when absent.
    #[arg(long, env = "INTEGRATIONS_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,

    /// Required `iss` claim.
    #[arg(long, env = "INTEGRATIONS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "INTEGRATIONS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// Settings of `integrations-server token`.
#[derive(Debug, Clone, Args)]
pub struct TokenConfig {
    /// Data directory whose `signing.key` signs the token; the key is created when missing.
    #[arg(long, env = "INTEGRATIONS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Role claim: owner, member or application.
    #[arg(long)]
    pub role: String,

    /// Subject claim, such as a user or application name.
    #[arg(long)]
    pub subject: String,

    /// Lifetime of the token, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_seconds: u64,

    /// Signing settings; only HS256 secrets can sign.
    #[command(flatten)]
    pub jwt: JwtConfig,
}

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}
