-- Take one token from a token bucket, or say how long until one is there.
-- KEYS: the bucket hash (fields t: tokens left, ts: when last counted, ms).
-- ARGV: capacity (the burst), tokens added per second, now (ms).
-- Returns 0 when a token was taken; else the milliseconds until one will be there (nothing is written).
local capacity = tonumber(ARGV[1])
local per_ms = tonumber(ARGV[2]) / 1000
local now = tonumber(ARGV[3])
local saved = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(saved[1]) or capacity
local since = tonumber(saved[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - since) * per_ms)
if tokens < 1 then
  return math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens - 1), 'ts', now)
-- A bucket left alone until it is full again is the same as no bucket.
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / per_ms) + 1000)
return 0
