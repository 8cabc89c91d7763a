//! # symphony-host
//!
//! Turns Redis key expiry into sandboxed background jobs. An application
//! writes a trigger key `{tenant}:EXPTRIGGER:{action}:{id}` with a TTL; when
//! it expires, the host hears the keyspace `expired` event, finds the plugin
//! that owns the action (longest prefix from the manifest) and calls that
//! WebAssembly component's `on-expire(action, id, key)` in a fresh sandbox
//! scoped to the tenant.
//!
//! # Layout
//! Start-up and the command line:
//! - [`lifecycle`]: [`Host::start`] runs the named stages in order, services
//!   mount on it, [`Host::serve`] stops them in reverse.
//! - [`commands`]: what each subcommand does (`check`, triggers, dead letters).
//! - [`manifest`]: the TOML manifest, validated by types, errors with line:column.
//! - [`reload`]: hot reload of the manifest and plugins (file watch, SIGHUP).
//! - [`author`]: the plugin author's `new`, `build` and `invoke`.
//!
//! Redis and its data:
//! - [`backend`]: [`backend::RedisConn`], the one way host code reaches Redis,
//!   a standalone server or a Redis Cluster.
//! - [`pools`]: reconnecting Redis connections per pool alias.
//! - [`keys`]: the key formats, byte-compatible with `mimeiapify`.
//! - [`repo`]: tenant-scoped repositories (the host functions' backends);
//!   [`error::RepoError`] is what they (and delivery) fail with.
//! - [`delivery`]: the durable due index, claims, leases, retries, dead letters.
//!
//! The pipeline, in the order a trigger goes through it:
//! - [`listener`]: the keyevent subscription, with reconnect and config checks.
//! - [`pump`]: keyevents into the index, and fallback claims of `expired` keys.
//! - [`sweeper`]: claims due firings and hands them over at their due time;
//!   renews the leases of those this host holds.
//! - [`dispatch`]: routes firings, applies quotas and leases, one job per
//!   firing, and settles its outcome; [`fair`] is its pure per-tenant queue.
//! - [`plugins`]: the loaded plugin set and its routing table (longest prefix).
//! - [`runtime`]: the wasmtime engine, plugin loading, invocation in a fresh
//!   store; [`bindings`] is the host side of `wit/symphony.wit`.
//!
//! Limits and observation:
//! - [`policy`]: capabilities, tenants and limits of each plugin.
//! - [`quota`]: per-tenant dispatch, Redis-call, pending-trigger and memory quotas;
//!   [`budget`] measures what each tenant's keys take in Redis.
//! - [`stats`]: counters since start, and the host's [`metrics`].
//! - [`admin`]: the admin HTTP server (health probes, Prometheus metrics,
//!   the JSON API and the dashboard), mounted as a service of the host.
//! - [`recent`]: this host's last dispatches and per-minute/hour summaries.
//! - [`fleet`]: every host on one Redis, by heartbeat.
//! - [`throttle`]: one log line per interval for what could repeat without bound.
//! - [`text`]: caps and escapes plugin-controlled text for logs and Redis.
//!
//! # The path of one trigger
//! An application sets `acme:EXPTRIGGER:reminder_email:42` with a TTL
//! ([`repo::TriggerRepo::set`], or any client). The arming script indexes it
//! in `symphony:due:acme` at its due time. The [`sweeper`] claims it when it
//! is due (or the [`pump`], on hearing `expired`, if it was never indexed),
//! taking a lease, and hands the firing to the [`dispatch`]er. The
//! dispatcher waits for the tenant's turn and limits, finds the plugin by
//! the action's prefix in the [`plugins`] set, and the [`runtime`] calls its
//! `on-expire("reminder_email", "42", key)` in a fresh store scoped to
//! `acme`. The outcome settles the firing in [`delivery`]: done, retried
//! with backoff, or dead-lettered.

// Host code reads slices with `get` and patterns, never `[i]`: a bad
// index is an error to report, not a panic in the control plane. (Tests may
// index.)
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub mod admin;
pub mod author;
pub mod backend;
pub mod bindings;
pub mod budget;
pub mod commands;
pub mod context;
pub mod delivery;
pub mod dispatch;
pub mod error;
pub mod fair;
pub mod fleet;
pub mod keys;
pub mod lifecycle;
pub mod listener;
pub mod logwriter;
pub mod manifest;
pub mod metrics;
pub mod plugins;
pub mod policy;
pub mod pools;
pub mod pump;
pub mod quota;
pub mod recent;
pub mod reload;
pub mod repo;
pub mod runtime;
pub mod stats;
pub mod sweeper;
pub mod text;
pub mod throttle;

use std::future::Future;
use std::path::Path;

pub use crate::commands::{CheckedPlugin, check};
pub use crate::context::HostContext;
pub use crate::lifecycle::{Host, Stage};
use crate::manifest::{RedisOverride, RedisUrl};

/// A duration in whole milliseconds, for log fields (JSON numbers, unlike `u128`).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Microseconds since the Unix epoch, by this machine's clock.
pub(crate) fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Options that override the manifest.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Replaces the manifest's `[redis]`: one server (each alias keeps its
    /// seed DB) or a cluster.
    pub redis: Option<RedisOverride>,
    /// Replaces `[admin] listen`.
    pub admin_listen: Option<manifest::AdminListen>,
}

impl RunOptions {
    /// Options with a Redis URL override (`None`: keep what is set).
    pub fn with_redis_url(mut self, url: Option<RedisUrl>) -> Self {
        if let Some(url) = url {
            self.redis = Some(RedisOverride::Url(url));
        }
        self
    }

    /// Options with a Redis override (`None`: keep what is set).
    pub fn with_redis(mut self, redis: Option<RedisOverride>) -> Self {
        if redis.is_some() {
            self.redis = redis;
        }
        self
    }

    /// Options with an admin listen override.
    pub fn with_admin_listen(mut self, listen: Option<manifest::AdminListen>) -> Self {
        self.admin_listen = listen;
        self
    }
}

/// Runs the host until `shutdown` resolves: [`Host::start`], then
/// [`Host::serve`]. It loads the manifest and plugins, listens for expiries
/// and dispatches them, and reloads the plugins when their files or the
/// manifest change (or on SIGHUP). On shutdown it stops taking events, lets
/// in-flight invocations finish for up to `runtime.shutdown_grace`, and
/// returns.
///
/// # Errors
/// An invalid manifest, a plugin that does not load, an engine that cannot
/// start, or a Redis server that refuses keyevent notifications at startup.
/// Redis being unreachable is not an error: the listener keeps retrying.
pub async fn run(
    manifest_path: &Path,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    Host::start(manifest_path, options)
        .await?
        .serve(shutdown)
        .await
}
