#!/usr/bin/env bash
# test.sh — make test's engine matrix. Every package runs against ClickHouse 18.16 (a
# throw-away Debian server); every package that uses ClickHouse (imports chtest) runs
# again on the embedded ClickHouse 26 (chDB) with its own defaults; and the tests that
# cover the schema, the pass, leases and claims run a third time on ClickHouse 26 with
# `compatibility` set to the version deploy/compose pins (COMPAT, default 24.8).
# GO_TEST_FLAGS are passed to go test. Temporary files go to a directory removed at the
# end, whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
read -r -a flags <<<"${GO_TEST_FLAGS:--count=1 -timeout 14m -p 2}"
COMPAT=${COMPAT:-$(sed -nE 's#.*clickhouse/clickhouse-server:([0-9]+\.[0-9]+).*#\1#p' deploy/compose/docker-compose.yml | head -1)}
COMPAT_RUN=${COMPAT_RUN:-'Migrate|Quote|Types|Classify|Incremental|Lease|TwoReplicas|ConcurrentHandlers|Replay'}
export CHDB_LIB_PATH=${CHDB_LIB_PATH:-$PWD/.cache/chdb/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/flagwatch-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export TMPDIR=$tmp

ch_pkgs=$($GO list -f '{{.ImportPath}} {{join .TestImports " "}} {{join .XTestImports " "}}' ./... |
  awk '$0 ~ /pipeline\/store\/chtest/ {print $1}')

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "ClickHouse 18.16 server: every package"
scripts/with-clickhouse.sh "$GO" test "${flags[@]}" ./...

step "embedded ClickHouse 26: $(echo "$ch_pkgs" | wc -w) packages that use ClickHouse"
FLAGWATCH_TEST_ENGINE=embedded "$GO" test "${flags[@]}" $ch_pkgs

step "embedded ClickHouse 26 with compatibility = $COMPAT (deploy/compose's version)"
FLAGWATCH_TEST_ENGINE=embedded FLAGWATCH_TEST_EMBEDDED_SETTINGS="compatibility=$COMPAT" \
  "$GO" test "${flags[@]}" -run "$COMPAT_RUN" $ch_pkgs
step "done"
