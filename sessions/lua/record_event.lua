-- Record an event on a conversation that still exists, then tell live readers. Nothing is written for an
-- expired conversation (no stream left behind without a TTL).
-- KEYS: state hash, event stream. ARGV: live channel, event json.
-- Returns 1, or 0 when the conversation does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('PUBLISH', ARGV[1], 'event\n' .. ARGV[2])
return 1
