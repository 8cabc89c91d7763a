//! Hash repositories: user records, handler state, table rows and shared
//! state are all hashes with the same operations (mimeiapify's `TenantCache`),
//! differing in pool and key. [`HashRepo`] implements the operations once;
//! a [`Scheme`] gives the pool and builds the key.

use std::marker::PhantomData;

use crate::backend::{RedisConn, ScanCursor};
use serde_json::{Map, Value};

use super::codec::{dumps, loads, loads_hash, python_json};
use super::{RepoError, capped, utc_now_iso};
use crate::keys::{self, KeyError};
use crate::pools::{PoolAlias, Pools};

/// TTL of hashes when none (or 0) is given, as mimeiapify's `ttl_default`.
pub const DEFAULT_TTL_SECS: u32 = 86_400;

/// SCAN batch size, as mimeiapify uses.
pub(crate) const SCAN_COUNT: usize = 100;

/// How many times an atomic append retries when another writer got in between.
const APPEND_RETRIES: usize = 64;

/// Where one kind of hash lives and how its key is built.
pub trait Scheme {
    /// What identifies one hash of this kind (besides the tenant).
    type Id<'a>: Copy;
    /// The pool holding these hashes.
    const POOL: PoolAlias;
    /// The key of one hash.
    ///
    /// # Errors
    /// An invalid tenant or id part.
    fn key(tenant: &str, id: Self::Id<'_>) -> Result<String, KeyError>;
}

/// User records, `{t}:user:{user_id}`; id: user id.
#[derive(Debug)]
pub enum UserRecords {}
impl Scheme for UserRecords {
    type Id<'a> = &'a str;
    const POOL: PoolAlias = PoolAlias::User;
    fn key(tenant: &str, user_id: &str) -> Result<String, KeyError> {
        keys::user_key(tenant, user_id)
    }
}

/// Handler state, `{t}:state:{name}:{user_id}`; id: (name, user id).
#[derive(Debug)]
pub enum HandlerStates {}
impl Scheme for HandlerStates {
    type Id<'a> = (&'a str, &'a str);
    const POOL: PoolAlias = PoolAlias::Handlers;
    fn key(tenant: &str, (name, user_id): (&str, &str)) -> Result<String, KeyError> {
        keys::handler_key(tenant, name, user_id)
    }
}

/// Table rows, `{t}:df:{table}:pkid:{pk}`; id: (table, pk).
#[derive(Debug)]
pub enum TableRows {}
impl Scheme for TableRows {
    type Id<'a> = (&'a str, &'a str);
    const POOL: PoolAlias = PoolAlias::Handlers;
    fn key(tenant: &str, (table, pk): (&str, &str)) -> Result<String, KeyError> {
        keys::table_key(tenant, table, pk)
    }
}

/// Shared state, `{t}:SS:{state}:{user_id}`; id: (state, user id).
#[derive(Debug)]
pub enum SharedStates {}
impl Scheme for SharedStates {
    type Id<'a> = (&'a str, &'a str);
    const POOL: PoolAlias = PoolAlias::SymphonySharedState;
    fn key(tenant: &str, (state, user_id): (&str, &str)) -> Result<String, KeyError> {
        keys::shared_state_key(tenant, state, user_id)
    }
}

/// The user repository (`RedisUser`).
pub type UserRepo = HashRepo<UserRecords>;
/// The handler-state repository (`RedisStateHandler`).
pub type HandlerStateRepo = HashRepo<HandlerStates>;
/// The table repository (`RedisTable`).
pub type TableRepo = HashRepo<TableRows>;
/// The shared-state repository (`RedisSharedState`).
pub type SharedStateRepo = HashRepo<SharedStates>;

/// A tenant's hashes of one kind.
pub struct HashRepo<S: Scheme> {
    conn: RedisConn,
    tenant: String,
    scheme: PhantomData<S>,
}

impl<S: Scheme> Clone for HashRepo<S> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            tenant: self.tenant.clone(),
            scheme: PhantomData,
        }
    }
}

fn ttl_or_default(ttl: Option<u32>) -> u32 {
    match ttl {
        Some(t) if t > 0 => t,
        _ => DEFAULT_TTL_SECS,
    }
}

