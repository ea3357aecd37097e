#!/usr/bin/env bash
# demo.sh — make demo: the story end to end on the embedded default: the in-process Kafka
# broker and the embedded ClickHouse 26 (chDB) in .demo/clickhouse. Nothing to install
# beyond what scripts/deps.sh demo fetched, no root, no server. Set
# FLAGWATCH_CLICKHOUSE_DSN to run it on a ClickHouse server instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHDB_LIB_PATH=${CHDB_LIB_PATH:-$PWD/.cache/chdb/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so}
dsn=${FLAGWATCH_CLICKHOUSE_DSN:-chdb://$PWD/.demo/clickhouse}
echo "flagwatch demo — ClickHouse: ${dsn%%\?*}"
bin/demo --clickhouse-dsn "$dsn" --data-dir .demo "$@"
