-- nums.lua: the bit numbers of users in one shard, giving new users the next number.
-- A number, once given, belongs to its user for the life of the store and is never
-- reused, so a worker may cache it; `P:{Ps}:seq` holds the next number to give.
--
-- KEYS[1]  the shard's offsets hash (routes the call; every key here shares its tag)
-- ARGV[1]  key prefix of the shard, e.g. "es:{es0}:"
-- ARGV[2]  the caller's witness token, ARGV[3] seconds its witness outlives its last call
-- ARGV[4]  the witness count the caller last got ('' when it caches no number)
-- ARGV[5...] bucket, user_id, bucket, user_id, ...
-- Returns {1, witness count, {number, ...}} in the order asked, or {0} (nothing done)
-- when the witness is not ARGV[4]: Redis lost some of the caller's earlier calls (it
-- restarted from an older file, or a lagging replica took over), so numbers the caller
-- caches may have been given again; it must forget them all and ask afresh. Each call
-- checks the one before, so while Redis holds the count of the caller's latest call it
-- holds every number the caller caches; lua/apply.lua checks that before any bit.

local tag = ARGV[1]
local witness = tag .. 'w:' .. ARGV[2]
if ARGV[4] ~= '' and redis.call('GET', witness) ~= ARGV[4] then return {0} end
local seq = tag .. 'seq'
local next_n = tonumber(redis.call('GET', seq) or '0')
local first = next_n
local out = {}
for i = 5, #ARGV, 2 do
  local key = tag .. 'n:' .. ARGV[i]
  -- HSETNX first: one call for a new user (the usual case here: the caller asks only
  -- for users it has no number for), two for a known one
  local n = string.format('%d', next_n)
  if redis.call('HSETNX', key, ARGV[i + 1], n) == 1 then
    next_n = next_n + 1
  else
    n = redis.call('HGET', key, ARGV[i + 1])
  end
  out[#out + 1] = n
end
if next_n > first then redis.call('SET', seq, string.format('%d', next_n)) end
local count = redis.call('INCR', witness)
redis.call('EXPIRE', witness, ARGV[3])
return {1, count, out}
