//! A crashed instance's deployment: reconciliation hands it to the target's
//! core, which takes it over (one compare-and-set on the lapsed lease),
//! restores the active version if it was activating, and records
//! `interrupted` — or drift.

use super::*;
use ConflictPolicy::*;

/// v1 (d1) is active; d2 is `activating` under instance `dead`, which
/// stopped renewing its lease (it crashed after its step switched).
fn crashed_during_activation(with_v1: bool) -> (Harness, Deployment) {
    let mut h = Harness::new();
    if with_v1 {
        h.submit(Kind::Deploy, Queue);
        h.run_to_success("d1");
    }
    let mut d = foreign_running(&mut h);
    d.state = State::Activating;
    d.version = Some("v2".into());
    h.rows.insert(d.id, d.clone());
    h.take();
    (h, d)
}

impl Harness {
    fn adopt(&mut self, d: &Deployment) {
        self.adopt_for(d, Orphaned::LeaseLapsed);
    }

    fn adopt_for(&mut self, d: &Deployment, cause: Orphaned) {
        let previous = Ok(self.active.clone());
        self.feed(Input::Adopt {
            deployment: Box::new(d.clone()),
            owner: Some("dead".into()),
            previous,
            cause,
        });
    }
}

#[test]
fn an_adopted_activation_is_taken_over_restored_then_interrupted() {
    let (mut h, d) = crashed_during_activation(true);
    let label = h.label(d.id);
    h.adopt(&d);
    assert_eq!(
        h.take(),
        vec![
            format!(
                "take over {label} lapsed before 12:00:00 as i1 until 12:00:15, deadline 12:01:00"
            ),
            format!(
                "{label} note: instance dead stopped renewing its lease during the activate \
                 step; instance i1 took the deployment over"
            ),
            format!("kill leftovers {label}"),
            format!("{label} note: the activate step did not succeed: restoring v1 on the cluster"),
            format!("deadline {label} activating 12:01:00"),
            format!("restore {label} v1"),
        ],
        "nothing is recorded before the restore is over"
    );
    assert!(!h.core.is_idle(), "the target is busy while it restores");
    assert_eq!(h.core.running_id(), Some(d.id));
    h.feed(Input::RestoreEnded {
        id: d.id,
        result: PhaseResult::Done { artifact: None },
        dropped_lines: 0,
    });
    assert_eq!(
        h.take(),
        vec![
            "no drift".to_string(),
            format!("commit {label} activating->interrupted"),
            format!("forget {label}"),
            "idle".into(),
        ]
    );
    assert_eq!(
        h.rows[&d.id].error.as_deref(),
        Some(
            "interrupted during activating: instance dead stopped renewing its lease; \
             restored v1 on the cluster"
        )
    );
    assert_eq!(h.active.as_ref().map(|v| v.version.as_str()), Some("v1"));
}

#[test]
fn a_take_over_another_instance_won_does_nothing() {
    let (mut h, d) = crashed_during_activation(true);
    h.take_over.push_back(Ok(false));
    h.adopt(&d);
    let log = h.take();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].ends_with(" lost"), "{log:?}");
    assert!(h.core.is_idle(), "the winner restores; we let go");
    assert_eq!(h.rows[&d.id].state, State::Activating);
}

#[test]
fn a_take_over_the_store_refused_waits_for_the_next_hand_over() {
    let (mut h, d) = crashed_during_activation(true);
    h.take_over
        .push_back(Err(StoreError::Unavailable("down".into())));
    h.adopt(&d);
    assert_eq!(h.take().len(), 1);
    assert!(h.core.is_idle());
    // Reconciliation hands it over again while the lease stays lapsed.
    h.adopt(&d);
    assert!(h.take().iter().any(|l| l.starts_with("restore")));
}

#[test]
fn an_adoption_with_nothing_active_restores_to_nothing() {
    let (mut h, d) = crashed_during_activation(false);
    let label = h.label(d.id);
    h.adopt(&d);
    assert_eq!(h.take().last(), Some(&format!("restore {label} (nothing)")));
    h.feed(Input::RestoreEnded {
        id: d.id,
        result: PhaseResult::Done { artifact: None },
        dropped_lines: 0,
    });
    assert!(
        h.rows[&d.id]
            .error
            .as_deref()
            .unwrap()
            .ends_with("; restored no active version on the cluster")
    );
    assert_eq!(h.rows[&d.id].state, State::Interrupted);
}

