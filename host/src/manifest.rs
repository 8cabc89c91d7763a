//! The manifest: which Redis to use, which plugins own which actions, and the
//! runtime's limits.
//!
//! Everything is validated while parsing (`deny_unknown_fields`, newtypes
//! with `try_from`) and then by [`Manifest::validate`] for rules that span
//! several entries (duplicate names, an action prefix owned twice). Every
//! error names `file:line:column`.
//!
//! ```toml
//! [redis]
//! url = "redis://127.0.0.1:6379"   # each pool alias gets its seed DB
//!
//! [[plugin]]
//! name = "reminders"
//! path = "plugins/reminder.wasm"   # relative to the manifest
//! actions = ["send_reminder", "followup_"]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::pools::PoolAlias;

/// A manifest that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {}: {source}", path.display())]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid manifest; `line` and `column` are 1-based.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// Line of the offending entry.
        line: usize,
        /// Column of the offending entry.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// A parsed and validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Manifest {
    /// Redis connection settings.
    #[serde(default)]
    pub redis: RedisConfig,
    /// Which pools to listen on for expiries, and how.
    #[serde(default)]
    pub listener: ListenerConfig,
    /// Engine and dispatch limits.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// The plugins, each owning one or more action prefixes.
    #[serde(default, rename = "plugin")]
    pub plugins: Vec<PluginConfig>,
    /// Where the manifest was read from; plugin paths are relative to its directory.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[redis]`: one URL for every pool alias, or one URL per alias.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Base URL. Each alias gets its seed DB (default 15, user 11, handlers 10,
    /// symphony_shared_state 9, expiry 8, pubsub 7). A DB number in the URL
    /// path is ignored, as the Python library does.
    pub url: Option<Spanned<RedisUrl>>,
    /// Per-alias URLs, used as written (DB included). Aliases not listed
    /// here use `url`.
    #[serde(default)]
    pub pools: BTreeMap<PoolAlias, Spanned<RedisUrl>>,
}

/// `[listener]`: where and how expiries are heard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Pool aliases whose DB's `expired` events are dispatched.
    #[serde(default = "default_listen_pools")]
    pub pools: Vec<PoolAlias>,
    /// How `notify-keyspace-events` is handled.
    #[serde(default)]
    pub notify_keyspace_events: NotifyMode,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            pools: default_listen_pools(),
            notify_keyspace_events: NotifyMode::default(),
        }
    }
}

fn default_listen_pools() -> Vec<PoolAlias> {
    vec![PoolAlias::Expiry]
}

/// What the listener does about `notify-keyspace-events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NotifyMode {
    /// Read the setting and add `E` and `x` if missing, keeping other flags;
    /// again after every reconnect. Fails if CONFIG is not allowed.
    #[default]
    Merge,
    /// Read the setting and fail if `E` or `x` is missing; never write it.
    Check,
    /// Do not touch or read it (for servers where CONFIG is disabled and the
    /// setting is made in redis.conf or the provider's console).
    Assume,
}

/// `[runtime]`: the engine and dispatch limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Most plugin invocations running at once, across all plugins.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Wall-clock limit of one invocation; a plugin still running then is
    /// interrupted (outcome `trap`).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long shutdown waits for in-flight invocations.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// Largest linear memory a plugin instance may have, in MiB.
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: NonZeroUsize,
    /// Directory for compiled plugins, keyed by content hash. Defaults to
    /// `$XDG_CACHE_HOME/symphony-host` (or `~/.cache/symphony-host`).
    pub cache_dir: Option<PathBuf>,
    /// Set to false to compile every plugin at every start.
    #[serde(default = "default_true")]
    pub cache: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            shutdown_grace: default_shutdown_grace(),
            max_memory_mib: default_max_memory_mib(),
            cache_dir: None,
            cache: true,
        }
    }
}

fn default_concurrency() -> NonZeroUsize {
    NonZeroUsize::new(64).unwrap_or(NonZeroUsize::MIN)
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_memory_mib() -> NonZeroUsize {
    NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN)
}
fn default_true() -> bool {
    true
}

/// `[[plugin]]`: one component and the action prefixes it owns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PluginConfig {
    /// Unique name, used in logs.
    pub name: Spanned<PluginName>,
    /// Path of the `.wasm` component, relative to the manifest's directory.
    pub path: Spanned<PathBuf>,
    /// Action prefixes this plugin owns; the longest matching prefix across
    /// all plugins wins.
    pub actions: Vec<Spanned<ActionPrefix>>,
}

impl PluginConfig {
    /// The plugin file's path, resolved against the manifest's directory.
    pub fn resolved_path(&self, manifest: &Manifest) -> PathBuf {
        manifest.base_dir().join(self.path.get_ref())
    }
}

/// A plugin name: 1 to 64 of `[A-Za-z0-9_.-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct PluginName(String);

