-- One outcome record and what it adds to its day's counters, in one step on the day's hash tag.
-- KEYS[1] the day's records stream, KEYS[2] the day's counters hash
-- ARGV[1] when both expire (unix seconds), ARGV[2] the record's JSON, then counter field, amount pairs.
redis.call('XADD', KEYS[1], '*', 'r', ARGV[2])
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[2], ARGV[1])
return 1
