-- Remove keys of a map channel: one key (ARGV[1] "key"), or every key whose TTL has passed
-- (ARGV[1] "expired", at most 100 at a time); each removal is appended to the stream and
-- broadcast like a change (see map_publish.lua), atomically.
--
-- KEYS as map_publish.lua.   ARGV[2] the key (mode "key")   ARGV[3] epoch for a new map
-- ARGV[4] pub/sub channel    ARGV[5] "publish"/"spublish"
-- The stream size and TTLs are the ones map_publish.lua stored in the meta HASH.
-- Returns {offset, epoch, suppressed reason or number removed, earliest key expiry ms (0: none)}.
-- A removal's stream entry and message carry the removed entry's blob (receivers keep only
-- its tags) with "r" = "1".
local meta, state, keys, exp, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function earliest()
  local first = redis.call("zrange", exp, 0, 0, "WITHSCORES")
  if #first == 0 then return 0 end
  return tonumber(first[2])
end

local epoch = redis.call("hget", meta, "e")
if not epoch then  -- no map: nothing to remove, and nothing is created
  if ARGV[1] == "expired" then return {0, "", 0, 0} end
  return {0, ARGV[3], "key_not_found", 0}
end
local m = redis.call("hmget", meta, "s", "ss", "st")
local top, size, stream_ttl = tonumber(m[1]), tonumber(m[2] or "0"), tonumber(m[3] or "0")

local function remove(key)
  local old = redis.call("hget", state, key)
  if not old then return false end
  local blob = string.sub(old, string.find(old, ":", 1, true) + 1)
  redis.call("hdel", state, key)
  redis.call("zrem", keys, key)
  redis.call("zrem", exp, key)
  local offset = 0
  if size > 0 then
    offset = redis.call("hincrby", meta, "s", 1)
    top = offset
    redis.call("xadd", stream, "MAXLEN", size, offset, "k", key, "r", "1", "x", now + stream_ttl, "d", blob)
    redis.call("pexpire", stream, stream_ttl)
  end
  local message = "M" .. offset .. ":" .. epoch .. ":1:" .. #key .. ":0:0:"
  redis.call(ARGV[5], ARGV[4], message .. key .. blob)
  return true
end

if ARGV[1] == "key" then
  if not remove(ARGV[2]) then return {top, epoch, "key_not_found", earliest()} end
  return {top, epoch, "", earliest()}
end
local expired = redis.call("zrangebyscore", exp, "-inf", now, "LIMIT", 0, 100)
for _, key in ipairs(expired) do remove(key) end
return {top, epoch, #expired, earliest()}
