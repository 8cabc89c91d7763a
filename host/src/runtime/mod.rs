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

mod artifacts;
mod imports;
mod output;

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
use output::{GuestOutput, Stream};

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

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `on-expire` returned `ok`.
    Ok,
    /// `on-expire` returned `err` with this message.
    Error(String),
    /// `on-expire` returned `err` after a host call was denied for a missing
    /// capability.
    Denied(String),
    /// The instance trapped (panic, unreachable, stack overflow, exit).
    Trap(String),
    /// The invocation ran past its timeout and was stopped.
    Timeout(Duration),
    /// The plugin tried to grow its memory past its limit.
    Memory(String),
    /// The plugin ran out of fuel.
    Fuel,
    /// The plugin made more host calls than allowed.
    Limit(String),
}

impl Outcome {
    /// The outcome's name in logs: `ok`, `error`, `denied`, `trap`,
    /// `timeout`, `memory`, `fuel` or `limit`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error(_) => "error",
            Outcome::Denied(_) => "denied",
            Outcome::Trap(_) => "trap",
            Outcome::Timeout(_) => "timeout",
            Outcome::Memory(_) => "memory",
            Outcome::Fuel => "fuel",
            Outcome::Limit(_) => "limit",
        }
    }

    /// What went wrong, for the log's `error` field (`None` when ok).
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Error(m)
            | Outcome::Denied(m)
            | Outcome::Trap(m)
            | Outcome::Memory(m)
            | Outcome::Limit(m) => Some(m.clone()),
            Outcome::Timeout(limit) => Some(format!("stopped at the {limit:?} timeout")),
            Outcome::Fuel => Some("ran out of fuel".to_owned()),
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
    policy: Arc<Policy>,
    /// Idle warm instances per tenant (only with `reuse_instances`).
    warm: std::sync::Mutex<HashMap<String, Vec<Warm>>>,
}

/// A warm instance kept for the next job of the same tenant.
struct Warm {
    store: Store<JobState>,
    instance: Plugin,
    stdout: GuestOutput,
    stderr: GuestOutput,
    uses: u32,
    /// Its share of [`WARM_SLOTS`], given back when it leaves the pool.
    _slot: WarmSlot,
}

/// One of the [`WARM_SLOTS`] pooling slots set aside for idle warm
/// instances, over all plugins; released on drop.
struct WarmSlot(Arc<std::sync::atomic::AtomicU32>);

impl WarmSlot {
    fn acquire(idle: &Arc<std::sync::atomic::AtomicU32>) -> Option<WarmSlot> {
        use std::sync::atomic::Ordering;
        idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < WARM_SLOTS).then_some(n + 1)
        })
        .ok()
        .map(|_| WarmSlot(idle.clone()))
    }
}

impl Drop for WarmSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Most resources (WASI streams, pollables, ...) one invocation may hold at
/// once: WASI calls are not counted against `max_host_calls`, so this bounds
/// the host memory they can take.
const MAX_RESOURCES: usize = 4096;

/// Most idle warm instances one plugin keeps (each holds a pooling slot).
const MAX_WARM_PER_PLUGIN: usize = 8;
/// Bytes of a pooled memory reset in place (rather than by `madvise`) when
/// its instance is done.
const KEEP_RESIDENT: usize = 1 << 20;
/// Pooling slots set aside for idle warm instances.
const WARM_SLOTS: u32 = 64;
/// Most core module instances one component may hold (Rust, Go and
/// JavaScript plugins hold a handful: the program, shims and adapters).
pub const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 16;
/// Most linear memories one component may define.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
/// Most tables one component may define.
pub const MAX_TABLES_PER_COMPONENT: u32 = 8;

impl LoadedPlugin {
    fn take_warm(&self, tenant: &str) -> Option<Warm> {
        self.warm.lock().ok()?.get_mut(tenant)?.pop()
    }

    fn put_warm(&self, tenant: &str, warm: Warm) {
        if let Ok(mut pool) = self.warm.lock() {
            let idle: usize = pool.values().map(Vec::len).sum();
            if idle < MAX_WARM_PER_PLUGIN {
                pool.entry(tenant.to_owned()).or_default().push(warm);
            }
        }
    }
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
    /// What the host enforces for it.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Refuses memory and table growth past the plugin's limit, counted over
/// the sum of every memory and table of the instance (a component may hold
/// several), and remembers that it did so the outcome can say `memory`.
struct Limiter {
    max_memory: usize,
    /// Bytes of every memory and table of the instance so far.
    used: usize,
    refused: Option<usize>,
}

/// Most elements of any table (function tables of ordinary guests hold a few thousand).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Bytes a table element costs the host (a pointer).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl Limiter {
    /// Admits growth of one memory or table from `current` to `desired`
    /// bytes if the instance's total stays within the limit.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_memory {
            self.refused = Some(total);
            return false;
        }
        self.used = total;
        true
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS
            && self.grow(
                current.saturating_mul(TABLE_ELEMENT_BYTES),
                desired.saturating_mul(TABLE_ELEMENT_BYTES),
            ))
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

/// A Tokio runtime of its own for jobs that run long. Guest code is CPU work
/// the host does not control: on these threads it can never delay the
/// listener, sweeper, pump or dispatcher, which run on the caller's runtime
/// (the OS shares the cores between both; guests yield on every epoch tick
/// within theirs). A job starts on the caller's runtime and moves here at
/// its guest's first epoch tick ([`run_job_task`]).
struct GuestThreads(Option<tokio::runtime::Runtime>);

