//! Conflict policy × target state, queue order and positions, submits the
//! core refuses.

use super::*;
use ConflictPolicy::*;

/// The target's state before a new deploy arrives.
#[derive(Debug, Clone, Copy)]
enum Before {
    Idle,
    /// d1 is building.
    Running,
    /// d1 is building, d2 waits.
    Queued,
    /// Another instance runs d1; this core holds nothing.
    Foreign,
}

fn set_up(before: Before) -> (Harness, SubmitFacts) {
    let mut h = Harness::new();
    let mut facts = SubmitFacts::default();
    match before {
        Before::Idle => {}
        Before::Running => {
            h.submit(Kind::Deploy, Queue);
        }
        Before::Queued => {
            h.submit(Kind::Deploy, Queue);
            h.submit(Kind::Deploy, Queue);
        }
        Before::Foreign => facts.foreign_holder = Some(foreign_running(&mut h)),
    }
    h.take();
    (h, facts)
}

#[test]
fn conflict_policy_by_target_state() {
    let busy = "reply#{r} error: ci is already deploying web/prod (building)";
    let foreign_busy = "reply#{r} error: other is already deploying web/prod (building)";
    let rows: &[(Before, ConflictPolicy, &[&str])] = &[
        // An idle target starts the deployment at once, whatever the policy.
        (
            Before::Idle,
            Reject,
            &[
                "create d1",
                "prepare d1",
                "commit d1 queued->building",
                "step d1 building",
                "reply#{r} d1 building",
            ],
        ),
        (
            Before::Idle,
            Queue,
            &[
                "create d1",
                "prepare d1",
                "commit d1 queued->building",
                "step d1 building",
                "reply#{r} d1 building",
            ],
        ),
        (
            Before::Idle,
            Supersede,
            &[
                "create d1",
                "prepare d1",
                "commit d1 queued->building",
                "step d1 building",
                "reply#{r} d1 building",
            ],
        ),
        // A running deployment: reject answers 409 and writes nothing.
        (Before::Running, Reject, &[busy]),
        (
            Before::Running,
            Queue,
            &["create d2", "d2 queued 1 behind d1", "reply#{r} d2 queued"],
        ),
        // Supersede stops the running step; the new one waits until it is gone.
        (
            Before::Running,
            Supersede,
            &[
                "create d2",
                "d1 note: stopping the build step (superseded)",
                "stop step d1",
                "d2 queued 1 behind d1",
                "reply#{r} d2 queued",
            ],
        ),
        (Before::Queued, Reject, &[busy]),
        (
            Before::Queued,
            Queue,
            &["create d3", "d3 queued 2 behind d2", "reply#{r} d3 queued"],
        ),
        // Queued ones are cancelled at once (no step), the running one stopped.
        (
            Before::Queued,
            Supersede,
            &[
                "create d3",
                "commit d2 queued->cancelled",
                "d1 note: stopping the build step (superseded)",
                "stop step d1",
                "d3 queued 1 behind d1",
                "reply#{r} d3 queued",
            ],
        ),
        // Another instance's deployment: the store's one-running rule decides.
        (Before::Foreign, Reject, &[foreign_busy]),
        (
            Before::Foreign,
            Queue,
            &[
                "create d2",
                "prepare d2",
                "commit d2 queued->building refused: busy",
                "reply#{r} d2 queued",
                "retry later",
            ],
        ),
        (
            Before::Foreign,
            Supersede,
            &[
                "create d2",
                "commit d1 building->cancelled",
                "prepare d2",
                "commit d2 queued->building",
                "step d2 building",
                "reply#{r} d2 building",
            ],
        ),
    ];
    for &(before, policy, expected) in rows {
        let (mut h, facts) = set_up(before);
        let reply = h.submit_with(request(Kind::Deploy, policy), facts);
        let expected: Vec<String> = expected
            .iter()
            .map(|l| l.replace("{r}", &reply.0.to_string()))
            .collect();
        assert_eq!(h.take(), expected, "{before:?} + {policy:?}");
    }
}

#[test]
fn superseded_deployment_ends_only_when_its_step_is_gone() {
    let (mut h, _) = set_up(Before::Running);
    h.submit(Kind::Deploy, Supersede);
    h.take();
    h.step_ends("d1", PhaseResult::Failed("build step cancelled".into()));
    assert_eq!(
        h.take(),
        lines(&[
            "commit d1 building->cancelled",
            "forget d1",
            "prepare d2",
            "commit d2 queued->building",
            "step d2 building"
        ])
    );
    assert_eq!(h.rows[&h.id("d1")].superseded_by, Some(h.id("d2")));
    assert_eq!(h.rows[&h.id("d1")].error.as_deref(), Some("superseded"));
}

