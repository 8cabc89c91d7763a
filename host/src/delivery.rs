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
//!   gone (it expired while no host ran). It removes them, deletes the live
//!   keys (so Redis never emits `expired` for them), records a lease, and
//!   returns them. Only one host can take an entry, so each firing runs
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
//! The scripts declare the keys they are given, but the claim and the
//! reaper find tenants' indexes from the ready set and the leases, so they
//! need a standalone Redis (or all these keys on one node);
//! `docs/guarantees.md` states what is guaranteed and `docs/design.md` how
//! the index is to be sharded for Redis Cluster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use crate::backend::RedisConn;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::keys::{TRIGGER_MARKER, parse_trigger};
use crate::pools::{PoolAlias, Pools};
use crate::repo::RepoError;

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

/// The due index of `tenant`.
pub fn due_key(tenant: &str) -> String {
    format!("{DUE_PREFIX}{tenant}")
}

/// The tenant of an index member (a trigger key, maybe tagged): what comes
/// before its first `:`.
fn tenant_of(member: &str) -> &str {
    member.split(':').next().unwrap_or(member)
}

/// The due index an index member belongs in.
fn index_of(member: &str) -> String {
    due_key(tenant_of(member))
}

/// What every script starts with: the server time in ms, as `now`, and the
/// helpers below.
///
/// `tenant_of` and `index_of` are [`tenant_of`] and [`index_of`] in Lua; the
/// host declares the index of every key it passes, and only the reaper and
/// the claim, which find tenants in Redis, name indexes themselves.
///
/// `ready(set, t, score)` lowers tenant `t`'s score in `set` ([`READY`]) to `score` (or
/// adds it). A tenant's score there is never above its earliest entry: it
/// may be below (a cancel or a later re-arming does not raise it), and the
/// next claim that looks at the tenant sets it right.
///
/// `keep_due_firing`, before a key is (re)indexed: if its entry is past due
/// and unclaimed while the key is alive, the key expired and was armed again
/// since, so that firing is moved to a member of its own rather than
/// overwritten. (An entry not yet due belongs to the same arming, or one the
/// new arming postpones.) "Past due" allows 5 ms: Redis expires a key only
/// once its time is passed, judged at the script's start, while `now` is
/// read a little later, so the same arming can look just due here.
fn prelude() -> String {
    format!(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function tenant_of(m)
  local c = string.find(m, ':', 1, true)
  if c then return string.sub(m, 1, c - 1) end
  return m
end
local function index_of(m)
  return '{DUE_PREFIX}' .. tenant_of(m)
end
local function ready(set, tenant, score)
  redis.call('ZADD', set, 'LT', score, tenant)
end
local function keep_due_firing(key, due, now)
  local s = redis.call('ZSCORE', due, key)
  if s and tonumber(s) < now - 5 then
    redis.call('ZREM', due, key)
    redis.call('ZADD', due, s, key .. '\0d' .. s)
  end
end
"
    )
}

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}{body}", prelude()))
}

/// SET with PX and index, unless the tenant's index holds `max_pending`
/// entries already (0: no cap) and this key is not one of them.
/// KEYS: key, its index, ready. ARGV: value, ttl_ms, max_pending. Returns
/// the due time, or -1 when refused.
const ARM: &str = r"
local max = tonumber(ARGV[3])
if max > 0 and not redis.call('ZSCORE', KEYS[2], KEYS[1])
    and redis.call('ZCARD', KEYS[2]) >= max then
  return -1
end
keep_due_firing(KEYS[1], KEYS[2], now)
local at = now + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], at, KEYS[1])
ready(KEYS[3], tenant_of(KEYS[1]), at)
return at
";

/// ARM for many keys in one call, all or none. KEYS: ready, then each key
/// followed by its index. ARGV: value, max_pending, ttl_ms... (one per key).
/// Returns how many keys were armed, or -1 when an index would pass
/// `max_pending` (0: no cap).
const ARM_MANY: &str = r"
local max = tonumber(ARGV[2])
if max > 0 then
  local added = {}
  for i = 2, #KEYS, 2 do
    if not redis.call('ZSCORE', KEYS[i + 1], KEYS[i]) then
      added[KEYS[i + 1]] = (added[KEYS[i + 1]] or 0) + 1
    end
  end
  for idx, n in pairs(added) do
    if redis.call('ZCARD', idx) + n > max then return -1 end
  end
