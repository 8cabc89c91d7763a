-- Claim due entries, shared across the tenants that have some.
-- KEYS: ready, leases, meta. ARGV: lead, lease_ms, limit, fired prefix,
-- fired ttl, claim token, then the tenants to skip (this host holds enough
-- of theirs).
-- Returns {now, next due of a tenant not skipped or -1, lease, due, meta, ...}.
--
-- The tenants due are taken in order of their earliest entry, each with
-- an equal share of what is left of `limit`; a second pass hands what the
-- tenants with few entries left over to those that filled their share. So
-- a tenant with a hundred thousand entries due takes about one share per
-- claim, never the whole batch, and another tenant's entry is claimed in
-- the first claim after it is due.
--
-- Each tenant's share is claimed by the prelude's `claim_from`.
local skip = {}
for i = 7, #ARGV do skip[ARGV[i]] = true end
local nskip = #ARGV - 6
local limit = tonumber(ARGV[3])
local c = {
  ready = KEYS[1], meta = KEYS[3], lead = tonumber(ARGV[1]),
  lease_end = now + tonumber(ARGV[2]), fired = ARGV[4], fired_ttl = ARGV[5], token = ARGV[6],
  out = {now, -1}, leases = {},
}
local out = c.out
local lead = c.lead
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
    local seen = claim_from(c, tenant, share)
    if seen == share then full[#full + 1] = tenant end
    left = limit - (#out - 2) / 3
  end
  tenants = full
  if left <= 0 or #tenants == 0 then break end
end
if #c.leases > 0 then redis.call('ZADD', KEYS[2], unpack(c.leases)) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, nskip, 'WITHSCORES')
for i = 1, #nxt, 2 do
  if not skip[nxt[i]] then
    out[2] = tonumber(nxt[i + 1])
    break
  end
end
return out