impl PluginName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PluginName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
            return Err(format!(
                "invalid plugin name {s:?}: use 1 to 64 letters, digits, '_', '-' or '.'"
            ));
        }
        Ok(Self(s))
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An action prefix: non-empty, without `:` or whitespace.
///
/// Trigger keys escape `:` in actions to `_`, so a prefix with `:` could
/// never match (the seed's registry has exactly that bug).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ActionPrefix(String);

impl ActionPrefix {
    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ActionPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() {
            return Err("action prefix must not be empty".into());
        }
        if s.contains(':') {
            return Err(format!(
                "action prefix {s:?} contains ':'; trigger keys escape ':' in actions to '_', \
                 so write {:?}",
                s.replace(':', "_")
            ));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(format!("action prefix {s:?} contains whitespace"));
        }
        Ok(Self(s))
    }
}

impl fmt::Display for ActionPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Redis URL (`redis://`, `rediss://`, `unix://` or `redis+unix://`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RedisUrl(url::Url);

impl RedisUrl {
    /// The URL as written (after normalisation).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// This URL pointing at `db`, replacing any DB it names.
    pub fn with_db(&self, db: u32) -> RedisUrl {
        let mut url = self.0.clone();
        if url.scheme().contains("unix") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "db")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(pairs)
                .append_pair("db", &db.to_string());
        } else {
            url.set_path(&format!("/{db}"));
        }
        RedisUrl(url)
    }

    /// The DB this URL names (0 when none).
    pub fn db(&self) -> u32 {
        if self.0.scheme().contains("unix") {
            return self
                .0
                .query_pairs()
                .find(|(k, _)| k == "db")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
        }
        self.0.path().trim_start_matches('/').parse().unwrap_or(0)
    }

    /// host:port (or the socket path), for logs; never includes a password.
    pub fn server(&self) -> String {
        if self.0.scheme().contains("unix") {
            return self.0.path().to_owned();
        }
        format!(
            "{}:{}",
            self.0.host_str().unwrap_or("?"),
            self.0.port().unwrap_or(6379)
        )
    }
}

impl RedisUrl {
    /// [`DEFAULT_REDIS_URL`]: the local server on the default port.
    #[allow(clippy::expect_used)]
    pub fn local() -> RedisUrl {
        DEFAULT_REDIS_URL
            .parse()
            .expect("DEFAULT_REDIS_URL is a valid Redis URL (unit-tested)")
    }
}

impl FromStr for RedisUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let url = url::Url::parse(s).map_err(|e| format!("invalid Redis URL {s:?}: {e}"))?;
        match url.scheme() {
            "redis" | "rediss" | "unix" | "redis+unix" => {}
            other => {
                return Err(format!(
                    "invalid Redis URL {s:?}: scheme {other:?} is not redis, rediss, unix or redis+unix"
                ));
            }
        }
        if !url.scheme().contains("unix") {
            let path = url.path().trim_start_matches('/');
            if !path.is_empty() && path.parse::<u32>().is_err() {
                return Err(format!(
                    "invalid Redis URL {s:?}: the path must be a DB number, not {path:?}"
                ));
            }
        }
        Ok(RedisUrl(url))
    }
}

impl TryFrom<String> for RedisUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hide the password in logs.
        let mut url = self.0.clone();
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        f.write_str(url.as_str())
    }
}

/// A duration written like `"500ms"`, `"5s"` or `"2m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

impl TryFrom<String> for HumanDuration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                format!("invalid duration {s:?} ({e}); write e.g. \"500ms\", \"5s\" or \"2m\"")
            })
    }
}

