-- The hints of a bucket due by now + lead, up to `limit`, leaving out the
-- tenants to skip. KEYS: hints (or lease hints), versions, and for tenant
-- hints the bucket's tenants. ARGV: lead, limit, tenants to skip...
-- Returns {now, the first score after now + lead (now when more than
-- `limit` may be due) or -1, member, score, version, ...}.
--
-- Tenant hints: the due tenants are read first (earliest first), the
-- skipped ones left out, and each other takes an equal share of what is
-- left of `limit` from its own pairs (`{hints}:{tenant}`, earliest
-- first). So a sweep that skips a flooding tenant reads nothing of its
-- pairs. Lease hints (no tenants key): the earliest members.
local until_ = now + tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local out = {now, -1}
local more = false
local function take(m, score)
  out[#out + 1] = m
  out[#out + 1] = score
  out[#out + 1] = redis.call('HGET', KEYS[2], m) or ''
end
local function taken() return (#out - 2) / 3 end
local after_from = KEYS[1]
if KEYS[3] then
  after_from = KEYS[3]
  local skip = {}
  for i = 3, #ARGV do skip[ARGV[i]] = true end
  local due = redis.call('ZRANGE', KEYS[3], '-inf', until_, 'BYSCORE', 'LIMIT', 0, limit + #ARGV - 2)
  local tenants = {}
  for _, t in ipairs(due) do
    if not skip[t] then tenants[#tenants + 1] = t end
  end
  if #due == limit + #ARGV - 2 then more = true end
  for i, t in ipairs(tenants) do
    local left = limit - taken()
    if left <= 0 then
      more = true
      break
    end
    local share = math.ceil(left / (#tenants - i + 1))
    local page = redis.call('ZRANGE', KEYS[1] .. ':' .. t, '-inf', until_, 'BYSCORE', 'LIMIT', 0, share, 'WITHSCORES')
    for j = 1, #page, 2 do take(page[j], page[j + 1]) end
    if #page == share * 2 then more = true end
  end
else
  local page = redis.call('ZRANGE', KEYS[1], '-inf', until_, 'BYSCORE', 'LIMIT', 0, limit + 1, 'WITHSCORES')
  for j = 1, math.min(#page, limit * 2), 2 do take(page[j], page[j + 1]) end
  if #page > limit * 2 then more = true end
end
local after = redis.call('ZRANGE', after_from, '(' .. until_, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
if more then
  out[2] = now
elseif #after > 0 then
  out[2] = tonumber(after[2])
end
return out
