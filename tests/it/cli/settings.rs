//! Saying it once: global options, the environment, `deployd.toml`, saved
//! profiles (`login`, `logout`) and the order they win in, as `deployctl
//! config` reports it and as commands against a real daemon use it. Each
//! run gets a home of its own and only the `DEPLOYD_*` variables it sets.

use super::*;
use crate::security::{READER, with_tokens};
use crate::support::process::free_port;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// A user's machine: a home (with XDG_CONFIG_HOME under it) and a
/// directory to run in.
struct Desk {
    home: tempfile::TempDir,
    cwd: tempfile::TempDir,
}

impl Desk {
    fn new() -> Desk {
        Desk {
            home: tempfile::tempdir().expect("home"),
            cwd: tempfile::tempdir().expect("cwd"),
        }
    }

    fn profiles(&self) -> PathBuf {
        self.home.path().join("xdg/deployd/profiles.toml")
    }

    fn write_profiles(&self, text: &str) {
        std::fs::create_dir_all(self.profiles().parent().unwrap()).unwrap();
        std::fs::write(self.profiles(), text).unwrap();
        let owner_only = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(self.profiles(), owner_only).unwrap();
    }

    fn write_project(&self, text: &str) {
        std::fs::write(self.cwd.path().join("deployd.toml"), text).unwrap();
    }

    /// deployctl in the desk's directory with `env` as its only `DEPLOYD_*`
    /// variables, `stdin` as its input.
    async fn run(&self, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_deployctl"));
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("DEPLOYD_") {
                command.env_remove(var);
            }
        }
        command
            .args(args)
            .envs(env.iter().copied())
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("xdg"))
            .current_dir(self.cwd.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("deployctl runs");
        let mut input = child.stdin.take().expect("stdin");
        tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes())
            .await
            .expect("stdin written");
        drop(input);
        tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("deployctl ends in time")
            .expect("deployctl runs")
            .into()
    }

    /// `deployctl config -o json`, parsed.
    async fn config(&self, env: &[(&str, &str)], args: &[&str]) -> serde_json::Value {
        let args = [&["config", "-o", "json"], args].concat();
        let run = self.run(env, &args, "").await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        serde_json::from_str(&run.stdout).expect("config prints JSON")
    }
}

