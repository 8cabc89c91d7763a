//! The WebAssembly runtime: one shared [`Engine`] and [`Linker`], plugins
//! compiled once into a [`PluginPre`], and a fresh [`Store`] per invocation
//! carrying the job (tenant, action, id) in its data (with a plugin's
//! `reuse_instances`, an idle warm instance of the same tenant instead).
//!
//! # Sandbox
//! Each plugin runs under its [`Policy`] (see `docs/security.md`):
//! - Memory: a resource limiter refuses growth past the plugin's
//!   `max_memory_mib` (outcome `memory`); the pooling allocator's slots cap
//!   every plugin at `runtime.max_memory_mib`.
//! - Time: epoch interruption with a 5 ms tick stops running guest code at
//!   the plugin's `timeout`, and a wall-clock timeout around the whole
//!   invocation stops a guest blocked in a host call (outcome `timeout`).
//! - Fuel, when the plugin sets it (outcome `fuel`).
//! - Host calls are counted and checked (`imports`).
//! - WASI: the standard p2 interfaces are linked, but the context has no
//!   preopened directories, no environment, no arguments, no network (every
//!   socket address is denied, name lookup is off) and no stdin; stdout and
//!   stderr go into tracing (`output`).
//! - Redis: only through the host functions (`imports`), scoped to the
//!   tenant of the firing trigger.
//!
//! # Files
//! This one: the engine, loading and one invocation. `outcome`: how an
//! invocation ends. `limiter`: the memory limit. `warm`: warm instances.
//! `guests`: the guest threads a long job moves to. `imports`: the host
//! functions. `output`: guest stdout and stderr. `artifacts`: the on-disk
//! cache of compiled plugins.

mod artifacts;
mod guests;
mod imports;
mod limiter;
mod outcome;
mod output;
mod warm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::{Plugin, PluginPre};
use crate::manifest::{PluginName, RuntimeConfig};
use crate::policy::{Access, Grants, Policy, Repo};
use crate::pools::Pools;
use artifacts::Artifacts;
use guests::GuestThreads;
pub(crate) use guests::on_guest_thread;
pub use guests::run_job_task;
use limiter::Limiter;
pub use outcome::Outcome;
use output::{GuestOutput, Stream};
use warm::{WARM_SLOTS, Warm, WarmSlot};

/// How often the epoch advances: the resolution of invocation timeouts, and
/// the longest a guest runs before it yields its thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

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
    /// Generation of the plugin set the job was routed in.
    pub generation: u64,
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
    policy: Arc<Policy>,
    /// Idle warm instances per tenant (only with `reuse_instances`).
    warm: std::sync::Mutex<HashMap<String, Vec<Warm>>>,
}

/// Most resources (WASI streams, pollables, ...) one invocation may hold at
/// once: WASI calls are not counted against `max_host_calls`, so this bounds
/// the host memory they can take.
const MAX_RESOURCES: usize = 4096;

/// Bytes of a pooled memory reset in place (rather than by `madvise`) when
/// its instance is done.
const KEEP_RESIDENT: usize = 1 << 20;
/// Most core module instances one component may hold (Rust, Go and
/// JavaScript plugins hold a handful: the program, shims and adapters).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Most linear memories one component may define.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
/// Most tables one component may define.
pub const MAX_TABLES_PER_COMPONENT: u32 = 8;

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
    /// What the host enforces for it.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Store data of one invocation.
pub struct JobState {
    job: Arc<Job>,
    policy: Arc<Policy>,
    pools: Pools,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
    host_calls: u64,
    over_call_budget: bool,
    denied: u32,
    /// When the running invocation must stop (checked on every epoch tick).
    deadline: Instant,
    /// Per-tenant quotas (Redis calls per second are waited for).
    quotas: Arc<crate::quota::Quotas>,
}

impl JobState {
    /// Readies the state for `job` (a fresh job on a possibly warm instance).
    fn reset(&mut self, job: Arc<Job>) {
        self.job = job;
        self.host_calls = 0;
        self.over_call_budget = false;
        self.denied = 0;
        self.limiter.refused = None;
    }

