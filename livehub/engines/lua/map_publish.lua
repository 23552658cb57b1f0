-- Set one key of a map channel, append the change to its stream and broadcast it, atomically.
--
-- KEYS[1] meta HASH (e = epoch, s = top offset, ss/st/mt = stream size, stream TTL ms,
--         meta TTL ms: the options the expiry sweep needs)
-- KEYS[2] state HASH (key -> offset ":" blob)   KEYS[3] keys ZSET (score 0: key order)
-- KEYS[4] expiry ZSET (key -> expiry ms)       KEYS[5] stream STREAM (id = offset-0)
-- ARGV[1] key   ARGV[2] blob   ARGV[3] key mode ("", "if_new", "if_exists")
-- ARGV[4] refresh TTL when suppressed "1"/"0"   ARGV[5] key TTL ms (0: never expires)
-- ARGV[6] stream size (0: no stream)   ARGV[7] stream TTL ms   ARGV[8] meta TTL ms (0: forever)
-- ARGV[9] epoch for a new map   ARGV[10] pub/sub channel   ARGV[11] "publish"/"spublish"
-- ARGV[12] use_delta "1"/"0"   ARGV[13] max keys
-- Returns {offset, epoch, suppressed reason ("" when changed), earliest key expiry ms (0: none)}.
--
-- Stream entries are {"k", key, "r", "0"/"1", "x", expiry ms, "d", blob}; the message is
--   "M" offset ":" epoch ":" removed ":" #key ":" #prev ":" prev_offset ":" key prev blob
local meta, state, keys, exp, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local key, blob, mode, refresh = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key_ttl, size, stream_ttl, meta_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local max_keys = tonumber(ARGV[13])

local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function earliest()
  local first = redis.call("zrange", exp, 0, 0, "WITHSCORES")
  if #first == 0 then return 0 end
  return tonumber(first[2])
end

local function keep_alive()
  if meta_ttl > 0 then
    for _, k in ipairs({meta, state, keys, exp}) do redis.call("pexpire", k, meta_ttl) end
  else
    redis.call("persist", meta)  -- created by a read, with a TTL: written now, kept
  end
end

local epoch = redis.call("hget", meta, "e")
if not epoch then
  epoch = ARGV[9]
  redis.call("del", state, keys, exp, stream)
  redis.call("hset", meta, "e", epoch, "s", 0)
end
redis.call("hset", meta, "ss", size, "st", stream_ttl, "mt", meta_ttl)
local top = tonumber(redis.call("hget", meta, "s"))

local old = redis.call("hget", state, key)
if old then
  local deadline = redis.call("zscore", exp, key)
  if deadline and tonumber(deadline) <= now then old = false end
end
if mode == "if_new" and old then
  if refresh == "1" and key_ttl > 0 then redis.call("zadd", exp, now + key_ttl, key) end
  keep_alive()
  return {top, epoch, "key_exists", earliest()}
end
if mode == "if_exists" and not old then
  return {top, epoch, "key_not_found", earliest()}
end
if not redis.call("zscore", keys, key) and redis.call("zcard", keys) >= max_keys then
  return {top, epoch, "max_keys", earliest()}
end

local offset = 0
if size > 0 then
  offset = redis.call("hincrby", meta, "s", 1)
  redis.call("xadd", stream, "MAXLEN", size, offset, "k", key, "r", "0", "x", now + stream_ttl, "d", blob)
  redis.call("pexpire", stream, stream_ttl)
end
redis.call("hset", state, key, offset .. ":" .. blob)
redis.call("zadd", keys, 0, key)
if key_ttl > 0 then
  redis.call("zadd", exp, now + key_ttl, key)
else
  redis.call("zrem", exp, key)
end
keep_alive()

local prev, prev_offset = "", 0
if ARGV[12] == "1" and old then
  local sep = string.find(old, ":", 1, true)
  prev_offset = tonumber(string.sub(old, 1, sep - 1))
  prev = string.sub(old, sep + 1)
end
local message = "M" .. offset .. ":" .. epoch .. ":0:" .. #key .. ":" .. #prev .. ":" .. prev_offset .. ":"
redis.call(ARGV[11], ARGV[10], message .. key .. prev .. blob)
return {offset, epoch, "", earliest()}
