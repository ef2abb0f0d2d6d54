-- wrk script for bench/webhook_intake.sh: POSTs a recorded Alertmanager v4 notification,
-- turning every request into a NEW alert episode.
--
--   wrk -t2 -c20 -d10s --latency -s bench/webhook_intake.lua URL -- PAYLOAD.json
--
-- Each request gets, for every alert in the payload, a fingerprint nobody has sent before
-- (thread number, alert position and a per-thread request counter, 16 hex digits) and a
-- startsAt of its own (one second earlier per request, milliseconds = thread number). Every
-- body has the same length (the recording's 1,137 bytes become 1,144: startsAt gains
-- milliseconds, the final newline goes), so no request is cheaper to parse than another.
--
-- done() prints one machine-readable line starting with "BENCH " that the shell script reads:
-- responses by class counted here (wrk's own "Non-2xx or 3xx" line counts 3xx as success),
-- requests written, socket errors and the latency percentiles in microseconds.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local threads = {}
local next_tid = 0

function setup(thread)
    next_tid = next_tid + 1
    thread:set("tid", next_tid)
    table.insert(threads, thread)
end

local parts      -- literal pieces of the payload between the varying fields
local kinds      -- kinds[i] is "S" (startsAt) or "F" (fingerprint), the field after parts[i]
local base_time  -- startsAt of a thread's first request, in seconds since the epoch
-- Per-thread counters; globals, because done() reads them with thread:get().
sent, s2xx, s3xx, s4xx, s5xx, sother = 0, 0, 0, 0, 0, 0

function init(args)
    local path = args[1]
    if path == nil then
        error("usage: wrk ... -s webhook_intake.lua URL -- PAYLOAD.json")
    end
    local f = assert(io.open(path, "rb"))
    local template = f:read("*a")
    f:close()
    template = template:gsub("%s+$", "")
    -- Mark the varying fields with "\1S" / "\1F", then split the payload around the marks.
    local n_starts, n_fps
    template, n_starts = template:gsub('"startsAt":"[^"]*"', '"startsAt":"\1S"')
    template, n_fps = template:gsub('"fingerprint":"[^"]*"', '"fingerprint":"\1F"')
    if n_starts == 0 or n_fps == 0 then
        error(path .. ": no alert with both startsAt and fingerprint found")
    end
    parts, kinds = {}, {}
    local pos = 1
    while true do
        local s = template:find("\1", pos, true)
        if s == nil then
            table.insert(parts, template:sub(pos))
            break
        end
        table.insert(parts, template:sub(pos, s - 1))
        table.insert(kinds, template:sub(s + 1, s + 1))
        pos = s + 2
    end
    -- A day in the past, so that no start time lies in the future.
    base_time = os.time() - 86400
end

function request()
    sent = sent + 1
    local starts = os.date("!%Y-%m-%dT%H:%M:%S", base_time - sent) ..
                   string.format(".%03dZ", tid % 1000)
    local out = {}
    local alert = 0
    for i, kind in ipairs(kinds) do
        out[#out + 1] = parts[i]
        if kind == "S" then
            out[#out + 1] = starts
        else
            alert = alert + 1
            out[#out + 1] = string.format("%04x%04x%08x", tid % 0x10000, alert, sent)
        end
    end
    out[#out + 1] = parts[#parts]
    return wrk.format(nil, nil, nil, table.concat(out))
end

function response(status, headers, body)
    if status >= 200 and status < 300 then
        s2xx = s2xx + 1
    elseif status < 400 and status >= 300 then
        s3xx = s3xx + 1
    elseif status >= 400 and status < 500 then
        s4xx = s4xx + 1
    elseif status >= 500 and status < 600 then
        s5xx = s5xx + 1
    else
        sother = sother + 1
    end
end

function done(summary, latency, requests)
    local totals = {sent = 0, s2xx = 0, s3xx = 0, s4xx = 0, s5xx = 0, sother = 0}
    for _, t in ipairs(threads) do
        for k in pairs(totals) do
            totals[k] = totals[k] + (t:get(k) or 0)
        end
    end
    local e = summary.errors
    local seconds = summary.duration / 1e6
    io.write(string.format(
        "BENCH responses=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d sent=%d " ..
        "s2xx=%d non2xx=%d s3xx=%d s4xx=%d s5xx=%d sother=%d sockerr=%d err_connect=%d " ..
        "err_read=%d err_write=%d err_timeout=%d duration_s=%.3f\n",
        summary.requests, summary.requests / seconds, latency:percentile(50),
        latency:percentile(90), latency:percentile(99), latency.max, totals.sent, totals.s2xx,
        totals.s3xx + totals.s4xx + totals.s5xx + totals.sother, totals.s3xx, totals.s4xx,
        totals.s5xx, totals.sother, e.connect + e.read + e.write + e.timeout, e.connect, e.read,
        e.write, e.timeout, seconds))
end
