#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, in one go (random ViT-L/14 weights: speed does
# not depend on weight values). Usage: scripts/gpu_bench.sh [OUT_DIR]
set -uo pipefail
out=${1:-${OUT:-bench-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi -L | tee "$out/device.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/device.txt"
data=/tmp/clipflow-bench-jpegs
# The GPU-only tests first (CUDA-graph training == eager, nvJPEG path == PIL path, ...).
echo "== pytest -m gpu"; timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_train_step.py tests/test_fast_path.py tests/test_proxy.py 2>&1 | tail -15 \
    | tee "$out/gpu_tests.txt"
run() { echo "== $*"; timeout 240 python3 "$@" || echo "!! exit $? for: $*"; }
run scripts/check_precision.py --device cuda --backbone vit_l14_random --n 1024 --json "$out/precision.json"
run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 --n-baseline 1024 --n-fast 8192 \
    --data "$data" --json "$out/bench256.json"
run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 1024 --n-baseline 384 --n-fast 3072 \
    --data "$data" --train-n 14400 --score-n 100000 --json "$out/bench1024.json"
[ "${WITH_COMPILE:-0}" = 1 ] && run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 \
    --n-baseline 256 --n-fast 8192 --data "$data" --compile --decoders pil --json "$out/bench256_compile.json"
