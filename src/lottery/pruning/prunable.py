"""Which parameters of any `nn.Module` IMP may prune, and their kinds ('conv', 'fc', 'output').

No base class is needed: by default the weights of every Linear and Conv1d/2d/3d module are prunable, the last
Linear module (in registration order) is the 'output' layer, and biases and normalisation layers never are. A
model that defines `layer_kinds()` (the shipped networks) is asked instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from lottery.errors import UserError

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PRUNABLE_MODULES = (nn.Linear, *CONV_MODULES)
KINDS = ("conv", "fc", "output")


def default_kinds(model: nn.Module, output: str | None = None) -> dict[str, str]:
    """Parameter name -> kind for the Linear and Conv weights of `model`; `output` names the output module
    (default: the last Linear module)."""
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, PRUNABLE_MODULES)]
    if output is None:
        linears = [name for name, module in layers if isinstance(module, nn.Linear)]
        output = linears[-1] if linears else None
    return {
        f"{name}.weight": "output" if name == output else ("conv" if isinstance(module, CONV_MODULES) else "fc")
        for name, module in layers
    }


def prunable(
    model: nn.Module,
    *,
    names: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    where: Callable[[str, nn.Parameter], bool] | None = None,
) -> dict[str, str]:
    """The prunable parameters of `model`: {parameter name: kind}, in the model's parameter order.

    - `names`: exactly these parameters (any parameter; kind from the defaults, else 'fc').
    - `kinds`: only parameters of these kinds (e.g. `kinds=("conv",)`).
    - `exclude`: leave these parameters (or modules, or kinds) out.
    - `where(name, parameter)`: keep only the parameters for which it returns True.
    """
    params = dict(model.named_parameters())
    own = getattr(model, "layer_kinds", None)
    defaults = own() if callable(own) else default_kinds(model)
    if names is not None:
        chosen = {}
        for name in names:
            if name not in params:
                raise UserError(f"prunable: '{name}' is not a parameter of {type(model).__name__}")
            chosen[name] = defaults.get(name, "fc")
    else:
        chosen = dict(defaults)
    if kinds is not None:
        kinds = tuple(kinds)
        for kind in kinds:
            if kind not in KINDS:
                raise UserError(f"prunable: unknown kind '{kind}' (allowed: {', '.join(KINDS)})")
        chosen = {n: k for n, k in chosen.items() if k in kinds}
    excluded = set(exclude)
    chosen = {n: k for n, k in chosen.items() if not ({n, n.rsplit(".", 1)[0], k} & excluded)}
    if where is not None:
        chosen = {n: k for n, k in chosen.items() if where(n, params[n])}
    order = list(params)
    return dict(sorted(chosen.items(), key=lambda item: order.index(item[0])))