impl<S: Scheme> HashRepo<S> {
    /// The repository of `tenant`.
    ///
    /// # Errors
    /// [`RepoError::InvalidInput`] for an empty tenant or one containing `:`.
    pub fn new(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        keys::validate_tenant(tenant)?;
        Ok(Self {
            conn: pools.conn_for(S::POOL, tenant)?,
            tenant: tenant.to_owned(),
            scheme: PhantomData,
        })
    }

    /// The tenant this repository is scoped to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn key(&self, id: S::Id<'_>) -> Result<String, RepoError> {
        Ok(S::key(&self.tenant, id)?)
    }

    /// The whole hash, decoded, or `None` when it is empty or missing.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn get(&self, id: S::Id<'_>) -> Result<Option<Map<String, Value>>, RepoError> {
        get_hash(&self.conn, &self.key(id)?).await
    }

    /// Sets the given fields (others stay) and the TTL, in one transaction.
    /// An empty `data` deletes the hash, as mimeiapify does.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn upsert(
        &self,
        id: S::Id<'_>,
        data: &Map<String, Value>,
        ttl: Option<u32>,
    ) -> Result<(), RepoError> {
        hset_with_ttl(&self.conn, &self.key(id)?, data, ttl).await
    }

    /// One field, decoded.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn get_field(&self, id: S::Id<'_>, field: &str) -> Result<Option<Value>, RepoError> {
        let raw = capped::hget(&self.conn, &self.key(id)?, field).await?;
        Ok(raw.map(|r| loads(&r)))
    }

    /// Sets one field and renews the TTL.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn update_field(
        &self,
        id: S::Id<'_>,
        field: &str,
        value: &Value,
        ttl: Option<u32>,
    ) -> Result<(), RepoError> {
        let mut data = Map::new();
        data.insert(field.to_owned(), value.clone());
        hset_with_ttl(&self.conn, &self.key(id)?, &data, ttl).await
    }

    /// `HINCRBY` and renew the TTL, in one transaction; returns the new value.
    ///
    /// # Errors
    /// Invalid id parts, a field that is not an integer, or Redis failing.
    pub async fn increment_field(
        &self,
        id: S::Id<'_>,
        field: &str,
        by: i64,
        ttl: Option<u32>,
    ) -> Result<i64, RepoError> {
        let key = self.key(id)?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HINCRBY")
            .arg(&key)
            .arg(field)
            .arg(by)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl_or_default(ttl))
            .ignore();
        let (value,): (i64,) = self.conn.pipe_once(&pipe).await.map_err(|e| {
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) {
                RepoError::InvalidInput(format!("field {field:?} does not hold an integer: {e}"))
            } else {
                RepoError::from(e)
            }
        })?;
        Ok(value)
    }

    /// Appends `value` to the JSON list in `field` (a missing field or one
    /// that is not a list starts a new list, as mimeiapify does), atomically: a
    /// compare-and-set script retried when another writer got in between.
    ///
    /// # Errors
    /// Invalid id parts, Redis failing, or too much contention.
    pub async fn append_to_list(
        &self,
        id: S::Id<'_>,
        field: &str,
        value: &Value,
        ttl: Option<u32>,
    ) -> Result<(), RepoError> {
        append_to_list(&self.conn, &self.key(id)?, field, value, ttl).await
    }

    /// Deletes the hash; returns whether it existed.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn delete(&self, id: S::Id<'_>) -> Result<bool, RepoError> {
        let n: u64 = self
            .conn
            .query(redis::cmd("DEL").arg(self.key(id)?))
            .await?;
        Ok(n > 0)
    }

    /// Deletes one field; returns whether it existed.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn delete_field(&self, id: S::Id<'_>, field: &str) -> Result<bool, RepoError> {
        let n: u64 = self
            .conn
            .query(redis::cmd("HDEL").arg(self.key(id)?).arg(field))
            .await?;
        Ok(n > 0)
    }

    /// Whether the hash exists.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn exists(&self, id: S::Id<'_>) -> Result<bool, RepoError> {
        let n: u64 = self
            .conn
            .query(redis::cmd("EXISTS").arg(self.key(id)?))
            .await?;
        Ok(n > 0)
    }
}

impl HashRepo<UserRecords> {
    /// The first user record of this tenant whose `field` equals `value`
    /// (compared as stored), found with SCAN.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn find_by_field(
        &self,
        field: &str,
        value: &Value,
    ) -> Result<Option<Map<String, Value>>, RepoError> {
        find_by_field(&self.conn, &keys::user_pattern(&self.tenant), field, value).await
    }
}

