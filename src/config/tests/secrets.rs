//! Secrets in the config: files read at load, env values secret unless
//! declared otherwise, step users looked up, none of it ever shown.

use super::*;

/// A file holding `text`, in a temp dir that lives as long as the guard.
fn secret_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

#[test]
fn the_store_url_can_come_from_a_file_in_the_file_or_the_environment() {
    let (_dir, path) = secret_file("postgres://deployd:hunter2@db/deployd\n\n");
    let file = format!("[store]\nurl_file = \"{}\"\n", path.display());
    let config = load(&file, &[]).expect("loads");
    let url = config.store.url.as_deref();
    assert_eq!(
        url,
        Some("postgres://deployd:hunter2@db/deployd"),
        "newlines dropped"
    );

    let var = ("DEPLOYD_STORE__URL_FILE", path.to_str().unwrap());
    let config = load("", &[var]).expect("loads");
    assert_eq!(config.store.url_file.as_deref(), Some(path.as_path()));
    assert!(config.store.url.is_some());
    let shown = config.redacted();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains(&format!("url_file = \"{}\"", path.display())),
        "{shown}"
    );
}

#[test]
fn a_store_url_file_is_checked_and_never_echoed() {
    let (dir, path) = secret_file("mysql://root:hunter2@db/x");
    let file = format!("[store]\nurl_file = \"{}\"\n", path.display());
    let (key, message, _) = invalid(load(&file, &[]));
    assert_eq!(key, "store.url_file");
    assert!(message.contains("postgres://"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    let both = format!("{file}url = \"postgres://u@db/x\"\n");
    let (key, message, _) = invalid(load(&both, &[]));
    assert_eq!(key, "store.url_file");
    assert_eq!(message, "set either store.url or store.url_file, not both");

    let missing = dir.path().join("missing");
    let var = ("DEPLOYD_STORE__URL_FILE", missing.to_str().unwrap());
    let (key, message, origin) = invalid(load("", &[var]));
    assert_eq!(key, "store.url_file");
    assert!(message.starts_with("cannot read "), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert_eq!(origin, Some(Layer::Env(var.0.to_string())));
}

#[test]
fn cluster_env_values_are_secret_unless_declared_otherwise() {
    let (_dir, path) = secret_file("from-a-file\n");
    let file = format!(
        "[clusters.local.env]\nTOKEN = \"t0ken\"\nTABLE = {{ value = \"t4ble\" }}\n\
         REGION = {{ value = \"eu-west-1\", secret = false }}\n\
         FROM_FILE = {{ file = \"{}\" }}\n",
        path.display()
    );
    let config = load(&file, &[]).expect("loads");
    let env = &config.clusters["local"].env;
    assert!(env["TOKEN"].is_secret() && env["TABLE"].is_secret());
    assert!(env["FROM_FILE"].is_secret());
    assert!(!env["REGION"].is_secret());
    assert_eq!(env["FROM_FILE"].value(), "from-a-file");
    assert_eq!(env["FROM_FILE"].file(), Some(path.as_path()));
    let vars = config.clusters["local"].env_vars();
    assert!(vars.contains(&("TABLE".into(), "t4ble".into())), "{vars:?}");

    let shown = config.redacted();
    for secret in ["t0ken", "t4ble", "from-a-file"] {
        assert!(!shown.contains(secret), "{shown}");
    }
    // Tables and text mixed in one env still print as TOML that loads.
    let reloaded = load(&shown, &[]).expect("check-config's output loads");
    let env = &reloaded.clusters["local"].env;
    assert_eq!(env["REGION"], EnvValue::not_secret("eu-west-1"));
    assert_eq!(env["TOKEN"].value(), "***");
    assert_eq!(env["FROM_FILE"].value(), "from-a-file");
    let debug = format!("{config:?}");
    for secret in ["t0ken", "t4ble", "from-a-file"] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn env_overrides_reach_the_table_form_of_a_cluster_env_value() {
    let (_dir, path) = secret_file("s3cret");
    let file = "[clusters.local.env]\nREGION = \"eu-west-1\"\n";
    let vars = [
        ("DEPLOYD_CLUSTERS__LOCAL__ENV__REGION__SECRET", "false"),
        (
            "DEPLOYD_CLUSTERS__LOCAL__ENV__TOKEN__FILE",
            path.to_str().unwrap(),
        ),
        // An environment variable a step reads a path from is not a file form.
        (
            "DEPLOYD_CLUSTERS__LOCAL__ENV__SSL_CERT_FILE",
            "/etc/ssl/ca.pem",
        ),
    ];
    let config = load(file, &vars).expect("loads");
    let env = &config.clusters["local"].env;
    assert_eq!(env["REGION"], EnvValue::not_secret("eu-west-1"));
    assert_eq!(env["TOKEN"].value(), "s3cret");
    assert!(env["TOKEN"].is_secret());
    assert_eq!(env["SSL_CERT_FILE"].value(), "/etc/ssl/ca.pem");
}

#[test]
fn bad_cluster_env_values_are_named_without_their_value() {
    let (dir, path) = secret_file("x");
    let both = format!(
        "[clusters.local.env]\nTOKEN = {{ value = \"v\", file = \"{}\" }}\n",
        path.display()
    );
    let (key, message, _) = invalid(load(&both, &[]));
    assert_eq!(key, "clusters.local.env.TOKEN");
    assert_eq!(message, "set either value or file, not both");

    let (key, message, _) = invalid(load(
        "[clusters.local.env]\nTOKEN = { secret = false }\n",
        &[],
    ));
    assert_eq!(
        (key.as_str(), message.as_str()),
        ("clusters.local.env.TOKEN", "needs a value or a file")
    );

    let (key, message, _) = invalid(load("[clusters.local.env]\nTOKEN = 48151623\n", &[]));
    assert_eq!(key, "clusters.local.env.TOKEN");
    assert!(!message.contains("48151623"), "{message}");

    let (key, message, _) = invalid(load(
        "[clusters.local.env]\nTOKEN = { valu = \"x\" }\n",
        &[],
    ));
    assert_eq!(key, "clusters.local.env.TOKEN.valu");
    assert!(message.starts_with("unknown key"), "{message}");

    let missing = dir.path().join("missing");
    let var = "DEPLOYD_CLUSTERS__LOCAL__ENV__TOKEN__FILE";
    let (key, message, origin) = invalid(load("", &[(var, missing.to_str().unwrap())]));
    assert_eq!(key, "clusters.local.env.TOKEN");
    assert!(message.starts_with("cannot read "), "{message}");
    assert_eq!(origin, Some(Layer::Env(var.to_string())));
}

#[test]
fn a_cluster_user_is_looked_up_at_load() {
    let config = load("[clusters.local]\nuser = \"nobody\"\n", &[]).expect("loads");
    let user = config.clusters["local"].user.as_ref().expect("a user");
    assert_eq!((user.name(), user.uid()), ("nobody", 65534));
    assert!(config.redacted().contains("user = \"nobody\""));

    let (key, message, origin) =
        invalid(load("[clusters.local]\nuser = \"no-such-user-x\"\n", &[]));
    assert_eq!(key, "clusters.local.user");
    assert_eq!(message, "no such user \"no-such-user-x\"");
    assert_eq!(origin, Some(Layer::File(None)));
}
