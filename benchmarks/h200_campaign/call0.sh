# Device call 0 (cold machine): install the wheels, unpack the campaign's commit into /tmp/camp.
#   run: bash .dev/c0/call0.sh   carry: [".dev/c0"]
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
date -u
nvidia-smi -L
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/c0/*.whl || exit 1
rm -rf /tmp/camp && mkdir -p /tmp/camp && tar xzf .dev/c0/camp.tgz -C /tmp/camp || exit 1
cp .dev/c0/attnbench-commit /tmp/camp/.attnbench-commit
if [ -f .dev/c0/pack.tgz ]; then cp .dev/c0/pack.tgz /tmp/camp/pack.tgz; fi
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.device_count(), 'GPUs')"
