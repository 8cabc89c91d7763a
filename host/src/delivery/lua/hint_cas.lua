-- A claim (or reap) says where a hint's work now starts: each member is set
-- to its new score, or removed when the score is -1, only if its version is
-- still the one read before the claim (nothing was added since).
-- KEYS: hints (or lease hints), versions. ARGV: member, version read,
-- score, ... Returns how many applied.
local n = 0
for i = 1, #ARGV, 3 do
  local m = ARGV[i]
  if (redis.call('HGET', KEYS[2], m) or '') == ARGV[i + 1] then
    if tonumber(ARGV[i + 2]) < 0 then
      redis.call('ZREM', KEYS[1], m)
      redis.call('HDEL', KEYS[2], m)
    else
      redis.call('ZADD', KEYS[1], ARGV[i + 2], m)
    end
    n = n + 1
  end
end
return n
