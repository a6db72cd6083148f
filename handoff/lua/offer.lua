-- Offer the conversation at a queue's head to one agent, reserving one of their slots until they accept
-- or the offer lapses. Atomic on the desk's tag, so two dispatchers never offer one conversation twice.
-- KEYS: queue, offers hash, offer deadlines, agent state hash, assignments hash.
-- ARGV: conversation id, agent id, deadline ms, queue name.
-- Returns 1 when offered; 0 when the conversation is no longer waiting; -2 agent not online; -3 agent full.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then
  return 0
end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if redis.call('HGET', KEYS[4], 'status') ~= 'online' then return -2 end
local capacity = tonumber(redis.call('HGET', KEYS[4], 'capacity') or '0')
local active = tonumber(redis.call('HGET', KEYS[4], 'active') or '0')
if active >= capacity then return -3 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. score .. '|' .. ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'active', 1)
return 1
