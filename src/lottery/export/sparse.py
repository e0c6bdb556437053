"""Sparse export: each masked tensor as its kept values plus a bit-packed mask or CSR indices, whichever is smaller
at its density, in one safetensors file that plain `safetensors` + NumPy read (docs/export.md, "Sparse layout").

For a masked parameter NAME of shape S (rows = S[0], columns = the product of the rest, as `weight.flatten(1)`):
- `NAME::values`: the kept values in row-major order (the parameter's dtype);
- layout 'bitmask': `NAME::mask`, uint8, `numpy.packbits(mask.ravel(), bitorder="little")` (ceil(numel / 8) bytes);
- layout 'csr': `NAME::crow_indices` (int32 or int64, rows + 1 entries) and `NAME::col_indices` (int16, int32 or
  int64: the smallest that holds the column count), the CSR of the rows × columns view;
every other tensor (biases, BatchNorm) as it is, under its own name. The metadata key `lottery.sparse` holds
{NAME: {"layout": "bitmask" | "csr", "shape": S}}.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from torch import Tensor

from lottery.errors import UserError

KEY = "lottery.sparse"
SEP = "::"


def _index_dtype(limit: int) -> torch.dtype:
    """The smallest signed integer dtype holding values up to `limit`."""
    for dtype in (torch.int16, torch.int32):
        if limit <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def layout_sizes(mask: Tensor) -> dict[str, int]:
    """Bytes of the index data each layout needs for this mask (the values cost the same in both)."""
    rows = mask.shape[0] if mask.dim() else 1
    cols = mask.numel() // max(rows, 1)
    kept = int(mask.sum())
    crow, col = _index_dtype(kept), _index_dtype(max(cols - 1, 0))
    csr = (rows + 1) * torch.tensor([], dtype=crow).element_size() + kept * torch.tensor([], dtype=col).element_size()
    return {"bitmask": math.ceil(mask.numel() / 8), "csr": csr}


def encode(state: dict[str, Tensor], mask: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of the sparse file: see the module docstring."""
    tensors: dict[str, Tensor] = {}
    layouts = {}
    for name, value in state.items():
        if name not in mask:
            tensors[name] = value.detach().cpu().contiguous()
            continue
        m = mask[name].detach().cpu().to(torch.bool)
        value = value.detach().cpu()
        sizes = layout_sizes(m)
        layout = min(sizes, key=lambda k: (sizes[k], k))
        tensors[f"{name}{SEP}values"] = value[m].contiguous()
        if layout == "bitmask":
            packed = np.packbits(m.reshape(-1).numpy(), bitorder="little")
            tensors[f"{name}{SEP}mask"] = torch.from_numpy(packed)
        else:
            flat = m.reshape(m.shape[0], -1)
            counts = flat.sum(1)
            crow = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)])
            cols = flat.nonzero()[:, 1]  # row-major order, as values
            tensors[f"{name}{SEP}crow_indices"] = crow.to(_index_dtype(int(m.sum())))
            tensors[f"{name}{SEP}col_indices"] = cols.to(_index_dtype(max(flat.shape[1] - 1, 0)))
        layouts[name] = {"layout": layout, "shape": list(m.shape)}
    return tensors, {KEY: json.dumps(layouts, sort_keys=True)}


def decode(tensors: dict[str, Tensor], metadata: dict[str, str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(dense state_dict, mask) of a sparse file's tensors and metadata; UserError if they do not fit together."""
    try:
        layouts = json.loads(metadata[KEY])
        state = {name: t for name, t in tensors.items() if SEP not in name}
        mask = {}
        for name, info in layouts.items():
            shape, values = [int(d) for d in info["shape"]], tensors[f"{name}{SEP}values"]
            numel = math.prod(shape)
            if info["layout"] == "bitmask":
                bits = np.unpackbits(tensors[f"{name}{SEP}mask"].numpy(), bitorder="little", count=numel)
                m = torch.from_numpy(bits.astype(bool)).reshape(shape)
            elif info["layout"] == "csr":
                crow = tensors[f"{name}{SEP}crow_indices"].to(torch.int64)
                col = tensors[f"{name}{SEP}col_indices"].to(torch.int64)
                rows = torch.repeat_interleave(torch.arange(shape[0]), crow.diff())
                flat = torch.zeros(shape[0], numel // shape[0], dtype=torch.bool)
                flat[rows, col] = True
                m = flat.reshape(shape)
            else:
                raise ValueError(f"unknown layout {info['layout']!r}")
            dense = torch.zeros(shape, dtype=values.dtype)
            dense[m] = values
            state[name], mask[name] = dense, m
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as error:
        raise UserError(f"not a valid lottery sparse file ({type(error).__name__}: {error})") from None
    return state, mask
