//! Tenant-scoped repositories over Redis, byte-compatible with `mimeiapify`.
//!
//! Each repository is built for one tenant and can only name keys under it;
//! plugins reach them through host functions, Rust code embedding the host
//! can use them directly.

mod batch;
pub mod capped;
pub mod codec;
mod generic;
pub mod hash;
mod pubsub;
mod trigger;

pub use batch::BatchRepo;
pub use generic::GenericRepo;
pub use hash::{HandlerStateRepo, HashRepo, SharedStateRepo, TableRepo, UserRepo};
pub use pubsub::Publisher;
pub use trigger::{MAX_TTL_MS, TriggerRepo, ttl_ms};

use crate::pools::{PoolAlias, Pools};

use crate::keys::KeyError;

/// Why a repository operation failed. Crosses into plugins as the WIT
/// `repo-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The record, field or key does not exist.
    #[error("not found")]
    NotFound,
    /// An argument was rejected.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Redis could not be reached or answered with an error.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Not allowed.
    #[error("denied: {0}")]
    Denied(String),
}

impl From<redis::RedisError> for RepoError {
    fn from(e: redis::RedisError) -> Self {
        RepoError::Unavailable(e.to_string())
    }
}

impl From<KeyError> for RepoError {
    fn from(e: KeyError) -> Self {
        RepoError::InvalidInput(e.to_string())
    }
}

/// The command connection of `alias` for `tenant` (see [`crate::pools::Pool::conn_for`]).
pub(crate) fn connection(
    pools: &Pools,
    alias: PoolAlias,
    tenant: &str,
) -> Result<redis::aio::ConnectionManager, RepoError> {
    Ok(pools
        .get(alias)
        .map_err(|e| RepoError::Unavailable(e.to_string()))?
        .conn_for(tenant))
}

/// Runs a command that must not run twice (no retry).
pub(crate) async fn query_once<T: redis::FromRedisValue>(
    conn: &redis::aio::ConnectionManager,
    cmd: &redis::Cmd,
) -> Result<T, RepoError> {
    let mut c = conn.clone();
    Ok(cmd.query_async(&mut c).await?)
}

/// Runs an idempotent command, retrying once when the connection was lost
/// (for example after a Redis restart), so a stale connection costs a
/// reconnect rather than an error — unlike mimeiapify, where every idle pooled
/// connection fails once after a restart.
pub(crate) async fn query<T: redis::FromRedisValue>(
    conn: &redis::aio::ConnectionManager,
    cmd: &redis::Cmd,
) -> Result<T, RepoError> {
    once_more_if_dropped(conn, |mut c| async move { cmd.query_async(&mut c).await }).await
}

/// Runs an idempotent script, retrying once when the connection was lost
/// (as [`query`] does for commands): the pools hold several connections,
/// and after a Redis restart each fails once until it reconnects.
pub(crate) async fn invoke_idempotent<T: redis::FromRedisValue>(
    conn: &redis::aio::ConnectionManager,
    call: &redis::ScriptInvocation<'_>,
) -> Result<T, RepoError> {
    once_more_if_dropped(conn, |mut c| async move { call.invoke_async(&mut c).await }).await
}

/// Runs `run` on the connection, and once more when it failed because the
/// connection was lost (the manager reconnects in between).
async fn once_more_if_dropped<T, F, Fut>(
    conn: &redis::aio::ConnectionManager,
    run: F,
) -> Result<T, RepoError>
where
    F: Fn(redis::aio::ConnectionManager) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    match run(conn.clone()).await {
        Err(e) if e.is_connection_dropped() || e.is_io_error() => Ok(run(conn.clone()).await?),
        other => Ok(other?),
    }
}

/// `datetime.utcnow().isoformat()` as Python prints it: microseconds, no zone.
pub(crate) fn utc_now_iso() -> String {
    let s = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    s.trim_end_matches('Z').to_owned()
}
