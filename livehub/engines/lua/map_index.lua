-- Update the expiry sweep's index of map channels (ZSET channel -> its earliest key expiry)
-- only if the channel's score is still the one the sweep read: a publish that set it since
-- knows better.
--
-- KEYS[1] index ZSET   ARGV[1] channel   ARGV[2] score the sweep read   ARGV[3] new score (0: drop)
local score = redis.call("zscore", KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  if tonumber(ARGV[3]) == 0 then
    redis.call("zrem", KEYS[1], ARGV[1])
  else
    redis.call("zadd", KEYS[1], ARGV[3], ARGV[1])
  end
end
return 0