impl HashRepo<HandlerStates> {
    /// Sets the fields of `data` plus `handler_type` (the name) and
    /// `timestamp` (UTC ISO), renews the TTL and reads the whole state, in
    /// one transaction. Returns the state as mimeiapify does: the stored fields
    /// decoded, overlaid with `data` as given.
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn merge(
        &self,
        name: &str,
        user_id: &str,
        data: &Map<String, Value>,
        ttl: Option<u32>,
    ) -> Result<Map<String, Value>, RepoError> {
        let key = self.key((name, user_id))?;
        let mut fields = data.clone();
        fields.insert("handler_type".into(), Value::String(name.to_owned()));
        fields.insert("timestamp".into(), Value::String(utc_now_iso()));
        let pairs: Vec<(&String, String)> = fields.iter().map(|(k, v)| (k, dumps(v))).collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(&key, &pairs)
            .ignore()
            .expire(&key, i64::from(ttl_or_default(ttl)))
            .ignore();
        let under_cap = capped::limit().is_some();
        if !under_cap {
            pipe.hgetall(&key);
        }
        let stored: Vec<(String, String)> = if under_cap {
            // Under a reply cap the state is read by the capped script,
            // right after the write (not in the same transaction).
            self.conn.pipe_once::<()>(&pipe).await?;
            capped::hgetall(&self.conn, &key).await?
        } else {
            let (stored,): (Vec<(String, String)>,) = self.conn.pipe_once(&pipe).await?;
            stored
        };
        let mut state = loads_hash(stored);
        for (k, v) in fields {
            state.insert(k, v);
        }
        Ok(state)
    }
}

impl HashRepo<TableRows> {
    /// The first row of `table` whose `field` equals `value`.
    ///
    /// # Errors
    /// An empty table, or Redis failing.
    pub async fn find_by_field(
        &self,
        table: &str,
        field: &str,
        value: &Value,
    ) -> Result<Option<Map<String, Value>>, RepoError> {
        let pattern = keys::table_rows_pattern(&self.tenant, table)?;
        find_by_field(&self.conn, &pattern, field, value).await
    }

    /// Deletes the row `pk` from every table of this tenant; returns how many.
    ///
    /// # Errors
    /// An empty pk, or Redis failing.
    pub async fn delete_all_by_pkid(&self, pk: &str) -> Result<u32, RepoError> {
        let pattern = keys::table_pk_pattern(&self.tenant, pk)?;
        delete_matching(&self.conn, &pattern).await
    }
}

impl HashRepo<SharedStates> {
    /// Upsert with the default TTL (mimeiapify's `upsert` takes none).
    ///
    /// # Errors
    /// Invalid id parts, or Redis failing.
    pub async fn upsert_default_ttl(
        &self,
        state: &str,
        user_id: &str,
        data: &Map<String, Value>,
    ) -> Result<(), RepoError> {
        self.upsert((state, user_id), data, None).await
    }

    /// The names of this user's states, as stored (escaped), sorted.
    ///
    /// # Errors
    /// An empty user id, or Redis failing.
    pub async fn list_states(&self, user_id: &str) -> Result<Vec<String>, RepoError> {
        let (pattern, prefix, suffix) = keys::shared_states_pattern(&self.tenant, user_id)?;
        let mut names: Vec<String> = scan(&self.conn, &pattern)
            .await?
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix(&suffix))
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Deletes every state of this user; returns how many.
    ///
    /// # Errors
    /// An empty user id, or Redis failing.
    pub async fn clear_all_states(&self, user_id: &str) -> Result<u32, RepoError> {
        let (pattern, _, _) = keys::shared_states_pattern(&self.tenant, user_id)?;
        delete_matching(&self.conn, &pattern).await
    }
}

async fn get_hash(conn: &RedisConn, key: &str) -> Result<Option<Map<String, Value>>, RepoError> {
    let fields = capped::hgetall(conn, key).await?;
    Ok((!fields.is_empty()).then(|| loads_hash(fields)))
}

