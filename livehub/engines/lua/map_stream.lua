-- Read a map channel's stream top and (optionally) its live changes after an offset.
--
-- KEYS[1] meta   KEYS[2] state   KEYS[3] keys   KEYS[4] expiry   KEYS[5] stream
-- ARGV[1] limit (-1 all, 0 none, N at most N)   ARGV[2] since offset   ARGV[3] epoch for a new map
-- ARGV[4] TTL (ms) of the metadata of a map this read creates
-- Returns {top, epoch, offset1, key1, removed1, blob1, ...}.
local meta, state, keys, exp, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local limit, since = tonumber(ARGV[1]), tonumber(ARGV[2])

local m = redis.call("hmget", meta, "e", "s")
local epoch, top = m[1], tonumber(m[2])
if not epoch then
  epoch, top = ARGV[3], 0
  redis.call("del", state, keys, exp, stream)
  redis.call("hset", meta, "e", epoch, "s", 0)
  -- a map only read (a client may name any channel) is not kept forever: its first write
  -- keeps it as long as its options say
  redis.call("pexpire", meta, ARGV[4])
end
local out = {top, epoch}
if limit == 0 then return out end

local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for _, entry in ipairs(redis.call("xrange", stream, since + 1, "+")) do
  local f = entry[2]  -- k key r removed x expiry d blob
  if tonumber(f[6]) > now then
    out[#out + 1] = tonumber(string.match(entry[1], "^(%d+)"))
    out[#out + 1] = f[2]
    out[#out + 1] = f[4]
    out[#out + 1] = f[8]
    n = n + 1
    if n == limit then break end
  end
end
return out
