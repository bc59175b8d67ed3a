#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.x broker (KRaft) on 127.0.0.1 from the official jars.
#
#   scripts/kafka.sh fetch   download the broker's jars into the cache (Maven Central)
#   scripts/kafka.sh start   fetch if needed, format the data dir once, start, wait until it answers
#   scripts/kafka.sh stop    stop the broker started here and wait for it to exit
#   scripts/kafka.sh status  exit 0 when the broker answers
#   scripts/kafka.sh reset   stop and delete the data dir
#
# Environment: KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), SALESPULSE_CACHE (.cache),
# KAFKA_HEAP (512m). Starting is idempotent: a broker that already answers is left alone.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SALESPULSE_CACHE:-$root/.cache}
port=${KAFKA_PORT:-19092}
cport=${KAFKA_CONTROLLER_PORT:-19093}
libs=$cache/kafka/libs
run=$cache/kafka/run-$port
data=$run/data
pidfile=$run/broker.pid
log=$run/broker.log
props=$run/server.properties

answers() {
  # A broker answers when its port accepts a connection; the services then wait for metadata.
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  mkdir -p "$libs"
  echo "kafka: fetching broker jars into $libs"
  mvn -q -B -f "$root/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  touch "$libs/.complete"
}

write_props() {
  mkdir -p "$data"
  cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.cleaner.backoff.ms=1000
PROPS
}

java_cmd() {
  java -Xms256m -Xmx${KAFKA_HEAP:-512m} -XX:+UseG1GC -cp "$libs/*" "$@"
}

start() {
  if answers; then echo "kafka: already running on 127.0.0.1:$port"; return 0; fi
  fetch
  write_props
  if [ ! -f "$data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$props" >"$run/format.log" 2>&1 || { cat "$run/format.log"; exit 1; }
  fi
  echo "kafka: starting on 127.0.0.1:$port (log: $log)"
  nohup java -Xms256m -Xmx${KAFKA_HEAP:-512m} -XX:+UseG1GC -cp "$libs/*" kafka.Kafka "$props" \
    >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if answers; then echo "kafka: ready on 127.0.0.1:$port"; return 0; fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "kafka: broker exited during start-up; last lines of $log:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "kafka: broker did not answer within 60 s; see $log" >&2
  exit 1
}

stop() {
  [ -f "$pidfile" ] || { echo "kafka: not started by this script"; return 0; }
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$pidfile"
  echo "kafka: stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  reset) stop; rm -rf "$run" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
