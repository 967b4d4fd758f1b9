//! The phase state machine: pure, no I/O, no clock, no async.
//!
//! Every state change of a deployment in this codebase goes through
//! [`transition`]; the store's compare-and-set and the database constraints
//! back it up, but this table is the one place the rules are written.
//!
//! ```text
//! deploy:   queued → building → pushing → activating → succeeded
//! rollback: queued → activating → succeeded
//! any non-terminal → failed | cancelled; interrupted only by reconciliation
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The phase a deployment is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Building,
    Pushing,
    Activating,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

/// What a deployment does: a build from source, or a re-activation of a
/// version the server already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deploy,
    Rollback,
}

/// Who asks for the change. Only reconciliation (a lease that expired, a
/// process that died or shut down) may mark a deployment `interrupted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The target's actor, acting on step results, cancels and supersedes.
    Actor,
    /// The reaper, start-up reconciliation or shutdown.
    Reconciler,
}

/// What the machine needs to know beyond the two states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// Whether the deployment has (or gets with this change) a version.
    pub has_version: bool,
    pub by: Authority,
}

/// Why a transition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a deployment in state {from} has ended and cannot become {to}")]
    Terminal { from: State, to: State },
    #[error("a {kind} cannot go from {from} to {to}")]
    NotAllowed { kind: Kind, from: State, to: State },
    #[error("only reconciliation may mark a deployment interrupted")]
    ReconcileOnly,
    #[error("a deployment needs a version to enter {to}")]
    NoVersion { to: State },
}

/// Decide whether a deployment of `kind` may go from `from` to `to`.
/// Returns the new state, or why not.
pub fn transition(kind: Kind, from: State, to: State, facts: Facts) -> Result<State, Refusal> {
    use State::*;
    if from.is_terminal() {
        return Err(Refusal::Terminal { from, to });
    }
    let allowed = match (from, to) {
        (_, Failed | Cancelled) => true,
        (_, Interrupted) => {
            if facts.by != Authority::Reconciler {
                return Err(Refusal::ReconcileOnly);
            }
            true
        }
        (Queued, Building) => kind == Kind::Deploy,
        (Queued, Activating) => kind == Kind::Rollback,
        (Building, Pushing) | (Pushing, Activating) => kind == Kind::Deploy,
        (Activating, Succeeded) => true,
        _ => false,
    };
    if !allowed {
        return Err(Refusal::NotAllowed { kind, from, to });
    }
    if matches!(to, Activating | Succeeded) && !facts.has_version {
        return Err(Refusal::NoVersion { to });
    }
    Ok(to)
}

/// What comes after `phase` of a deployment of `kind` once its work is done:
/// the next running phase, or `succeeded`. `None` where `phase` is not one a
/// deployment of `kind` runs (a rollback never builds) or has ended.
///
/// Every (kind, phase) pair is written out, with no catch-all arm, so a new
/// phase cannot be added without deciding what follows it.
pub fn after(kind: Kind, phase: State) -> Option<State> {
    use Kind::*;
    use State::*;
    match (kind, phase) {
        (Deploy, Queued) => Some(Building),
        (Deploy, Building) => Some(Pushing),
        (Deploy, Pushing) => Some(Activating),
        (Deploy, Activating) => Some(Succeeded),
        (Rollback, Queued) => Some(Activating),
        (Rollback, Building | Pushing) => None,
        (Rollback, Activating) => Some(Succeeded),
        (Deploy | Rollback, Succeeded | Failed | Cancelled | Interrupted) => None,
    }
}

/// Whether entering `to` from `from` mints the app's next version: a build
/// that succeeded hands its artifact to `pushing`.
pub fn mints_version(kind: Kind, from: State, to: State) -> bool {
    kind == Kind::Deploy && from == State::Building && to == State::Pushing
}

impl State {
    pub const ALL: [State; 8] = [
        State::Queued,
        State::Building,
        State::Pushing,
        State::Activating,
        State::Succeeded,
        State::Failed,
        State::Cancelled,
        State::Interrupted,
    ];

    /// Succeeded, failed, cancelled and interrupted absorb: nothing leaves them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Cancelled | State::Interrupted
        )
    }

    /// Building, pushing and activating: a step may be running. At most one
    /// deployment per (app, cluster) is in one of these.
    pub fn is_running(self) -> bool {
        matches!(self, State::Building | State::Pushing | State::Activating)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Building => "building",
            State::Pushing => "pushing",
            State::Activating => "activating",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Interrupted => "interrupted",
        }
    }
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
        }
    }

    /// The first running phase after `queued`.
    pub fn first_phase(self) -> State {
        after(self, State::Queued).expect("every kind leaves queued")
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct ParseError {
    what: &'static str,
    value: String,
}

impl FromStr for State {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "state",
                value: s.to_string(),
            })
    }
}

