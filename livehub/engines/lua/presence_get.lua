-- Drop expired presence entries, then return the rest as {client id, info blob, ...}.
--
-- KEYS[1] presence HASH   KEYS[2] expiry ZSET
local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call("zrangebyscore", KEYS[2], "-inf", now)
for i = 1, #expired, 1000 do
  redis.call("hdel", KEYS[1], unpack(expired, i, math.min(i + 999, #expired)))
end
if #expired > 0 then
  redis.call("zremrangebyscore", KEYS[2], "-inf", now)
end
return redis.call("hgetall", KEYS[1])
