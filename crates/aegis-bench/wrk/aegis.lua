-- The wrk script of aegis-bench (driven by crates/aegis-bench/src/load.rs); the same script for
-- every row of a run, so the load generator does the same work per response on every route.
--
-- $AEGIS_BENCH_REQUESTS names a file with one request per line, fields separated by tabs:
--   METHOD  PATH  AUTHORIZATION-or-empty  JSON-BODY-or-empty  [Name: value ...]
-- (the fields after the body are further headers). Each thread sends them in turn from its own
-- offset. Every 200 response's outcome is tallied: its decision (the first `"decision":"…"`),
-- or for an MCP JSON-RPC answer `mcp_result` (a tool result), `mcp_tool_error` (a result with
-- `"isError":true`, which is also how the gateway answers a refused call) or `mcp_rpc_error`. done() writes one JSON object to
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
    local fields = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      table.insert(fields, field)
    end
    local method, path, authorization, body = fields[1], fields[2], fields[3], fields[4]
    local headers = {}
    if authorization ~= "" then
      headers["Authorization"] = authorization
    end
    if body == "" then
      body = nil
    else
      headers["Content-Type"] = "application/json"
    end
    for i = 5, #fields do
      local name, value = fields[i]:match("^([^:]+):%s*(.*)$")
      headers[name] = value
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

function mcp_outcome(body)
  if body:find('"isError":true', 1, true) then
    return "mcp_tool_error"
  elseif body:find('"result":', 1, true) then
    return "mcp_result"
  else
    return "mcp_rpc_error"
  end
end

function response(status, headers, body)
  if status == 200 then
    local decision = body:match('"decision":"([%w_]+)"')
    if not decision and body:find('"jsonrpc"', 1, true) then
      decision = mcp_outcome(body)
    end
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
