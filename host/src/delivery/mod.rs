//! Delivery guarantees: a durable due-time index, atomic claims, leases,
//! retries and dead letters, all in the expiry pool's DB.
//!
//! Redis keyspace notifications are fire-and-forget, fan out to every
//! subscriber, and come when Redis gets round to deleting a key. So the host
//! does not run triggers off them. Instead:
//!
//! - **Index.** Each tenant has a sorted set of its trigger keys scored by
//!   due time (Redis server time, ms), `symphony:due:{tenant}`, and
//!   `symphony:ready` scores each tenant that has entries by (at most) its
//!   earliest due time. Our own `set` writes the key, its entry and the
//!   tenant's ready score in one script; keys other clients write are
//!   indexed when a host hears their `expire` keyevent, and by a SCAN at
//!   start and after every listener reconnect.
//! - **Claim.** Each host sweeps the ready set: a script takes the tenants
//!   with entries due within [`LEAD_MS`] and, from each, an equal share of
//!   the batch: entries whose key is still alive (not cancelled) or already
//!   gone (it expired while no host ran). It removes them, takes the live
//!   keys out of the keyspace by renaming each over `symphony:spent` (so
//!   Redis never emits `expired` for them, and, unlike a `DEL`, no `del`
//!   event every host would have to apply), records a lease, and returns
//!   them. Only one host can take an entry, so each firing runs
//!   once across any number of hosts. A host skips the tenants of which it
//!   holds [`CLAIM_AHEAD`] firings already, so one tenant's flood never
//!   fills its queues while another's trigger is due. The host waits for the
//!   exact due time, then runs it: on time, not when Redis's expiry cycle
//!   gets there.
//! - **Leases.** `symphony:leases` scores each claimed firing by when its
//!   lease ends. A host that dies mid-handler leaves its lease to expire; any
//!   host then puts the firing back in the index and it runs again.
//! - **Retries.** A failed handler (error, trap, timeout, ...) is put back in
//!   the index under a new member `{key}\0r{attempt}`, due after an
//!   exponential backoff with jitter, up to the plugin's `max_attempts`; then
//!   it goes to the dead-letter list `symphony:dead` (JSON: tenant, action, id,
//!   key, attempts, last error, times). `symphony:meta` keeps each pending
//!   retry's attempt count, first due time and last error.
//! - **Cancel.** Our cancel deletes the key and its entry in one script. A
//!   plain `DEL` by another client is heard as a `del` keyevent and removes
//!   the entry (if it is not yet due).
//! - **Fallback.** An `expired` keyevent for a key never indexed is claimed
//!   through a `symphony:fired:{key}` mark set with NX, so one host runs it;
//!   an indexed one is left to the sweep (made due now if its entry said
//!   later), so that expiries too are claimed fairly across tenants.
//!
//! Files: this one holds the keys, [`Delivery`] and the firing types, and
//! the claim, reap and gauges of one space; `layout.rs` where the state
//! lies (one space, or a space per slot of a Redis Cluster: `sharded.rs`,
//! `space.rs`); `scripts.rs` and `lua/` the scripts (one file each, KEYS
//! and ARGV in its header); [`held`](Held) what this host holds; the
//! [`Finisher`]; `settle.rs` a finished job's outcome; `dead.rs` the dead
//! letters; `browse.rs` the dashboard's pages; `pending.rs` a tenant's
//! count; `lease.rs` tokens and doubts.
//!
//! The scripts declare the keys they are given, but the claims and the
//! reaper find tenants' indexes from the ready set and the leases, always
//! in the [`Space`] of a key they were given, so every script stays in one
//! slot. `docs/guarantees.md` states what is guaranteed and
//! `docs/design.md` how the delivery state is sharded.

mod browse;
mod dead;
mod finisher;
mod held;
mod layout;
mod lease;
mod pending;
mod scripts;
mod settle;
mod sharded;
mod space;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

pub use self::browse::{
    Claimed, Cursor, MAX_PAGE, SCAN_BUDGET, SchedulePage, Scheduled, TriggerFilter,
};
pub use self::dead::{DeadFilter, DeadLetter, DeadList};
pub use self::finisher::Finisher;
pub use self::held::Held;
pub use self::lease::member_of;
use self::scripts::{SCRIPTS, Scripts};
pub use self::settle::Settled;
pub use self::space::{BUCKETS, Bucket, Space};
use crate::backend::{Node, RedisConn, ScanCursor};
use crate::error::RepoError;
use crate::keys::{TRIGGER_MARKER, parse_trigger};
use crate::pools::{PoolAlias, Pools};

