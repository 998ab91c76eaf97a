//! Key rotation as an operator runs it: `rotate-key` and `rotate-master-key` as their own
//! processes against the data directory of a server that keeps serving.
//!
//! `INTEGRATIONS_ROTATION_ROWS` sets the number of integrations of the rotation-under-load test
//! (default 1,000); BENCHMARKS.md records a release run with 10,000.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, command, Options, Server};
use serde_json::{json, Value};

/// Providers whose credentials are one `token` field, so every integration reads back the same
/// way; reads filter by provider to spread the load.
const PROVIDERS: &[&str] = &["github", "gitlab", "npm", "github_packages"];

fn rows() -> usize {
    std::env::var("INTEGRATIONS_ROTATION_ROWS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1_000)
}

fn token_value(index: usize) -> String {
    format!("tok_rotation_{index:06}")
}

/// Creates `count` global integrations over HTTP, eight at a time, and returns the expected token
/// of each id.
async fn create_many(server: &Server, count: usize) -> HashMap<String, String> {
    let client = reqwest::Client::new();
    let mut expected = HashMap::new();
    let indexes: Vec<usize> = (0..count).collect();
    for chunk in indexes.chunks(8) {
        let requests = chunk.iter().map(|&index| {
            let client = client.clone();
            let url = server.url("/sfp/api/integrations");
            let owner = server.owner.clone();
            async move {
                let body = json!({
                    "provider": PROVIDERS[index % PROVIDERS.len()],
                    "authType": "pat",
                    "credentials": {"token": token_value(index)},
                    "isGlobal": true,
                });
                let response = client
                    .post(url)
                    .bearer_auth(owner)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 201);
                let created: Value = response.json().await.unwrap();
                (
                    created["id"].as_str().unwrap().to_owned(),
                    token_value(index),
                )
            }
        });
        expected.extend(futures::future::join_all(requests).await);
    }
    expected
}

/// Reads every provider's credentials and checks each value against `expected`. Returns the
/// number of credentials checked.
async fn read_all_and_check(
    client: &reqwest::Client,
    server: &Server,
    expected: &HashMap<String, String>,
    overrides: &HashMap<String, String>,
) -> Result<usize, String> {
    let mut checked = 0;
    for provider in PROVIDERS {
        let response = client
            .get(server.url(&format!(
                "/sfp/api/integrations/credentials?provider={provider}"
            )))
            .bearer_auth(&server.owner)
            .send()
            .await
            .map_err(|error| error.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|error| error.to_string())?;
        if status != 200 {
            return Err(format!("{provider}: {status}: {text}"));
        }
        let records: Vec<Value> = serde_json::from_str(&text).map_err(|error| error.to_string())?;
        for record in records {
            let id = record["integration_id"].as_str().unwrap_or_default();
            let token = record["credentials"]["token"].as_str().unwrap_or_default();
            let want = overrides
                .get(id)
                .or_else(|| expected.get(id))
                .ok_or_else(|| format!("unexpected integration {id}"))?;
            if token != want {
                return Err(format!(
                    "integration {id} read {token:?}, expected {want:?}"
                ));
            }
            checked += 1;
        }
    }
    Ok(checked)
}

fn rotate_key(
    data_dir: &std::path::Path,
    batch_size: usize,
    pause_ms: u64,
) -> std::process::Command {
    let mut rotate = command(&[
        "rotate-key",
        "--batch-size",
        &batch_size.to_string(),
        "--pause-ms",
        &pause_ms.to_string(),
        "--data-dir",
    ]);
    rotate.arg(data_dir);
    rotate
}

fn primary_key_line(output: &str) -> String {
    output
        .lines()
        .find_map(|line| {
            line.strip_prefix("added primary data key ")
                .or_else(|| line.strip_prefix("resumed primary data key "))
        })
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no primary key line in:\n{output}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_keeps_values() {
    let server = Server::start();
    let count = rows();
    let expected = Arc::new(create_many(&server, count).await);
    let server = Arc::new(server);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (server, expected, stop, reads) = (
            server.clone(),
            expected.clone(),
            stop.clone(),
            reads.clone(),
        );
        readers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                read_all_and_check(&client, &server, &expected, &HashMap::new()).await?;
                latencies.push(started.elapsed());
                reads.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, String>(latencies)
        }));
    }
    // Let the readers warm up before the rotation starts.
    while reads.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let batch = (count / 20).max(10);
    let data_dir = server.data_dir.clone();
    let started = Instant::now();
    let before = reads.load(Ordering::SeqCst);
    let output = tokio::task::spawn_blocking(move || rotate_key(&data_dir, batch, 50).output())
        .await
        .unwrap()
        .unwrap();
    let rotation_time = started.elapsed();
    let during = reads.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(
            reader
                .await
                .unwrap()
                .unwrap_or_else(|error| panic!("{error}")),
        );
    }

    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        during >= 2,
        "only {during} read rounds overlapped the rotation"
    );
    let new_key = primary_key_line(&stdout);
    assert!(
        stdout.contains(&format!("  {new_key}: {count} (primary)")),
        "{stdout}"
    );
    assert!(
        stdout.contains(": 0 (seals nothing; no credential depends on it)"),
        "{stdout}"
    );
    let progress_lines = stdout
        .lines()
        .filter(|line| line.starts_with("pass 1: "))
        .count();
    assert!(progress_lines >= 10, "{stdout}");

    // Every value is unchanged afterwards.
    let client = reqwest::Client::new();
    let checked = read_all_and_check(&client, &server, &expected, &HashMap::new())
        .await
        .unwrap();
    assert_eq!(checked, count);

    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "rows={count} batch={batch} rotation={:.2}s read_rounds_during={during} round_p50={:?} round_p99={:?}",
        rotation_time.as_secs_f64(),
        percentile(50),
        percentile(99)
    );
}

