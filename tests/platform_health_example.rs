//! The `platform_health` example's flow, run as a library function: mock platforms on
//! 127.0.0.1, an embedded service, warm-up, then the report the example prints.

#[allow(dead_code, reason = "the example's main is not called here")]
#[path = "../examples/platform_health.rs"]
mod example;

use serde_json::Value;

/// The example App's key, to check that no line of it reaches the output.
const APP_KEY: &str = include_str!("../crates/integrations-platforms/tests/fixtures/app_pkcs1.pem");

fn entry<'a>(report: &'a Value, project: &str) -> &'a Value {
    report["platforms"]
        .as_array()
        .expect("platforms array")
        .iter()
        .find(|entry| entry["project"] == project)
        .unwrap_or_else(|| panic!("no entry for {project}: {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_reports_three_statuses() {
    let report = example::health_report().await.expect("example flow runs");
    let text = example::render(&report).expect("report serialises");
    let json: Value = serde_json::from_str(&text).expect("output is JSON");

    let healthy = entry(&json, "acme/app");
    let not_installed = entry(&json, "globex/app");
    let azure = entry(&json, "contoso/tools/build");
    assert_eq!(json["status"], "degraded", "{text}");
    assert_eq!(json["platforms"].as_array().unwrap().len(), 3, "{text}");
    assert_eq!(healthy["status"], "healthy", "{healthy}");
    assert_eq!(not_installed["status"], "unhealthy", "{not_installed}");
    assert!(
        not_installed["message"]
            .as_str()
            .unwrap_or_default()
            .contains("is not installed on the account globex"),
        "{not_installed}"
    );
    assert_eq!(azure["provider"], "azure-devops", "{azure}");
    assert_eq!(azure["status"], "healthy", "{azure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_output_has_no_secret() {
    let report = example::health_report().await.expect("example flow runs");
    let text = example::render(&report).expect("report serialises");
    for line in APP_KEY.lines().filter(|line| !line.starts_with("-----")) {
        assert!(!text.contains(line), "key line {line} in {text}");
    }
    for marker in ["example-only-client-secret", "ghs_", "mock-access-", "eyJ"] {
        assert!(!text.contains(marker), "{marker} in {text}");
    }
}
