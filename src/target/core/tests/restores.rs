//! The active pointer is the desired state: an activation that ends any way
//! but `succeeded` puts the cluster back on the recorded active version
//! before its end is committed, and a restore that fails marks drift.

use super::*;
use ConflictPolicy::*;

/// v1 (d1) is active; d2, a deploy, is activating with its step running.
fn activating_over_v1() -> Harness {
    let mut h = Harness::new();
    h.submit(Kind::Deploy, Queue);
    h.run_to_success("d1");
    h.submit(Kind::Deploy, Queue);
    while h.rows[&h.id("d2")].state != State::Activating {
        h.step_succeeds("d2");
    }
    h.take();
    h
}

impl Harness {
    fn restore_ends(&mut self, label: &str, result: PhaseResult) {
        let id = self.id(label);
        self.feed(Input::RestoreEnded {
            id,
            result,
            dropped_lines: 0,
        });
    }

    fn error_of(&self, label: &str) -> String {
        self.rows[&self.id(label)].error.clone().unwrap_or_default()
    }
}

#[test]
fn a_failed_activation_restores_the_active_version_then_fails() {
    let mut h = activating_over_v1();
    h.step_ends(
        "d2",
        PhaseResult::Failed("activate step failed (exit 1)".into()),
    );
    assert_eq!(
        h.take(),
        lines(&[
            "d2 note: the activate step did not succeed: restoring v1 on the cluster",
            "deadline d2 activating 12:01:00",
            "restore d2 v1",
        ]),
        "nothing is committed while the restore runs"
    );
    assert!(!h.core.is_idle(), "the target stays busy");
    h.restore_ends("d2", PhaseResult::Done { artifact: None });
    assert_eq!(
        h.take(),
        lines(&[
            "no drift",
            "commit d2 activating->failed",
            "forget d2",
            "idle"
        ])
    );
    assert_eq!(
        h.error_of("d2"),
        "activate step failed (exit 1); restored v1 on the cluster"
    );
    assert_eq!(h.active.as_ref().map(|v| v.version.as_str()), Some("v1"));
}

#[test]
fn a_timed_out_activation_restores_too() {
    let mut h = activating_over_v1();
    let timed_out = "activate step timed out after 1m";
    h.step_ends("d2", PhaseResult::Failed(timed_out.into()));
    assert_eq!(h.take()[2], "restore d2 v1");
    h.restore_ends("d2", PhaseResult::Done { artifact: None });
    assert_eq!(
        h.error_of("d2"),
        format!("{timed_out}; restored v1 on the cluster")
    );
}

#[test]
fn cancel_during_activation_stops_then_restores_then_cancels() {
    let mut h = activating_over_v1();
    h.submit(Kind::Deploy, Queue); // d3 waits
    h.take();
    let first = h.cancel("d2");
    assert_eq!(
        h.take(),
        lines(&[
            "d2 note: stopping the activate step (cancel requested)",
            "stop step d2"
        ])
    );
    h.step_ends("d2", PhaseResult::Failed("activate step cancelled".into()));
    assert_eq!(
        h.take(),
        lines(&[
            "d2 note: the activate step did not succeed: restoring v1 on the cluster",
            "deadline d2 activating 12:01:00",
            "restore d2 v1",
        ])
    );
    // A later cancel neither stops the restore nor ends anything: it waits.
    let second = h.cancel("d2");
    assert!(h.take().is_empty(), "a restore is never stopped");
    h.restore_ends("d2", PhaseResult::Done { artifact: None });
    assert_eq!(
        h.take(),
        vec![
            "no drift".to_string(),
            "commit d2 activating->cancelled".into(),
            format!("reply#{} d2 cancelled", first.0),
            format!("reply#{} d2 cancelled", second.0),
            "forget d2".into(),
            "prepare d3".into(),
            "commit d3 queued->building".into(),
            "step d3 building".into(),
        ],
        "d3 starts only once the restore is over and the end committed"
    );
    assert_eq!(h.error_of("d2"), "cancelled; restored v1 on the cluster");
}

#[test]
fn a_success_that_races_a_cancel_is_still_restored() {
    let mut h = activating_over_v1();
    h.cancel("d2");
    h.take();
    h.step_succeeds("d2");
    assert_eq!(h.take()[2], "restore d2 v1", "the step may have switched");
}