/// Prefix of each tenant's due-time index (`symphony:due:{tenant}`).
pub const DUE_PREFIX: &str = "symphony:due:";
/// Tenants with entries in their index, scored by (at most) their earliest
/// due time.
pub const READY: &str = "symphony:ready";
/// The one due index of earlier versions; its entries are moved to the
/// tenants' indexes by the reaper.
pub const LEGACY_DUE: &str = "symphony:due";
/// Claimed firings, scored by lease end.
pub const LEASES: &str = "symphony:leases";
/// Attempt counts and errors of retried firings (member → JSON).
pub const META: &str = "symphony:meta";
/// Dead letters of earlier versions (JSON, newest first); each tenant's
/// are now in `symphony:dead:{tenant}` ([`Space::dead_of`]).
pub const DEAD: &str = "symphony:dead";
/// Prefix of the marks that make the `expired` fallback run a firing once.
pub const FIRED_PREFIX: &str = "symphony:fired:";
/// Prefix of every internal key (never a trigger).
pub const INTERNAL_PREFIX: &str = "symphony:";
/// Entries are claimed this long before they are due, then run at the due
/// time. A cancel in the last `LEAD_MS` before the due time is too late.
pub const LEAD_MS: i64 = 25;
/// How long an arming waits for `[redis] wait_replicas` replicas.
pub const WAIT_MS: u64 = 1000;
/// How long a fired mark stays.
const FIRED_TTL_MS: i64 = 120_000;
/// Separator between a trigger key and a firing's tag in index members.
const SEP: char = '\0';

/// The due index of `tenant`.
pub fn due_key(tenant: &str) -> String {
    format!("{DUE_PREFIX}{tenant}")
}

/// The tenant of an index member (a trigger key, maybe tagged): what comes
/// before its first `:`.
fn tenant_of(member: &str) -> &str {
    member.split(':').next().unwrap_or(member)
}

/// A host claims no more of a tenant's firings while it holds this many
/// (claimed, not finished): enough to keep every slot busy between two
/// sweeps, few enough that another tenant's firings are never queued behind
/// them for long.
pub const CLAIM_AHEAD: usize = 1000;

/// Keys per call of the batch operations (arming, keyevents, finished
/// firings): large enough that the round trip is noise, small enough that
/// Redis is not blocked for long (about a millisecond).
pub const KEYS_PER_CALL: usize = 1000;

/// Sizes of the delivery state (see [`Delivery::gauges`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Entries of the due indexes: triggers waiting for their due time.
    pub pending: u64,
    /// Claimed firings not finished.
    pub leases: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Firings with retry metadata: failed at least once, waiting for (or
    /// running) their next attempt.
    pub retries: u64,
}

impl std::ops::AddAssign for Gauges {
    fn add_assign(&mut self, o: Gauges) {
        self.pending += o.pending;
        self.leases += o.leases;
        self.dead_letters += o.dead_letters;
        self.retries += o.retries;
    }
}

/// What `symphony:meta` keeps for a retried firing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    /// Attempts made so far.
    pub attempts: u32,
    /// When the first attempt was due (server ms).
    pub first_due_ms: i64,
    /// The last attempt's error.
    pub last_error: String,
}

/// A claimed firing, ready to run.
#[derive(Debug, Clone)]
pub struct Firing {
    /// The pool whose DB holds the key and the index.
    pub pool: PoolAlias,
    /// The index member (the key, or the key and a tag for retries).
    pub member: String,
    /// The lease this claim holds: the member and a claim token unique to
    /// the claim (see `lease.rs`). Finishing, retrying or giving back a
    /// firing names its lease, never only its member or key.
    pub lease: String,
    /// The trigger key.
    pub key: String,
    /// When it is due (Redis server time, ms); -1 when unknown (a key no
    /// index held, claimed from its `expired` keyevent).
    pub due_ms: i64,
    /// Attempts made before this one, and when the first was due.
    pub meta: Meta,
}

impl Firing {
    /// How late it starts if it starts now, in µs; `None` when its due
    /// time is unknown.
    pub fn late_us(&self) -> Option<i64> {
        // Due times are whole milliseconds (a key's TTL is); now is read
        // to the microsecond.
        (self.due_ms >= 0).then(|| crate::unix_us() - self.due_ms.saturating_mul(1000))
    }
}

