//! Delivery guarantees: a durable due-time index, atomic claims, leases,
//! retries and dead letters, all in the expiry pool's DB.
//!
//! Redis keyspace notifications are fire-and-forget, fan out to every
//! subscriber, and come when Redis gets round to deleting a key. So the host
//! does not run triggers off them. Instead:
//!
//! - **Index.** `symphony:due` is a sorted set of trigger keys scored by due
//!   time (Redis server time, ms). Our own `set` writes the key and its entry
//!   in one script; keys other clients write are indexed when a host hears
//!   their `expire` keyevent, and by a SCAN at start and after every
//!   listener reconnect.
//! - **Claim.** Each host sweeps the index: a script takes the entries due
//!   within [`LEAD_MS`] whose key is still alive (not cancelled) or already
//!   gone (it expired while no host ran), removes them, deletes the live key
//!   (so Redis never emits `expired` for it), records a lease, and returns
//!   them. Only one host can take an entry, so each firing runs once across
//!   any number of hosts. The host waits for the exact due time, then runs it:
//!   on time, not when Redis's expiry cycle gets there.
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
//! - **Fallback.** An `expired` keyevent for a key no host claimed (indexed
//!   late, or never) is claimed through the index, or, for a key never
//!   indexed, through a `symphony:fired:{key}` mark set with NX, so one host
//!   runs it.
//!
//! The scripts use dynamic keys, so they need a standalone Redis (or all
//! these keys on one node); `docs/guarantees.md` states what is guaranteed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use crate::keys::{TRIGGER_MARKER, parse_trigger};
use crate::pools::{PoolAlias, Pools};
use crate::repo::RepoError;

/// The due-time index.
pub const DUE: &str = "symphony:due";
/// Claimed firings, scored by lease end.
pub const LEASES: &str = "symphony:leases";
/// Attempt counts and errors of retried firings (member → JSON).
pub const META: &str = "symphony:meta";
/// Dead letters (JSON, newest first).
pub const DEAD: &str = "symphony:dead";
/// Prefix of the marks that make the `expired` fallback run a firing once.
pub const FIRED_PREFIX: &str = "symphony:fired:";
/// Prefix of every internal key (never a trigger).
pub const INTERNAL_PREFIX: &str = "symphony:";
/// Entries are claimed this long before they are due, then run at the due
/// time. A cancel in the last `LEAD_MS` before the due time is too late.
pub const LEAD_MS: i64 = 25;
/// How long a fired mark stays.
const FIRED_TTL_MS: i64 = 120_000;
/// Separator between a trigger key and a firing's tag in index members.
const SEP: char = '\0';

/// Current Redis server time in ms, as the scripts read it.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Before a key is (re)indexed: if its entry is past due and unclaimed while
/// the key is alive, the key expired and was armed again since, so that
/// firing is moved to a member of its own rather than overwritten. (An entry
/// not yet due belongs to the same arming, or one the new arming postpones.)
/// "Past due" allows 5 ms: Redis expires a key only once its time is passed,
/// judged at the script's start, while `now` is read a little later, so the
/// same arming can look just due here.
const REINDEX: &str = r"
local function keep_due_firing(key, due, now)
  local s = redis.call('ZSCORE', due, key)
  if s and tonumber(s) < now - 5 then
    redis.call('ZREM', due, key)
    redis.call('ZADD', due, s, key .. '\0d' .. s)
  end
end
";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{NOW}{REINDEX}{body}"))
}

/// SET with PX and index. KEYS: key, due. ARGV: value, ttl_ms, lead.
const ARM: &str = r"
keep_due_firing(KEYS[1], KEYS[2], now)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
return now + tonumber(ARGV[2])
";

/// ARM for many keys in one call. KEYS: due, key... ARGV: value, ttl_ms...
/// (one TTL per key). Returns how many keys were armed.
const ARM_MANY: &str = r"
for i = 2, #KEYS do
  local ttl = tonumber(ARGV[i])
  keep_due_firing(KEYS[i], KEYS[1], now)
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[1], now + ttl, KEYS[i])
end
return #KEYS - 1
";

/// Keys per call of the batch operations (arming, keyevents, finished
/// firings): large enough that the round trip is noise, small enough that
/// Redis is not blocked for long (about a millisecond).
pub const KEYS_PER_CALL: usize = 1000;

/// DEL and unindex. KEYS: key, due. ARGV: lead (unused).
const CANCEL: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return n
";

