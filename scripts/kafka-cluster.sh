#!/usr/bin/env bash
# Runs a three-node Apache Kafka 4.x cluster (KRaft, each node a broker and a controller) on
# 127.0.0.1 from the official jars, PLAINTEXT only, with replication factor 3 and
# min.insync.replicas 2 as defaults, so that one node may be down while every partition stays
# writable. For the tests that take a broker away; scripts/kafka.sh runs the single broker.
#
#   scripts/kafka-cluster.sh start       fetch the jars if needed, format once, start the nodes
#                                        that are not running, wait until all three answer
#   scripts/kafka-cluster.sh kill N      SIGKILL node N (1-3)
#   scripts/kafka-cluster.sh start-node N  start node N again and wait until it answers
#   scripts/kafka-cluster.sh stop        stop every node and wait for it to exit
#   scripts/kafka-cluster.sh bootstrap   print the bootstrap list
#   scripts/kafka-cluster.sh reset       stop and delete the data
#
# Environment: KAFKA_CLUSTER_PORT (29092: node N's PLAINTEXT port is this + 10 × (N − 1), its
# controller port the next one), SALESPULSE_CACHE (.cache), KAFKA_HEAP (384m per node).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SALESPULSE_CACHE:-$root/.cache}
base=${KAFKA_CLUSTER_PORT:-29092}
case $base in '' | *[!0-9]*) echo "kafka-cluster: KAFKA_CLUSTER_PORT '$base' is not a number" >&2; exit 2 ;; esac
libs=$cache/kafka/libs
run=$cache/kafka/cluster-$base
nodes=(1 2 3)

port() { echo $((base + 10 * ($1 - 1))); }
cport() { echo $(($(port "$1") + 1)); }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { [ -f "$run/node-$1/pid" ] && kill -0 "$(cat "$run/node-$1/pid")" 2>/dev/null; }

bootstrap() {
  local out=() n
  for n in "${nodes[@]}"; do out+=("127.0.0.1:$(port "$n")"); done
  (IFS=,; echo "${out[*]}")
}

voters() {
  local out=() n
  for n in "${nodes[@]}"; do out+=("$n@127.0.0.1:$(cport "$n")"); done
  (IFS=,; echo "${out[*]}")
}

write_props() {
  local n=$1 dir=$run/node-$1
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$(voters)
listeners=PLAINTEXT://127.0.0.1:$(port "$n"),CONTROLLER://127.0.0.1:$(cport "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(port "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
transaction.state.log.num.partitions=3
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.backoff.ms=1000
PROPS
}

java_cmd() {
  java -Xms128m -Xmx${KAFKA_HEAP:-384m} -XX:+UseG1GC -cp "$libs/*" "$@"
}

format() {
  [ -f "$run/cluster-id" ] || java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null >"$run/cluster-id"
  local n
  for n in "${nodes[@]}"; do
    write_props "$n"
    if [ ! -f "$run/node-$n/data/meta.properties" ]; then
      java_cmd kafka.tools.StorageTool format -t "$(cat "$run/cluster-id")" \
        -c "$run/node-$n/server.properties" >"$run/node-$n/format.log" 2>&1 \
        || { cat "$run/node-$n/format.log"; exit 1; }
    fi
  done
}

launch() {
  local n=$1 dir=$run/node-$1
  running "$n" && return 0
  # A session of its own, as scripts/kafka.sh does: signals meant for the caller's process
  # group do not reach it.
  setsid nohup java -Xms128m -Xmx${KAFKA_HEAP:-384m} -XX:+UseG1GC -cp "$libs/*" kafka.Kafka \
    "$dir/server.properties" >>"$dir/broker.log" 2>&1 &
  echo $! >"$dir/pid"
}

wait_for() {
  local n
  for _ in $(seq 1 240); do
    local all=1
    for n in "$@"; do answers "$(port "$n")" || all=0; done
    [ "$all" -eq 1 ] && return 0
    for n in "$@"; do
      if ! running "$n"; then
        echo "kafka-cluster: node $n exited during start-up; last lines of its log:" >&2
        tail -n 30 "$run/node-$n/broker.log" >&2
        exit 1
      fi
    done
    sleep 0.5
  done
  echo "kafka-cluster: nodes $* did not answer within 120 s; see $run/node-*/broker.log" >&2
  exit 1
}

start() {
  "$root/scripts/kafka.sh" fetch
  mkdir -p "$run"
  format
  local n
  for n in "${nodes[@]}"; do launch "$n"; done
  wait_for "${nodes[@]}"
  echo "kafka-cluster: ready on $(bootstrap)"
}

node_arg() {
  case ${1:-} in 1 | 2 | 3) ;; *) echo "kafka-cluster: expected a node number 1-3" >&2; exit 2 ;; esac
}

kill_node() {
  node_arg "${1:-}"
  if running "$1"; then
    kill -KILL "$(cat "$run/node-$1/pid")"
    while running "$1"; do sleep 0.1; done
  fi
  echo "kafka-cluster: node $1 killed"
}

start_node() {
  node_arg "${1:-}"
  launch "$1"
  wait_for "$1"
  echo "kafka-cluster: node $1 answers on 127.0.0.1:$(port "$1")"
}

stop() {
  local n pid
  for n in "${nodes[@]}"; do
    running "$n" && kill -TERM "$(cat "$run/node-$n/pid")"
  done
  for n in "${nodes[@]}"; do
    [ -f "$run/node-$n/pid" ] || continue
    pid=$(cat "$run/node-$n/pid")
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    rm -f "$run/node-$n/pid"
  done
  echo "kafka-cluster: stopped"
}

case "${1:-}" in
  start) start ;;
  kill) kill_node "${2:-}" ;;
  start-node) start_node "${2:-}" ;;
  stop) stop ;;
  bootstrap) bootstrap ;;
  reset) stop; rm -rf "$run" ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
