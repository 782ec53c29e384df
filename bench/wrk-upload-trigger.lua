-- PUT /v2/images/<id>/file with a one-byte body, a new image id per request, so that every
-- request makes the proxy record a raw-cache trigger for an image the queue has not seen.
-- usage: wrk ... -s bench/wrk-upload-trigger.lua URL -- PREFIX   (PREFIX: 8 hex digits, one per run)
local prefix = "00000000"
local counter = 0

init = function(args)
  if args[1] then prefix = args[1] end
end

request = function()
  counter = counter + 1
  local path = string.format("/v2/images/%s-0000-4000-8000-%012x/file", prefix, counter)
  return wrk.format("PUT", path, { ["Content-Type"] = "application/octet-stream" }, "x")
end

dofile("bench/wrk-summary.lua")
