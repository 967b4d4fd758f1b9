//! Saved logins: `profiles.toml` in the user's config directory, one table
//! per profile holding a server and a token (and, by hand, an app and a
//! cluster), and `deployctl login` / `logout` that write it.
//!
//! What must stay true: the file holds tokens, so it is created 0600 in a
//! 0700 directory and replaced whole (a temp file renamed over it), never
//! left half-written; login saves only a token the server accepted; other
//! profiles survive a login or logout.

use crate::settings::{Settings, Source, file_error};
use crate::{Failure, SUCCEEDED};
use deployd::client::{Client, ClientError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One saved login.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

/// Profiles by name.
pub type Profiles = BTreeMap<String, Profile>;

/// A source digest no one uploads: asking whether the server has it needs
/// any token the server knows (the read role) and changes nothing, so the
/// answer tells whether a token is accepted.
const NOBODYS_SOURCE: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `$XDG_CONFIG_HOME/deployd/profiles.toml`, else
/// `$HOME/.config/deployd/profiles.toml`; none without either variable.
pub fn path() -> Option<PathBuf> {
    let set = |var| std::env::var_os(var).filter(|value| !value.is_empty());
    let config = set("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| Some(PathBuf::from(set("HOME")?).join(".config")))?;
    Some(config.join("deployd").join("profiles.toml"))
}

/// The profiles saved in `path`; none when it does not exist. Warns when
/// others may read it, since it holds tokens.
pub fn load(path: &Path) -> Result<Profiles, Failure> {
    let file = path.display();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Profiles::new()),
        Err(error) => return Err(Failure::Usage(format!("{file}: cannot read it: {error}"))),
    };
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let mode = meta.permissions().mode() & 0o777;
        eprintln!(
            "warning: {file} holds tokens and others may read it (mode {mode:o}): chmod 600 {file}"
        );
    }
    toml::from_str(&text).map_err(|error| file_error(path, &text, &error))
}

/// `deployctl login`: check that the server answers and accepts the token,
/// then save both as the chosen profile.
pub async fn login(settings: &Settings) -> Result<u8, Failure> {
    let path = settings.profiles_file.clone().ok_or_else(|| {
        Failure::Usage("cannot tell where to save profiles: set HOME or XDG_CONFIG_HOME".into())
    })?;
    let server = settings.server.value.clone();
    let name = &settings.profile.value;
    let saved = match check(&settings.client_with(None)?).await? {
        Access::Open => {
            eprintln!("deployd at {server} has auth off: no token needed");
            Profile {
                server: Some(server.clone()),
                ..Profile::default()
            }
        }
        Access::Refused => {
            let token = given_token(settings).map_or_else(|| read_token(&server), Ok)?;
            if check(&settings.client_with(Some(token.clone()))?).await? == Access::Refused {
                return Err(Failure::Usage(format!(
                    "deployd at {server} does not accept this token; nothing saved"
                )));
            }
            Profile {
                server: Some(server.clone()),
                token: Some(token),
                ..Profile::default()
            }
        }
    };
    let mut profiles = load(&path)?;
    let profile = profiles.entry(name.clone()).or_default();
    profile.server = saved.server;
    profile.token = saved.token;
    save(&path, &profiles)?;
    eprintln!(
        "logged in to {server} as profile \"{name}\" (saved in {})",
        path.display()
    );
    Ok(SUCCEEDED)
}

/// `deployctl logout`: forget the chosen profile; the others stay.
pub fn logout(settings: &Settings) -> Result<u8, Failure> {
    let name = &settings.profile.value;
    let Some(path) = &settings.profiles_file else {
        eprintln!("no profile \"{name}\" to remove");
        return Ok(SUCCEEDED);
    };
    let mut profiles = load(path)?;
    if profiles.remove(name).is_none() {
        eprintln!("no profile \"{name}\" to remove");
        return Ok(SUCCEEDED);
    }
    save(path, &profiles)?;
    eprintln!("removed profile \"{name}\" from {}", path.display());
    Ok(SUCCEEDED)
}

/// Whether a request with the client's token gets past authentication.
#[derive(PartialEq, Eq)]
enum Access {
    /// Accepted: auth is off (for a client without a token), or the token
    /// is known, even where its role may not read.
    Open,
    Refused,
}

async fn check(client: &Client) -> Result<Access, Failure> {
    if !client.is_deployd().await? {
        return Err(ClientError::Protocol(format!(
            "{} is not deployd (its answers do not name a deployd instance); nothing saved",
            client.base_url().trim_end_matches('/')
        ))
        .into());
    }
    match client.source_exists(NOBODYS_SOURCE).await {
        Ok(_) => Ok(Access::Open),
        Err(ClientError::Api { status: 401, .. }) => Ok(Access::Refused),
        Err(ClientError::Api { status: 403, .. }) => Ok(Access::Open),
        Err(error) => Err(error.into()),
    }
}

/// The token of `--token` or DEPLOYD_TOKEN; a saved one is not "given".
fn given_token(settings: &Settings) -> Option<String> {
    let token = settings.token.as_ref()?;
    matches!(token.from, Source::Flag(_) | Source::Env(_)).then(|| token.value.clone())
}

/// A token from standard input: asked for without echo on a terminal, else
/// its first line.
fn read_token(server: &str) -> Result<String, Failure> {
    let unreadable =
        |error: std::io::Error| Failure::Usage(format!("cannot read a token: {error}"));
    let token = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("token for {server}: ")).map_err(unreadable)?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(unreadable)?;
        line
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Failure::Usage(
            "no token given: pass --token, set DEPLOYD_TOKEN, or type it when asked".into(),
        ));
    }
    Ok(token)
}

/// Replace `path` with `profiles`: a 0600 temp file beside it, renamed over
/// it, so a reader sees the old file or the new one.
fn save(path: &Path, profiles: &Profiles) -> Result<(), Failure> {
    let failed =
        |error: std::io::Error| Failure::Usage(format!("cannot save {}: {error}", path.display()));
    let dir = path.parent().expect("the profiles file is in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    let text = toml::to_string(profiles).expect("profiles serialize");
    let temp = dir.join(format!(".profiles.toml.{}", std::process::id()));
    // A stale temp file of a killed login could have another mode.
    let _ = std::fs::remove_file(&temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(failed)
}
