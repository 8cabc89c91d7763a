-- What every script starts with: the server time in ms, as `now`, and the
-- helpers below.
--
-- `tenant_of(m)` and `index_of(m)`: the tenant of an index member and its
-- due index, as `tenant_of` and `index_of` in delivery/mod.rs (a unit test
-- holds the prefix here to `DUE_PREFIX`). The host declares the index of
-- every key it passes; only the reaper and the claim, which find tenants in
-- Redis, name indexes themselves.
--
-- `ready(set, t, score)` lowers tenant `t`'s score in `set`
-- (`symphony:ready`) to `score` (or adds it). A tenant's score there is never above its earliest entry: it
-- may be below (a cancel or a later re-arming does not raise it), and the
-- next claim that looks at the tenant sets it right.
--
-- `keep_due_firing`, before a key is (re)indexed: if its entry is past due
-- and unclaimed while the key is alive, the key expired and was armed again
-- since, so that firing is moved to a member of its own rather than
-- overwritten. (An entry not yet due belongs to the same arming, or one the
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
local function index_of(m)
  return 'symphony:due:' .. tenant_of(m)
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
