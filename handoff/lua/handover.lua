-- A warm transfer completes: the conversation passes from one agent to another in one step, so it always
-- has exactly one holder (never back in a queue in between, where someone else could take it).
-- KEYS: assignments hash, from agent's state hash, from agent's conversation set, to agent's state hash,
-- to agent's conversation set.
-- ARGV: conversation id, from agent id, to agent id, now ms.
-- Returns 1, or 0 when the first agent no longer holds it.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('HINCRBY', KEYS[2], 'active', -1) < 0 then
  redis.call('HSET', KEYS[2], 'active', 0)
end
redis.call('HSET', KEYS[2], 'idle_since', ARGV[4])
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'active', 1)
return 1
