//! Property tests of the request parsers: whatever the bytes, a parser
//! answers a value or a 400 `invalid_argument` naming a field, never a panic
//! and never another kind of error. `PROPTEST_CASES` runs them longer.

use super::auth::bearer;
use super::deployments::{decode_cursor, parse_limit, parse_ref};
use super::{ApiError, parse_json};
use crate::model::{CancelRequest, DeployRequest, GitInfo, RollbackRequest};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A refusal in API.md's shape for bad input.
fn assert_invalid(error: &ApiError) -> Result<(), TestCaseError> {
    prop_assert_eq!(error.status, StatusCode::BAD_REQUEST);
    prop_assert_eq!(error.code, "invalid_argument");
    let field = error.details["field"].as_str().unwrap_or_default();
    prop_assert!(!field.is_empty(), "no details.field in {:?}", error);
    Ok(())
}

/// `parse_json` agrees with plain serde on what is valid, and refuses the
/// rest as a 400.
fn check_parser<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Result<(), TestCaseError> {
    let parsed = parse_json::<T>(body);
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let body = if blank { b"{}" } else { body };
    let object = body.trim_ascii_start().starts_with(b"{");
    let plain = serde_json::from_slice::<T>(body).map_err(|e| e.to_string());
    let plain = plain.and_then(|v| {
        if object {
            Ok(v)
        } else {
            Err("not an object".into())
        }
    });
    match (parsed, plain) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
        (Err(error), Err(_)) => assert_invalid(&error)?,
        (parsed, plain) => prop_assert!(false, "parse_json {parsed:?}, serde {plain:?}"),
    }
    Ok(())
}

/// Field names of the request types, and a few that are not.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "source", "git", "message", "on_conflict", "idempotency_key", "version",
            "reason", "sha", "branch", "author", "dirty", "repository",
        ])
        .prop_map(String::from),
        1 => "[a-z_]{1,12}",
        1 => ".{0,8}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["reject", "queue", "supersede", "v1", "v0", "v-1"])
            .prop_map(Value::from),
        "[0-9a-f]{64}".prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(".{0,40}")
}

fn git() -> impl Strategy<Value = Option<GitInfo>> {
    prop::option::of(
        (text(), text(), text(), text(), any::<bool>(), text()).prop_map(
            |(sha, branch, message, author, dirty, repository)| GitInfo {
                sha,
                branch,
                message,
                author,
                dirty,
                repository,
            },
        ),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(1000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_bytes_parse_or_are_a_400(body in prop::collection::vec(any::<u8>(), 0..200)) {
        check_parser::<DeployRequest>(&body)?;
        check_parser::<RollbackRequest>(&body)?;
        check_parser::<CancelRequest>(&body)?;
    }

    #[test]
    fn any_json_parses_or_is_a_400_naming_a_field(value in json()) {
        let body = serde_json::to_vec(&value).unwrap();
        check_parser::<DeployRequest>(&body)?;
        check_parser::<RollbackRequest>(&body)?;
        check_parser::<CancelRequest>(&body)?;
    }

    #[test]
    fn an_unknown_top_level_field_is_named(
        name in "[a-z_]{1,12}".prop_filter("not a field", |n| n != "reason"),
        value in json(),
    ) {
        let body = serde_json::to_vec(&serde_json::json!({ name.clone(): value })).unwrap();
        let error = parse_json::<CancelRequest>(&body).unwrap_err();
        assert_invalid(&error)?;
        prop_assert_eq!(error.details["field"].as_str(), Some(name.as_str()));
    }

    #[test]
    fn valid_deploy_requests_round_trip(
        source in "[0-9a-f]{64}",
        git in git(),
        message in text(),
        idempotency_key in text(),
    ) {
        let request = DeployRequest {
            source,
            git,
            message,
            on_conflict: None,
            idempotency_key,
        };
        let body = serde_json::to_vec(&request).unwrap();
        prop_assert_eq!(parse_json::<DeployRequest>(&body).unwrap(), request);
    }

    #[test]
    fn cursors_limits_ids_and_names_never_panic(text in ".{0,40}") {
        match decode_cursor(&text) {
            Ok(id) => prop_assert_eq!(id.simple().to_string(), text.to_ascii_lowercase()),
            Err(error) => assert_invalid(&error)?,
        }
        let params = HashMap::from([("limit".to_string(), text.clone())]);
        match parse_limit(&params) {
            Ok(limit) => prop_assert!((1..=500).contains(&limit)),
            Err(error) => assert_invalid(&error)?,
        }
        if let Err(error) = parse_ref(&text) {
            assert_invalid(&error)?;
        }
    }

    #[test]
    fn a_handed_out_cursor_decodes(bytes in any::<[u8; 10]>(), millis in 0u64..(1 << 47)) {
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &bytes).into_uuid();
        prop_assert_eq!(decode_cursor(&id.simple().to_string()).unwrap(), id);
    }

    #[test]
    fn authorization_headers_never_panic(value in prop::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(value) = HeaderValue::from_bytes(&value) {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value);
            if let Some(token) = bearer(&headers) {
                prop_assert!(!token.is_empty() && token.trim() == token);
            }
        }
    }
}