#[test]
fn superseding_an_activation_restores_before_the_next_starts() {
    let mut h = activating_over_v1();
    h.submit(Kind::Deploy, Supersede);
    assert_eq!(
        h.take(),
        lines(&[
            "create d3",
            "d2 note: stopping the activate step (superseded)",
            "stop step d2",
            "d3 queued 1 behind d2",
            "reply#3 d3 queued",
        ])
    );
    h.step_ends("d2", PhaseResult::Failed("activate step cancelled".into()));
    assert_eq!(h.take()[2], "restore d2 v1");
    h.restore_ends("d2", PhaseResult::Done { artifact: None });
    let log = h.take();
    assert_eq!(log[1], "commit d2 activating->cancelled");
    assert!(log.contains(&"step d3 building".to_string()), "{log:?}");
    assert_eq!(h.error_of("d2"), "superseded; restored v1 on the cluster");
}

#[test]
fn a_restore_that_fails_marks_drift() {
    let mut h = activating_over_v1();
    h.step_ends(
        "d2",
        PhaseResult::Failed("activate step failed (exit 1)".into()),
    );
    h.take();
    h.restore_ends(
        "d2",
        PhaseResult::Failed("restore step failed (exit 3)".into()),
    );
    assert_eq!(
        h.take(),
        lines(&[
            "d2 note: the restore of v1 failed: the cluster may not run the active version; \
             the target is marked drifted until a deployment succeeds",
            "drift v1 by d2: restore step failed (exit 3)",
            "commit d2 activating->failed",
            "forget d2",
            "idle",
        ])
    );
    assert_eq!(
        h.error_of("d2"),
        "activate step failed (exit 1); restore of v1 failed: restore step failed (exit 3)"
    );
    // It is not restored again: a second report changes nothing.
    h.restore_ends("d2", PhaseResult::Done { artifact: None });
    assert!(h.take().is_empty());
}

#[test]
fn a_first_activation_that_fails_restores_nothing_active() {
    let mut h = Harness::new();
    h.submit(Kind::Deploy, Queue);
    while h.rows[&h.id("d1")].state != State::Activating {
        h.step_succeeds("d1");
    }
    h.take();
    h.step_ends(
        "d1",
        PhaseResult::Failed("activate step failed (exit 1)".into()),
    );
    assert_eq!(h.take()[2], "restore d1 (nothing)");
    h.restore_ends("d1", PhaseResult::Done { artifact: None });
    assert_eq!(
        h.error_of("d1"),
        "activate step failed (exit 1); restored no active version on the cluster"
    );
}

#[test]
fn a_rollback_whose_activation_fails_restores_the_active_version() {
    let mut h = activating_over_v1();
    h.run_to_success("d2"); // v2 active
    let mut rollback = request(Kind::Rollback, Queue);
    rollback.version = Some("v1".into());
    let facts = SubmitFacts {
        rollback_to: h.versions.get("v1").cloned(),
        ..SubmitFacts::default()
    };
    h.submit_with(rollback, facts);
    h.take();
    assert_eq!(h.rows[&h.id("d3")].state, State::Activating);
    h.step_ends(
        "d3",
        PhaseResult::Failed("activate step failed (exit 1)".into()),
    );
    assert_eq!(h.take()[2], "restore d3 v2", "back to v2, not to v1");
    h.restore_ends("d3", PhaseResult::Done { artifact: None });
    assert_eq!(h.rows[&h.id("d3")].state, State::Failed);
    assert_eq!(h.active.as_ref().map(|v| v.version.as_str()), Some("v2"));
}

#[test]
fn a_deploy_that_fails_before_activation_restores_nothing() {
    for phase in [State::Building, State::Pushing] {
        let mut h = activating_over_v1();
        // d3 is a fresh deploy, in `phase`.
        h.run_to_success("d2");
        h.submit(Kind::Deploy, Queue);
        while h.rows[&h.id("d3")].state != phase {
            h.step_succeeds("d3");
        }
        h.take();
        h.step_ends("d3", PhaseResult::Failed(format!("{phase} failed")));
        assert_eq!(
            h.take(),
            vec![
                format!("commit d3 {phase}->failed"),
                "forget d3".into(),
                "idle".into()
            ],
            "{phase}"
        );
        let r = h.cancel("d3");
        assert!(h.take()[0].contains(&format!("reply#{}", r.0)));
    }
}
