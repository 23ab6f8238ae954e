#!/usr/bin/env bash
# Throughput of the mock upstream alone, so benchmarks know it is not their bottleneck.
# Starts the mock on a loopback port, drives it with wrk (installed from apt if missing),
# prints requests/second for non-streaming and streaming chat, then stops the mock.
# Usage: bench/mock_upstream.sh [duration_seconds=10] [connections=64]
set -euo pipefail
duration="${1:-10}"
connections="${2:-64}"
port="${MOCK_PORT:-18181}"
here="$(cd "$(dirname "$0")" && pwd)"

if ! command -v wrk >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null
fi

python -m sluicegate.mockupstream --port "$port" &
mock=$!
trap 'kill $mock 2>/dev/null || true; wait $mock 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done

run() {
  local name="$1" script="$2"
  local rps
  rps=$(wrk -t1 -c"$connections" -d"${duration}s" -s "$script" \
    "http://127.0.0.1:$port/v1/chat/completions" | awk '/Requests\/sec/ {print $2}')
  printf '%-28s %10s req/s\n' "$name" "$rps"
}

echo "mock upstream, 1 process, wrk -t1 -c$connections -d${duration}s, $(nproc) cores"
run "chat, non-streaming" "$here/wrk/chat.lua"
run "chat, streaming (18 chunks)" "$here/wrk/chat_stream.lua"
