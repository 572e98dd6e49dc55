#!/usr/bin/env bash
# Here, after a session's calls: put the last results.tgz into the campaign's folder.
#   bash benchmarks/h200_campaign/unpack.sh <files_at>/results.tgz <session>   (e.g. 15)
# Documents of earlier sessions are in the pack too (restored there) and come out the same; each
# Snakemake log gets the session's name.
set -euo pipefail
cd "$(dirname "$0")/../.."
pack=$1; session=$2
DONE=reports/h200/campaign-${COMMIT:-c432349}
tmp=$(mktemp -d)
tar xzf "$pack" -C "$tmp"
mkdir -p "$DONE"
cp -r "$tmp/results" "$DONE/"
rm -f "$DONE"/results/tokens/*.npy
[ -d "$tmp/logs" ] && cp -r "$tmp/logs" "$DONE/"
[ -f "$tmp/data.log" ] && cp "$tmp/data.log" "$DONE/snakemake-session$session-data.log"
[ -f "$tmp/snake.log" ] && cp "$tmp/snake.log" "$DONE/snakemake-session${session}a.log"
[ -f "$tmp/snake-probes.log" ] && cp "$tmp/snake-probes.log" "$DONE/snakemake-session${session}b.log"
rm -rf "$tmp"
# Snakemake's logs name the GPU machine's folders (benchmarks/h200_campaign/env.sh; session 14's
# were camp/ and site/ in the same temp dir): written as $CAMP and $SITE, no machine's path committed
python3 - "$DONE"/snakemake-session*.log <<'PY'
import re, sys
from pathlib import Path
folder = re.compile(r"(?:/[\w.-]+)*/(?:attnbench-)?(camp|site)(?=[/\s'\")\]]|$)", re.M)
for log in map(Path, sys.argv[1:]):
    log.write_text(folder.sub(lambda m: "$" + m[1].upper(), log.read_text()))
PY
echo "trainings $(find "$DONE/results/train" -name metrics.json | wc -l), probes $(find "$DONE/results/probe" -name probe.json | wc -l), sweeps $(find "$DONE/results/sweep" -name sweep.json 2>/dev/null | wc -l)"
