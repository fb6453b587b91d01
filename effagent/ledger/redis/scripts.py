"""The Lua scripts of the Redis ledger: each write is one script, atomic across processes and machines."""

DROP = """
-- free hold ID of a scope: its zset entry, its hash entry and its share of the running totals
local function drop(z, h, id)
  redis.call('ZREM', z, id)
  local v = redis.call('HGET', h, id)
  if v then
    local c = string.find(v, ':', 1, true)
    local tok, usd = string.sub(v, 1, c - 1), string.sub(v, c + 1)  -- decimal strings: exact, no doubles
    if tok ~= '0' then redis.call('HINCRBY', h, '=tok', '-' .. tok) end
    if usd ~= '0' then redis.call('HINCRBY', h, '=nusd', '-' .. usd) end
    redis.call('HDEL', h, id)
  end
end
"""

KEEP = """
-- the zset Z and hash H of a scope's holds live a minute past a hold of TTL ms (then expire unless renewed)
local function keep(z, h, ttl)
  local k = ttl + 60000
  if redis.call('PTTL', z) < k then
    redis.call('PEXPIRE', z, k)
    redis.call('PEXPIRE', h, k)
  end
end
"""

RESERVE = DROP + KEEP + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, tok, usd, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = #KEYS / 3
if n > 0 and redis.call('HEXISTS', KEYS[3], id) == 1 then  -- a retried call: already held
  return {1, tonumber(redis.call('ZSCORE', KEYS[2], id)) or (now + ttl), ''}
end
local seen = {}  -- scope index, tokens and nano-usd spent, tokens and nano-usd held, of every scope read
local function reply(a, b, c)
  local r = {a, b, c}
  for _, v in ipairs(seen) do r[#r + 1] = v end
  return r
end
for i = 0, n - 1 do
  local u, z, h = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local dead = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, d in ipairs(dead) do drop(z, h, d) end
  local lt, lu = tonumber(ARGV[5 + 2 * i]), tonumber(ARGV[6 + 2 * i])
  if lt >= 0 or lu >= 0 then
    local s = redis.call('HMGET', u, 'in', 'out', 'nusd')
    local st = (tonumber(s[1]) or 0) + (tonumber(s[2]) or 0)
    local su = tonumber(s[3]) or 0
    local r = redis.call('HMGET', h, '=tok', '=nusd')
    local rt, ru = tonumber(r[1]) or 0, tonumber(r[2]) or 0
    seen[#seen + 1] = i
    seen[#seen + 1] = st
    seen[#seen + 1] = su
    seen[#seen + 1] = rt
    seen[#seen + 1] = ru
    if lt >= 0 and st + rt + tok > lt then return reply(0, i, 'tokens') end
    if lu >= 0 and su + ru + usd > lu then return reply(0, i, 'usd') end
  end
end
local hold = ARGV[2] .. ':' .. ARGV[3]
for i = 0, n - 1 do
  local z, h = KEYS[3 * i + 2], KEYS[3 * i + 3]
  redis.call('ZADD', z, now + ttl, id)
  redis.call('HSET', h, id, hold)
  redis.call('HINCRBY', h, '=tok', ARGV[2])
  redis.call('HINCRBY', h, '=nusd', ARGV[3])
  keep(z, h, ttl)
end
return reply(1, now + ttl, '')
"""

# KEYS: Z1, H1, ..., Zm, Hm of one hold; ARGV: id, ttl (ms). Pushes a live hold's expiry to now + ttl.
RENEW = KEEP + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local alive = 0
for j = 0, #KEYS / 2 - 1 do
  local z, h = KEYS[2 * j + 1], KEYS[2 * j + 2]
  if redis.call('ZSCORE', z, ARGV[1]) then  -- still counted (not dropped): keep it counted
    redis.call('ZADD', z, 'XX', now + ttl, ARGV[1])
    alive = 1
    keep(z, h, ttl)
  end
end
return alive
"""

# KEYS: seen, reclist, steps, runs, U1..Un, Z1, H1, ..., Zm, Hm[, the thread's grant hash and grant ids]
# ARGV: n, m, res_id, in, out, rsn, nusd, calls, crd, cwr, json, step, seen_ttl, run_ttl, run_id, ttl1..ttln
#       [, the thread's ttl (with its grant keys)]
# Returns {0} for a record already written, else {1, then per scope its new in, out, rsn, nusd, calls, crd, cwr}.
RECORD = DROP + """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local res = ARGV[3]
for j = 0, m - 1 do drop(KEYS[5 + n + 2 * j], KEYS[6 + n + 2 * j], res) end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[13]) == false then return {0} end
local fields = {'in', 'out', 'rsn', 'nusd', 'calls', 'crd', 'cwr'}
local out = {1}
for i = 1, n do
  local u = KEYS[4 + i]
  for f = 1, 7 do out[#out + 1] = redis.call('HINCRBY', u, fields[f], ARGV[3 + f]) end
  local ttl = tonumber(ARGV[15 + i])
  if ttl > 0 then redis.call('EXPIRE', u, ttl) end  -- refreshed: a scope in use keeps its total
end
local run_ttl = tonumber(ARGV[14])
redis.call('RPUSH', KEYS[2], ARGV[11])
if ARGV[12] ~= '' then redis.call('SADD', KEYS[3], ARGV[12]) end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[4], now, ARGV[15])
if run_ttl > 0 then
  redis.call('EXPIRE', KEYS[2], run_ttl)
  if ARGV[12] ~= '' then redis.call('EXPIRE', KEYS[3], run_ttl) end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - run_ttl)  -- runs whose records have expired
  redis.call('EXPIRE', KEYS[4], run_ttl)
end
local g = 5 + n + 2 * m  -- the thread's grant keys, when the record has a thread: they live as long as its total
if KEYS[g] and tonumber(ARGV[16 + n]) > 0 then
  redis.call('EXPIRE', KEYS[g], ARGV[16 + n])
  redis.call('EXPIRE', KEYS[g + 1], ARGV[16 + n])
end
return out
"""

# KEYS: grant hash, grant ids set; ARGV: id, tokens, nano-usd, ttl (s, 0 = none), cap tokens, cap nano (-1 = none)
GRANT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 'seen' end
local tok, usd = tonumber(ARGV[2]), tonumber(ARGV[3])
local g = redis.call('HMGET', KEYS[1], 'tok', 'nusd')
local ct, cu = tonumber(ARGV[5]), tonumber(ARGV[6])
if (ct >= 0 and (tonumber(g[1]) or 0) + tok > ct) or (cu >= 0 and (tonumber(g[2]) or 0) + usd > cu) then
  return 'over'
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'tok', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'nusd', ARGV[3])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return 'added'
"""

RELEASE = DROP + """
for j = 0, #KEYS / 2 - 1 do drop(KEYS[2 * j + 1], KEYS[2 * j + 2], ARGV[1]) end
return 1
"""

HELD = DROP + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do drop(KEYS[1], KEYS[2], d) end
local r = redis.call('HMGET', KEYS[2], '=tok', '=nusd')
return {tonumber(r[1]) or 0, r[2] or '0'}
"""

