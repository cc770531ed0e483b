//! The CLI's config file: named contexts (a server, the CA to trust it by, a token) and which
//! one is current.
//!
//! It lives at `$TROUPE_CONFIG`, else `$XDG_CONFIG_HOME/troupe/config.yaml`, else
//! `~/.config/troupe/config.yaml`, and is written whole, mode 0600, since it holds tokens.
//! `troupe login`, `logout`, `context use` and `troupe server --dev` write it; every client
//! verb reads it (flags and environment variables win over it).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The config file's contents.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Config {
    /// The context client verbs use when `--context` does not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) current_context: Option<String>,
    /// Every context, by name.
    #[serde(default)]
    pub(super) contexts: Vec<NamedContext>,
}

/// One server and how to talk to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct NamedContext {
    /// What `--context` and `troupe context use` call it.
    pub(super) name: String,
    /// URL of the server: `https://HOST:PORT`, or `http://` for plaintext; or several,
    /// comma-separated (see [`super::context::servers`]).
    pub(super) server: String,
    /// The CA to trust the server by: a PEM file's path, or the PEM itself. Without one,
    /// https uses the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ca: Option<String>,
    /// The API token sent with every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) token: Option<String>,
}

impl NamedContext {
    /// The PEM of the CA, read from its file unless it is inline.
    pub(super) fn ca_pem(&self) -> anyhow::Result<Option<String>> {
        match &self.ca {
            None => Ok(None),
            Some(ca) if ca.trim_start().starts_with("-----BEGIN") => Ok(Some(ca.clone())),
            Some(path) => read_ca(Path::new(path))
                .map(Some)
                .with_context(|| format!("the CA of context {:?} (its `ca` field)", self.name)),
        }
    }
}

/// Reads a PEM file of CA certificates.
pub(super) fn read_ca(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the CA file {}", path.display()))?;
    anyhow::ensure!(
        pem.contains("-----BEGIN CERTIFICATE-----"),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(pem)
}

/// Where the config file is: `$TROUPE_CONFIG`, else under `$XDG_CONFIG_HOME` or `~/.config`.
/// `None` when none of these is set.
pub(super) fn path() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("TROUPE_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let dir = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(dir.join("troupe").join("config.yaml"))
}

impl Config {
    /// Reads the file at `path`; a missing file is an empty config.
    pub(super) fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(Self::default()),
            Ok(text) => serde_saphyr::from_str(&text)
                .with_context(|| format!("reading the CLI config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading the CLI config {}", path.display())),
        }
    }

    /// Replaces the file at `path` (creating its folder), mode 0600.
    pub(super) fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_saphyr::to_string(self).context("encoding the CLI config")?;
        troupe_common::durable::write(path, text.as_bytes())
            .with_context(|| format!("writing the CLI config {}", path.display()))
    }

    /// The context named `name`.
    pub(super) fn get(&self, name: &str) -> Option<&NamedContext> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// The current context, if one is set and exists.
    pub(super) fn current(&self) -> Option<&NamedContext> {
        self.current_context.as_deref().and_then(|n| self.get(n))
    }

    /// Adds `context`, or replaces the one of the same name.
    pub(super) fn upsert(&mut self, context: NamedContext) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }

    /// Removes the context named `name` (and makes none current if it was); whether it was
    /// there.
    pub(super) fn remove(&mut self, name: &str) -> bool {
        let before = self.contexts.len();
        self.contexts.retain(|c| c.name != name);
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        self.contexts.len() != before
    }
}

/// Writes context `dev` for a server started with `--dev` (its URL, its CA's path, the admin
/// token in `admin_token` when that file exists) and makes it current if no context is.
pub(crate) fn write_dev_context(
    server: String,
    ca: Option<&Path>,
    admin_token: &Path,
) -> anyhow::Result<PathBuf> {
    let path = path().context("no config file: set TROUPE_CONFIG or HOME")?;
    let mut config = Config::load(&path)?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let token = match std::fs::read_to_string(admin_token) {
        Ok(text) => Some(text.trim().to_string()).filter(|t| !t.is_empty()),
        Err(_) => None,
    };
    config.upsert(NamedContext {
        name: DEV_CONTEXT.to_string(),
        server,
        ca: ca.map(|p| absolute(p).display().to_string()),
        token,
    });
    if config.current().is_none() {
        config.current_context = Some(DEV_CONTEXT.to_string());
    }
    config.save(&path)?;
    Ok(path)
}

/// The context `troupe server --dev` writes.
pub(crate) const DEV_CONTEXT: &str = "dev";

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_context(name: &str) -> NamedContext {
        NamedContext {
            name: name.into(),
            server: format!("https://{name}.example:50051"),
            ca: None,
            token: Some(format!("token-{name}")),
        }
    }

    #[test]
    fn the_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config.yaml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
        let mut config = Config::default();
        config.upsert(mk_context("a"));
        config.upsert(mk_context("b"));
        config.current_context = Some("b".into());
        config.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: b"), "{text}");
        assert_eq!(Config::load(&path).unwrap(), config);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn removing_the_current_context_leaves_none_current() {
        let mut config = Config::default();
        config.upsert(mk_context("a"));
        config.upsert(mk_context("b"));
        config.current_context = Some("a".into());
        let mut replaced = mk_context("a");
        replaced.token = Some("new".into());
        config.upsert(replaced);
        assert_eq!(config.contexts.len(), 2);
        assert_eq!(config.current().unwrap().token.as_deref(), Some("new"));
        assert!(config.remove("a"));
        assert!(!config.remove("a"));
        assert_eq!(config.current(), None);
        assert!(config.get("b").is_some());
    }

    #[test]
    fn a_ca_is_a_path_or_inline_pem() {
        let dir = tempfile::tempdir().unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, pem).unwrap();
        let mut context = mk_context("a");
        context.ca = Some(pem.into());
        assert_eq!(context.ca_pem().unwrap().as_deref(), Some(pem));
        context.ca = Some(file.display().to_string());
        assert_eq!(context.ca_pem().unwrap().as_deref(), Some(pem));
        context.ca = Some(dir.path().join("missing.pem").display().to_string());
        let err = format!("{:#}", context.ca_pem().unwrap_err());
        assert!(
            err.contains("missing.pem") && err.contains("context \"a\""),
            "{err}"
        );
    }
}
