//! `deployctl` as a user runs it: the real binary against a real daemon on
//! port 0, checked by its output and exit codes (0 ok, 1 ended badly,
//! 2 request error, 3 unreachable, 130 detached).

mod commands;
mod everyday;
mod history;
mod settings;
mod versions;
mod watch;

use crate::support::app::*;
use deployd::client::Client;
use deployd::machine::State;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

pub(crate) struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

fn deployctl(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployctl"));
    command
        .args(args)
        .env("DEPLOYD_URL", url)
        .env_remove("DEPLOYD_TOKEN")
        .env_remove("DEPLOYD_PROFILE")
        .env_remove("DEPLOYD_APP")
        .env_remove("DEPLOYD_CLUSTER")
        // No saved profile of whoever runs the tests.
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

impl From<std::process::Output> for Run {
    fn from(output: std::process::Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

pub(crate) async fn run(url: &str, args: &[&str]) -> Run {
    tokio::time::timeout(WAIT, deployctl(url, args).output())
        .await
        .expect("deployctl ends in time")
        .expect("deployctl runs")
        .into()
}

fn source_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("a UTF-8 temp path")
}

/// The deployment named by deployctl's first line of progress,
/// `deployment SHORT-ID: ...`, as the server resolves that short id.
async fn deployment_id(client: &Client, stdout: &str) -> Uuid {
    let short = stdout
        .strip_prefix("deployment ")
        .and_then(|rest| rest.split(':').next())
        .filter(|short| short.len() == deployd::model::SHORT_ID_LEN)
        .unwrap_or_else(|| panic!("no short deployment id first in {stdout:?}"));
    let deployment = client
        .deployment(short)
        .await
        .expect("the short id resolves");
    assert_eq!(deployd::model::short_id(&deployment.id), short);
    deployment.id
}

/// A gate a `gated` build waits for; `open` lets it finish.
struct Gate {
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Gate {
    fn open(&self) {
        std::fs::write(&self.file, "").unwrap();
    }
}

/// A daemon with a `gated` cluster (its build waits for the [`Gate`]),
/// and what `more` adds to its config.
async fn gated_app(more: impl FnOnce(&mut deployd::config::Config)) -> (TestApp, Gate) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("open");
    let app = spawn_app(Backend::Sqlite, |c| {
        c.clusters.insert("gated".into(), gated(&file));
        more(c);
    })
    .await;
    (app, Gate { _dir: dir, file })
}

/// A build that waits for `gate` to exist, so a test decides when it ends.
fn gated(gate: &Path) -> deployd::config::ClusterConfig {
    let build = format!(
        "echo waiting; while [ ! -e '{}' ]; do sleep 0.05; done",
        gate.display()
    );
    sh_cluster(Some(&build), None, Some("echo activated"))
}

/// Wait until deployment `id` has printed `line` in its build output.
async fn wait_for_log(client: &Client, id: Uuid, line: &str) {
    let mut stream = client.events(id, None).await.expect("event stream");
    let found = async {
        use futures::StreamExt;
        while let Some(event) = stream.next().await {
            if let deployd::model::EventData::Log(log) = event.expect("event").data
                && log.line == line
            {
                return;
            }
        }
        panic!("the stream ended without {line:?}");
    };
    tokio::time::timeout(WAIT, found)
        .await
        .expect("the line in time");
}
