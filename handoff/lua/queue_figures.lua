-- Each queue's figures in one step: depth, backlog, and since when its longest-waiting entry has waited.
-- KEYS: each queue's live sorted set and its backlog, in pairs (all on the desk's tag).
-- ARGV: the score width of one priority (queues.py's _PRIORITY_STEP), the number of priorities.
-- A score is the priority's band plus the epoch ms the entry started waiting, so the oldest entry of a
-- queue is the oldest of its bands' heads: at most one entry read per priority, however long the queue.
-- Returns depth, backlog, oldest epoch ms (-1: nobody waits), for each pair of keys in turn.
local step = tonumber(ARGV[1])
local bands = tonumber(ARGV[2])
local figures = {}
for i = 1, #KEYS, 2 do
  local oldest = -1
  for band = 0, bands - 1 do
    local low = band * step
    local head = redis.call('ZRANGEBYSCORE', KEYS[i], low, low + step - 1, 'WITHSCORES', 'LIMIT', 0, 1)
    if head[2] then
      local since = tonumber(head[2]) % step
      if oldest < 0 or since < oldest then oldest = since end
    end
  end
  figures[#figures + 1] = redis.call('ZCARD', KEYS[i])
  figures[#figures + 1] = redis.call('ZCARD', KEYS[i + 1])
  figures[#figures + 1] = oldest
end
return figures
