#!/bin/sh
# Writes the boards of SOURCE_DIR (deploy/grafana/dashboards) to OUT_DIR, where Grafana's
# provisioning reads them, with the amount panels in the reporting currency of the salespulse
# configuration and the stale-numbers banner at the top of every board on the configured delay:
#
#   [STALE_AFTER_SECONDS=900] render-dashboards.sh CONFIG SOURCE_DIR OUT_DIR
#
# Grafana does not expand variables in a panel's unit, nor anything in a provisioned board, so
# the boards carry placeholders and this replaces them when Grafana starts (docker-compose.yml):
#
#   ${REPORTING_CURRENCY_UNIT}  the unit of the amount panels, from the reporting currency;
#   ${STALE_AFTER_SECONDS}      the banner's threshold: it turns red ("Numbers are stale") when
#                               the newest deal or activity record is older than this many
#                               seconds. STALE_AFTER_SECONDS from the environment, a whole
#                               number of seconds of at least 1; default 900 (15 minutes, as the
#                               SalespulseNoEvents alert).
#
# The currency is SALESPULSE_CONTRACT__REPORTING_CURRENCY when set (the services' own
# override), else `reporting_currency` under [contract] in CONFIG, else USD (the services'
# default). A currency Grafana has a unit for (currencyEUR, ...) gets that unit, with its
# symbol; any other gets Grafana's custom currency unit `currency:CODE`.
# POSIX sh, sed and awk only: it runs in the Grafana image.
set -eu

if [ "$#" -ne 3 ]; then
  echo "usage: $0 CONFIG SOURCE_DIR OUT_DIR" >&2
  exit 2
fi
config=$1
src=$2
out=$3

currency=${SALESPULSE_CONTRACT__REPORTING_CURRENCY:-}
if [ -z "$currency" ]; then
  if [ ! -r "$config" ]; then
    echo "$0: cannot read $config" >&2
    exit 1
  fi
  currency=$(awk '
    { line = $0; sub(/#.*/, "", line) }
    line ~ /^[ \t]*\[/ { section = line; gsub(/[ \t]/, "", section); next }
    section == "[contract]" && line ~ /^[ \t]*reporting_currency[ \t]*=/ {
      sub(/^[^=]*=[ \t]*/, "", line); gsub(/["\047 \t]/, "", line); print line; exit
    }' "$config")
fi
currency=${currency:-USD}
case $currency in
  *[!A-Za-z0-9]*)
    echo "$0: reporting currency \"$currency\" is not a currency code" >&2
    exit 1
    ;;
esac
# The currency units of Grafana (11): currencyUSD, currencyEUR, ...
case $currency in
  USD | GBP | EUR | JPY | RUB | UAH | BRL | DKK | ISK | NOK | SEK | CZK | CHF | PLN | ZAR | INR | KRW)
    unit=currency$currency
    ;;
  *)
    unit=currency:$currency
    ;;
esac

stale=${STALE_AFTER_SECONDS:-900}
case $stale in
  *[!0-9]*)
    echo "$0: STALE_AFTER_SECONDS \"$stale\" is not a whole number of seconds" >&2
    exit 1
    ;;
esac
# Without leading zeros: PromQL reads 0900 as an octal number.
stale=$(printf '%s\n' "$stale" | sed 's/^0*//')
if [ -z "$stale" ]; then
  echo "$0: STALE_AFTER_SECONDS must be at least 1" >&2
  exit 1
fi

mkdir -p "$out"
rm -f "$out"/*.json
n=0
for board in "$src"/*.json; do
  [ -e "$board" ] || continue
  sed -e 's/\${REPORTING_CURRENCY_UNIT}/'"$unit"'/g' \
    -e 's/\${STALE_AFTER_SECONDS}/'"$stale"'/g' "$board" >"$out/$(basename "$board")"
  n=$((n + 1))
done
if [ "$n" -eq 0 ]; then
  echo "$0: no boards in $src" >&2
  exit 1
fi
echo "$n boards written to $out, amounts in $currency ($unit), numbers stale after $stale s"
