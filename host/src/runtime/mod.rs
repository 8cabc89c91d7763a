//! The WebAssembly runtime: one shared [`Engine`] and [`Linker`], plugins
//! compiled once into a [`PluginPre`], and a fresh [`Store`] per invocation
//! carrying the job (tenant, action, id) in its data.
//!
//! # Sandbox
//! - Memory: the pooling allocator caps each linear memory at
//!   `runtime.max_memory_mib`.
//! - Time: epoch interruption with a 10 ms tick; an invocation past
//!   `runtime.timeout` is interrupted (outcome `timeout`).
//! - WASI: the standard p2 interfaces are linked, but the context has no
//!   preopened directories, no environment, no arguments, no network (every
//!   socket address is denied, name lookup is off) and no stdin; stdout and
//!   stderr go into tracing ([`output`]).
//! - Redis: only through the host functions ([`imports`]), scoped to the
//!   tenant of the firing trigger.

mod imports;
mod output;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Cache, CacheConfig, Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    Trap,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{Plugin, PluginPre};
use crate::manifest::{PluginName, RuntimeConfig};
use crate::pools::Pools;
use output::{GuestOutput, Stream};

/// How often the epoch advances; the resolution of invocation timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// One invocation: which trigger fired and which plugin runs it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Tenant of the trigger key.
    pub tenant: String,
    /// Action part of the key.
    pub action: String,
    /// Identifier part of the key.
    pub id: String,
    /// The full key.
    pub key: String,
    /// Name of the plugin that owns the action.
    pub plugin: PluginName,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `on-expire` returned `ok`.
    Ok,
    /// `on-expire` returned `err` with this message.
    Error(String),
    /// The instance trapped (panic, unreachable, host-side failure).
    Trap(String),
    /// The invocation ran past the timeout and was interrupted.
    Timeout(Duration),
}

impl Outcome {
    /// The outcome's name in logs: `ok`, `error`, `trap` or `timeout`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Trap(_) => "trap",
            Outcome::Timeout(_) => "timeout",
        }
    }
}

