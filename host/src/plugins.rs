//! The loaded plugin set and its routing table (longest action prefix wins).
//!
//! A set is built whole from a manifest and then only read; the dispatcher
//! holds the live one behind an `ArcSwap`, so a later reload can build a new
//! set to the side and swap it in while in-flight jobs keep their own `Arc`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::manifest::{Manifest, RuntimeConfig};
use crate::pools::Pools;
use crate::quota::Quotas;
use crate::runtime::{LoadError, LoadedPlugin, Runtime};

/// What runs plugins: the engine, the tenants' quotas (which it applies)
/// and the plugin set, built by [`start`].
pub struct Started {
    /// The engine, over the pools it was given.
    pub runtime: Arc<Runtime>,
    /// The manifest's `[tenants]` quotas, set on the engine.
    pub quotas: Arc<Quotas>,
    /// Every plugin of the manifest, compiled (generation 0).
    pub set: PluginSet,
}

/// The start-up every command that runs plugins shares (`run`, `check`,
/// `invoke`): the engine over `pools`, the manifest's quotas on it, then
/// every plugin compiled. One place, so each applies the same quotas.
///
/// # Errors
/// The engine's configuration error, or every plugin load error.
pub fn start(manifest: &Manifest, pools: Pools) -> anyhow::Result<Started> {
    let fuel = RuntimeConfig::fuel_needed(&manifest.plugins);
    let runtime = Runtime::new(&manifest.runtime, fuel, pools)?;
    let quotas = Arc::new(Quotas::new(&manifest.tenants));
    runtime.set_quotas(quotas.clone());
    let set = PluginSet::load(&runtime, manifest, 0)?;
    Ok(Started {
        runtime,
        quotas,
        set,
    })
}

/// Every plugin of a manifest, compiled, with the prefix routes.
pub struct PluginSet {
    /// 0 for the set loaded at start, then one more per successful reload.
    generation: u64,
    plugins: Vec<Arc<LoadedPlugin>>,
    /// `(prefix, index into plugins)`, longest prefix first.
    routes: Vec<(String, usize)>,
    /// The same routes by prefix length, longest first: routing an action
    /// looks up its own prefixes of those lengths, so its cost follows the
    /// number of distinct prefix lengths (at most the action's length), not
    /// the number of plugins.
    by_length: Vec<(usize, HashMap<String, usize>)>,
}

/// Every plugin that failed to load (the set is all or nothing).
#[derive(Debug, thiserror::Error)]
#[error("{} plugin(s) failed to load:\n  {}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct LoadErrors {
    /// One error per failed plugin.
    pub errors: Vec<LoadError>,
}

impl PluginSet {
    /// Compiles every plugin the manifest lists.
    ///
    /// # Errors
    /// All load errors, when any plugin fails.
    pub fn load(
        runtime: &Runtime,
        manifest: &Manifest,
        generation: u64,
    ) -> Result<PluginSet, LoadErrors> {
        let mut plugins = Vec::new();
        let mut routes = Vec::new();
        let mut errors = Vec::new();
        for spec in &manifest.plugins {
            let policy = spec.policy(runtime.config());
            match runtime.load(spec.name.get_ref(), &spec.resolved_path(manifest), policy) {
                Ok(plugin) => {
                    for prefix in &spec.actions {
                        routes.push((prefix.get_ref().as_str().to_owned(), plugins.len()));
                    }
                    plugins.push(Arc::new(plugin));
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors { errors });
        }
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let mut by_length: Vec<(usize, HashMap<String, usize>)> = Vec::new();
        for (prefix, i) in &routes {
            match by_length.last_mut() {
                Some((len, map)) if *len == prefix.len() => {
                    map.insert(prefix.clone(), *i);
                }
                _ => by_length.push((prefix.len(), HashMap::from([(prefix.clone(), *i)]))),
            }
        }
        Ok(PluginSet {
            generation,
            plugins,
            routes,
            by_length,
        })
    }

    /// Which load this set came from (0 at start, +1 per reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The plugin owning `action`: the one with the longest prefix of it.
    pub fn route(&self, action: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_length
            .iter()
            .find_map(|(len, map)| map.get(action.get(..*len)?))
            .and_then(|&i| self.plugins.get(i))
    }

    /// The loaded plugins, in manifest order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// The action prefixes routed to `plugin`.
    pub fn prefixes_of(&self, plugin: &LoadedPlugin) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .routes
            .iter()
            .filter(|(_, i)| {
                self.plugins
                    .get(*i)
                    .is_some_and(|p| p.name() == plugin.name())
            })
            .map(|(p, _)| p.as_str())
            .collect();
        out.sort_unstable();
        out
    }
}
