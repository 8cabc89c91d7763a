-- Claim due entries, shared across the tenants that have some.
-- KEYS: ready, leases, meta. ARGV: lead, lease_ms, limit, fired prefix,
-- fired ttl, then the tenants to skip (this host holds enough of theirs).
-- Returns {now, next due of a tenant not skipped or -1, member, due, meta, ...}.
--
-- The tenants due are taken in order of their earliest entry, each with
-- an equal share of what is left of `limit`; a second pass hands what the
-- tenants with few entries left over to those that filled their share. So
-- a tenant with a hundred thousand entries due takes about one share per
-- claim, never the whole batch, and another tenant's entry is claimed in
-- the first claim after it is due.
--
-- A live key that is past its entry's due time by more than 5 ms was
-- expired and armed again while no host claimed it: that firing is claimed
-- under a member of its own and the key stays, indexed for its new arming.
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
