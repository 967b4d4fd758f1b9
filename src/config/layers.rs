//! The layering: parse the defaults and the file, deep-merge them, apply
//! the `DEPLOYD_*` overrides, deserialize with the failing key's path, read
//! the files secrets are kept in, then check the rules. Errors name the key
//! and the layer that set it.

use super::{Config, ConfigError, DEFAULT_TOML, Layer, NOT_CONFIG_VARS, files, rules};
use toml::{Table, Value};

const ENV_PREFIX: &str = "DEPLOYD_";

/// A key path as serde and the validation rules see it.
pub(super) type KeyPath = Vec<Seg>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

pub(super) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) if out.is_empty() => out.push_str(key),
            Seg::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Seg::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

/// The layering itself: parse, merge, override, deserialize, validate.
pub(super) fn build(
    file: Option<(Layer, &str)>,
    env: Vec<(String, String)>,
) -> Result<Config, ConfigError> {
    let mut base = parse_table(Layer::Defaults, DEFAULT_TOML)?;
    let file_origin = match file {
        Some((origin, text)) => {
            merge(&mut base, parse_table(origin.clone(), text)?);
            Some(origin)
        }
        None => None,
    };
    let mut overrides = env
        .into_iter()
        .filter(|(var, _)| is_override(var))
        .map(|(var, raw)| EnvOverride::parse(var, raw))
        .collect::<Result<Vec<_>, _>>()?;
    // Shorter paths first, so a nested override lands inside a whole-table one.
    overrides.sort_by(|a, b| (a.path.len(), &a.var).cmp(&(b.path.len(), &b.var)));

    let origin_of = |overrides: &[EnvOverride], key: &[Seg]| {
        let by_env = overrides.iter().rev().find(|o| o.covers(key));
        let by_env = by_env.or_else(|| overrides.iter().rev().find(|o| o.sets_below(key)));
        match (by_env, &file_origin) {
            (Some(o), _) => Layer::Env(o.var.clone()),
            // The defaults are valid on their own, so a fault the
            // environment did not cause is the file's.
            (None, Some(file)) => file.clone(),
            (None, None) => Layer::Defaults,
        }
    };
    let mut config = loop {
        let mut table = base.clone();
        for o in &overrides {
            o.apply(&mut table)?;
        }
        let error = match serde_path_to_error::deserialize::<_, Config>(Value::Table(table)) {
            Ok(config) => break config,
            Err(error) => error,
        };
        let (key, message) = describe(error);
        // An override that parsed as a number or boolean where the key wants
        // text: the raw text was meant. Each override retries at most once.
        if let Some(o) = overrides.iter_mut().rev().find(|o| o.is_exactly(&key))
            && o.fall_back_to_text()
        {
            continue;
        }
        let origin = Some(origin_of(&overrides, &key));
        let key = render(&key);
        return Err(ConfigError::Invalid {
            key,
            message,
            origin,
        });
    };
    if let Some((key, message)) = files::read(&mut config).or_else(|| rules::problem(&config)) {
        let origin = Some(origin_of(&overrides, &key));
        let key = render(&key);
        return Err(ConfigError::Invalid {
            key,
            message,
            origin,
        });
    }
    // Hashes are compared as text: one spelling.
    for token in &mut config.auth.tokens {
        token.sha256.make_ascii_lowercase();
    }
    Ok(config)
}

/// The layer's TOML as a table. A syntax error names the line and column
/// and what is wrong, never the line's text: it may hold a secret.
fn parse_table(origin: Layer, text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|error| {
        let at = error.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        });
        ConfigError::Syntax {
            origin,
            message: format!("{}{}", at.unwrap_or_default(), error.message().trim_end()),
        }
    })
}

/// Tables merge key by key; anything else in `over` replaces what `base` has.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(base)), Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn is_override(var: &str) -> bool {
    var.starts_with(ENV_PREFIX) && !NOT_CONFIG_VARS.contains(&var)
}

/// The process's `DEPLOYD_*` overrides. A non-UTF-8 value is an error, not
/// something to guess at.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (var, value) in std::env::vars_os() {
        let Some(var) = var.to_str().filter(|var| is_override(var)) else {
            continue;
        };
        let value = value.into_string().map_err(|_| ConfigError::Env {
            var: var.to_string(),
            message: "the value is not UTF-8".into(),
        })?;
        vars.push((var.to_string(), value));
    }
    Ok(vars)
}

