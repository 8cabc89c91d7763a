//! The manifest: which Redis to use, which plugins own which actions, and the
//! runtime's limits.
//!
//! Everything is validated while parsing (`deny_unknown_fields`, newtypes
//! with `try_from`) and then by `Manifest::validate` for rules that span
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
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{Capability, Grants, Limits, Policy, TenantSelector};

pub mod admin;

pub use self::admin::{AdminConfig, AdminListen};
// Re-exported where the manifest's readers have always found them.
pub use crate::policy::{HumanDuration, RetryConfig};
pub use crate::pools::{
    ClusterSeeds, DEFAULT_REDIS_URL, PoolAlias, RedisOverride, RedisTarget, RedisUrl,
    seed_pool_urls,
};

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
    /// The admin server (health, metrics).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Leases of claimed firings.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Per-tenant quotas: `[tenants."name"]`, and `[tenants."*"]` for
    /// every tenant without an entry of its own (see [`crate::quota`]).
    #[serde(default)]
    pub tenants: BTreeMap<String, crate::quota::TenantQuota>,
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
    /// A Redis Cluster's seed nodes, instead of `url` and `pools`: every
    /// alias is in the cluster's DB 0 (see `docs/compat.md`).
    pub cluster: Option<Spanned<ClusterSeeds>>,
    /// Replicas that must have an armed trigger before arming returns
    /// (`WAIT`, up to 1 s; fewer is an error, and the trigger stays armed
    /// on the primary): closes the window in which a failover loses a
    /// trigger just armed. 0 (default): no wait.
    #[serde(default)]
    pub wait_replicas: u32,
}

/// `[listener]`: where and how expiries are heard.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// Read the setting and add `E`, `x` and `g` if missing (`x` for
    /// expiries, `g` for the `expire` and `del` of keys set outside the
    /// host's scripts), keeping other flags;
    /// again after every reconnect. Fails if CONFIG is not allowed.
    #[default]
    Merge,
    /// Read the setting and fail if `E`, `x` or `g` is missing; never write it.
    Check,
    /// Do not touch or read it (for servers where CONFIG is disabled and the
    /// setting is made in redis.conf or the provider's console).
    Assume,
}

/// `[runtime]`: the engine and dispatch limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Most plugin invocations running at once, across all plugins.
    #[serde(default = "default_concurrency")]
    pub concurrency: NonZeroUsize,
    /// Most invocations of one tenant running at once (default: half of
    /// `concurrency`, at least 1), so one tenant's flood leaves room for the others.
    pub per_tenant_concurrency: Option<NonZeroUsize>,
    /// Default wall-clock limit of one invocation (a plugin's
    /// `limits.timeout` overrides it); a plugin still running then is
    /// interrupted (outcome `timeout`).
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long shutdown waits for in-flight invocations.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
    /// Largest linear memory any plugin may be given, in MiB (the size of
    /// the pooling allocator's slots); each plugin's own limit is
    /// `limits.max_memory_mib`.
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: NonZeroUsize,
    /// Directory for compiled plugins, keyed by content hash and mapped from
    /// there into memory. Defaults to `$XDG_CACHE_HOME/symphony-host/compiled`
    /// (or `~/.cache/symphony-host/compiled`). Compiled plugins unused for
    /// 30 days are removed from it; it is as trusted as the host binary.
    pub cache_dir: Option<PathBuf>,
    /// Set to false to compile every plugin at every start.
    #[serde(default = "default_true")]
    pub cache: bool,
}

impl RuntimeConfig {
    /// `per_tenant_concurrency`, or half of `concurrency` (at least 1).
    pub fn tenant_concurrency(&self) -> usize {
        self.per_tenant_concurrency
            .map_or((self.concurrency.get() / 2).max(1), NonZeroUsize::get)
            .min(self.concurrency.get())
    }

    /// Whether any plugin asks for fuel metering (the engine then meters all).
    pub fn fuel_needed(plugins: &[PluginConfig]) -> bool {
        plugins.iter().any(|p| p.limits.fuel.is_some())
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            per_tenant_concurrency: None,
            timeout: default_timeout(),
            shutdown_grace: default_shutdown_grace(),
            max_memory_mib: default_max_memory_mib(),
            cache_dir: None,
            cache: true,
        }
    }
}

// Defaults that must not be zero: a zero here fails the build (the
// `unwrap`s run at compile time), never a run.
const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(64).unwrap();
const DEFAULT_MAX_MEMORY_MIB: NonZeroUsize = NonZeroUsize::new(256).unwrap();
const DEFAULT_MAX_DEAD_LETTERS: NonZeroUsize =
    NonZeroUsize::new(crate::delivery::DEFAULT_MAX_DEAD_LETTERS).unwrap();

