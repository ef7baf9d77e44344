-- wrk script for piggyback's benchmarks; see benchmarks/README.md.
--
--   wrk ... -s load.lua URL -- MODE ARG THREADS
--
-- MODE:
--   event  ARG is a file of page tokens, one a line. Each request is the next event of
--          the next page (round robin over this thread's pages): s grows by one per
--          page, a acknowledges the page's previous event. Run one connection per
--          thread (-t N -c N): then a page's previous event has always been answered.
--   poll   the same, without a handler, and a = 0: an empty poll, which finds nothing
--          waiting and is answered without a batch, so there is nothing to acknowledge.
--   fresh  the same pages, but a = 0: for the memory store, whose two workers each
--          know only the pages they served (a page's next event may reach the other).
--   get    ARG is a path; every request GETs it.
--   sijax  ARG is a path; every request is a Sijax call of "bump" (POST).
-- THREADS: wrk's -t, so each thread takes its own share of the pages.

local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

local mode, arg
local tokens, seqs, count, cursor = {}, {}, 0, 0
local fixed_request

function init(args)
  mode, arg = args[1], args[2]
  local threads = tonumber(args[3]) or 1
  if mode == "get" then
    fixed_request = wrk.format("GET", arg)
    return
  end
  if mode == "sijax" then
    fixed_request = wrk.format("POST", arg,
      {["Content-Type"] = "application/x-www-form-urlencoded"},
      "sijax_rq=bump&sijax_args=%5B%5D")
    return
  end
  local line_number = 0
  for line in io.lines(arg) do
    if line_number % threads == thread_id then
      count = count + 1
      tokens[count] = line
      seqs[count] = 0
    end
    line_number = line_number + 1
  end
  if count == 0 then
    error("no page tokens for thread " .. thread_id .. " in " .. arg)
  end
end

local function event_request(page, seq)
  local ack = seq - 1
  if mode == "fresh" or mode == "poll" then
    ack = 0
  end
  local path = "/_pb/event?p=" .. tokens[page] .. "&s=" .. seq .. "&a=" .. ack
  if mode ~= "poll" then
    path = path .. "&h=bump&e=click&t=go"
  end
  return wrk.format("GET", path)
end

-- wrk calls request() once on thread 0 to check it, and never sends that request.
-- That first call must not use up a sequence number (the page's next event would
-- then acknowledge an answer it never got), so it only peeks at the next request.
local peek = nil

function request()
  if fixed_request then
    return fixed_request
  end
  if peek == nil then
    peek = false
    if thread_id == 0 then
      return event_request(cursor % count + 1, seqs[cursor % count + 1] + 1)
    end
  end
  cursor = cursor % count + 1
  local seq = seqs[cursor] + 1
  seqs[cursor] = seq
  return event_request(cursor, seq)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    "PBRESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
