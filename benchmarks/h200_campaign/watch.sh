# Watch the background campaign for $1 seconds (0: once), packing the documents into $OUT every
# round (a call cut off by its limit still brings back the last pack).
#   run: bash benchmarks/h200_campaign/watch.sh 480   (no carry)
. "$(dirname "$0")/env.sh"
cd "$CAMP" || exit 1
end=$(( $(date +%s) + ${1:-420} ))
count() { find results/$1 -name "$2" 2>/dev/null | wc -l; }
progress() {
  echo "== $(date -u +%H:%M:%S) train $(count train metrics.json)/81 probe $(count probe probe.json)/81" \
       "sweep $(count sweep sweep.json)/18 report $(count report index.html)/4;" \
       "running: $(pgrep -af 'python[0-9.]* scripts/(train|probe|sweep|report|scaling).py' | grep -v 'bash -c' | grep -o 'scripts/[a-z]*.py' | sort | uniq -c | tr '\n' ' ')"
  grep -E "Error|Exception|Finished jobid|failed" snake.log 2>/dev/null | tail -3
}
while :; do
  progress
  bash "$HERE/pack.sh" quiet
  now=$(date +%s)
  [ "$now" -lt "$end" ] || break
  pgrep -f 'bin/snakemake|^bash -c snakemake' >/dev/null || { echo "snakemake not running"; break; }
  sleep $(( end - now < 60 ? end - now : 60 ))
done
bash "$HERE/pack.sh"
