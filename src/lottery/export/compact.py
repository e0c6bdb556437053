"""Compact export: a channel ticket of a built-in network as a physically smaller network (docs/export.md).

Every channel the mask removes (`lottery.pruning.channels`: a unit, with the layers that read it) is cut out of
every tensor that holds it: the producing layers' output rows, their biases and BatchNorms, the reading layers'
input columns (a flattened channel's whole span). The network that results computes what the masked network
computes, up to float rounding: a removed channel only ever fed weights the mask had set to zero.

Files: `compact.safetensors` (the smaller `state_dict`) and `compact.json` (`format`, the model settings `model`,
`build_input_shape` and `num_classes` to build the family, and `widths`: every layer's [out, in] before and after).
`lottery.load_ticket(DIR)` builds the family, gives every Conv2d/Linear/BatchNorm2d the stored shapes and returns the
ready `nn.Module`.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor, nn

from lottery.errors import UserError
from lottery.pruning import Mask
from lottery.pruning.channels import alive, is_channel_mask, shapes_of, units

FORMAT = "lottery-compact/1"
BATCHNORM_OF = (  # BatchNorm module -> the weight of the convolution it normalises, in the built-in families
    (r"bn", r"conv.weight"),
    (r"(blocks\.\d+)\.bn(\d)", r"\1.conv\2.weight"),
    (r"(blocks\.\d+)\.shortcut\.1", r"\1.shortcut.0.weight"),
    (r"(layers\.\d+)\.bn", r"\1.conv.weight"),
)


def _owner(key: str, mask: Mask) -> str | None:
    """The masked weight whose output rows a non-masked tensor follows (its bias, its BatchNorm), if any."""
    module, _, _ = key.rpartition(".")
    if key.endswith(".bias") and f"{module}.weight" in mask:
        return f"{module}.weight"
    for pattern, weight in BATCHNORM_OF:
        if re.fullmatch(pattern, module):
            name = re.sub(f"^{pattern}$", weight, module)
            return name if name in mask else None
    return None


def kept_indices(mask: Mask) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(rows kept, columns kept) of every masked weight: bool tensors over dims 0 and 1."""
    if not is_channel_mask(mask):
        raise UserError(
            "--format compact needs a channel ticket (pruning.structure = 'channel'): this mask prunes single "
            "weights, which no smaller dense network can hold (use --format sparse)"
        )
    all_units = units(shapes_of(mask))
    rows = {name: torch.ones(m.shape[0], dtype=torch.bool) for name, m in mask.items()}
    cols = {name: torch.ones(m.shape[1], dtype=torch.bool) for name, m in mask.items()}
    for unit, keep in zip(all_units, alive(mask, all_units).tolist(), strict=True):
        if not keep:
            for name, start, stop in unit.producers:
                rows[name][start:stop] = False
            for name, start, stop in unit.consumers:
                cols[name][start:stop] = False
    return rows, cols


def compact_state(state: dict[str, Tensor], mask: Mask) -> dict[str, Tensor]:
    """The smaller `state_dict` of a channel ticket: every removed channel cut out of every tensor holding it."""
    rows, cols = kept_indices(mask)
    out = {}
    for key, value in state.items():
        if key in mask:
            out[key] = value[rows[key]][:, cols[key]].contiguous()
        elif (owner := _owner(key, mask)) is not None and value.dim() >= 1:
            out[key] = value[rows[owner]].contiguous()
        else:
            out[key] = value.clone()
    return out


def ends(mask: Mask) -> tuple[str, str]:
    """(input layer, output layer): the masked weights that read no channel and that write none."""
    all_units = units(shapes_of(mask))
    read = {name for u in all_units for name, _, _ in u.consumers}
    written = {name for u in all_units for name, _, _ in u.producers}
    return next(n for n in mask if n not in read), next(n for n in mask if n not in written)


def build_input_shape(mask: Mask) -> list[int]:
    """An input shape the family's builder accepts (every layer is then given its stored shape): the flattened
    size for LeNet, a 32x32 image of the first convolution's channels otherwise."""
    first = mask[ends(mask)[0]]
    return [int(first.shape[1])] if first.dim() == 2 else [int(first.shape[1]), 32, 32]


def shrink(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """`model` with every Conv2d, Linear and BatchNorm2d replaced by one of the shapes in `state`, which is then
    loaded (strict). ResNet 'padding' shortcuts pad to the block's new width."""
    from lottery.models.resnet import Block, PadShortcut

    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            w = state[f"{name}.weight"]
            new: nn.Module = nn.Conv2d(
                int(w.shape[1]) * module.groups,
                int(w.shape[0]),
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                bias=module.bias is not None,
            )
        elif isinstance(module, nn.Linear):
            w = state[f"{name}.weight"]
            new = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=module.bias is not None)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(
                int(state[f"{name}.running_mean"].shape[0]),
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
            )
        else:
            continue
        model.set_submodule(name, new)
    for module in model.modules():
        if isinstance(module, Block) and isinstance(module.shortcut, PadShortcut):
            module.shortcut.extra = module.conv2.out_channels - module.conv1.in_channels
    model.load_state_dict(state, strict=True)
    return model


def describe(spec_model: dict[str, Any], mask: Mask, state: dict[str, Tensor], small: dict[str, Tensor]) -> dict:
    """compact.json: how to build the smaller network, and every layer's widths before and after."""
    out_layer = ends(mask)[1]
    return {
        "format": FORMAT,
        "model": spec_model,
        "build_input_shape": build_input_shape(mask),
        "num_classes": int(mask[out_layer].shape[0]),
        "widths": {
            name: {"dense": list(state[name].shape[:2]), "compact": list(small[name].shape[:2])} for name in mask
        },
    }


def build(info: dict[str, Any], state: dict[str, Tensor]) -> nn.Module:
    """The ready compact network of an export's compact.json and compact.safetensors (eval mode)."""
    from lottery import models
    from lottery.spec import ModelSpec

    if info.get("format") != FORMAT:
        raise UserError(f"compact.json is not a {FORMAT} description (format {info.get('format')!r})")
    try:
        spec = ModelSpec(**info["model"])
        shape, classes = tuple(int(d) for d in info["build_input_shape"]), int(info["num_classes"])
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"compact.json is malformed: {error}") from None
    model = models.build(spec, shape, classes, 0)
    try:
        return shrink(model, state).eval()
    except (KeyError, RuntimeError) as error:
        raise UserError(f"compact.safetensors does not fit {spec.name}: {str(error).splitlines()[0]}") from None
