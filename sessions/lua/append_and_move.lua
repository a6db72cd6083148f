-- Append one message and move the conversation to a new state in one atomic step, so a handoff's
-- announcement and its state change are never seen apart; then notify live readers (message first).
-- KEYS: state hash, transcript stream, event stream.
-- ARGV: ttl_ms, message json, live channel, updated_at, allowed-from states (space separated), new state,
--       number of events N, "1" to return the state hash, the updated_at the caller last wrote here ("":
--       none known), N event jsons, field/value pairs...
-- Returns {1, message id, flat state hash or nothing, 1 when the state's updated_at before this step was
-- still the caller's (nobody else changed it since: every write to the state hash sets updated_at) else 0};
-- {0, current state} when refused; {false} when missing.
local current = redis.call('HGET', KEYS[1], 'state')
if not current then
  return {false}
end
local allowed = false
for s in string.gmatch(ARGV[5], '%S+') do
  if s == current then allowed = true end
end
if not allowed then
  return {0, current}
end
local n = tonumber(ARGV[7])
local unchanged = 0
if ARGV[9] ~= '' and redis.call('HGET', KEYS[1], 'updated_at') == ARGV[9] then
  unchanged = 1
end
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[1], 'state', ARGV[6], 'updated_at', ARGV[4], unpack(ARGV, 10 + n))
for i = 1, n do
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[9 + i])
end
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], id .. '\n' .. ARGV[2])
for i = 1, n do
  redis.call('PUBLISH', ARGV[3], 'event\n' .. ARGV[9 + i])
end
if ARGV[8] == '1' then
  return {1, id, redis.call('HGETALL', KEYS[1]), unchanged}
end
return {1, id, '', unchanged}
