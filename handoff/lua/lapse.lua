-- An offer ends unaccepted (timed out, declined, or the agent left): the conversation goes back to its
-- place in the queue, the agent's slot is freed, and the agent is passed over for it next time.
-- KEYS: offers hash, offer deadlines, agent state hash, queue, passed-over set.
-- ARGV: conversation id, the offer exactly as read ("agent|score|queue"), passed-over ttl seconds.
-- Returns 1, or 0 when the offer changed meanwhile (accepted, or already lapsed).
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
local agent, score = string.match(ARGV[2], '^([^|]+)|([^|]+)|')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[3], 'active', -1) < 0 then
  redis.call('HSET', KEYS[3], 'active', 0)
end
redis.call('ZADD', KEYS[4], score, ARGV[1])
redis.call('SADD', KEYS[5], agent)
redis.call('EXPIRE', KEYS[5], ARGV[3])
return 1
