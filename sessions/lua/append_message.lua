-- Append one message to a transcript exactly once, then notify live readers.
-- KEYS: state hash, transcript stream, event stream, external-id claim key.
-- ARGV: ttl_ms, message json, live channel, has_external_id ("1"/"0"), updated_at, field/value pairs...
-- Returns {message id, duplicate flag, flat state hash}; {false} when the conversation does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {false}
end
if ARGV[4] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    return {seen, 1, redis.call('HGETALL', KEYS[1])}
  end
end
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[4], id, 'PX', ARGV[1], 'NX')
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5], unpack(ARGV, 6))
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], id .. '\n' .. ARGV[2])
return {id, 0, redis.call('HGETALL', KEYS[1])}
