#!/usr/bin/env bash
# Device-id churn through the mesh (issue 15): two members of one closed mesh on loopback;
# 3,000 datagrams/s of new IoTStream ids (64,000 of them, one each) sent to member A for
# about 21 s, beside an honest device at 10 Hz; prints member B's RSS and its windows held
# and still wanted every 5 s while it repairs. Needs `cargo build --release` first.
#
#   benches/scripts/flood-two-members.sh [SECONDS_TO_WATCH]     (default 180)
#
# B_FLAGS adds options to member B's command line, e.g.
#   B_FLAGS="--new-streams-per-peer 1000000:1000000" benches/scripts/flood-two-members.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${TELEMESH_BIN:-target/release/telemesh}
S=target/release/telemesh-sensor
W=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; sleep 2; rm -rf "$W"; }
trap cleanup EXIT
node() { # name, port base, extra args
    "$T" node --data "$W/$1" --http "127.0.0.1:$2" --iotstream "127.0.0.1:$(($2 + 1))" \
        --tinytelemetry "127.0.0.1:$(($2 + 2))" --secure "127.0.0.1:$(($2 + 3))" \
        --listen "/ip4/127.0.0.1/udp/$(($2 + 4))/quic-v1" "${@:3}" > "$W/$1.log" 2>&1 &
    pids+=($!)
}
node a 18180
sleep 2
# shellcheck disable=SC2086 # B_FLAGS is split into options on purpose
node b 18280 --join "$("$T" mesh invite --node http://127.0.0.1:18180 | tail -1)" ${B_FLAGS:-}
B=${pids[1]}
sleep 4
"$S" --devices 999 --to 127.0.0.1:18181 --interval 100ms > /dev/null 2>&1 &
pids+=($!)
sleep 5
"$S" --devices 1000-64999 --to 127.0.0.1:18181 --count 1 --rate 3000 > /dev/null 2>&1 &
pids+=($!)
start=$(date +%s)
echo "seconds  B_rss_MB  B_windows  B_wanted  B_deferred"
for _ in $(seq 0 5 "${1:-180}"); do
    rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$B/status")
    read -r held wanted deferred < <(curl -s -m 3 http://127.0.0.1:18280/metrics |
        awk '$1 == "telemesh_mesh_windows" {h = $2} $1 == "telemesh_mesh_windows_wanted" {w = $2}
             $1 == "telemesh_mesh_rejects_total{reason=\"new_stream_deferred\"}" {d = $2} END {print h, w, d}')
    echo "$(($(date +%s) - start))  $rss  $held  $wanted  $deferred"
    sleep 5
done
echo "B peak RSS: $(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$B/status") MB"
