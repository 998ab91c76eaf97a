//! Starts the real `integrations-server` binary on loopback for end-to-end tests.

#![allow(
    dead_code,
    reason = "each test file uses a different part of this module"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_integrations-server");

/// Environment variables that would change the server's configuration if inherited.
const CONFIG_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "INTEGRATIONS_LISTEN",
    "INTEGRATIONS_DATA_DIR",
    "INTEGRATIONS_MASTER_KEY",
    "INTEGRATIONS_MASTER_KEY_FILE",
    "INTEGRATIONS_NEW_MASTER_KEY",
    "INTEGRATIONS_JWT_HS256_SECRET",
    "INTEGRATIONS_JWT_PUBLIC_KEY",
    "INTEGRATIONS_JWT_PUBLIC_KEY_PATH",
    "INTEGRATIONS_JWT_ALGORITHM",
    "INTEGRATIONS_JWT_ISSUER",
    "INTEGRATIONS_JWT_AUDIENCE",
    "INTEGRATIONS_ALLOW_HTTP_HOSTS",
    "INTEGRATIONS_HEALTH_CONCURRENCY",
    "INTEGRATIONS_PROBE_TIMEOUT_MS",
    "INTEGRATIONS_AUDIT_REPEAT_WINDOW_MS",
    "INTEGRATIONS_GITHUB_API_URL",
    "INTEGRATIONS_ENTRA_AUTHORITY",
    "INTEGRATIONS_PROBE_ALLOWED_HOSTS",
    "GITHUB_APP_ID",
    "GITHUB_APP_PRIVATE_KEY",
    "GITHUB_APP_PRIVATE_KEY_PATH",
];

/// Platform API URL of servers whose test sets none. Nothing normally listens on port 9 of
/// loopback, so a health check that finds credentials fails to connect instead of calling a real
/// platform.
const UNREACHABLE_PLATFORM_URL: &str = "http://127.0.0.1:9/";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process with its data directory, captured log and tokens for each role.
pub struct Server {
    child: Option<Child>,
    pub base_url: String,
    pub data_dir: PathBuf,
    _temp_dir: Option<Arc<tempfile::TempDir>>,
    log: Arc<Mutex<String>>,
    log_done: Mutex<Option<mpsc::Receiver<()>>>,
    pub owner: String,
    pub member: String,
    pub application: String,
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct Options {
    /// Existing data directory; a temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Leave out the `serve` subcommand.
    pub no_subcommand: bool,
    /// Skip minting role tokens, for servers that verify with a public key.
    pub no_tokens: bool,
}

impl Options {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn without_tokens(mut self) -> Self {
        self.no_tokens = true;
        self
    }

    pub fn data_dir(mut self, path: &Path) -> Self {
        self.data_dir = Some(path.to_owned());
        self
    }
}

/// Failure to start: the exit status and everything the process logged.
#[derive(Debug)]
pub struct StartFailure {
    pub status: ExitStatus,
    pub log: String,
}

impl Server {
    /// Starts a server with a fresh data directory.
    pub fn start() -> Server {
        Server::start_with(Options::default())
    }

    /// Starts a server, panicking with its log when it does not listen.
    pub fn start_with(options: Options) -> Server {
        match Server::try_start(options) {
            Ok(server) => server,
            Err(failure) => panic!(
                "server did not start ({}):\n{}",
                failure.status, failure.log
            ),
        }
    }

    /// Starts a server and waits for its `listening on` line.
    pub fn try_start(options: Options) -> Result<Server, StartFailure> {
        let (data_dir, temp_dir) = match &options.data_dir {
            Some(path) => (path.clone(), None),
            None => {
                let temp = tempfile::tempdir().expect("temporary directory");
                (temp.path().join("data"), Some(Arc::new(temp)))
            }
        };

        let mut command = Command::new(BINARY);
        if !options.no_subcommand {
            command.arg("serve");
        }
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for name in CONFIG_VARIABLES {
            command.env_remove(name);
        }
        command.env("RUST_LOG", "info");
        command.env("INTEGRATIONS_ALLOW_HTTP_HOSTS", "127.0.0.1,localhost");
        command.env("INTEGRATIONS_GITHUB_API_URL", UNREACHABLE_PLATFORM_URL);
        command.env("INTEGRATIONS_ENTRA_AUTHORITY", UNREACHABLE_PLATFORM_URL);
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("server binary starts");

        let log = Arc::new(Mutex::new(String::new()));
        let (address_sender, address_receiver) = mpsc::channel();
        let (done_sender, done_receiver) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(position) = line.find("listening on http://") {
                    let rest = &line[position + "listening on ".len()..];
                    let address = rest.split_whitespace().next().unwrap_or(rest).to_owned();
                    let _ = address_sender.send(address);
                }
                let mut log = log_writer.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            let _ = done_sender.send(());
        });

