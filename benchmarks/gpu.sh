#!/usr/bin/env bash
# One prepared GPU check, about 5 minutes on one H200: CUDA sanity, an end-to-end `lottery run` on CUDA (image
# folder, ResNet-18, bf16, channels_last, one IMP level: pruned weights must stay zero), then ResNet-50 training
# images/s (bf16, channels_last) of lottery's loop vs a plain PyTorch loop on synthetic tensors and on the
# image-folder pipeline (benchmarks/gpu_resnet50.py). Prints the figures; writes nothing outside a temp dir.
#   bash benchmarks/gpu.sh                  # PYTHON=/path/to/python to choose the interpreter
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
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== CUDA"
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

echo "== lottery run on CUDA (image folder, resnet18, bf16, one IMP level)"
"$PY" -c "from pathlib import Path; from lottery.data.jpegs import write_folder; write_folder(Path('$TMP/jpegs'), classes=4, train_per_class=32, val_per_class=8, size=(80, 60))"
"$PY" -m lottery run --out "$TMP/runs" --device cuda --progress log --data-workers 4 \
    --set dataset.name=imagefolder --set dataset.root="$TMP/jpegs" --set dataset.image_size=64 \
    --set dataset.validation_size=16 --set dataset.augment=true --set model.name=resnet18 \
    --set training.batch_size=16 --set training.training_steps=20it --set training.eval_every=10it \
    --set training.precision=bf16 --set training.optimizer=sgd --set training.momentum=0.9 --set training.lr=0.05 \
    --set imp.levels=1 --set pruning.layers_to_ignore='["output"]' 2>&1 | tail -4
"$PY" - "$TMP/runs" <<'PYEOF'
import sys
from pathlib import Path
from safetensors.torch import load_file
level = next(Path(sys.argv[1]).glob("*/replicate_0/rewind_0it/level_1"))
mask, final = load_file(level / "mask.safetensors"), load_file(level / "final.safetensors")
leaks = sum(int((final[n][~m.bool()] != 0).sum()) for n, m in mask.items())
kept = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
print(f"level 1: density {kept:.3f}, pruned weights that are not zero after training on CUDA: {leaks}")
assert leaks == 0
PYEOF

echo "== ResNet-50 throughput"
"$PY" benchmarks/gpu_resnet50.py "$@"