    /// Counts a host call; traps past `max_host_calls`.
    fn count_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        let max = self.policy.limits.max_host_calls.get();
        if self.host_calls > max {
            self.over_call_budget = true;
            return Err(wasmtime::format_err!(
                "plugin {} exceeded max_host_calls ({max})",
                self.job.plugin
            ));
        }
        Ok(())
    }

    /// Host calls left in this invocation's `max_host_calls`.
    fn calls_left(&self) -> u64 {
        self.policy
            .limits
            .max_host_calls
            .get()
            .saturating_sub(self.host_calls)
    }

    /// Charges `pages` SCAN pages of a call as host calls; traps past
    /// `max_host_calls` (the call itself stopped at the budget).
    fn charge_pages(&mut self, pages: u64) -> wasmtime::Result<()> {
        if pages == 0 {
            return Ok(());
        }
        self.host_calls = self.host_calls.saturating_add(pages.saturating_sub(1));
        self.count_call()
    }

    /// Admits a repository call: counts it, checks the grant and the input
    /// size. Gives the pools, the tenant and the output size limit.
    fn admit(
        &mut self,
        repo: Repo,
        access: Access,
        input_bytes: usize,
    ) -> wasmtime::Result<Result<(&Pools, &str, usize), crate::bindings::WitRepoError>> {
        use crate::bindings::WitRepoError;
        self.count_call()?;
        let max = self.policy.limits.max_value_bytes;
        if !self.policy.grants.allows(repo, access) {
            self.denied += 1;
            let missing = Grants::missing(repo, access);
            if self.denied == 1 {
                tracing::warn!(
                    target: "symphony::plugin",
                    event = "host_call_denied",
                    needs = %missing,
                    "host call denied: the manifest does not grant this capability"
                );
            }
            return Ok(Err(WitRepoError::Denied(format!(
                "plugin {} lacks the capability {missing}",
                self.job.plugin
            ))));
        }
        if input_bytes > max {
            return Ok(Err(WitRepoError::InvalidInput(format!(
                "the arguments are {input_bytes} bytes, over this plugin's max_value_kib ({max} bytes)"
            ))));
        }
        Ok(Ok((&self.pools, &self.job.tenant, max)))
    }
}

