-- Wireshark / tshark dissector for the datagrams a telemesh node takes in (docs/wireshark.md):
--
--   * IoTStream v1 (the IoTStream v1 Mini-RFC), UDP 5005, and by heuristic on any UDP port;
--   * TinyTelemetry v1 (the TinyTelemetry v1 design document), UDP 5000, and by heuristic;
--   * both with the authentication trailer (counter and tag) of docs/protocol.md,
--     "Authenticated datagrams";
--   * the secure telemetry collection README's frame, from decrypted bytes: DTLS application
--     data on port 5006 (or any port, by heuristic) once Wireshark has the session keys, an
--     exported-PDU capture, or "Decode As" on a UDP port.
--
-- The rules are those of the node's decoders (proto/src/wire/, proto/src/auth.rs), check for
-- check and in the same order, so `<proto>.drop_reason` is the label the node counts the
-- datagram under in `telemesh_drops_total{reason}`; a datagram without one is accepted.
--
-- Load it with `tshark -X lua_script:telemesh.lua` or copy it to ~/.local/lib/wireshark/plugins/.
-- Tested with Wireshark 4.0 (Lua 5.2); the BLAKE3 code also runs on Lua 5.3 and 5.4.

local MAX_SENSOR_DATAGRAM = 200
local TRAILER_COUNTER = 4
local TRAILER_TAG = 8
local TRAILER = TRAILER_COUNTER + TRAILER_TAG

-- ---------------------------------------------------------------------------------------
-- Shared helpers
-- ---------------------------------------------------------------------------------------

