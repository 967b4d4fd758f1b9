//! [`StepUser`]: the account a cluster's steps run as (`clusters.NAME.user`).
//!
//! A name is looked up in the system's user database once, when the config
//! is loaded: its uid, primary gid and supplementary groups. What must stay
//! true: a `StepUser` only exists resolved, so a step never starts as an
//! identity nobody checked (an unknown name is a config error naming the
//! key); and the switch to it happens in the step's own process, after the
//! guard has forked off (`pipeline::guard`), so the guard — a copy of the
//! daemon's memory — keeps the daemon's identity.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fmt;
use std::str::FromStr;

/// A user steps may run as, resolved.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StepUser {
    name: String,
    uid: u32,
    gid: u32,
    /// Supplementary groups, the primary one among them.
    groups: Vec<u32>,
}

/// The ids a step process takes on before it execs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
}

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("no such user {0:?}")]
    Unknown(String),
    #[error("not a user name: {0:?}")]
    Invalid(String),
    #[error("cannot look up user {name:?}: {error}")]
    Lookup {
        name: String,
        #[source]
        error: std::io::Error,
    },
}

impl StepUser {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Whether this process can start steps as this user: it is root, or
    /// it already is this user.
    pub fn reachable(&self) -> bool {
        let euid = effective_uid();
        euid == 0 || euid == self.uid
    }

    /// What a step must switch to: nothing when this process already is
    /// this user and not root (a root daemon always switches, dropping its
    /// own groups; anyone else could not).
    pub fn switch(&self) -> Option<Ids> {
        let euid = effective_uid();
        (euid == 0 || euid != self.uid).then(|| Ids {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        })
    }
}

/// The uid this process acts as.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

impl FromStr for StepUser {
    type Err = UserError;

    fn from_str(name: &str) -> Result<StepUser, UserError> {
        let invalid = || UserError::Invalid(name.to_string());
        if name.is_empty() {
            return Err(invalid());
        }
        let c_name = CString::new(name).map_err(|_| invalid())?;
        let (uid, gid) = passwd_entry(&c_name)?.ok_or_else(|| UserError::Unknown(name.into()))?;
        let groups = group_list(&c_name, gid).map_err(|error| UserError::Lookup {
            name: name.to_string(),
            error,
        })?;
        Ok(StepUser {
            name: name.to_string(),
            uid,
            gid,
            groups,
        })
    }
}

impl TryFrom<String> for StepUser {
    type Error = UserError;

    fn try_from(name: String) -> Result<StepUser, UserError> {
        name.parse()
    }
}

impl From<StepUser> for String {
    fn from(user: StepUser) -> String {
        user.name
    }
}

impl fmt::Debug for StepUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.name, self.uid, self.gid)
    }
}

impl fmt::Display for StepUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// (uid, gid) of `name`, `None` when there is no such user.
fn passwd_entry(name: &CString) -> Result<Option<(u32, u32)>, UserError> {
    let mut buffer: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: passwd is plain data, valid when zeroed; getpwnam_r
        // writes only into it and into `buffer`, whose length it is told.
        let (rc, found) = unsafe {
            let mut entry: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                &mut result,
            );
            (
                rc,
                (!result.is_null()).then_some((entry.pw_uid, entry.pw_gid)),
            )
        };
        match rc {
            0 => return Ok(found),
            libc::ERANGE if buffer.len() < 1 << 20 => buffer.resize(buffer.len() * 2, 0),
            _ => {
                return Err(UserError::Lookup {
                    name: name.to_string_lossy().into_owned(),
                    error: std::io::Error::from_raw_os_error(rc),
                });
            }
        }
    }
}

/// Every group `name` is in, `gid` included.
fn group_list(name: &CString, gid: u32) -> std::io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut count = libc::c_int::try_from(groups.len()).map_err(std::io::Error::other)?;
        // SAFETY: getgrouplist writes at most `count` gids into `groups`,
        // and sets `count` to how many there are.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).map_err(std::io::Error::other)?;
        if rc >= 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        if groups.len() >= 1 << 16 {
            return Err(std::io::Error::other("too many groups"));
        }
        groups.resize(count.max(groups.len() * 2), 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_ids_and_unknown_ones_are_refused() {
        let root: StepUser = "root".parse().expect("root exists");
        assert_eq!((root.uid(), root.gid()), (0, 0));
        assert!(root.groups.contains(&0));
        let nobody: StepUser = "nobody".parse().expect("nobody exists");
        assert_eq!(nobody.uid(), 65534);
        assert_eq!(nobody.to_string(), "nobody");

        let error = "no-such-user-x".parse::<StepUser>().expect_err("unknown");
        assert_eq!(error.to_string(), "no such user \"no-such-user-x\"");
        assert!(matches!("".parse::<StepUser>(), Err(UserError::Invalid(_))));
        assert!(matches!(
            "a\0b".parse::<StepUser>(),
            Err(UserError::Invalid(_))
        ));
    }

    #[test]
    fn a_root_process_always_switches_and_may_become_anyone() {
        if effective_uid() != 0 {
            return;
        }
        let nobody: StepUser = "nobody".parse().expect("nobody exists");
        assert!(nobody.reachable());
        let ids = nobody.switch().expect("root switches");
        assert_eq!((ids.uid, ids.gid), (65534, nobody.gid()));
        let root: StepUser = "root".parse().expect("root exists");
        assert!(root.switch().is_some(), "even to root: its own groups");
    }
}
