#!/usr/bin/env bash
# Prints a targets CSV for the simulated org (scripts/run.sh, seed 42: teams team-emea,
# team-amer, team-apac, team-nordics; reps rep-001..rep-024): a whole fiscal year's plan, as
# sales operations loads it at the start of the year (fiscal year = calendar year, UTC):
#
#   - bookings of the org, every region (the simulator's roster puts team-emea and
#     team-nordics in europe, team-amer in americas, team-apac in asia-pacific), every team
#     and every rep for the year, its four quarters, its twelve months and every ISO week that
#     overlaps it;
#   - deals won of the org and every rep, and pipeline created of every team, per month;
#   - calls of every team and every rep per ISO week.
#
# The targets service shows the targets of the current year, quarter, month and week only.
# Each period has its own value: the quarters weigh 22, 24, 26 and 28 % of the year in an order
# that differs from team to team and rep to rep, the months of a quarter 30, 33 and 37 %.
# YEAR (default: the current one) names the fiscal year.
set -euo pipefail
year=${YEAR:-$(date -u +%Y)}
teams=(team-emea team-amer team-apac team-nordics)
weights=(22 24 26 28)

# Every ISO week that overlaps the year, Monday first.
jan1=$(date -u -d "$year-01-01" +%s)
dow=$(date -u -d "@$jan1" +%u)
monday=$((jan1 - (dow - 1) * 86400))
weeks=()
for ((t = monday; t < $(date -u -d "$((year + 1))-01-01" +%s); t += 7 * 86400)); do
  weeks+=("$(date -u -d "@$t" +%G-W%V)")
done

# bookings SCOPE ID ANNUAL SHIFT: the year, its quarters (weights rotated by SHIFT), months, weeks.
bookings() {
  local scope=$1 id=$2 annual=$3 shift=$4 q m quarter month w
  echo "$scope,$id,bookings,,FY$year,$annual,USD"
  for q in 1 2 3 4; do
    quarter=$((annual * weights[(q - 1 + shift) % 4] / 100))
    echo "$scope,$id,bookings,,$year-Q$q,$quarter,USD"
    for m in 0 1 2; do
      month=$(((q - 1) * 3 + m + 1))
      printf '%s,%s,bookings,,%d-%02d,%d,USD\n' "$scope" "$id" "$year" "$month" \
        $((quarter * (30 + m * 3 + (m / 2)) / 100))
    done
  done
  for w in "${weeks[@]}"; do
    echo "$scope,$id,bookings,,$w,$((annual / 52)),USD"
  done
}

echo "scope,id,metric,kind,period,value,currency"
bookings org org 60000000 1
bookings region europe 30000000 0
bookings region americas 15000000 1
bookings region asia-pacific 15000000 2
for m in $(seq 1 12); do
  printf 'org,org,deals_won,,%d-%02d,%d,\n' "$year" "$m" $((380 + m * 5))
done
for i in "${!teams[@]}"; do
  team=${teams[$i]}
  bookings team "$team" 15000000 "$i"
  for m in $(seq 1 12); do
    printf 'team,%s,pipeline_created,,%d-%02d,5000000,USD\n' "$team" "$year" "$m"
  done
  for w in "${weeks[@]}"; do
    echo "team,$team,activities,call,$w,600,"
  done
done
for i in $(seq 1 24); do
  rep=$(printf 'rep-%03d' "$i")
  bookings rep "$rep" $((2000000 + (i % 5) * 400000)) "$i"
  for m in $(seq 1 12); do
    printf 'rep,%s,deals_won,,%d-%02d,%d,\n' "$rep" "$year" "$m" $((12 + i % 6))
  done
  for w in "${weeks[@]}"; do
    echo "rep,$rep,activities,call,$w,$((80 + (i % 4) * 10)),"
  done
done
