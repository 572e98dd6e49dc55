#!/usr/bin/env bash
# GPU checks in one go on a CUDA machine: the sdpa-divergence reproduction and the GPU test
# suite (tests/gpu), with their logs and figures under OUT (default results/gpu-checks).
#   bash benchmarks/gpu_checks.sh [OUT [PYTEST_ARGS...]]
# Default selection: tests/gpu without test_gpu_variant_graphs.py (every variant trained under CUDA
# graphs, several minutes), so the suite fits one 10-minute device call; that test on its own:
#   SKIP_DIVERGENCE=1 bash benchmarks/gpu_checks.sh OUT2 tests/gpu/test_gpu_variant_graphs.py
# ATTNBENCH_RUN_DIR=results also runs the suite's checks of a finished default run there.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/gpu-checks}
shift || true
selection=("$@")
[ ${#selection[@]} -gt 0 ] || selection=(tests/gpu --ignore=tests/gpu/test_gpu_variant_graphs.py)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } > "$out/machine.txt" 2>&1
echo "commit ${ATTNBENCH_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}" >> "$out/machine.txt"
rc=0
if [ -z "${SKIP_DIVERGENCE:-}" ]; then
  python3 benchmarks/sdpa_divergence.py --out "$out/sdpa_divergence.json" 2>&1 | tee "$out/sdpa_divergence.log" || rc=1
fi
ATTNBENCH_GPU_LOG="$out/gpu_suite" python3 -m pytest -v -rA -m gpu "${selection[@]}" -p no:cacheprovider 2>&1 | tee "$out/gpu_suite.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
exit $rc
