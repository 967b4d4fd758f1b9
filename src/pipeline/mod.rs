//! The step runner: one phase's configured argv as a real process.
//!
//! [`run_step`] owns everything about the process it starts, and promises:
//! - the child sees only `PATH`, `HOME=<cwd>` and the env it is given; the
//!   daemon's own environment (which may hold a database password) never leaks;
//! - the child holds no descriptor of the daemon's but its stdio: any the
//!   daemon left without close-on-exec is closed at exec;
//! - given a [`StepUser`], the child runs as that user (uid, gid, groups);
//!   the guard stays the daemon's user, and, like the daemon, non-dumpable,
//!   so a step can neither read its parent's memory nor its environment;
//! - the child leads its own process group, and every signal goes to the group;
//! - **no orphan survives a step**: once the leader has exited, for any reason,
//!   whatever is left in its group is SIGKILLed before the leader is reaped, so
//!   a backgrounded `sleep 300 &` dies with the step that started it. A step
//!   that starts a long-running service must hand it to a real supervisor
//!   (systemd, a container runtime), not leave it in the background;
//! - a process that escaped the group (`setsid`) and keeps the output pipes
//!   open cannot hang the step: reading stops a short while after the leader
//!   exits ([`output`] bounds that drain);
//! - timeout and cancel both send SIGTERM to the group, then SIGKILL after the
//!   grace period;
//! - **no step outlives its daemon**, even one killed with SIGKILL, which
//!   runs no cleanup: the group's leader is not the step but a small guard
//!   process ([`guard`]) forked from the daemon, which the kernel tells when
//!   its parent dies (`PR_SET_PDEATHSIG`, confirmed with `getppid()` because
//!   that signal fires when the forking *thread* exits; the guard also checks
//!   once a second) and which then SIGKILLs the whole group. It needs no
//!   privilege and works the same as root, and it is not a shell: a shell
//!   would run a trap only after its foreground child exits, lose the
//!   difference between "exit code 137" and "killed by signal 9", and start
//!   a background step with SIGINT ignored. The guard exits as the step did,
//!   and holds no descriptor of the daemon's.
//!
//! A step never touches deployment state: it returns a [`StepOutcome`] and the
//! caller (the app actor) decides what it means.

mod guard;
mod output;
#[cfg(test)]
mod tests;

pub use output::{OutputCap, OutputLine, OutputStream};

use crate::users::StepUser;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The only `PATH` a step gets unless its cluster's env sets another.
pub const STEP_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Build,
    Push,
    Activate,
    /// A cluster's cleanup step (compaction, or an attempt that ended).
    Cleanup,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Build => "build",
            Phase::Push => "push",
            Phase::Activate => "activate",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// Everything needed to run one phase. `env` is applied after `PATH` and
/// `HOME`, so a cluster may deliberately override either.
#[derive(Debug, Clone)]
pub struct StepCommand {
    pub phase: Phase,
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// Time between SIGTERM and SIGKILL on timeout or cancel.
    pub kill_grace: Duration,
    /// Who the step runs as; `None`: the daemon's user.
    pub user: Option<StepUser>,
    /// Masks secrets in each stderr line before it joins the tail that
    /// `StepOutcome::Failed` carries, so cutting the tail to its size never
    /// leaves part of a secret behind; `None`: nothing to mask.
    pub redactor: Option<std::sync::Arc<crate::redact::Redactor>>,
}

/// How a step ended. Expected failures are data here, not errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    Succeeded,
    /// The leader exited unsuccessfully. `exit` reads "exit code 2" or
    /// "killed by signal 9"; `stderr_tail` is the last 20 stderr lines, at
    /// most 4 KiB (the end is kept).
    Failed {
        exit: String,
        stderr_tail: String,
    },
    TimedOut {
        after: Duration,
    },
    Cancelled,
    SpawnFailed(String),
}

