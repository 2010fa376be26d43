#!/usr/bin/env bash
# The GPU check of docs/benchmarks.md, in one go, written for <= 8 minutes wall on one
# H100/H200 (random ViT-L/14 weights: speed does not depend on weight values). It measures what
# the defaults do (bf16, backbone.compile=auto -> on, data.decode=auto -> by_size, batch 256,
# train.cuda_graph=true) against a UnivFD-style fp32 loop in the same run, records whether
# compile and the CUDA graph were in effect, and ends with one PASS/FAIL table.
#
#   scripts/gpu_bench.sh [OUT_DIR]           # ~6-8 min; exit 0 only if every target passed
#   EXTRA=1 scripts/gpu_bench.sh [OUT_DIR]   # then also (~6 min): precision check, 32k-image
#                                            # steady state, streamed-training RSS
set -uo pipefail
out=${1:-${OUT:-bench-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
start=$SECONDS
data=/tmp/clipflow-bench-jpegs
{ nvidia-smi -L; git rev-parse --short HEAD 2>/dev/null | sed 's/^/commit /'; date -u +"date %F %H:%M UTC"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
} | tee "$out/device.txt"

# 1. The GPU-only tests: no sync per batch (sync debug mode), masks byte-identical on the GPU,
#    CUDA-graph training == eager, nvJPEG path == PIL path.
echo "== pytest -m gpu"
timeout 180 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_no_sync.py \
    tests/test_train_step.py tests/test_fast_path.py tests/test_proxy.py 2>&1 | tail -15 \
    | tee "$out/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

# 2. One process for both sizes (one compilation): baseline, fast rows (PIL and nvJPEG), the
#    default row, the halves, N+P training (graph and eager) and scoring 100k.
echo "== bench_extract (defaults, compile=auto)"
timeout 420 python3 scripts/bench_extract.py --device cuda --backbone vit_l14_random \
    --sizes 256 1024 --n-baseline 1024 --n-fast 8192 --decoders pil nvjpeg \
    --train-n 14400 --score-n 100000 --data "$data" --json "$out/bench.json" --targets \
    > "$out/bench.txt" 2>&1
bench_rc=$?
grep -v "^WARNING" "$out/bench.txt" | tail -40

if [ "${EXTRA:-0}" = 1 ]; then
    echo "== extra: precision (bf16 / amp_bf16 / tf32 features against fp32)"
    timeout 120 python3 scripts/check_precision.py --device cuda --backbone vit_l14_random --n 1024 \
        --json "$out/precision.json" 2>&1 | tail -8
    echo "== extra: steady state on 32,768 images at 256 px"
    timeout 240 python3 scripts/bench_extract.py --device cuda --backbone vit_l14_random \
        --sizes 256 --n-baseline 256 --n-fast 32768 --data "$data" --decoders pil nvjpeg \
        --train-n 1440 --score-n 1000 --json "$out/steady256.json" 2>&1 | tail -15
    echo "== extra: streamed training, peak RSS at 10k / 100k / 1M rows"
    timeout 240 python3 scripts/bench_memory.py --train --device cuda --n 10000 100000 1000000 \
        --dim 768 --budget-gb 0.02 --data /tmp/clipflow-mem-packs --json "$out/train_memory.json" \
        2>&1 | tail -12
fi

# 3. The verdict, last.
echo
echo "== GPU tests: $([ "$tests_rc" = 0 ] && echo PASS || echo "FAIL (rc $tests_rc, see $out/gpu_tests.txt)")"
if [ -s "$out/bench.json" ]; then
    python3 scripts/bench_extract.py --verdict "$out/bench.json" | tee "$out/verdict.txt"
    verdict_rc=${PIPESTATUS[0]}
else
    echo "!! bench_extract gave no results (rc $bench_rc; see $out/bench.txt)"; verdict_rc=1
fi
wall=$((SECONDS - start))
echo "wall: ${wall} s (target <= 480 s without EXTRA)" | tee -a "$out/verdict.txt"
[ "$tests_rc" = 0 ] && [ "$verdict_rc" = 0 ]