impl FromStr for Kind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deploy" => Ok(Kind::Deploy),
            "rollback" => Ok(Kind::Rollback),
            _ => Err(ParseError {
                what: "kind",
                value: s.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;
    use proptest::prelude::*;

    const ACTOR: Facts = Facts {
        has_version: true,
        by: Authority::Actor,
    };
    const RECONCILER: Facts = Facts {
        has_version: true,
        by: Authority::Reconciler,
    };

    /// DESIGN.md's table, written out independently of `transition`:
    /// (kind, from, to) triples that are allowed for the actor.
    fn expected(kind: Kind, from: State, to: State) -> bool {
        let table: &[(State, State)] = match kind {
            Kind::Deploy => &[
                (Queued, Building),
                (Building, Pushing),
                (Pushing, Activating),
                (Activating, Succeeded),
            ],
            Kind::Rollback => &[(Queued, Activating), (Activating, Succeeded)],
        };
        let forward = table.contains(&(from, to));
        let abort = !from.is_terminal() && matches!(to, Failed | Cancelled);
        forward || abort
    }

    #[test]
    fn every_triple_follows_the_table() {
        for kind in [Kind::Deploy, Kind::Rollback] {
            for from in State::ALL {
                for to in State::ALL {
                    let got = transition(kind, from, to, ACTOR);
                    if expected(kind, from, to) {
                        assert_eq!(got, Ok(to), "{kind} {from} -> {to}");
                    } else {
                        assert!(got.is_err(), "{kind} {from} -> {to} should be refused");
                    }
                    let by_reconciler = transition(kind, from, to, RECONCILER);
                    let interrupt = to == Interrupted && !from.is_terminal();
                    assert_eq!(
                        by_reconciler.is_ok(),
                        expected(kind, from, to) || interrupt,
                        "reconciler {kind} {from} -> {to}"
                    );
                }
            }
        }
    }

    #[test]
    fn terminal_states_absorb() {
        for from in State::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in State::ALL {
                assert_eq!(
                    transition(Kind::Deploy, from, to, RECONCILER),
                    Err(Refusal::Terminal { from, to })
                );
            }
        }
    }

    #[test]
    fn interrupted_is_for_reconciliation_only() {
        assert_eq!(
            transition(Kind::Deploy, Building, Interrupted, ACTOR),
            Err(Refusal::ReconcileOnly)
        );
        assert_eq!(
            transition(Kind::Deploy, Building, Interrupted, RECONCILER),
            Ok(Interrupted)
        );
    }

    #[test]
    fn activating_needs_a_version() {
        let none = Facts {
            has_version: false,
            by: Authority::Actor,
        };
        assert_eq!(
            transition(Kind::Deploy, Pushing, Activating, none),
            Err(Refusal::NoVersion { to: Activating })
        );
        assert_eq!(
            transition(Kind::Rollback, Queued, Activating, none),
            Err(Refusal::NoVersion { to: Activating })
        );
        assert_eq!(
            transition(Kind::Deploy, Queued, Building, none),
            Ok(Building)
        );
    }

    /// `after` agrees with the transition table: what it names is allowed,
    /// and every forward edge of the table is named by it.
    #[test]
    fn after_walks_the_table_forward() {
        let rows: &[(Kind, State, Option<State>)] = &[
            (Kind::Deploy, Queued, Some(Building)),
            (Kind::Deploy, Building, Some(Pushing)),
            (Kind::Deploy, Pushing, Some(Activating)),
            (Kind::Deploy, Activating, Some(Succeeded)),
            (Kind::Rollback, Queued, Some(Activating)),
            (Kind::Rollback, Building, None),
            (Kind::Rollback, Pushing, None),
            (Kind::Rollback, Activating, Some(Succeeded)),
        ];
        for &(kind, from, next) in rows {
            assert_eq!(after(kind, from), next, "{kind} after {from}");
            if let Some(to) = next {
                assert_eq!(transition(kind, from, to, ACTOR), Ok(to));
            }
        }
        for kind in [Kind::Deploy, Kind::Rollback] {
            for from in State::ALL.into_iter().filter(|s| s.is_terminal()) {
                assert_eq!(after(kind, from), None);
            }
            for from in State::ALL {
                for to in State::ALL {
                    let forward = expected(kind, from, to) && !matches!(to, Failed | Cancelled);
                    assert_eq!(
                        forward,
                        after(kind, from) == Some(to),
                        "{kind} {from} -> {to}"
                    );
                }
            }
        }
        assert!(mints_version(Kind::Deploy, Building, Pushing));
        assert!(!mints_version(Kind::Deploy, Pushing, Activating));
        assert!(!mints_version(Kind::Rollback, Queued, Activating));
    }

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
        }
        assert!("pending-build".parse::<State>().is_err());
        assert_eq!("rollback".parse::<Kind>(), Ok(Kind::Rollback));
    }

    fn any_state() -> impl Strategy<Value = State> {
        proptest::sample::select(State::ALL.to_vec())
    }

    fn any_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![Just(Kind::Deploy), Just(Kind::Rollback)]
    }

    proptest! {
        /// Applying random requested changes, keeping only the accepted ones,
        /// never produces a step the table forbids and never leaves a terminal state.
        #[test]
        fn random_sequences_stay_inside_the_table(
            kind in any_kind(),
            steps in proptest::collection::vec((any_state(), any::<bool>(), any::<bool>()), 0..40),
        ) {
            let mut state = Queued;
            let mut has_version = kind == Kind::Rollback;
            for (to, reconciler, mint) in steps {
                let by = if reconciler { Authority::Reconciler } else { Authority::Actor };
                let facts = Facts { has_version: has_version || mint, by };
                if let Ok(next) = transition(kind, state, to, facts) {
                    let forward_or_abort = expected(kind, state, next);
                    let interrupt = next == Interrupted && reconciler;
                    prop_assert!(forward_or_abort || interrupt, "{kind} {state} -> {next}");
                    prop_assert!(!state.is_terminal());
                    if matches!(next, Activating | Succeeded) {
                        prop_assert!(facts.has_version);
                    }
                    has_version = facts.has_version;
                    state = next;
                }
            }
        }
    }
}
