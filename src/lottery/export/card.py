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
}


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
) -> str:
    """Markdown: identity, accuracies, density per layer, the spec, the files and how to load them."""
    kind, level = metadata.get("kind", "?"), metadata.get("level", "?")
    rewind = metadata.get("rewind_iteration")
    title = f"{kind} level {level}" + (f", rewound to iteration {rewind}" if rewind is not None else "")
    rows = [
        ("experiment (spec hash)", f"`{metadata.get('experiment', '?')}`" + (f", preset `{preset}`" if preset else "")),
        ("run", f"`{run}`"),
        ("replicate", metadata.get("replicate", "0")),
        ("seeds (init, data order, augmentation)",
         ", ".join(metadata.get(k, "?") for k in ("init_seed", "data_order_seed", "augmentation_seed"))),
        ("weights remaining", f"{_percent(sparsity.get('density'))} ({sparsity.get('kept')} of {sparsity.get('total')} "
                              "prunable weights)"),
        ("final test accuracy", _percent(summary.get("final_test_accuracy"))),
        ("early-stop test accuracy",
         f"{_percent(summary.get('early_stop_test_accuracy'))} (iteration {summary.get('early_stop_iteration')})"),
        ("trained iterations", f"{summary.get('start_iteration')} to {summary.get('end_iteration')}"),
        ("diverged", str(summary.get("diverged", False))),
        ("lottery / torch", f"{metadata.get('lottery_version', '?')} / {metadata.get('torch_version', '?')}"),
    ]  # fmt: skip
    layers = sparsity.get("layers", {})
    layer_rows = [
        f"| `{name}` | {list(weights[name].shape) if name in weights else '?'} | {layer['kept']} | {layer['total']} | "
        f"{100 * layer['density']:.2f}% |"
        for name, layer in layers.items()
    ]
    spec_toml = tomli_w.dumps(to_dict(spec, omit_defaults=True)).strip() or "# (all defaults)"
    load = LOAD[fmt].format(out="<this directory>")
    return "\n".join([
        f"# Lottery ticket: {title}",
        "",
        f"Exported by `lottery export` ({fmt}): {WHAT_TEXT[what]}.",
        "",
        "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Density per layer",
        "",
        "| parameter | shape | kept | total | density |", "|---|---|---|---|---|", *layer_rows,
        "",
        "## Files",
        "",
        *[f"- `{name}`" for name in files],
        "",
        "## How to load",
        "",
        "Into any `nn.Module` with the same parameter names and shapes (the architecture of the spec below):",
        "",
        "```python",
        "import lottery",
        'mask = lottery.load_ticket("<this directory>", model)   # loads the weights (strict), returns the mask',
        "```",
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
    ])  # fmt: skip
