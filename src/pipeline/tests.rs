//! The step runner against real processes started through /bin/sh.

use super::output::{MAX_LINE, StderrTail};
use super::*;
use std::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);

fn step(script: &str, cwd: &std::path::Path) -> StepCommand {
    StepCommand {
        phase: Phase::Build,
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout: Duration::from_secs(60),
        cwd: cwd.to_path_buf(),
        env: Vec::new(),
        kill_grace: Duration::from_secs(10),
        user: None,
        redactor: None,
    }
}

/// Runs `cmd` to completion, collecting every line it printed.
async fn run_collect(cmd: StepCommand) -> (StepOutcome, Vec<OutputLine>) {
    let (tx, mut rx) = mpsc::channel(16);
    let run = tokio::spawn(run_step(cmd, tx, CancellationToken::new()));
    let mut lines = Vec::new();
    while let Some(line) = rx.recv().await {
        lines.push(line);
    }
    let outcome = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("step hung")
        .expect("step panicked");
    (outcome, lines)
}

fn of(lines: &[OutputLine], stream: OutputStream) -> Vec<&str> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.as_str())
        .collect()
}

async fn next_line(rx: &mut mpsc::Receiver<OutputLine>) -> String {
    let line = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("no output in time");
    line.expect("output closed early").line
}

/// Waits (bounded) until `pid` no longer runs. A zombie counts as gone: it
/// was killed, and only waits for init, which reaps orphans lazily here.
async fn wait_gone(pid: libc::pid_t) {
    let start = Instant::now();
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::ESRCH));
            return;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "process {pid} still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn lines_arrive_in_order_from_both_streams() {
    let dir = tempfile::tempdir().unwrap();
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let (outcome, lines) = run_collect(step(script, dir.path())).await;
    assert_eq!(outcome, StepOutcome::Succeeded);
    assert_eq!(
        of(&lines, OutputStream::Stdout),
        ["out1", "out2", "out3", "out4", "out5"]
    );
    assert_eq!(
        of(&lines, OutputStream::Stderr),
        ["err1", "err2", "err3", "err4", "err5"]
    );
}

#[tokio::test]
async fn lines_are_framed_stripped_capped_and_lossy() {
    let dir = tempfile::tempdir().unwrap();
    let script =
        r"printf 'crlf\r\n\nbad\377byte\n'; head -c 20000 /dev/zero | tr '\0' x; printf '\nlast'";
    let (outcome, lines) = run_collect(step(script, dir.path())).await;
    assert_eq!(outcome, StepOutcome::Succeeded);
    let out = of(&lines, OutputStream::Stdout);
    assert_eq!(out.len(), 5, "{:?}", &out[..3]);
    assert_eq!(out[..3], ["crlf", "", "bad\u{fffd}byte"]);
    assert_eq!(out[3], "x".repeat(MAX_LINE));
    assert_eq!(out[4], "last");
}

#[tokio::test]
async fn nonzero_exit_fails_with_the_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let script = "i=1; while [ $i -le 30 ]; do echo line$i >&2; i=$((i+1)); done; exit 2";
    let (outcome, _) = run_collect(step(script, dir.path())).await;
    let expected: Vec<String> = (11..=30).map(|i| format!("line{i}")).collect();
    let expected = StepOutcome::Failed {
        exit: "exit code 2".into(),
        stderr_tail: expected.join("\n"),
    };
    assert_eq!(outcome, expected);
}

#[tokio::test]
async fn death_by_signal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _) = run_collect(step("kill -9 $$", dir.path())).await;
    let expected = StepOutcome::Failed {
        exit: "killed by signal 9".into(),
        stderr_tail: String::new(),
    };
    assert_eq!(outcome, expected);
}

