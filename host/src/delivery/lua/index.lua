-- Index keys another client armed. KEYS: ready, then each key followed by
-- its index. Returns {how many were alive with a TTL (and are indexed),
-- the earliest due time of those or -1}.
local n = 0
local first = -1
for i = 2, #KEYS, 2 do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl >= 0 then
    keep_due_firing(KEYS[i], KEYS[i + 1], now)
    redis.call('ZADD', KEYS[i + 1], now + pttl, KEYS[i])
    ready(KEYS[1], tenant_of(KEYS[i]), now + pttl)
    if first < 0 or now + pttl < first then first = now + pttl end
    n = n + 1
  end
end
return {n, first}