/// The delivery state in one Redis DB (the expiry pool's).
#[derive(Clone)]
pub struct Delivery {
    pool: PoolAlias,
    conn: RedisConn,
    scripts: &'static Scripts,
    held: Arc<Held>,
    dead_cap: usize,
    /// A tenant's dead-letter bytes, when bounded (its memory budget).
    dead_bytes: Option<DeadLetterBytes>,
    /// Most entries a tenant's index may hold when arming (0: no cap).
    max_pending: u32,
    /// One space, or a space per slot of a Redis Cluster.
    layout: layout::Layout,
    /// Replicas that must acknowledge an arming (0: none).
    wait_replicas: u32,
    /// Claim calls whose reply was lost (see `lease.rs`).
    doubts: Arc<lease::Doubts>,
}

/// The bytes a tenant's dead letters may take, if bounded.
pub type DeadLetterBytes = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// The most a dead letter takes: its error (capped at 16 KiB), its key,
/// id and fields.
pub const LETTER_MAX_BYTES: u64 = 20 * 1024;

/// The most of a retry's error kept in Redis for a tenant with a memory
/// budget (others keep 16 KiB).
pub const BUDGETED_ERROR_BYTES: usize = 1024;

/// Dead letters kept by default (`[delivery] max_dead_letters`).
pub const DEFAULT_MAX_DEAD_LETTERS: usize = 10_000;

fn split_member(member: &str) -> &str {
    member.split(SEP).next().unwrap_or(member)
}

/// A script's number (an integer, or a score as text), or -1.
fn reply_int(v: Option<&redis::Value>) -> i64 {
    v.and_then(|v| match v {
        redis::Value::Int(n) => Some(*n),
        other => redis::from_redis_value::<String>(other.clone())
            .ok()?
            .parse::<f64>()
            .ok()
            .map(|f| f as i64),
    })
    .unwrap_or(-1)
}

/// A script's text, or empty.
fn reply_text(v: Option<&redis::Value>) -> String {
    v.and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
        .unwrap_or_default()
}

fn meta_of(raw: &str) -> Meta {
    serde_json::from_str(raw).unwrap_or_default()
}

impl Delivery {
    /// Delivery over the expiry pool.
    ///
    /// # Errors
    /// When the expiry pool is not configured.
    pub fn new(pools: &Pools) -> Result<Self, RepoError> {
        Self::for_pool(pools, PoolAlias::Expiry)
    }

    /// Delivery over the DB of `pool` (one per listened pool).
    ///
    /// # Errors
    /// When the pool is not configured.
    pub fn for_pool(pools: &Pools, pool: PoolAlias) -> Result<Self, RepoError> {
        let mut delivery = Self::with_conn(pool, pools.get(pool)?.conn());
        delivery.wait_replicas = pools.wait_replicas();
        Ok(delivery)
    }

    /// Delivery over the expiry pool on `tenant`'s connection (for a
    /// tenant's trigger repository).
    ///
    /// # Errors
    /// When the expiry pool is not configured.
    pub fn for_tenant(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        let conn = pools.conn_for(PoolAlias::Expiry, tenant)?;
        let mut delivery = Self::with_conn(PoolAlias::Expiry, conn);
        delivery.wait_replicas = pools.wait_replicas();
        Ok(delivery)
    }

    fn with_conn(pool: PoolAlias, conn: RedisConn) -> Self {
        Self {
            pool,
            scripts: &SCRIPTS,
            held: Arc::default(),
            dead_cap: DEFAULT_MAX_DEAD_LETTERS,
            dead_bytes: None,
            max_pending: 0,
            layout: layout::Layout::for_conn(&conn),
            wait_replicas: 0,
            doubts: Arc::default(),
            conn,
        }
    }

    /// Whether arming counts a tenant's index against the pending cap
    /// itself (one space holds it). Where not (a Redis Cluster's slots),
    /// the caller counts: `quota::Quotas::admit_pending`.
    pub fn enforces_pending_cap(&self) -> bool {
        self.layout.one_space()
    }

    /// The space that holds the delivery state of trigger key `key` (or an
    /// index member: the key before its tag).
    pub fn space_of(&self, key: &str) -> Space {
        self.layout.space_of(split_member(key))
    }

    /// The due index of an index member.
    fn index_of(&self, member: &str) -> String {
        self.space_of(member).due(tenant_of(member))
    }

