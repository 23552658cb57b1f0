-- Read a page of a map channel's state, in key order, without the expired keys.
--
-- KEYS[1] meta   KEYS[2] state   KEYS[3] keys   KEYS[4] expiry   KEYS[5] stream
-- ARGV[1] cursor (the last key of the previous page, "" for the first)
-- ARGV[2] limit (0: all)   ARGV[3] one key only ("" for a page)   ARGV[4] epoch for a new map
-- ARGV[5] TTL (ms) of the metadata of a map this read creates
-- Returns {top, epoch, next cursor ("" after the last page), key1, entry1, key2, entry2, ...}
-- where an entry is offset ":" blob.
local meta, state, keys, exp, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cursor, limit, only = ARGV[1], tonumber(ARGV[2]), ARGV[3]

local m = redis.call("hmget", meta, "e", "s")
local epoch, top = m[1], tonumber(m[2])
if not epoch then
  epoch, top = ARGV[4], 0
  redis.call("del", state, keys, exp, stream)
  redis.call("hset", meta, "e", epoch, "s", 0)
  -- a map only read (a client may name any channel) is not kept forever: its first write
  -- keeps it as long as its options say
  redis.call("pexpire", meta, ARGV[5])
end

local t = redis.call("time")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local members
if only ~= "" then
  members = {only}
else
  local from = "-"
  if cursor ~= "" then from = "(" .. cursor end
  if limit > 0 then
    members = redis.call("zrangebylex", keys, from, "+", "LIMIT", 0, limit + 1)
  else
    members = redis.call("zrangebylex", keys, from, "+")
  end
end

local next_cursor = ""
if limit > 0 and only == "" and #members > limit then
  next_cursor = members[limit]
  members[limit + 1] = nil
end
local out = {top, epoch, next_cursor}
for _, key in ipairs(members) do
  local deadline = redis.call("zscore", exp, key)
  if not deadline or tonumber(deadline) > now then
    local entry = redis.call("hget", state, key)
    if entry then
      out[#out + 1] = key
      out[#out + 1] = entry
    end
  end
end
return out
