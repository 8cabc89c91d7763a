//! Hot reload: the manifest and plugin files swap in live, without touching
//! the listener or the Redis connections.
//!
//! A watcher (inotify through `notify`) follows the manifest and every plugin
//! file, by their directories, so editors that save by rename and tools that
//! copy into place are both seen. Changes are debounced ([`DEBOUNCE`]); SIGHUP
//! and `symphony-host reload` (which signals the process named in the pid
//! file, [`pid_file`]) reload at once. A reload parses and validates the
//! manifest, compiles every plugin to the side, and only then swaps the
//! [`PluginSet`] in one atomic store. Anything wrong (invalid TOML, an unknown
//! field, a missing or half-written file, a component that does not compile or
//! lacks the export) is logged with its reason and the previous set keeps
//! serving.
//!
//! Only the `[[plugin]]` entries reload. A changed `[redis]` (pool URLs),
//! `[listener]`, `[runtime]`, `[delivery]` or `[tenants]` section is rejected with a message that it
//! needs a restart: connections and the listener are never rebuilt by a
//! reload, so no expiry is lost or heard twice because of one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use notify::{EventKind, RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::manifest::{Manifest, ManifestError, RedisOverride, RuntimeConfig};
use crate::millis;
use crate::plugins::{LoadErrors, PluginSet};
use crate::runtime::Runtime;
use crate::stats::Stats;

