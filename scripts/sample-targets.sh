#!/usr/bin/env bash
# Prints a targets CSV for the simulated org (scripts/run.sh, seed 42: teams team-emea,
# team-amer, team-apac, team-nordics; reps rep-001..rep-024) for the current fiscal year,
# quarter, month and ISO week (fiscal year = calendar year, UTC).
set -euo pipefail
year=$(date -u +%Y)
month=$(date -u +%m)
quarter=$(( (10#$month - 1) / 3 + 1 ))
week=$(date -u +%G-W%V)
echo "scope,id,metric,kind,period,value,currency"
echo "org,org,bookings,,FY$year,60000000,USD"
echo "org,org,bookings,,$year-Q$quarter,15000000,USD"
echo "org,org,deals_won,,$year-$month,400,"
for team in team-emea team-amer team-apac team-nordics; do
  echo "team,$team,bookings,,$year-Q$quarter,3750000,USD"
  echo "team,$team,pipeline_created,,$year-$month,5000000,USD"
  echo "team,$team,activities,call,$week,600,"
done
for i in $(seq 1 24); do
  rep=$(printf 'rep-%03d' "$i")
  echo "rep,$rep,bookings,,$year-Q$quarter,$(( 500000 + (i % 5) * 100000 )),USD"
  echo "rep,$rep,deals_won,,$year-$month,$(( 12 + i % 6 )),"
  echo "rep,$rep,activities,call,$week,$(( 80 + (i % 4) * 10 )),"
done
