-- The wrk script of aegis-bench (driven by crates/aegis-bench/src/load.rs); the same script for
-- every row of a run, so the load generator does the same work per response on every route.
--
-- $AEGIS_BENCH_REQUESTS names a file with one request per line, fields separated by tabs:
--   METHOD  PATH  AUTHORIZATION-or-empty  JSON-BODY-or-empty
-- Each thread sends them in turn from its own offset. Every response's decision (the first
-- `"decision":"…"` in a 200 body) is tallied. done() writes one JSON object to
-- $AEGIS_BENCH_RESULT: wrk's totals and errors, the decisions, and every distinct latency in
-- microseconds with its count, so that the harness computes the percentiles itself and can merge
-- the histograms of several wrk processes (one per replica).

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  requests = {}
  for line in io.lines(os.getenv("AEGIS_BENCH_REQUESTS")) do
    local method, path, authorization, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if authorization ~= "" then
      headers["Authorization"] = authorization
    end
    if body == "" then
      body = nil
    else
      headers["Content-Type"] = "application/json"
    end
    table.insert(requests, wrk.format(method, path, headers, body))
  end
  position = id % #requests
  decisions = {}
end

function request()
  position = position % #requests + 1
  return requests[position]
end

function response(status, headers, body)
  if status == 200 then
    local decision = body:match('"decision":"([%w_]+)"')
    if decision then
      decisions[decision] = (decisions[decision] or 0) + 1
    end
  end
end

function done(summary, latency, rates)
  local decided = {}
  for _, thread in ipairs(threads) do
    for decision, count in pairs(thread:get("decisions")) do
      decided[decision] = (decided[decision] or 0) + count
    end
  end
  local decision_fields = {}
  for decision, count in pairs(decided) do
    table.insert(decision_fields, string.format('"%s":%d', decision, count))
  end
  local latencies = {}
  for i = 1, #latency do
    local value, count = latency(i)
    table.insert(latencies, string.format("[%d,%d]", value, count))
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("AEGIS_BENCH_RESULT"), "w"))
  out:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"decisions":{%s},"latency_us":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(decision_fields, ","), table.concat(latencies, ",")))
  out:close()
end