#[test]
fn stderr_tail_keeps_the_end_on_a_char_boundary() {
    let mut tail = StderrTail::default();
    for _ in 0..20 {
        tail.push(&"é".repeat(150)); // 300 bytes each, 6019 joined
    }
    tail.push("the end");
    let rendered = tail.render();
    assert!(rendered.len() <= 4096);
    assert!(rendered.len() > 4090);
    assert!(rendered.ends_with("é\nthe end"));
}

#[tokio::test]
async fn timeout_kills_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = step("echo $$; sleep 30", dir.path());
    cmd.timeout = Duration::from_secs(1); // long enough for the echo, even under load
    let (tx, mut rx) = mpsc::channel(16);
    let run = tokio::spawn(run_step(cmd, tx, CancellationToken::new()));
    let pid: libc::pid_t = next_line(&mut rx).await.parse().unwrap();
    let outcome = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert_eq!(
        outcome,
        StepOutcome::TimedOut {
            after: Duration::from_secs(1)
        }
    );
    wait_gone(pid).await;
}

#[tokio::test]
async fn cancel_kills_the_whole_group_including_a_grandchild() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = step("sleep 300 & echo $!; wait", dir.path());
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(run_step(cmd, tx, cancel.clone()));
    let grandchild: libc::pid_t = next_line(&mut rx).await.parse().unwrap();
    let start = Instant::now();
    cancel.cancel();
    let outcome = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert_eq!(outcome, StepOutcome::Cancelled);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "SIGTERM should have been enough"
    );
    wait_gone(grandchild).await;
}

#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = step("trap '' TERM; echo $$; sleep 30", dir.path());
    cmd.kill_grace = Duration::from_millis(300);
    let (tx, mut rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let run = tokio::spawn(run_step(cmd, tx, cancel.clone()));
    let pid: libc::pid_t = next_line(&mut rx).await.parse().unwrap();
    let start = Instant::now();
    cancel.cancel();
    let outcome = tokio::time::timeout(PATIENCE, run).await.unwrap().unwrap();
    assert_eq!(outcome, StepOutcome::Cancelled);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "ended before the grace"
    );
    wait_gone(pid).await;
}

#[tokio::test]
async fn the_child_sees_only_path_home_and_the_given_env() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = step("", dir.path());
    cmd.argv = vec!["/usr/bin/env".into()];
    cmd.env = vec![("DEPLOY_APP".into(), "web".into())];
    let (outcome, lines) = run_collect(cmd).await;
    assert_eq!(outcome, StepOutcome::Succeeded);
    let mut seen = of(&lines, OutputStream::Stdout);
    seen.sort();
    let home = format!("HOME={}", dir.path().display());
    assert_eq!(
        seen,
        [
            "DEPLOY_APP=web",
            home.as_str(),
            "PATH=/usr/local/bin:/usr/bin:/bin"
        ]
    );
    // The test process has variables of its own, and none of them leaked.
    // (No set_var here: it is unsafe while other test threads read the env.)
    assert!(std::env::vars_os().any(|(k, _)| k != "PATH" && k != "HOME"));
}

#[tokio::test]
async fn the_child_holds_no_descriptor_of_the_daemons() {
    let dir = tempfile::tempdir().unwrap();
    // A descriptor the daemon opened without close-on-exec, as a library
    // might: the step must not get it.
    // SAFETY: open(2) on a NUL-terminated path; the descriptor is ours.
    let leaky = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    assert!(leaky > 2, "{}", io::Error::last_os_error());
    let mut cmd = step("", dir.path());
    cmd.argv = vec!["/bin/ls".into(), "/proc/self/fd".into()];
    let (outcome, lines) = run_collect(cmd).await;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(leaky) };
    assert_eq!(outcome, StepOutcome::Succeeded);
    // stdin, stdout, stderr, and the directory `ls` is reading.
    assert_eq!(of(&lines, OutputStream::Stdout), ["0", "1", "2", "3"]);
}

