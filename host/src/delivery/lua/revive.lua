-- Put a dead letter back, due now. KEYS: dead, its index, ready. ARGV: the
-- letter, the new member. Returns 1, or 0 when the letter was gone.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], now, ARGV[2])
ready(KEYS[3], tenant_of(ARGV[2]), now)
return 1
