-- Extend the leases this host holds. KEYS: leases. ARGV: lease_ms,
-- member... Returns the members that no longer have a lease (reaped: their
-- firing is back in the index, for any host).
local lease_end = now + tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], lease_end, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