#[test]
fn an_adopted_restore_that_fails_marks_drift() {
    let (mut h, d) = crashed_during_activation(true);
    let label = h.label(d.id);
    h.adopt(&d);
    h.take();
    h.feed(Input::RestoreEnded {
        id: d.id,
        result: PhaseResult::Failed("activate step failed (exit 3)".into()),
        dropped_lines: 0,
    });
    let log = h.take();
    assert!(
        log.contains(&format!(
            "drift v1 by {label}: activate step failed (exit 3)"
        )),
        "{log:?}"
    );
    assert!(log.contains(&format!("commit {label} activating->interrupted")));
    assert!(
        h.rows[&d.id]
            .error
            .as_deref()
            .unwrap()
            .ends_with("; restore of v1 failed: activate step failed (exit 3)")
    );
}

#[test]
fn an_adoption_while_something_runs_or_of_a_queued_one_does_nothing() {
    let (mut h, d) = crashed_during_activation(true);
    let mut queued = d.clone();
    queued.state = State::Queued;
    h.adopt(&queued);
    assert!(h.take().is_empty(), "a queued deployment has no lease");
    h.adopt(&d);
    h.take();
    h.adopt(&d);
    assert!(h.take().is_empty(), "already ours: restoring");
}

#[test]
fn an_adopted_build_is_taken_over_and_interrupted_without_a_restore() {
    let (mut h, d) = crashed_during_activation(true);
    let mut building = d.clone();
    building.state = State::Building;
    building.version = None;
    h.rows.insert(building.id, building.clone());
    let label = h.label(d.id);
    h.adopt(&building);
    let log = h.take();
    assert_eq!(
        log[..3],
        [
            format!("take over {label} lapsed before 12:00:00 as i1 until 12:00:15, deadline none"),
            format!(
                "{label} note: instance dead stopped renewing its lease during the build \
                 step; instance i1 took the deployment over"
            ),
            format!("kill leftovers {label}"),
        ],
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.ends_with("building->interrupted")),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("restore")), "{log:?}");
}

#[test]
fn a_queued_deployment_starts_after_the_adopted_restore() {
    let (mut h, d) = crashed_during_activation(true);
    h.adopt(&d);
    h.submit(Kind::Deploy, Queue);
    let queued = h.take();
    assert!(
        queued.iter().any(|l| l.contains("queued 1 behind")),
        "{queued:?}"
    );
    h.feed(Input::RestoreEnded {
        id: d.id,
        result: PhaseResult::Done { artifact: None },
        dropped_lines: 0,
    });
    let log = h.take();
    assert!(
        log.iter().any(|l| l.ends_with("queued->building")),
        "{log:?}"
    );
}

#[test]
fn a_shutting_down_core_adopts_nothing() {
    let (mut h, d) = crashed_during_activation(true);
    h.feed(Input::ShuttingDown);
    h.adopt(&d);
    assert!(h.take().is_empty(), "the next instance restores it");
}

#[test]
fn a_build_past_its_deadline_is_taken_over_and_failed_as_timed_out() {
    let (mut h, d) = crashed_during_activation(true);
    let mut building = d.clone();
    building.state = State::Building;
    building.version = None;
    h.rows.insert(building.id, building.clone());
    let label = h.label(d.id);
    h.adopt_for(&building, Orphaned::PastDeadline);
    let log = h.take();
    assert_eq!(
        log[..2],
        [
            format!(
                "take over {label} past its deadline before 12:00:00 as i1 until 12:00:15, \
                 deadline none"
            ),
            format!(
                "{label} note: instance dead let its phase run past its deadline during the \
                 build step; instance i1 took the deployment over"
            ),
        ],
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.ends_with("building->failed")),
        "{log:?}"
    );
}

#[test]
fn another_instances_activation_is_not_cancelled_or_superseded_without_its_restore() {
    // A cancel answers "try again": adoption restores, then ends it.
    let (mut h, d) = crashed_during_activation(true);
    let label = h.label(d.id);
    let r = h.cancel(&label);
    let log = h.take();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].starts_with(&format!("reply#{} error:", r.0)) && log[0].contains("being taken over"),
        "{log:?}"
    );
    // A superseding deploy waits behind it instead of ending it.
    let (mut h, d) = crashed_during_activation(true);
    let facts = SubmitFacts {
        foreign_holder: Some(d.clone()),
        ..SubmitFacts::default()
    };
    h.submit_with(request(Kind::Deploy, Supersede), facts);
    let log = h.take();
    let label = h.label(d.id);
    assert!(
        !log.iter()
            .any(|l| l.starts_with(&format!("commit {label}"))),
        "{log:?}"
    );
    // Once adopted, it is restored and ended, and the new one goes on.
    h.adopt(&d);
    let log = h.take();
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("restore {label}"))),
        "{log:?}"
    );
}
