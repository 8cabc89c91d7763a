-- DEL and unindex. KEYS: key, its index. Returns 1 when it removed
-- either: a key whose TTL ran out while no host claimed its entry is
-- still cancelled, and the cancel says so.
local n = redis.call('DEL', KEYS[1])
local z = redis.call('ZREM', KEYS[2], KEYS[1])
if n > 0 or z > 0 then
    return 1
end
return 0
