//! Cancel in every state, results that arrive late, a lost lease, and a
//! store that is away: one step per target, and the record only says what
//! the store confirmed.

use super::*;
use ConflictPolicy::*;

/// Bring d1 (a deploy) to `phase`, with its step running.
fn running_in(phase: State) -> Harness {
    let mut h = Harness::new();
    h.submit(Kind::Deploy, Queue);
    while h.rows[&h.id("d1")].state != phase {
        h.step_succeeds("d1");
    }
    h.take();
    h
}

/// (A cancelled activation restores the cluster first: `restores.rs`.)
#[test]
fn cancel_waits_for_the_step_in_every_running_phase() {
    for (phase, step) in [(State::Building, "build"), (State::Pushing, "push")] {
        let mut h = running_in(phase);
        let r = h.cancel("d1");
        assert_eq!(
            h.take(),
            vec![
                format!("d1 note: stopping the {step} step (cancel requested)"),
                "stop step d1".into(),
            ],
            "{phase}: nothing is recorded or answered while the step runs"
        );
        assert!(!h.core.is_idle(), "{phase}: the target stays busy");
        h.step_ends("d1", PhaseResult::Failed(format!("{step} step cancelled")));
        assert_eq!(
            h.take(),
            vec![
                format!("commit d1 {phase}->cancelled"),
                format!("reply#{} d1 cancelled", r.0),
                "forget d1".into(),
                "idle".into(),
            ],
            "{phase}"
        );
    }
}

#[test]
fn cancel_in_the_other_states() {
    // Queued: no step, cancelled at once.
    let mut h = running_in(State::Building);
    h.submit(Kind::Deploy, Queue);
    h.take();
    let r = h.cancel("d2");
    assert_eq!(
        h.take(),
        vec![
            "commit d2 queued->cancelled".to_string(),
            format!("reply#{} d2 cancelled", r.0)
        ]
    );

    // Ended: 409, nothing written.
    let mut h = running_in(State::Building);
    h.run_to_success("d1");
    h.take();
    let r = h.cancel("d1");
    assert_eq!(
        h.take(),
        vec![format!(
            "reply#{} error: a deployment in state succeeded cannot become cancelled",
            r.0
        )]
    );

    // Another instance's running deployment: cancelled through the store.
    let mut h = Harness::new();
    foreign_running(&mut h);
    let r = h.cancel("d1");
    assert_eq!(
        h.take(),
        vec![
            "commit d1 building->cancelled".to_string(),
            format!("reply#{} d1 cancelled", r.0),
            "idle".into()
        ]
    );

    // Unknown: 404.
    let mut h = Harness::new();
    let id = Uuid::now_v7();
    h.feed(Input::Cancel {
        reply: ReplyTo(9),
        id,
        reason: Some("typo".into()),
        found: Ok(None),
    });
    assert_eq!(
        h.take(),
        vec![format!("reply#9 error: deployment {id} not found")]
    );
}

#[test]
fn two_cancels_of_one_step_are_both_answered_once_it_is_gone() {
    let mut h = running_in(State::Building);
    let first = h.cancel("d1");
    h.take();
    let second = h.cancel("d1");
    assert!(h.take().is_empty(), "the step is stopped once");
    h.step_ends("d1", PhaseResult::Failed("build step cancelled".into()));
    let log = h.take();
    assert!(
        log.contains(&format!("reply#{} d1 cancelled", first.0)),
        "{log:?}"
    );
    assert!(
        log.contains(&format!("reply#{} d1 cancelled", second.0)),
        "{log:?}"
    );
    assert_eq!(h.rows[&h.id("d1")].error.as_deref(), Some("cancelled"));
}

#[test]
fn a_step_that_succeeds_while_being_stopped_is_still_cancelled() {
    let mut h = running_in(State::Pushing);
    h.cancel("d1");
    h.take();
    h.step_succeeds("d1");
    let log = h.take();
    assert_eq!(
        log[0], "commit d1 pushing->cancelled",
        "the stop decides, not the late success"
    );
}

#[test]
fn stale_results_are_ignored() {
    let mut h = running_in(State::Pushing);
    let d1 = h.id("d1");
    let stale = [
        // A result for the phase before.
        (d1, State::Building),
        // A result for a deployment that is not running here.
        (Uuid::now_v7(), State::Pushing),
    ];
    for (id, phase) in stale {
        h.feed(Input::StepEnded {
            id,
            phase,
            result: PhaseResult::Done { artifact: None },
            dropped_lines: 0,
        });
        assert!(h.take().is_empty(), "{phase}");
    }
    // A result for a cancelled deployment, after its end was recorded.
    h.cancel("d1");
    h.step_ends("d1", PhaseResult::Failed("push step cancelled".into()));
    h.take();
    h.feed(Input::StepEnded {
        id: d1,
        phase: State::Pushing,
        result: PhaseResult::Done { artifact: None },
        dropped_lines: 0,
    });
    assert!(h.take().is_empty());
}

