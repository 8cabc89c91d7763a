-- Claim due entries of many (slot, tenant) pairs on one cluster node in
-- one call (a cluster's sweep, for the pairs whose slots the host believes
-- that node serves). A script without a shebang may touch keys of other
-- slots than its declared one, if this node serves them.
-- KEYS: one key of the node (routing only). ARGV: lead, lease_ms, share,
-- fired ttl, claim token, then for each pair: its space's ready key, its
-- tenant.
-- First, before any write, each pair's slot is probed with a key that
-- never exists: a slot this node does not serve whole (moved away,
-- migrating or importing) answers with an error, and that pair is left
-- out (status 0) for the host to claim on its own. So the script never
-- stops half way, and the other pairs are claimed as `claim_one` would.
-- Returns {now, then per pair: status (1 claimed, 0 left out), the
-- tenant's next entry there or -1, the first lease end there or -1, the
-- count n of firings, then n times lease, due, meta}.
local lead = tonumber(ARGV[1])
local lease_end = now + tonumber(ARGV[2])
local share = tonumber(ARGV[3])
local served = {}
for i = 6, #ARGV, 2 do
  local probe = redis.pcall('EXISTS', string.sub(ARGV[i], 1, -6) .. 'probe')
  served[i] = type(probe) == 'number'
end
local out = {now}
for i = 6, #ARGV, 2 do
  if not served[i] then
    out[#out + 1] = 0
    out[#out + 1] = -1
    out[#out + 1] = -1
    out[#out + 1] = 0
  else
    local space = string.sub(ARGV[i], 1, -6)
    local c = {
      ready = ARGV[i], meta = space .. 'meta', lead = lead,
      lease_end = lease_end, fired = space .. 'fired:', fired_ttl = ARGV[4],
      token = ARGV[5] .. '.' .. i,
      out = {}, leases = {},
    }
    claim_from(c, ARGV[i + 1], share)
    local leases = space .. 'leases'
    if #c.leases > 0 then redis.call('ZADD', leases, unpack(c.leases)) end
    local after = -1
    local first = redis.call('ZRANGE', index_in(ARGV[i], ARGV[i + 1]), 0, 0, 'WITHSCORES')
    if #first > 0 then after = tonumber(first[2]) end
    local first_lease = -1
    local lease = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
    if #lease > 0 then first_lease = tonumber(lease[2]) end
    out[#out + 1] = 1
    out[#out + 1] = after
    out[#out + 1] = first_lease
    out[#out + 1] = #c.out / 3
    for j = 1, #c.out do out[#out + 1] = c.out[j] end
  end
end
return out
