-- Record an event on a conversation that still exists, setting fields of its state in the same step, then
-- tell live readers. Nothing is written for an expired conversation (no stream left behind without a TTL).
-- KEYS: state hash, event stream. ARGV: live channel, event json, field/value pairs...
-- Returns 1, or 0 when the conversation does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[1], 'event\n' .. ARGV[2])
return 1
