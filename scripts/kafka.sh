#!/usr/bin/env bash
# Runs a single-node Apache Kafka 4.x broker (KRaft) on 127.0.0.1 from the official jars, with
# a PLAINTEXT listener, a SASL_PLAINTEXT listener (mechanism PLAIN, authentication only: no
# authorizer) that knows one user, `salespulse`, and an SSL listener whose certificate is signed
# by a local CA made at first start. Inter-broker and controller traffic is PLAINTEXT.
#
#   scripts/kafka.sh fetch   download the broker's jars into the cache (Maven Central)
#   scripts/kafka.sh start   fetch if needed, format the data dir once, start, wait until every
#                            listener answers
#   scripts/kafka.sh stop    stop the broker started here and wait for it to exit
#   scripts/kafka.sh status  exit 0 when the broker answers (PLAINTEXT port)
#   scripts/kafka.sh reset   stop and delete the data dir
#
# Environment: KAFKA_PORT (19092, PLAINTEXT), KAFKA_CONTROLLER_PORT (19093), KAFKA_SASL_PORT
# (19094, SASL_PLAINTEXT), KAFKA_SSL_PORT (19095, SSL), KAFKA_SASL_PASSWORD (salespulse-secret,
# password of the user `salespulse`), SALESPULSE_CACHE (.cache), KAFKA_HEAP (512m). Each
# PLAINTEXT port has its own run dir (.cache/kafka/run-$KAFKA_PORT). Starting is idempotent: a
# broker that already answers is left alone. Clients of the SASL listener set
# security.protocol=SASL_PLAINTEXT, sasl.mechanisms=PLAIN, sasl.username=salespulse,
# sasl.password=$KAFKA_SASL_PASSWORD; clients of the SSL listener set security.protocol=SSL and
# ssl.ca.location=.cache/kafka/run-$KAFKA_PORT/tls/ca.pem (the broker's name is 127.0.0.1).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SALESPULSE_CACHE:-$root/.cache}
port=${KAFKA_PORT:-19092}
cport=${KAFKA_CONTROLLER_PORT:-19093}
sport=${KAFKA_SASL_PORT:-19094}
tport=${KAFKA_SSL_PORT:-19095}
sasl_user=salespulse
sasl_password=${KAFKA_SASL_PASSWORD:-salespulse-secret}
libs=$cache/kafka/libs
run=$cache/kafka/run-$port
data=$run/data
pidfile=$run/broker.pid
log=$run/broker.log
props=$run/server.properties
tls=$run/tls

answers() {
  # A broker answers when its port accepts a connection; the services then wait for metadata.
  (exec 3<>"/dev/tcp/127.0.0.1/${1:-$port}") 2>/dev/null
}

check_ports() {
  local p
  for p in "$port" "$cport" "$sport" "$tport"; do
    case $p in '' | *[!0-9]*) echo "kafka: port '$p' is not a number" >&2; exit 2 ;; esac
  done
  if [ "$(printf '%s\n' "$port" "$cport" "$sport" "$tport" | sort -u | wc -l)" -ne 4 ]; then
    echo "kafka: KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_SASL_PORT and KAFKA_SSL_PORT must differ" >&2
    exit 2
  fi
}

check_password() {
  # The password goes inside a quoted JAAS option of a properties file (read as ISO-8859-1):
  # refuse what would need escaping there rather than write a configuration that means
  # something else. The password itself is never printed.
  local odd
  odd=$(printf '%s' "$sasl_password" | LC_ALL=C tr -d ' !#-[]-~' | wc -c)
  if [ "$odd" -ne 0 ]; then
    echo "kafka: KAFKA_SASL_PASSWORD may hold printable ASCII characters other than" \
      "double quotes and backslashes only" >&2
    exit 2
  fi
}

fetch() {
  if [ -f "$libs/.complete" ]; then return 0; fi
  mkdir -p "$libs"
  echo "kafka: fetching broker jars into $libs"
  mvn -q -B -f "$root/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$libs" -DincludeScope=runtime
  touch "$libs/.complete"
}

make_tls() {
  # A local CA and a broker certificate for 127.0.0.1, made once per run dir. The keystore's
  # password only protects the file at rest, which is readable by its owner alone anyway.
  [ -f "$tls/server.p12" ] && return 0
  mkdir -p "$tls"
  chmod 700 "$tls"
  local pass=salespulse-keystore
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=salespulse local CA" \
    -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/san.ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 3650 -extfile "$tls/san.ext" -out "$tls/server.pem" 2>/dev/null
  openssl pkcs12 -export -in "$tls/server.pem" -inkey "$tls/server.key" -certfile "$tls/ca.pem" \
    -name broker -passout "pass:$pass" -out "$tls/server.p12.tmp"
  mv "$tls/server.p12.tmp" "$tls/server.p12"
}

write_props() {
  mkdir -p "$data"
  # The file holds the SASL password: readable by its owner only.
  (umask 077 && : >"$props")
  chmod 600 "$props"
  cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport,SASL_PLAINTEXT://127.0.0.1:$sport,SSL://127.0.0.1:$tport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_PLAINTEXT://127.0.0.1:$sport,SSL://127.0.0.1:$tport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/server.p12
ssl.keystore.password=salespulse-keystore
ssl.key.password=salespulse-keystore
ssl.client.auth=none
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$sasl_user="$sasl_password";
log.dirs=$data
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
# A transaction left open by a killed instance is aborted within transaction.timeout.ms (10 s)
# plus this interval; until then read_committed readers of its partitions wait.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
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
  check_ports
  if answers; then
    echo "kafka: already running on 127.0.0.1:$port"
    # A broker started before the SASL and SSL listeners existed, or one still starting.
    for _ in $(seq 1 10); do
      if answers "$sport" && answers "$tport"; then return 0; fi
      sleep 0.5
    done
    echo "kafka: warning: nothing answers on the SASL port 127.0.0.1:$sport or the SSL port" \
      "127.0.0.1:$tport; restart this broker (scripts/kafka.sh stop && scripts/kafka.sh start)" >&2
    return 0
  fi
  if answers "$sport" || answers "$cport" || answers "$tport"; then
    echo "kafka: 127.0.0.1:$sport, :$cport or :$tport is already in use by something else" >&2
    exit 1
  fi
  check_password
  fetch
  make_tls
  write_props
  if [ ! -f "$data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid 2>/dev/null)" \
      -c "$props" >"$run/format.log" 2>&1 || { cat "$run/format.log"; exit 1; }
  fi
  echo "kafka: starting on 127.0.0.1:$port, SASL_PLAINTEXT on :$sport, SSL on :$tport (log: $log)"
  # A session of its own: a Ctrl-C or a signal meant for the caller's process group does not
  # reach the broker; `stop` shuts it down in order.
  setsid nohup java -Xms256m -Xmx${KAFKA_HEAP:-512m} -XX:+UseG1GC -cp "$libs/*" kafka.Kafka "$props" \
    >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if answers && answers "$sport" && answers "$tport"; then
      echo "kafka: ready on 127.0.0.1:$port (PLAINTEXT), :$sport (SASL_PLAINTEXT) and :$tport (SSL)"
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "kafka: broker exited during start-up; last lines of $log:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "kafka: broker did not answer on every port within 60 s; see $log" >&2
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
  *) sed -n '2,22p' "$0"; exit 2 ;;
esac