/// `MULTI HSET … EXPIRE … EXEC`; an empty map deletes the key (mimeiapify's `_hset_with_ttl`).
async fn hset_with_ttl(
    conn: &RedisConn,
    key: &str,
    data: &Map<String, Value>,
    ttl: Option<u32>,
) -> Result<(), RepoError> {
    if data.is_empty() {
        conn.query::<()>(redis::cmd("DEL").arg(key)).await?;
        return Ok(());
    }
    let pairs: Vec<(&String, String)> = data.iter().map(|(k, v)| (k, dumps(v))).collect();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset_multiple(key, &pairs)
        .ignore()
        .expire(key, i64::from(ttl_or_default(ttl)))
        .ignore();
    // HSET and EXPIRE are idempotent: retried once on a dropped connection.
    conn.pipe::<()>(&pipe).await?;
    Ok(())
}

/// Sets `field` to `new` if it still holds `expected` (absent when `None`), and renews the TTL.
const CAS_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '0' then
  if cur then return 0 end
elseif cur ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"#;

async fn append_to_list(
    conn: &RedisConn,
    key: &str,
    field: &str,
    value: &Value,
    ttl: Option<u32>,
) -> Result<(), RepoError> {
    let script = redis::Script::new(CAS_SCRIPT);
    let ttl = ttl_or_default(ttl);
    for attempt in 0..APPEND_RETRIES {
        if attempt > 0 {
            // Writers that collided retry at random times, over a window
            // that widens (up to 32 ms): retrying at once, 20 writers of
            // one list starved one of them for 64 rounds.
            let window = 1u64 << attempt.min(5);
            tokio::time::sleep(std::time::Duration::from_micros(fastrand::u64(
                0..=window * 1000,
            )))
            .await;
        }
        let current = capped::hget(conn, key, field).await?;
        let mut list = match current.as_deref().filter(|r| !r.is_empty()).map(loads) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        list.push(value.clone());
        let new = python_json(&Value::Array(list));
        let swapped: i64 = conn
            .invoke_once(
                script
                    .key(key)
                    .arg(field)
                    .arg(if current.is_some() { "1" } else { "0" })
                    .arg(current.as_deref().unwrap_or(""))
                    .arg(&new)
                    .arg(ttl),
            )
            .await?;
        if swapped == 1 {
            return Ok(());
        }
    }
    Err(RepoError::Unavailable(format!(
        "append to {field:?} gave up after {APPEND_RETRIES} conflicting writes"
    )))
}

/// Every key matching `pattern` (SCAN, never KEYS). Under a reply cap
/// (see [`capped`]) it stops with `invalid-input` once the names gathered
/// pass the cap.
pub(crate) async fn scan(conn: &RedisConn, pattern: &str) -> Result<Vec<String>, RepoError> {
    let cap = capped::limit();
    let mut keys = Vec::new();
    // SCAN may report a key twice (more so on a cluster whose slots move).
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0usize;
    let mut cursor = Some(ScanCursor::START);
    while let Some(at) = cursor {
        if !at.is_start() {
            super::meter::page().await?;
        }
        let (next, batch) = conn.scan_page(pattern, at, SCAN_COUNT).await?;
        for key in batch {
            if seen.insert(key.clone()) {
                bytes += key.len();
                keys.push(key);
            }
        }
        if let Some(cap) = cap
            && bytes > cap
        {
            return Err(capped::over(bytes, cap));
        }
        cursor = next;
    }
    Ok(keys)
}

/// Deletes every key matching `pattern`; returns how many. Keys are
/// deleted page by page as SCAN finds them, so a tenant with millions of
/// keys costs the host one page at a time.
pub(crate) async fn delete_matching(conn: &RedisConn, pattern: &str) -> Result<u32, RepoError> {
    let mut deleted = 0u32;
    let mut cursor = Some(ScanCursor::START);
    while let Some(at) = cursor {
        if !at.is_start() {
            super::meter::page().await?;
        }
        let (next, batch) = conn.scan_page(pattern, at, SCAN_COUNT).await?;
        let n = conn.del(&batch).await?;
        deleted = deleted.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        cursor = next;
    }
    Ok(deleted)
}

async fn find_by_field(
    conn: &RedisConn,
    pattern: &str,
    field: &str,
    value: &Value,
) -> Result<Option<Map<String, Value>>, RepoError> {
    let wanted = dumps(value);
    for key in scan(conn, pattern).await? {
        let current = capped::hget(conn, &key, field).await?;
        if current.as_deref() == Some(wanted.as_str()) {
            return get_hash(conn, &key).await;
        }
    }
    Ok(None)
}