    /// `items` grouped by the space of their key (one group standalone),
    /// each group cut into calls of at most [`KEYS_PER_CALL`].
    fn batches<T: Clone>(
        &self,
        items: impl IntoIterator<Item = T>,
        key: impl Fn(&T) -> &str,
    ) -> Vec<(Space, Vec<T>)> {
        let mut groups: std::collections::BTreeMap<Space, Vec<T>> = Default::default();
        for item in items {
            groups
                .entry(self.space_of(key(&item)))
                .or_default()
                .push(item);
        }
        groups
            .into_iter()
            .flat_map(|(space, items)| {
                items
                    .chunks(KEYS_PER_CALL)
                    .map(|chunk| (space.clone(), chunk.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Refuses to arm a new trigger while its tenant has `cap` pending in
    /// its index (`[tenants] max_pending_triggers`); `None`: no cap.
    ///
    /// On a Redis Cluster a tenant's index is split over the slots, so no
    /// script can count it: the host does (`pending_of`, and
    /// `quota::Quotas::admit_pending` for plugins' triggers).
    pub fn with_pending_cap(mut self, cap: Option<std::num::NonZeroU32>) -> Self {
        self.max_pending = match self.layout.one_space() {
            true => cap.map_or(0, std::num::NonZeroU32::get),
            false => 0,
        };
        self
    }

    fn over_pending(&self, key: &str) -> RepoError {
        RepoError::pending_quota(tenant_of(key), self.max_pending)
    }

    /// Keeps at most `cap` dead letters (the oldest are trimmed).
    pub fn with_dead_letter_cap(mut self, cap: usize) -> Self {
        self.dead_cap = cap.max(1);
        self
    }

    /// Keeps fewer dead letters for tenants `bytes_of` gives a number of
    /// bytes (a memory budget): as many as fit in it at
    /// [`LETTER_MAX_BYTES`] each, at least one.
    pub fn with_dead_letter_bytes(mut self, bytes_of: DeadLetterBytes) -> Self {
        self.dead_bytes = Some(bytes_of);
        self
    }

    /// The dead letters kept for `tenant`.
    fn dead_cap_of(&self, tenant: &str) -> usize {
        let by_bytes = self
            .dead_bytes
            .as_ref()
            .and_then(|f| f(tenant))
            .map(|b| usize::try_from(b / LETTER_MAX_BYTES).unwrap_or(usize::MAX));
        by_bytes.map_or(self.dead_cap, |n| n.clamp(1, self.dead_cap))
    }

    /// The retry metadata kept in Redis for a firing of `tenant`: for a
    /// tenant with a memory budget, the error is cut to
    /// [`BUDGETED_ERROR_BYTES`] (its failures must not fill Redis beside
    /// its budget, and the budget counts this metadata).
    fn kept_meta(&self, tenant: &str, meta: &Meta) -> Meta {
        let budgeted = self.dead_bytes.as_ref().and_then(|f| f(tenant)).is_some();
        let mut meta = meta.clone();
        if budgeted {
            meta.last_error = crate::text::cap_at(meta.last_error, BUDGETED_ERROR_BYTES);
        }
        meta
    }

    /// The firings this host holds in this pool.
    pub fn held(&self) -> &Held {
        &self.held
    }

    /// Extends the lease of every firing this host holds by `lease_ms`, in
    /// calls of [`KEYS_PER_CALL`] members; returns how many were renewed
    /// and how many had lost their lease (those will not be started here).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn renew(&self, lease_ms: u64) -> Result<(usize, usize), RepoError> {
        let members = self.held.members();
        let total = members.len();
        let mut lost_total = 0;
        let calls: Vec<_> = self
            .batches(members, |m| m.as_str())
            .into_iter()
            .map(|(space, chunk)| {
                let mut call = self.scripts.renew.key(space.leases());
                call.arg(lease_ms).arg(chunk);
                call
            })
            .collect();
        let lost = futures::future::join_all(
            calls
                .iter()
                .map(|call| self.conn.invoke_once::<Vec<String>>(call)),
        )
        .await;
        let mut failed = None;
        for lost in lost {
            match lost {
                Ok(lost) => lost_total += self.held.lose(&lost),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        Ok((total - lost_total.min(total), lost_total))
    }

    /// The pool this delivery works in.
    pub fn pool(&self) -> PoolAlias {
        self.pool
    }

    /// What the delivery state of this pool holds now, for every host:
    /// a few commands, and one `ZCARD` per tenant with pending triggers
    /// (pipelined, [`KEYS_PER_CALL`] a round trip).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn gauges(&self) -> Result<Gauges, RepoError> {
        match self.layout {
            layout::Layout::Single => self.single_gauges().await,
            layout::Layout::Sharded(_) => self.sharded_gauges().await,
        }
    }

    /// [`Self::gauges`] in one space.
    async fn single_gauges(&self) -> Result<Gauges, RepoError> {
        let mut head = redis::pipe();
        head.zrange(READY, 0, -1)
            .zcard(LEGACY_DUE)
            .zcard(LEASES)
            .hlen(META);
        let (tenants, legacy, leases, retries): (Vec<String>, u64, u64, u64) =
            self.conn.pipe(&head).await?;
        let dead_letters = self.dead_count().await?;
        let mut pending = legacy;
        for chunk in tenants.chunks(KEYS_PER_CALL) {
            let mut pipe = redis::pipe();
            for tenant in chunk {
                pipe.zcard(due_key(tenant));
            }
            let counts: Vec<u64> = self.conn.pipe(&pipe).await?;
            pending += counts.iter().sum::<u64>();
        }
        Ok(Gauges {
            pending,
            leases,
            dead_letters,
            retries,
        })
    }

    /// Sets `key` to `value` with `ttl_ms` and indexes it, atomically.
    /// Returns the due time (server ms).
    ///
    /// # Errors
    /// Redis failing.
    /// [`RepoError::Denied`] when the tenant is at its pending-trigger quota
    /// ([`with_pending_cap`](Self::with_pending_cap)).
    pub async fn arm(&self, key: &str, value: &str, ttl_ms: u64) -> Result<i64, RepoError> {
        let space = self.space_of(key);
        let mut call = self.scripts.arm.key(key);
        call.key(space.due(tenant_of(key)))
            .key(space.ready())
            .arg(value)
            .arg(ttl_ms)
            .arg(self.max_pending);
        // SET and ZADD: running it twice is running it once.
        let due: i64 = self.conn.invoke(&call).await?;
        if due < 0 {
            return Err(self.over_pending(key));
        }
        self.hint_work(&space, [(tenant_of(key), due)]).await;
        self.replicated(key).await?;
        Ok(due)
    }

    /// Sets and indexes many keys, [`KEYS_PER_CALL`] per script call, each
    /// `(key, ttl_ms)` with the same `value`. Each call is atomic; a failure
    /// part way leaves the earlier batches armed. Returns how many were armed.
    ///
    /// # Errors
    /// Redis failing; [`RepoError::Denied`] when a batch would take its
    /// tenant past the pending-trigger quota (that batch sets nothing).
    pub async fn arm_many(&self, keys: &[(String, u64)], value: &str) -> Result<u64, RepoError> {
        let mut armed = 0;
        let calls = self.batches(keys, |(key, _)| key.as_str());
        // Calls to different slots go together (one per slot on a cluster).
        let results = futures::future::join_all(calls.iter().map(|(space, chunk)| async move {
            let mut call = self.scripts.arm_many.key(space.ready());
            call.arg(value).arg(self.max_pending);
            for (key, ttl_ms) in chunk {
                call.key(key).key(space.due(tenant_of(key))).arg(*ttl_ms);
            }
            let (n, first): (i64, i64) = self.conn.invoke(&call).await?;
            if n < 0 {
                let key = chunk.first().map_or("", |(key, _)| key.as_str());
                return Err(self.over_pending(key));
            }
            self.hint_work(space, chunk.iter().map(|(key, _)| (tenant_of(key), first)))
                .await;
            if let Some((key, _)) = chunk.first() {
                self.replicated(key).await?;
            }
            Ok::<u64, RepoError>(n.unsigned_abs())
        }))
        .await;
        for n in results {
            armed += n?;
        }
        Ok(armed)
    }

    /// With `[redis] wait_replicas`, waits (up to [`WAIT_MS`]) until that
    /// many replicas of `key`'s node have every write made so far on this
    /// connection, the arming included.
    async fn replicated(&self, key: &str) -> Result<(), RepoError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        let acked = self
            .conn
            .wait_replicas(key, self.wait_replicas, WAIT_MS)
            .await?;
        if acked < u64::from(self.wait_replicas) {
            return Err(RepoError::Unavailable(format!(
                "the trigger {key:?} is armed on its primary, but only {acked} of {} replicas \
                 had it within {WAIT_MS} ms ([redis] wait_replicas); arm it again to be sure",
                self.wait_replicas
            )));
        }
        Ok(())
    }

    /// Deletes `key` and its index entry; returns whether the key existed.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn cancel(&self, key: &str) -> Result<bool, RepoError> {
        let mut call = self.scripts.cancel.key(key);
        call.key(self.index_of(key));
        let n: i64 = self.conn.invoke(&call).await?;
        Ok(n > 0)
    }

    /// Runs a script over a space's ready set and `keys` of that space,
    /// each followed by its index (`KEYS[2..]`, `ARGV[1]` = [`LEAD_MS`]), in
    /// calls of [`KEYS_PER_CALL`] keys, the spaces together; returns each
    /// call's answer with its space and keys.
    async fn on_keys<'k, T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &'k [String],
    ) -> Result<Vec<(Space, Vec<&'k String>, T)>, RepoError> {
        let calls = self.batches(keys, |k| k.as_str());
        let results =
            futures::future::join_all(calls.into_iter().map(|(space, chunk)| async move {
                let mut call = script.key(space.ready());
                call.arg(LEAD_MS);
                for key in &chunk {
                    call.key(*key).key(space.due(tenant_of(key)));
                }
                let answer: T = self.conn.invoke_once(&call).await?;
                Ok::<_, RepoError>((space, chunk, answer))
            }))
            .await;
        results.into_iter().collect()
    }

    /// Indexes trigger keys another client armed (`expire` keyevents);
    /// returns how many were alive with a TTL.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn index(&self, keys: &[String]) -> Result<u64, RepoError> {
        let mut total = 0;
        for (space, keys, (n, first)) in self
            .on_keys::<(u64, i64)>(&self.scripts.index, keys)
            .await?
        {
            total += n;
            if n > 0 {
                self.hint_work(&space, keys.iter().map(|k| (tenant_of(k), first)))
                    .await;
            }
        }
        Ok(total)
    }

    /// `del` keyevents: drops the entries of keys deleted before they were
    /// due; returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn unindex(&self, keys: &[String]) -> Result<u64, RepoError> {
        let answers = self.on_keys::<u64>(&self.scripts.unindex, keys).await?;
        Ok(answers.iter().map(|(_, _, n)| n).sum())
    }

