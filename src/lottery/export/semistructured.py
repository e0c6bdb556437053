"""N:M tickets in the layout of `torch.sparse.to_sparse_semi_structured` (2:4, CUDA only; torchao takes the same).

torch's semi-structured kernels take a 2-D half-precision matrix in which every group of 4 consecutive elements of
a row has at most 2 nonzeros, with rows a multiple of 32 and columns of 64 (CUTLASS, float16/bfloat16). A 2:4 ticket
of `pruning.structure = 'n:m'` has exactly that along `weight.flatten(1)` (the input dimension, in × kh × kw for a
convolution); `layout` pads it with zero rows and columns (zeros keep 2:4) and casts it, `to_semi_structured`
converts it on a GPU. The layout is checked on any machine; the conversion needs CUDA (docs/export.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lottery.errors import UserError

ROWS, COLS = 32, 64  # torch's CUTLASS constraint for float16 / bfloat16: shape a multiple of (32, 64)


def is_two_four(matrix: Tensor) -> bool:
    """Whether every group of 4 consecutive elements of every row has at most 2 nonzeros."""
    if matrix.dim() != 2 or matrix.shape[1] % 4:
        return False
    return bool(((matrix.reshape(matrix.shape[0], -1, 4) != 0).sum(-1) <= 2).all())


def layout(weight: Tensor, mask: Tensor, dtype: torch.dtype = torch.float16) -> Tensor:
    """`(mask ⊙ weight).flatten(1)` in `dtype`, zero-padded to a multiple of (32, 64): what
    `to_sparse_semi_structured` takes. UserError if the mask is not 2:4 along that dimension."""
    matrix = (weight * mask.to(weight.dtype)).reshape(weight.shape[0], -1).to(dtype)
    mask2d = mask.reshape(mask.shape[0], -1)
    if mask2d.shape[1] % 4 or bool((mask2d.reshape(mask2d.shape[0], -1, 4).sum(-1) > 2).any()):
        raise UserError(
            "the semi-structured layout needs a 2:4 mask along the input dimension (pruning.structure = 'n:m' with "
            "n = 2, m = 4, or 1:4)"
        )
    rows, cols = matrix.shape
    return torch.nn.functional.pad(matrix, (0, (-cols) % COLS, 0, (-rows) % ROWS))


def to_semi_structured(weight: Tensor, mask: Tensor, dtype: torch.dtype = torch.float16) -> Tensor:
    """The semi-structured sparse tensor of a 2:4 weight (`layout`), on the weight's CUDA device."""
    if weight.device.type != "cuda":
        raise UserError("torch's semi-structured sparse kernels need a CUDA GPU (this weight is on the CPU)")
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(layout(weight, mask.to(weight.device), dtype))