#[test]
fn queue_runs_in_order_and_positions_follow() {
    let mut h = Harness::new();
    h.submit(Kind::Deploy, Queue);
    for _ in 0..3 {
        h.submit(Kind::Deploy, Queue);
    }
    h.take();
    // Cancelling d3 moves d4 up behind d2.
    let reply = h.cancel("d3");
    assert_eq!(
        h.take(),
        vec![
            "commit d3 queued->cancelled".to_string(),
            format!("reply#{} d3 cancelled", reply.0),
            "d2 queued 1 behind d1".into(),
            "d4 queued 2 behind d2".into(),
        ]
    );
    // d1 ends; d2 starts; d4 is first in line behind it.
    h.run_to_success("d1");
    let log = h.take();
    assert_eq!(
        &log[log.len() - 6..],
        lines(&[
            "commit d1 activating->succeeded",
            "forget d1",
            "prepare d2",
            "commit d2 queued->building",
            "step d2 building",
            "d4 queued 1 behind d2",
        ])
        .as_slice()
    );
    h.feed(Input::Retry);
    assert!(
        h.take().is_empty(),
        "a retry with a step in flight does nothing"
    );
    h.run_to_success("d2");
    assert!(h.take().contains(&"step d4 building".to_string()));
    h.run_to_success("d4");
    assert_eq!(h.take().last().map(String::as_str), Some("idle"));
}

#[test]
fn a_deploy_walks_every_phase_and_mints_one_version() {
    let mut h = Harness::new();
    h.submit(Kind::Deploy, Queue);
    h.take();
    h.run_to_success("d1");
    assert_eq!(
        h.take(),
        lines(&[
            "commit d1 building->pushing",
            "step d1 pushing",
            "commit d1 pushing->activating",
            "step d1 activating",
            "commit d1 activating->succeeded",
            "forget d1",
            "idle",
        ])
    );
    assert_eq!(h.rows[&h.id("d1")].version.as_deref(), Some("v1"));
}

#[test]
fn refused_submits_write_nothing() {
    let mut h = Harness::new();
    // Not loaded yet: unavailable.
    let mut cold = Harness::new();
    cold.core = TargetCore::new(h.core.config.clone());
    let r = cold.submit(Kind::Deploy, Queue);
    assert_eq!(
        cold.take(),
        vec![format!(
            "reply#{} error: the target's actor is not answering: the target is still loading its queue from the store",
            r.0
        )]
    );

    // A rollback to a version that does not exist.
    let r = h.submit(Kind::Rollback, Queue);
    assert_eq!(
        h.take(),
        vec![format!(
            "reply#{} error: version active before the current one on web/prod not found",
            r.0
        )]
    );

    // An idempotency key repeated with the same request, then another one.
    h.submit(Kind::Deploy, Queue);
    h.take();
    let earlier = h.rows[&h.id("d1")].clone();
    let same = SubmitFacts {
        idempotent: Some((earlier.clone(), "hash".into())),
        ..SubmitFacts::default()
    };
    let r = h.submit_with(request(Kind::Deploy, Queue), same);
    assert_eq!(h.take(), vec![format!("reply#{} d1 (repeated)", r.0)]);
    let other = SubmitFacts {
        idempotent: Some((earlier, "another".into())),
        ..SubmitFacts::default()
    };
    let r = h.submit_with(request(Kind::Deploy, Queue), other);
    assert_eq!(
        h.take(),
        vec![format!(
            "reply#{} error: this idempotency key was used for a different request",
            r.0
        )]
    );

    // The store is away while the facts are read.
    h.next_reply += 1;
    let reply = ReplyTo(h.next_reply);
    h.feed(Input::Submit {
        reply,
        id: Uuid::now_v7(),
        request: Box::new(request(Kind::Deploy, Queue)),
        facts: Err(StoreError::Unavailable("connection refused".into())),
    });
    assert_eq!(
        h.take(),
        vec![format!(
            "reply#{} error: the store could not be used",
            reply.0
        )]
    );
}

#[test]
fn a_rollback_activates_its_version_without_building() {
    let mut h = Harness::new();
    let info = VersionInfo {
        version: "v3".into(),
        artifact: "registry/web:3".into(),
        git: None,
        created_at: h.now,
        deployment_id: Uuid::now_v7(),
        built_on: None,
        pinned: false,
        live: Vec::new(),
    };
    h.versions.insert("v3".into(), info.clone());
    let facts = SubmitFacts {
        rollback_to: Some(info),
        ..SubmitFacts::default()
    };
    let r = h.submit_with(request(Kind::Rollback, Queue), facts);
    assert_eq!(
        h.take(),
        vec![
            "create d1".to_string(),
            "prepare d1".into(),
            "commit d1 queued->activating".into(),
            "step d1 activating".into(),
            format!("reply#{} d1 activating", r.0),
        ]
    );
    assert_eq!(h.rows[&h.id("d1")].version.as_deref(), Some("v3"));
    // The version disappeared while the rollback waited: it fails to start.
    let mut h = Harness::new();
    h.submit(Kind::Deploy, Queue);
    let facts = SubmitFacts {
        rollback_to: Some(h.versions.get("v3").cloned().unwrap_or(VersionInfo {
            version: "v3".into(),
            artifact: "gone".into(),
            git: None,
            created_at: h.now,
            deployment_id: Uuid::now_v7(),
            built_on: None,
            pinned: false,
            live: Vec::new(),
        })),
        ..SubmitFacts::default()
    };
    h.submit_with(request(Kind::Rollback, Queue), facts);
    h.run_to_success("d1");
    let log = h.take();
    assert!(
        log.contains(&"commit d2 queued->failed".to_string()),
        "{log:?}"
    );
    assert_eq!(
        h.rows[&h.id("d2")].error.as_deref(),
        Some("could not start: version v3 of app web not found")
    );
}