    /// Indexes every trigger key with a TTL in the DB (SCAN); returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn index_all(&self) -> Result<u64, RepoError> {
        self.index_walk(ScanCursor::START).await
    }

    /// Indexes the trigger keys with a TTL that `node` holds (a cluster
    /// node whose listener (re)subscribed, or that was promoted; a replica
    /// holds none of its own: nothing is done), or, with no node, every
    /// key ([`index_all`](Self::index_all)). Returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn index_present(&self, node: Option<&Node>) -> Result<u64, RepoError> {
        let Some(node) = node else {
            return self.index_all().await;
        };
        let primary = self
            .conn
            .primaries()
            .await?
            .is_some_and(|t| t.primaries.contains(node));
        if !primary {
            return Ok(0);
        }
        self.index_walk(ScanCursor::node(node.clone())).await
    }

    /// Indexes the trigger keys a SCAN walk from `start` finds. A key that
    /// is not one (not UTF-8, or breaking the name rules) is skipped and
    /// counted, never the end of the walk.
    async fn index_walk(&self, start: ScanCursor) -> Result<u64, RepoError> {
        let pattern = format!("*:{TRIGGER_MARKER}:*");
        let mut cursor = Some(start);
        let (mut indexed, mut skipped) = (0, 0);
        while let Some(at) = cursor {
            let (next, keys, not_utf8) = self
                .conn
                .scan_page_counted(&pattern, at, KEYS_PER_CALL)
                .await?;
            skipped += not_utf8;
            let (keys, others): (Vec<String>, Vec<String>) = keys
                .into_iter()
                .filter(|k| !k.starts_with(INTERNAL_PREFIX))
                .partition(|k| parse_trigger(k).is_some());
            skipped += others.len();
            indexed += self.index(&keys).await?;
            cursor = next;
        }
        if skipped > 0 {
            warn!(
                event = "keys_skipped", pool = %self.pool, skipped,
                "the scan for trigger keys skipped keys that are not triggers this host runs \
                 (not UTF-8, or breaking the tenant, action or id rules)"
            );
        }
        Ok(indexed)
    }

    /// Claims up to `limit` firings due within [`LEAD_MS`], with a lease of
    /// `lease_ms`, shared across the tenants that have some due, except
    /// those in `skip`. Returns the server time, the next due time of a
    /// tenant not skipped (if any) and the claimed firings.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn claim_due(
        &self,
        limit: usize,
        lease_ms: u64,
        skip: &[String],
    ) -> Result<(i64, Option<i64>, Vec<Firing>), RepoError> {
        match self.layout {
            layout::Layout::Single => self.claim_single(limit, lease_ms, skip).await,
            layout::Layout::Sharded(_) => self.claim_sharded(limit, lease_ms, skip).await,
        }
    }

    /// [`Self::claim_due`] in one space.
    async fn claim_single(
        &self,
        limit: usize,
        lease_ms: u64,
        skip: &[String],
    ) -> Result<(i64, Option<i64>, Vec<Firing>), RepoError> {
        let space = Space::standalone();
        let token = lease::next_token();
        let mut call = self.scripts.claim.key(space.ready());
        call.key(space.leases())
            .key(space.meta())
            .arg(LEAD_MS)
            .arg(lease_ms)
            .arg(limit)
            .arg(space.fired())
            .arg(FIRED_TTL_MS)
            .arg(&token)
            .arg(skip);
        let out: Vec<redis::Value> = match self.conn.invoke_once(&call).await {
            Ok(out) => out,
            Err(e) => {
                // It may have run unanswered: its leases are looked for.
                self.doubts.add(token, vec![space]);
                return Err(e.into());
            }
        };
        let now = reply_int(out.first());
        let next = Some(reply_int(out.get(1))).filter(|n| *n >= 0);
        let firings = self.firings(out.get(2..).unwrap_or_default(), now);
        Ok((now, next, firings))
    }

    /// The firings a claim returned (lease, due, meta, ...), now held.
    fn firings(&self, claimed: &[redis::Value], now: i64) -> Vec<Firing> {
        let text = reply_text;
        claimed
            .chunks(3)
            .map(|chunk| {
                let due_ms = text(chunk.get(1)).parse::<f64>().map_or(now, |d| d as i64);
                self.firing(text(chunk.first()), due_ms, &text(chunk.get(2)))
            })
            .collect()
    }

    /// A firing claimed under `lease`, now held.
    fn firing(&self, lease: String, due_ms: i64, meta: &str) -> Firing {
        self.held.hold(&lease);
        let member = member_of(&lease).to_owned();
        Firing {
            pool: self.pool,
            key: split_member(&member).to_owned(),
            member,
            lease,
            due_ms,
            meta: meta_of(meta),
        }
    }

    /// `expired` keyevents for `keys`: claims each firing no host has.
    /// Returns the firings claimed, and the error of a call that failed (the
    /// others still run, and what they claimed is returned, held by this
    /// host: calling again with the same keys claims nothing twice).
    pub async fn claim_expired(
        &self,
        keys: &[String],
        lease_ms: u64,
    ) -> (Vec<Firing>, Option<RepoError>) {
        let mut firings = Vec::new();
        let mut failed = None;
        for (space, chunk) in self.batches(keys, |k| k.as_str()) {
            let token = lease::next_token();
            let mut call = self.scripts.claim_expired.key(space.ready());
            call.key(space.leases())
                .key(space.meta())
                .arg(lease_ms)
                .arg(space.fired())
                .arg(FIRED_TTL_MS)
                .arg(&token);
            for key in &chunk {
                call.key(*key).key(space.due(tenant_of(key)));
            }
            let out: Vec<String> = match self.conn.invoke_once(&call).await {
                Ok(out) => out,
                Err(e) => {
                    // It may have run unanswered: have its leases looked at.
                    self.doubts.add(token, vec![space.clone()]);
                    self.hint_lease(&space, 0).await;
                    failed = Some(e.into());
                    continue;
                }
            };
            let before = firings.len();
            for claimed in out.chunks_exact(3) {
                let [lease, due, meta] = claimed else {
                    continue;
                };
                let due_ms = due.parse::<f64>().map_or(-1, |d| d as i64);
                firings.push(self.firing(lease.clone(), due_ms, meta));
            }
            // An indexed key may have been made due now: its tenant's
            // hint says so; and the claimed ones hold leases here.
            self.hint_work(&space, chunk.iter().map(|k| (tenant_of(k), 0)))
                .await;
            if firings.len() > before {
                self.hint_lease(&space, 0).await;
            }
        }
        (firings, failed)
    }

    /// Puts firings whose lease ended back in the index, and moves up to
    /// a thousand entries of an earlier version's single index
    /// ([`LEGACY_DUE`]) to their tenants' indexes; returns how many leases
    /// had ended.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn reap(&self) -> Result<u64, RepoError> {
        match self.layout {
            layout::Layout::Single => self.reap_single().await,
            layout::Layout::Sharded(_) => self.reap_sharded().await,
        }
    }

    /// [`Self::reap`] in one space.
    async fn reap_single(&self) -> Result<u64, RepoError> {
        let space = Space::standalone();
        let out: Vec<redis::Value> = self
            .conn
            .invoke_once(
                self.scripts
                    .reap
                    .key(space.leases())
                    .key(space.legacy_due())
                    .key(space.ready()),
            )
            .await?;
        Ok(out
            .first()
            .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
            .unwrap_or(0))
    }

    /// Gives a claimed firing back by its lease, due at once (for another
    /// host).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn release(&self, lease: &str) -> Result<(), RepoError> {
        self.held.forget(lease);
        let member = member_of(lease);
        let space = self.space_of(member);
        let mut call = self.scripts.release.key(space.leases());
        call.key(space.due(tenant_of(member)))
            .key(space.ready())
            .arg(lease);
        // Only a held lease is moved back: running it twice is running it once.
        let _: i64 = self.conn.invoke(&call).await?;
        self.hint_work(&space, [(tenant_of(member), 0)]).await;
        Ok(())
    }

    /// Gives claimed firings back by their leases, due at once (at
    /// shutdown, or when they cannot be handed over); returns how many went
    /// back. A failure is logged, not returned: such a firing's lease ends,
    /// and the reaper puts it back then.
    pub async fn release_all<I>(&self, leases: I) -> usize
    where
        I: IntoIterator<Item = String>,
        I::IntoIter: Send,
    {
        let (mut released, mut failed) = (0, 0);
        let mut last_error = None;
        for lease in leases {
            match self.release(&lease).await {
                Ok(()) => released += 1,
                Err(e) => {
                    failed += 1;
                    last_error = Some(e);
                }
            }
        }
        if let Some(error) = last_error {
            warn!(
                event = "release_failed",
                pool = %self.pool, failed, %error,
                "cannot give back claimed firings; they run again when their leases end"
            );
        }
        released
    }

    /// Many firings are done, named by their leases: one `ZREM` for those
    /// of untagged members, the finish script for each tagged one (retries,
    /// which have meta). Both are idempotent, and retried once on a
    /// dropped connection.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn done_many(&self, leases: &[String]) -> Result<(), RepoError> {
        let (tagged, plain): (Vec<&String>, Vec<&String>) =
            leases.iter().partition(|l| member_of(l).contains(SEP));
        let mut pipe = redis::pipe();
        for (space, chunk) in self.batches(plain, |m| m.as_str()) {
            pipe.cmd("ZREM").arg(space.leases()).arg(chunk).ignore();
        }
        if !pipe.is_empty() {
            let () = self.conn.pipe(&pipe).await?;
        }
        for lease in tagged {
            self.finish(lease, "").await?;
        }
        Ok(())
    }

    /// Ends a firing by its lease (dead-lettering it unless `dead` is
    /// empty); returns how many old dead letters were trimmed, or `None`
    /// when the lease was no longer held. Nothing is
    /// written when the lease is no longer held: the reaper put the firing
    /// back, and it runs again. Without a letter it is idempotent, and
    /// retried once on a dropped connection; a letter is pushed at most once.
    async fn finish(&self, lease: &str, dead: &str) -> Result<Option<u64>, RepoError> {
        self.held.forget(lease);
        let space = self.space_of(member_of(lease));
        let tenant = tenant_of(lease);
        let mut call = self.scripts.finish.key(space.leases());
        call.key(space.meta())
            .key(space.dead_of(tenant))
            .key(space.dead_tenants())
            .arg(lease)
            .arg(dead)
            .arg(self.dead_cap_of(tenant))
            .arg(tenant);
        if dead.is_empty() {
            let trimmed: i64 = self.conn.invoke(&call).await?;
            return Ok(u64::try_from(trimmed).ok());
        }
        let trimmed: i64 = self.conn.invoke_once(&call).await?;
        self.hint_dead(&space).await;
        Ok(u64::try_from(trimmed).ok())
    }

    /// Schedules another attempt after `delay`; returns its due time, or
    /// `None` when the firing's lease was no longer held (the reaper put it
    /// back, and it runs again as it is).
    ///
    /// The retry's member carries the attempt and the claim token, so two
    /// firings of one key (armed again while the first ran) that both fail
    /// keep two retries, never one.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn retry(
        &self,
        firing: &Firing,
        delay: Duration,
        meta: &Meta,
    ) -> Result<Option<i64>, RepoError> {
        self.held.forget(&firing.lease);
        let token = firing
            .lease
            .rsplit_once(lease::TOKEN_SEP)
            .map_or("", |(_, t)| t);
        let member = format!("{}{SEP}r{}.{token}", firing.key, meta.attempts);
        let meta = self.kept_meta(tenant_of(&member), meta);
        let meta = serde_json::to_string(&meta)
            .map_err(|e| RepoError::InvalidInput(format!("cannot encode retry meta: {e}")))?;
        let space = self.space_of(&member);
        let at: i64 = self
            .conn
            .invoke_once(
                self.scripts
                    .retry
                    .key(space.leases())
                    .key(space.due(tenant_of(&member)))
                    .key(space.meta())
                    .key(space.ready())
                    .arg(&firing.lease)
                    .arg(&member)
                    .arg(crate::millis(delay))
                    .arg(meta),
            )
            .await?;
        if at < 0 {
            return Ok(None);
        }
        self.hint_work(&space, [(tenant_of(&member), at)]).await;
        Ok(Some(at))
    }
}
