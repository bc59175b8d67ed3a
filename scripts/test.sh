#!/usr/bin/env bash
# Runs every test: unit and property tests, and the end-to-end suite against a real Kafka
# broker and a real Prometheus. Starts the local broker unless KAFKA_BOOTSTRAP names one.
#
#   scripts/test.sh            all tests
#   scripts/test.sh -- ARGS    extra arguments for `cargo test`
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/setup.sh

started_kafka=0
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  if ! scripts/kafka.sh status; then
    scripts/kafka.sh start
    started_kafka=1
  fi
  export KAFKA_BOOTSTRAP=127.0.0.1:${KAFKA_PORT:-19092}
fi
cleanup() { [ "$started_kafka" = 1 ] && scripts/kafka.sh stop >/dev/null || true; }
trap cleanup EXIT

[ "${1:-}" = "--" ] && shift
# The end-to-end tests start the service binaries; build them first so that test time is
# spent testing.
cargo build --workspace --bins
# A failing test's message (with the log lines it quotes) stays readable at the end of the
# output without a backtrace; SALESPULSE_BACKTRACE=1 brings them back. Every test binary runs
# even after one fails, so that one run reports every failure.
export RUST_BACKTRACE="${SALESPULSE_BACKTRACE:-0}"
# The end-to-end tests print what they did and found (records, kills, differences): show that
# for passing tests too, unless the caller passes test-binary arguments of its own.
case " $* " in
  *" -- "*) args=("$@") ;;
  *) args=("$@" -- --show-output) ;;
esac
# The passing tests' reports are long; each failure is repeated at the very end, its first
# lines (the panic message and what the test quotes), so that the tail of the output alone
# says what failed and why.
log=$(mktemp "${TMPDIR:-/tmp}/salespulse-test.XXXXXX")
status=0
cargo test --workspace --no-fail-fast "${args[@]}" 2>&1 | tee "$log" || status=$?
if [ "$status" != 0 ]; then
  echo
  echo "==== failed tests, their first lines (the whole output is in $log) ===="
  awk '/^failures:$/ { on = 1; next }
       /^test result: / { on = 0 }
       on && /^---- .* stdout ----$/ { n = 0; print; next }
       on && n < 40 && !/^failures:$/ { n++; print }' "$log"
  echo "==== end of failed tests ===="
  # Where and why each failed, a line or two each, last: what the tail of the output shows.
  echo "==== why they failed ===="
  awk '/^---- .* stdout ----$/ { name = $2 }
       /panicked at / { print name ": " $0; getline; print "    " $0 }' "$log" | tail -n 40
fi
exit "$status"