#[tokio::test]
async fn rotation_keeps_updates_made_during_it() {
    let server = Server::start();
    let expected = create_many(&server, 200).await;
    let data_dir = server.data_dir.clone();
    let rotation = rotate_key(&data_dir, 10, 40)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Replace the credentials of some integrations while the rotation runs.
    let mut overrides = HashMap::new();
    for (index, id) in expected.keys().take(40).enumerate() {
        let token = format!("tok_updated_{index}");
        let reply = call(
            &server,
            "PATCH",
            &format!("/sfp/api/integrations/{id}"),
            Some(&server.owner),
            Some(json!({"credentials": {"token": token}})),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        overrides.insert(id.clone(), token);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let output = tokio::task::spawn_blocking(move || rotation.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    let new_key = primary_key_line(&stdout);
    assert!(
        stdout.contains(&format!("  {new_key}: 200 (primary)")),
        "{stdout}"
    );

    let client = reqwest::Client::new();
    assert_eq!(
        read_all_and_check(&client, &server, &expected, &overrides)
            .await
            .unwrap(),
        200
    );
}

#[tokio::test]
async fn killed_rotation_resumes_with_its_key() {
    let server = Server::start();
    let expected = create_many(&server, 120).await;
    let data_dir = server.data_dir.clone();

    let mut first = rotate_key(&data_dir, 10, 2_000)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let progress = lines.next().unwrap().unwrap();
    assert!(
        progress.starts_with("pass 1: 10 integrations scanned"),
        "{progress}"
    );
    let first_key = progress.rsplit(' ').next().unwrap().to_owned();
    first.kill().unwrap();
    first.wait().unwrap();

    // The server still reads everything while the rotation is half done.
    let client = reqwest::Client::new();
    assert_eq!(
        read_all_and_check(&client, &server, &expected, &HashMap::new())
            .await
            .unwrap(),
        120
    );

    let output = rotate_key(&data_dir, 50, 0).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "resumed primary data key {first_key}; re-encrypted 110 integrations"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("  {first_key}: 120 (primary)")),
        "{stdout}"
    );
    assert_eq!(
        read_all_and_check(&client, &server, &expected, &HashMap::new())
            .await
            .unwrap(),
        120
    );
}

#[tokio::test]
async fn master_key_switch_needs_both_keys() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut first = Server::start_with(Options::default().data_dir(&data_dir));
    common::create_integration(&first, common::github_global("ghp_switch_keys", false)).await;
    assert!(first.terminate().success());

    let new_key_path = temp.path().join("new-master.key");
    std::fs::write(
        &new_key_path,
        "qrvM3e7/ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJk=\n",
    )
    .unwrap();
    std::fs::set_permissions(&new_key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut switch = command(&["rotate-master-key", "--data-dir"]);
    switch
        .arg(&data_dir)
        .arg("--new-master-key-file")
        .arg(&new_key_path);
    let rejected = switch.output().unwrap();
    assert!(!rejected.status.success());
    assert!(
        String::from_utf8_lossy(&rejected.stderr).contains("chmod 600"),
        "{rejected:?}"
    );

    std::fs::set_permissions(&new_key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = switch.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("rewrapped 1 data keys"), "{stdout}");

    // The old key in the data directory no longer opens the data keys, and the error names the
    // key that wraps them.
    let failure = Server::try_start(Options::default().data_dir(&data_dir))
        .err()
        .expect("the old master key is rejected");
    assert!(
        failure
            .log
            .contains("master key cannot open the stored credentials"),
        "{}",
        failure.log
    );
    assert!(
        failure.log.contains("is wrapped by master key"),
        "{}",
        failure.log
    );

    let second = Server::start_with(Options::default().data_dir(&data_dir).env(
        "INTEGRATIONS_MASTER_KEY_FILE",
        new_key_path.to_str().unwrap(),
    ));
    let reply = call(
        &second,
        "GET",
        "/sfp/api/integrations/credentials?provider=github",
        Some(&second.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body[0]["credentials"]["token"], "ghp_switch_keys");
}

#[tokio::test]
async fn stale_server_reports_keys_unavailable() {
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let server = Server::start_with(Options::default().data_dir(&data_dir));
    common::create_integration(&server, common::github_global("ghp_stale_server", false)).await;
    let rotated = rotate_key(&data_dir, 10, 0).output().unwrap();
    assert!(rotated.status.success(), "{rotated:?}");

    let new_key_path = temp.path().join("new-master.key");
    std::fs::write(
        &new_key_path,
        "qrvM3e7/ABEiM0RVZneImaq7zN3u/wARIjNEVWZ3iJk=\n",
    )
    .unwrap();
    std::fs::set_permissions(&new_key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut switch = command(&["rotate-master-key", "--data-dir"]);
    switch
        .arg(&data_dir)
        .arg("--new-master-key-file")
        .arg(&new_key_path);
    assert!(switch.output().unwrap().status.success());

    // The running server never loaded the key that rotate-key added, and its master key no
    // longer unwraps it. Its responses and /health report the keys as unavailable.
    let reply = call(
        &server,
        "GET",
        "/sfp/api/integrations/credentials?provider=github",
        Some(&server.owner),
        None,
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.text);
    assert!(
        reply.message().starts_with("Encryption keys unavailable"),
        "{}",
        reply.text
    );
    let health = call(&server, "GET", "/health", None, None).await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert!(
        server.log().contains("is wrapped by master key"),
        "{}",
        server.log()
    );
}
