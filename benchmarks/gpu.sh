#!/usr/bin/env bash
# One prepared GPU check, about 5 minutes on one H200: CUDA sanity, an end-to-end `lottery run` on CUDA (image
# folder, ResNet-18, bf16, channels_last, one IMP level: pruned weights must stay zero), then ResNet-50 training
# images/s (bf16, channels_last) of lottery's loop vs a plain PyTorch loop on synthetic tensors and on the
# image-folder pipeline (benchmarks/gpu_resnet50.py). Prints the figures; writes nothing outside a temp dir.
#   bash benchmarks/gpu.sh                  # PYTHON=/path/to/python to choose the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
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