end
for i = 2, #KEYS, 2 do
  local ttl = tonumber(ARGV[2 + i / 2])
  local at = now + ttl
  keep_due_firing(KEYS[i], KEYS[i + 1], now)
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl)
  redis.call('ZADD', KEYS[i + 1], at, KEYS[i])
  ready(KEYS[1], tenant_of(KEYS[i]), at)
end
return (#KEYS - 1) / 2
";

/// A host claims no more of a tenant's firings while it holds this many
/// (claimed, not finished): enough to keep every slot busy between two
/// sweeps, few enough that another tenant's firings are never queued behind
/// them for long.
pub const CLAIM_AHEAD: usize = 1000;

/// Keys per call of the batch operations (arming, keyevents, finished
/// firings): large enough that the round trip is noise, small enough that
/// Redis is not blocked for long (about a millisecond).
pub const KEYS_PER_CALL: usize = 1000;

/// DEL and unindex. KEYS: key, its index.
const CANCEL: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return n
";

/// Index keys another client armed. KEYS: ready, then each key followed by
/// its index. Returns how many were alive with a TTL (and are indexed).
const INDEX: &str = r"
local n = 0
for i = 2, #KEYS, 2 do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl >= 0 then
    keep_due_firing(KEYS[i], KEYS[i + 1], now)
    redis.call('ZADD', KEYS[i + 1], now + pttl, KEYS[i])
    ready(KEYS[1], tenant_of(KEYS[i]), now + pttl)
    n = n + 1
  end
end
return n
";

/// Plain DELs were heard: drop each entry whose key is gone and not yet due.
/// KEYS: ready (unused), then each key followed by its index. ARGV: lead.
/// Returns how many were dropped.
const UNINDEX: &str = r"
local n = 0
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local s = redis.call('ZSCORE', KEYS[i + 1], KEYS[i])
    if s and tonumber(s) > now + tonumber(ARGV[1]) then
      redis.call('ZREM', KEYS[i + 1], KEYS[i])
      n = n + 1
    end
  end
end
return n
";

/// Claim due entries, shared across the tenants that have some.
/// KEYS: ready, leases, meta. ARGV: lead, lease_ms, limit, fired prefix,
/// fired ttl, then the tenants to skip (this host holds enough of theirs).
/// Returns {now, next due of a tenant not skipped or -1, member, due, meta, ...}.
///
/// The tenants due are taken in order of their earliest entry, each with
/// an equal share of what is left of `limit`; a second pass hands what the
/// tenants with few entries left over to those that filled their share. So
/// a tenant with a hundred thousand entries due takes about one share per
/// claim, never the whole batch, and another tenant's entry is claimed in
/// the first claim after it is due.
///
/// A live key that is past its entry's due time by more than 5 ms was
/// expired and armed again while no host claimed it: that firing is claimed
/// under a member of its own and the key stays, indexed for its new arming.
const CLAIM: &str = r"
local lead = tonumber(ARGV[1])
local lease_end = now + tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local skip = {}
for i = 6, #ARGV do skip[ARGV[i]] = true end
local nskip = #ARGV - 5
local out = {now, -1}
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
-- Claims up to `share` entries of one tenant; returns how many it looked at.
local function claim_tenant(tenant, share)
  local idx = index_of(tenant)
  local due = redis.call('ZRANGE', idx, '-inf', now + lead, 'BYSCORE', 'LIMIT', 0, share, 'WITHSCORES')
  local unindexed = {}
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
        redis.call('ZADD', idx, now + pttl, m)
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
  if #unindexed > 0 then redis.call('ZREM', idx, unpack(unindexed)) end
  local first = redis.call('ZRANGE', idx, 0, 0, 'WITHSCORES')
  if #first > 0 then
    redis.call('ZADD', KEYS[1], first[2], tenant)
  else
    redis.call('ZREM', KEYS[1], tenant)
  end
  return #due / 2
end
local tenants = {}
for _, tenant in ipairs(redis.call('ZRANGE', KEYS[1], '-inf', now + lead, 'BYSCORE', 'LIMIT', 0, limit + nskip)) do
  if not skip[tenant] and #tenants < limit then tenants[#tenants + 1] = tenant end
end
for pass = 1, 2 do
  local left = limit - (#out - 2) / 3
  local full = {}
  for i, tenant in ipairs(tenants) do
    if left <= 0 then break end
    local share = math.ceil(left / (#tenants - i + 1))
    local seen = claim_tenant(tenant, share)
    if seen == share then full[#full + 1] = tenant end
    left = limit - (#out - 2) / 3
  end
  tenants = full
  if left <= 0 or #tenants == 0 then break end
end
if #leases > 0 then redis.call('ZADD', KEYS[2], unpack(leases)) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, nskip, 'WITHSCORES')
for i = 1, #nxt, 2 do
  if not skip[nxt[i]] then
    out[2] = tonumber(nxt[i + 1])
    break
  end
end
return out
";

/// `expired` keyevents: claims the firing of each key no index holds, once
/// across hosts (a fired mark set with NX). An indexed key is left to the
/// sweeper, which claims fairly across tenants; if its entry says later
/// than now (its TTL was shortened unheard), it is made due now.
/// KEYS: ready, leases, meta, then each key followed by its index.
/// ARGV: lease_ms, fired prefix, fired ttl. Returns {member, due, meta, ...}
/// for the firings claimed.
const CLAIM_EXPIRED: &str = r"
local out = {}
for i = 4, #KEYS, 2 do
  local k = KEYS[i]
  local s = redis.call('ZSCORE', KEYS[i + 1], k)
  if s then
    if tonumber(s) > now and redis.call('EXISTS', k) == 0 then
      redis.call('ZADD', KEYS[i + 1], now, k)
      ready(KEYS[1], tenant_of(k), now)
    end
  elseif redis.call('SET', ARGV[2] .. k, '1', 'NX', 'PX', ARGV[3]) then
    redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), k)
    out[#out + 1] = k
    out[#out + 1] = tostring(now)
    out[#out + 1] = redis.call('HGET', KEYS[3], k) or ''
  end
end
return out
";

/// Expired leases go back in their tenant's index, due now; and entries
/// left in the index of earlier versions move to their tenant's index.
/// KEYS: leases, legacy index, ready.
const REAP: &str = r"
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZADD', index_of(m), now, m)
  ready(KEYS[3], tenant_of(m), now)
end
local old = redis.call('ZRANGE', KEYS[2], 0, 999, 'WITHSCORES')
local moved = {}
for i = 1, #old, 2 do
  redis.call('ZADD', index_of(old[i]), old[i + 1], old[i])
  ready(KEYS[3], tenant_of(old[i]), old[i + 1])
  moved[#moved + 1] = old[i]
end
if #moved > 0 then redis.call('ZREM', KEYS[2], unpack(moved)) end
return #gone
";

/// Put a claimed firing back, due at once (shutdown). KEYS: leases, its
/// index, ready. ARGV: member.
const RELEASE: &str = r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  ready(KEYS[3], tenant_of(ARGV[1]), now)
  return 1
end
return 0
";

/// Schedule a retry. KEYS: leases, its index, meta, ready. ARGV: member, new
/// member, delay_ms, meta json.
const RETRY: &str = r"
local at = now + tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[2], at, ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
ready(KEYS[4], tenant_of(ARGV[2]), at)
return at
";

/// Put a dead letter back, due now. KEYS: dead, its index, ready. ARGV: the
/// letter, the new member. Returns 1, or 0 when the letter was gone.
const REVIVE: &str = r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now, ARGV[2])
ready(KEYS[3], tenant_of(ARGV[2]), now)
return 1
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
    state: Mutex<HeldState>,
    next_claim: AtomicU64,
}

#[derive(Debug, Default)]
struct HeldState {
    /// Member → (claim number, lease lost).
    members: HashMap<String, (u64, bool)>,
    /// Tenant → members held.
    tenants: HashMap<String, usize>,
}

impl HeldState {
    fn remove(&mut self, member: &str) {
        if self.members.remove(member).is_some() {
            let tenant = tenant_of(member);
            if let Some(n) = self.tenants.get_mut(tenant) {
                *n -= 1;
                if *n == 0 {
                    self.tenants.remove(tenant);
                }
            }
        }
    }
}

impl Held {
    fn lock(&self) -> std::sync::MutexGuard<'_, HeldState> {
        // A panic while holding this lock leaves a state that is still valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a claimed member; returns its claim number.
    fn hold(&self, member: &str) -> u64 {
        let claim = self.next_claim.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if state
            .members
            .insert(member.to_owned(), (claim, false))
            .is_none()
        {
            *state
                .tenants
                .entry(tenant_of(member).to_owned())
                .or_default() += 1;
        }
        claim
    }

    /// The member is finished, retried, dead or given back.
    pub fn forget(&self, member: &str) {
        self.lock().remove(member);
    }

    /// Every member held, for renewal.
    fn members(&self) -> Vec<String> {
        self.lock().members.keys().cloned().collect()
    }

    /// The tenants of which this host holds at least `at_least` firings.
    pub fn tenants_holding(&self, at_least: usize) -> Vec<String> {
        self.lock()
            .tenants
            .iter()
            .filter(|(_, n)| **n >= at_least)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Marks members whose lease was lost; returns how many were still held.
    fn lose(&self, members: &[String]) -> usize {
        let mut state = self.lock();
        let mut n = 0;
        for m in members {
            if let Some(entry) = state.members.get_mut(m) {
                entry.1 = true;
                n += 1;
            }
        }
        n
    }

    /// Whether `firing` may start: this host still holds it under the same
    /// claim and its lease was not lost. A lost one is forgotten.
    pub fn may_start(&self, firing: &Firing) -> bool {
        let mut state = self.lock();
        match state.members.get(&firing.member) {
            Some((claim, false)) if *claim == firing.claim => true,
            Some((claim, true)) if *claim == firing.claim => {
                state.remove(&firing.member);
                false
            }
            _ => false,
        }
    }

    /// How many members are held.
    pub fn len(&self) -> usize {
        self.lock().members.len()
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

/// The dead-letter list as read: the letters, newest first, and the entries
/// that do not decode as one (written by another client or format).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeadList {
    /// The dead letters, newest first.
    pub letters: Vec<DeadLetter>,
    /// Entries that are not dead letters: their position in the list (0 is
    /// the newest) and why.
    pub unreadable: Vec<(usize, String)>,
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
    revive: redis::Script,
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
    revive: script(REVIVE),
});

/// The delivery state in one Redis DB (the expiry pool's).
#[derive(Clone)]
pub struct Delivery {
    pool: PoolAlias,
    conn: RedisConn,
    scripts: &'static Scripts,
    held: Arc<Held>,
    dead_cap: usize,
    /// Most entries a tenant's index may hold when arming (0: no cap).
    max_pending: u32,
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

    fn with_conn(pool: PoolAlias, conn: RedisConn) -> Self {
        Self {
            pool,
            conn,
            scripts: &SCRIPTS,
            held: Arc::default(),
            dead_cap: DEFAULT_MAX_DEAD_LETTERS,
            max_pending: 0,
        }
    }

    /// Refuses to arm a new trigger while its tenant has `cap` pending in
    /// its index (`[tenants] max_pending_triggers`); `None`: no cap.
    pub fn with_pending_cap(mut self, cap: Option<std::num::NonZeroU32>) -> Self {
        self.max_pending = cap.map_or(0, std::num::NonZeroU32::get);
        self
    }

    fn over_pending(&self, key: &str) -> RepoError {
        RepoError::Denied(format!(
            "quota: tenant {:?} has {} triggers pending, its max_pending_triggers; \
             the trigger was not set",
            tenant_of(key),
            self.max_pending
        ))
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

    fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Sets `key` to `value` with `ttl_ms` and indexes it, atomically.
    /// Returns the due time (server ms).
    ///
    /// # Errors
    /// Redis failing.
    /// [`RepoError::Denied`] when the tenant is at its pending-trigger quota
    /// ([`with_pending_cap`](Self::with_pending_cap)).
    pub async fn arm(&self, key: &str, value: &str, ttl_ms: u64) -> Result<i64, RepoError> {
        let mut call = self.scripts.arm.key(key);
        call.key(index_of(key))
            .key(READY)
            .arg(value)
            .arg(ttl_ms)
            .arg(self.max_pending);
        // SET and ZADD: running it twice is running it once.
        let due: i64 = self.conn.invoke(&call).await?;
        if due < 0 {
            return Err(self.over_pending(key));
        }
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
        let conn = self.conn();
        let mut armed = 0;
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let mut call = self.scripts.arm_many.key(READY);
            call.arg(value).arg(self.max_pending);
            for (key, ttl_ms) in chunk {
                call.key(key).key(index_of(key)).arg(*ttl_ms);
            }
            let n: i64 = conn.invoke(&call).await?;
            if n < 0 {
                let key = chunk.first().map_or("", |(key, _)| key.as_str());
                return Err(self.over_pending(key));
            }
            armed += n.unsigned_abs();
        }
        Ok(armed)
    }

    /// Deletes `key` and its index entry; returns whether the key existed.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn cancel(&self, key: &str) -> Result<bool, RepoError> {
        let mut call = self.scripts.cancel.key(key);
        call.key(index_of(key));
        let n: i64 = self.conn.invoke(&call).await?;
        Ok(n > 0)
    }

    /// Runs a script over the ready set and `keys`, each followed by its
    /// index (`KEYS[2..]`, `ARGV[1]` = [`LEAD_MS`]), in calls of
    /// [`KEYS_PER_CALL`] keys; returns the summed counts.
    async fn on_keys(&self, script: &redis::Script, keys: &[String]) -> Result<u64, RepoError> {
        let mut conn = self.conn();
        let mut total = 0;
        for chunk in keys.chunks(KEYS_PER_CALL) {
            let mut call = script.key(READY);
            call.arg(LEAD_MS);
            for key in chunk {
                call.key(key).key(index_of(key));
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
        let pattern = format!("*:{TRIGGER_MARKER}:*");
        let mut cursor = Some(0);
        let mut indexed = 0;
        while let Some(at) = cursor {
            let (next, keys) = self.conn.scan_page(&pattern, at, KEYS_PER_CALL).await?;
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| !k.starts_with(INTERNAL_PREFIX) && parse_trigger(k).is_some())
                .collect();
            indexed += self.index(&keys).await?;
            cursor = next;
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
        let mut call = self.scripts.claim.key(READY);
        call.key(LEASES)
            .key(META)
            .arg(LEAD_MS)
            .arg(lease_ms)
            .arg(limit)
            .arg(FIRED_PREFIX)
            .arg(FIRED_TTL_MS)
            .arg(skip);
        let out: Vec<redis::Value> = call.invoke_async(&mut self.conn()).await?;
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
            let mut call = self.scripts.claim_expired.key(READY);
            call.key(LEASES)
                .key(META)
                .arg(lease_ms)
                .arg(FIRED_PREFIX)
                .arg(FIRED_TTL_MS);
            for key in chunk {
                call.key(key).key(index_of(key));
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

    /// Puts firings whose lease ended back in the index, and moves up to
    /// a thousand entries of an earlier version's single index
    /// ([`LEGACY_DUE`]) to their tenants' indexes; returns how many leases
    /// had ended.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn reap(&self) -> Result<u64, RepoError> {
        Ok(self
            .scripts
            .reap
            .key(LEASES)
            .key(LEGACY_DUE)
            .key(READY)
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
            .key(index_of(member))
            .key(READY)
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
            .key(index_of(&member))
            .key(META)
            .key(READY)
            .arg(&firing.member)
            .arg(&member)
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

    /// Every dead letter, newest first, and the entries that are not one.
    ///
    /// # Errors
    /// Redis failing.
    pub async fn dead_letters(&self) -> Result<DeadList, RepoError> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(DEAD)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await?;
        let mut list = DeadList::default();
        for (i, entry) in raw.iter().enumerate() {
            match serde_json::from_str(entry) {
                Ok(letter) => list.letters.push(letter),
                Err(e) => list.unreadable.push((i, e.to_string())),
            }
        }
        Ok(list)
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
        for (i, entry) in raw.iter().enumerate() {
            let letter = match serde_json::from_str::<DeadLetter>(entry) {
                Ok(letter) => letter,
                Err(e) => {
                    warn!(
                        position = i, error = %e,
                        "an entry of the dead-letter list is not a dead letter; left as it is"
                    );
                    continue;
                }
            };
            if key.is_some_and(|k| k != letter.key) {
                continue;
            }
            let member = format!("{}{SEP}retried{}", letter.key, fastrand::u32(..));
            let revived: u64 = self
                .scripts
                .revive
                .key(DEAD)
                .key(index_of(&member))
                .key(READY)
                .arg(entry)
                .arg(&member)
                .invoke_async(&mut conn)
                .await?;
            n += revived;
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
