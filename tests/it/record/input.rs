//! Every byte is storable, or refused up front with a 400 naming its field.

use crate::security::{history_len, raw_error};
use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::machine::State;
use deployd::model::EventData;
use reqwest::Method;
use serde_json::json;

on_both_stores!(
    control_characters_in_request_fields_are_400_naming_the_field,
    a_cancel_reason_with_a_control_character_is_refused_before_the_cancel,
    nul_bytes_in_step_output_and_stderr_are_recorded,
    an_artifact_with_invalid_utf8_is_stored_replaced,
);

const DEPLOYS: &str = "/v1/apps/web/clusters/local/deployments";
const ROLLBACKS: &str = "/v1/apps/web/clusters/local/rollbacks";

/// POST `body` to `path` expecting `400 invalid_argument`; the field named.
async fn refused_field(app: &TestApp, path: &str, body: serde_json::Value) -> String {
    let body = serde_json::to_vec(&body).unwrap();
    let details = raw_error(
        app,
        None,
        (Method::POST, path),
        Some(&body),
        (400, "invalid_argument"),
    )
    .await;
    details["field"]
        .as_str()
        .expect("details.field")
        .to_string()
}

async fn control_characters_in_request_fields_are_400_naming_the_field(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let git = |field: &str, value: &str| {
        let mut git = json!({});
        git[field] = json!(value);
        json!({ "source": source, "git": git })
    };
    let cases = [
        ("message", json!({ "source": source, "message": "a\u{0}b" })),
        (
            "message",
            json!({ "source": source, "message": "red \u{1b}[31m" }),
        ),
        (
            "idempotency_key",
            json!({ "source": source, "idempotency_key": "k\u{0}" }),
        ),
        (
            "idempotency_key",
            json!({ "source": source, "idempotency_key": "k\n" }),
        ),
        ("git.sha", git("sha", "\u{0}")),
        ("git.branch", git("branch", "main\n")),
        ("git.author", git("author", "ada\t<ada@x>")),
        ("git.repository", git("repository", "https://x/\u{7f}")),
        ("git.message", git("message", "fix\u{0}")),
        ("git.message", git("message", "fix\r\n")),
    ];
    for (field, body) in cases {
        assert_eq!(refused_field(&app, DEPLOYS, body).await, format!("{field}"));
    }
    let rollbacks = [
        ("message", json!({ "message": "\u{0}" })),
        ("idempotency_key", json!({ "idempotency_key": "\u{85}" })),
    ];
    for (field, body) in rollbacks {
        assert_eq!(refused_field(&app, ROLLBACKS, body).await, field);
    }
    assert_eq!(
        history_len(&app, "web").await,
        0,
        "a refused request writes nothing"
    );

    // Free text keeps its lines and tabs.
    let mut request = deploy_request(&source);
    request.message = Some("line one\n\tline two".into());
    request.git = Some(deployd::model::GitInfo {
        message: Some("subject\n\nbody".into()),
        ..Default::default()
    });
    let deployed = app.client.deploy("web", "local", &request).await.unwrap();
    let deployed = app.finished(deployed.id).await;
    assert_eq!(deployed.state, State::Succeeded);
    assert_eq!(deployed.message, "line one\n\tline two");
    let git = deployed.git.expect("git stored");
    assert_eq!(git.message.as_deref(), Some("subject\n\nbody"));
    app.stop().await;
}

async fn a_cancel_reason_with_a_control_character_is_refused_before_the_cancel(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let script = format!(
        "echo $$ > \"$DEPLOY_SOURCE_DIR/../pid\"; while [ ! -e '{}' ]; do sleep 0.05; done",
        gate.display()
    );
    let app = spawn_app(backend, |c| {
        c.clusters
            .insert("gated".into(), sh_cluster(Some(&script), None, None));
    })
    .await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let d = app
        .client
        .deploy("web", "gated", &deploy_request(&source))
        .await
        .unwrap();
    let pid = read_pid(&app.data_dir.join("work").join(d.id.to_string()).join("pid")).await;

    let path = format!("/v1/deployments/{}/cancel", d.id);
    for reason in ["stop\u{0}", "stop\nnow"] {
        let field = refused_field(&app, &path, json!({ "reason": reason })).await;
        assert_eq!(field, "reason");
    }
    assert!(alive(pid), "a refused cancel does not stop the step");
    assert_eq!(app.client.get(d.id).await.unwrap().state, State::Building);

    let cancelled = app
        .client
        .cancel(d.id, Some("wrong branch".into()))
        .await
        .unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("cancelled: wrong branch"));
    app.stop().await;
}

async fn nul_bytes_in_step_output_and_stderr_are_recorded(backend: Backend) {
    let build = "printf 'one\\n'; printf 'two\\000three\\n'; printf 'four\\n'; \
                 printf 'bad\\000byte\\n' >&2; exit 3";
    let app = spawn_app(backend, |c| {
        c.clusters
            .insert("nul".into(), sh_cluster(Some(build), None, None));
    })
    .await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let d = app
        .client
        .deploy("web", "nul", &deploy_request(&source))
        .await
        .unwrap();
    let events = app.events_until_end(d.id).await;
    let lines: Vec<(String, String)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            EventData::Log(l) => Some((l.stream.clone(), l.line.clone())),
            _ => None,
        })
        .collect();
    let stdout: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, l)| l.as_str())
        .collect();
    assert_eq!(stdout, ["one", "two\u{FFFD}three", "four"], "{lines:?}");
    assert!(lines.contains(&("stderr".into(), "bad\u{FFFD}byte".into())));

    let ended = app.client.get(d.id).await.unwrap();
    assert_eq!(ended.state, State::Failed, "{:?}", ended.error);
    let error = ended.error.expect("the step's error");
    assert!(
        error.contains("exit code 3") && error.contains("bad\u{FFFD}byte"),
        "{error}"
    );
    // A replay from the store says the same as the live stream did.
    assert_eq!(collect_events(&app.client, d.id, None).await, events);
    app.stop().await;
}

/// An artifact that is not UTF-8 is stored like step output (U+FFFD), not
/// silently replaced by the `source:<sha>` fallback.
async fn an_artifact_with_invalid_utf8_is_stored_replaced(backend: Backend) {
    let build = "printf 'art\\000\\377x' > \"$DEPLOY_ARTIFACT_FILE\"";
    let app = spawn_app(backend, |c| {
        let cluster = sh_cluster(Some(build), None, Some("echo \"$DEPLOY_ARTIFACT\""));
        c.clusters.insert("bytes".into(), cluster);
    })
    .await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let d = app
        .client
        .deploy("web", "bytes", &deploy_request(&source))
        .await
        .unwrap();
    let ended = app.finished(d.id).await;
    assert_eq!(ended.state, State::Succeeded, "{:?}", ended.error);
    let versions = app.get_json("/v1/apps/web/versions").await;
    assert_eq!(versions["versions"][0]["artifact"], "art\u{FFFD}\u{FFFD}x");
    app.stop().await;
}
