//! Secrets read from files when the config is loaded: `store.url_file`
//! (exclusive with `store.url`) and cluster env values written
//! `{ file = "…" }`. A file's content is the value, trailing newlines
//! dropped (as `$(cat file)` would drop them), so `echo "$SECRET" > file`
//! works. Paths are as the daemon sees them (relative ones from its working
//! directory).
//!
//! What must stay true: a file is read once, at load, and an error names
//! the key and the file, never anything of the file's content.

use super::Config;
use super::layers::{KeyPath, Seg};
use std::path::Path;

/// Read every file the config names into the value it stands for; the
/// first problem as (key path, what is wrong).
pub(super) fn read(config: &mut Config) -> Option<(KeyPath, String)> {
    let at = |keys: &[&str]| keys.iter().map(|k| Seg::Key(k.to_string())).collect();
    if let Some(path) = &config.store.url_file {
        let key = at(&["store", "url_file"]);
        if config.store.url.is_some() {
            let message = "set either store.url or store.url_file, not both";
            return Some((key, message.into()));
        }
        match read_secret(path) {
            Ok(url) => config.store.url = Some(url),
            Err(message) => return Some((key, message)),
        }
    }
    for (name, cluster) in &mut config.clusters {
        for (var, value) in &mut cluster.env {
            let Some(path) = &value.file else { continue };
            match read_secret(path) {
                Ok(text) => value.value = text,
                Err(message) => return Some((at(&["clusters", name, "env", var]), message)),
            }
        }
    }
    None
}

fn read_secret(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text"))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
