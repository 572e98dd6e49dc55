# Pack the campaign's documents and logs (no weights: 0.5-1.4 GB each; no tokens) into $OUT.
cd /tmp/camp || exit 1
tar czf "$OUT/results.tgz" --exclude='*.safetensors' --exclude='results/tokens/*.npy' results logs snake*.log data.log 2>/dev/null
ls -la "$OUT/results.tgz"
tail -25 snake.log > "$OUT/snake_tail.log"
for f in $(grep -l -i "traceback" logs/*/*.log logs/*/*/*.log 2>/dev/null | head -3); do echo "### $f"; tail -12 "$f"; done
