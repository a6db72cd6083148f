-- Conversations whose quiet-check is due, taken once across instances: each is pushed back by a lease, so
-- an instance that dies mid-check leaves it for another; the one that checks it removes or re-arms it.
-- KEYS[1] the due set; ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] most to take.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
end
return due