fn default_concurrency() -> NonZeroUsize {
    DEFAULT_CONCURRENCY
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_memory_mib() -> NonZeroUsize {
    DEFAULT_MAX_MEMORY_MIB
}
fn default_true() -> bool {
    true
}

/// `[delivery]`: how claimed firings are held.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeliveryConfig {
    /// How long a claimed firing stays with the host that claimed it; if
    /// that host dies, another runs it again once the lease ends. The host
    /// renews the leases of the firings it holds (queued or running) every
    /// quarter lease, so a backlog longer than the lease runs nothing twice.
    /// Must be at least 1 s longer than every plugin's timeout.
    #[serde(default = "default_lease")]
    pub lease: HumanDuration,
    /// Most dead letters kept per tenant, in `symphony:dead:{tenant}`
    /// (default 10000); past it that tenant's oldest are trimmed, and the
    /// trimming is logged and counted.
    #[serde(default = "default_max_dead_letters")]
    pub max_dead_letters: NonZeroUsize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            lease: default_lease(),
            max_dead_letters: default_max_dead_letters(),
        }
    }
}

fn default_max_dead_letters() -> NonZeroUsize {
    DEFAULT_MAX_DEAD_LETTERS
}

fn default_lease() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
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
    /// Tenants whose triggers this plugin may serve (`"*"` for all). Required:
    /// a trigger of any other tenant is not dispatched to it.
    pub tenants: Vec<TenantSelector>,
    /// Repositories granted (`"user"`, `"user:read"`, `"trigger"`, ...).
    /// None by default: logging and the tenant are always available.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Per-invocation limits; unset ones take the defaults.
    #[serde(default)]
    pub limits: PluginLimits,
    /// Retries of failed handlers.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Reuse a warm instance for up to this many jobs of the same tenant
    /// (dropped after any failure). Unset: a fresh instance per job, the
    /// safe default. For Go and JavaScript plugins, whose runtimes start in
    /// every fresh instance.
    pub reuse_instances: Option<NonZeroU32>,
}

/// `[plugin.limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PluginLimits {
    /// Wall-clock time per invocation (default: `runtime.timeout`).
    pub timeout: Option<HumanDuration>,
    /// Largest linear memory in MiB (default 64; at most `runtime.max_memory_mib`).
    pub max_memory_mib: Option<NonZeroUsize>,
    /// Fuel per invocation; unset means no fuel metering for this plugin.
    pub fuel: Option<NonZeroU64>,
    /// Instances running at once (default 16).
    pub max_instances: Option<NonZeroUsize>,
    /// Largest value crossing the boundary, in KiB (default 1024).
    pub max_value_kib: Option<NonZeroUsize>,
    /// Host calls per invocation (default 10000).
    pub max_host_calls: Option<NonZeroU64>,
}

/// Default linear-memory limit of a plugin, MiB.
pub const DEFAULT_PLUGIN_MEMORY_MIB: usize = 64;
/// Default instances of one plugin at once.
pub const DEFAULT_MAX_INSTANCES: usize = 16;
/// Default largest value crossing the boundary, KiB.
pub const DEFAULT_MAX_VALUE_KIB: usize = 1024;
/// Default host calls per invocation.
pub const DEFAULT_MAX_HOST_CALLS: u64 = 10_000;

impl PluginConfig {
    /// The plugin file's path, resolved against the manifest's directory.
    pub fn resolved_path(&self, manifest: &Manifest) -> PathBuf {
        manifest.base_dir().join(self.path.get_ref())
    }