impl WasiView for JobState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The shared engine and linker.
pub struct Runtime {
    engine: Engine,
    /// Compiled plugins on disk (none with `cache = false`).
    artifacts: Option<Artifacts>,
    linker: Linker<JobState>,
    pools: Pools,
    fuel: bool,
    config: RuntimeConfig,
    /// Idle warm instances over all plugins (at most [`WARM_SLOTS`]).
    warm_idle: Arc<std::sync::atomic::AtomicU32>,
    /// The threads jobs run on.
    guests: GuestThreads,
    /// Per-tenant quotas (none until [`Runtime::set_quotas`]).
    quotas: std::sync::OnceLock<Arc<crate::quota::Quotas>>,
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption, on-disk
    /// cache of compiled components) and the linker, and starts the epoch ticker.
    ///
    /// # Errors
    /// When the engine cannot be created (for example the pooling allocator
    /// cannot reserve its memory) or the cache directory is unusable.
    pub fn new(config: &RuntimeConfig, fuel: bool, pools: Pools) -> anyhow::Result<Arc<Runtime>> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel);
        // Every live instance is a running job (at most `concurrency`) or
        // an idle warm one (at most WARM_SLOTS), and every component is
        // bounded per instance at load time (a component over a bound fails
        // to load, with the bound in the error). So the pool's totals cover
        // the worst case, and no plugin can take the slots another's job
        // needs.
        let jobs = u32::try_from(config.concurrency.get()).unwrap_or(u32::MAX);
        let components = jobs.saturating_add(WARM_SLOTS);
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(components)
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .total_core_instances(components.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT))
            .total_memories(components.saturating_mul(MAX_MEMORIES_PER_COMPONENT))
            .total_tables(components.saturating_mul(MAX_TABLES_PER_COMPONENT))
            .total_stacks(components)
            .max_memory_size(config.max_memory_mib.get().saturating_mul(1 << 20))
            // Reset a finished instance's memory by rewriting the pages it
            // dirtied (found with PAGEMAP_SCAN, Linux 6.7+) instead of
            // `madvise`: no TLB shootdown across threads, and no page faults
            // in the next job. Past these sizes, or without PAGEMAP_SCAN,
            // it falls back to `madvise`.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 16);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("cannot create the WebAssembly engine")?;

        let artifacts = if config.cache {
            let dir = config.cache_dir.clone().unwrap_or_else(default_cache_dir);
            Some(Artifacts::new(dir, &engine)?)
        } else {
            None
        };

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
            artifacts,
            linker,
            pools,
            fuel,
            config: config.clone(),
            warm_idle: Arc::default(),
            guests: GuestThreads::new()?,
            quotas: std::sync::OnceLock::new(),
        }))
    }

    /// The handle of the guest threads, where jobs are spawned (by the
    /// dispatcher, `dispatch`); `None` only while the runtime is dropped.
    pub fn guest_handle(&self) -> Option<&tokio::runtime::Handle> {
        self.guests.0.as_ref().map(tokio::runtime::Runtime::handle)
    }

    /// Sets the per-tenant quotas (once; later calls are ignored, as
    /// `[tenants]` changes need a restart).
    pub fn set_quotas(&self, quotas: Arc<crate::quota::Quotas>) {
        let _ = self.quotas.set(quotas);
    }

    /// The per-tenant quotas (empty when none were set).
    pub fn quotas(&self) -> &Arc<crate::quota::Quotas> {
        self.quotas.get_or_init(Arc::default)
    }

    /// The Redis pools host functions use.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// The configuration the runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Whether the engine meters fuel (some plugin asked for it).
    pub fn meters_fuel(&self) -> bool {
        self.fuel
    }

    /// Reads, compiles (or fetches from the cache) and links a plugin.
    ///
    /// # Errors
    /// A [`LoadError`] naming the plugin, the file and what is wrong.
    pub fn load(
        &self,
        name: &PluginName,
        path: &Path,
        policy: Policy,
    ) -> Result<LoadedPlugin, LoadError> {
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
        let sha256: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let component = match &self.artifacts {
            Some(artifacts) => artifacts.component(&self.engine, &bytes, &sha256),
            None => Component::from_binary(&self.engine, &bytes),
        }
        .map_err(|e| LoadError::Compile {
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
        let digest = sha256[..12].to_owned();
        Ok(LoadedPlugin {
            name: name.clone(),
            path: path.to_owned(),
            digest,
            compile_time: start.elapsed(),
            pre,
            policy: Arc::new(policy),
            warm: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// A fresh store for `plugin` running `job`, with its output streams.
    fn new_store(
        &self,
        plugin: &LoadedPlugin,
        job: &Arc<Job>,
    ) -> (Store<JobState>, GuestOutput, GuestOutput) {
        let stdout = GuestOutput::new(Stream::Stdout);
        let stderr = GuestOutput::new(Stream::Stderr);
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
                policy: plugin.policy.clone(),
                pools: self.pools.clone(),
                wasi,
                table: {
                    let mut table = ResourceTable::new();
                    table.set_max_capacity(MAX_RESOURCES);
                    table
                },
                limiter: Limiter {
                    max_memory: plugin.policy.limits.max_memory_bytes,
                    used: 0,
                    refused: None,
                },
                deadline: Instant::now(),
                host_calls: 0,
                over_call_budget: false,
                denied: 0,
                quotas: self.quotas().clone(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        // On every tick the guest yields to the executor, so a CPU-bound
        // guest holds a worker thread for at most one tick at a time; at
        // its first tick it leaves the control runtime for the guest
        // threads ([`run_job_task`]), so it never holds up the listener,
        // sweeper or pump for more than one tick. Past its deadline it is
        // interrupted (outcome `timeout`).
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Ok(wasmtime::UpdateDeadline::Interrupt)
            } else {
                guests::note_tick();
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        (store, stdout, stderr)
    }

    /// Runs `on-expire` for `job` under the plugin's limits: in a fresh
    /// instance, or (with `reuse_instances`) in a warm one of the same tenant.
    pub async fn invoke(&self, plugin: &LoadedPlugin, job: Arc<Job>) -> Outcome {
        let limits = &plugin.policy.limits;
        let reuse = plugin.policy.reuse;
        let warm = reuse.and_then(|_| plugin.take_warm(&job.tenant));
        let (mut store, instance, stdout, stderr, uses) = match warm {
            // Taken out of the pool, it runs in a job's slot: its warm slot is freed.
            Some(w) => (w.store, Some(w.instance), w.stdout, w.stderr, w.uses),
            None => {
                let (store, stdout, stderr) = self.new_store(plugin, &job);
                (store, None, stdout, stderr, 0)
            }
        };
        store.data_mut().reset(job.clone());
        // The guest is stopped at the first tick at or past its deadline:
        // at its timeout or up to one tick later, never before it.
        store.data_mut().deadline = Instant::now() + limits.timeout;
        store.set_epoch_deadline(1);
        if self.fuel {
            let fuel = limits.fuel.map_or(u64::MAX, std::num::NonZeroU64::get);
            if let Err(e) = store.set_fuel(fuel) {
                return Outcome::Trap(format!("cannot set fuel: {e}"));
            }
        }

        // The epoch stops running guest code; this also stops a guest that
        // waits in a host call (a sleep, say) past its time.
        let call = async {
            let instance = match instance {
                Some(i) => i,
                None => plugin.pre.instantiate_async(&mut store).await?,
            };
            let returned = instance
                .call_on_expire(&mut store, &job.action, &job.id, &job.key)
                .await?;
            Ok::<_, wasmtime::Error>((instance, returned))
        };
        let result = tokio::time::timeout(limits.timeout + 4 * EPOCH_TICK, call).await;
        stdout.finish();
        stderr.finish();
        let Ok(result) = result else {
            return Outcome::Timeout(limits.timeout);
        };
        let state = store.data();
        let outcome = match &result {
            Ok((_, Ok(()))) => Outcome::Ok,
            Ok((_, Err(message))) if state.denied > 0 => {
                Outcome::Denied(crate::text::cap(message.clone()))
            }
            Ok((_, Err(message))) => Outcome::Error(crate::text::cap(message.clone())),
            Err(_) if state.over_call_budget => Outcome::Limit(format!(
                "made more than max_host_calls ({}) host calls",
                limits.max_host_calls
            )),
            Err(e) if state.limiter.refused.is_some() => Outcome::Memory(format!(
                "tried to grow its memories and tables to {} bytes in all, over its {} MiB limit ({})",
                state.limiter.refused.unwrap_or_default(),
                limits.max_memory_bytes >> 20,
                trap_message(e)
            )),
            Err(e) => match e.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => Outcome::Timeout(limits.timeout),
                Some(Trap::OutOfFuel) => Outcome::Fuel,
                _ => Outcome::Trap(trap_message(e)),
            },
        };
        // Keep a warm instance only after a clean run, for a bounded number of jobs.
        // Idle warm instances of all plugins share WARM_SLOTS pooling slots,
        // so they can never take a slot a job needs.
        if let (Some(max), Ok((instance, Ok(())))) = (reuse, result)
            && uses + 1 < max.get()
            && let Some(slot) = WarmSlot::acquire(&self.warm_idle)
        {
            plugin.put_warm(
                &job.tenant,
                Warm {
                    store,
                    instance,
                    stdout,
                    stderr,
                    uses: uses + 1,
                    _slot: slot,
                },
            );
        }
        outcome
    }
}

/// The trap's cause and the guest backtrace, on one line, capped.
fn trap_message(e: &wasmtime::Error) -> String {
    crate::text::cap(format!("{e:#}").replace('\n', " | "))
}

/// `None` for a component; otherwise what the bytes are instead.
fn not_a_component(bytes: &[u8]) -> Option<String> {
    if !bytes.starts_with(b"\0asm") {
        return Some("the file does not start with the WebAssembly magic bytes".into());
    }
    // Bytes 4..8: version and layer. Core modules are version 1, layer 0;
    // components have layer 1.
    let Some(&[v0, v1, l0, l1]) = bytes.get(4..8) else {
        return Some("the file ends before the WebAssembly version".into());
    };
    match ([v0, v1] == [1, 0], [l0, l1] == [0, 0], [l0, l1] == [1, 0]) {
        (true, true, _) => Some(
            "it is a core WebAssembly module; build the plugin for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        (_, _, true) => None,
        _ => Some("unknown WebAssembly version or layer".into()),
    }
}

/// `$XDG_CACHE_HOME/symphony-host/compiled`, else
/// `~/.cache/symphony-host/compiled`, else a temp dir.
///
/// A directory of its own: compiled plugins unused for 30 days are pruned
/// from it, and whoever can write there can run code in the host (the
/// polyglot toolchains live beside it, in `symphony-host/tools`).
fn default_cache_dir() -> PathBuf {
    let base = if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        PathBuf::from(home).join(".cache")
    } else {
        return std::env::temp_dir().join("symphony-host-compiled");
    };
    base.join("symphony-host").join("compiled")
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
