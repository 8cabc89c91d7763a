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

use crate::backend::RedisConn;
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
) -> Result<RedisConn, RepoError> {
    Ok(pools
        .get(alias)
        .map_err(|e| RepoError::Unavailable(e.to_string()))?
        .conn_for(tenant))
}

/// `datetime.utcnow().isoformat()` as Python prints it: microseconds, no zone.
pub(crate) fn utc_now_iso() -> String {
    let s = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    s.trim_end_matches('Z').to_owned()
}