/// A plugin that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("plugin {plugin}: cannot read {}: {source}", path.display())]
    Read {
        /// Plugin name.
        plugin: PluginName,
        /// Resolved path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("plugin {plugin}: {} is not a WebAssembly component: {reason}", path.display())]
    NotComponent {
        /// Plugin name.
        plugin: PluginName,
        /// Resolved path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// Compilation failed.
    #[error("plugin {plugin}: {} failed to compile: {reason}", path.display())]
    Compile {
        /// Plugin name.
        plugin: PluginName,
        /// Resolved path.
        path: PathBuf,
        /// The compiler's message.
        reason: String,
    },
    /// The component does not target the `symphony:plugin/plugin` world.
    #[error("plugin {plugin}: {} does not fit the symphony plugin world: {reason}", path.display())]
    World {
        /// Plugin name.
        plugin: PluginName,
        /// Resolved path.
        path: PathBuf,
        /// What is missing or mismatched.
        reason: String,
    },
}

/// A compiled plugin, ready to be instantiated.
pub struct LoadedPlugin {
    name: PluginName,
    path: PathBuf,
    digest: String,
    compile_time: Duration,
    pre: PluginPre<JobState>,
}

impl LoadedPlugin {
    /// The plugin's name from the manifest.
    pub fn name(&self) -> &PluginName {
        &self.name
    }
    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// First 12 hex digits of the SHA-256 of the file: the plugin's version in logs.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    /// How long loading took (short when the compiled artifact was cached).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }
}

/// Store data of one invocation.
pub struct JobState {
    job: Arc<Job>,
    pools: Pools,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The shared engine, linker and limits.
pub struct Runtime {
    engine: Engine,
    linker: Linker<JobState>,
    pools: Pools,
    timeout: Duration,
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption, on-disk
    /// cache of compiled components) and the linker, and starts the epoch ticker.
    ///
    /// # Errors
    /// When the engine cannot be created (for example the pooling allocator
    /// cannot reserve its memory) or the cache directory is unusable.
    pub fn new(config: &RuntimeConfig, pools: Pools) -> anyhow::Result<Arc<Runtime>> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true).epoch_interruption(true);
        if config.cache {
            let dir = config.cache_dir.clone().unwrap_or_else(default_cache_dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
            let mut cache = CacheConfig::new();
            cache.with_directory(&dir);
            let cache = Cache::new(cache)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot use cache directory {}", dir.display()))?;
            wasm.cache(Some(cache));
        }
        let slots = u32::try_from(config.concurrency.get())
            .unwrap_or(u32::MAX)
            .saturating_add(16);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .total_stacks(slots)
            .max_memory_size(config.max_memory_mib.get().saturating_mul(1 << 20));
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("cannot create the WebAssembly engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI")?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("cannot link the symphony host functions")?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("symphony-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the epoch thread")?;

        Ok(Arc::new(Runtime {
            engine,
            linker,
            pools,
            timeout: config.timeout.0,
        }))
    }

    /// The Redis pools host functions use.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Reads, compiles (or fetches from the cache) and links a plugin.
    ///
    /// # Errors
    /// A [`LoadError`] naming the plugin, the file and what is wrong.
    pub fn load(&self, name: &PluginName, path: &Path) -> Result<LoadedPlugin, LoadError> {
        let start = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            plugin: name.clone(),
            path: path.to_owned(),
            source,
        })?;
        if let Some(reason) = not_a_component(&bytes) {
            return Err(LoadError::NotComponent {
                plugin: name.clone(),
                path: path.to_owned(),
                reason,
            });
        }
        let component =
            Component::from_binary(&self.engine, &bytes).map_err(|e| LoadError::Compile {
                plugin: name.clone(),
                path: path.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let world = |e: wasmtime::Error| LoadError::World {
            plugin: name.clone(),
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(world)?;
        let pre = PluginPre::new(instance_pre).map_err(world)?;
        let digest = Sha256::digest(&bytes);
        let digest = digest
            .iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(LoadedPlugin {
            name: name.clone(),
            path: path.to_owned(),
            digest,
            compile_time: start.elapsed(),
            pre,
        })
    }

    /// Runs `on-expire` for `job` in a fresh instance of `plugin`.
    pub async fn invoke(&self, plugin: &LoadedPlugin, job: Arc<Job>) -> Outcome {
        let stdout = GuestOutput::new(Stream::Stdout, job.clone());
        let stderr = GuestOutput::new(Stream::Stderr, job.clone());
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut store = Store::new(
            &self.engine,
            JobState {
                job: job.clone(),
                pools: self.pools.clone(),
                wasi,
                table: ResourceTable::new(),
            },
        );
        let ticks = self.timeout.as_millis() / EPOCH_TICK.as_millis();
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX).max(1));
        store.epoch_deadline_trap();

        let result = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance
                .call_on_expire(&mut store, &job.action, &job.id, &job.key)
                .await
        }
        .await;
        stdout.finish();
        stderr.finish();
        match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(message)) => Outcome::Error(message),
            Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                Outcome::Timeout(self.timeout)
            }
            Err(e) => Outcome::Trap(trap_message(&e)),
        }
    }
}

/// The trap's cause and the guest backtrace, on one line.
fn trap_message(e: &wasmtime::Error) -> String {
    format!("{e:#}").replace('\n', " | ")
}

/// `None` for a component; otherwise what the bytes are instead.
fn not_a_component(bytes: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Some("the file does not start with the WebAssembly magic bytes".into());
    }
    // Bytes 4..8: version and layer. Core modules are version 1, layer 0;
    // components have layer 1.
    match (
        bytes[4..6] == [1, 0],
        bytes[6..8] == [0, 0],
        bytes[6..8] == [1, 0],
    ) {
        (true, true, _) => Some(
            "it is a core WebAssembly module; build the plugin for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        (_, _, true) => None,
        _ => Some("unknown WebAssembly version or layer".into()),
    }
}

/// `$XDG_CACHE_HOME/symphony-host`, else `~/.cache/symphony-host`, else a temp dir.
fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("symphony-host");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache").join("symphony-host");
    }
    std::env::temp_dir().join("symphony-host-cache")
}

#[cfg(test)]
mod tests {
    use super::not_a_component;

    #[test]
    fn tells_modules_and_junk_from_components() {
        assert!(not_a_component(b"hello world").unwrap().contains("magic"));
        assert!(
            not_a_component(b"\0asm\x01\0\0\0")
                .unwrap()
                .contains("core WebAssembly module")
        );
        assert_eq!(not_a_component(b"\0asm\x0d\0\x01\0"), None);
    }
}
