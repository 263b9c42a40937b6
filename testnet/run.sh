#!/usr/bin/env bash
# A local multi-site telemesh mesh in one command: N nodes on loopback, simulated sensors
# heard by each site through its own lossy relay, and a check that every node converged
# on the same merged history. Builds what it needs first (release; --debug for the debug
# build, as CI does after the tests).
#
#   testnet/run.sh [--debug] [options]      options: testnet/run.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [[ "${1:-}" == "--debug" ]]; then
    profile=debug
    shift
fi
build=(cargo build --quiet --bin telemesh --bin telemesh-testnet)
[[ $profile == release ]] && build+=(--release)
"${build[@]}"

# The testnet finds the node binary next to itself; exec hands it Ctrl-C directly, and it
# stops every process it started.
exec "${CARGO_TARGET_DIR:-target}/$profile/telemesh-testnet" "$@"
