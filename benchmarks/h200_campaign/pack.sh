# Pack the campaign's documents and logs (no weights: 0.5-1.4 GB each; no tokens) into
# $OUT/results.tgz, written whole (tar to a temporary name, then renamed).  $1 = quiet: no report.
. "$(dirname "$0")/env.sh"
cd "$CAMP" || exit 1
tar czf "$OUT/.results.tgz.tmp" --exclude='*.safetensors' --exclude='results/tokens/*.npy' \
  results logs snake*.log data.log 2>/dev/null
mv "$OUT/.results.tgz.tmp" "$OUT/results.tgz"
[ "${1:-}" = quiet ] && exit 0
ls -la "$OUT/results.tgz"
tail -25 snake.log > "$OUT/snake_tail.log"
for f in $(grep -l -i "traceback" logs/*/*.log logs/*/*/*.log 2>/dev/null | head -3); do echo "### $f"; tail -12 "$f"; done