/// A URL where nothing listens.
fn closed() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[tokio::test]
async fn each_layer_overrides_the_ones_below_it_for_server_app_and_cluster() {
    // (setting, flag, variable, project key, profile key), and what each
    // layer says for it.
    let settings = [
        ("server", "--server", "DEPLOYD_URL", "server"),
        ("app", "--app", "DEPLOYD_APP", "app"),
        ("cluster", "--cluster", "DEPLOYD_CLUSTER", "cluster"),
    ];
    for (name, flag, var, key) in settings {
        let value = |layer: &str| format!("http://{layer}-{name}.example");
        // Layers from the bottom; each run sets every layer up to `top`.
        for top in 0..4 {
            let desk = Desk::new();
            let mut env = Vec::new();
            let mut args = Vec::new();
            desk.write_profiles(&format!("[default]\n{key} = \"{}\"\n", value("profile")));
            if top >= 1 {
                desk.write_project(&format!("{key} = \"{}\"\n", value("project")));
            }
            let (env_value, flag_value) = (value("env"), value("flag"));
            if top >= 2 {
                env.push((var, env_value.as_str()));
            }
            if top >= 3 {
                args.extend([flag, flag_value.as_str()]);
            }
            let config = desk.config(&env, &args).await;
            let (expected, from) = [
                (value("profile"), "profile \"default\"".to_string()),
                (value("project"), "deployd.toml".to_string()),
                (env_value.clone(), var.to_string()),
                (flag_value.clone(), flag.to_string()),
            ][top]
                .clone();
            assert_eq!(config[name]["value"], expected.as_str(), "{name}, {top}");
            assert_eq!(config[name]["from"], from.as_str(), "{name}, {top}");
        }
    }
    let bare = Desk::new().config(&[], &[]).await;
    assert_eq!(bare["server"]["value"], "http://127.0.0.1:7171");
    assert_eq!(bare["server"]["from"], "built-in default");
    assert!(bare["app"].is_null() && bare["cluster"].is_null(), "{bare}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_beats_the_project_file_and_a_flag_beats_both() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    app.deploy("web", "local", "one").await;
    let desk = Desk::new();
    desk.write_project(&format!("app = \"web\"\nserver = \"{}\"\n", closed()));

    let project = desk.run(&[], &["status"], "").await;
    assert_eq!(
        project.code,
        Some(3),
        "the project's server: {}",
        project.stderr
    );
    let env = desk
        .run(&[("DEPLOYD_URL", &app.url)], &["status"], "")
        .await;
    assert_eq!(env.code, Some(0), "{}", env.stderr);
    assert!(env.stdout.contains("local"), "{}", env.stdout);
    let wrong = closed();
    let bad_env = [("DEPLOYD_URL", wrong.as_str())];
    let flag = desk.run(&bad_env, &["-s", &app.url, "status"], "").await;
    assert_eq!(flag.code, Some(0), "{}", flag.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_takes_app_and_cluster_from_the_project_file_and_leaves_out_its_ignores() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let desk = Desk::new();
    let source = source_dir(&[
        (
            "deployd.toml",
            "app = \"web\"\ncluster = \"local\"\nignore = [\"*.md\", \"/fixtures/\"]\n",
        ),
        ("index.html", "hello"),
        ("NOTES.md", "not for the server"),
        ("fixtures/big.bin", "not for the server"),
    ]);

    let run = desk
        .run(&[("DEPLOYD_URL", &app.url)], &["deploy", path(&source)], "")
        .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("web v1 is active on local"),
        "{}",
        run.stdout
    );
    let current = app.data_dir.join("releases/web/local/current");
    assert_eq!(
        std::fs::read_to_string(current.join("index.html")).unwrap(),
        "hello"
    );
    assert!(
        !current.join("NOTES.md").exists(),
        "ignored by deployd.toml"
    );
    assert!(
        !current.join("fixtures").exists(),
        "ignored by deployd.toml"
    );
}

#[tokio::test]
async fn a_project_file_with_an_unknown_key_a_token_or_bad_toml_is_refused_by_name() {
    let cases = [
        (
            "app = \"web\"\nsever = \"http://x\"\n",
            "deployd.toml:2: unknown key `sever`",
        ),
        ("app = \"web\"\ncluster = \n", "deployd.toml:2:"),
        (
            "token = \"hunter2\"\n",
            "use `deployctl login` or DEPLOYD_TOKEN",
        ),
    ];
    for (text, expected) in cases {
        let desk = Desk::new();
        desk.write_project(text);
        let run = desk
            .run(&[("DEPLOYD_URL", &closed())], &["status"], "")
            .await;
        assert_eq!(run.code, Some(2), "{text:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{text:?}: {}", run.stderr);
        assert!(!run.stderr.contains("hunter2"), "{}", run.stderr);
    }
}

#[tokio::test]
async fn a_missing_app_or_cluster_is_refused_before_any_request() {
    let desk = Desk::new();
    let nowhere = closed();
    let server = [("DEPLOYD_URL", nowhere.as_str())];
    for args in [
        &["status"][..],
        &["history"],
        &["versions"],
        &["versions", "pin", "v1"],
    ] {
        let run = desk.run(&server, args, "").await;
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        let expected = "error: no app given: pass -a/--app, set DEPLOYD_APP, put app = \"…\" \
                        in deployd.toml, or in a profile";
        assert_eq!(run.stderr.trim(), expected, "{args:?}");
    }
    let run = desk.run(&server, &["-a", "web", "rollback"], "").await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("no cluster given: pass -c/--cluster"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_an_accepted_token_0600_and_later_commands_use_it() {
    let app = spawn_app(Backend::Sqlite, with_tokens).await;
    let desk = Desk::new();
    let server = [("DEPLOYD_URL", app.url.as_str())];
    let anonymous = desk.run(&server, &["-a", "web", "history"], "").await;
    assert_eq!(anonymous.code, Some(2), "auth is on: {}", anonymous.stderr);

    let login = desk.run(&server, &["login"], &format!("{READER}\n")).await;
    assert_eq!(login.code, Some(0), "{}", login.stderr);
    let saved = std::fs::read_to_string(desk.profiles()).expect("profiles saved");
    assert!(
        saved.contains(READER) && saved.contains(&app.url),
        "{saved}"
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&desk.profiles()), 0o600);
    assert_eq!(mode(desk.profiles().parent().unwrap()), 0o700);

    // The profile names the server and the token: no flag, no variable.
    let history = desk.run(&[], &["-a", "web", "history"], "").await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);

    // One server however it is spelled: saved as host:port, it still gets
    // the token as http://host:port/ (and the other way round).
    let bare = app.url.trim_start_matches("http://");
    let relogin = desk
        .run(&[("DEPLOYD_URL", bare)], &["login"], &format!("{READER}\n"))
        .await;
    assert_eq!(relogin.code, Some(0), "{}", relogin.stderr);
    let slashed = format!("{}/", app.url);
    let history = desk
        .run(&[("DEPLOYD_URL", &slashed)], &["-a", "web", "history"], "")
        .await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_a_bad_token_saves_nothing_and_exits_2() {
    let app = spawn_app(Backend::Sqlite, with_tokens).await;
    let desk = Desk::new();
    let server = [("DEPLOYD_URL", app.url.as_str())];

    let login = desk
        .run(&server, &["login", "--token", "guessed"], "")
        .await;
    assert_eq!(login.code, Some(2), "{}", login.stderr);
    assert!(
        login
            .stderr
            .contains("does not accept this token; nothing saved"),
        "{}",
        login.stderr
    );
    assert!(!desk.profiles().exists(), "nothing saved");

    let empty = desk.run(&server, &["login"], "\n").await;
    assert_eq!(empty.code, Some(2), "{}", empty.stderr);
    assert!(empty.stderr.contains("no token given"), "{}", empty.stderr);
    assert!(!desk.profiles().exists(), "nothing saved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_to_a_server_with_auth_off_saves_the_server_and_logout_keeps_other_profiles() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let desk = Desk::new();
    desk.write_profiles("[ci]\nserver = \"https://ci.example\"\ntoken = \"ci-secret\"\n");

    let login = desk
        .run(&[], &["-s", &app.url, "-p", "dev", "login"], "")
        .await;
    assert_eq!(login.code, Some(0), "{}", login.stderr);
    assert!(login.stderr.contains("has auth off"), "{}", login.stderr);
    let config = desk.config(&[("DEPLOYD_PROFILE", "dev")], &[]).await;
    assert_eq!(config["server"]["value"], app.url.as_str());
    assert_eq!(config["server"]["from"], "profile \"dev\"");
    assert_eq!(config["token"]["set"], false);

    let logout = desk.run(&[], &["logout", "--profile", "dev"], "").await;
    assert_eq!(logout.code, Some(0), "{}", logout.stderr);
    let saved = std::fs::read_to_string(desk.profiles()).unwrap();
    assert!(
        !saved.contains("[dev]") && saved.contains("ci-secret"),
        "{saved}"
    );
    let gone = desk
        .run(&[], &["-p", "dev", "-a", "web", "status"], "")
        .await;
    assert_eq!(gone.code, Some(2), "{}", gone.stderr);
    assert!(
        gone.stderr.contains("no profile \"dev\" is saved"),
        "{}",
        gone.stderr
    );
}

#[tokio::test]
async fn config_says_where_each_setting_came_from_and_never_prints_the_token() {
    let desk = Desk::new();
    desk.write_profiles("[ci]\nserver = \"https://ci.example\"\ntoken = \"ci-secret\"\n");
    desk.write_project("app = \"web\"\ncluster = \"staging\"\n");
    let env = [("DEPLOYD_PROFILE", "ci")];

    let text = desk.run(&env, &["config"], "").await;
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    for line in [
        "server   https://ci.example (from profile \"ci\")",
        "token    set (from profile \"ci\")",
        "app      web (from deployd.toml)",
        "cluster  staging (from deployd.toml)",
        "profile  ci (from DEPLOYD_PROFILE)",
    ] {
        assert!(text.stdout.contains(line), "{line:?} in\n{}", text.stdout);
    }
    let json = desk.run(&env, &["config", "-o", "json"], "").await;
    let secret_token = desk
        .run(&[("DEPLOYD_TOKEN", "env-secret")], &["config"], "")
        .await;
    assert!(
        secret_token
            .stdout
            .contains("token    set (from DEPLOYD_TOKEN)")
    );
    for run in [&text, &json, &secret_token] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            !all.contains("ci-secret") && !all.contains("env-secret"),
            "{all}"
        );
    }

    // A project file naming another server does not get the profile's token.
    desk.write_project("server = \"https://elsewhere.example\"\n");
    let config = desk.config(&env, &[]).await;
    assert_eq!(config["token"]["set"], false, "{config}");
    // A profiles file others may read is used, with a warning.
    let readable = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(desk.profiles(), readable).unwrap();
    let warned = desk.run(&env, &["config"], "").await;
    assert_eq!(warned.code, Some(0), "{}", warned.stderr);
    assert!(warned.stderr.contains("warning:") && warned.stderr.contains("chmod 600"));
}

#[tokio::test]
async fn help_config_is_the_configuration_topic() {
    let run = Desk::new().run(&[], &["help", "config"], "").await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for topic in [
        "DEPLOYD_URL",
        "deployd.toml",
        "profiles.toml",
        "never a token",
        "ignore = [",
    ] {
        assert!(run.stdout.contains(topic), "{topic:?} in\n{}", run.stdout);
    }
    let global = Desk::new().run(&[], &["status", "--help"], "").await;
    assert!(
        global.stdout.contains("Global options:"),
        "{}",
        global.stdout
    );
    assert!(
        global.stdout.contains("-a, --app <APP>"),
        "{}",
        global.stdout
    );
}
