//! What a step sees: a fixed PATH and HOME, the DEPLOY_* variables and its
//! cluster's env, nothing of the daemon's environment; client input reaches
//! it only as the value of a variable, never as code.

use crate::support::app::*;
use deployd::config::{EnvValue, StepConfig};
use deployd::machine::State;
use deployd::model::{EventData, GitInfo};
use std::time::Duration;

/// The `line`s the steps of deployment `id` printed.
async fn log_lines(app: &TestApp, id: uuid::Uuid) -> Vec<String> {
    let events = app.events_until_end(id).await;
    events
        .into_iter()
        .filter_map(|(_, e)| match e {
            EventData::Log(l) => Some(l.line),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn steps_see_only_path_home_deploy_vars_and_the_cluster_env() {
    // Whatever the daemon's own environment holds (this test process's:
    // CARGO_*, HOME, USER, perhaps a database URL) must not reach a step.
    let daemon_vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    assert!(!daemon_vars.is_empty());
    let app = spawn_app(Backend::Sqlite, |config| {
        let mut cluster = sh_cluster(None, None, None);
        cluster.build = Some(StepConfig {
            run: vec!["/usr/bin/env".into()],
            timeout: Duration::from_secs(60),
        });
        // Declared harmless: a secret value would be masked in the output.
        let registry = EnvValue::not_secret("registry.example");
        cluster.env.insert("REGISTRY".into(), registry);
        config.clusters.insert("envcheck".into(), cluster);
    })
    .await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.git = Some(GitInfo {
        sha: Some("abc123".into()),
        ..Default::default()
    });
    let deployment = app
        .client
        .deploy("web", "envcheck", &request)
        .await
        .unwrap();
    let lines = log_lines(&app, deployment.id).await;
    assert_eq!(
        app.client.get(deployment.id).await.unwrap().state,
        State::Succeeded
    );

    let names: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    for name in &names {
        let allowed = matches!(*name, "PATH" | "HOME" | "REGISTRY") || name.starts_with("DEPLOY_");
        assert!(allowed, "the step saw {name}: {lines:?}");
    }
    for expected in [
        "PATH",
        "HOME",
        "REGISTRY",
        "DEPLOY_ID",
        "DEPLOY_APP",
        "DEPLOY_GIT_SHA",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {lines:?}");
    }
    assert!(
        lines.contains(&"PATH=/usr/local/bin:/usr/bin:/bin".to_string()),
        "{lines:?}"
    );
    assert!(lines.contains(&"REGISTRY=registry.example".to_string()));
    assert!(lines.contains(&"DEPLOY_GIT_SHA=abc123".to_string()));
}

#[tokio::test]
async fn client_input_reaches_a_step_only_as_data() {
    let marker = tempfile::tempdir().unwrap();
    let pwned = marker.path().join("pwned");
    let app = spawn_app(Backend::Sqlite, |config| {
        let cluster = sh_cluster(Some(r#"echo "sha=$DEPLOY_GIT_SHA""#), None, None);
        config.clusters.insert("quoted".into(), cluster);
    })
    .await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let hostile = format!("$(touch {0}) `touch {0}`; touch {0}", pwned.display());
    let mut request = deploy_request(&source);
    request.git = Some(GitInfo {
        sha: Some(hostile.clone()),
        ..Default::default()
    });
    request.message = Some(format!("'; touch {} #", pwned.display()));
    let deployment = app.client.deploy("web", "quoted", &request).await.unwrap();
    let lines = log_lines(&app, deployment.id).await;
    assert_eq!(lines, [format!("sha={hostile}")], "printed verbatim");
    assert!(!pwned.exists(), "client input ran as code");
}
