-- wrk script: POST the file named by the environment variable BODY to the URL
-- given on the command line, and print one JSON line of results at the end
-- (latencies in microseconds).
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
-- HEADER_LEN: the body is a KServe v2 JSON header of that many bytes and binary tensor data (Triton's binary extension).
local header_len = os.getenv("HEADER_LEN")
if header_len then
  wrk.headers["Inference-Header-Content-Length"] = header_len
  wrk.headers["Content-Type"] = "application/octet-stream"
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %.6f, "requests_per_s": %.3f, "errors": %d, "status_errors": %d, ' ..
    '"latency_us": {"p50": %.1f, "p90": %.1f, "p99": %.1f, "max": %.1f}}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6), errors, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
