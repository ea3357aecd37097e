#!/usr/bin/env bash
# Load-tests capture with wrk: starts capture (capture.Run) and an embedded Kafka (kfake)
# on loopback, posts 50-event gzip batches to /batch/ for CAPTURE_BENCH_DURATION
# (default 10s) over CAPTURE_BENCH_CONNECTIONS (default 64) connections, and prints
# requests/s and events/s. Installs Debian's wrk when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v wrk >/dev/null 2>&1; then
	echo "bench.sh: installing wrk" >&2
	if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq wrk
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
go test -tags wrk -run '^TestWrk$' -count=1 -v ./pipeline/capture/ >"$out" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
	cat "$out" >&2
	exit "$status"
fi
grep -E 'Latency|requests in|Requests/sec|^capture wrk bench' "$out"
