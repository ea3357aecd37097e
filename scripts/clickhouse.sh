#!/usr/bin/env bash
# clickhouse.sh — a throw-away ClickHouse server for tests, benchmarks and the demo.
#
#   scripts/clickhouse.sh ensure   print the DSN of a server that answers: the one at
#                                  $FLAGWATCH_CLICKHOUSE_DSN if it does, otherwise a new
#                                  one started on free ports with its data in a temp dir
#                                  (Debian's clickhouse-server is installed if missing)
#                                  (CLICKHOUSE_DIR_FILE=F: write the new server's dir to F;
#                                  CLICKHOUSE_WATCH_PID=P: stop it when process P exits)
#   scripts/clickhouse.sh stop DIR stop the server started in DIR and remove DIR
#   scripts/clickhouse.sh halt DIR stop it but keep its data; resume DIR starts it again
#   scripts/clickhouse.sh install  install clickhouse-server (and client) if missing
#
# The server's own config from /etc/clickhouse-server is copied and rewritten (ports and
# the /var/lib, /var/log paths), so nothing here needs root except the install.
set -euo pipefail

log() { printf 'clickhouse.sh: %s\n' "$*" >&2; }

install_server() {
  if command -v clickhouse-server >/dev/null 2>&1 && [ -f /etc/clickhouse-server/config.xml ]; then
    return 0
  fi
  log "installing Debian's clickhouse-server"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2
  $sudo apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client >&2
}

# answers HOST PORT: a native-protocol SELECT 1 succeeds.
answers() {
  command -v clickhouse-client >/dev/null 2>&1 || return 1
  timeout 5 clickhouse-client --host "$1" --port "$2" -q 'SELECT 1' >/dev/null 2>&1
}

free_port() {
  local p
  for _ in $(seq 1 200); do
    # Below the kernel's ephemeral range (32768 and up on Linux), so no outgoing
    # connection takes the port between this check and the server binding it.
    p=$(( 10000 + RANDOM % 22000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  log "no free port found"; return 1
}

# launch runs the server detached from the caller: its own session, and none of the
# caller's file descriptors (a caller reading our stdout must see it close), so $! is the
# server's pid.
launch() {
  local dir=$1
  ( cd "$dir" && exec setsid clickhouse-server --config-file="$dir/config.xml" ) \
      >>"$dir/log/stdout.log" 2>&1 </dev/null &
  echo $! > "$dir/pid"
}

start_server() {
  install_server
  local dir tcp http inter
  dir=$(mktemp -d "${TMPDIR:-/tmp}/flagwatch-clickhouse.XXXXXX")
  tcp=$(free_port); http=$(free_port); inter=$(free_port)
  mkdir -p "$dir/data" "$dir/log" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
  sed -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
      -e "s#<http_port>8123</http_port>#<http_port>$http</http_port>#" \
      -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$inter</interserver_http_port>#" \
      -e "s#<listen_host>::1</listen_host>##" \
      -e "s#/var/log/clickhouse-server/#$dir/log/#g" \
      -e "s#<path>/var/lib/clickhouse/</path>#<path>$dir/data/</path>#" \
      -e "s#/var/lib/clickhouse/tmp/#$dir/tmp/#" \
      -e "s#/var/lib/clickhouse/user_files/#$dir/user_files/#" \
      -e "s#/var/lib/clickhouse/format_schemas/#$dir/format_schemas/#" \
      -e "s#</yandex>#<kafka><auto_offset_reset>smallest</auto_offset_reset></kafka></yandex>#" \
      /etc/clickhouse-server/config.xml > "$dir/config.xml"
  cp /etc/clickhouse-server/users.xml "$dir/users.xml"
  launch "$dir"
  for _ in $(seq 1 100); do
    if answers 127.0.0.1 "$tcp"; then
      log "started ClickHouse on 127.0.0.1:$tcp (data in $dir; stop with: $0 stop $dir)"
      # A test process that is killed cannot run its cleanup: with CLICKHOUSE_WATCH_PID
      # set, a watchdog stops the server once that process is gone.
      if [ -n "${CLICKHOUSE_WATCH_PID:-}" ]; then
        setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; "$2" stop "$3"' \
          _ "$CLICKHOUSE_WATCH_PID" "$0" "$dir" >/dev/null 2>&1 </dev/null &
      fi
      # The caller that must stop the server later names a file to receive its dir.
      [ -n "${CLICKHOUSE_DIR_FILE:-}" ] && echo "$dir" > "$CLICKHOUSE_DIR_FILE"
      echo "clickhouse://127.0.0.1:$tcp/flagwatch"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then break; fi
    sleep 0.2
  done
  log "ClickHouse did not start; its log:"; tail -20 "$dir/log/"*.log >&2 || true
  return 1
}

# halt stops the server but keeps its data, so resume can bring it back on the same port
# (fault-injection tests: "ClickHouse went away and came back").
halt_server() {
  local dir=$1 pid
  pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

resume_server() {
  local dir=$1 port
  port=$(sed -nE 's#.*<tcp_port>([0-9]+)</tcp_port>.*#\1#p' "$dir/config.xml")
  launch "$dir"
  for _ in $(seq 1 100); do
    answers 127.0.0.1 "$port" && return 0
    sleep 0.2
  done
  log "ClickHouse did not come back in $dir"; return 1
}

stop_server() {
  local dir=$1
  [ -f "$dir/pid" ] || { log "no server in $dir"; return 0; }
  local pid; pid=$(cat "$dir/pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  case "$dir" in *flagwatch-clickhouse.*) rm -rf "$dir" ;; esac
}

cmd=${1:-ensure}
case "$cmd" in
  ensure)
    dsn=${FLAGWATCH_CLICKHOUSE_DSN:-clickhouse://127.0.0.1:9000/flagwatch}
    hostport=$(printf '%s' "$dsn" | sed -E 's#^[a-z]+://([^@/]*@)?([^/?]+).*#\2#')
    host=${hostport%:*}; port=${hostport##*:}
    [ "$port" = "$hostport" ] && port=9000
    if answers "$host" "$port"; then echo "$dsn"; exit 0; fi
    start_server ;;
  start) start_server ;;
  stop) stop_server "${2:?usage: $0 stop DIR}" ;;
  halt) halt_server "${2:?usage: $0 halt DIR}" ;;
  resume) resume_server "${2:?usage: $0 resume DIR}" ;;
  install) install_server ;;
  *) echo "usage: $0 ensure|start|stop DIR|install" >&2; exit 2 ;;
esac
