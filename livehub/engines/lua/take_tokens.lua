-- Take one token from each of a user's buckets, or from none if any is empty: the per-user
-- command rate limit, shared by every node (Centrifugo PRO's user_command).
--
-- KEYS[i] bucket HASH (t = tokens, s = stamp in ms)
-- ARGV[2i-1] rate, ARGV[2i] interval in ms, for KEYS[i]
-- The clock is Redis's own (TIME), so nodes with skewed clocks share one bucket fairly.
-- A bucket left alone for its interval is full again: its key expires then.
local now = redis.call("time")
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local tokens = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 * i - 1])
  local interval = tonumber(ARGV[2 * i])
  local state = redis.call("hmget", key, "t", "s")
  local have, stamp = tonumber(state[1]), tonumber(state[2])
  if have == nil or stamp == nil then
    have = rate
  elseif now > stamp then
    have = math.min(rate, have + (now - stamp) * rate / interval)
  end
  if have < 1 then
    return 0
  end
  tokens[i] = have
end
for i, key in ipairs(KEYS) do
  redis.call("hset", key, "t", tostring(tokens[i] - 1), "s", now)
  redis.call("pexpire", key, tonumber(ARGV[2 * i]))
end
return 1
