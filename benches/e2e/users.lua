-- wrk script: every request carries one of 10,000 user ids (x-user-id), so
-- the sticky split is exercised over many buckets. Requests are prebuilt in
-- init so the load generator does the same cheap work for every proxy.
local reqs = {}
local n = 10000
local i = 0
function init(args)
  for k = 1, n do
    reqs[k] = wrk.format("GET", "/api/recommend?item=42", { ["x-user-id"] = "user-" .. k })
  end
end
function request()
  i = i % n + 1
  return reqs[i]
end
