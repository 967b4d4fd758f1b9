use super::*;
use proptest::prelude::*;

#[test]
fn names_follow_the_api_pattern() {
    for good in ["web", "a", "0", "my-app-2", &"a".repeat(63)] {
        assert_eq!(good.parse::<AppName>().unwrap().as_str(), good);
        assert_eq!(good.parse::<ClusterName>().unwrap().to_string(), good);
    }
    for bad in [
        "",
        "-web",
        "Web",
        "we_b",
        "a/b",
        "..",
        "web.",
        &"a".repeat(64),
        "wéb",
    ] {
        assert!(bad.parse::<AppName>().is_err(), "{bad}");
        assert!(bad.parse::<ClusterName>().is_err(), "{bad}");
    }
}

#[test]
fn refusals_name_the_field_and_the_rule() {
    let error = "Web".parse::<AppName>().unwrap_err();
    assert_eq!(error.field(), "app");
    assert_eq!(
        error.to_string(),
        r#"app "Web" must match ^[a-z0-9][a-z0-9-]{0,62}$"#
    );
    let error = Target::parse("web", "Prod_1").unwrap_err();
    assert_eq!(error.field(), "cluster");
    assert_eq!(Target::parse("-", "Prod").unwrap_err().field(), "app");
    let error = "ABC".parse::<SourceDigest>().unwrap_err();
    assert_eq!(
        (error.field(), error.to_string()),
        (
            "source",
            "source must be a sha256: 64 lowercase hex characters".to_string()
        )
    );
    let error = "v0".parse::<Version>().unwrap_err();
    assert_eq!(
        (error.field(), error.to_string()),
        (
            "version",
            r#"version "v0" must look like v1, v2, …"#.to_string()
        )
    );
}

#[test]
fn digests_are_64_lowercase_hex() {
    assert!("0".repeat(64).parse::<SourceDigest>().is_ok());
    assert!("a".repeat(64).parse::<SourceDigest>().is_ok());
    for bad in [
        "0".repeat(63),
        "0".repeat(65),
        "A".repeat(64),
        "g".repeat(64),
    ] {
        assert!(bad.parse::<SourceDigest>().is_err(), "{bad}");
    }
}

#[test]
fn versions_are_v_and_a_number_without_leading_zeros() {
    let v12: Version = "v12".parse().unwrap();
    assert_eq!((v12.number(), v12.as_str()), (12, "v12"));
    assert!("v2".parse::<Version>().unwrap() < v12);
    for bad in [
        "",
        "v",
        "v0",
        "v01",
        "1",
        "V1",
        "v-1",
        "v1x",
        "v99999999999999999999",
    ] {
        assert!(bad.parse::<Version>().is_err(), "{bad}");
    }
}

#[test]
fn deserializing_validates_and_serializing_writes_the_text() {
    let target: Target = serde_json::from_str(r#""web/prod""#).unwrap();
    assert_eq!(target, Target::parse("web", "prod").unwrap());
    assert_eq!(serde_json::to_string(&target).unwrap(), r#""web/prod""#);
    assert!(serde_json::from_str::<Target>(r#""web""#).is_err());
    assert!(serde_json::from_str::<AppName>(r#""Web""#).is_err());
    let error = serde_json::from_str::<Version>(r#""v0""#).unwrap_err();
    assert!(error.to_string().contains("must look like v1"), "{error}");
    let app: AppName = serde_json::from_str(r#""web""#).unwrap();
    assert_eq!(serde_json::to_string(&app).unwrap(), r#""web""#);
}

proptest! {
    /// Any text parses or is refused, never panics; what parses prints back
    /// as itself and matches the pattern.
    #[test]
    fn names_parse_or_refuse(text in ".{0,70}") {
        match text.parse::<AppName>() {
            Ok(app) => {
                prop_assert_eq!(app.as_str(), text.as_str());
                prop_assert!(text.bytes().next().is_some_and(|b| b != b'-'));
            }
            Err(error) => prop_assert_eq!(error.field(), "app"),
        }
        prop_assert_eq!(text.parse::<AppName>().is_ok(), text.parse::<ClusterName>().is_ok());
    }

    #[test]
    fn names_of_the_pattern_are_accepted(text in "[a-z0-9][a-z0-9-]{0,62}") {
        prop_assert!(text.parse::<AppName>().is_ok());
        let target: Target = format!("{text}/{text}").parse().unwrap();
        prop_assert_eq!(target.to_string(), format!("{text}/{text}"));
    }

    #[test]
    fn digests_parse_or_refuse(text in "[0-9a-fA-G]{60,68}") {
        let expected = text.len() == 64 && !text.bytes().any(|b| b.is_ascii_uppercase());
        prop_assert_eq!(text.parse::<SourceDigest>().is_ok(), expected);
    }

    #[test]
    fn versions_round_trip(number in 1i64..=i64::MAX) {
        let version: Version = format!("v{number}").parse().unwrap();
        prop_assert_eq!(version.number(), number);
        prop_assert_eq!(version.to_string(), format!("v{number}"));
    }
}
