-- Index keys another client armed. KEYS: ready, then each key followed by
-- its index. Returns {how many were alive with a TTL (and are indexed),
-- the earliest due time of those or -1}.
-- Each entry is due when its key expires, read as a time (PEXPIRETIME):
-- `now` plus a PTTL read later in the script would be early (prelude,
-- `set_quietly`).
local n = 0
local first = -1
for i = 2, #KEYS, 2 do
  local at = redis.call('PEXPIRETIME', KEYS[i])
  if at >= 0 then
    keep_due_firing(KEYS[1], KEYS[i], KEYS[i + 1], now)
    redis.call('ZADD', KEYS[i + 1], at, KEYS[i])
    ready(KEYS[1], tenant_of(KEYS[i]), at)
    if first < 0 or at < first then first = at end
    n = n + 1
  end
end
return {n, first}
