#!/bin/bash
# Imports a 1,000,000-row rate deck into a fresh billhook (SQLite, or DB=postgres://…)
# and reports the job's duration and the server's peak memory (/usr/bin/time -v).
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/billhook-import-1m}
mkdir -p "$WORK" && cd "$WORK"
[ -f rates_1m.csv ] || python3 -c "
with open('rates_1m.csv','w') as f:
    f.write('prefix,rate,effective_from\\n')
    for i in range(1_000_000):
        f.write(f'{1000000+i},0.{i%10000:04d},2026-01-01\\n')
"
rm -rf run && mkdir run && cd run
BIN=${BIN:-$ROOT/target/release/billhook}
DB=${DB:-sqlite:./billhook.db}
BILLHOOK_API_KEY=k BILLHOOK_LOG=warn /usr/bin/time -v $BIN serve --listen 127.0.0.1:18099 --database-url "$DB" > out.log 2> time.log &
sleep 2
H="X-Api-Key: k"
U=http://127.0.0.1:18099/api/v1
T=$(curl -s -H "$H" -H 'Content-Type: application/json' -d '{"name":"1M"}' $U/rate_tables | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
start=$(date +%s.%N)
J=$(curl -s -H "$H" -F kind=rates -F rate_tables_id=$T -F file=@../rates_1m.csv $U/imports | python3 -c 'import sys,json;print(json.load(sys.stdin)["id"])')
up=$(date +%s.%N)
while true; do
  S=$(curl -s -H "$H" $U/imports/$J | python3 -c 'import sys,json;d=json.load(sys.stdin);print(d["status"], d["rows_imported"])')
  case "$S" in success*|failed*) break;; esac
  sleep 0.2
done
end=$(date +%s.%N)
echo "import: $S; upload $(echo "$up - $start" | bc) s, job $(echo "$end - $up" | bc) s"
curl -s -H "$H" "$U/rate_tables/$T/rates?limit=1" | python3 -c 'import sys,json;print("rates stored:", json.load(sys.stdin)["total"])'
pkill -TERM -f "^$BIN serve --listen 127.0.0.1:18099"
wait
grep -E "Maximum resident|Elapsed|Exit status" time.log
