#!/bin/bash
# device orchestration (not committed): GPU 0 runs the README's command; GPU 1 the controls
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=<wheels> PATH=<wheels>/bin:$PATH
mkdir -p results
( CUDA_VISIBLE_DEVICES=0 snakemake --cores 1 --resources gpu=1 > results/default_run.log 2>&1; echo $? > results/default_run.rc ) &
( export CUDA_VISIBLE_DEVICES=1
  while [ ! -f results/tokens/train.npy ]; do sleep 5; done
  sleep 3
  SKIP_DIVERGENCE=1 timeout 300 bash benchmarks/gpu_checks.sh results/gpu-suite > results/gpu_suite_run.log 2>&1
  mkdir -p results/old
  for c in old_sdpa_count old_sdpa_nocount old_baseline; do
    s=$(python3 -c "import json; s=json.load(open('.ctl/$c.json')); s['measure']['nvml']=False; s['measure']['codecarbon']=False; print(json.dumps(s))")
    timeout 150 python3 .old/scripts/train.py --settings "$s" --tokens-dir results/tokens --out-dir results/old/$c > results/old/$c.log 2>&1
  done
  while [ ! -f results/train/sdpa/metrics.json ] || [ ! -f results/train/gqa/metrics.json ] || [ ! -f results/train/mla/metrics.json ]; do sleep 10; done
  timeout 240 python3 benchmarks/auto_vs_pinned.py --config config/config.yaml --run-dir results --variants sdpa gqa mla --impl cudnn --steps 150 --no-nvml --out-dir results/pinned > results/pinned.log 2>&1
  echo done > results/gpu1.done ) &
wait
