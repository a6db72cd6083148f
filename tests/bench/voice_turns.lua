-- wrk script for bench_voice.py: replays pre-built, pre-signed voice turns (raw HTTP requests).
--
--   wrk -t N -c N -d 8s -s voice_turns.lua http://127.0.0.1:PORT/ -- DIR
--
-- Run with as many threads as connections: each wrk thread then has exactly one connection, and thread i
-- replays DIR/i.req, the turns of call i in order (n = 1, 2, ...). A connection waits for each answer
-- before it sends the next request, so one call's turns are sequential, as on a real phone.
-- DIR/i.req holds the requests one after another, each as "<length in bytes>\n<request>".
-- done() prints one line, "BENCH {json}", for bench_voice.py to read.

local threads = {}
local created = 0

function setup(thread)
   thread:set("id", created)
   created = created + 1
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1] .. "/" .. id .. ".req", "rb"))
   local data = file:read("*a")
   file:close()
   turns = {}
   local pos = 1
   while pos <= #data do
      local newline = data:find("\n", pos, true)
      local length = tonumber(data:sub(pos, newline - 1))
      turns[#turns + 1] = data:sub(newline + 1, newline + length)
      pos = newline + 1 + length
   end
   issued = 0   -- request() calls so far (wrk calls it once on thread 0 before the run, to check it)
   wrapped = 0  -- times this call's turns ran out and started again (the bare handler may; never the gateway)
end

function request()
   issued = issued + 1
   local index = (issued - 1) % #turns + 1
   if index == 1 and issued > 1 then
      wrapped = wrapped + 1
   end
   return turns[index]
end

function done(summary, latency, requests)
   local issued_all, wrapped_all, most = 0, 0, 0
   for _, thread in ipairs(threads) do
      local issued = thread:get("issued")
      issued_all = issued_all + issued
      wrapped_all = wrapped_all + thread:get("wrapped")
      most = math.max(most, issued)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "issued": %d, "wrapped": %d, "most": %d, "threads": %d, '
      .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
      summary.requests, summary.duration, issued_all, wrapped_all, most, #threads,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout))
end
