-- Add (or refresh) one client's presence in a channel.
--
-- The HASH holds client id -> info blob; the ZSET holds client id -> expiry (unix ms),
-- so entries of a node that died without removing them disappear after the TTL.
-- Live nodes must call this again before the TTL runs out.
--
-- KEYS[1] presence HASH   KEYS[2] expiry ZSET
-- ARGV[1] client id   ARGV[2] info blob   ARGV[3] presence TTL (ms)
local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
redis.call("zadd", KEYS[2], now + ttl, ARGV[1])
redis.call("pexpire", KEYS[1], ttl)
redis.call("pexpire", KEYS[2], ttl)
return 1
