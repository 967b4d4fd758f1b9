//! [`EnvValue`]: one value of `clusters.NAME.env`, and whether it is secret.
//!
//! In TOML: text (`TOKEN = "…"`: secret), or a table with `value` or `file`
//! and an optional `secret` (`REGION = { value = "eu-west-1", secret =
//! false }`, `TOKEN = { file = "/run/secrets/token" }`). Secret is the
//! default because a value that is shown by mistake cannot be taken back;
//! declaring one harmless is a deliberate act.
//!
//! What must stay true: serializing never writes a secret value — it is how
//! `check-config` shows the config: `"***"`, or the file it came from — and
//! neither does `{:?}`. A `file` value's content is read by the loader
//! ([`super::files`]), not here.

use crate::redact::MASK;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue {
    /// What steps get; for a `file` value, its content once loaded.
    pub(super) value: String,
    /// Where the value is read from, shown instead of it.
    pub(super) file: Option<PathBuf>,
    pub(super) secret: bool,
}

impl EnvValue {
    /// A value masked wherever deployd prints or stores text.
    pub fn secret(value: impl Into<String>) -> EnvValue {
        EnvValue {
            value: value.into(),
            file: None,
            secret: true,
        }
    }

    /// A value declared harmless: shown by `check-config`, never masked.
    pub fn not_secret(value: impl Into<String>) -> EnvValue {
        EnvValue {
            secret: false,
            ..EnvValue::secret(value)
        }
    }

    /// What the cluster's steps get.
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn is_secret(&self) -> bool {
        self.secret
    }

    /// The file the value was read from, if it was.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

/// Plain text is secret, as it is in TOML.
impl From<String> for EnvValue {
    fn from(value: String) -> EnvValue {
        EnvValue::secret(value)
    }
}

impl From<&str> for EnvValue {
    fn from(value: &str) -> EnvValue {
        EnvValue::secret(value)
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.secret) {
            (Some(file), _) => write!(f, "file {}", file.display()),
            (None, true) => f.write_str(MASK),
            (None, false) => write!(f, "{:?}", self.value),
        }
    }
}

impl Serialize for EnvValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.secret && self.file.is_none() {
            return serializer.serialize_str(MASK);
        }
        let mut table = serializer.serialize_map(None)?;
        match &self.file {
            Some(file) => table.serialize_entry("file", file)?,
            None => table.serialize_entry("value", &self.value)?,
        }
        if !self.secret {
            table.serialize_entry("secret", &false)?;
        }
        table.end()
    }
}

/// The table form, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    value: Option<String>,
    file: Option<PathBuf>,
    #[serde(default = "secret_by_default")]
    secret: bool,
}

fn secret_by_default() -> bool {
    true
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<EnvValue, D::Error> {
        deserializer.deserialize_any(EnvValueVisitor)
    }
}

struct EnvValueVisitor;

/// What to write instead. Numbers and booleans are refused without echoing
/// them: the value may be a secret.
const EXPECTED: &str = "text, or a table with `value` or `file` and optionally `secret = false` \
    (numbers and booleans go in quotes)";

impl<'de> Visitor<'de> for EnvValueVisitor {
    type Value = EnvValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<EnvValue, E> {
        Ok(EnvValue::secret(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EnvValue, A::Error> {
        let table = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let (value, file) = match (table.value, table.file) {
            (Some(_), Some(_)) => {
                return Err(de::Error::custom("set either value or file, not both"));
            }
            (None, None) => return Err(de::Error::custom("needs a value or a file")),
            (Some(value), None) => (value, None),
            (None, Some(file)) => (String::new(), Some(file)),
        };
        Ok(EnvValue {
            value,
            file,
            secret: table.secret,
        })
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<EnvValue, E> {
        Err(E::custom(format!("must be {EXPECTED}")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<EnvValue, E> {
        Err(E::custom(format!("must be {EXPECTED}")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<EnvValue, E> {
        Err(E::custom(format!("must be {EXPECTED}")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<EnvValue, E> {
        Err(E::custom(format!("must be {EXPECTED}")))
    }
}
