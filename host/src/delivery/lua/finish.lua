-- Finish a firing, optionally dead-lettering it. KEYS: leases, meta, dead.
-- ARGV: member, dead-letter json or '', most dead letters kept. Returns how
-- many of the oldest dead letters were trimmed to stay within the cap.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  local n = redis.call('LPUSH', KEYS[3], ARGV[2])
  local cap = tonumber(ARGV[3])
  if n > cap then
    redis.call('LTRIM', KEYS[3], 0, cap - 1)
    return n - cap
  end
end
return 0
