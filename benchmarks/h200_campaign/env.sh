# Sourced by every device script: where the campaign lives on the GPU machine (its temp dir, kept
# between calls while the machine stays warm) and the environment its jobs run in.
TMP_ROOT=$(dirname "$(mktemp -u)")
CAMP=$TMP_ROOT/attnbench-camp        # the campaign commit's source, results/, logs/
SITE=$TMP_ROOT/attnbench-site        # the carried wheels, installed
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # these scripts (the call's copy of the repo)
# NVLink multicast stays off on the lent machines (the device README)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$SITE:$CAMP PATH=$SITE/bin:$PATH
install_wheels() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }
gpu_count() { nvidia-smi -L | grep -c '^GPU '; }
