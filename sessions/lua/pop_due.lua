-- Take the timers that are due, each with a lease: it is pushed back by the lease, so exactly one sweeper
-- handles it now, and if that sweeper dies another picks it up when the lease runs out.
-- KEYS: a due-time sorted set. ARGV: now ms, lease ms, max count.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), member)
end
return due
