#!/usr/bin/env bash
# The GPU measurements of docs/benchmarks.md, in one go (random ViT-L/14 weights: speed does
# not depend on weight values). Usage: [PART=1|2|all] scripts/gpu_bench.sh [OUT_DIR]
# PART=1: the first pass (tests, precision, 256/1024 px, training, scoring; ~5 min);
# PART=2: the second pass only (steady state on 32k images, compile, CUDA graph on/off,
# streamed-training memory; ~4-5 min, not yet run on a GPU). Default: all (~10 min).
set -uo pipefail
out=${1:-${OUT:-bench-out}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi -L | tee "$out/device.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$out/device.txt"
data=/tmp/clipflow-bench-jpegs
part=${PART:-all}
if [ "$part" != 2 ]; then
# The GPU-only tests first (CUDA-graph training == eager, nvJPEG path == PIL path, ...).
echo "== pytest -m gpu"; timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_train_step.py tests/test_fast_path.py tests/test_proxy.py 2>&1 | tail -15 \
    | tee "$out/gpu_tests.txt"
fi
run() { echo "== $*"; timeout 240 python3 "$@" || echo "!! exit $? for: $*"; }
if [ "$part" != 2 ]; then
run scripts/check_precision.py --device cuda --backbone vit_l14_random --n 1024 --json "$out/precision.json"
run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 --n-baseline 1024 --n-fast 8192 \
    --data "$data" --json "$out/bench256.json"
run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 1024 --n-baseline 384 --n-fast 3072 \
    --data "$data" --train-n 14400 --score-n 100000 --json "$out/bench1024.json"
[ "${WITH_COMPILE:-0}" = 1 ] && run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 \
    --n-baseline 256 --n-fast 8192 --data "$data" --compile --decoders pil --json "$out/bench256_compile.json"
fi
[ "$part" = 1 ] && exit 0
# Second pass (docs/benchmarks.md "not yet measured on a GPU").
# Steady state on >= 32k images, with the halves (model_only, input_only_*), compile off / on.
run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 --n-baseline 256 --n-fast 32768 \
    --data "$data" --decoders pil nvjpeg --json "$out/steady256.json"
run scripts/bench_extract.py --device cuda --backbone vit_l14_random --sizes 256 --n-baseline 256 --n-fast 32768 \
    --data "$data" --compile --decoders pil --json "$out/steady256_compile.json"
# N+P training, 10 epochs on 14,400 features: CUDA graph on / off, and whether it was captured.
echo "== training: cuda_graph on/off"
timeout 120 python3 - "$out/train_graph.json" <<'PY' || echo "!! exit $? for: training graph on/off"
import json, logging, resource, sys, time
import torch
from clipflow.flow.model import CLIPFlow, FlowConfig
from clipflow.flow.fit import TrainConfig, fit
msgs = []
class Keep(logging.Handler):
    def emit(self, record): msgs.append(record.getMessage())
logging.getLogger("clipflow.flow.step").addHandler(Keep())
logging.getLogger("clipflow.flow.step").setLevel(logging.INFO)
g = torch.Generator().manual_seed(0)
nat = torch.randn(1, 14400, 768, generator=g); prox = nat + 0.1 * torch.randn(1, 14400, 768, generator=g)
rows = []
for graph in (True, False):
    msgs.clear(); model = CLIPFlow(768, FlowConfig()); torch.cuda.synchronize(); t = time.perf_counter()
    h = fit(model, nat, prox, TrainConfig(mode="N+P", epochs=10, cuda_graph=graph), "cuda")
    torch.cuda.synchronize()
    rows.append({"cuda_graph": graph, "captured": any("captured as a CUDA graph" in m for m in msgs),
                 "seconds": round(time.perf_counter() - t, 2), "final_loss": h[-1]["loss"],
                 "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024})
    print(rows[-1], flush=True)
json.dump(rows, open(sys.argv[1], "w"), indent=2)
PY
# Training past RAM: peak RSS flat in the number of features. The 0.02 GB budget is a buffer of
# a few thousand 768-d rows, below the smallest size, so every size streams (0.25 GB held
# 28,672 rows: the 10k size trained from one buffer and compared nothing).
run scripts/bench_memory.py --train --device cuda --n 10000 100000 1000000 --dim 768 --budget-gb 0.02 \
    --data /tmp/clipflow-mem-packs --json "$out/train_memory.json"