/// Turn serde's error into (key path, message); an unknown field becomes
/// that key, so the message names exactly what to fix.
fn describe(error: serde_path_to_error::Error<toml::de::Error>) -> (KeyPath, String) {
    use serde_path_to_error::Segment;
    let mut key: KeyPath = (error.path().iter())
        .filter_map(|segment| match segment {
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect();
    let message = error.into_inner().message().to_string();
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        // The path usually ends at the unknown key already; make sure.
        if key.last() != Some(&Seg::Key(name.to_string())) {
            key.push(Seg::Key(name.to_string()));
        }
        if let Some((_, replaced)) = REPLACED.iter().find(|(old, _)| *old == name) {
            return (key, (*replaced).to_string());
        }
        let expected = expected.trim_start_matches(", ").replace('`', "");
        return (key, format!("unknown key ({expected})"));
    }
    (key, message)
}

/// Keys an earlier deployd had, with what replaced them: an old config file
/// gets this sentence rather than a bare "unknown key".
const REPLACED: &[(&str, &str)] = &[(
    "keep_per_target",
    "was replaced: retention counts releases, not attempts; set deploy.keep_releases \
     (versions that were live, kept per target) and deploy.keep_attempts (deployments that \
     never went live, kept per target)",
)];

/// One `DEPLOYD_A__B=value` variable, as a key path and a TOML value.
struct EnvOverride {
    var: String,
    path: Vec<String>,
    raw: String,
    value: Value,
}

impl EnvOverride {
    fn parse(var: String, raw: String) -> Result<EnvOverride, ConfigError> {
        let mut path: Vec<String> = Vec::new();
        for segment in var[ENV_PREFIX.len()..].split("__") {
            if segment.is_empty() {
                let message = "empty key level; levels are separated by exactly `__`".into();
                return Err(ConfigError::Env { var, message });
            }
            let in_env_map = is_env_value(&path, path.len());
            path.push(match in_env_map {
                true => segment.to_string(),
                false => segment.to_ascii_lowercase(),
            });
        }
        let value = match raw.parse::<Value>() {
            // A date is never what a deployd key wants; keep the text.
            Ok(Value::Datetime(_)) | Err(_) => Value::String(raw.clone()),
            Ok(value) => value,
        };
        Ok(EnvOverride {
            var,
            path,
            raw,
            value,
        })
    }

    /// Set the value, creating the tables on the way. An inline table
    /// merges like one in the file.
    fn apply(&self, mut table: &mut Table) -> Result<(), ConfigError> {
        for (depth, key) in self.path.iter().enumerate() {
            if depth + 1 == self.path.len() {
                let mut layer = Table::new();
                layer.insert(key.clone(), self.value.clone());
                merge(table, layer);
                break;
            }
            let entry = table.entry(key.clone());
            let entry = entry.or_insert_with(|| Value::Table(Table::new()));
            // `VAR = "text"` is `VAR = { value = "text" }`, so an override
            // of `VAR.secret` (or `VAR.file`) lands in it.
            if let Value::String(text) = entry
                && is_env_value(&self.path, depth)
            {
                let text = std::mem::take(text);
                *entry = Value::Table(Table::from_iter([("value".into(), Value::String(text))]));
            }
            table = match entry {
                Value::Table(inner) => inner,
                _ => {
                    let message = format!("{} is not a table", self.path[..=depth].join("."));
                    let var = self.var.clone();
                    return Err(ConfigError::Env { var, message });
                }
            };
        }
        Ok(())
    }

    /// Whether `key` is this override's key or inside it.
    fn covers(&self, key: &[Seg]) -> bool {
        self.path.len() <= key.len() && self.path.iter().zip(key).all(|(p, k)| same(p, k))
    }

    /// Whether this override sets something inside `key`.
    fn sets_below(&self, key: &[Seg]) -> bool {
        key.len() < self.path.len() && key.iter().zip(&self.path).all(|(k, p)| same(p, k))
    }

    fn is_exactly(&self, key: &[Seg]) -> bool {
        self.path.len() == key.len() && self.covers(key)
    }

    /// Take the raw text instead of a scalar it parsed as. Arrays and tables
    /// were written as TOML on purpose: their errors stand.
    fn fall_back_to_text(&mut self) -> bool {
        if matches!(
            self.value,
            Value::String(_) | Value::Array(_) | Value::Table(_)
        ) {
            return false;
        }
        self.value = Value::String(self.raw.clone());
        true
    }
}

/// Whether level `depth` of `path` names a variable of a cluster's env
/// (`clusters.<name>.env.<VAR>`).
fn is_env_value(path: &[String], depth: usize) -> bool {
    depth == 3 && path.len() >= 3 && path[0] == "clusters" && path[2] == "env"
}

fn same(path: &str, seg: &Seg) -> bool {
    matches!(seg, Seg::Key(key) if key == path)
}