/// Quiet time after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why a reload was rejected (the previous plugins keep serving).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The manifest cannot be read or is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A section that only a restart applies has changed.
    #[error("{0} changed, which needs a restart; the running host keeps the old {0}")]
    NeedsRestart(&'static str),
    /// A plugin did not load.
    #[error(transparent)]
    Load(#[from] LoadErrors),
    /// The compile task failed.
    #[error("the reload task failed: {0}")]
    Task(String),
}

/// Applies manifest changes to the live plugin set.
pub struct Reloader {
    path: PathBuf,
    redis_override: Option<RedisOverride>,
    runtime: Arc<Runtime>,
    plugins: Arc<ArcSwap<PluginSet>>,
    /// The manifest the host started with: its restart-only sections.
    started: Manifest,
    /// Files to watch: the manifest and the plugins of the last parsed manifest.
    files: HashSet<PathBuf>,
    generation: u64,
    stats: Arc<Stats>,
}

impl Reloader {
    /// A reloader for the host that started with `manifest`.
    pub fn new(
        manifest: Manifest,
        redis_override: Option<RedisOverride>,
        runtime: Arc<Runtime>,
        plugins: Arc<ArcSwap<PluginSet>>,
        stats: Arc<Stats>,
    ) -> Self {
        let mut r = Self {
            stats,
            path: absolute(&manifest.path),
            redis_override,
            runtime,
            plugins,
            files: HashSet::new(),
            generation: 0,
            started: manifest,
        };
        let started = r.started.clone();
        r.files = r.files_of(&started);
        r
    }

    fn files_of(&self, manifest: &Manifest) -> HashSet<PathBuf> {
        let mut files: HashSet<PathBuf> = manifest
            .plugins
            .iter()
            .map(|p| absolute(&p.resolved_path(manifest)))
            .collect();
        files.insert(self.path.clone());
        files
    }

    /// Reloads now: parse, validate, compile to the side, swap. Returns the
    /// new generation.
    ///
    /// # Errors
    /// A [`ReloadError`]; the live set is then unchanged.
    pub async fn reload(&mut self) -> Result<u64, ReloadError> {
        let manifest = Manifest::load(&self.path)?;
        // Watch what this manifest names even if it fails below, so the
        // reload that fixes it is seen.
        self.files = self.files_of(&manifest);
        self.check_restart_only(&manifest)?;
        let runtime = self.runtime.clone();
        let generation = self.generation + 1;
        let set =
            tokio::task::spawn_blocking(move || PluginSet::load(&runtime, &manifest, generation))
                .await
                .map_err(|e| ReloadError::Task(e.to_string()))??;
        self.plugins.store(Arc::new(set));
        self.generation = generation;
        Ok(generation)
    }

    fn check_restart_only(&self, new: &Manifest) -> Result<(), ReloadError> {
        let over = self.redis_override.as_ref();
        if new.redis_target(over) != self.started.redis_target(over) {
            return Err(ReloadError::NeedsRestart(
                "[redis] (a pool URL or the cluster)",
            ));
        }
        if new.redis.wait_replicas != self.started.redis.wait_replicas {
            return Err(ReloadError::NeedsRestart("[redis] wait_replicas"));
        }
        if new.listener != self.started.listener {
            return Err(ReloadError::NeedsRestart("[listener]"));
        }
        if new.runtime != self.started.runtime {
            return Err(ReloadError::NeedsRestart("[runtime]"));
        }
        if new.delivery != self.started.delivery {
            return Err(ReloadError::NeedsRestart("[delivery]"));
        }
        if new.admin != self.started.admin {
            return Err(ReloadError::NeedsRestart("[admin]"));
        }
        if new.tenants != self.started.tenants {
            return Err(ReloadError::NeedsRestart("[tenants] (quotas)"));
        }
        if RuntimeConfig::fuel_needed(&new.plugins) && !self.runtime.meters_fuel() {
            return Err(ReloadError::NeedsRestart(
                "fuel metering (a plugin now sets limits.fuel)",
            ));
        }
        Ok(())
    }

    /// Reloads and logs the result; returns the new generation or why the
    /// reload was rejected.
    async fn reload_logged(&mut self, reason: &str) -> Result<u64, String> {
        let start = Instant::now();
        let result = self.reload().await;
        self.stats.metrics.reloaded(result.is_ok());
        let result = result.map_err(|e| e.to_string());
        if let Ok(mut last) = self.stats.last_reload_error.lock() {
            *last = result.as_ref().err().cloned();
        }
        match &result {
            Ok(generation) => {
                let set = self.plugins.load();
                let plugins: Vec<String> = set
                    .plugins()
                    .iter()
                    .map(|p| format!("{}@{}", p.name(), p.digest()))
                    .collect();
                info!(
                    event = "reloaded",
                    generation,
                    reason,
                    took_ms = millis(start.elapsed()),
                    ?plugins,
                    "plugins reloaded"
                );
            }
            Err(e) => error!(
                event = "reload_rejected",
                reason,
                error = %e,
                "reload rejected; the previous plugins keep serving"
            ),
        }
        result
    }

    fn dirs(&self) -> HashSet<PathBuf> {
        self.files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect()
    }
}

/// The absolute form of `p` (relative to the working directory), without
/// resolving links, so paths compare equal to those `notify` reports.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// A request to reload now (from the admin API), answered with the new
/// generation or why the reload was rejected.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<u64, String>>;

/// Watches files and SIGHUP, takes `requests`, and reloads until `cancel`.
/// The watches and the signal handler are in place when this returns
/// (before the future runs), so a change made after the host reports it is
/// listening is never missed.
pub fn watch(
    mut reloader: Reloader,
    mut requests: mpsc::Receiver<ReloadRequest>,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let (tx, mut events) = mpsc::channel::<notify::Event>(1024);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            // Dropped when full: a reload is coming anyway.
            let _ = tx.try_send(event);
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(event = "watch_failed", error = %e, "cannot watch files; reload with SIGHUP or `symphony-host reload`");
            None
        }
    };
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let mut rewatch = move |reloader: &Reloader, watched: &mut HashSet<PathBuf>| {
        let Some(w) = watcher.as_mut() else { return };
        for dir in reloader.dirs() {
            if watched.contains(&dir) {
                continue;
            }
            match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => {
                    warn!(event = "watch_failed", dir = %dir.display(), error = %e, "cannot watch this directory")
                }
            }
        }
    };
    rewatch(&reloader, &mut watched);

    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    async move {
        loop {
            #[cfg(unix)]
            let sighup = async {
                match hangup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let sighup = std::future::pending::<()>();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = sighup => {
                    let _ = reloader.reload_logged("SIGHUP").await;
                }
                Some(reply) = requests.recv() => {
                    // The asker may have gone; the reload stands either way.
                    let _ = reply.send(reloader.reload_logged("admin API").await);
                }
                Some(event) = events.recv() => {
                    if !relevant(&event, &reloader.files) {
                        continue;
                    }
                    // Debounce: wait for the writes to settle.
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(DEBOUNCE) => break,
                            Some(_) = events.recv() => {}
                        }
                    }
                    let _ = reloader.reload_logged("file changed").await;
                }
            }
            rewatch(&reloader, &mut watched);
        }
    }
}

fn relevant(event: &notify::Event, files: &HashSet<PathBuf>) -> bool {
    matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    ) && event.paths.iter().any(|p| files.contains(p))
}

/// Where `run` writes its pid, for `symphony-host reload`: one file per
/// manifest (by the SHA-256 of its absolute path) in `$XDG_RUNTIME_DIR` or
/// the temp dir. With several hosts on one manifest and machine, the last
/// started owns it.
pub fn pid_file(manifest: &Path) -> PathBuf {
    let digest = Sha256::digest(absolute(manifest).as_os_str().as_encoded_bytes());
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("symphony-host-{name}.pid"))
}

/// Asks the host running `manifest` to reload (SIGHUP to the pid in its pid
/// file). Returns the pid.
///
/// # Errors
/// No pid file, or no such process.
pub fn signal_reload(manifest: &Path) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    let file = pid_file(manifest);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "no running host found for {} (no pid file at {})",
            manifest.display(),
            file.display()
        )
    })?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("invalid pid file {}", file.display()))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("cannot signal the host (pid {pid} from {})", file.display()))?;
    Ok(pid)
}
