#!/usr/bin/env bash
# demo.sh — make demo: the story end to end on the embedded default. Uses the ClickHouse
# at $FLAGWATCH_CLICKHOUSE_DSN if one answers there, otherwise starts a throw-away one
# (installing Debian's clickhouse-server if needed) and stops it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
dirfile=$(mktemp)
dsn=$(CLICKHOUSE_DIR_FILE="$dirfile" scripts/clickhouse.sh ensure)
dir=$(cat "$dirfile" 2>/dev/null || true); rm -f "$dirfile"
if [ -n "$dir" ]; then trap 'scripts/clickhouse.sh stop "$dir"' EXIT; fi
echo "flagwatch demo — ClickHouse at ${dsn%%\?*}"
bin/demo --clickhouse-dsn "$dsn" --data-dir .demo "$@"
