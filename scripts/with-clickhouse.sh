#!/usr/bin/env bash
# with-clickhouse.sh CMD… — run CMD with FLAGWATCH_TEST_CLICKHOUSE_DSN pointing at a
# throw-away ClickHouse server that is stopped afterwards, whatever CMD's outcome.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dirfile=$(mktemp)
dsn=$(CLICKHOUSE_DIR_FILE="$dirfile" CLICKHOUSE_WATCH_PID=$$ "$here/clickhouse.sh" start)
dir=$(cat "$dirfile"); rm -f "$dirfile"
trap '"$here/clickhouse.sh" stop "$dir"' EXIT
export FLAGWATCH_TEST_CLICKHOUSE_DSN="$dsn"
"$@"
