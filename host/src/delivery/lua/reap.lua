-- Expired leases go back in their tenant's index, due now; and entries
-- left in the index of earlier versions move to their tenant's index.
-- KEYS: leases, legacy index, ready.
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