-- The shortest decimal text that reads back as the same f32, without an exponent, as the
-- node prints readings (Rust's `Display`: `29.37`, not `29.3700008`; `20`, not `2e+01`).
-- `raw` is the reading's 4 bytes.
local function f32_text(value, raw)
    if value ~= value then return "NaN" end
    if value == math.huge then return "inf" end
    if value == -math.huge then return "-inf" end
    if value == 0 then return raw:byte(1) >= 0x80 and "-0" or "0" end
    for precision = 0, 8 do
        local text = string.format("%." .. precision .. "e", value)
        if Struct.pack(">f", tonumber(text)) == raw then
            -- Those digits, placed without an exponent.
            local sign, first, rest, exponent = text:match("^(-?)(%d)%.?(%d*)e([-+]%d+)$")
            local digits, e = first .. rest, tonumber(exponent)
            if e >= #digits - 1 then
                return sign .. digits .. string.rep("0", e - #digits + 1)
            elseif e >= 0 then
                return sign .. digits:sub(1, e + 1) .. "." .. digits:sub(e + 2)
            end
            return sign .. "0." .. string.rep("0", -e - 1) .. digits
        end
    end
    return string.format("%.9g", value)
end

-- Mirrors Rust's `str::from_utf8`: true when `s` is valid UTF-8 (no overlongs, no surrogates).
local function valid_utf8(s)
    local i, n = 1, #s
    while i <= n do
        local c = s:byte(i)
        local len, lo, hi = 0, 0x80, 0xbf
        if c < 0x80 then
            len = 1
        elseif c >= 0xc2 and c <= 0xdf then
            len = 2
        elseif c >= 0xe0 and c <= 0xef then
            len = 3
            if c == 0xe0 then lo = 0xa0 elseif c == 0xed then hi = 0x9f end
        elseif c >= 0xf0 and c <= 0xf4 then
            len = 4
            if c == 0xf0 then lo = 0x90 elseif c == 0xf4 then hi = 0x8f end
        else
            return false
        end
        if i + len - 1 > n then return false end
        for k = 1, len - 1 do
            local b = s:byte(i + k)
            if k == 1 then
                if b < lo or b > hi then return false end
            elseif b < 0x80 or b > 0xbf then
                return false
            end
        end
        i = i + len
    end
    return true
end

local checksum_status_vals = { [0] = "Bad", [1] = "Good" }

-- ---------------------------------------------------------------------------------------
-- BLAKE3, keyed, for inputs of one chunk (at most 1,024 bytes): enough to check a tag, whose
-- input is at most 16 + 13 + 1 + 200 bytes. The reference: the BLAKE3 paper, section 2.
-- ---------------------------------------------------------------------------------------

local bxor, rrotate
if bit32 then
    bxor, rrotate = bit32.bxor, bit32.rrotate
else
    -- Lua 5.3 and later have integer operators but may lack bit32; the 5.2 parser cannot
    -- read them, hence load().
    bxor, rrotate = load([[return function(a, b) return (a ~ b) & 0xffffffff end,
        function(x, n) x = x & 0xffffffff; return ((x >> n) | (x << (32 - n))) & 0xffffffff end]])()
end

local B3_IV = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
local B3_PERMUTE = { 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8 }
local B3_CHUNK_START, B3_CHUNK_END, B3_ROOT, B3_KEYED_HASH = 1, 2, 8, 16
local W = 4294967296

local function b3_g(v, a, b, c, d, x, y)
    v[a] = (v[a] + v[b] + x) % W
    v[d] = rrotate(bxor(v[d], v[a]), 16)
    v[c] = (v[c] + v[d]) % W
    v[b] = rrotate(bxor(v[b], v[c]), 12)
    v[a] = (v[a] + v[b] + y) % W
    v[d] = rrotate(bxor(v[d], v[a]), 8)
    v[c] = (v[c] + v[d]) % W
    v[b] = rrotate(bxor(v[b], v[c]), 7)
end

-- The compression function (1-based arrays): the first 8 words of its output.
local function b3_compress(cv, m, block_len, flags)
    local v = { cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], cv[8],
        B3_IV[1], B3_IV[2], B3_IV[3], B3_IV[4], 0, 0, block_len, flags }
    for round = 1, 7 do
        b3_g(v, 1, 5, 9, 13, m[1], m[2])
        b3_g(v, 2, 6, 10, 14, m[3], m[4])
        b3_g(v, 3, 7, 11, 15, m[5], m[6])
        b3_g(v, 4, 8, 12, 16, m[7], m[8])
        b3_g(v, 1, 6, 11, 16, m[9], m[10])
        b3_g(v, 2, 7, 12, 13, m[11], m[12])
        b3_g(v, 3, 8, 9, 14, m[13], m[14])
        b3_g(v, 4, 5, 10, 15, m[15], m[16])
        if round < 7 then
            local p = {}
            for i = 1, 16 do p[i] = m[B3_PERMUTE[i] + 1] end
            m = p
        end
    end
    local out = {}
    for i = 1, 8 do out[i] = bxor(v[i], v[i + 8]) end
    return out
end

local function le_words(s, at, n)
    local w = {}
    for i = 0, n - 1 do
        local a, b, c, d = s:byte(at + 4 * i, at + 4 * i + 3)
        w[i + 1] = (a or 0) + (b or 0) * 256 + (c or 0) * 65536 + (d or 0) * 16777216
    end
    return w
end

-- The first `n` bytes of BLAKE3-keyed(key, input); `key` is 32 bytes, `input` at most 1,024.
local function blake3_keyed(key, input, n)
    local cv = le_words(key, 1, 8)
    local blocks = math.max(1, math.ceil(#input / 64))
    for i = 1, blocks do
        local block = input:sub(64 * (i - 1) + 1, 64 * i)
        local flags = B3_KEYED_HASH
        if i == 1 then flags = flags + B3_CHUNK_START end
        if i == blocks then flags = flags + B3_CHUNK_END + B3_ROOT end
        cv = b3_compress(cv, le_words(block .. string.rep("\0", 64 - #block), 1, 16), #block, flags)
    end
    local bytes = {}
    for i = 1, 8 do
        local w = cv[i]
        for _ = 1, 4 do
            bytes[#bytes + 1] = string.char(w % 256)
            w = math.floor(w / 256)
        end
    end
    return table.concat(bytes):sub(1, n)
end

-- ---------------------------------------------------------------------------------------
-- Device keys (the node's --device-keys file, docs/operations.md, "Device keys")
-- ---------------------------------------------------------------------------------------

-- keys[dialect][device] = the 32-byte key
local keys = { iotstream = {}, tinytelemetry = {} }
local keys_error

local function load_keys(path)
    keys = { iotstream = {}, tinytelemetry = {} }
    keys_error = nil
    if not path or path == "" then return end
    local file, err = io.open(path, "r")
    if not file then
        keys_error = "cannot read the device keys file: " .. tostring(err)
        return
    end
    local line_no = 0
    for line in file:lines() do
        line_no = line_no + 1
        line = line:match("^%s*(.-)%s*$")
        if line ~= "" and line:sub(1, 1) ~= "#" then
            local dialect, device, hex = line:match("^(%S+)%s+(%d+)%s+(%x+)$")
            dialect = dialect and dialect:lower()
            device = tonumber(device)
            if not (dialect and keys[dialect] and device and device <= 65535 and #hex == 64) then
                keys_error = string.format("%s, line %d: expected `dialect device hex-key`", path, line_no)
            else
                keys[dialect][device] = (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
            end
        end
    end
    file:close()
end

-- The preference that names the file: on a protocol of its own, as it serves both dialects
-- (`-o telemesh.device_keys:FILE`).
local telemesh = Proto("telemesh", "telemesh device keys")
telemesh.prefs.device_keys = Pref.string("Device keys file", "",
    "The node's --device-keys file (dialect, device, 64 hex digits a line): tags of those devices are checked")
telemesh.prefs_changed = function()
    load_keys(telemesh.prefs.device_keys)
    -- A dialog in Wireshark, a line on stderr from tshark; the trailers show it too.
    if keys_error and report_failure then report_failure("telemesh.lua: " .. keys_error) end
end

-- ---------------------------------------------------------------------------------------
-- The authentication trailer (proto::auth), shared by the two plain dialects
-- ---------------------------------------------------------------------------------------

local function trailer_fields(prefix)
    return {
        trailer = ProtoField.bytes(prefix .. ".auth", "Authentication trailer", base.NONE,
            "Counter and tag a keyed device appends (docs/protocol.md, \"Authenticated datagrams\")"),
        counter = ProtoField.uint32(prefix .. ".auth.counter", "Counter", base.DEC,
            nil, nil, "Per device, strictly increasing; the replay window's input"),
        tag = ProtoField.bytes(prefix .. ".auth.tag", "Tag", base.NONE,
            "First 8 bytes of BLAKE3-keyed(key, \"telemesh/auth/1/<dialect>\\0\" || datagram || counter)"),
        tag_status = ProtoField.uint8(prefix .. ".auth.tag_status", "Tag status", base.DEC,
            { [0] = "Unverified (no key for this device)", [1] = "Good", [2] = "Bad" }),
        tag_computed = ProtoField.bytes(prefix .. ".auth.tag_computed", "Computed tag", base.NONE),
    }
end

local function trailer_experts(prefix)
    return {
        truncated = ProtoExpert.new(prefix .. ".auth.truncated", "Authentication trailer cut short",
            expert.group.MALFORMED, expert.severity.ERROR),
        overlong = ProtoExpert.new(prefix .. ".auth.overlong", "More bytes than the header and a trailer make",
            expert.group.MALFORMED, expert.severity.ERROR),
        bad_tag = ProtoExpert.new(prefix .. ".auth.bad_tag", "The tag does not verify under the device's key",
            expert.group.SECURITY, expert.severity.ERROR),
        no_trailer = ProtoExpert.new(prefix .. ".auth.missing", "No trailer from a device that has a key",
            expert.group.SECURITY, expert.severity.ERROR),
        keys = ProtoExpert.new(prefix .. ".auth.keys_file", "The device keys file could not be read",
            expert.group.UNDECODED, expert.severity.WARN),
    }
end

-- How a node reads the trailer (proto::auth::open). `stated` is the length of the datagram
-- before the trailer as its header states it (nil when the header is too short to say).
-- With a key for the device the node requires a whole trailer with a good tag; without one
-- it reads the bytes as they come, and the dissector takes a whole trailer's worth of extra
-- bytes for a trailer (the tag unchecked). Returns the datagram's length, and a drop
-- reason with its explanation, or nil.
local function read_trailer(tvb, tree, f, experts, dialect, stated, len)
    local device = len >= 4 and tvb(2, 2):uint() or nil
    local key = device and keys[dialect][device]
    if key and not stated then
        tree:add_proto_expert_info(experts.truncated, "Too short for the header's length fields and a trailer")
        return len, "auth_truncated", "too short for the header's length fields and a trailer"
    end
    if not stated or len <= stated then
        if key then
            tree:add_proto_expert_info(experts.no_trailer, string.format(
                "Device %d has a key in the device keys file: a datagram without a trailer is dropped", device))
            return len, "auth_truncated", "no trailer from a device that has a key"
        end
        return len, nil
    end
    local extra = len - stated
    local sub = tree:add(f.trailer, tvb(stated, extra))
    if keys_error then sub:add_proto_expert_info(experts.keys, keys_error) end
    local text = "Authentication trailer"
    local reason, why
    if extra >= TRAILER_COUNTER then
        local counter = tvb(stated, TRAILER_COUNTER)
        sub:add(f.counter, counter)
        text = text .. string.format(": counter %d", counter:uint())
        if extra > TRAILER_COUNTER then
            local tag = tvb(stated + TRAILER_COUNTER, math.min(extra - TRAILER_COUNTER, TRAILER_TAG))
            sub:add(f.tag, tag)
            text = text .. ", tag " .. tostring(tag:bytes()):lower()
        end
    end
    if extra < TRAILER then
        reason = "auth_truncated"
        why = string.format("a trailer of %d bytes, %d expected (counter 4, tag 8)", extra, TRAILER)
        sub:add_proto_expert_info(experts.truncated, "Trailer cut short: " .. why)
    elseif extra > TRAILER or len > MAX_SENSOR_DATAGRAM then
        reason = "auth_overlong"
        why = string.format("%d bytes after the datagram (a trailer is %d), %d in all (at most %d)",
            extra, TRAILER, len, MAX_SENSOR_DATAGRAM)
        sub:add_proto_expert_info(experts.overlong, "Overlong: " .. why)
    elseif not key then
        sub:add(f.tag_status, tvb(stated + TRAILER_COUNTER, TRAILER_TAG), 0):set_generated()
    else
        local signed = tvb(0, stated + TRAILER_COUNTER):raw()
        local computed = blake3_keyed(key, "telemesh/auth/1/" .. dialect .. "\0" .. signed, TRAILER_TAG)
        if computed == tvb(stated + TRAILER_COUNTER, TRAILER_TAG):raw() then
            sub:add(f.tag_status, tvb(stated + TRAILER_COUNTER, TRAILER_TAG), 1):set_generated()
            text = text .. " [good]"
        else
            sub:add(f.tag_status, tvb(stated + TRAILER_COUNTER, TRAILER_TAG), 2):set_generated()
            sub:add(f.tag_computed, tvb(stated + TRAILER_COUNTER, TRAILER_TAG), computed):set_generated()
            text = text .. " [bad]"
            reason, why = "auth_bad_tag", "the tag does not verify under the device's key"
            sub:add_proto_expert_info(experts.bad_tag, string.format(
                "The tag does not verify under device %d's key", device))
        end
    end
    sub:set_text(text)
    return stated, reason, why
end

-- Registers `fields` (a table of ProtoFields, possibly nested one level) and `experts` on `proto`.
local function register(proto, fields, experts)
    local list = {}
    for _, v in pairs(fields) do
        if type(v) == "table" then
            for _, w in pairs(v) do list[#list + 1] = w end
        else
            list[#list + 1] = v
        end
    end
    proto.fields = list
    local elist = {}
    for _, v in pairs(experts) do
        if type(v) == "table" then
            for _, w in pairs(v) do elist[#elist + 1] = w end
        else
            elist[#elist + 1] = v
        end
    end
    proto.experts = elist
end

-- The verdict: the drop reason as a generated field and an expert item, or "accepted".
local function add_verdict(tree, field, expert_bad, reason, why)
    if reason then
        local item = tree:add(field, reason):set_generated()
        item:add_proto_expert_info(expert_bad, string.format("A node drops this datagram: %s (%s)", reason, why))
    end
end

-- ---------------------------------------------------------------------------------------
-- IoTStream v1 (proto/src/wire/iotstream.rs)
-- ---------------------------------------------------------------------------------------

local iot = Proto("iotstream", "IoTStream v1")
local IOT_HEADER = 12
local IOT_MAX_BATCH = 47
local iot_types = { [0] = "INIT", [1] = "DATA", [2] = "HEARTBEAT" }

local fi = {
    version = ProtoField.uint8("iotstream.version", "Version", base.DEC),
    msg_type = ProtoField.uint8("iotstream.type", "Message type", base.DEC, iot_types),
    device = ProtoField.uint16("iotstream.device", "Device", base.DEC),
    seq = ProtoField.uint16("iotstream.seq", "Sequence number", base.DEC),
    timestamp = ProtoField.uint32("iotstream.timestamp", "Timestamp", base.DEC, nil, nil,
        "Unix milliseconds mod 2^32 (the node's default), or Unix seconds (iotstream_timestamp = \"s\")"),
    time = ProtoField.absolute_time("iotstream.time", "Device time", base.UTC,
        "The timestamp read as the node reads it: milliseconds unwrapped against the capture time"),
    batch = ProtoField.uint8("iotstream.batch", "Batch", base.DEC, nil, nil, "Number of f32 readings"),
    checksum = ProtoField.uint8("iotstream.checksum", "Checksum", base.HEX),
    checksum_computed = ProtoField.uint8("iotstream.checksum.computed", "Computed checksum", base.HEX,
        nil, nil, "Sum of header bytes 0..=10, mod 256"),
    checksum_status = ProtoField.uint8("iotstream.checksum.status", "Checksum status", base.DEC,
        checksum_status_vals),
    readings = ProtoField.none("iotstream.readings", "Readings"),
    reading = ProtoField.float("iotstream.reading", "Reading", nil,
        "An f32 reading; the dialect carries no sensor type (the node labels them r1..rN)"),
    drop_reason = ProtoField.string("iotstream.drop_reason", "Drop reason", base.ASCII,
        "The reason a node drops this datagram for (telemesh_drops_total{reason})"),
    auth = trailer_fields("iotstream"),
}

local ei = {
    checksum_bad = ProtoExpert.new("iotstream.checksum.bad", "Bad checksum",
        expert.group.CHECKSUM, expert.severity.ERROR),
    dropped = ProtoExpert.new("iotstream.dropped", "Dropped by a node",
        expert.group.MALFORMED, expert.severity.ERROR),
    auth = trailer_experts("iotstream"),
}

register(iot, fi, ei)

iot.prefs.port = Pref.uint("UDP port", 5005, "The node's IoTStream port (iotstream in its configuration)")
iot.prefs.seconds = Pref.bool("Timestamps in seconds", false,
    "Read the timestamp as Unix seconds (a node run with iotstream_timestamp = \"s\") instead of milliseconds")
iot.prefs.heuristic = Pref.bool("Find IoTStream on any UDP port", true,
    "Try datagrams on other ports: a valid checksum and exact length make one IoTStream")

-- The IoTStream timestamp as a node reads it (proto::record): milliseconds mod 2^32 are
-- unwrapped to the value closest to the arrival time; seconds are taken as they are.
local function iot_time(ts, arrival_s)
    if iot.prefs.seconds then return NSTime.new(ts, 0) end
    local wrap = 4294967296
    local arrival_ms = math.floor(arrival_s * 1000)
    local best = arrival_ms - (arrival_ms % wrap) + ts
    for _, c in ipairs({ best - wrap, best + wrap }) do
        if math.abs(c - arrival_ms) < math.abs(best - arrival_ms) then best = c end
    end
    if best < 0 then best = ts end
    local secs = math.floor(best / 1000)
    return NSTime.new(secs, (best - secs * 1000) * 1000000)
end

-- The whole length a datagram's header states for itself (IoTStream: 12 + 4 × batch).
local function iot_body_len(tvb, len)
    if len < 11 then return nil end
    return IOT_HEADER + 4 * tvb(10, 1):uint()
end

local function iot_sum(tvb)
    local sum = 0
    for i = 0, 10 do sum = sum + tvb(i, 1):uint() end
    return sum % 256
end

local function dissect_iotstream(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "IoTStream"
    local root = tree:add(iot, tvb())
    local stated = iot_body_len(tvb, len)
    -- Bytes past the length the header states are a trailer (read at the end).
    local body = (stated and len > stated) and stated or len
    local reason, why
    local n, batch = 0, 0
    local head = "too short"
    local info = "IoTStream, too short"

    if body < IOT_HEADER then
        if len >= 1 then root:add(fi.version, tvb(0, 1)) end
        reason, why = "too_short", string.format("%d bytes, the header is %d", body, IOT_HEADER)
    else
        local version = tvb(0, 1):uint()
        local msg_type = tvb(1, 1):uint()
        local device, seq, ts = tvb(2, 2):uint(), tvb(4, 2):uint(), tvb(6, 4):uint()
        batch = tvb(10, 1):uint()
        local stated_sum, computed = tvb(11, 1):uint(), iot_sum(tvb)
        root:add(fi.version, tvb(0, 1))
        root:add(fi.msg_type, tvb(1, 1))
        root:add(fi.device, tvb(2, 2))
        root:add(fi.seq, tvb(4, 2))
        root:add(fi.timestamp, tvb(6, 4))
        root:add(fi.time, tvb(6, 4), iot_time(ts, pinfo.abs_ts)):set_generated()
        root:add(fi.batch, tvb(10, 1))
        local ck = root:add(fi.checksum, tvb(11, 1))
        if stated_sum == computed then
            ck:append_text(" [correct]")
            root:add(fi.checksum_status, tvb(11, 1), 1):set_generated()
        else
            ck:append_text(string.format(" [incorrect, should be 0x%02x]", computed))
            root:add(fi.checksum_computed, tvb(11, 1), computed):set_generated()
            root:add(fi.checksum_status, tvb(11, 1), 0):set_generated()
            ck:add_proto_expert_info(ei.checksum_bad, string.format(
                "Bad checksum: header says 0x%02x, bytes 0..=10 sum to 0x%02x", stated_sum, computed))
        end

        n = math.min(batch, math.floor((body - IOT_HEADER) / 4))
        if n > 0 then
            local rs = root:add(fi.readings, tvb(IOT_HEADER, 4 * n))
            rs:set_text(string.format("Readings (%d)", n))
            for i = 1, n do
                local r = tvb(IOT_HEADER + 4 * (i - 1), 4)
                rs:add(fi.reading, r):set_text(string.format("r%d: %s", i, f32_text(r:float(), r:raw())))
            end
        end

        -- The node's checks, in proto::wire::iotstream's order (check_len, then parse).
        if body > MAX_SENSOR_DATAGRAM then
            reason, why = "too_long", string.format("%d bytes, at most %d", body, MAX_SENSOR_DATAGRAM)
        elseif body ~= IOT_HEADER + 4 * batch then
            reason, why = "length_mismatch", string.format("batch %d makes %d bytes, the datagram has %d",
                batch, IOT_HEADER + 4 * batch, body)
        elseif version ~= 1 then
            reason, why = "bad_version", string.format("version %d, expected 1", version)
        elseif not iot_types[msg_type] then
            reason, why = "bad_type", string.format("message type %d", msg_type)
        elseif stated_sum ~= computed then
            reason, why = "bad_checksum", string.format("0x%02x stated, 0x%02x computed", stated_sum, computed)
        elseif msg_type == 1 and (batch < 1 or batch > IOT_MAX_BATCH) then
            reason, why = "bad_count", string.format("DATA with batch %d (allowed 1..=%d)", batch, IOT_MAX_BATCH)
        elseif msg_type ~= 1 and batch ~= 0 then
            reason, why = "bad_count", string.format("%s with batch %d (allowed 0)", iot_types[msg_type], batch)
        end
        local kind = iot_types[msg_type] or string.format("type %d", msg_type)
        head = string.format("%s, device %d, seq %d", kind, device, seq)
        info = string.format("IoTStream %s device=%d seq=%d ts=%d", kind, device, seq, ts)
        if n > 0 then info = info .. string.format(" batch=%d", batch) end
    end

    -- A node with the device's key checks the trailer first (proto::auth::open).
    local _, treason, twhy = read_trailer(tvb, root, fi.auth, ei.auth, "iotstream", stated, len)
    if treason then reason, why = treason, twhy end
    add_verdict(root, fi.drop_reason, ei.dropped, reason, why)

    root:append_text(", " .. head)
    if body < len then info = info .. " [tagged]" end
    if reason then info = info .. " [dropped: " .. reason .. "]" end
    pinfo.cols.info = info
    return len
end

iot.dissector = dissect_iotstream

-- An IoTStream datagram on another port: version 1, a known type, the checksum right and
-- the length exactly the batch's (with or without a whole trailer).
local function heur_iotstream(tvb, pinfo, tree)
    if not iot.prefs.heuristic then return false end
    local len = tvb:len()
    if len < IOT_HEADER or len > MAX_SENSOR_DATAGRAM then return false end
    if tvb(0, 1):uint() ~= 1 or tvb(1, 1):uint() > 2 then return false end
    if tvb(11, 1):uint() ~= iot_sum(tvb) then return false end
    local body = iot_body_len(tvb, len)
    if len ~= body and len ~= body + TRAILER then return false end
    dissect_iotstream(tvb, pinfo, tree)
    return true
end

-- ---------------------------------------------------------------------------------------
-- TinyTelemetry v1 (proto/src/wire/tinytelemetry.rs)
-- ---------------------------------------------------------------------------------------

local tiny = Proto("tinytelemetry", "TinyTelemetry v1")
local TINY_HEADER = 12
local TINY_READINGS = 13
local TINY_MAX_COUNT = 37
local tiny_types = { [1] = "DATA", [2] = "HEARTBEAT" }
local sensor_types = { [1] = "temperature", [2] = "humidity", [3] = "voltage" }

local ft = {
    version = ProtoField.uint8("tinytelemetry.version", "Version", base.DEC),
    msg_type = ProtoField.uint8("tinytelemetry.type", "Message type", base.DEC, tiny_types),
    device = ProtoField.uint16("tinytelemetry.device", "Device", base.DEC),
    seq = ProtoField.uint32("tinytelemetry.seq", "Sequence number", base.DEC),
    timestamp = ProtoField.uint32("tinytelemetry.timestamp", "Timestamp", base.DEC, nil, nil, "Unix seconds"),
    time = ProtoField.absolute_time("tinytelemetry.time", "Device time", base.UTC),
    count = ProtoField.uint8("tinytelemetry.count", "Count", base.DEC, nil, nil, "Number of readings (DATA)"),
    readings = ProtoField.none("tinytelemetry.readings", "Readings"),
    reading = ProtoField.none("tinytelemetry.reading", "Reading"),
    sensor = ProtoField.uint8("tinytelemetry.sensor", "Sensor type", base.DEC, sensor_types),
    value = ProtoField.float("tinytelemetry.value", "Value"),
    drop_reason = ProtoField.string("tinytelemetry.drop_reason", "Drop reason", base.ASCII,
        "The reason a node drops this datagram for (telemesh_drops_total{reason})"),
    auth = trailer_fields("tinytelemetry"),
}

local et = {
    sensor_bad = ProtoExpert.new("tinytelemetry.sensor.bad", "Unknown sensor type",
        expert.group.MALFORMED, expert.severity.ERROR),
    dropped = ProtoExpert.new("tinytelemetry.dropped", "Dropped by a node",
        expert.group.MALFORMED, expert.severity.ERROR),
    auth = trailer_experts("tinytelemetry"),
}

register(tiny, ft, et)

tiny.prefs.port = Pref.uint("UDP port", 5000, "The node's TinyTelemetry port (tinytelemetry in its configuration)")
tiny.prefs.heuristic = Pref.bool("Find TinyTelemetry on any UDP port", true,
    "Try datagrams on other ports: exact length, device > 0 and known sensor types make one TinyTelemetry")

-- The length a TinyTelemetry header states (proto::auth's body_len): 12 for a HEARTBEAT,
-- 13 + 5 × count for DATA; nil when the header cannot say.
local function tiny_body_len(tvb, len)
    if len < 2 then return nil end
    local t = tvb(1, 1):uint()
    if t == 2 then return TINY_HEADER end
    if t == 1 then
        if len < TINY_READINGS then return nil end
        return TINY_READINGS + 5 * tvb(12, 1):uint()
    end
    return nil
end

local function dissect_tinytelemetry(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "TinyTelemetry"
    local root = tree:add(tiny, tvb())
    local stated = tiny_body_len(tvb, len)
    if not stated and len >= 4 and keys.tinytelemetry[tvb(2, 2):uint()] then
        -- An unknown type: a node with the key checks the tag over all but the last 12 bytes.
        local t = tvb(1, 1):uint()
        if t ~= 1 and t ~= 2 then stated = math.max(len - TRAILER, 0) end
    end
    local body = (stated and len > stated) and stated or len
    local reason, why
    local count = 0
    local head = "too short"
    local info = "TinyTelemetry, too short"

    if body < TINY_HEADER then
        if len >= 1 then root:add(ft.version, tvb(0, 1)) end
        if len >= 2 then root:add(ft.msg_type, tvb(1, 1)) end
        reason, why = "too_short", string.format("%d bytes, the header is %d", body, TINY_HEADER)
    else
        local version = tvb(0, 1):uint()
        local msg_type = tvb(1, 1):uint()
        local device = tvb(2, 2):uint()
        local seq = tvb(4, 4):uint()
        local ts = tvb(8, 4):uint()
        root:add(ft.version, tvb(0, 1))
        root:add(ft.msg_type, tvb(1, 1))
        root:add(ft.device, tvb(2, 2))
        root:add(ft.seq, tvb(4, 4))
        root:add(ft.timestamp, tvb(8, 4))
        root:add(ft.time, tvb(8, 4), NSTime.new(ts, 0)):set_generated()

        local bad_sensor
        if msg_type == 1 and body >= TINY_READINGS then
            count = tvb(12, 1):uint()
            root:add(ft.count, tvb(12, 1))
            local n = math.min(count, math.floor((body - TINY_READINGS) / 5))
            if n > 0 then
                local rs = root:add(ft.readings, tvb(TINY_READINGS, 5 * n))
                rs:set_text(string.format("Readings (%d)", n))
                for i = 1, n do
                    local at = TINY_READINGS + 5 * (i - 1)
                    local code = tvb(at, 1):uint()
                    local v = tvb(at + 1, 4)
                    local name = sensor_types[code] or string.format("unknown sensor type %d", code)
                    local text = f32_text(v:float(), v:raw())
                    local item = rs:add(ft.reading, tvb(at, 5))
                    item:set_text(string.format("Reading %d: %s %s", i, name, text))
                    local s = item:add(ft.sensor, tvb(at, 1))
                    item:add(ft.value, v):set_text("Value: " .. text)
                    if not sensor_types[code] then
                        s:add_proto_expert_info(et.sensor_bad, string.format(
                            "Sensor type %d (expected 1 temperature, 2 humidity or 3 voltage)", code))
                        bad_sensor = bad_sensor or code
                    end
                end
            end
        end

        -- The node's checks, in proto::wire::tinytelemetry's order (check_len, then parse).
        if body > MAX_SENSOR_DATAGRAM then
            reason, why = "too_long", string.format("%d bytes, at most %d", body, MAX_SENSOR_DATAGRAM)
        elseif not tiny_types[msg_type] then
            reason, why = "bad_type", string.format("message type %d", msg_type)
        elseif msg_type == 1 and body < TINY_READINGS then
            reason, why = "too_short", "DATA without its count byte"
        elseif msg_type == 1 and body ~= TINY_READINGS + 5 * count then
            reason, why = "length_mismatch", string.format("count %d makes %d bytes, the datagram has %d",
                count, TINY_READINGS + 5 * count, body)
        elseif msg_type == 2 and body ~= TINY_HEADER then
            reason, why = "length_mismatch", string.format("a HEARTBEAT is %d bytes, the datagram has %d",
                TINY_HEADER, body)
        elseif version ~= 1 then
            reason, why = "bad_version", string.format("version %d, expected 1", version)
        elseif device == 0 then
            reason, why = "device_zero", "device id 0 is invalid"
        elseif msg_type == 1 and (count < 1 or count > TINY_MAX_COUNT) then
            reason, why = "bad_count", string.format("DATA with %d readings (allowed 1..=%d)", count, TINY_MAX_COUNT)
        elseif bad_sensor then
            reason, why = "bad_sensor_type", string.format("sensor type %d", bad_sensor)
        end
        local kind = tiny_types[msg_type] or string.format("type %d", msg_type)
        head = string.format("%s, device %d, seq %d", kind, device, seq)
        info = string.format("TinyTelemetry %s device=%d seq=%d ts=%d", kind, device, seq, ts)
        if count > 0 then info = info .. string.format(" count=%d", count) end
    end

    local _, treason, twhy = read_trailer(tvb, root, ft.auth, et.auth, "tinytelemetry", stated, len)
    if treason then reason, why = treason, twhy end
    add_verdict(root, ft.drop_reason, et.dropped, reason, why)

    root:append_text(", " .. head)
    if body < len then info = info .. " [tagged]" end
    if reason then info = info .. " [dropped: " .. reason .. "]" end
    pinfo.cols.info = info
    return len
end

tiny.dissector = dissect_tinytelemetry

-- A TinyTelemetry datagram on another port: version 1, a known type, device > 0, the exact
-- length its type and count make (with or without a whole trailer), known sensor types.
local function heur_tinytelemetry(tvb, pinfo, tree)
    if not tiny.prefs.heuristic then return false end
    local len = tvb:len()
    if len < TINY_HEADER or len > MAX_SENSOR_DATAGRAM then return false end
    if tvb(0, 1):uint() ~= 1 or tvb(2, 2):uint() == 0 then return false end
    local body = tiny_body_len(tvb, len)
    if not body or (len ~= body and len ~= body + TRAILER) then return false end
    if tvb(1, 1):uint() == 1 then
        local count = tvb(12, 1):uint()
        if count < 1 or count > TINY_MAX_COUNT then return false end
        for i = 0, count - 1 do
            if not sensor_types[tvb(TINY_READINGS + 5 * i, 1):uint()] then return false end
        end
    end
    dissect_tinytelemetry(tvb, pinfo, tree)
    return true
end

-- ---------------------------------------------------------------------------------------
-- The secure telemetry collection README's frame (proto/src/wire/secure.rs)
-- ---------------------------------------------------------------------------------------

local sec = Proto("telemesh_secure", "Secure telemetry frame")
local SEC_HEADER = 22
local SEC_MAX_FRAME = 1200
local SEC_MAX_KEY = 32
local SEC_MAX_PAIRS = 64

local fs = {
    client = ProtoField.uint32("telemesh_secure.client", "Client id", base.DEC, nil, nil,
        "The device; the node requires it to be its DTLS client certificate's CN"),
    seq = ProtoField.uint64("telemesh_secure.seq", "Sequence number", base.DEC),
    timestamp = ProtoField.uint64("telemesh_secure.timestamp", "Timestamp", base.DEC, nil, nil, "Unix nanoseconds"),
    time = ProtoField.absolute_time("telemesh_secure.time", "Device time", base.UTC),
    length = ProtoField.uint16("telemesh_secure.length", "Payload length", base.DEC),
    payload = ProtoField.string("telemesh_secure.payload", "Payload"),
    heartbeat = ProtoField.bool("telemesh_secure.heartbeat", "Heartbeat", base.NONE, nil, nil,
        "An empty payload: a liveness beacon"),
    pairs = ProtoField.none("telemesh_secure.pairs", "Readings"),
    pair = ProtoField.string("telemesh_secure.pair", "Reading"),
    key = ProtoField.string("telemesh_secure.key", "Key"),
    value = ProtoField.double("telemesh_secure.value", "Value"),
    drop_reason = ProtoField.string("telemesh_secure.drop_reason", "Drop reason", base.ASCII,
        "The reason a node drops this frame for (telemesh_drops_total{reason})"),
}

local es = {
    bad_pair = ProtoExpert.new("telemesh_secure.bad_pair", "Payload item is not KEY=VALUE",
        expert.group.MALFORMED, expert.severity.ERROR),
    dropped = ProtoExpert.new("telemesh_secure.dropped", "Dropped by a node",
        expert.group.MALFORMED, expert.severity.ERROR),
}

register(sec, fs, es)

sec.prefs.port = Pref.uint("DTLS port", 5006,
    "The node's secure port (secure in its configuration): decrypted DTLS application data on it is a frame")

-- Why a `KEY=VALUE` item is refused (proto::wire::secure::parse_pair), or nil and the value.
local function parse_pair(item)
    local eq = item:find("=", 1, true)
    if not eq then return "missing '='" end
    local key, value = item:sub(1, eq - 1), item:sub(eq + 1)
    if #key == 0 then return "empty key" end
    if #key > SEC_MAX_KEY then return "key longer than 32 bytes" end
    if key:find("[^A-Za-z0-9_.-]") then return "key has a character outside [A-Za-z0-9_.-]" end
    -- Rust's f64 grammar: [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?
    if value:find("[^0-9.eE+-]") then return "value is not a decimal number" end
    local mantissa, exponent = value:match("^[+-]?([0-9.]+)(.*)$")
    if not mantissa or mantissa == "." or select(2, mantissa:gsub("%.", "")) > 1
        or not (exponent == "" or exponent:match("^[eE][+-]?[0-9]+$")) then
        return "value is not a decimal number"
    end
    local v = tonumber(value)
    if not v then return "value is not a decimal number" end
    if v ~= v or v == math.huge or v == -math.huge then return "value is not finite" end
    return nil, key, v
end

-- The items of a payload: one trailing `;` tolerated, an empty payload has none.
local function split_pairs(payload)
    local body = payload
    if body:sub(-1) == ";" then body = body:sub(1, -2) end
    local items = {}
    if #body == 0 then return items end
    local start = 1
    while true do
        local semi = body:find(";", start, true)
        if not semi then
            items[#items + 1] = { start, body:sub(start) }
            break
        end
        items[#items + 1] = { start, body:sub(start, semi - 1) }
        start = semi + 1
    end
    return items
end

local function dissect_secure(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "Secure"
    local root = tree:add(sec, tvb())
    local reason, why
    if len < SEC_HEADER then
        reason, why = "too_short", string.format("%d bytes, the header is %d", len, SEC_HEADER)
        add_verdict(root, fs.drop_reason, es.dropped, reason, why)
        pinfo.cols.info = "Secure frame, too short"
        return len
    end
    local client = tvb(0, 4):uint()
    local seq = tvb(4, 8):uint64()
    local ts = tvb(12, 8):uint64()
    local plen = tvb(20, 2):uint()
    root:add(fs.client, tvb(0, 4))
    root:add(fs.seq, tvb(4, 8))
    root:add(fs.timestamp, tvb(12, 8))
    local secs = (ts / 1000000000):tonumber()
    local nsecs = (ts % 1000000000):tonumber()
    root:add(fs.time, tvb(12, 8), NSTime.new(secs, nsecs)):set_generated()
    root:add(fs.length, tvb(20, 2))

    if len > SEC_MAX_FRAME then
        reason, why = "too_long", string.format("%d bytes, at most %d", len, SEC_MAX_FRAME)
    elseif len ~= SEC_HEADER + plen then
        reason, why = "length_mismatch", string.format("payload length %d makes %d bytes, the frame has %d",
            plen, SEC_HEADER + plen, len)
    end

    local avail = len - SEC_HEADER
    local shown = math.min(plen, avail)
    local payload = shown > 0 and tvb(SEC_HEADER, shown):raw() or ""
    if shown > 0 then root:add(fs.payload, tvb(SEC_HEADER, shown)) end
    local pairs_n = 0
    if not reason and not valid_utf8(payload) then
        reason, why = "bad_utf8", "payload is not UTF-8"
    end
    if plen == 0 and not reason then
        root:add(fs.heartbeat, true):set_generated()
    elseif shown > 0 then
        local items = split_pairs(payload)
        local rs = root:add(fs.pairs, tvb(SEC_HEADER, shown))
        rs:set_text(string.format("Readings (%d)", #items))
        for index, it in ipairs(items) do
            local at, item = it[1], it[2]
            local range = #item > 0 and tvb(SEC_HEADER + at - 1, #item) or tvb(SEC_HEADER + at - 1, 0)
            local bad, key, v = parse_pair(item)
            if not bad and index > SEC_MAX_PAIRS then bad = "more than 64 pairs" end
            local node = rs:add(fs.pair, range, item)
            if bad then
                node:set_text(string.format("Reading %d: %q", index, item))
                node:add_proto_expert_info(es.bad_pair, string.format("Item %d: %s", index - 1, bad))
                if not reason then
                    reason, why = "bad_pair", string.format("payload item %d is not KEY=VALUE: %s", index - 1, bad)
                end
            else
                pairs_n = pairs_n + 1
                node:set_text(string.format("Reading %d: %s = %s", index, key, item:sub(#key + 2)))
                node:add(fs.key, tvb(SEC_HEADER + at - 1, #key))
                node:add(fs.value, tvb(SEC_HEADER + at + #key, #item - #key - 1), v)
                    :set_text("Value: " .. item:sub(#key + 2))
            end
        end
    end
    add_verdict(root, fs.drop_reason, es.dropped, reason, why)

    local kind = plen == 0 and "HEARTBEAT" or "DATA"
    root:append_text(string.format(", %s, client %d, seq %s", kind, client, tostring(seq)))
    local info = string.format("Secure %s client=%d seq=%s", kind, client, tostring(seq))
    if pairs_n > 0 then info = info .. " " .. payload end
    if reason then info = info .. " [dropped: " .. reason .. "]" end
    pinfo.cols.info = info
    return len
end

sec.dissector = dissect_secure

-- A frame in decrypted DTLS data on another port: the length field is the rest of the
-- record, and the payload is empty or starts `KEY=`.
local function heur_secure(tvb, pinfo, tree)
    local len = tvb:len()
    if len < SEC_HEADER or len > SEC_MAX_FRAME then return false end
    if tvb(20, 2):uint() ~= len - SEC_HEADER then return false end
    if len > SEC_HEADER then
        local head = tvb(SEC_HEADER, math.min(len - SEC_HEADER, SEC_MAX_KEY + 1)):raw()
        if not head:match("^[A-Za-z0-9_.-]+=") then return false end
    end
    dissect_secure(tvb, pinfo, tree)
    return true
end

-- ---------------------------------------------------------------------------------------
-- Registration
-- ---------------------------------------------------------------------------------------

local udp_port = DissectorTable.get("udp.port")
local dtls_port = DissectorTable.get("dtls.port")
local registered = {}

local function register_ports()
    for table_name, entry in pairs(registered) do
        entry.table:remove(entry.port, entry.proto)
        registered[table_name] = nil
    end
    local wanted = {
        iot = { udp_port, iot.prefs.port, iot },
        tiny = { udp_port, tiny.prefs.port, tiny },
        sec = { dtls_port, sec.prefs.port, sec },
    }
    for name, w in pairs(wanted) do
        if w[1] and w[2] ~= 0 then
            w[1]:add(w[2], w[3])
            registered[name] = { table = w[1], port = w[2], proto = w[3] }
        end
    end
end

iot.prefs_changed = register_ports
tiny.prefs_changed = register_ports
sec.prefs_changed = register_ports
register_ports()

-- The secure frame on plain UDP (frames written to a capture in the clear) by Decode As.
udp_port:add_for_decode_as(sec)

iot:register_heuristic("udp", heur_iotstream)
tiny:register_heuristic("udp", heur_tinytelemetry)
if dtls_port then sec:register_heuristic("dtls", heur_secure) end