#[tokio::test]
async fn a_child_runs_as_its_user_and_its_guard_stays_the_daemons() {
    if crate::users::effective_uid() != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = step(
        "id -u; id -g; stat -c %u /proc/$PPID; \
         cat /proc/$PPID/environ > /dev/null 2>&1 && echo readable || echo denied; \
         kill -TERM $PPID 2> /dev/null && echo signalled || echo refused",
        dir.path(),
    );
    let nobody: StepUser = "nobody".parse().expect("nobody exists");
    cmd.user = Some(nobody.clone());
    let (outcome, lines) = run_collect(cmd).await;
    assert_eq!(outcome, StepOutcome::Succeeded, "{lines:?}");
    let gid = nobody.gid().to_string();
    let expected = ["65534", gid.as_str(), "0", "denied", "refused"];
    assert_eq!(of(&lines, OutputStream::Stdout), expected);
}

#[tokio::test]
async fn a_child_that_cannot_enter_its_directory_as_its_user_says_so() {
    if crate::users::effective_uid() != 0 {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    let mut cmd = step("true", &private);
    cmd.user = Some("nobody".parse().expect("nobody exists"));
    let (outcome, _) = run_collect(cmd).await;
    let StepOutcome::SpawnFailed(message) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("as nobody in"), "{message}");
    assert!(
        message.contains(&private.display().to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_binary_or_empty_argv_fails_to_spawn() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = step("", dir.path());
    cmd.argv = vec!["/nonexistent/deployd-step".into()];
    let (outcome, _) = run_collect(cmd.clone()).await;
    assert!(
        matches!(outcome, StepOutcome::SpawnFailed(msg) if msg.contains("/nonexistent/deployd-step"))
    );
    cmd.argv.clear();
    let (outcome, _) = run_collect(cmd).await;
    assert!(matches!(outcome, StepOutcome::SpawnFailed(_)));
}

#[tokio::test]
async fn a_grandchild_holding_stdout_does_not_hang_the_step_and_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run_collect(step("sleep 300 & echo $!", dir.path())).await;
    assert_eq!(outcome, StepOutcome::Succeeded);
    wait_gone(of(&lines, OutputStream::Stdout)[0].parse().unwrap()).await;
}

#[tokio::test]
async fn an_escaped_process_holding_stdout_does_not_hang_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let (outcome, lines) = run_collect(step("setsid sleep 300 & echo $!", dir.path())).await;
    assert_eq!(outcome, StepOutcome::Succeeded);
    // It left the group, so the step could not kill it; clean up after it.
    let escaped: libc::pid_t = of(&lines, OutputStream::Stdout)[0].parse().unwrap();
    // SAFETY: plain kill(2) of the process this test started.
    unsafe { libc::kill(escaped, libc::SIGKILL) };
    wait_gone(escaped).await;
}

#[tokio::test]
async fn a_dropped_receiver_does_not_block_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let cmd = step("yes deployd | head -n 200000", dir.path());
    let outcome = tokio::time::timeout(PATIENCE, run_step(cmd, tx, CancellationToken::new())).await;
    assert_eq!(outcome.expect("step hung"), StepOutcome::Succeeded);
}

#[test]
fn output_cap_admits_until_spent_then_counts_drops() {
    let mut cap = OutputCap::new(10);
    assert!(cap.admit(4));
    assert!(cap.admit(6));
    assert!(!cap.admit(1));
    assert!(!cap.admit(0), "spent for good, even for an empty line");
    assert_eq!(cap.dropped_lines(), 2);
    let mut cap = OutputCap::new(10);
    assert!(!cap.admit(11));
    assert_eq!(cap.dropped_lines(), 1);
}

#[test]
fn phases_and_streams_have_wire_names() {
    let names = [Phase::Build, Phase::Push, Phase::Activate].map(Phase::as_str);
    assert_eq!(names, ["build", "push", "activate"]);
    assert_eq!(OutputStream::Stdout.as_str(), "stdout");
    assert_eq!(OutputStream::Stderr.as_str(), "stderr");
}
