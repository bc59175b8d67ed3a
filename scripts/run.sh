#!/usr/bin/env bash
# The main job: a local Kafka, the deals and activities services, Prometheus, and a simulated
# sales org writing live. Prints where to look and a small live summary; Ctrl-C stops it all.
#
# Environment: KAFKA_BOOTSTRAP (use an existing cluster instead of the local broker),
# SIM_RATE (records/s, default 20), SIM_BACKFILL_DAYS (default 2), SIM_SEED (default 42).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
logs=$root/.cache/run
mkdir -p "$logs"

scripts/setup.sh
started_kafka=0
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  if ! scripts/kafka.sh status >/dev/null 2>&1; then
    scripts/kafka.sh start
    started_kafka=1
  fi
  export KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-19092}
fi

echo "building the services (first time: a few minutes)"
cargo build --quiet --bins

pids=()
stop() {
  trap - EXIT INT TERM
  echo
  echo "stopping"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # A broker that was already running stays; the one started here stops with the rest.
  if [ "$started_kafka" = 1 ]; then scripts/kafka.sh stop || true; fi
}
trap stop EXIT INT TERM

export SALESPULSE_CONFIG=$root/config/salespulse.toml
target=${CARGO_TARGET_DIR:-$root/target}/debug
"$target/salespulse-deals" >"$logs/deals.log" 2>&1 & pids+=($!)
"$target/salespulse-activities" >"$logs/activities.log" 2>&1 & pids+=($!)
"$target/salespulse-targets" >"$logs/targets.log" 2>&1 & pids+=($!)
prom_port=${PROMETHEUS_PORT:-9090}
if command -v prometheus >/dev/null 2>&1; then
  prometheus --config.file="$root/deploy/prometheus/prometheus.yml" \
    --storage.tsdb.path="$logs/prometheus-data" --web.listen-address="127.0.0.1:$prom_port" \
    >"$logs/prometheus.log" 2>&1 & pids+=($!)
fi
for port in 9101 9102 9103; do
  for _ in $(seq 1 120); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.5
  done
done
# A whole year's plan of targets for the simulated org (the services show the current periods).
scripts/sample-targets.sh >"$logs/targets.csv"
"$target/salespulse-targets" import "$logs/targets.csv" >>"$logs/targets.log" 2>&1
"$target/salespulse-simulator" --bootstrap "$KAFKA_BOOTSTRAP" --seed "${SIM_SEED:-42}" \
  --backfill-days "${SIM_BACKFILL_DAYS:-2}" --backfill-rate "${SIM_BACKFILL_RATE:-600}" \
  --rate "${SIM_RATE:-20}" \
  >"$logs/simulator.log" 2>&1 & pids+=($!)

# The fiscal quarter now (config/salespulse.toml: UTC, fiscal year from January).
quarter="$(date -u +%Y)-Q$(( ($(date -u +%-m) - 1) / 3 + 1 ))"

cat <<INFO

salespulse is running.
  deals metrics        http://127.0.0.1:9101/metrics
  activities metrics   http://127.0.0.1:9102/metrics
  targets, pace, ranks http://127.0.0.1:9103/metrics   (targets: $logs/targets.csv)
  readiness            http://127.0.0.1:9101/readyz  http://127.0.0.1:9102/readyz
  Prometheus           http://127.0.0.1:$prom_port/graph?g0.expr=sales_org_bookings
  metric records       Kafka topic sales.metrics on $KAFKA_BOOTSTRAP
  alerts, celebrations Kafka topics sales.alerts and sales.celebrations
  leaderboard          $target/salespulse-board   (in another terminal; --view pipeline [--team T])
  quarterly report     $target/salespulse-report --config $SALESPULSE_CONFIG --period $quarter --out report.html
                       (--format csv or md; --team T; last quarter's once the history covers it:
                       SIM_BACKFILL_DAYS=190 SIM_BACKFILL_RATE=20 scripts/run.sh)
  logs                 $logs
Ctrl-C stops everything.

INFO

# Announcements (alerts, celebrations) as the services log them: how many, and the latest.
announced() {
  grep -h '"message":"announcing"' "$logs/deals.log" "$logs/targets.log" 2>/dev/null \
    | grep "\"topic\":\"$1\"" \
    | awk '{ n++; last = $0 } END { sub(/.*"key":"/, "", last); sub(/".*/, "", last); printf "%d (latest %s)", n, (n ? last : "none") }'
}
value() { curl -s "http://127.0.0.1:$1/metrics" | awk -v s="$2" 'index($0, s) == 1 { print $2; exit }'; }
# Money to the cent, as a sales floor reads it (the series are exact; a weighted pipeline has
# fractions of a cent).
money() { value "$1" "$2" | awk '{ printf "%.2f", $1 } END { if (!NR) print "-" }'; }
# Sum of every series whose line matches the given regular expression (e.g. all stages).
total() { curl -s "http://127.0.0.1:$1/metrics" | awk -v re="$2" '$0 ~ re { t += $2; n++ } END { if (n) printf "%.10g", t; else print "-" }'; }
while true; do
  sleep 5
  printf '%s  org today: bookings %s  won %s  created %s | weighted pipeline %s | calls 1h %s  emails 1h %s\n' \
    "$(date +%H:%M:%S)" \
    "$(money 9101 'sales_org_bookings{window="today"}')" \
    "$(value 9101 'sales_org_deals_won{window="today"}')" \
    "$(money 9101 'sales_org_pipeline_created{window="today"}')" \
    "$(money 9101 'sales_org_weighted_pipeline ')" \
    "$(value 9102 'sales_org_activities{kind="call",window="1h"}')" \
    "$(value 9102 'sales_org_activities{kind="email",window="1h"}')"
  # Ratios as percentages, as a sales floor reads them.
  printf '          quarter bookings: org attainment %s | pace %s\n' \
    "$(curl -s http://127.0.0.1:9103/metrics | awk '/^sales_org_attainment_ratio\{metric="bookings",period="[0-9]+-Q/ { printf "%.1f %%", $2 * 100; exit }')" \
    "$(curl -s http://127.0.0.1:9103/metrics | awk '/^sales_org_pace_ratio\{metric="bookings",period="[0-9]+-Q/ { printf "%.1f %%", $2 * 100; exit }')"
  # How deals move: the funnel now, what is stuck, what slipped, and the quarter's commit call.
  printf '          pipeline: open deals %s | entered a stage 1h %s | stalled %s | overdue %s | pushed out this quarter %s | commit roll-up %s\n' \
    "$(total 9101 '^sales_org_open_deals[{]')" \
    "$(total 9101 '^sales_org_stage_entered[{].*window="1h"')" \
    "$(total 9101 '^sales_org_stalled_deals[{]')" \
    "$(value 9101 'sales_org_overdue_deals ')" \
    "$(value 9101 'sales_org_close_date_pushed{window="qtd"}')" \
    "$(curl -s http://127.0.0.1:9101/metrics | awk '/^sales_org_forecast_rollup[{]/ && /period_type="quarter"/ && /rollup="commit"/ { printf "%.2f", $2; exit }')"
  printf '          celebrations %s | alerts %s\n' "$(announced sales.celebrations)" "$(announced sales.alerts)"
done
