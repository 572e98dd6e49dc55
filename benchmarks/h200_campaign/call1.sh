# Device call 1, at once after call 0: the ShareGPT wheel, the data stage, the documents of earlier
# sessions, then the campaign in the background (sweeps first: whole units, and the sweep's energy
# window is seen early; then the first unfinished shape), watched for WATCH seconds.
#   run: WATCH=420 bash benchmarks/h200_campaign/call1.sh   carry: [".dev/c1"]
. "$(dirname "$0")/env.sh"
install_wheels .dev/c1/*.whl || exit 1
cd "$CAMP" || exit 1
N=$(gpu_count)
snakemake results/tokens/stats.json --cores 16 --workflow-profile none --configfile config/campaign.yaml > data.log 2>&1
rc=$?; tail -3 data.log; cp data.log "$OUT/"
[ $rc = 0 ] || exit 1
python3 -c "import json; s=json.load(open('results/tokens/stats.json')); print({k: s[k] for k in ('conversations', 'train_tokens', 'val_tokens', 'tokens_sha256')})"
if [ -f pack.tgz ]; then bash "$HERE/restore.sh" pack.tgz || exit 1; fi
# --keep-going: a failed job (recorded as a failed row) must not stop the others
SM="--keep-going --cores $((2 * N)) --resources gpu=$N --workflow-profile none --configfile config/campaign.yaml"
snakemake --dry-run --quiet rules $SM 2>&1 | sed -n '/Job stats/,/^$/p;/^total/p'
sweeps=$(python3 -c "
import yaml; c = yaml.safe_load(open('config/campaign.yaml'))
print(' '.join(f'results/sweep/{s}/{v}/sweep.json' for s in c['models'] for v in c['variants']))")
# The first shape (config order) with probes missing goes first: a shape whose seeds all finish in
# this session gets its report here, instead of the jobs of two shapes ending half-done.
first=$(python3 -c "
import os, yaml; from attnbench.settings import shapes; c = yaml.safe_load(open('config/campaign.yaml'))
for s in shapes(c):
    p = [f'results/probe/{s}/{v}/seed{n}/probe.json' for v in c['variants'] for n in c['seeds']]
    if not all(map(os.path.exists, p)):
        print(' '.join(p)); raise SystemExit")
[ -n "$first" ] && echo "first: $(echo "$first" | cut -d/ -f3 | head -1), $(for p in $first; do [ -f "$p" ] || echo; done | wc -l) probes missing"
setsid nohup bash -c "snakemake $sweeps $SM; snakemake $SM ${first:+--prioritize $first}" > snake.log 2>&1 < /dev/null &
sleep 5
bash "$HERE/watch.sh" "${WATCH:-420}"
