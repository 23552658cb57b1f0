-- Remove one client's presence from a channel.
--
-- KEYS[1] presence HASH   KEYS[2] expiry ZSET   ARGV[1] client id
redis.call("hdel", KEYS[1], ARGV[1])
redis.call("zrem", KEYS[2], ARGV[1])
return 1