/// The URL used when the manifest names none and no override is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Manifest {
    /// Reads, parses and validates a manifest file.
    ///
    /// # Errors
    /// [`ManifestError::Read`] if the file cannot be read,
    /// [`ManifestError::Invalid`] (with line and column) if it is not a valid manifest.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates manifest text; `path` is used for messages and
    /// to resolve plugin paths.
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] with the position of the first problem.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        let invalid = |span: Option<Range<usize>>, message: String| {
            let (line, column) = line_col(text, span.map_or(0, |s| s.start));
            ManifestError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        let mut manifest: Manifest =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().trim().to_owned()))?;
        manifest.path = path.to_owned();
        manifest
            .validate()
            .map_err(|(span, message)| invalid(Some(span), message))?;
        Ok(manifest)
    }

    /// Cross-entry rules: at least one plugin, unique names, each plugin
    /// owns at least one prefix, no prefix owned twice.
    fn validate(&self) -> Result<(), (Range<usize>, String)> {
        if self.plugins.is_empty() {
            return Err((0..0, "the manifest lists no [[plugin]]".into()));
        }
        let mut names: HashMap<&PluginName, ()> = HashMap::new();
        let mut owners: HashMap<&ActionPrefix, &PluginName> = HashMap::new();
        for plugin in &self.plugins {
            let name = plugin.name.get_ref();
            if names.insert(name, ()).is_some() {
                return Err((
                    plugin.name.span(),
                    format!("duplicate plugin name {name:?}"),
                ));
            }
            if plugin.actions.is_empty() {
                return Err((
                    plugin.name.span(),
                    format!("plugin {name} lists no action prefixes in `actions`"),
                ));
            }
            for prefix in &plugin.actions {
                if let Some(owner) = owners.insert(prefix.get_ref(), name) {
                    return Err((
                        prefix.span(),
                        format!(
                            "action prefix {:?} is owned by both {owner} and {name}",
                            prefix.get_ref().as_str()
                        ),
                    ));
                }
            }
        }
        if self.listener.pools.is_empty() {
            return Err((0..0, "[listener] pools must name at least one pool".into()));
        }
        Ok(())
    }

    /// The directory plugin paths are relative to.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The URL of every pool alias: `[redis.pools]` entries as written, the
    /// others from `override_url` (or else `[redis] url`, or else
    /// [`DEFAULT_REDIS_URL`]) with the alias's seed DB. An override replaces
    /// `[redis] url` *and* `[redis.pools]`, so one manifest runs anywhere.
    pub fn pool_urls(&self, override_url: Option<&RedisUrl>) -> BTreeMap<PoolAlias, RedisUrl> {
        let base = match (override_url, &self.redis.url) {
            (Some(u), _) => u.clone(),
            (None, Some(u)) => u.get_ref().clone(),
            (None, None) => RedisUrl::local(),
        };
        let mut urls = seed_pool_urls(&base);
        if override_url.is_none() {
            for (alias, url) in &self.redis.pools {
                urls.insert(*alias, url.get_ref().clone());
            }
        }
        urls
    }
}

/// Every pool alias on `base`, each with its seed DB (the Python library's
/// `setup_single_url`).
pub fn seed_pool_urls(base: &RedisUrl) -> BTreeMap<PoolAlias, RedisUrl> {
    PoolAlias::ALL
        .iter()
        .map(|&alias| (alias, base.with_db(alias.seed_db())))
        .collect()
}

/// 1-based line and column of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("m.toml")).map_err(|e| e.to_string())
    }

    const OK: &str = r#"
[redis]
url = "redis://127.0.0.1:6390/3"

[[plugin]]
name = "reminders"
path = "plugins/reminder.wasm"
actions = ["send_reminder", "followup_"]
"#;

    #[test]
    fn parses_the_issue_example() {
        let m = parse(OK).unwrap();
        assert_eq!(m.plugins.len(), 1);
        let urls = m.pool_urls(None);
        assert_eq!(
            urls[&PoolAlias::Expiry].as_str(),
            "redis://127.0.0.1:6390/8"
        );
        assert_eq!(
            urls[&PoolAlias::Default].as_str(),
            "redis://127.0.0.1:6390/15"
        );
        let o: RedisUrl = "redis://10.0.0.1:7000".parse().unwrap();
        assert_eq!(
            m.pool_urls(Some(&o))[&PoolAlias::User].as_str(),
            "redis://10.0.0.1:7000/11"
        );
        assert_eq!(m.runtime.concurrency.get(), 64);
        assert_eq!(
            RedisUrl::local().with_db(8).as_str(),
            "redis://127.0.0.1:6379/8"
        );
        assert_eq!(m.listener.pools, vec![PoolAlias::Expiry]);
    }

    #[test]
    fn unknown_fields_name_line_and_column() {
        let err = parse("[redis]\nurl = \"redis://x\"\nfoo = 1\n").unwrap_err();
        assert!(err.starts_with("m.toml:3:1: unknown field `foo`"), "{err}");
    }

    #[test]
    fn rejects_bad_entries_with_positions() {
        let err = parse(&OK.replace("\"followup_\"", "\"follow:up\"")).unwrap_err();
        assert!(
            err.starts_with("m.toml:8:11:") && err.contains("follow_up"),
            "{err}"
        );
        let dup = format!(
            "{OK}\n[[plugin]]\nname = \"other\"\npath = \"x.wasm\"\nactions = [\"followup_\"]\n"
        );
        let err = parse(&dup).unwrap_err();
        assert!(err.contains("owned by both reminders and other"), "{err}");
        assert!(err.starts_with("m.toml:13:"), "{err}");
        let err = parse(&OK.replace("redis://127.0.0.1:6390/3", "http://x")).unwrap_err();
        assert!(
            err.starts_with("m.toml:3:7:") && err.contains("scheme"),
            "{err}"
        );
        let err = parse("").unwrap_err();
        assert!(err.contains("no [[plugin]]"), "{err}");
        let err =
            parse(&OK.replace("[redis]", "[runtime]\ntimeout = \"soon\"\n[redis]")).unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn unix_urls_carry_the_db_in_the_query() {
        let u: RedisUrl = "redis+unix:///tmp/r.sock?db=3".parse().unwrap();
        assert_eq!(u.with_db(8).db(), 8);
        assert_eq!(u.with_db(8).server(), "/tmp/r.sock");
    }
}
