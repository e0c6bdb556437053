"""The model card written next to an exported ticket: what it is, where it came from, how to load it."""

from __future__ import annotations

from typing import Any

import tomli_w
from torch import Tensor

from lottery.spec import ExperimentSpec, to_dict

WHAT_TEXT = {
    "ticket": "the **ticket** m ⊙ W_k: the rewound weights with the mask applied (pruned weights are exactly 0), "
    "ready to be trained from iteration k",
    "trained": "the **trained subnetwork**: the weights at the end of training (pruned weights are exactly 0)",
}

LOAD = {
    "safetensors": """```python
from safetensors.torch import load_file
model.load_state_dict(load_file("{out}/model.safetensors"), strict=True)
mask = load_file("{out}/mask.safetensors")   # name -> bool tensor, True = kept
```""",
    "state-dict": """```python
import torch
model.load_state_dict(torch.load("{out}/model.pt", weights_only=True), strict=True)
mask = torch.load("{out}/mask.pt", weights_only=True)   # name -> bool tensor, True = kept
```""",
    "torch-prune": """```python
import torch
from torch.nn.utils import prune
state = torch.load("{out}/model.pt", weights_only=True)
pruned = [key[: -len("_mask")] for key in state if key.endswith("_mask")]
for name in pruned:   # e.g. fc1.weight: fc1.weight_orig and fc1.weight_mask, as torch.nn.utils.prune keeps them
    module, _, param = name.rpartition(".")
    prune.custom_from_mask(model.get_submodule(module), param, state[name + "_mask"])
model.load_state_dict(state, strict=True)
for name in pruned:   # optional: make the pruning permanent
    module, _, param = name.rpartition(".")
    prune.remove(model.get_submodule(module), param)
```""",
    "sparse": """```python
import json, numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open
tensors = load_file("{out}/sparse.safetensors")
with safe_open("{out}/sparse.safetensors", "np") as f:
    layouts = json.loads(f.metadata()["lottery.sparse"])   # name -> {{"layout": "bitmask" | "csr", "shape": [...]}}
state = {{k: v for k, v in tensors.items() if "::" not in k}}   # biases, BatchNorm: as they are
for name, info in layouts.items():
    shape, values = info["shape"], tensors[name + "::values"]
    if info["layout"] == "bitmask":
        mask = np.unpackbits(tensors[name + "::mask"], bitorder="little", count=int(np.prod(shape))).astype(bool)
    else:   # CSR of the (shape[0], rest) view
        crow, col = tensors[name + "::crow_indices"], tensors[name + "::col_indices"]
        mask = np.zeros((shape[0], int(np.prod(shape[1:]))), bool)
        mask[np.repeat(np.arange(shape[0]), np.diff(crow)), col] = True
    dense = np.zeros(int(np.prod(shape)), values.dtype)
    dense[mask.reshape(-1)] = values
    state[name] = dense.reshape(shape)
```""",
    "compact": """```python
import json, torch
from safetensors.torch import load_file
state = load_file("{out}/compact.safetensors")   # the smaller state_dict
info = json.load(open("{out}/compact.json"))      # model settings, and every layer's widths before and after
# build the family of info["model"] with every Conv2d / Linear / BatchNorm2d of the shape in `state`
# (what lottery.load_ticket does), then model.load_state_dict(state, strict=True)
```""",
}


