//! `server.*` keys of issue 13: connection limits and the TLS files, whose
//! errors name the key and the file.

use super::*;

fn pair_in(dir: &Path) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn tls_file(cert: &Path, key: &Path) -> String {
    format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n")
}

#[test]
fn connection_limits_have_defaults_and_must_be_positive() {
    let config = load("", &[]).expect("defaults");
    assert_eq!(config.server.max_connections, 1024);
    assert_eq!(config.server.header_timeout, Duration::from_secs(10));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(60));
    assert!(config.server.tls.files().is_none());
    let cases = [
        ("max_connections = 0", "server.max_connections"),
        ("header_timeout = \"0s\"", "server.header_timeout"),
        ("idle_timeout = \"0s\"", "server.idle_timeout"),
    ];
    for (line, name) in cases {
        let (key, message, origin) = invalid(load(&format!("[server]\n{line}\n"), &[]));
        assert_eq!(key, name, "{message}");
        assert_eq!(origin, Some(Layer::File(None)));
    }
    let env = [("DEPLOYD_SERVER__IDLE_TIMEOUT", "5m")];
    let config = load("", &env).expect("an override");
    assert_eq!(config.server.idle_timeout, Duration::from_secs(300));
}

#[test]
fn tls_needs_both_files_or_neither() {
    let (key, message, _) = invalid(load("[server.tls]\ncert_file = \"/c.pem\"\n", &[]));
    assert_eq!(key, "server.tls.cert_file");
    assert!(message.contains("set alone: HTTPS needs both"), "{message}");
    let env = [("DEPLOYD_SERVER__TLS__KEY_FILE", "/k.pem")];
    let (key, _, origin) = invalid(load("", &env));
    assert_eq!(key, "server.tls.key_file");
    let var = "DEPLOYD_SERVER__TLS__KEY_FILE".to_string();
    assert_eq!(origin, Some(Layer::Env(var)));
}

#[test]
fn tls_files_that_do_not_load_are_errors_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pair_in(dir.path());
    let config = load(&tls_file(&cert, &key), &[]).expect("a good pair loads");
    assert_eq!(
        config.server.tls.files(),
        Some((cert.as_path(), key.as_path()))
    );

    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = pair_in(other.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (&missing, &key, "server.tls.cert_file", "cannot read"),
        (
            &garbage,
            &key,
            "server.tls.cert_file",
            "holds no PEM certificate",
        ),
        (&cert, &missing, "server.tls.key_file", "cannot read"),
        (
            &cert,
            &cert,
            "server.tls.key_file",
            "holds no PEM private key",
        ),
        (
            &cert,
            &other_key,
            "server.tls.key_file",
            "does not go with the certificate",
        ),
    ];
    for (cert_file, key_file, name, says) in cases {
        let (key, message, _) = invalid(load(&tls_file(cert_file, key_file), &[]));
        assert_eq!(key, name, "{message}");
        assert!(message.contains(says), "{message}");
        let named = if name.ends_with("cert_file") {
            cert_file
        } else {
            key_file
        };
        assert!(message.contains(&named.display().to_string()), "{message}");
    }
}

#[test]
fn deployctl_variables_do_not_stop_the_daemon() {
    let env = [
        ("DEPLOYD_CA_CERT", "/etc/ssl/ca.pem"),
        ("DEPLOYD_URL", "https://d"),
    ];
    load("", &env).expect("deployctl's variables are not config keys");
}
