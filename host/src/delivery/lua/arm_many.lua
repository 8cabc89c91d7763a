-- ARM for many keys in one call, all or none. KEYS: ready, then each key
-- followed by its index. ARGV: value, max_pending, ttl_ms... (one per key).
-- Returns {how many keys were armed, the earliest due time}, or {-1, -1}
-- when an index would pass `max_pending` (0: no cap).
local max = tonumber(ARGV[2])
if max > 0 then
  local added = {}
  for i = 2, #KEYS, 2 do
    if adds_entry(KEYS[i], KEYS[i + 1], now) then
      added[KEYS[i + 1]] = (added[KEYS[i + 1]] or 0) + 1
    end
  end
  for idx, n in pairs(added) do
    if redis.call('ZCARD', idx) + n > max then return {-1, -1} end
  end
end
local first = -1
for i = 2, #KEYS, 2 do
  local ttl = tonumber(ARGV[2 + i / 2])
  local at = now + ttl
  if first < 0 or at < first then first = at end
  keep_due_firing(KEYS[1], KEYS[i], KEYS[i + 1], now)
  set_quietly(KEYS[1], KEYS[i], ARGV[1], at)
  redis.call('ZADD', KEYS[i + 1], at, KEYS[i])
  ready(KEYS[1], tenant_of(KEYS[i]), at)
end
return {(#KEYS - 1) / 2, first}
