-- Move a conversation to a new state only from an allowed one, record the event, notify live readers.
-- KEYS: state hash, event stream. ARGV: ttl_ms, allowed-from states (space separated), new state,
-- event json, live channel, updated_at, field/value pairs...
-- Returns {1, new state, channel} on success, {0, current state} when refused, {false} when missing.
local current = redis.call('HGET', KEYS[1], 'state')
if not current then
  return {false}
end
local allowed = false
for s in string.gmatch(ARGV[2], '%S+') do
  if s == current then allowed = true end
end
if not allowed then
  return {0, current}
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updated_at', ARGV[6], unpack(ARGV, 7))
local id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[5], 'event\n' .. ARGV[4])
return {1, ARGV[3], redis.call('HGET', KEYS[1], 'channel')}
