-- wrk script: every request asks for a fresh random public IPv4 address, then prints one
-- parseable result line. Used against geobridge and nginx alike.
local skip = { [0] = true, [10] = true, [100] = true, [127] = true, [169] = true,
               [172] = true, [192] = true, [198] = true, [203] = true }

math.randomseed(os.time())

request = function()
  local a
  repeat a = math.random(1, 223) until not skip[a]
  local path = string.format("/v1/regions/select?ip=%d.%d.%d.%d",
    a, math.random(0, 255), math.random(0, 255), math.random(1, 254))
  return wrk.format("GET", path)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
