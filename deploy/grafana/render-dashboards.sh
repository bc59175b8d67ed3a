#!/bin/sh
# Writes the boards of SOURCE_DIR (deploy/grafana/dashboards) to OUT_DIR, where Grafana's
# provisioning reads them, with the amount panels in the reporting currency of the salespulse
# configuration:
#
#   render-dashboards.sh CONFIG SOURCE_DIR OUT_DIR
#
# Grafana does not expand variables in a panel's unit, nor anything in a provisioned board, so
# the boards carry the placeholder unit ${REPORTING_CURRENCY_UNIT} and this replaces it when
# Grafana starts (docker-compose.yml). The currency is SALESPULSE_CONTRACT__REPORTING_CURRENCY
# when set (the services' own override), else `reporting_currency` under [contract] in CONFIG,
# else USD (the services' default). A currency Grafana has a unit for (currencyEUR, ...) gets
# that unit, with its symbol; any other gets Grafana's custom currency unit `currency:CODE`.
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

mkdir -p "$out"
rm -f "$out"/*.json
n=0
for board in "$src"/*.json; do
  [ -e "$board" ] || continue
  sed 's/\${REPORTING_CURRENCY_UNIT}/'"$unit"'/g' "$board" >"$out/$(basename "$board")"
  n=$((n + 1))
done
if [ "$n" -eq 0 ]; then
  echo "$0: no boards in $src" >&2
  exit 1
fi
echo "$n boards written to $out, amounts in $currency ($unit)"
