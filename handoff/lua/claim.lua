-- Give a waiting conversation to one agent, atomically: whoever runs this first gets it, nobody twice.
-- KEYS: assignments hash, the conversation's queue, agent state hash, agent's conversation set, offers
-- hash, offer deadlines.
-- ARGV: conversation id, agent id.
-- Returns {1, "claimed"|"accepted"|"already", queue score}; {0, holder} when another agent has it; {-4, agent}
-- when it is offered to another agent; {-1, "not_waiting"}; {-2, status} when the agent is not online;
-- {-3, active} when the agent is at capacity.
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder then
  if holder == ARGV[2] then return {1, 'already', ''} end
  return {0, holder}
end
local offer = redis.call('HGET', KEYS[5], ARGV[1])
if offer then
  local offered_to, score = string.match(offer, '^([^|]+)|([^|]*)|')
  if offered_to ~= ARGV[2] then return {-4, offered_to} end
  if redis.call('HGET', KEYS[3], 'status') ~= 'online' then return {-2, 'not online'} end
  -- Accepting an offer: the slot was reserved when it was made.
  redis.call('HDEL', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[1])
  return {1, 'accepted', score}
end
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'online' then return {-2, status or 'offline'} end
local capacity = tonumber(redis.call('HGET', KEYS[3], 'capacity') or '0')
local active = tonumber(redis.call('HGET', KEYS[3], 'active') or '0')
if active >= capacity then return {-3, tostring(active)} end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score then return {-1, 'not_waiting'} end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'active', 1)
return {1, 'claimed', score}
