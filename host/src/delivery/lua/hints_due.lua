-- The hints of a bucket due by now + lead, earliest first, up to `limit`,
-- leaving out the tenants to skip (looking at 20 000 members at most).
-- KEYS: hints (or lease hints), versions. ARGV: lead, limit, tenants to
-- skip... Returns {now, the first score after now + lead (now when more
-- than `limit` are due) or -1, member, score, version, ...}.
local until_ = now + tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local skip = {}
for i = 3, #ARGV do skip[ARGV[i]] = true end
local out = {now, -1}
local offset = 0
local more = false
local page_size = math.min(256, limit + 1)
while (#out - 2) / 3 < limit and offset < 20000 do
  local page = redis.call('ZRANGE', KEYS[1], '-inf', until_, 'BYSCORE', 'LIMIT', offset, page_size, 'WITHSCORES')
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local m = page[i]
    local c = string.find(m, ':', 1, true)
    if not (c and skip[string.sub(m, c + 1)]) then
      if (#out - 2) / 3 < limit then
        out[#out + 1] = m
        out[#out + 1] = page[i + 1]
        out[#out + 1] = redis.call('HGET', KEYS[2], m) or ''
      else
        more = true
      end
    end
  end
  offset = offset + page_size
end
-- Full: more may be due (an extra sweep finds out).
if (#out - 2) / 3 >= limit then more = true end
local after = redis.call('ZRANGE', KEYS[1], '(' .. until_, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
if more then
  out[2] = now
elseif #after > 0 then
  out[2] = tonumber(after[2])
end
return out
