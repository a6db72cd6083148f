-- An agent lets go of a conversation (resolved, transferred, or they went away), atomically freeing their
-- capacity and, for a transfer or a hand-back, putting the conversation into a queue.
-- KEYS: assignments hash, agent state hash, agent's conversation set, target queue (may be unused).
-- ARGV: conversation id, agent id, now ms, and a queue score, "head:<score if the queue is empty>" (before
-- everyone waiting) or "" for none.
-- Returns 1, or 0 when the agent does not hold the conversation.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('HINCRBY', KEYS[2], 'active', -1) < 0 then
  redis.call('HSET', KEYS[2], 'active', 0)
end
redis.call('HSET', KEYS[2], 'idle_since', ARGV[3])
if string.sub(ARGV[4], 1, 5) == 'head:' then
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  local score = tonumber(string.sub(ARGV[4], 6))
  if first[2] and tonumber(first[2]) <= score then score = tonumber(first[2]) - 1 end
  redis.call('ZADD', KEYS[4], score, ARGV[1])
elseif ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
end
return 1
