//! The error of every repository and delivery operation: the host side of
//! the WIT `repo-error`. (A module of its own, below both `repo` and
//! `delivery`, so neither depends on the other for it.)

use crate::keys::KeyError;
use crate::pools::PoolNotConfigured;

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

impl RepoError {
    /// A new trigger refused at its tenant's pending-trigger quota
    /// (`[tenants] max_pending_triggers`), however the count was taken.
    pub fn pending_quota(tenant: &str, cap: impl std::fmt::Display) -> RepoError {
        RepoError::Denied(format!(
            "quota: tenant {tenant:?} has {cap} triggers pending, its max_pending_triggers; \
             the trigger was not set"
        ))
    }
}

impl From<redis::RedisError> for RepoError {
    fn from(e: redis::RedisError) -> Self {
        RepoError::Unavailable(e.to_string())
    }
}

impl From<PoolNotConfigured> for RepoError {
    fn from(e: PoolNotConfigured) -> Self {
        RepoError::Unavailable(e.to_string())
    }
}

impl From<KeyError> for RepoError {
    fn from(e: KeyError) -> Self {
        RepoError::InvalidInput(e.to_string())
    }
}
