//! Load generator for credential reads: starts one or two `integrations-server` processes on
//! loopback, stores one GitHub integration for a project, then keeps a fixed number of
//! connections busy reading its credentials and prints reads per second and latency percentiles.
//!
//! ```sh
//! cargo build --release -p integrations-server
//! cargo run --release --example credential_load -- --backend sqlite --processes 1
//! INTEGRATIONS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release --example credential_load -- --backend postgres --processes 2
//! ```
//!
//! Options: `--backend sqlite|postgres`, `--processes N`, `--connections N` (default 64),
//! `--seconds N` (default 10). The server binary is `target/release/integrations-server` unless
//! `INTEGRATIONS_SERVER_BIN` names another. Every request goes to 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Options {
    backend: String,
    processes: usize,
    connections: usize,
    seconds: u64,
}

fn parse_options() -> Options {
    let mut options = Options {
        backend: "sqlite".into(),
        processes: 1,
        connections: 64,
        seconds: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut index = 0;
    while index < args.len() {
        let value = args.get(index + 1).cloned().unwrap_or_default();
        match args[index].as_str() {
            "--backend" => options.backend = value,
            "--processes" => options.processes = value.parse().expect("--processes takes a number"),
            "--connections" => {
                options.connections = value.parse().expect("--connections takes a number")
            }
            "--seconds" => options.seconds = value.parse().expect("--seconds takes a number"),
            other => panic!("unknown option {other}"),
        }
        index += 2;
    }
    options
}

/// A server process that is killed when dropped.
struct ServerProcess {
    child: Child,
    base_url: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary() -> PathBuf {
    std::env::var_os("INTEGRATIONS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/integrations-server"))
}

fn start_server(data_dir: &Path, database_url: Option<&str>) -> ServerProcess {
    let mut command = Command::new(server_binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn,integrations_server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    let mut child = command
        .spawn()
        .expect("failed to start integrations-server; build it with cargo build --release -p integrations-server");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let base_url = loop {
        let line = lines
            .next()
            .expect("server exited before it logged its address")
            .expect("server log is readable");
        if let Some(position) = line.find("listening on ") {
            let address = line[position + "listening on ".len()..].trim();
            let address = address.split_whitespace().next().unwrap_or(address);
            break address.trim_end_matches('/').to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    ServerProcess { child, base_url }
}

fn mint_token(data_dir: &Path, role: &str) -> String {
    let output = Command::new(server_binary())
        .args(["token", "--role", role, "--subject", "load", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("token subcommand runs");
    assert!(output.status.success(), "token subcommand failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn create_postgres_database(admin_url: &str) -> String {
    let name = format!("load_{}", uuid::Uuid::new_v4().simple());
    let status = Command::new("psql")
        .arg(admin_url)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql is needed to create the benchmark database");
    assert!(status.success(), "CREATE DATABASE failed");
    let mut url = url_without_database(admin_url);
    url.push('/');
    url.push_str(&name);
    url
}

fn url_without_database(url: &str) -> String {
    let scheme_end = url.find("://").map(|index| index + 3).unwrap_or(0);
    match url[scheme_end..].find('/') {
        Some(slash) => url[..scheme_end + slash].to_owned(),
        None => url.to_owned(),
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let options = parse_options();
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    let database_url = match options.backend.as_str() {
        "sqlite" => None,
        "postgres" => {
            let admin = std::env::var("INTEGRATIONS_TEST_POSTGRES_URL")
                .expect("set INTEGRATIONS_TEST_POSTGRES_URL for the postgres backend");
            Some(create_postgres_database(&admin).await)
        }
        other => panic!("unknown backend {other}; expected sqlite or postgres"),
    };

    let servers: Vec<ServerProcess> = (0..options.processes)
        .map(|_| start_server(data_dir.path(), database_url.as_deref()))
        .collect();
    let owner = mint_token(data_dir.path(), "owner");
    let application = mint_token(data_dir.path(), "application");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections)
        .build()
        .unwrap();
    let base = &servers[0].base_url;
    let project = "load-org/load-repo";
    let response = client
        .post(format!("{base}/sfp/api/projects"))
        .bearer_auth(&owner)
        .json(&json!({"identifier": project, "remoteUrl": "https://github.com/load-org/load-repo.git"}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "project: {}",
        response.status()
    );
    let response = client
        .post(format!("{base}/sfp/api/integrations"))
        .bearer_auth(&owner)
        .json(&json!({
            "provider": "github",
            "authType": "pat",
            "credentials": {"token": "ghp_load_test_token"},
            "projects": [project],
        }))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "integration: {}",
        response.status()
    );

    let urls: Arc<Vec<String>> = Arc::new(
        servers
            .iter()
            .map(|server| {
                format!(
                    "{}/sfp/api/integrations/credentials?provider=github&project=load-org%2Fload-repo",
                    server.base_url
                )
            })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..options.connections {
        let client = client.clone();
        let urls = Arc::clone(&urls);
        let token = application.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut request = worker;
            while Instant::now() < deadline {
                let url = &urls[request % urls.len()];
                request += 1;
                let sent = Instant::now();
                match client.get(url).bearer_auth(&token).send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }

    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (worker_latencies, worker_errors) = worker.await.unwrap();
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    let elapsed = started.elapsed();
    latencies.sort();

    println!(
        "backend={} processes={} connections={} seconds={:.1}",
        options.backend,
        options.processes,
        options.connections,
        elapsed.as_secs_f64()
    );
    println!(
        "reads={} errors={} reads_per_second={:.0}",
        latencies.len(),
        errors,
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency_ms p50={:.2} p99={:.2} max={:.2}",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        percentile(&latencies, 1.0).as_secs_f64() * 1000.0
    );

    drop(servers);
    if let (Some(url), Ok(admin)) = (
        database_url,
        std::env::var("INTEGRATIONS_TEST_POSTGRES_URL"),
    ) {
        let name = url.rsplit('/').next().unwrap_or_default().to_owned();
        let _ = Command::new("psql")
            .arg(&admin)
            .args(["-q", "-c", &format!("DROP DATABASE IF EXISTS {name}")])
            .status();
    }
}
