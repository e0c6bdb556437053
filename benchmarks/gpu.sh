#!/usr/bin/env bash
# One prepared GPU run of every GPU figure for docs/performance.md, at most 8 minutes on one H100/H200 (estimates
# per section below; nothing here has run on a GPU yet), each section's output ready to paste:
#   1. CUDA sanity                                                                                     ~10 s
#   2. lottery run on CUDA: image folder, ResNet-18, bf16, one IMP level; pruned weights must stay 0   ~30 s
#   3. whole run vs a plain PyTorch script on CUDA (benchmarks/whole_run.py): the 2-level LeNet IMP, 2 rounds;
#      the same with --compile (1 round); the demo experiment --quick (stacked replicates and controls)  ~150 s
#   4. K = 8 stacked copies vs K separate runs, LeNet / ResNet-20 / Conv-2 (benchmarks/batched_copies.py) ~60 s
#   5. ResNet-20 and ResNet-50 training images/s, lottery vs plain loops (benchmarks/gpu_resnet50.py)  ~100 s
#   6. ResNet-20 stability onset at k = 0, 200, 1000 iterations (2 copies each, stacked)               ~90 s
#   bash benchmarks/gpu.sh                  # PYTHON=/path/to/python to choose the interpreter
#   bash benchmarks/gpu.sh --smoke          # every section small, on the CPU: checks the script runs end to end
# CIFAR=/path/to/cifar-10-batches-py: section 6 on CIFAR-10 (default: synthetic CIFAR-shaped data).
#
# `bash benchmarks/gpu.sh papers [NAME]` instead runs the GPU-sized reproductions of docs/measured.md's "Against the
# papers" (GPU days in all; each writes its rewind_search.json with decisions and intervals under $RUNS):
#   NAME        command (3 replicates; the paper's number beside it)
#   resnet20    rewind-search --preset resnet20_lmc --level 8   LMC paper: dense ResNet-20 stable from k ~ 2,000 it;
#                                                                IMP at 16.8% remaining stable and matching from ~500
#   vgg16       rewind-search --preset vgg16_lmc --level 19     LMC paper: dense VGG-16 stable from k ~ 1,000 it;
#                                                                IMP at 1.5% remaining stable and matching from ~1,000
#   resnet50    rewind-search --preset resnet50_imagenet        LMC paper: dense ResNet-50 stable from epoch ~18 (20%
#                 --level 1 (one-shot to 30% remaining)           of training); IMP from epoch ~5
# CIFAR=/path/to/cifar-10-batches-py and IMAGENET=/path/to/imagenet (train/ and val/ class folders) name the data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "papers" ]]; then
    RUNS=${RUNS:-runs}
    which=${2:-all}
    search() { "$PY" -m lottery rewind-search --device cuda --out "$RUNS" --progress log --max-copies 4 \
        --set replicates=3 "$@"; }
    if [[ "$which" == all || "$which" == resnet20 ]]; then
        # Paper: dense k ~ 2,000 iterations; IMP (level 8 = 16.8% remaining) k ~ 500, matching there.
        search --preset resnet20_lmc --level 8 --set dataset.root="${CIFAR:?set CIFAR}" \
            --grid 0it,100it,250it,500it,1000it,2000it,4000it,8000it
    fi
    if [[ "$which" == all || "$which" == vgg16 ]]; then
        # Paper: dense k ~ 1,000 iterations; IMP (level 19 = 1.4% remaining) k ~ 1,000, matching there.
        search --preset vgg16_lmc --level 19 --set dataset.root="${CIFAR:?set CIFAR}" \
            --grid 0it,100it,250it,500it,1000it,2000it,4000it,8000it
    fi
    if [[ "$which" == all || "$which" == resnet50 ]]; then
        # Paper: dense epoch ~18 (20% of training); IMP (one-shot to 30% remaining) epoch ~5.
        search --preset resnet50_imagenet --level 1 --set dataset.root="${IMAGENET:?set IMAGENET}" \
            --grid 0ep,1ep,2ep,3ep,4ep,5ep,6ep,8ep,10ep,14ep,18ep,22ep
    fi
    exit 0
fi
SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
DEV=cuda
PREC=bf16
[[ $SMOKE == 1 ]] && DEV=cpu && PREC=fp32
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
section() { echo; echo "== $* [$(date -u +%H:%M:%S), ${SECONDS}s]"; }
pick() { if [[ $SMOKE == 1 ]]; then echo "$2"; else echo "$1"; fi; }  # pick FULL SMOKE

section "1. CUDA"
if [[ $SMOKE == 1 ]]; then
    echo "smoke run on the CPU: $("$PY" -c 'import torch; print("torch", torch.__version__)')"
else
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 supported: {torch.cuda.is_bf16_supported()}")
a = torch.randn(512, 512, generator=torch.Generator().manual_seed(0))
error = (a.cuda() @ a.cuda()).cpu().sub(a @ a).abs().max().item()
print(f"fp32 matmul GPU vs CPU max abs difference: {error:.2e}")
import PIL; print(f"Pillow {PIL.__version__}")
PYEOF
fi

