-- What every script starts with, after `FIRED_TTL_MS` (how long a fired
-- mark stays, which scripts.rs puts first): the server time in ms, as
-- `now`, and the helpers below.
--
-- `tenant_of(m)` and `index_in(ready, m)`: the tenant of an index member
-- and its due index, beside the ready set `ready` (`{space}ready` and
-- `{space}due:{tenant}`, as `Space` in delivery/space.rs names them; a unit
-- test holds the two together). The host declares the index of every key
-- it passes; only the reaper and the claims, which find tenants in Redis,
-- name indexes themselves, always in the space of a key they were given.
--
-- `ready(set, t, score)` lowers tenant `t`'s score in `set`
-- (`symphony:ready`) to `score` (or adds it). A tenant's score there is never above its earliest entry: it
-- may be below (a cancel or a later re-arming does not raise it), and the
-- next claim that looks at the tenant sets it right.
--
-- `keep_due_firing(ready, key, due, now)`, before a key is (re)indexed: if
-- its entry is past due and unclaimed while the key is alive, the key
-- expired and was armed again since, so that firing is moved to a member
-- of its own rather than overwritten, and the key's fired mark is set. (An entry not yet due belongs to the same arming, or one the
-- new arming postpones.) "Past due" allows 5 ms: Redis expires a key only
-- once its time is passed, judged at the script's start, while `now` is
-- read a little later, so the same arming can look just due here.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function tenant_of(m)
  local c = string.find(m, ':', 1, true)
  if c then return string.sub(m, 1, c - 1) end
  return m
end
-- `member_of(l)`: the index member a lease `l` names, without its claim
-- token (`{member}\0@{token}`). A lease of an earlier version has no token
-- and is its member.
local function member_of(l)
  local at = string.find(l, '\0@', 1, true)
  if at then return string.sub(l, 1, at - 1) end
  return l
end
-- `requeue(l)`: the index member and due time under which the firing of
-- lease `l` goes back in the index (its lease ended, or it is given back).
-- A plain key goes back tagged `\0l{token}`: the key itself was taken out
-- of the keyspace by the claim and may have been armed again since, and an
-- untagged entry would then be taken for that new arming and the firing
-- lost. A tagged member (a retry) goes back as it is. The due time is the
-- firing's own, kept at the end of the token (`:{due}`); `now` for a lease
-- of an earlier version.
local function requeue(l)
  local m = member_of(l)
  local at = string.find(l, '\0@', 1, true)
  if not at then return m, now end
  local token = string.sub(l, at + 2)
  local due = tonumber(string.match(token, ':(%-?%d+)$')) or now
  if due < 0 then due = now end
  if not string.find(m, '\0', 1, true) then m = m .. '\0l' .. token end
  return m, due
end
local function index_in(ready_key, m)
  return string.sub(ready_key, 1, -6) .. 'due:' .. tenant_of(m)
end
-- `spend(ready, key)` takes a live trigger key a claim has claimed out of
-- the keyspace: it is renamed over the space's `spent` key (beside the
-- ready set, as `Space::spent` names it) rather than deleted, since a
-- RENAME emits no `del` event (only `rename_from`/`rename_to`, which no
-- host listens to), so no host pays an index update per claimed key, and
-- Redis never emits `expired` for it. The spent key is kept without a TTL
-- (PERSIST): the next RENAME replaces it without an event; one per space.
local function spend(ready_key, key)
  local spent = string.sub(ready_key, 1, -6) .. 'spent'
  redis.call('RENAME', key, spent)
  redis.call('PERSIST', spent)
end
-- `set_quietly(ready, key, value, at)` arms a trigger key as `SET key
-- value PXAT at` would, but set on the space's `spent` key and renamed over
-- `key`: a RENAME keeps the TTL and emits no `expire` event, so no host
-- pays an index update for a key the arming script indexes itself. (Keys
-- other clients arm still emit `expire`, and are indexed from it.)
--
-- The key expires at `at`, the time its index entry is due, exactly: a
-- relative `PX ttl` counts from Redis's clock when the SET runs, which in
-- a long script is later than `now`, so the entry would be early, and a
-- claim that found it past due with its key alive would take the key for
-- one armed again and run the trigger twice. (Within a script Redis
-- judges expiry at the script's start, before `now`: the key is alive for
-- the rest of it, even when `at` has passed by the end.)
local function set_quietly(ready_key, key, value, at)
  local spent = string.sub(ready_key, 1, -6) .. 'spent'
  redis.call('SET', spent, value, 'PXAT', at)
  redis.call('RENAME', spent, key)
end
-- `hint_tenant(m)`: the tenant of a hint bucket's member `slot:tenant`.
local function hint_tenant(m)
  local c = string.find(m, ':', 1, true)
  if c then return string.sub(m, c + 1) end
  return m
