//! The real `deployd` binary as a child process, for tests that kill it
//! (SIGKILL, SIGTERM) and start it again on the same data dir or database;
//! and a throwaway PostgreSQL server a test may stop and start.

use super::app::{eventually, eventually_async};
use deployd::client::Client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

pub struct Daemon {
    child: Child,
    pub client: Client,
}

/// A config file for the daemon: `data_dir`, the store, and extra TOML
/// (clusters, deploy settings) appended as written.
pub fn write_config(dir: &Path, store_url: Option<&str>, extra: &str) -> PathBuf {
    let data_dir = dir.join("data");
    let store = match store_url {
        Some(url) => format!("[store]\nurl = \"{url}\"\n"),
        None => String::new(),
    };
    let text = format!(
        "[server]\ndata_dir = \"{}\"\nshutdown_grace = \"1s\"\n\n{store}\n{extra}\n",
        data_dir.display()
    );
    let path = dir.join(format!("deployd-{}.toml", uuid::Uuid::now_v7().simple()));
    std::fs::write(&path, text).expect("write config");
    path
}

impl Daemon {
    /// Start `deployd serve` on a free loopback port and wait until ready.
    pub async fn start(config: &Path) -> Daemon {
        Daemon::start_on(config, free_port()).await
    }

    /// Start `deployd serve` on loopback `port` and wait until ready; a
    /// daemon restarted on the same port answers at the URL a running
    /// client already has.
    pub async fn start_on(config: &Path, port: u16) -> Daemon {
        Daemon::start_with(config, port, |_| {}).await
    }

    /// Start `deployd serve` on loopback `port`, with `tweak` applied to the
    /// command (its environment, its user, where stderr goes), and wait
    /// until ready.
    pub async fn start_with(config: &Path, port: u16, tweak: impl FnOnce(&mut Command)) -> Daemon {
        let mut command = serve_command(config, &format!("127.0.0.1:{port}"));
        tweak(&mut command);
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None).expect("client");
        Daemon::run(command, client).await
    }

    /// Start `command` (a [`serve_command`], changed as a test needs) and
    /// wait until `client` finds it ready. A daemon that exits instead
    /// fails the test at once.
    pub async fn run(mut command: Command, client: Client) -> Daemon {
        let child = command.spawn().expect("start deployd");
        let mut daemon = Daemon { child, client };
        let mut exited = None;
        let (child, client) = (&mut daemon.child, &daemon.client);
        eventually_async("deployd to become ready", || {
            exited = child.try_wait().expect("try_wait");
            let gone = exited.is_some();
            async move { gone || client.readyz().await.is_ok() }
        })
        .await;
        if let Some(status) = exited {
            panic!("deployd exited instead of serving: {status}");
        }
        daemon
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The daemon's stderr, when its command piped it.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then wait for the process to exit.
    pub async fn terminate(mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut status = None;
        eventually("deployd to exit after SIGTERM", || {
            status = self.child.try_wait().expect("try_wait");
            status.is_some()
        })
        .await;
        status.expect("exited")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `deployd serve --config CONFIG --listen LISTEN`, logging warnings only,
/// stdout discarded.
pub fn serve_command(config: &Path, listen: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployd"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", listen])
        .env("DEPLOYD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A PostgreSQL server of the test's own, in a temp dir, on a free port.
pub struct ThrowawayPg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl ThrowawayPg {
    /// initdb and start. PostgreSQL's server binaries must be installed
    /// (scripts/test installs them on a machine that lacks them).
    pub fn start() -> ThrowawayPg {
        let bin = pg_bin().expect("PostgreSQL server binaries (initdb, pg_ctl) are installed");
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("pgdata");
        as_postgres_owner(dir.path());
        run_pg(
            &bin,
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let pg = ThrowawayPg {
            bin,
            dir,
            port: free_port(),
        };
        pg.resume();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn stop(&self) {
        let data = self.dir.path().join("pgdata").display().to_string();
        run_pg(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
    }

    pub fn resume(&self) {
        let data = self.dir.path().join("pgdata").display().to_string();
        let options = format!(
            "-p {} -k {} -h 127.0.0.1 -F",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        run_pg(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        );
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let data = self.dir.path().join("pgdata").display().to_string();
        let _ = pg_command(
            &self.bin,
            "pg_ctl",
            &["-D", &data, "-m", "immediate", "stop"],
        )
        .output();
    }
}

fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// initdb refuses to run as root: as root, the server runs as `postgres`.
fn as_postgres_owner(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown the throwaway PostgreSQL dir");
    }
}

fn pg_command(bin: &Path, tool: &str, args: &[&str]) -> Command {
    let program = bin.join(tool);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).stdin(Stdio::null());
    command
}

fn run_pg(bin: &Path, tool: &str, args: &[&str]) {
    let output = pg_command(bin, tool, args)
        .output()
        .expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{tool} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A daemon's JSON log lines (`DEPLOYD_LOG_FORMAT=json`), read as they come.
pub struct Log {
    lines: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

impl Log {
    /// Follow `stderr` on a thread of its own until it closes.
    pub fn follow(stderr: std::process::ChildStderr) -> Log {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::Value::String(line.clone()));
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        Log { lines }
    }

    /// The lines up to and including the first that `matches` (within
    /// WAIT); fails the test if the log ends or WAIT passes first.
    pub async fn until(
        &mut self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut seen = Vec::new();
        let found = async {
            while let Some(event) = self.lines.recv().await {
                let done = matches(&event);
                seen.push(event);
                if done {
                    return true;
                }
            }
            false
        };
        let found = tokio::time::timeout(super::app::WAIT, found).await;
        assert!(found.unwrap_or(false), "no log line {what}; saw: {seen:#?}");
        seen
    }
}