        let base_url = match address_receiver.recv_timeout(START_TIMEOUT) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("server exit status");
                let _ = done_receiver.recv_timeout(Duration::from_secs(5));
                let log = log.lock().unwrap().clone();
                return Err(StartFailure { status, log });
            }
        };

        let env = options.env.clone();
        let token = |role: &str, subject: &str| {
            if options.no_tokens {
                String::new()
            } else {
                mint_token(&data_dir, role, subject, &env)
            }
        };
        let (owner, member, application) = (
            token("owner", "test-owner"),
            token("member", "test-member"),
            token("application", "test-app"),
        );
        Ok(Server {
            child: Some(child),
            base_url,
            owner,
            member,
            application,
            data_dir,
            _temp_dir: temp_dir,
            log,
            log_done: Mutex::new(Some(done_receiver)),
        })
    }

    /// Returns one server for the whole test binary. A watchdog process stops it once the test
    /// binary exits, because statics are never dropped.
    pub fn shared() -> &'static Server {
        static SHARED: OnceLock<Server> = OnceLock::new();
        SHARED.get_or_init(|| {
            let server = Server::start();
            let server_pid = server.child.as_ref().map(Child::id).unwrap_or_default();
            let script = format!(
                "while kill -0 {} 2>/dev/null; do sleep 0.2; done; kill -TERM {server_pid} 2>/dev/null",
                std::process::id()
            );
            // The watchdog must outlive the test binary, so nothing waits for it.
            #[allow(clippy::zombie_processes, reason = "the watchdog outlives the test binary")]
            Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("watchdog starts");
            server
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Returns everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM, waits for the exit and for the log to be fully read.
    pub fn terminate(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `signal` (a name such as `INT`), waits for the exit and for the log to be read.
    pub fn stop_with(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
        let exit = wait_with_timeout(&mut child, Duration::from_secs(15));
        if let Some(done) = self.log_done.lock().unwrap().take() {
            let _ = done.recv_timeout(Duration::from_secs(5));
        }
        exit
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("server exit status") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not exit within {timeout:?} after the stop signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds a command that runs the server binary with `args` and inherits no configuration from
/// the test's environment.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command.args(args).stdin(Stdio::null());
    for name in CONFIG_VARIABLES {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "info");
    command
}

/// Mints a token with the `token` subcommand for the server on `data_dir`.
pub fn mint_token(data_dir: &Path, role: &str, subject: &str, env: &[(String, String)]) -> String {
    let mut command = Command::new(BINARY);
    command
        .args(["token", "--role", role, "--subject", subject, "--data-dir"])
        .arg(data_dir);
    for name in CONFIG_VARIABLES {
        command.env_remove(name);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("token subcommand runs");
    assert!(
        output.status.success(),
        "token subcommand failed: {output:?}"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Returns the HS256 secret the server on `data_dir` verifies with.
pub fn signing_secret(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("signing.key"))
        .expect("signing key file")
        .trim()
        .to_owned()
}

pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Returns a name unique to this call, for projects and subjects.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A status and a parsed JSON body (`Value::Null` when the body is empty).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

/// Sends a request with an optional token and JSON body.
pub async fn call(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    into_reply(request.send().await.expect("request is sent")).await
}

/// Sends a raw body with an owner token.
pub async fn call_raw(server: &Server, method: &str, path: &str, body: Vec<u8>) -> Reply {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = client
        .request(method, server.url(path))
        .bearer_auth(&server.owner)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request is sent");
    into_reply(response).await
}

pub async fn into_reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    Reply {
        status,
        body,
        text,
        headers,
    }
}

/// Registers a GitHub project `identifier` as owner.
pub async fn register_project(server: &Server, identifier: &str) {
    let reply = call(
        server,
        "POST",
        "/sfp/api/projects",
        Some(&server.owner),
        Some(serde_json::json!({
            "identifier": identifier,
            "remoteUrl": format!("https://github.com/{identifier}.git"),
        })),
    )
    .await;
    assert_eq!(reply.status, 201, "register {identifier}: {}", reply.text);
}

/// Creates an integration as owner and returns its id.
pub async fn create_integration(server: &Server, body: Value) -> String {
    let reply = call(
        server,
        "POST",
        "/sfp/api/integrations",
        Some(&server.owner),
        Some(body),
    )
    .await;
    assert_eq!(reply.status, 201, "create integration: {}", reply.text);
    reply.body["id"].as_str().unwrap().to_owned()
}

/// Body of a global GitHub PAT integration.
pub fn github_global(token: &str, is_default: bool) -> Value {
    serde_json::json!({
        "provider": "github",
        "authType": "pat",
        "credentials": {"token": token},
        "isGlobal": true,
        "isDefault": is_default,
    })
}

/// Body of a GitHub PAT integration scoped to `projects`.
pub fn github_scoped(token: &str, projects: &[&str]) -> Value {
    serde_json::json!({
        "provider": "github",
        "authType": "pat",
        "credentials": {"token": token},
        "projects": projects,
    })
}

/// Percent-encodes a project identifier for a path segment.
pub fn encode(identifier: &str) -> String {
    identifier.replace('/', "%2F")
}
