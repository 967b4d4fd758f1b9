//! Text as both backends store it.
//!
//! PostgreSQL refuses NUL in `text` and `jsonb`; SQLite keeps it. A step's
//! output, its error text and its artifact reference are whatever bytes the
//! step wrote, so a single NUL would make a PostgreSQL write fail: a whole
//! batch of log lines lost, a deployment ending `interrupted` instead of
//! `failed` with its real error. So every write goes through [`storable`]
//! first, in both backends, and reads back the same from either: NUL becomes
//! U+FFFD (the replacement character). Other control characters (tabs,
//! carriage returns, terminal colour codes) are storable and kept as they
//! are. Request fields never get here with control characters: the HTTP
//! layer refuses them (`http::check_text`).

use super::{Change, NewDeployment, VersionChange};
use crate::model::{EventData, GitInfo, clip_error};
use std::borrow::Cow;

/// `text` with every NUL replaced by U+FFFD; borrowed when there is none.
pub fn storable(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

fn fix(text: &mut String) {
    if let Cow::Owned(fixed) = storable(text) {
        *text = fixed;
    }
}

fn fix_opt(text: &mut Option<String>) {
    if let Some(text) = text {
        fix(text);
    }
}

fn fix_git(git: &mut Option<GitInfo>) {
    if let Some(git) = git {
        for field in [
            &mut git.sha,
            &mut git.branch,
            &mut git.message,
            &mut git.author,
            &mut git.repository,
        ] {
            fix_opt(field);
        }
    }
}

impl NewDeployment {
    /// This deployment as a backend writes it.
    pub fn storable(mut self) -> NewDeployment {
        fix(&mut self.message);
        fix(&mut self.deployed_by);
        fix_opt(&mut self.idempotency_key);
        fix_git(&mut self.git);
        self
    }
}

impl Change {
    /// This change as a backend writes it: the error replaced, then clipped
    /// (the fields are public, so a change may not have come through
    /// [`Change::with_error`]), and the artifact of a minted version replaced.
    pub fn storable(mut self) -> Change {
        self.error = self.error.map(|error| clip_error(&storable(&error)));
        if let VersionChange::Mint { artifact } = &mut self.version {
            fix(artifact);
        }
        self
    }
}

/// `events` as a backend writes them; what it hands back as stored, so live
/// subscribers see what a replay will.
pub fn storable_events(events: &[EventData]) -> Vec<EventData> {
    events
        .iter()
        .cloned()
        .map(|mut event| {
            match &mut event {
                EventData::Log(log) => {
                    fix(&mut log.line);
                    fix(&mut log.step);
                    fix(&mut log.stream);
                }
                EventData::State(change) => {
                    change.error = change.error.take().map(|e| clip_error(&storable(&e)));
                }
                EventData::Deployment(d) => {
                    fix(&mut d.message);
                    fix_opt(&mut d.error);
                    fix_git(&mut d.git);
                }
                EventData::Queued(_) | EventData::Truncated(_) => {}
            }
            event
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nul_is_replaced() {
        assert!(matches!(
            storable("tab\there\r\n\u{1b}[0m"),
            Cow::Borrowed(_)
        ));
        assert_eq!(storable("a\0b\0"), "a\u{FFFD}b\u{FFFD}");
    }
}
