-- Expired leases go back in their tenant's index, at their firing's due
-- time (the prelude's `requeue`); and entries
-- left in the index of earlier versions move to their tenant's index.
-- KEYS: leases, legacy index, ready.
-- Returns {how many leases had ended, the first lease end left or -1,
-- the tenants given entries back...}.
local gone = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
local tenants = {}
for _, m in ipairs(gone) do
  redis.call('ZREM', KEYS[1], m)
  local back, due = requeue(m)
  redis.call('ZADD', index_in(KEYS[3], m), due, back)
  ready(KEYS[3], tenant_of(m), due)
  tenants[tenant_of(m)] = true
end
local old = redis.call('ZRANGE', KEYS[2], 0, 999, 'WITHSCORES')
local moved = {}
for i = 1, #old, 2 do
  redis.call('ZADD', index_in(KEYS[3], old[i]), old[i + 1], old[i])
  ready(KEYS[3], tenant_of(old[i]), old[i + 1])
  tenants[tenant_of(old[i])] = true
  moved[#moved + 1] = old[i]
end
if #moved > 0 then redis.call('ZREM', KEYS[2], unpack(moved)) end
local out = {#gone, -1}
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first > 0 then out[2] = tonumber(first[2]) end
for t in pairs(tenants) do out[#out + 1] = t end
return out
