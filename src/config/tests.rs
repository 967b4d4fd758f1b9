//! Loading, layering, validation and redaction, through the public API.

use super::*;

mod secrets;
mod serving;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(file: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_sources(Some(file), env(vars))
}

/// The (key, message, origin) of an `Invalid` error; anything else fails.
fn invalid(result: Result<Config, ConfigError>) -> (String, String, Option<Layer>) {
    match result {
        Err(ConfigError::Invalid {
            key,
            message,
            origin,
        }) => (key, message, origin),
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

fn token(name: &str, sha256: &str) -> String {
    format!("[[auth.tokens]]\nname = \"{name}\"\nsha256 = \"{sha256}\"\nrole = \"deploy\"\n")
}

#[test]
fn defaults_load_with_the_local_cluster() {
    let config = Config::from_sources(None, env(&[])).expect("defaults load");
    let local = &config.clusters["local"];
    let build = local.build.as_ref().expect("local has a build step");
    assert_eq!(build.run[0], "/bin/sh");
    assert!(local.activate.is_some());
    assert!(local.push.is_none());
    assert_eq!(config.deploy.on_conflict, ConflictPolicy::Reject);
    assert_eq!(config.deploy.lease, Duration::from_secs(15));
    assert!(config.store.url.is_none());
    assert_eq!(config.store_path(), PathBuf::from("./data/deployd.db"));
    assert!(config.auth.tokens.is_empty());
    config.validate().expect("defaults are valid");
}

#[test]
fn a_file_overrides_one_key_and_keeps_the_rest() {
    let file = "[deploy]\nlease = \"30s\"\n[clusters.local.build]\ntimeout = \"20m\"\n";
    let config = load(file, &[]).expect("loads");
    assert_eq!(config.deploy.lease, Duration::from_secs(30));
    assert_eq!(config.deploy.keep_releases, 10);
    assert_eq!(config.deploy.keep_attempts, 20);
    assert_eq!(config.limits.source_ttl, Duration::from_secs(24 * 3600));
    assert_eq!(config.deploy.on_conflict, ConflictPolicy::Reject);
    let build = config.clusters["local"].build.as_ref().expect("build kept");
    assert_eq!(build.timeout, Duration::from_secs(20 * 60));
    assert_eq!(
        build.run[0], "/bin/sh",
        "run is kept when only timeout changes"
    );
    assert!(config.clusters["local"].activate.is_some());
}

#[test]
fn a_file_array_replaces_the_default_one() {
    let file = "[clusters.local.build]\nrun = [\"make\", \"release\"]\n";
    let config = load(file, &[]).expect("loads");
    let build = config.clusters["local"].build.as_ref().expect("build");
    assert_eq!(build.run, ["make", "release"]);
}

#[test]
fn env_overrides_strings_numbers_durations_and_nested_cluster_keys() {
    let config = load(
        "",
        &[
            ("DEPLOYD_STORE__URL", "postgres://deployd@db/deployd"),
            ("DEPLOYD_LIMITS__UPLOAD_BYTES", "1024"),
            ("DEPLOYD_DEPLOY__LEASE", "1m"),
            ("DEPLOYD_DEPLOY__ON_CONFLICT", "queue"),
            ("DEPLOYD_SERVER__LISTEN", "127.0.0.1:9000"),
            ("DEPLOYD_CLUSTERS__LOCAL__BUILD__TIMEOUT", "2m"),
            ("DEPLOYD_CLUSTERS__LOCAL__ENV__REGION_NAME", "42"),
            (
                "DEPLOYD_CLUSTERS__STAGING__ACTIVATE__RUN",
                r#"["/bin/true"]"#,
            ),
            ("DEPLOYD_CLUSTERS__STAGING__ACTIVATE__TIMEOUT", "5s"),
            ("DEPLOYD_LOG", "debug"),
            ("DEPLOYD_LOG_FORMAT", "json"),
            ("HOME", "/root"),
        ],
    )
    .expect("loads");
    let url = config.store.url.as_deref();
    assert_eq!(url, Some("postgres://deployd@db/deployd"));
    assert_eq!(config.limits.upload_bytes, 1024);
    assert_eq!(config.deploy.lease, Duration::from_secs(60));
    assert_eq!(config.deploy.on_conflict, ConflictPolicy::Queue);
    assert_eq!(config.server.listen.port(), 9000);
    let local = &config.clusters["local"];
    let build = local.build.as_ref().expect("build");
    assert_eq!(build.timeout, Duration::from_secs(120));
    assert_eq!(build.run[0], "/bin/sh");
    // Names under env keep their case; a number where text is wanted is text.
    assert_eq!(local.env["REGION_NAME"].value(), "42");
    let staging = config.clusters["staging"].activate.as_ref().expect("new");
    assert_eq!(staging.run, ["/bin/true"]);
}

#[test]
fn env_tables_merge_and_env_arrays_keep_their_errors() {
    let vars = [("DEPLOYD_CLUSTERS__LOCAL", r#"{ env = { A = "1" } }"#)];
    let config = load("", &vars).expect("loads");
    assert_eq!(config.clusters["local"].env["A"].value(), "1");
    assert!(
        config.clusters["local"].build.is_some(),
        "merged, not replaced"
    );

    let vars = [("DEPLOYD_CLUSTERS__LOCAL__BUILD__RUN", "[1, 2]")];
    let (key, message, _) = invalid(load("", &vars));
    assert_eq!(key, "clusters.local.build.run[0]");
    assert!(message.contains("integer"), "{message}");
}

#[test]
fn env_wins_over_the_file() {
    let file = "[deploy]\nlease = \"30s\"\nkeep_releases = 5\n";
    let config = load(file, &[("DEPLOYD_DEPLOY__LEASE", "45s")]).expect("loads");
    assert_eq!(config.deploy.lease, Duration::from_secs(45));
    assert_eq!(config.deploy.keep_releases, 5);
}

#[test]
fn a_replaced_retention_key_says_what_replaced_it() {
    let (key, message, _) = invalid(load("[deploy]\nkeep_per_target = 5\n", &[]));
    assert_eq!(key, "deploy.keep_per_target");
    assert!(message.contains("deploy.keep_releases"), "{message}");
    assert!(message.contains("deploy.keep_attempts"), "{message}");
}

#[test]
fn a_source_ttl_under_a_second_is_refused() {
    let (key, message, _) = invalid(load("[limits]\nsource_ttl = \"0s\"\n", &[]));
    assert_eq!(key, "limits.source_ttl");
    assert!(message.contains("at least 1s"), "{message}");
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let (key, message, origin) = invalid(load("[deploy]\nleese = \"30s\"\n", &[]));
    assert_eq!(key, "deploy.leese");
    assert!(message.starts_with("unknown key"), "{message}");
    assert!(message.contains("lease"), "lists the known keys: {message}");
    assert_eq!(origin, Some(Layer::File(None)));

    let (key, _, _) = invalid(load("[storage]\nurl = \"x\"\n", &[]));
    assert_eq!(key, "storage");
    let (key, _, _) = invalid(load(&format!("{}colour = 1\n", token("ci", HASH)), &[]));
    assert_eq!(key, "auth.tokens[0].colour");
}

#[test]
fn an_unknown_env_key_names_the_variable() {
    let error = load("", &[("DEPLOYD_DEPLOY__LEESE", "30s")]).expect_err("unknown");
    let text = error.to_string();
    assert!(text.starts_with("deploy.leese: unknown key"), "{text}");
    assert!(
        text.contains("environment variable DEPLOYD_DEPLOY__LEESE"),
        "{text}"
    );

    let error = load("", &[("DEPLOYD_STORE_URL", "postgres://x")]).expect_err("typo");
    assert!(error.to_string().contains("DEPLOYD_STORE_URL"), "{error}");

    let error = load("", &[("DEPLOYD_DEPLOY____LEASE", "1m")]).expect_err("empty level");
    assert!(matches!(&error, ConfigError::Env { var, .. } if var == "DEPLOYD_DEPLOY____LEASE"));

    let error = load("", &[("DEPLOYD_DEPLOY__LEASE__X", "1")]).expect_err("not a table");
    assert!(
        error.to_string().contains("deploy.lease is not a table"),
        "{error}"
    );
}

#[test]
fn a_bad_duration_is_named_with_its_value() {
    let (key, message, origin) = invalid(load("[deploy]\nlease = \"abc\"\n", &[]));
    assert_eq!(key, "deploy.lease");
    assert!(message.starts_with("invalid duration \"abc\""), "{message}");
    assert_eq!(origin, Some(Layer::File(None)));

    let error = load("", &[("DEPLOYD_DEPLOY__LEASE", "30")]).expect_err("no unit");
    let text = error.to_string();
    assert!(
        text.starts_with("deploy.lease: invalid duration \"30\""),
        "{text}"
    );
    assert!(text.contains("DEPLOYD_DEPLOY__LEASE"), "{text}");

    let (key, message, _) = invalid(load("[deploy]\nlease = \"2s\"\n", &[]));
    assert_eq!(
        (key.as_str(), message.as_str()),
        ("deploy.lease", "must be at least 3s")
    );
}

#[test]
fn compaction_keys_default_and_are_checked() {
    let config = load("", &[]).expect("defaults load");
    assert_eq!(config.deploy.keep_min_age, Duration::from_secs(86_400));
    assert_eq!(config.deploy.compact_every, Duration::from_secs(600));
    let (key, message, _) = invalid(load("[deploy]\ncompact_every = \"0s\"\n", &[]));
    assert_eq!(
        (key.as_str(), message.as_str()),
        ("deploy.compact_every", "must be at least 1s")
    );
}

#[test]
fn bad_values_are_named() {
    let (key, _, _) = invalid(load("[limits]\nupload_bytes = \"lots\"\n", &[]));
    assert_eq!(key, "limits.upload_bytes");
    let (key, _, _) = invalid(load("[limits]\nupload_bytes = 0\n", &[]));
    assert_eq!(key, "limits.upload_bytes");
    let (key, message, _) = invalid(load("[deploy]\non_conflict = \"wait\"\n", &[]));
    assert_eq!(key, "deploy.on_conflict");
    assert!(message.contains("supersede"), "{message}");
}

#[test]
fn a_bad_cluster_name_is_refused() {
    let file = "[clusters.Prod_1.activate]\nrun = [\"true\"]\ntimeout = \"1m\"\n";
    let (key, message, _) = invalid(load(file, &[]));
    assert_eq!(key, "clusters.Prod_1");
    assert!(message.starts_with("invalid cluster name"), "{message}");

    let env_var = [("DEPLOYD_CLUSTERS__-X__ENV__A", "1")];
    let (key, _, origin) = invalid(load("", &env_var));
    assert_eq!(key, "clusters.-x");
    assert_eq!(origin, Some(Layer::Env(env_var[0].0.to_string())));
}

#[test]
fn steps_need_a_program_and_a_positive_timeout() {
    let file = "[clusters.prod.build]\nrun = []\ntimeout = \"1m\"\n";
    let (key, _, _) = invalid(load(file, &[]));
    assert_eq!(key, "clusters.prod.build.run");
    let file = "[clusters.prod.build]\nrun = [\"make\"]\ntimeout = \"0s\"\n";
    let (key, _, _) = invalid(load(file, &[]));
    assert_eq!(key, "clusters.prod.build.timeout");
    let file = "[clusters.prod.build]\nrun = [\"make\"]\n";
    let (key, message, _) = invalid(load(file, &[]));
    assert_eq!(key, "clusters.prod.build");
    assert!(message.contains("timeout"), "{message}");
}

#[test]
fn tokens_are_checked() {
    let config = load(&token("ci", &HASH.to_uppercase()), &[]).expect("loads");
    assert_eq!(
        config.auth.tokens[0].sha256, HASH,
        "hashes are kept lowercase"
    );
    assert_eq!(config.auth.tokens[0].apps, ["*"]);

    let (key, _, _) = invalid(load(&token("ci", "abc"), &[]));
    assert_eq!(key, "auth.tokens[0].sha256");
    let (key, message, _) = invalid(load(&(token("ci", HASH) + &token("ci", HASH)), &[]));
    assert_eq!(key, "auth.tokens[1].name");
    assert!(message.contains("duplicate"), "{message}");
    let (key, _, _) = invalid(load(&token("", HASH), &[]));
    assert_eq!(key, "auth.tokens[0].name");
    let scoped = token("ci", HASH) + "apps = [\"web\", \"Web\"]\n";
    let (key, message, _) = invalid(load(&scoped, &[]));
    assert_eq!(key, "auth.tokens[0].apps");
    assert!(message.contains("\"Web\""), "{message}");
    let scoped = token("ci", HASH) + "apps = [\"web\"]\nclusters = [\"*\"]\n";
    load(&scoped, &[]).expect("a valid name and * are allowed");
}

#[test]
fn the_store_url_must_be_postgres() {
    let vars = [("DEPLOYD_STORE__URL", "mysql://root:hunter2@db/x")];
    let error = load("", &vars).expect_err("not postgres");
    let text = error.to_string();
    assert!(
        text.starts_with("store.url: must start with postgres://"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    let vars = [("DEPLOYD_STORE__URL", "postgresql://db/x")];
    load("", &vars).expect("postgresql:// is fine");
}

#[test]
fn only_loopback_without_tokens() {
    let file = "[server]\nlisten = \"0.0.0.0:7171\"\n";
    let (key, _, _) = invalid(load(file, &[]));
    assert_eq!(key, "server.listen");
    load(&format!("{file}{}", token("ci", HASH)), &[]).expect("auth is on");
}

#[test]
fn a_syntax_error_names_the_line_but_never_shows_it() {
    let file = "[clusters.local.env]\nDB_PASSWORD = \"hunter2-secret\" oops\n";
    let error = load(file, &[]).expect_err("bad toml");
    let shown = error.to_string();
    assert!(shown.contains("line 2"), "{shown}");
    assert!(
        !shown.contains("hunter2"),
        "the line's secret is shown: {shown}"
    );
}

#[test]
fn syntax_errors_name_the_layer() {
    let error = load("[deploy\n", &[]).expect_err("bad toml");
    assert!(matches!(
        error,
        ConfigError::Syntax {
            origin: Layer::File(None),
            ..
        }
    ));
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("deployd.toml");
    std::fs::write(&path, "[deploy]\nlease = \"20s\"\n").expect("write");
    let config = Config::load(Some(&path)).expect("loads");
    assert_eq!(config.deploy.lease, Duration::from_secs(20));

    std::fs::write(&path, "[deploy]\nleese = \"20s\"\n").expect("write");
    let error = Config::load(Some(&path)).expect_err("unknown key");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );

    let missing = dir.path().join("missing.toml");
    let error = Config::load(Some(&missing)).expect_err("missing");
    assert!(matches!(error, ConfigError::Read { .. }));
}

#[test]
fn redaction_hides_the_password_and_the_hashes() {
    let file = format!(
        "[store]\nurl = \"postgres://deployd:hunter2@db:5432/deployd\"\n{}",
        token("ci", HASH)
    );
    let config = load(&file, &[]).expect("loads");
    let shown = config.redacted();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains(HASH), "{shown}");
    assert!(
        shown.contains("postgres://deployd:***@db:5432/deployd"),
        "{shown}"
    );
    assert!(shown.contains("[clusters.local.build]"), "{shown}");
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "Debug must not show it either");
    assert!(!debug.contains(HASH), "nor a token's hash");
}

#[test]
fn url_redaction_covers_every_place_a_password_can_be() {
    let cases = [
        ("postgres://u:p@h/db", "postgres://u:***@h/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgres://h:5432/db", "postgres://h:5432/db"),
        ("postgres://u:p?w@h/db", "postgres://u:***@h/db"),
        ("postgres://u:a@b@h/db", "postgres://u:***@h/db"),
        (
            "postgres://h/db?user=u&password=p",
            "postgres://h/db?user=u&password=***",
        ),
        ("not a url", "***"),
    ];
    for (url, shown) in cases {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn the_postgres_example_is_a_valid_config() {
    let text = include_str!("../../config/postgres.example.toml");
    let config = load(text, &[]).expect("the example loads");
    assert!(config.store.url.is_some());
    assert!(!config.auth.tokens.is_empty());
    assert!(config.clusters.len() >= 2);
}

#[test]
fn an_allowed_origin_must_be_an_origin() {
    for bad in [
        "dash.example.com",
        "https://dash.example.com/path",
        "ftp://x",
        "https://",
    ] {
        let file = format!("[server]\nallowed_origins = [\"https://ok.example\", \"{bad}\"]\n");
        let (key, message, _) = invalid(load(&file, &[]));
        assert_eq!(key, "server.allowed_origins[1]", "{bad}");
        assert!(message.contains("scheme://host[:port]"), "{message}");
    }
    let file =
        "[server]\nallowed_origins = [\"https://dash.example.com:8443\", \"http://[::1]:3000/\"]\n";
    assert!(load(file, &[]).is_ok());
}
