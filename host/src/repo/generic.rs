//! Generic values (`RedisGeneric`): string keys `{t}:{key}` in pool `default`.

use crate::backend::RedisConn;
use serde_json::Value;

use super::RepoError;
use super::codec::{dumps, loads};
use crate::keys::{self, generic_key};
use crate::pools::{PoolAlias, Pools};

/// The second parts of the typed repositories' keys (`{t}:{word}:...`):
/// where pools share a keyspace a generic key may not start with one.
const SHARED_WORDS: [&str; 6] = ["user", "state", "df", "EXPTRIGGER", "SS", "batch"];

/// A tenant's generic values.
#[derive(Clone)]
pub struct GenericRepo {
    conn: RedisConn,
    tenant: String,
    /// Whether another pool shares the `default` pool's keyspace.
    shared: bool,
}

impl GenericRepo {
    /// The generic repository of `tenant`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an invalid tenant.
    pub fn new(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        keys::validate_tenant(tenant)?;
        Ok(Self {
            conn: pools.conn_for(PoolAlias::Default, tenant)?,
            tenant: tenant.to_owned(),
            shared: pools.keyspace_shared(PoolAlias::Default),
        })
    }

    /// `{t}:{key}`. Where another pool shares the `default` pool's
    /// keyspace (a Redis Cluster's DB 0, or `[redis.pools]` naming one DB
    /// twice), a key whose first part names a typed repository (`user:u1`,
    /// `df:...`, `EXPTRIGGER:...`) would be that repository's record, or a
    /// trigger, which the `generic` grant must not reach: it is refused
    /// there (`docs/compat.md`, "On a Redis Cluster").
    fn key(&self, key: &str) -> Result<String, RepoError> {
        let full = generic_key(&self.tenant, key)?;
        if self.shared {
            let first = key.split(':').next().unwrap_or(key);
            if key.contains(':') && SHARED_WORDS.contains(&first) {
                return Err(RepoError::InvalidInput(format!(
                    "generic key {key:?}: the default pool shares its DB with another pool, and a key \
                     starting with {first:?}: is the {first} repository's"
                )));
            }
        }
        Ok(full)
    }

    /// `SET {t}:{key} dumps(value) [EX ttl]`.
    ///
    /// # Errors
    /// An empty key, or Redis failing.
    pub async fn set(
        &self,
        key: &str,
        value: &Value,
        ttl_secs: Option<u32>,
    ) -> Result<(), RepoError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)?).arg(dumps(value));
        if let Some(ttl) = ttl_secs.filter(|t| *t > 0) {
            cmd.arg("EX").arg(ttl);
        }
        self.conn.query::<()>(&cmd).await.map_err(RepoError::from)
    }

    /// The value, decoded, or `None`.
    ///
    /// # Errors
    /// An empty key, or Redis failing.
    pub async fn get(&self, key: &str) -> Result<Option<Value>, RepoError> {
        let raw = super::capped::get(&self.conn, &self.key(key)?).await?;
        Ok(raw.map(|r| loads(&r)))
    }

    /// Deletes the value; returns whether it existed.
    ///
    /// # Errors
    /// An empty key, or Redis failing.
    pub async fn delete(&self, key: &str) -> Result<bool, RepoError> {
        let n: u64 = self
            .conn
            .query(redis::cmd("DEL").arg(self.key(key)?))
            .await?;
        Ok(n > 0)
    }
}
