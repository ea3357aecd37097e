#!/usr/bin/env bash
# cluster.sh — a throw-away ClickHouse cluster on one machine for tests and benchmarks:
# ZooKeeper (Debian's zookeeper package, run directly: no system service) and SHARDS ×
# REPLICAS clickhouse-server 18.16 processes, every one on free ports with its data in
# one temp dir.
#
#   scripts/cluster.sh start [SHARDS [REPLICAS]]   start (default 2 × 2); prints
#                 "dir <DIR>", "cluster <NAME>", "zookeeper <HOST:PORT>", then per node
#                 "node <shard> <replica> <DSN>"
#   scripts/cluster.sh stop DIR                    stop everything and remove DIR
#   scripts/cluster.sh kill DIR SHARD REPLICA      SIGKILL one server (fault tests)
#   scripts/cluster.sh restart DIR SHARD REPLICA   start it again on the same ports
#   scripts/cluster.sh install                     install clickhouse-server and zookeeper
#
# CLICKHOUSE_WATCH_PID=P stops the cluster when process P exits (a killed test cannot run
# its cleanup). Nothing here needs root except the install.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
log() { printf 'cluster.sh: %s\n' "$*" >&2; }
CLUSTER=${CLUSTER_NAME:-flagwatch}

install() {
  local need=()
  { command -v clickhouse-server >/dev/null 2>&1 && [ -f /etc/clickhouse-server/config.xml ]; } || need+=(clickhouse-server clickhouse-client)
  [ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
  [ ${#need[@]} -eq 0 ] && return 0
  log "installing ${need[*]} from Debian"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2
}

free_port() {
  local p
  for _ in $(seq 1 200); do
    # Below the kernel's ephemeral range (32768 and up on Linux), so no outgoing
    # connection takes the port between this check and the server binding it.
    p=$(( 10000 + RANDOM % 22000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! grep -qx "$p" "$dir/ports" 2>/dev/null; then
      echo "$p" >> "$dir/ports"; echo "$p"; return 0
    fi
  done
  log "no free port found"; return 1
}

answers() { timeout 5 clickhouse-client --host 127.0.0.1 --port "$1" -q 'SELECT 1' >/dev/null 2>&1; }

start_zk() {
  local zk=$dir/zookeeper port; port=$(free_port)
  mkdir -p "$zk/data"
  cat > "$zk/zoo.cfg" <<CFG
tickTime=500
initLimit=10
syncLimit=5
dataDir=$zk/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,mntr,srvr,conf
CFG
  ( cd "$zk" && exec setsid java -Xms32m -Xmx256m -XX:+UseSerialGC \
      -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$zk/zoo.cfg" ) >"$zk/log" 2>&1 </dev/null &
  echo $! > "$zk/pid"; echo "$port" > "$zk/port"
  for _ in $(seq 1 100); do
    # A connection accepted before ZooKeeper serves four-letter words gets no answer
    # and is not closed: bound each probe.
    if timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && grep -q Mode <&3' _ "$port" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "ZooKeeper did not start:"; tail -20 "$zk/log" >&2; return 1
}

# node_config SHARD REPLICA writes the node's config: Debian's, rewritten like
# clickhouse.sh does for one server, plus a config.d file with the cluster.
node_config() {
  local s=$1 r=$2 nd=$dir/node-$1-$2 tcp http inter
  mkdir -p "$nd/data" "$nd/log" "$nd/tmp" "$nd/user_files" "$nd/format_schemas" "$nd/config.d"
  tcp=$(free_port); http=$(free_port); inter=$(free_port)
  echo "$tcp" > "$nd/port"
  sed -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
      -e "s#<http_port>8123</http_port>#<http_port>$http</http_port>#" \
      -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$inter</interserver_http_port>#" \
      -e "s#<listen_host>::1</listen_host>##" \
      -e "s#/var/log/clickhouse-server/#$nd/log/#g" \
      -e "s#<path>/var/lib/clickhouse/</path>#<path>$nd/data/</path>#" \
      -e "s#/var/lib/clickhouse/tmp/#$nd/tmp/#" \
      -e "s#/var/lib/clickhouse/user_files/#$nd/user_files/#" \
      -e "s#/var/lib/clickhouse/format_schemas/#$nd/format_schemas/#" \
      /etc/clickhouse-server/config.xml > "$nd/config.xml"
  # The default profile: modest memory, and reads and writes through Distributed tables
  # that prefer each shard's first healthy replica (flagwatch sets it per connection on
  # newer servers; 18.16's protocol cannot carry it).
  sed -e 's#<max_memory_usage>[0-9]*</max_memory_usage>#<max_memory_usage>4000000000</max_memory_usage>#' \
      -e 's#<load_balancing>[a-z_]*</load_balancing>#<load_balancing>in_order</load_balancing>#' \
      /etc/clickhouse-server/users.xml > "$nd/users.xml"
  grep -q '<load_balancing>in_order' "$nd/users.xml" || sed -i 's#<max_memory_usage>4000000000</max_memory_usage>#&<load_balancing>in_order</load_balancing>#' "$nd/users.xml"
}

remote_servers() {
  local s r
  echo "<remote_servers replace=\"replace\"><$CLUSTER>"
  for s in $(seq 1 "$shards"); do
    echo "<shard><internal_replication>true</internal_replication>"
    for r in $(seq 1 "$replicas"); do
      echo "<replica><host>127.0.0.1</host><port>$(cat "$dir/node-$s-$r/port")</port></replica>"
    done
    echo "</shard>"
  done
  echo "</$CLUSTER></remote_servers>"
}

write_cluster_d() {
  local s=$1 r=$2 nd=$dir/node-$1-$2
  cat > "$nd/config.d/cluster.xml" <<XML
<yandex>
  <listen_host>127.0.0.1</listen_host>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <macros><shard>$s</shard><replica>r$r</replica></macros>
  $(remote_servers)
  <zookeeper replace="replace"><node><host>127.0.0.1</host><port>$(cat "$dir/zookeeper/port")</port></node>
    <session_timeout_ms>10000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <kafka><auto_offset_reset>smallest</auto_offset_reset></kafka>
</yandex>
XML
}

launch() {
  local nd=$dir/node-$1-$2
  ( cd "$nd" && exec setsid clickhouse-server --config-file="$nd/config.xml" ) >>"$nd/log/stdout.log" 2>&1 </dev/null &
  echo $! > "$nd/pid"
}

wait_node() {
  local nd=$dir/node-$1-$2 port; port=$(cat "$nd/port")
  for _ in $(seq 1 150); do
    answers "$port" && return 0
    kill -0 "$(cat "$nd/pid")" 2>/dev/null || break
    sleep 0.2
  done
  log "node $1-$2 did not start:"; tail -20 "$nd/log/"*.err.log >&2 2>/dev/null || true; return 1
}

start() {
  install
  shards=${1:-2}; replicas=${2:-2}
  dir=$(mktemp -d "${TMPDIR:-/tmp}/flagwatch-cluster.XXXXXX")
  echo "$shards $replicas" > "$dir/shape"
  # From here on a watchdog stops whatever was started once the caller is gone, even if
  # the start itself fails half-way or is killed.
  if [ -n "${CLICKHOUSE_WATCH_PID:-}" ]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done; "$2" stop "$3"' \
      _ "$CLICKHOUSE_WATCH_PID" "$here/cluster.sh" "$dir" >/dev/null 2>&1 </dev/null &
  fi
  start_zk
  local s r
  for s in $(seq 1 "$shards"); do for r in $(seq 1 "$replicas"); do node_config "$s" "$r"; done; done
  for s in $(seq 1 "$shards"); do for r in $(seq 1 "$replicas"); do write_cluster_d "$s" "$r"; launch "$s" "$r"; done; done
  for s in $(seq 1 "$shards"); do for r in $(seq 1 "$replicas"); do wait_node "$s" "$r"; done; done
  log "started a $shards × $replicas cluster '$CLUSTER' with ZooKeeper on 127.0.0.1:$(cat "$dir/zookeeper/port") (data in $dir)"
  echo "dir $dir"
  echo "cluster $CLUSTER"
  echo "zookeeper 127.0.0.1:$(cat "$dir/zookeeper/port")"
  for s in $(seq 1 "$shards"); do for r in $(seq 1 "$replicas"); do
    echo "node $s $r clickhouse://127.0.0.1:$(cat "$dir/node-$s-$r/port")/flagwatch"
  done; done
}

stop_pid() {
  local pid=$1 i
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  dir=$1
  [ -d "$dir" ] || return 0
  local p
  # Servers before ZooKeeper: a server whose ZooKeeper is gone can hang in shutdown.
  for p in "$dir"/node-*/pid; do [ -f "$p" ] && stop_pid "$(cat "$p")" & done
  wait
  [ -f "$dir/zookeeper/pid" ] && stop_pid "$(cat "$dir/zookeeper/pid")"
  case "$dir" in *flagwatch-cluster.*) rm -rf "$dir" ;; esac
}

cmd=${1:-}
case "$cmd" in
  start) shift; start "$@" ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  kill) dir=${2:?}; kill -9 "$(cat "$dir/node-$3-$4/pid")" ;;
  restart) dir=${2:?}; read -r shards replicas < "$dir/shape"; launch "$3" "$4"; wait_node "$3" "$4" ;;
  install) install ;;
  *) echo "usage: $0 start [SHARDS [REPLICAS]] | stop DIR | kill DIR S R | restart DIR S R | install" >&2; exit 2 ;;
esac