    /// What the host enforces for this plugin, defaults filled in.
    pub fn policy(&self, runtime: &RuntimeConfig) -> Policy {
        let l = &self.limits;
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Policy {
            grants: Grants::new(self.capabilities.iter().copied()),
            tenants: self.tenants.clone(),
            limits: Limits {
                timeout: l.timeout.unwrap_or(runtime.timeout).0,
                max_memory_bytes: l
                    .max_memory_mib
                    .map_or(DEFAULT_PLUGIN_MEMORY_MIB, NonZeroUsize::get)
                    .min(runtime.max_memory_mib.get())
                    .saturating_mul(1 << 20),
                fuel: l.fuel,
                max_instances: l.max_instances.unwrap_or(nz(DEFAULT_MAX_INSTANCES)),
                max_value_bytes: l
                    .max_value_kib
                    .map_or(DEFAULT_MAX_VALUE_KIB, NonZeroUsize::get)
                    .saturating_mul(1024),
                max_host_calls: l
                    .max_host_calls
                    .unwrap_or(NonZeroU64::new(DEFAULT_MAX_HOST_CALLS).unwrap_or(NonZeroU64::MIN)),
            },
            retry: self.retry.clone(),
            reuse: self.reuse_instances,
        }
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
/// never match (mimeiapify's registry has exactly that bug).
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
        for tenant in self.tenants.keys().filter(|t| t.as_str() != "*") {
            if let Err(e) = crate::keys::validate_tenant(tenant) {
                return Err((0..0, format!("[tenants.{tenant:?}]: {e}")));
            }
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
            if plugin.tenants.is_empty() {
                return Err((
                    plugin.name.span(),
                    format!("plugin {name} lists no tenants; use `tenants = [\"*\"]` to serve all"),
                ));
            }
            if let Some(mib) = plugin.limits.max_memory_mib
                && mib > self.runtime.max_memory_mib
            {
                return Err((
                    plugin.name.span(),
                    format!(
                        "plugin {name}: limits.max_memory_mib = {mib} is over runtime.max_memory_mib = {}",
                        self.runtime.max_memory_mib
                    ),
                ));
            }
            let timeout = plugin.limits.timeout.unwrap_or(self.runtime.timeout).0;
            if timeout + Duration::from_secs(1) > self.delivery.lease.0 {
                return Err((
                    plugin.name.span(),
                    format!(
                        "plugin {name}: its timeout ({timeout:?}) must be at least 1 s shorter than \
                         [delivery] lease ({:?}), or a firing could run twice",
                        self.delivery.lease.0
                    ),
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
        if let Some(cluster) = &self.redis.cluster {
            if self.redis.url.is_some() {
                return Err((
                    cluster.span(),
                    "[redis] names both `url` and `cluster`: a deployment is one server or one \
                     cluster; keep one of them"
                        .into(),
                ));
            }
            if let Some((alias, _)) = self.redis.pools.iter().next() {
                return Err((
                    cluster.span(),
                    format!(
                        "[redis.pools] ({alias}) cannot be used with `cluster`: a Redis Cluster has \
                         only DB 0, and every pool alias uses it"
                    ),
                ));
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
        self.servers(override_url)
    }

    /// Where the pools connect: the override alone if there is one (a URL
    /// or a cluster), else `[redis] cluster`, else the servers of
    /// [`pool_urls`](Self::pool_urls).
    pub fn redis_target(&self, over: Option<&RedisOverride>) -> RedisTarget {
        match (over, &self.redis.cluster) {
            (Some(over), _) => over.target(),
            (None, Some(seeds)) => RedisTarget::Cluster(seeds.get_ref().clone()),
            (None, None) => RedisTarget::Servers(self.servers(None)),
        }
    }

    fn servers(&self, override_url: Option<&RedisUrl>) -> BTreeMap<PoolAlias, RedisUrl> {
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

    /// Every `tests/manifests/NAME.toml` is refused with exactly the
    /// message in `NAME.err` (the user-facing text is part of the
    /// interface). `UPDATE_GOLDEN=1` rewrites the `.err` files instead.
    #[test]
    fn bad_manifests_are_refused_with_their_golden_messages() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/manifests");
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        cases.sort();
        assert!(
            cases.len() >= 10,
            "{} cases in {}",
            cases.len(),
            dir.display()
        );
        let mut failures = Vec::new();
        for case in &cases {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(case).unwrap();
            let got = match Manifest::parse(&text, Path::new(&name)) {
                Ok(_) => format!("(accepted: {name} should be refused)"),
                Err(e) => e.to_string(),
            };
            let golden = case.with_extension("err");
            if update {
                std::fs::write(&golden, format!("{got}\n")).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if got != want.trim_end() {
                failures.push(format!(
                    "{name}:\n  got:  {got}\n  want: {}",
                    want.trim_end()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} manifest messages changed (UPDATE_GOLDEN=1 to accept):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    const OK: &str = r#"
[redis]
url = "redis://127.0.0.1:6390/3"

[[plugin]]
name = "reminders"
path = "plugins/reminder.wasm"
actions = ["send_reminder", "followup_"]
tenants = ["*"]
"#;

    /// The ```toml blocks of the documents a user copies manifests from.
    fn doc_manifests() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut blocks = Vec::new();
        for doc in ["README.md", "docs/manifest.md"] {
            let text = std::fs::read_to_string(root.join(doc)).unwrap();
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if line.trim() == "```toml" {
                    let block: Vec<&str> =
                        lines.by_ref().take_while(|l| l.trim() != "```").collect();
                    blocks.push((doc.to_owned(), block.join("\n")));
                }
            }
        }
        blocks
    }

    /// Every manifest the README and `docs/manifest.md` show is valid.
    #[test]
    fn the_documented_manifests_parse() {
        let blocks = doc_manifests();
        assert!(
            blocks.len() >= 2,
            "the README and docs/manifest.md show manifests"
        );
        for (doc, block) in blocks {
            if let Err(e) = parse(&block) {
                panic!("{doc}'s manifest does not parse: {e}\n{block}");
            }
        }
    }

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
            "{OK}\n[[plugin]]\nname = \"other\"\npath = \"x.wasm\"\nactions = [\"followup_\"]\ntenants = [\"*\"]\n"
        );
        let err = parse(&dup).unwrap_err();
        assert!(err.contains("owned by both reminders and other"), "{err}");
        assert!(err.starts_with("m.toml:14:"), "{err}");
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
    fn policies_fill_defaults_and_refuse_bad_grants() {
        use crate::policy::{Access, Repo};
        let m = parse(OK).unwrap();
        let p = m.plugins[0].policy(&m.runtime);
        assert_eq!(p.limits.timeout, Duration::from_secs(10));
        assert_eq!(p.limits.max_memory_bytes, 64 << 20);
        assert_eq!(p.limits.max_host_calls.get(), 10_000);
        assert!(!p.grants.allows(Repo::User, Access::Read));
        let star = "tenants = [\"*\"]";
        let text = OK.replace(
            star,
            "tenants = [\"acme\"]\ncapabilities = [\"user:read\"]\n[plugin.limits]\ntimeout = \"1s\"\nmax_memory_mib = 8",
        );
        let m = parse(&text).unwrap();
        let p = m.plugins[0].policy(&m.runtime);
        assert_eq!(p.limits.timeout, Duration::from_secs(1));
        assert_eq!(p.limits.max_memory_bytes, 8 << 20);
        assert!(p.grants.allows(Repo::User, Access::Read));
        let err = parse(&OK.replace(star, "tenants = [\"*\"]\ncapabilities = [\"everything\"]"))
            .unwrap_err();
        assert!(err.contains("unknown capability"), "{err}");
        let err = parse(&OK.replace("tenants = [\"*\"]\n", "")).unwrap_err();
        assert!(err.contains("missing field `tenants`"), "{err}");
        let err = parse(&OK.replace(star, "tenants = []")).unwrap_err();
        assert!(err.contains("lists no tenants"), "{err}");
        let err = parse(&OK.replace(
            star,
            "tenants = [\"*\"]\n[plugin.limits]\nmax_memory_mib = 1024",
        ))
        .unwrap_err();
        assert!(err.contains("over runtime.max_memory_mib"), "{err}");
    }

    #[test]
    fn unix_urls_carry_the_db_in_the_query() {
        let u: RedisUrl = "redis+unix:///tmp/r.sock?db=3".parse().unwrap();
        assert_eq!(u.with_db(8).db(), 8);
        assert_eq!(u.with_db(8).server(), "/tmp/r.sock");
    }
}

/// Any text as a manifest: an error or a manifest, never a panic; and a
/// manifest that loads holds only tenants the tenant rule allows.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn manifest_text() -> impl Strategy<Value = String> {
        let tenant = prop_oneof![
            Just("*".to_owned()),
            Just("symphony".to_owned()),
            Just("__keyevent@8__".to_owned()),
            Just("a{b}".to_owned()),
            "[a-z_:{}*]{0,12}",
        ];
        let timeout = prop_oneof![
            Just("10s".to_owned()),
            Just("18446744073709551615s".to_owned()),
            Just("-1s".to_owned()),
            "[0-9a-z ]{0,10}",
        ];
        (tenant, timeout, any::<u64>(), "[ -~]{0,30}").prop_map(|(t, timeout, n, junk)| {
            format!(
                "[tenants.\"{t}\"]\nmax_pending_triggers = {n}\n\
                 [[plugin]]\nname = \"p\"\npath = \"p.wasm\"\nactions = [\"a_\"]\n\
                 tenants = [\"{t}\"]\n[plugin.limits]\ntimeout = \"{timeout}\"\n{junk}\n"
            )
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_manifest_text_is_an_error_or_follows_the_rules(text in manifest_text()) {
            if let Ok(m) = Manifest::parse(&text, Path::new("/m/manifest.toml")) {
                for t in m.tenants.keys().filter(|t| t.as_str() != "*") {
                    prop_assert!(crate::keys::validate_tenant(t).is_ok(), "{t:?}");
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(text in "\\PC{0,200}") {
            let _ = Manifest::parse(&text, Path::new("/m/manifest.toml"));
        }
    }
}
