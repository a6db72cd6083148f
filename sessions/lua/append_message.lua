-- Append one message to a transcript exactly once, then notify live readers.
-- KEYS: state hash, transcript stream, event stream, external-id claim key.
-- ARGV: ttl_ms, message json, live channel, has_external_id ("1"/"0"), updated_at, names of the fields that
--       hold JSON (space separated), most messages the transcript may hold ("0": no cap), the updated_at the
--       caller last wrote here ("": none known), field/value pairs...
-- Returns {message id, duplicate flag, state as one JSON object}; {false} when the conversation does not
-- exist; {false, "full"} when the transcript already holds the most it may (a resend is still answered). The state comes as JSON (fields holding JSON embedded as they are) so the client parses it in one
-- step rather than field by field. When the state's updated_at before this append is still the one the caller
-- last wrote (every write to the state hash sets it), nobody else changed the state since the caller's own
-- step, which the caller still holds: {message id, 0} only, and the caller applies this append's fields.
local function state_json()
  local json_fields = {}
  for name in string.gmatch(ARGV[6], '%S+') do
    json_fields[name] = true
  end
  local flat = redis.call('HGETALL', KEYS[1])
  local parts = {}
  for i = 1, #flat, 2 do
    local name, value = flat[i], flat[i + 1]
    if name ~= 'token_hash' then
      if json_fields[name] then
        parts[#parts + 1] = cjson.encode(name) .. ':' .. value
      else
        parts[#parts + 1] = cjson.encode(name) .. ':' .. cjson.encode(value)
      end
    end
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {false}
end
if ARGV[4] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then
    return {seen, 1, state_json()}
  end
end
local cap = tonumber(ARGV[7])
if cap > 0 and redis.call('XLEN', KEYS[2]) >= cap then
  return {false, 'full'}
end
local unchanged = ARGV[8] ~= '' and redis.call('HGET', KEYS[1], 'updated_at') == ARGV[8]
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[4], id, 'PX', ARGV[1], 'NX')
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[5], unpack(ARGV, 9))
for i = 1, 3 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
redis.call('PUBLISH', ARGV[3], id .. '\n' .. ARGV[2])
if unchanged then
  return {id, 0}
end
return {id, 0, state_json()}