/// Index keys another client armed. KEYS: due, key... Returns how many were
/// alive with a TTL (and are indexed).
const INDEX: &str = r"
local n = 0
for i = 2, #KEYS do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl >= 0 then
    keep_due_firing(KEYS[i], KEYS[1], now)
    redis.call('ZADD', KEYS[1], now + pttl, KEYS[i])
    n = n + 1
  end
end
return n
";

/// Plain DELs were heard: drop each entry whose key is gone and not yet due.
/// KEYS: due, key... ARGV: lead. Returns how many were dropped.
const UNINDEX: &str = r"
local n = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local s = redis.call('ZSCORE', KEYS[1], KEYS[i])
    if s and tonumber(s) > now + tonumber(ARGV[1]) then
      redis.call('ZREM', KEYS[1], KEYS[i])
      n = n + 1
    end
  end
end
return n
";

/// Claim due entries. KEYS: due, leases, meta. ARGV: lead, lease_ms, limit,
/// fired prefix, fired ttl. Returns {now, next due or -1, member, due, meta, ...}.
/// A live key that is past its entry's due time by more than 5 ms was
/// expired and armed again while no host claimed it: that firing is claimed
/// under a member of its own and the key stays, indexed for its new arming.
const CLAIM: &str = r"
local lead = tonumber(ARGV[1])
local lease_end = now + tonumber(ARGV[2])
local due = redis.call('ZRANGE', KEYS[1], '-inf', now + lead, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]), 'WITHSCORES')
local out = {now, -1}
local unindexed = {}
local leases = {}
local function take(m, key, score, gone)
  leases[#leases + 1] = lease_end
  leases[#leases + 1] = m
  -- Redis expired the key (its `expired` event may still come): mark it, so
  -- the fallback does not run it again. A key deleted here emits no event.
  if gone then redis.call('SET', ARGV[4] .. key, '1', 'PX', ARGV[5]) end
  out[#out + 1] = m
  out[#out + 1] = score
  -- Only tagged members (retries) have meta.
  out[#out + 1] = (m ~= key and redis.call('HGET', KEYS[3], m)) or ''
end
for i = 1, #due, 2 do
  local m = due[i]
  local score = due[i + 1]
  local sep = string.find(m, '\0', 1, true)
  if sep then
    unindexed[#unindexed + 1] = m
    take(m, string.sub(m, 1, sep - 1), score, false)
  else
    local pttl = redis.call('PTTL', m)
    if pttl > lead then
      redis.call('ZADD', KEYS[1], now + pttl, m)
      if tonumber(score) < now - 5 then
        take(m .. '\0d' .. score, m, score, true)
      end
    else
      unindexed[#unindexed + 1] = m
      if pttl ~= -2 then redis.call('DEL', m) end
      take(m, m, score, pttl == -2)
    end
  end
end
if #unindexed > 0 then redis.call('ZREM', KEYS[1], unpack(unindexed)) end
if #leases > 0 then redis.call('ZADD', KEYS[2], unpack(leases)) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nxt > 0 then out[2] = tonumber(nxt[2]) end
return out
";

/// `expired` keyevents: claim each key's firing if no host has.
/// KEYS: due, leases, meta. ARGV: lease_ms, fired prefix, fired ttl, key...
/// Returns {member, due, meta, ...} for the firings claimed.
const CLAIM_EXPIRED: &str = r"
local out = {}
for i = 4, #ARGV do
  local k = ARGV[i]
  local s = redis.call('ZSCORE', KEYS[1], k)
  local take = false
  if s then
    if redis.call('EXISTS', k) == 0 then
      redis.call('ZREM', KEYS[1], k)
      take = true
    end
  elseif redis.call('SET', ARGV[2] .. k, '1', 'NX', 'PX', ARGV[3]) then
    s = tostring(now)
    take = true
  end
  if take then
    redis.call('SET', ARGV[2] .. k, '1', 'PX', ARGV[3])
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), k)
    out[#out + 1] = k
    out[#out + 1] = s
    out[#out + 1] = redis.call('HGET', KEYS[3], k) or ''
  end
end
return out
";

/// Expired leases go back in the index. KEYS: leases, due.
const REAP: &str = r"
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', KEYS[2], now, m)
end
return #gone
";

/// Put a claimed firing back, due at once (shutdown). KEYS: leases, due. ARGV: member.
const RELEASE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  return 1
end
return 0
";

/// Schedule a retry. KEYS: leases, due, meta. ARGV: member, new member, delay_ms, meta json.
const RETRY: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
return now + tonumber(ARGV[3])
";

/// Finish a firing, optionally dead-lettering it. KEYS: leases, meta, dead.
/// ARGV: member, dead-letter json or '', most dead letters kept. Returns how
/// many of the oldest dead letters were trimmed to stay within the cap.
const FINISH: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  local n = redis.call('LPUSH', KEYS[3], ARGV[2])
  local cap = tonumber(ARGV[3])
  if n > cap then
    redis.call('LTRIM', KEYS[3], 0, cap - 1)
    return n - cap
  end
end
return 0
";

/// Extend the leases this host holds. KEYS: leases. ARGV: lease_ms,
/// member... Returns the members that no longer have a lease (reaped: their
/// firing is back in the index, for any host).
const RENEW: &str = r"
local lease_end = now + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], lease_end, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
";

/// Records finished firings in batches: the jobs that end while one batch
/// is written share the next one (a `ZREM` of many members), so a burst
/// costs Redis one command per batch rather than one per job.
#[derive(Clone)]
pub struct Finisher {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    held: Arc<Held>,
}

impl Finisher {
    /// A finisher over `delivery`, its task spawned on `tracker` (it ends,
    /// having written everything, when the last `Finisher` clone is dropped).
    pub fn spawn(delivery: Delivery, tracker: &tokio_util::task::TaskTracker) -> Finisher {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let held = delivery.held.clone();
        tracker.spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, KEYS_PER_CALL).await > 0 {
                // One retry: the connection manager reconnects in between.
                let mut result = delivery.done_many(&batch).await;
                if result.is_err() {
                    result = delivery.done_many(&batch).await;
                }
                if let Err(e) = result {
                    tracing::error!(
                        firings = batch.len(), error = %e,
                        "cannot record finished firings in Redis; their leases will run them again"
                    );
                }
                batch.clear();
            }
        });
        Finisher { tx, held }
    }

    /// The firing `member` is done; it is written with the next batch.
    pub fn done(&self, member: String) {
        self.held.forget(&member);
        // The task lives as long as any sender: sending cannot fail.
        let _ = self.tx.send(member);
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
    /// The trigger key.
    pub key: String,
    /// When it is due (Redis server time, ms).
    pub due_ms: i64,
    /// Attempts made before this one, and when the first was due.
    pub meta: Meta,
    /// Which claim of this host took it (see [`Held`]).
    pub claim: u64,
}

/// The firings this host has claimed and not yet finished, per member: the
/// claim that took it and whether its lease was lost.
///
/// A claimed firing may wait in this host's queues for longer than the
/// lease (a backlog), and a job may run longer than the lease. So the host
/// renews the lease of every firing it holds ([`Delivery::renew`]), from
/// the claim to the finish, and a firing whose lease was lost anyway (Redis
/// unreachable for a whole lease, say) is not started: the reaper has put
/// it back in the index for another host.
#[derive(Debug, Default)]
pub struct Held {
    members: Mutex<HashMap<String, (u64, bool)>>,
    next_claim: AtomicU64,
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, bool)>> {
        // A panic while holding this lock leaves a map that is still valid.
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a claimed member; returns its claim number.
    fn hold(&self, member: &str) -> u64 {
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(member.to_owned(), (claim, false));
        claim
    }

    /// The member is finished, retried, dead or given back.
    pub fn forget(&self, member: &str) {
        self.lock().remove(member);
    }

    /// Every member held, for renewal.
    fn members(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Marks members whose lease was lost; returns how many were still held.
    fn lose(&self, members: &[String]) -> usize {
        let mut held = self.lock();
        let mut n = 0;
        for m in members {
            if let Some(entry) = held.get_mut(m) {
                entry.1 = true;
                n += 1;
            }
        }
        n
    }

    /// Whether `firing` may start: this host still holds it under the same
    /// claim and its lease was not lost. A lost one is forgotten.
    pub fn may_start(&self, firing: &Firing) -> bool {
        let mut held = self.lock();
        match held.get(&firing.member) {
            Some((claim, false)) if *claim == firing.claim => true,
            Some((claim, true)) if *claim == firing.claim => {
                held.remove(&firing.member);
                false
            }
            _ => false,
        }
    }

    /// How many members are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Tenant of the trigger.
    pub tenant: String,
    /// Action.
    pub action: String,
    /// Identifier.
    pub id: String,
    /// The trigger key.
    pub key: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub last_error: String,
    /// When the first attempt was due (server ms).
    pub first_due_ms: i64,
    /// When it was given up (server ms, approximately).
    pub failed_at_ms: i64,
}

struct Scripts {
    arm: redis::Script,
    arm_many: redis::Script,
    cancel: redis::Script,
    index: redis::Script,
    unindex: redis::Script,
    claim: redis::Script,
    claim_expired: redis::Script,
    reap: redis::Script,
    release: redis::Script,
    retry: redis::Script,
    finish: redis::Script,
    renew: redis::Script,
}

/// The scripts, hashed once per process.
static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    arm: script(ARM),
    arm_many: script(ARM_MANY),
    cancel: script(CANCEL),
    index: script(INDEX),
    unindex: script(UNINDEX),
    claim: script(CLAIM),
    claim_expired: script(CLAIM_EXPIRED),
    reap: script(REAP),
    release: script(RELEASE),
    retry: script(RETRY),
    finish: script(FINISH),
    renew: script(RENEW),
});

/// The delivery state in one Redis DB (the expiry pool's).
#[derive(Clone)]
pub struct Delivery {
    pool: PoolAlias,
    conn: ConnectionManager,
    scripts: &'static Scripts,
    held: Arc<Held>,
    dead_cap: usize,
}

/// Dead letters kept by default (`[delivery] max_dead_letters`).
pub const DEFAULT_MAX_DEAD_LETTERS: usize = 10_000;

fn split_member(member: &str) -> &str {
    member.split(SEP).next().unwrap_or(member)
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
        let conn = pools
            .get(pool)
            .map_err(|e| RepoError::Unavailable(e.to_string()))?
            .conn();
        Ok(Self::with_conn(pool, conn))
    }

    /// Delivery over the expiry pool on `tenant`'s connection (for a
    /// tenant's trigger repository).
    ///
    /// # Errors
    /// When the expiry pool is not configured.
    pub fn for_tenant(pools: &Pools, tenant: &str) -> Result<Self, RepoError> {
        let conn = crate::repo::connection(pools, PoolAlias::Expiry, tenant)?;
        Ok(Self::with_conn(PoolAlias::Expiry, conn))
    }

    fn with_conn(pool: PoolAlias, conn: ConnectionManager) -> Self {
        Self {
            pool,
            conn,
            scripts: &SCRIPTS,
            held: Arc::default(),
            dead_cap: DEFAULT_MAX_DEAD_LETTERS,
        }
    }

    /// Keeps at most `cap` dead letters (the oldest are trimmed).
    pub fn with_dead_letter_cap(mut self, cap: usize) -> Self {
        self.dead_cap = cap.max(1);
        self
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
        let mut conn = self.conn();
        let mut lost_total = 0;
        for chunk in members.chunks(KEYS_PER_CALL) {
            let mut call = self.scripts.renew.key(LEASES);
            call.arg(lease_ms);
            for m in chunk {
                call.arg(m);
            }
            let lost: Vec<String> = call.invoke_async(&mut conn).await?;
            lost_total += self.held.lose(&lost);
        }
        Ok((members.len() - lost_total.min(members.len()), lost_total))
    }

    /// The pool this delivery works in.
    pub fn pool(&self) -> PoolAlias {
        self.pool
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Sets `key` to `value` with `ttl_ms` and indexes it, atomically.
    /// Returns the due time (server ms).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn arm(&self, key: &str, value: &str, ttl_ms: u64) -> Result<i64, RepoError> {
        let mut call = self.scripts.arm.key(key);
        call.key(DUE).arg(value).arg(ttl_ms).arg(LEAD_MS);
        // SET and ZADD: running it twice is running it once.
        crate::repo::invoke_idempotent(&self.conn, &call).await
    }

    /// Sets and indexes many keys, [`KEYS_PER_CALL`] per script call, each
    /// `(key, ttl_ms)` with the same `value`. Each call is atomic; a failure
    /// part way leaves the earlier batches armed. Returns how many were armed.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn arm_many(&self, keys: &[(String, u64)], value: &str) -> Result<u64, RepoError> {
        let conn = self.conn();
        let mut armed = 0;
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let mut call = self.scripts.arm_many.key(DUE);
            call.arg(value);
            for (key, ttl_ms) in chunk {
                call.key(key).arg(*ttl_ms);
            }
            let n: u64 = crate::repo::invoke_idempotent(&conn, &call).await?;
            armed += n;
        }
        Ok(armed)
    }

    /// Runs a script of one key and the index (`ARGV[1]` = [`LEAD_MS`]);
    /// true when it returns a positive count.
    async fn on_key(&self, script: &redis::Script, key: &str) -> Result<bool, RepoError> {
        let mut call = script.key(key);
        call.key(DUE).arg(LEAD_MS);
        let n: i64 = crate::repo::invoke_idempotent(&self.conn, &call).await?;
        Ok(n > 0)
    }

    /// Deletes `key` and its index entry; returns whether the key existed.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn cancel(&self, key: &str) -> Result<bool, RepoError> {
        self.on_key(&self.scripts.cancel, key).await
    }

    /// Runs a script over the index and `keys` (`KEYS[2..]`, `ARGV[1]` =
    /// [`LEAD_MS`]) in calls of [`KEYS_PER_CALL`] keys; returns the summed counts.
    async fn on_keys(&self, script: &redis::Script, keys: &[String]) -> Result<u64, RepoError> {
        let mut conn = self.conn();
        let mut total = 0;
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let mut call = script.key(DUE);
            call.arg(LEAD_MS);
            for key in chunk {
                call.key(key);
            }
            let n: u64 = call.invoke_async(&mut conn).await?;
            total += n;
        }
        Ok(total)
    }

    /// Indexes trigger keys another client armed (`expire` keyevents);
    /// returns how many were alive with a TTL.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn index(&self, keys: &[String]) -> Result<u64, RepoError> {
        self.on_keys(&self.scripts.index, keys).await
    }

    /// `del` keyevents: drops the entries of keys deleted before they were
    /// due; returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn unindex(&self, keys: &[String]) -> Result<u64, RepoError> {
        self.on_keys(&self.scripts.unindex, keys).await
    }

    /// Indexes every trigger key with a TTL in the DB (SCAN); returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn index_all(&self) -> Result<u64, RepoError> {
        let mut conn = self.conn();
        let pattern = format!("*:{TRIGGER_MARKER}:*");
        let mut cursor: u64 = 0;
        let mut indexed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| !k.starts_with(INTERNAL_PREFIX) && parse_trigger(k).is_some())
                .collect();
            indexed += self.index(&keys).await?;
            if next == 0 {
                return Ok(indexed);
            }
            cursor = next;
        }
    }

    /// Claims up to `limit` firings due within [`LEAD_MS`], with a lease of
    /// `lease_ms`. Returns the server time, the next due time left in the
    /// index (if any) and the claimed firings.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn claim_due(
        &self,
        limit: usize,
        lease_ms: u64,
    ) -> Result<(i64, Option<i64>, Vec<Firing>), RepoError> {
        let out: Vec<redis::Value> = self
            .scripts
            .claim
            .key(DUE)
            .key(LEASES)
            .key(META)
            .arg(LEAD_MS)
            .arg(lease_ms)
            .arg(limit)
            .arg(FIRED_PREFIX)
            .arg(FIRED_TTL_MS)
            .invoke_async(&mut self.conn())
            .await?;
        let int = |v: Option<&redis::Value>| -> i64 {
            v.and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                .unwrap_or(-1)
        };
        let text = |v: Option<&redis::Value>| -> String {
            v.and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .unwrap_or_default()
        };
        let now = int(out.first());
        let next = Some(int(out.get(1))).filter(|n| *n >= 0);
        let mut firings = Vec::new();
        for chunk in out.get(2..).unwrap_or_default().chunks(3) {
            let member = text(chunk.first());
            let due_ms = text(chunk.get(1)).parse::<f64>().map_or(now, |d| d as i64);
            let meta = meta_of(&text(chunk.get(2)));
            firings.push(Firing {
                pool: self.pool,
                key: split_member(&member).to_owned(),
                claim: self.held.hold(&member),
                member,
                due_ms,
                meta,
            });
        }
        Ok((now, next, firings))
    }

    /// `expired` keyevents for `keys`: claims each firing no host has.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn claim_expired(
        &self,
        keys: &[String],
        lease_ms: u64,
    ) -> Result<Vec<Firing>, RepoError> {
        let mut conn = self.conn();
        let mut firings = Vec::new();
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let mut call = self.scripts.claim_expired.key(DUE);
            call.key(LEASES)
                .key(META)
                .arg(lease_ms)
                .arg(FIRED_PREFIX)
                .arg(FIRED_TTL_MS);
            for key in chunk {
                call.arg(key);
            }
            let out: Vec<String> = call.invoke_async(&mut conn).await?;
            for claimed in out.chunks_exact(3) {
                let [member, due, meta] = claimed else {
                    continue;
                };
                firings.push(Firing {
                    pool: self.pool,
                    key: split_member(member).to_owned(),
                    claim: self.held.hold(member),
                    member: member.clone(),
                    due_ms: due.parse::<f64>().map_or(0, |d| d as i64),
                    meta: meta_of(meta),
                });
            }
        }
        Ok(firings)
    }

    /// Puts firings whose lease ended back in the index; returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn reap(&self) -> Result<u64, RepoError> {
        Ok(self
            .scripts
            .reap
            .key(LEASES)
            .key(DUE)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Gives a claimed firing back, due at once (for another host).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn release(&self, member: &str) -> Result<(), RepoError> {
        self.held.forget(member);
        let _: i64 = self
            .scripts
            .release
            .key(LEASES)
            .key(DUE)
            .arg(member)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// Many firings are done: one `ZREM` for the untagged members, the
    /// finish script for each tagged one (retries, which have meta).
    ///
    /// # Errors
    /// Redis failing.
    pub async fn done_many(&self, members: &[String]) -> Result<(), RepoError> {
        let (tagged, plain): (Vec<&String>, Vec<&String>) =
            members.iter().partition(|m| m.contains(SEP));
        for chunk in plain.chunks(KEYS_PER_CALL) {
            let _: i64 = redis::cmd("ZREM")
                .arg(LEASES)
                .arg(chunk)
                .query_async(&mut self.conn())
                .await?;
        }
        for member in tagged {
            self.finish(member, "").await?;
        }
        Ok(())
    }

    /// Ends a firing (dead-lettering it unless `dead` is empty); returns
    /// how many old dead letters were trimmed.
    async fn finish(&self, member: &str, dead: &str) -> Result<u64, RepoError> {
        self.held.forget(member);
        Ok(self
            .scripts
            .finish
            .key(LEASES)
            .key(META)
            .key(DEAD)
            .arg(member)
            .arg(dead)
            .arg(self.dead_cap)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Schedules another attempt after `delay`; returns its due time.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn retry(
        &self,
        firing: &Firing,
        delay: Duration,
        meta: &Meta,
    ) -> Result<i64, RepoError> {
        self.held.forget(&firing.member);
        let member = format!("{}{SEP}r{}", firing.key, meta.attempts);
        let meta = serde_json::to_string(meta)
            .map_err(|e| RepoError::InvalidInput(format!("cannot encode retry meta: {e}")))?;
        Ok(self
            .scripts
            .retry
            .key(LEASES)
            .key(DUE)
            .key(META)
            .arg(&firing.member)
            .arg(member)
            .arg(crate::millis(delay))
            .arg(meta)
            .invoke_async(&mut self.conn())
            .await?)
    }

    /// Gives up on a firing: it goes to the dead-letter list, which keeps
    /// the newest `max_dead_letters`. Returns how many old letters were
    /// trimmed to make room.
    ///
    /// # Errors
    /// Redis failing, or a letter that cannot be encoded.
    pub async fn dead(&self, firing: &Firing, letter: &DeadLetter) -> Result<u64, RepoError> {
        let json = serde_json::to_string(letter)
            .map_err(|e| RepoError::InvalidInput(format!("cannot encode the dead letter: {e}")))?;
        self.finish(&firing.member, &json).await
    }

    /// Every dead letter, newest first.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, RepoError> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(DEAD)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str(r).ok())
            .collect())
    }

    /// Puts dead letters (all, or those of `key`) back in the index, due at
    /// once with a fresh attempt count; returns how many.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn retry_dead(&self, key: Option<&str>) -> Result<u64, RepoError> {
        let mut conn = self.conn();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(DEAD)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        let mut n = 0;
        for entry in raw {
            let Ok(letter) = serde_json::from_str::<DeadLetter>(&entry) else {
                continue;
            };
            if key.is_some_and(|k| k != letter.key) {
                continue;
            }
            let member = format!("{}{SEP}retried{}", letter.key, fastrand::u32(..));
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("LREM")
                .arg(DEAD)
                .arg(1)
                .arg(&entry)
                .ignore()
                .cmd("ZADD")
                .arg(DUE)
                .arg(0)
                .arg(member)
                .ignore();
            pipe.query_async::<()>(&mut conn).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes every dead letter; returns how many there were.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn purge_dead(&self) -> Result<u64, RepoError> {
        let mut conn = self.conn();
        let n: u64 = redis::cmd("LLEN").arg(DEAD).query_async(&mut conn).await?;
        let _: () = redis::cmd("DEL").arg(DEAD).query_async(&mut conn).await?;
        Ok(n)
    }
}