thread_local! {
    /// True on the guest threads.
    static ON_GUEST_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set when a guest yields at an epoch tick on this thread: it has run
    /// guest code for up to a tick. Read and cleared by [`run_job_task`].
    static TICKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs on the guest threads (host calls made there run
/// their Redis I/O on the control runtime instead).
pub(crate) fn on_guest_thread() -> bool {
    ON_GUEST_THREAD.with(std::cell::Cell::get)
}

/// Runs a job's future where it was called (the control runtime) until its
/// guest first yields at an epoch tick, then moves it to `guests` for the
/// rest of its run.
///
/// Most jobs end, host calls included, well within a tick of guest code
/// (5 ms): they run with no handoff between threads, which measured 7 µs
/// of host CPU less per job in the 1-host burst and 13 % more jobs a
/// second (`docs/benchmarks.md`). A
/// CPU-bound guest holds a control thread for at most one tick, once; from
/// then on it runs on the guest threads, as every job did before.
///
/// The job keeps the caller's span (a job's span) when it moves.
///
/// # Errors
/// The job panicking, here or on the guest threads (its message): the
/// panic ends the job, not the caller's task.
pub async fn run_job_task<F>(job: F, guests: tokio::runtime::Handle) -> Result<F::Output, String>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use std::task::Poll;
    let mut job = Box::pin(job);
    let finished_here = std::future::poll_fn(|cx| {
        TICKED.with(|t| t.set(false));
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.as_mut().poll(cx)));
        match polled {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(Ok(out))),
            Err(panic) => Poll::Ready(Some(Err(panic_message(panic.as_ref())))),
            // Only the guest's own tick sets the flag during this poll.
            Ok(Poll::Pending) if TICKED.with(std::cell::Cell::take) => Poll::Ready(None),
            Ok(Poll::Pending) => Poll::Pending,
        }
    })
    .await;
    match finished_here {
        Some(out) => out,
        None => {
            use tracing::Instrument as _;
            let span = tracing::Span::current();
            guests
                .spawn(job.instrument(span))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

/// The message of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic");
    format!("panicked: {text}")
}

impl GuestThreads {
    fn new() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("symphony-guest")
            .on_thread_start(|| ON_GUEST_THREAD.with(|g| g.set(true)))
            .enable_all()
            .build()
            .context("cannot start the guest threads")?;
        Ok(Self(Some(rt)))
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context may not do.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
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
                TICKED.with(|t| t.set(true));
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
    use super::{GuestThreads, Limiter, TICKED, not_a_component, on_guest_thread, run_job_task};

    /// The limit is over the sum of an instance's memories: two memories of
    /// 20 MiB do not fit 32 MiB, though each alone would.
    #[test]
    fn the_memory_limit_covers_every_memory_of_an_instance() {
        let engine = wasmtime::Engine::default();
        let limiter = || Limiter {
            max_memory: 32 << 20,
            used: 0,
            refused: None,
        };
        let two = wat::parse_str("(module (memory 320) (memory 320))").unwrap();
        let module = wasmtime::Module::new(&engine, two).unwrap();
        let mut store = wasmtime::Store::new(&engine, limiter());
        store.limiter(|l| l);
        assert!(wasmtime::Instance::new(&mut store, &module, &[]).is_err());
        assert_eq!(store.data().refused, Some(40 << 20));

        let one = wat::parse_str("(module (memory 320))").unwrap();
        let module = wasmtime::Module::new(&engine, one).unwrap();
        let mut store = wasmtime::Store::new(&engine, limiter());
        store.limiter(|l| l);
        assert!(wasmtime::Instance::new(&mut store, &module, &[]).is_ok());
        assert_eq!(store.data().used, 20 << 20);
    }

    #[test]
    fn a_job_runs_where_it_starts_until_its_first_tick_then_on_the_guest_threads() {
        let guests = GuestThreads::new().unwrap();
        let handle = guests.0.as_ref().unwrap().handle().clone();
        let control = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A job that never ticks ends where it started.
        let short = control.block_on(run_job_task(async { on_guest_thread() }, handle.clone()));
        assert!(
            !short.unwrap(),
            "a short job should not leave the control runtime"
        );
        // A job whose guest ticks (as the epoch callback marks it) goes on,
        // from its next poll, on the guest threads, in the caller's span.
        // (Spans are recorded only under a subscriber, global for the
        // guest threads' sake.)
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let ticking = async {
            let mut where_ran = Vec::new();
            for _ in 0..3 {
                let span = tracing::Span::current().metadata().map(|m| m.name());
                where_ran.push((on_guest_thread(), span));
                TICKED.with(|t| t.set(true));
                tokio::task::yield_now().await;
            }
            where_ran
        };
        let where_ran = control
            .block_on(tracing::Instrument::instrument(
                run_job_task(ticking, handle.clone()),
                tracing::info_span!("job"),
            ))
            .unwrap();
        assert_eq!(
            where_ran,
            [
                (false, Some("job")),
                (true, Some("job")),
                (true, Some("job"))
            ]
        );
        // A job that panics ends with the panic's message; the caller goes on.
        let panicked = control.block_on(run_job_task(
            async {
                let n: u32 = std::hint::black_box(0);
                if n == 0 {
                    panic!("boom");
                }
                n
            },
            handle,
        ));
        assert_eq!(panicked.unwrap_err(), "panicked: boom");
    }

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
