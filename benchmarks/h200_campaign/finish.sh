# Last call of a session (start it with >= 6 min of device time left): stop scheduling, let the
# running jobs end (until LIMIT - 150 s; trainings still running then are stopped: no time is left
# to probe them, and their weights do not travel), probe the finished trainings, pack.
#   run: LIMIT=330 bash benchmarks/h200_campaign/finish.sh   (no carry; the call's timeout above LIMIT + 30)
. "$(dirname "$0")/env.sh"
cd "$CAMP" || exit 1
start=$(date +%s); limit=${LIMIT:-330}
trap 'bash "$HERE/pack.sh"' EXIT   # whatever happens below, the documents come back
bash "$HERE/pack.sh" quiet
# The chain of call1.sh first (its second invocation must not start), then the scheduler: SIGTERM
# makes Snakemake 9 stop scheduling and exit after its running jobs, recording their outputs.
pkill -9 -f '^bash -c snakemake'
pkill -TERM -f 'bin/snakemake'
echo "stopped scheduling at $(date -u +%H:%M:%S)"
jobs_running() { pgrep -af "python[0-9.]* scripts/($1).py" | grep -v 'bash -c'; }
while pgrep -f 'bin/snakemake' >/dev/null && [ $(( $(date +%s) - start )) -lt $(( limit - 150 )) ]; do sleep 5; done
if pgrep -f 'bin/snakemake' >/dev/null; then
  # Out of time to wait: the scheduler goes (its jobs go on), the trainings still running stop
  # (too late to probe them; they write nothing when stopped), probes and sweeps may end.
  pkill -9 -f 'bin/snakemake'
  echo "stopping trainings: $(jobs_running train | grep -o 'out-dir [^ ]*' | tr '\n' ' ')"
  pkill -TERM -f 'python[0-9.]* scripts/train.py'
  while jobs_running 'train|probe|sweep' >/dev/null && [ $(( $(date +%s) - start )) -lt $(( limit - 100 )) ]; do
    sleep 5
  done
  rm -rf .snakemake/incomplete/* .snakemake/locks/*  # the jobs above ended by themselves, outputs whole
fi
echo "scheduler gone at $(date -u +%H:%M:%S)"
N=$(gpu_count)
targets=""
for m in $(find results/train -name metrics.json); do
  p="results/probe/${m#results/train/}"; p="${p%metrics.json}probe.json"
  # a probe still running (its scheduler killed above) is not asked for twice
  [ -f "$p" ] || jobs_running probe | grep -q -- "--out $p" || targets="$targets $p"
done
echo "probes to run:$targets"
left=$(( limit - ($(date +%s) - start) - 20 ))
if [ -n "$targets" ] && [ $left -gt 45 ]; then
  timeout -k 10 $left snakemake $targets --allowed-rules probe --keep-going --cores $((2 * N)) --resources gpu=$N \
    --workflow-profile none --configfile config/campaign.yaml > snake-probes.log 2>&1
  echo "probe run rc $? at $(date -u +%H:%M:%S)"
fi
bash "$HERE/watch.sh" 0 | grep '^=='
