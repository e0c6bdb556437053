"""`random_reinit`: the IMP level's mask on fresh weights (Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR
2019, §2: "randomly reinitialized"), with a fresh optimizer. It does not start from W_k, so its stability to
pruning is not defined; its stability to data order is (`stability.controls`)."""

from __future__ import annotations

from lottery.controls.base import ControlInput, ControlStart, register_control


@register_control(
    "random_reinit",
    stream=20,
    label="random reinit",
    colormap="Oranges",
    linestyle="--",
    stability=True,
    from_rewound=False,
)
def random_reinit(inp: ControlInput) -> ControlStart:
    """m_L ⊙ W'_0, W'_0 the fresh weights of the control's seed."""
    return ControlStart(inp.mask, inp.mask.apply_to(inp.fresh(inp.seed % 2**63)), None)