#[test]
fn a_lost_lease_stops_the_step_and_records_nothing() {
    let mut h = running_in(State::Building);
    h.submit(Kind::Deploy, Queue);
    h.take();
    let d1 = h.id("d1");
    h.feed(Input::LeaseRenewed {
        id: d1,
        result: Ok(0),
    });
    assert_eq!(
        h.take(),
        lines(&[
            "d1 note: stopping the build step (this instance lost the deployment's lease)",
            "stop step d1"
        ])
    );
    // Reconciliation ended it meanwhile; its step is gone now.
    h.rows.get_mut(&d1).expect("d1").state = State::Interrupted;
    h.step_ends_as(
        "d1",
        State::Building,
        PhaseResult::Failed("build step cancelled".into()),
    );
    assert_eq!(
        h.take(),
        lines(&[
            "forget d1",
            "prepare d2",
            "commit d2 queued->building",
            "step d2 building"
        ])
    );
    // A failed renewal (store away) changes nothing.
    let d2 = h.id("d2");
    h.feed(Input::LeaseRenewed {
        id: d2,
        result: Err(StoreError::Unavailable("down".into())),
    });
    assert!(h.take().is_empty());
}

#[test]
fn a_result_the_store_cannot_take_is_kept_and_retried() {
    let mut h = running_in(State::Building);
    h.fail_commits
        .push_back(StoreError::Unavailable("down".into()));
    h.step_succeeds("d1");
    assert_eq!(
        h.take(),
        lines(&[
            "commit d1 building->pushing refused: unavailable",
            "retry later"
        ])
    );
    h.feed(Input::Retry);
    assert_eq!(
        h.take(),
        lines(&["commit d1 building->pushing", "step d1 pushing"])
    );
    // A cancel while the result waits for the store ends it at once.
    h.fail_commits
        .push_back(StoreError::Unavailable("down".into()));
    h.step_succeeds("d1");
    h.take();
    let r = h.cancel("d1");
    assert_eq!(
        h.take(),
        vec![
            "commit d1 pushing->cancelled".to_string(),
            format!("reply#{} d1 cancelled", r.0),
            "forget d1".into(),
            "idle".into()
        ]
    );
}

#[test]
fn a_deployment_changed_elsewhere_is_let_go() {
    let mut h = running_in(State::Building);
    let d1 = h.id("d1");
    h.rows.get_mut(&d1).expect("d1").state = State::Cancelled;
    h.step_succeeds_as("d1", State::Building);
    assert_eq!(
        h.take(),
        lines(&[
            "commit d1 building->pushing refused: stale",
            "forget d1",
            "idle"
        ])
    );
}

#[test]
fn shutdown_starts_nothing_new() {
    let mut h = running_in(State::Building);
    h.feed(Input::ShuttingDown);
    h.submit(Kind::Deploy, Queue);
    h.take();
    h.run_to_success("d1");
    let log = h.take();
    assert!(!log.iter().any(|l| l.starts_with("prepare")), "{log:?}");
    assert_eq!(h.rows[&h.id("d2")].state, State::Queued);
}

#[test]
fn truncation_is_noted_before_the_final_state() {
    let mut h = running_in(State::Activating);
    let d1 = h.id("d1");
    h.feed(Input::StepEnded {
        id: d1,
        phase: State::Activating,
        result: PhaseResult::Done { artifact: None },
        dropped_lines: 7,
    });
    assert_eq!(
        h.take()[..2],
        lines(&["d1 truncated 7", "commit d1 activating->succeeded"])
    );
}

#[test]
fn idle_actors_passivate_only_when_idle_long_enough() {
    let limit = Duration::from_secs(60);
    let h = Harness::new();
    assert_eq!(
        h.core.passivation(Duration::from_secs(61), limit),
        Passivation::Now
    );
    assert_eq!(
        h.core.passivation(Duration::from_secs(20), limit),
        Passivation::CheckAgainIn(Duration::from_secs(40))
    );
    let busy = running_in(State::Building);
    assert_eq!(
        busy.core.passivation(Duration::from_secs(600), limit),
        Passivation::Stay
    );
}

impl Harness {
    /// A step result for `label` in `phase`, whatever its stored state says.
    fn step_ends_as(&mut self, label: &str, phase: State, result: PhaseResult) {
        let id = self.id(label);
        self.feed(Input::StepEnded {
            id,
            phase,
            result,
            dropped_lines: 0,
        });
    }

    fn step_succeeds_as(&mut self, label: &str, phase: State) {
        self.step_ends_as(label, phase, PhaseResult::Done { artifact: None });
    }
}