section "2. lottery run on $DEV (image folder, resnet18, $PREC, one IMP level)"
"$PY" -c "from pathlib import Path; from lottery.data.jpegs import write_folder; write_folder(Path('$TMP/jpegs'), classes=4, train_per_class=32, val_per_class=8, size=(80, 60))"
"$PY" -m lottery run --out "$TMP/runs" --device "$DEV" --progress log --data-workers 4 \
    --set dataset.name=imagefolder --set dataset.root="$TMP/jpegs" --set dataset.image_size=64 \
    --set dataset.validation_size=16 --set dataset.augment=true --set model.name=resnet18 \
    --set training.batch_size=16 --set training.training_steps="$(pick 20it 4it)" \
    --set training.eval_every="$(pick 10it 2it)" \
    --set training.precision="$PREC" --set training.optimizer=sgd --set training.momentum=0.9 --set training.lr=0.05 \
    --set imp.levels=1 --set pruning.layers_to_ignore='["output"]' 2>&1 | tail -4
"$PY" - "$TMP/runs" <<'PYEOF'
import sys
from pathlib import Path
from safetensors.torch import load_file
level = next(Path(sys.argv[1]).glob("*/replicate_0/rewind_0it/level_1"))
mask, final = load_file(level / "mask.safetensors"), load_file(level / "final.safetensors")
leaks = sum(int((final[n][~m.bool()] != 0).sum()) for n, m in mask.items())
kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
print(f"level 1: density {kept:.3f}, pruned weights that are not zero after training: {leaks}")
assert leaks == 0
PYEOF

section "3. whole run vs a plain PyTorch script on $DEV (LeNet-300-100 / Fashion-MNIST)"
WHOLE=(--device "$DEV" --threads 0)
[[ $SMOKE == 1 ]] && WHOLE+=(--smoke)
"$PY" benchmarks/whole_run.py --workload imp2 --repeats 2 "${WHOLE[@]}"
echo "-- the same, lottery with --compile (torch.compile of the training step)"
"$PY" benchmarks/whole_run.py --workload imp2 --repeats 1 --lottery-args=--compile "${WHOLE[@]}"
echo "-- the demo experiment, shortened (--quick: 2 replicates, 2 levels of 1 epoch, both controls)"
"$PY" benchmarks/whole_run.py --workload demo --quick "${WHOLE[@]}"

section "4. K stacked copies vs K separate runs on $DEV"
if [[ $SMOKE == 1 ]]; then
    "$PY" benchmarks/batched_copies.py --device cpu --quick --k 2 --networks lenet,conv2
else
    "$PY" benchmarks/batched_copies.py --device cuda --threads 0
fi

section "5. ResNet-20 and ResNet-50 training images/s on $DEV: lottery vs plain loops"
if [[ $SMOKE == 1 ]]; then
    "$PY" benchmarks/gpu_resnet50.py --device cpu --model resnet20 --batch 4 --steps 2 --warmup 1
    "$PY" benchmarks/gpu_resnet50.py --device cpu --batch 4 --steps 2 --warmup 1 --images 64 --workers 2
else
    "$PY" benchmarks/gpu_resnet50.py --model resnet20 --batch 128 --steps 60 --warmup 20
    "$PY" benchmarks/gpu_resnet50.py --steps 30 --warmup 10
fi

section "6. ResNet-20 stability onset on $DEV (resnet20_lmc recipe, rewind k = $(pick '0, 200, 1000' '0, 5') it)"
DATA=(--set dataset.name=synthetic_cifar10 --set stability.train_subset=1000)
[[ -n "${CIFAR:-}" ]] && DATA=(--set dataset.root="$CIFAR")
SHORT=(--set training.training_steps=2000it --set 'training.milestone_steps=["1000it","1500it"]'
       --set 'stability.rewind=["0it","200it","1000it"]' --set stability.interpolation_points=11)
[[ $SMOKE == 1 ]] && SHORT=(--set training.training_steps=10it --set 'training.milestone_steps=["5it"]'
       --set 'stability.rewind=["0it","5it"]' --set stability.interpolation_points=3 --set model.width=4
       --set training.batch_size=32 --set dataset.subset=256 --set stability.batchnorm_batches=2
       --set stability.train_subset=128)
"$PY" -m lottery run --preset resnet20_lmc --out "$TMP/stability" --device "$DEV" --progress log \
    "${DATA[@]}" "${SHORT[@]}" --set stability.copies=2 --set 'stability.levels=[0]' 2>&1 | tail -3
"$PY" - "$TMP/stability" <<'PYEOF'
import csv, sys
from pathlib import Path
with open(next(Path(sys.argv[1]).glob("*/stability.csv")), newline="") as f:
    rows = sorted(csv.DictReader(f), key=lambda r: int(r["rewind_iteration"]))
print("| rewind k (it) | kind | test error barrier (pp) | train error barrier (pp) | L2 distance | stable |")
print("|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['rewind_iteration']} | {r['kind']} | {float(r['barrier_test']):.2f} | "
          f"{float(r['barrier_train']):.2f} | {float(r['l2']):.2f} | {r['stable']} |")
PYEOF

section "done in ${SECONDS}s"
