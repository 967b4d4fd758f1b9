//! Pinning versions through the HTTP API, on both stores: pin and unpin
//! answer the version as it is now (where it is or was live) and repeat
//! harmlessly; every refusal (a bad name, an unknown version or app, a
//! token that may not) is API.md's error and changes nothing.
//! `deployctl versions pin` is tested in `cli/versions.rs`.

use crate::security::{ADMIN, CI_WEB, READER, client, expect_error, raw_error, with_tokens};
use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::machine::State;
use deployd::model::{RollbackRequest, VersionInfo};
use reqwest::Method;
use serde_json::json;

on_both_stores!(
    pin_and_unpin_answer_the_version_and_repeat_harmlessly,
    refused_pins_change_nothing,
);

/// A server with the test tokens (and a `staging` cluster) where web has
/// two versions: v1 and v2 deployed on local, then v1 rolled back to on
/// staging. So v1 was live on local and is active on staging.
async fn two_versions(backend: Backend) -> TestApp {
    let mut app = spawn_app(backend, with_tokens).await;
    app.client = client(&app, Some(ADMIN));
    for tag in ["one", "two"] {
        let d = app.deploy("web", "local", tag).await;
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
    }
    let back = RollbackRequest {
        version: Some("v1".into()),
        ..RollbackRequest::default()
    };
    let back = app.client.rollback("web", "staging", &back).await.unwrap();
    assert_eq!(app.finished(back.id).await.state, State::Succeeded);
    app
}

async fn versions(app: &TestApp) -> Vec<VersionInfo> {
    let page = app.client.versions("web", None, None).await;
    page.expect("versions").versions
}

async fn pin_and_unpin_answer_the_version_and_repeat_harmlessly(backend: Backend) {
    let app = two_versions(backend).await;
    let [v2, v1] = <[VersionInfo; 2]>::try_from(versions(&app).await).expect("two versions");
    assert!(!v1.pinned && !v2.pinned);
    // A deploy token of the app may pin.
    let ci = client(&app, Some(CI_WEB));

    let pinned = ci.pin("web", "v1").await.expect("pin");
    assert_eq!(
        pinned,
        VersionInfo {
            pinned: true,
            ..v1.clone()
        }
    );
    let live: Vec<_> = pinned
        .live
        .iter()
        .map(|s| (s.cluster.as_str(), s.active, s.until.is_some()))
        .collect();
    assert_eq!(live, [("local", false, true), ("staging", true, false)]);
    assert_eq!(ci.pin("web", "v1").await.expect("pin again"), pinned);
    assert_eq!(versions(&app).await, [v2.clone(), pinned]);

    let unpinned = ci.unpin("web", "v1").await.expect("unpin");
    assert_eq!(unpinned, v1);
    assert_eq!(ci.unpin("web", "v1").await.expect("unpin again"), v1);
    assert_eq!(versions(&app).await, [v2, v1]);

    // The target says where a rollback that names no version goes.
    let local = app.client.target("web", "local").await.unwrap();
    assert_eq!(local.rollback_to.as_deref(), Some("v1"));
    let staging = app.client.target("web", "staging").await.unwrap();
    assert_eq!(staging.rollback_to, None, "nothing was active before v1");
}

async fn refused_pins_change_nothing(backend: Backend) {
    let app = two_versions(backend).await;
    // One pinned version, so a refused unpin would show too.
    app.client.pin("web", "v2").await.expect("pin v2");
    let before = versions(&app).await;
    let path = |app: &str, version: &str| format!("/v1/apps/{app}/versions/{version}/pin");
    let invalid = (400, "invalid_argument");
    let not_found = (404, "not_found");
    let forbidden = (403, "forbidden");
    let refusals = [
        (
            path("web", "latest"),
            ADMIN,
            invalid,
            json!({"field": "version"}),
        ),
        (
            path("web", "v0"),
            ADMIN,
            invalid,
            json!({"field": "version"}),
        ),
        (
            path("web", "v01"),
            ADMIN,
            invalid,
            json!({"field": "version"}),
        ),
        (
            path("web", "2"),
            ADMIN,
            invalid,
            json!({"field": "version"}),
        ),
        (
            path("web", "v1%0A"),
            ADMIN,
            invalid,
            json!({"field": "version"}),
        ),
        (path("Web", "v1"), ADMIN, invalid, json!({"field": "app"})),
        (
            path("web", "v9"),
            ADMIN,
            not_found,
            json!({"kind": "version"}),
        ),
        (
            path("billing", "v1"),
            ADMIN,
            not_found,
            json!({"kind": "version"}),
        ),
        (path("web", "v1"), READER, forbidden, json!({})),
        (path("web", "v2"), READER, forbidden, json!({})),
        (path("billing", "v1"), CI_WEB, forbidden, json!({})),
    ];
    for method in [Method::POST, Method::DELETE] {
        for (path, token, refusal, details) in &refusals {
            let route = (method.clone(), path.as_str());
            let got = raw_error(&app, Some(token), route, None, *refusal).await;
            assert_eq!(&got, details, "{method} {path}");
            assert_eq!(versions(&app).await, before, "{method} {path} changed it");
        }
    }

    // The client reports them the same way.
    let reader = client(&app, Some(READER));
    expect_error(&app, reader.pin("web", "v1").await, 403, "forbidden");
    expect_error(&app, reader.unpin("web", "v2").await, 403, "forbidden");
    let unknown = app.client.pin("web", "v9").await;
    expect_error(&app, unknown, 404, "not_found");
    let bad = app.client.unpin("web", "two").await;
    expect_error(&app, bad, 400, "invalid_argument");
    assert_eq!(versions(&app).await, before);
}