/// Runs `cmd` to completion and reports how it ended.
///
/// Output lines go to `output` in the order each pipe is read. The caller
/// must keep receiving while this runs: a slow receiver slows the child
/// (bounded channel), while a dropped receiver does not, the pipes are still
/// drained and the lines discarded. The channel closes when this returns.
/// Dropping this future kills the whole process group.
pub async fn run_step(
    cmd: StepCommand,
    output: mpsc::Sender<OutputLine>,
    cancel: CancellationToken,
) -> StepOutcome {
    if cancel.is_cancelled() {
        return StepOutcome::Cancelled;
    }
    let Some((program, args)) = cmd.argv.split_first() else {
        return StepOutcome::SpawnFailed("the step's argv is empty".to_string());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", STEP_PATH)
        .env("HOME", &cmd.cwd)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cmd.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let become_user = match cmd.user.as_ref().and_then(StepUser::switch) {
        Some(ids) => match CString::new(cmd.cwd.as_os_str().as_bytes()) {
            Ok(cwd) => Some(guard::Become { ids, cwd }),
            Err(e) => return StepOutcome::SpawnFailed(format!("{}: {e}", cmd.cwd.display())),
        },
        None => None,
    };
    // SAFETY: getpid has no preconditions; the closure runs between fork
    // and exec, as `guard::split` requires, and makes only
    // async-signal-safe calls (what it needs was prepared before the fork).
    unsafe {
        let daemon = libc::getpid();
        command.pre_exec(move || guard::split(daemon, become_user.as_ref()));
    }
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        // As another user, what usually fails is entering the directory.
        Err(e) => match &cmd.user {
            Some(user) => {
                let cwd = cmd.cwd.display();
                return StepOutcome::SpawnFailed(format!("{program} as {user} in {cwd}: {e}"));
            }
            None => return StepOutcome::SpawnFailed(format!("{program}: {e}")),
        },
    };
    let Some(pid) = child.id().and_then(|id| libc::pid_t::try_from(id).ok()) else {
        return StepOutcome::SpawnFailed(format!("{program}: no pid after spawn"));
    };
    let mut group = ProcessGroup {
        pgid: pid,
        reaped: false,
    };
    tracing::debug!(phase = cmd.phase.as_str(), pid, "step started");

    let leader_gone = CancellationToken::new();
    let mut pumps = JoinSet::new();
    if let Some(pipe) = child.stdout.take() {
        let (out, gone) = (output.clone(), leader_gone.clone());
        pumps.spawn(output::pump(pipe, OutputStream::Stdout, out, gone, None));
    }
    if let Some(pipe) = child.stderr.take() {
        let (out, gone) = (output.clone(), leader_gone.clone());
        let redactor = cmd.redactor.clone();
        pumps.spawn(output::pump(
            pipe,
            OutputStream::Stderr,
            out,
            gone,
            redactor,
        ));
    }
    drop(output);

    let mut exited = tokio::task::spawn_blocking(move || wait_exited_unreaped(pid));
    let ending = tokio::select! {
        _ = &mut exited => Ending::Exited,
        () = tokio::time::sleep(cmd.timeout) => Ending::TimedOut,
        () = cancel.cancelled() => Ending::Cancelled,
    };
    if ending != Ending::Exited {
        group.signal(libc::SIGTERM);
        if tokio::time::timeout(cmd.kill_grace, &mut exited)
            .await
            .is_err()
        {
            group.signal(libc::SIGKILL);
            // SIGKILL cannot be caught or ignored: the leader is on its way out.
            let _ = (&mut exited).await;
        }
    }
    // The leader is a zombie now, so its pid (the group id) cannot have been
    // reused: sweep the rest of the group, then reap.
    group.signal(libc::SIGKILL);
    let status = child.wait().await;
    group.reaped = true;
    leader_gone.cancel();

    let mut stderr_tail = String::new();
    while let Some(done) = pumps.join_next().await {
        if let Ok(Some(tail)) = done {
            stderr_tail = tail;
        }
    }
    match ending {
        Ending::TimedOut => StepOutcome::TimedOut { after: cmd.timeout },
        Ending::Cancelled => StepOutcome::Cancelled,
        Ending::Exited => match status {
            Ok(status) if status.success() => StepOutcome::Succeeded,
            Ok(status) => StepOutcome::Failed {
                exit: describe(status),
                stderr_tail,
            },
            Err(e) => StepOutcome::Failed {
                exit: format!("wait failed: {e}"),
                stderr_tail,
            },
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Exited,
    TimedOut,
    Cancelled,
}

/// The child's process group. Until the leader is reaped its pid cannot be
/// reused, so signalling the group is safe exactly as long as `reaped` is
/// false; dropping it unreaped (the step's future was dropped) kills the group.
struct ProcessGroup {
    pgid: libc::pid_t,
    reaped: bool,
}

impl ProcessGroup {
    fn signal(&self, signal: libc::c_int) {
        if self.reaped {
            return;
        }
        // SAFETY: killpg has no memory-safety preconditions. ESRCH (the group
        // is already empty) is the only expected failure and needs nothing.
        unsafe {
            libc::killpg(self.pgid, signal);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Blocks until `pid` has exited but leaves it unreaped (`WNOWAIT`), so its
/// process group can still be signalled safely afterwards.
fn wait_exited_unreaped(pid: libc::pid_t) -> io::Result<()> {
    let id = libc::id_t::try_from(pid).map_err(io::Error::other)?;
    loop {
        // SAFETY: siginfo_t is plain data, valid when zeroed, and waitid only
        // writes into the one we pass.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            tracing::warn!(pid, error = %err, "waiting for a step's process failed");
            return Err(err);
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// Kill every process on this machine that carries `DEPLOY_ID=<id>` in its
/// environment: what is left of a step whose daemon died (kill -9) or whose
/// actor crashed. Steps inherit that variable down their process tree, so
/// this finds grandchildren too; a process that cleared its environment
/// escapes, as it would escape its process group by `setsid`.
/// Returns how many processes were signalled. Linux only (reads /proc).
pub fn kill_orphans(deployment: uuid::Uuid) -> usize {
    let needle = format!("DEPLOY_ID={deployment}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            // SAFETY: plain kill(2) on a pid read from /proc.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}
