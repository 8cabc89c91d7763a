-- A claim (or reap) says where a hint's work now starts: each member is set
-- to its new score, or removed when the score is -1, only if its version is
-- still the one read before the claim (nothing was added since).
-- KEYS: hints (or lease hints), versions, and for tenant hints the
-- bucket's tenants (the pair is set in `{hints}:{tenant}` too, and the
-- tenant's score to its earliest pair left). ARGV: member, version read,
-- score, ... Returns how many applied.
local n = 0
for i = 1, #ARGV, 3 do
  local m = ARGV[i]
  if (redis.call('HGET', KEYS[2], m) or '') == ARGV[i + 1] then
    local score = tonumber(ARGV[i + 2])
    local tenant, pairs_key
    if KEYS[3] then
      tenant = hint_tenant(m)
      pairs_key = KEYS[1] .. ':' .. tenant
    end
    if score < 0 then
      redis.call('ZREM', KEYS[1], m)
      redis.call('HDEL', KEYS[2], m)
      if pairs_key then redis.call('ZREM', pairs_key, m) end
    else
      redis.call('ZADD', KEYS[1], score, m)
      if pairs_key then redis.call('ZADD', pairs_key, score, m) end
    end
    if pairs_key then
      local first = redis.call('ZRANGE', pairs_key, 0, 0, 'WITHSCORES')
      if #first > 0 then
        redis.call('ZADD', KEYS[3], first[2], tenant)
      else
        redis.call('ZREM', KEYS[3], tenant)
      end
    end
    n = n + 1
  end
end
return n
