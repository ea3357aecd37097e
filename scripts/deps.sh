#!/usr/bin/env bash
# deps.sh demo|test|bench — install what `make demo`, `make test` or `make bench` needs,
# if missing. Output of apt and npm goes to .cache/deps.log; one line says what is being
# installed.
#
#   demo   the embedded ClickHouse (libchdb from the npm package @chdb/lib-linux-x64-gnu,
#          into .cache/chdb — no root, no apt): the demo runs on it with the in-process
#          Kafka broker, so it needs nothing else.
#   test   demo's, plus from Debian: clickhouse-server and -client (the 18.16 server the
#          tests run against beside the embedded engine), kcat (a third-party Kafka
#          client the tests produce with), docker-compose (validates deploy/compose
#          without a daemon), chromium (the page tests drive a real browser), zookeeper
#          (the cluster tests; run directly by scripts/cluster.sh, no service).
#   bench  test's, plus wrk (capture under load).
#
# Prints nothing else on success. CHDB_VERSION picks the npm package version.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
mkdir -p .cache
log=.cache/deps.log
CHDB_VERSION=${CHDB_VERSION:-26.7.3-stable.1}
chdb_dir=.cache/chdb
chdb_lib=$chdb_dir/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so

if [ ! -f "$chdb_lib" ] || [ "$(cat "$chdb_dir/.version" 2>/dev/null)" != "$CHDB_VERSION" ]; then
  command -v npm >/dev/null 2>&1 || { echo "deps.sh: npm is needed to fetch the embedded ClickHouse (install Node.js)" >&2; exit 1; }
  echo "deps.sh: fetching the embedded ClickHouse (npm @chdb/lib-linux-x64-gnu@$CHDB_VERSION, ~170 MB download; log in $log)" >&2
  mkdir -p "$chdb_dir"
  [ -f "$chdb_dir/package.json" ] || echo '{"name":"flagwatch-chdb","private":true}' > "$chdb_dir/package.json"
  if ! npm install --prefix "$chdb_dir" --no-audit --no-fund --no-save "@chdb/lib-linux-x64-gnu@$CHDB_VERSION" >>"$log" 2>&1; then
    echo "deps.sh: npm install failed; see $log" >&2; exit 1
  fi
  echo "$CHDB_VERSION" > "$chdb_dir/.version"
fi
[ "$mode" = demo ] && exit 0

need=()
command -v clickhouse-server >/dev/null 2>&1 || need+=(clickhouse-server)
command -v clickhouse-client >/dev/null 2>&1 || need+=(clickhouse-client)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
if [ "$mode" = bench ]; then
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${need[*]} from Debian (log in $log)" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"; } >>"$log" 2>&1; then
  echo "deps.sh: apt-get failed; see $log" >&2; exit 1
fi
