//! The names the API and the config speak in, each validated once, here:
//! [`AppName`], [`ClusterName`], a [`Target`] (the two together),
//! [`SourceDigest`] and [`Version`].
//!
//! What must stay true: a value of one of these types was checked when it
//! was made (`FromStr`, `TryFrom<String>`, or deserializing, which goes
//! through the same check), so code holding one never checks again; and a
//! refusal says what was wrong in words a client can act on.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// App and cluster names, as API.md writes the rule.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
/// The same rule in words, for config errors.
pub const NAME_RULE: &str = "1 to 63 of a-z, 0-9 and '-', not starting with '-'";

/// Why a text is not a valid name, digest or version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} {value:?} must match {NAME_PATTERN}")]
    Name { what: &'static str, value: String },
    // The text is not echoed: it comes from a body and may be long.
    #[error("source must be a sha256: 64 lowercase hex characters")]
    Digest { value: String },
    #[error("version {value:?} must look like v1, v2, …")]
    Version { value: String },
    #[error("target {value:?} must be <app>/<cluster>")]
    Target { value: String },
}

impl NameError {
    /// The request field the text came from: `app`, `cluster`, `source`,
    /// `version` or `target`.
    pub fn field(&self) -> &'static str {
        match self {
            NameError::Name { what, .. } => what,
            NameError::Digest { .. } => "source",
            NameError::Version { .. } => "version",
            NameError::Target { .. } => "target",
        }
    }
}

/// True for a valid app or cluster name: [`NAME_PATTERN`].
fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    (1..=63).contains(&bytes.len()) && bytes[0] != b'-' && bytes.iter().all(allowed)
}

/// True for exactly 64 lowercase hex characters.
fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A string newtype whose every value passed `$valid`.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $valid:expr, $error:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<$name, NameError> {
                if $valid(&value) {
                    Ok($name(value))
                } else {
                    Err($error(value))
                }
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<$name, NameError> {
                $name::try_from(text.to_string())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    };
}

checked_string!(
    /// An app's name: [`NAME_PATTERN`].
    AppName,
    is_name,
    |value| NameError::Name { what: "app", value }
);

checked_string!(
    /// A cluster's name: [`NAME_PATTERN`].
    ClusterName,
    is_name,
    |value| NameError::Name { what: "cluster", value }
);

checked_string!(
    /// A source's SHA-256, as it names the upload: 64 lowercase hex characters
    /// (so it is also safe as a file name).
    SourceDigest,
    is_digest,
    |value| NameError::Digest { value }
);

/// Where a deployment goes: an app on a cluster. Written `app/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Target {
    pub app: AppName,
    pub cluster: ClusterName,
}

impl Target {
    pub fn new(app: AppName, cluster: ClusterName) -> Target {
        Target { app, cluster }
    }

    /// Both names checked, the app first (a refusal names the one at fault).
    pub fn parse(app: &str, cluster: &str) -> Result<Target, NameError> {
        Ok(Target::new(app.parse()?, cluster.parse()?))
    }
}

impl FromStr for Target {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Target, NameError> {
        let (app, cluster) = text.split_once('/').ok_or_else(|| NameError::Target {
            value: text.to_string(),
        })?;
        Target::parse(app, cluster)
    }
}

impl TryFrom<String> for Target {
    type Error = NameError;
    fn try_from(value: String) -> Result<Target, NameError> {
        value.parse()
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.cluster)
    }
}

/// An app's version, `v<N>` with N ≥ 1 and no leading zero: `v1, v2, …`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Version {
    // First, so versions order by number (v2 < v10).
    number: i64,
    text: String,
}

impl Version {
    pub fn number(&self) -> i64 {
        self.number
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Version {
    type Err = NameError;
    fn from_str(text: &str) -> Result<Version, NameError> {
        let number = text
            .strip_prefix('v')
            .filter(|digits| {
                !digits.is_empty()
                    && !digits.starts_with('0')
                    && digits.bytes().all(|b| b.is_ascii_digit())
            })
            .and_then(|digits| digits.parse().ok())
            .ok_or_else(|| NameError::Version {
                value: text.to_string(),
            })?;
        Ok(Version {
            number,
            text: text.to_string(),
        })
    }
}

impl TryFrom<String> for Version {
    type Error = NameError;
    fn try_from(value: String) -> Result<Version, NameError> {
        value.parse()
    }
}

impl From<Version> for String {
    fn from(version: Version) -> String {
        version.text
    }
}

impl AsRef<str> for Version {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests;
