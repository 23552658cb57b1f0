-- Read the channel's stream top and (optionally) its live publications.
--
-- A channel without a stream gets one here (offset 0, the epoch in ARGV[5]), so the
-- epoch a client is given on subscribe is the one later publications carry.
--
-- KEYS[1] meta HASH   KEYS[2] history STREAM
-- ARGV[1] limit (-1 all, 0 none, N at most N)   ARGV[2] since offset ("" = none)
-- ARGV[3] reverse "1"/"0"   ARGV[4] meta TTL (ms, 0 = never expires)   ARGV[5] new epoch
-- Returns {top, epoch, offset1, blob1, offset2, blob2, ...}.
local meta_key, stream_key = KEYS[1], KEYS[2]
local limit, since, reverse, meta_ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])

local meta = redis.call("hmget", meta_key, "e", "s")
local epoch, top = meta[1], tonumber(meta[2])
if not epoch then
  epoch, top = ARGV[5], 0
  redis.call("del", stream_key)
  redis.call("hset", meta_key, "e", epoch, "s", 0)
end
if meta_ttl > 0 then
  redis.call("pexpire", meta_key, meta_ttl)
end

local out = {top, epoch}
if limit == 0 then return out end

local entries
if reverse == "1" then
  local hi = "+"
  if since ~= "" then
    hi = tonumber(since) - 1
    if hi < 1 then return out end
  end
  entries = redis.call("xrevrange", stream_key, hi, "-")
else
  local lo = "-"
  if since ~= "" then lo = tonumber(since) + 1 end
  entries = redis.call("xrange", stream_key, lo, "+")
end

local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for _, entry in ipairs(entries) do
  if tonumber(entry[2][2]) > now then
    out[#out + 1] = tonumber(string.match(entry[1], "^(%d+)"))
    out[#out + 1] = entry[2][4]
    n = n + 1
    if n == limit then break end
  end
end
return out