LOAD_HOW = [
    "Into any `nn.Module` with the same parameter names and shapes (the architecture of the spec below):",
    "",
    "```python",
    "import lottery",
    'mask = lottery.load_ticket("<this directory>", model)   # loads the weights (strict), returns the mask',
    "```",
]
COMPACT_HOW = [
    "A smaller network of the spec's family: every removed channel is cut out (widths in `compact.json`); its "
    "outputs equal the masked network's up to float rounding.",
    "",
    "```python",
    "import lottery",
    'model = lottery.load_ticket("<this directory>")   # the ready nn.Module (eval mode)',
    "```",
]


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def model_card(
    spec: ExperimentSpec,
    preset: str | None,
    run: str,
    metadata: dict[str, str],
    summary: dict[str, Any],
    sparsity: dict[str, Any],
    weights: dict[str, Tensor],
    what: str,
    fmt: str,
    files: list[str],
    sizes: dict[str, int] | None = None,
    widths: dict[str, dict[str, list[int]]] | None = None,
) -> str:
    """Markdown: identity, accuracies, density per layer, the spec, the files and how to load them."""
    kind, level = metadata.get("kind", "?"), metadata.get("level", "?")
    rewind = metadata.get("rewind_iteration")
    title = f"{kind} level {level}" + (f", rewound to iteration {rewind}" if rewind is not None else "")
    rows = [
        ("experiment (spec hash)", f"`{metadata.get('experiment', '?')}`" + (f", preset `{preset}`" if preset else "")),
        ("run", f"`{run}`"),
        ("replicate", metadata.get("replicate", "0")),
        (
            "seeds (init, data order, augmentation)",
            ", ".join(metadata.get(k, "?") for k in ("init_seed", "data_order_seed", "augmentation_seed")),
        ),
        (
            "weights remaining",
            f"{_percent(sparsity.get('density'))} ({sparsity.get('kept')} of {sparsity.get('total')} prunable weights)",
        ),
        ("final test accuracy", _percent(summary.get("final_test_accuracy"))),
        (
            "early-stop test accuracy",
            f"{_percent(summary.get('early_stop_test_accuracy'))} (iteration {summary.get('early_stop_iteration')})",
        ),
        ("trained iterations", f"{summary.get('start_iteration')} to {summary.get('end_iteration')}"),
        ("diverged", str(summary.get("diverged", False))),
        *(
            [
                (
                    "file size",
                    f"{sizes['export_bytes']:,} bytes, {sizes['export_bytes'] / sizes['dense_bytes']:.1%} of the "
                    f"dense safetensors file ({sizes['dense_bytes']:,} bytes)",
                )
            ]
            if sizes
            else []
        ),
        ("lottery / torch", f"{metadata.get('lottery_version', '?')} / {metadata.get('torch_version', '?')}"),
    ]
    layers = sparsity.get("layers", {})
    layer_rows = [
        f"| `{name}` | {list(weights[name].shape) if name in weights else '?'} | {layer['kept']} | {layer['total']} | "
        f"{100 * layer['density']:.2f}% |"
        for name, layer in layers.items()
    ]
    spec_toml = tomli_w.dumps(to_dict(spec, omit_defaults=True)).strip() or "# (all defaults)"
    load = LOAD[fmt].format(out="<this directory>")
    return "\n".join(
        [
            f"# Lottery ticket: {title}",
            "",
            f"Exported by `lottery export` ({fmt}): {WHAT_TEXT[what]}.",
            "",
            "| | |",
            "|---|---|",
            *[f"| {k} | {v} |" for k, v in rows],
            "",
            "## Density per layer",
            "",
            "| parameter | shape | kept | total | density |",
            "|---|---|---|---|---|",
            *layer_rows,
            "",
            *(
                [
                    "## Compact widths",
                    "",
                    "| parameter | dense [out, in] | compact [out, in] |",
                    "|---|---|---|",
                    *[f"| `{name}` | {w['dense']} | {w['compact']} |" for name, w in widths.items()],
                    "",
                ]
                if widths
                else []
            ),
            "## Files",
            "",
            *[f"- `{name}`" for name in files],
            "",
            "## How to load",
            "",
            *(COMPACT_HOW if fmt == "compact" else LOAD_HOW),
            "",
            "or with plain PyTorch:",
            "",
            load,
            "",
            "## Spec",
            "",
            "```toml",
            spec_toml,
            "```",
            "",
        ]
    )
