-- POST /events, 100 events per request, each with a unique event_id.
local n_items = tonumber(os.getenv("N_ITEMS") or "3952")
local run = os.getenv("RUN_ID") or tostring(os.time())
local counter = 0
local thread_id = 0
local threads = {}
setup = function(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end
init = function(args)
  math.randomseed(os.time() + thread_id)
end
request = function()
  counter = counter + 1
  local parts = {}
  for i = 1, 100 do
    parts[i] = string.format(
      '{"user_id":"bench-%d","item_id":"%d","event_id":"%s-%d-%d-%d","type":"click"}',
      math.random(1, 100000), math.random(1, n_items), run, thread_id, counter, i)
  end
  return wrk.format("POST", "/events", {["Content-Type"] = "application/json"},
                    '{"events":[' .. table.concat(parts, ",") .. ']}')
end
dofile(os.getenv("WRK_DIR") .. "/report.lua")
