//! Several server processes on one PostgreSQL database: concurrent writes split across the
//! processes, and a process killed in the middle of writes.
//!
//! These tests need `INTEGRATIONS_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`); each creates and drops a database of its own.
//! Without the variable they print why they are skipped and pass.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_integrations-server");

struct Server {
    child: Child,
    base_url: String,
    log: Arc<std::sync::Mutex<String>>,
}

impl Server {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns a server without waiting for it, so several can start at the same instant.
fn spawn_server(data_dir: &Path, database_url: &str) -> Child {
    Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("server binary starts")
}

/// Reads the server's log until it reports its address, then keeps draining it in the background.
fn wait_listening(mut child: Child) -> Server {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let base_url = loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("server exited before listening: {status:?}");
        };
        log.lock().unwrap().push_str(&format!("{line}\n"));
        if let Some(position) = line.find("listening on ") {
            let rest = &line[position + "listening on ".len()..];
            let address = rest.split_whitespace().next().unwrap_or(rest);
            break address.trim_end_matches('/').to_owned();
        }
    };
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    Server {
        child,
        base_url,
        log,
    }
}

fn mint_token(data_dir: &Path, role: &str) -> String {
    let output = Command::new(BINARY)
        .args([
            "token",
            "--role",
            role,
            "--subject",
            "multi-process-test",
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .expect("token subcommand runs");
    assert!(
        output.status.success(),
        "token subcommand failed: {output:?}"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A database of the test's own, dropped when the guard is dropped.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("INTEGRATIONS_TEST_POSTGRES_URL") else {
            eprintln!("skipped: INTEGRATIONS_TEST_POSTGRES_URL is not set, so there is no PostgreSQL server to test against");
            return None;
        };
        let name = format!("mp_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let scheme_end = admin_url.find("://").map(|index| index + 3).unwrap_or(0);
        let base = match admin_url[scheme_end..].find('/') {
            Some(slash) => &admin_url[..scheme_end + slash],
            None => admin_url.as_str(),
        };
        let url = format!("{base}/{name}");
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(url: &str, statement: &str) {
    let status = Command::new("psql")
        .arg(url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", statement])
        .status()
        .expect("psql runs");
    assert!(status.success(), "psql failed: {statement}");
}

async fn register_project(client: &reqwest::Client, base: &str, token: &str, identifier: &str) {
    let response = client
        .post(format!("{base}/sfp/api/projects"))
        .bearer_auth(token)
        .json(&json!({
            "identifier": identifier,
            "remoteUrl": format!("https://github.com/{identifier}.git"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "register {identifier}");
}

async fn list_github(client: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let response = client
        .get(format!("{base}/sfp/api/integrations?provider=github"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Vec<Value>>().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_keep_one_default() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    // Both processes start at the same moment on an empty database, so both run migrations.
    let first = spawn_server(data_dir.path(), &database.url);
    let second = spawn_server(data_dir.path(), &database.url);
    let servers = [wait_listening(first), wait_listening(second)];
    let owner = mint_token(data_dir.path(), "owner");
    let client = reqwest::Client::new();
    let bases: Vec<String> = servers
        .iter()
        .map(|server| server.base_url.clone())
        .collect();

    let created: Arc<std::sync::Mutex<BTreeMap<String, String>>> = Arc::default();
    // Seed a few integrations so that the concurrent phase has defaults to move from the start.
    for index in 0..10 {
        let token = format!("ghp_multi_process_seed_{index}");
        let response = client
            .post(format!("{}/sfp/api/integrations", bases[index % 2]))
            .bearer_auth(&owner)
            .json(&json!({
                "provider": "github",
                "authType": "pat",
                "credentials": {"token": token},
                "isGlobal": true,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "seed integration {index}");
        let body: Value = response.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        created.lock().unwrap().insert(id, token);
    }

    let server_errors = Arc::new(AtomicUsize::new(0));
    let moved_defaults = Arc::new(AtomicUsize::new(0));
    let mut requests = Vec::new();
    for index in 0..200usize {
        let client = client.clone();
        let base = bases[index % 2].clone();
        let owner = owner.clone();
        let created = Arc::clone(&created);
        let server_errors = Arc::clone(&server_errors);
        let moved_defaults = Arc::clone(&moved_defaults);
        requests.push(async move {
            let known: Vec<String> = created.lock().unwrap().keys().cloned().collect();
            let response = if index % 3 == 2 {
                let id = &known[index % known.len()];
                client
                    .patch(format!("{base}/sfp/api/integrations/{id}"))
                    .bearer_auth(&owner)
                    .json(&json!({"isDefault": true}))
                    .send()
                    .await
                    .unwrap()
            } else {
                let token = format!("ghp_multi_process_{index}");
                let response = client
                    .post(format!("{base}/sfp/api/integrations"))
                    .bearer_auth(&owner)
                    .json(&json!({
                        "provider": "github",
                        "authType": "pat",
                        "credentials": {"token": token},
                        "isGlobal": true,
                        "isDefault": index % 2 == 0,
                    }))
                    .send()
                    .await
                    .unwrap();
                if response.status() == 201 {
                    let body: Value = response.json().await.unwrap();
                    let id = body["id"].as_str().unwrap().to_owned();
                    created.lock().unwrap().insert(id, token);
                    return;
                }
                response
            };
            if response.status().is_server_error() {
                server_errors.fetch_add(1, Ordering::SeqCst);
            }
            if response.status() == 200 {
                moved_defaults.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    join_all(requests).await;

    assert_eq!(server_errors.load(Ordering::SeqCst), 0, "no 5xx answers");
    assert!(
        moved_defaults.load(Ordering::SeqCst) > 0,
        "some defaults were moved"
    );
    let created = created.lock().unwrap().clone();
    assert!(
        created.len() >= 140,
        "creates acknowledged: {}",
        created.len()
    );

    let listed = list_github(&client, &bases[1], &owner).await;
    let listed_ids: Vec<&str> = listed
        .iter()
        .map(|row| row["id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = listed_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        listed_ids.len(),
        "no integration listed twice"
    );
    for id in created.keys() {
        assert!(
            unique.contains(id.as_str()),
            "created integration {id} is listed"
        );
    }
    let defaults = listed.iter().filter(|row| row["isDefault"] == true).count();
    assert_eq!(defaults, 1, "exactly one github default");

    let application = mint_token(data_dir.path(), "application");
    for base in &bases {
        let response = client
            .get(format!(
                "{base}/sfp/api/integrations/credentials?provider=github"
            ))
            .bearer_auth(&application)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let records: Vec<Value> = response.json().await.unwrap();
        let tokens: BTreeMap<String, String> = records
            .iter()
            .map(|record| {
                (
                    record["integration_id"].as_str().unwrap().to_owned(),
                    record["credentials"]["token"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (id, token) in &created {
            assert_eq!(
                tokens.get(id),
                Some(token),
                "credential of {id} through {base}"
            );
        }
        assert_eq!(
            records[0]["is_default"], true,
            "default first through {base}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_process_loses_no_write() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let mut victim = wait_listening(spawn_server(data_dir.path(), &database.url));
    let survivor = wait_listening(spawn_server(data_dir.path(), &database.url));
    let owner = mint_token(data_dir.path(), "owner");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for index in 0..4 {
        register_project(
            &client,
            &survivor.base_url,
            &owner,
            &format!("kill-org/repo-{index}"),
        )
        .await;
    }

    let acknowledged: Arc<std::sync::Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut writers = Vec::new();
    for writer in 0..8usize {
        let client = client.clone();
        let base = victim.base_url.clone();
        let owner = owner.clone();
        let acknowledged = Arc::clone(&acknowledged);
        writers.push(tokio::spawn(async move {
            for round in 0..200usize {
                let token = format!("ghp_killed_{writer}_{round}");
                let projects = [
                    format!("kill-org/repo-{}", round % 4),
                    format!("kill-org/repo-{}", (round + 1) % 4),
                ];
                let sent = client
                    .post(format!("{base}/sfp/api/integrations"))
                    .bearer_auth(&owner)
                    .json(&json!({
                        "provider": "github",
                        "authType": "pat",
                        "credentials": {"token": token},
                        "projects": projects,
                    }))
                    .send()
                    .await;
                let Ok(response) = sent else {
                    return;
                };
                if response.status() != 201 {
                    return;
                }
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                let id = body["id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().insert(id, token);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    victim.kill();
    for writer in writers {
        writer.await.unwrap();
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty(),
        "some writes were acknowledged before the kill"
    );

    let listed = list_github(&client, &survivor.base_url, &owner).await;
    let listed_ids: BTreeSet<String> = listed
        .iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect();
    for id in acknowledged.keys() {
        assert!(
            listed_ids.contains(id),
            "acknowledged write {id} survived the kill"
        );
    }
    for row in &listed {
        let projects = row["projects"].as_array().unwrap();
        assert_eq!(
            projects.len(),
            2,
            "integration {} keeps both projects",
            row["id"]
        );
    }

    let response = client
        .get(format!(
            "{}/sfp/api/integrations/credentials?provider=github",
            survivor.base_url
        ))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "survivor keeps serving");
    let records: Vec<Value> = response.json().await.unwrap();
    assert_eq!(
        records.len(),
        listed.len(),
        "every stored integration opens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_database_reachability() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let server = wait_listening(spawn_server(data_dir.path(), &database.url));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let health = format!("{}/health", server.base_url);

    let response = client.get(&health).send().await.unwrap();
    assert_eq!(response.status(), 200, "health while the database answers");

    // Dropping the database closes the server's connections and makes every new one fail.
    psql(
        &database.admin_url,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", database.name),
    );
    let response = client.get(&health).send().await.unwrap();
    assert_eq!(response.status(), 503, "health after the database is gone");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_password_stays_out_of_logs() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    // Trust authentication ignores the password, so the URL still connects.
    let password = "pw_marker_5c81d2";
    let url = database
        .url
        .replacen("://postgres@", &format!("://postgres:{password}@"), 1);
    assert_ne!(url, database.url, "the test URL names the postgres user");
    let data_dir = tempfile::tempdir().unwrap();
    let mut server = wait_listening(spawn_server(data_dir.path(), &url));
    let owner = mint_token(data_dir.path(), "owner");

    let client = reqwest::Client::new();
    register_project(&client, &server.base_url, &owner, "secret-url/repo").await;
    let health = client
        .get(format!("{}/health", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.kill();

    let log = server.log.lock().unwrap().clone();
    // The start-up line names the database, so a leak would show there first.
    assert!(log.contains("opening database"), "{log}");
    assert!(
        !log.contains(password),
        "the log contains the database password"
    );
}

/// A rotation run by its own process is followed by servers that started before it: each seals
/// its next write with the new data key and opens values sealed by a key it never loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_follow_a_rotation_by_another_process() {
    let Some(database) = TestDatabase::create() else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let first = wait_listening(spawn_server(&data_dir, &database.url));
    let second = wait_listening(spawn_server(&data_dir, &database.url));
    let token = mint_token(&data_dir, "owner");
    let client = reqwest::Client::new();

    let create = |base: String, value: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let response = client
                .post(format!("{base}/sfp/api/integrations"))
                .bearer_auth(&token)
                .json(&json!({
                    "provider": "github",
                    "authType": "pat",
                    "credentials": {"token": value},
                    "isGlobal": true,
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            let body: Value = response.json().await.unwrap();
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let mut expected = BTreeMap::new();
    for index in 0..60 {
        let base = if index % 2 == 0 { &first } else { &second };
        let value = format!("ghp_before_rotation_{index}");
        let id = create(base.base_url.clone(), value.clone()).await;
        expected.insert(id, value);
    }

    let output = Command::new(BINARY)
        .args([
            "rotate-key",
            "--batch-size",
            "7",
            "--pause-ms",
            "0",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("DATABASE_URL", &database.url)
        .output()
        .expect("rotate-key runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let new_key = stdout
        .lines()
        .find_map(|line| line.strip_prefix("added primary data key "))
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    assert!(
        stdout.contains(&format!("  {new_key}: 60 (primary)")),
        "{stdout}"
    );

    // Both servers write after the rotation without being notified of it.
    for (index, server) in [&first, &second].into_iter().enumerate() {
        let value = format!("ghp_after_rotation_{index}");
        let id = create(server.base_url.clone(), value.clone()).await;
        expected.insert(id, value);
    }
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let on_new_key: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM integrations WHERE get_byte(sealed_credentials, 0) = 2 \
         AND substring(sealed_credentials FROM 3 FOR length(convert_to($1, 'UTF8'))) \
             = convert_to($1, 'UTF8')",
    )
    .bind(&new_key)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(on_new_key, 62);

    for server in [&first, &second] {
        let response = client
            .get(format!(
                "{}/sfp/api/integrations/credentials?provider=github",
                server.base_url
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let records: Vec<Value> = response.json().await.unwrap();
        let read: BTreeMap<String, String> = records
            .iter()
            .map(|record| {
                (
                    record["integration_id"].as_str().unwrap().to_owned(),
                    record["credentials"]["token"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(read, expected);
    }
}
