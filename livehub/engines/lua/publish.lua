-- Append a publication to the channel's history and broadcast it, atomically.
--
-- Running both in one script is what makes offsets grow by exactly one and lets every
-- node receive publications in offset order: no other publish of the same channel
-- can run between the HINCRBY and the PUBLISH.
--
-- KEYS[1] meta HASH (e = epoch, s = top offset)   KEYS[2] history STREAM (id = offset-0)
-- KEYS[3] idempotency result (STRING "offset:epoch"; unused when ARGV[8] is 0)
-- ARGV[1] publication blob     ARGV[2] history size        ARGV[3] history TTL (ms)
-- ARGV[4] meta TTL (ms, 0 = never expires)                 ARGV[5] epoch for a new stream
-- ARGV[6] pub/sub channel      ARGV[7] "publish" or "spublish"
-- ARGV[8] idempotent result TTL (ms, 0 = not idempotent)   ARGV[9] use_delta "1"/"0"
-- Returns {offset, epoch, 1 if an earlier publish with the same key made this a no-op}.
--
-- Stream entries are {"x", expiry unix ms, "d", blob}. The message sent on ARGV[6] is
--   "P" offset ":" epoch ":" use_delta ":" prev_offset ":" #prev ":" prev_blob blob
local meta_key, stream_key, result_key = KEYS[1], KEYS[2], KEYS[3]
local blob = ARGV[1]
local size, ttl, meta_ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local result_ttl, use_delta = tonumber(ARGV[8]), ARGV[9]

if result_ttl > 0 then
  local cached = redis.call("get", result_key)
  if cached then
    local sep = string.find(cached, ":", 1, true)
    return {tonumber(string.sub(cached, 1, sep - 1)), string.sub(cached, sep + 1), 1}
  end
end

local offset, epoch, prev_offset, prev = 0, "", 0, ""
if size > 0 and ttl > 0 then
  local t = redis.call("time")
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  epoch = redis.call("hget", meta_key, "e")
  if not epoch then
    -- a new stream: entries left from a lost epoch must not mix with the new one
    epoch = ARGV[5]
    redis.call("del", stream_key)
    redis.call("hset", meta_key, "e", epoch, "s", 0)
  end
  offset = redis.call("hincrby", meta_key, "s", 1)
  if meta_ttl > 0 then
    redis.call("pexpire", meta_key, meta_ttl)
  end
  -- drop the expired head, so the stream's last entry is a live predecessor
  while true do
    local head = redis.call("xrange", stream_key, "-", "+", "COUNT", 64)
    local expired = {}
    for _, entry in ipairs(head) do
      if tonumber(entry[2][2]) > now then break end
      expired[#expired + 1] = entry[1]
    end
    if #expired > 0 then redis.call("xdel", stream_key, unpack(expired)) end
    if #expired < 64 then break end
  end
  if use_delta == "1" then
    local last = redis.call("xrevrange", stream_key, "+", "-", "COUNT", 1)
    if #last > 0 then
      prev_offset = tonumber(string.match(last[1][1], "^(%d+)"))
      prev = last[1][2][4]
    end
  end
  redis.call("xadd", stream_key, "MAXLEN", size, offset, "x", now + ttl, "d", blob)
  redis.call("pexpire", stream_key, ttl)
end

local message = "P" .. offset .. ":" .. epoch .. ":" .. use_delta .. ":" .. prev_offset .. ":" .. #prev .. ":"
redis.call(ARGV[7], ARGV[6], message .. prev .. blob)

if result_ttl > 0 then
  redis.call("set", result_key, offset .. ":" .. epoch, "PX", result_ttl)
end
return {offset, epoch, 0}
