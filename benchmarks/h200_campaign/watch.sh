# Watch the background campaign for $1 seconds (0: once), then pack the documents into $OUT.
#   run: bash /tmp/camp/watch.sh 540   (no carry)
cd /tmp/camp || exit 1
end=$(( $(date +%s) + ${1:-420} ))
count() { find results/$1 -name "$2" 2>/dev/null | wc -l; }
progress() {
  echo "== $(date -u +%H:%M:%S) train $(count train metrics.json)/81 probe $(count probe probe.json)/81" \
       "sweep $(count sweep sweep.json)/18 report $(count report index.html)/4;" \
       "running: $(pgrep -af 'scripts/(train|probe|sweep|report|scaling).py' | grep -o 'scripts/[a-z]*.py' | sort | uniq -c | tr '\n' ' ')"
  grep -E "Error|Exception|Finished jobid|failed" snake.log 2>/dev/null | tail -3
}
while [ "$(date +%s)" -lt "$end" ]; do
  progress
  pgrep -f 'bin/snakemake|^bash -c snakemake' >/dev/null || { echo "snakemake not running"; break; }
  sleep 60
done
progress
bash pack.sh
