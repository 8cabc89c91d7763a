-- Plain DELs were heard: drop each entry whose key is gone and not yet due.
-- KEYS: ready (unused), then each key followed by its index. ARGV: lead.
-- Returns how many were dropped.
local n = 0
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local s = redis.call('ZSCORE', KEYS[i + 1], KEYS[i])
    if s and tonumber(s) > now + tonumber(ARGV[1]) then
      redis.call('ZREM', KEYS[i + 1], KEYS[i])
      n = n + 1
    end
  end
end
return n
