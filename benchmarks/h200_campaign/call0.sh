# Device call 0 (cold machine): install the wheels, unpack the campaign's commit into $CAMP.
#   run: bash benchmarks/h200_campaign/call0.sh   carry: [".dev/c0"]
. "$(dirname "$0")/env.sh"
date -u
nvidia-smi -L
install_wheels .dev/c0/*.whl || exit 1
rm -rf "$CAMP" && mkdir -p "$CAMP" && tar xzf .dev/c0/camp.tgz -C "$CAMP" || exit 1
cp .dev/c0/attnbench-commit "$CAMP/.attnbench-commit"
if [ -f .dev/c0/pack.tgz ]; then cp .dev/c0/pack.tgz "$CAMP/pack.tgz"; fi
python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.device_count(), 'GPUs')"
