# Last call of a session (start it with >= 6 min of device time left): stop scheduling (running
# jobs finish), run the probes of the finished trainings (their weights do not travel to the next
# session), pack.   run: LIMIT=300 bash /tmp/camp/finish.sh   (no carry)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site:/tmp/camp PATH=/tmp/site/bin:$PATH
cd /tmp/camp || exit 1
start=$(date +%s)
pkill -9 -f '^bash -c snakemake'; pkill -9 -f 'bin/snakemake'  # the schedulers only: their jobs go on
echo "stopped scheduling at $(date -u +%H:%M:%S)"
while pgrep -f 'scripts/(train|probe|sweep|report|scaling).py' >/dev/null; do sleep 5; done
echo "jobs done at $(date -u +%H:%M:%S)"
rm -rf .snakemake/incomplete .snakemake/locks  # those jobs ended by themselves: outputs whole
N=$(nvidia-smi -L | wc -l)
targets=""
for m in $(find results/train -name metrics.json); do
  p="results/probe/${m#results/train/}"; p="${p%metrics.json}probe.json"
  [ -f "$p" ] || targets="$targets $p"
done
echo "probes to run:$targets"
left=$(( ${LIMIT:-300} - ($(date +%s) - start) ))
if [ -n "$targets" ] && [ $left -gt 60 ]; then
  timeout -k 15 $left snakemake $targets --cores $((2 * N)) --resources gpu=$N --workflow-profile none \
    --configfile config/campaign.yaml > snake-probes.log 2>&1
  echo "probe run rc $?"
fi
bash watch.sh 0
