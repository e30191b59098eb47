-- wrk script: POST /api/send-pdf with a 100 KiB PDF, as the sales system would.
-- Used by bench/intake.sh; TOKEN and SESSION come from the environment.
local token = os.getenv("TOKEN") or "bench-token-0123456789abcdef"
local session = os.getenv("SESSION") or "bench"

-- "%PDF-1.4\n" followed by 'x' up to 100 KiB, base64-encoded once at start-up.
local function b64(data)
  local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((data:gsub(".", function(x)
    local r, byte = "", x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local pdf = "%PDF-1.4\n" .. string.rep("x", 100 * 1024 - 9)
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"sessionId":"' .. session .. '","to":"51987654321","pdfBase64":"' .. b64(pdf) .. '"}'

function response(status, headers, body)
  if status ~= 202 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
