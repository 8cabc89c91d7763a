-- DEL and unindex. KEYS: key, its index.
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return n