end
local function ready(set, tenant, score)
  redis.call('ZADD', set, 'LT', score, tenant)
end
-- `adds_entry(key, due, now)`: whether arming `key` adds an entry to its
-- index `due`: it has none, or its entry is past due (and `keep_due_firing`
-- keeps that firing under a member of its own beside the new arming). The
-- pending cap counts both, so re-arming past-due keys cannot grow an index
-- past it.
local function adds_entry(key, due, now)
  local s = redis.call('ZSCORE', due, key)
  return (not s) or tonumber(s) < now - 5
end
local function keep_due_firing(ready_key, key, due, now)
  local s = redis.call('ZSCORE', due, key)
  if s and tonumber(s) < now - 5 then
    redis.call('ZREM', due, key)
    redis.call('ZADD', due, s, key .. '\0d' .. s)
    -- The key's `expired` event may still be on its way to a host: it is
    -- this firing's, now kept apart, and must not make the new arming's
    -- entry due (claim_expired.lua).
    local fired = string.sub(ready_key, 1, -6) .. 'fired:' .. key
    redis.call('SET', fired, '1', 'PX', FIRED_TTL_MS)
  end
end
-- `claim_from(c, tenant, share)` claims up to `share` entries of `tenant`
-- due by `c.now + c.lead` from its index beside `c.ready`, and returns how
-- many it looked at: entries whose key is still alive (not cancelled) or
-- already gone (it expired while no host ran). It takes the live keys out
-- with `spend` (so Redis never emits `expired` for them), appends each firing to `c.out`
-- (lease, due, meta: the lease is the member and its claim token) and
-- its lease to `c.leases`, and sets the tenant's ready score to its next
-- entry. `c`: ready, meta, lead, lease_end, fired (prefix of the fired
-- marks), fired_ttl, token (this claim's, unique), out, leases.
--
-- A live key without a TTL is dropped from the index and not run: it no
-- longer expires (PERSIST, or set again without one).
--
-- A live key that is past its entry's due time by more than 5 ms was
-- expired and armed again while no host claimed it: that firing is claimed
-- under a member of its own and the key stays, indexed for its new arming.
local function claim_take(c, m, key, score, gone)
  -- The lease names the firing by a claim token of its own, so a newer
  -- claim of the same member (a key armed again while this one runs) has
  -- a lease of its own, which this firing's finish cannot remove.
  local lease = m .. '\0@' .. c.token .. '.' .. (#c.leases / 2) .. ':' .. score
  c.leases[#c.leases + 1] = c.lease_end
  c.leases[#c.leases + 1] = lease
  -- Redis expired the key (its `expired` event may still come): mark it, so
  -- the fallback does not run it again. A key deleted here emits no event.
  if gone then redis.call('SET', c.fired .. key, '1', 'PX', c.fired_ttl) end
  c.out[#c.out + 1] = lease
  c.out[#c.out + 1] = score
  -- Only tagged members (retries) have meta.
  c.out[#c.out + 1] = (m ~= key and redis.call('HGET', c.meta, m)) or ''
end
local function claim_from(c, tenant, share)
  local idx = index_in(c.ready, tenant)
  local due = redis.call('ZRANGE', idx, '-inf', now + c.lead, 'BYSCORE', 'LIMIT', 0, share, 'WITHSCORES')
  local unindexed = {}
  for i = 1, #due, 2 do
    local m = due[i]
    local score = due[i + 1]
    local sep = string.find(m, '\0', 1, true)
    if sep then
      unindexed[#unindexed + 1] = m
      claim_take(c, m, string.sub(m, 1, sep - 1), score, false)
    else
      -- When the key expires (-2: gone, -1: no TTL).
      local at = redis.call('PEXPIRETIME', m)
      if at == -1 then
        -- Alive without a TTL (PERSIST, or a plain SET): it will never
        -- expire, so it is not a trigger any more; unindexed, not run.
        unindexed[#unindexed + 1] = m
      elseif at > now + c.lead then
        redis.call('ZADD', idx, at, m)
        if tonumber(score) < now - 5 then
          claim_take(c, m .. '\0d' .. score, m, score, true)
        end
      else
        unindexed[#unindexed + 1] = m
        if at ~= -2 then spend(c.ready, m) end
        claim_take(c, m, m, score, at == -2)
      end
    end
  end
  if #unindexed > 0 then redis.call('ZREM', idx, unpack(unindexed)) end
  local first = redis.call('ZRANGE', idx, 0, 0, 'WITHSCORES')
  if #first > 0 then
    redis.call('ZADD', c.ready, first[2], tenant)
  else
    redis.call('ZREM', c.ready, tenant)
  end
  return #due / 2
end
