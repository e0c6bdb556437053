"""Which parameters of any `nn.Module` IMP may prune, and their kinds ('conv', 'fc', 'output').

No base class is needed. By default:

- an ordinary model: the weights of every Linear and Conv1d/2d/3d module, the input projections of every
  `nn.MultiheadAttention` (`in_proj_weight`, or `q_proj_weight`/`k_proj_weight`/`v_proj_weight`; its `out_proj` is a
  Linear) and of Hugging Face's `Conv1D` (GPT-2's transposed Linear); the last Linear module (in registration order)
  is the 'output' layer; biases, embeddings and normalisation layers never are;
- a Hugging Face model (a `transformers.PreTrainedModel`): the attention (Q, K, V, output) and feed-forward weights
  of its encoder/decoder layers (Chen et al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT Networks"):
  the Linear/Conv1D weights inside the repeated layer stacks (`nn.ModuleList`s) of its base model; embeddings,
  LayerNorm, the pooler and the task head are not pruned unless asked (`names=` or `where=`);
- a model that defines `layer_kinds()` (the shipped networks) is asked instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from lottery.errors import UserError

CONV_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PRUNABLE_MODULES = (nn.Linear, *CONV_MODULES)
KINDS = ("conv", "fc", "output")
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def _join(module: str, parameter: str) -> str:
    """The state-dict name of `parameter` of the module named `module` ('' for the model itself)."""
    return f"{module}.{parameter}" if module else parameter


def _is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's `Conv1D` (GPT-2: a Linear with its weight transposed), recognised without importing
    transformers."""
    kind = type(module)
    return kind.__name__ == "Conv1D" and kind.__module__.startswith("transformers.")


def is_hugging_face(model: nn.Module) -> bool:
    """Whether `model` is a `transformers.PreTrainedModel` (checked by class name: transformers is not imported)."""
    return any(
        cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers.") for cls in type(model).__mro__
    )


def _weights(model: nn.Module, inside: Callable[[str], bool] = lambda name: True) -> dict[str, str]:
    """Parameter name -> 'conv' / 'fc' for the Linear, Conv, Conv1D and attention weights of the modules for which
    `inside(module name)` holds."""
    kinds: dict[str, str] = {}
    for name, module in model.named_modules():
        if not inside(name):
            continue
        if isinstance(module, PRUNABLE_MODULES) or _is_hf_conv1d(module):
            kinds[_join(name, "weight")] = "conv" if isinstance(module, CONV_MODULES) else "fc"
        elif isinstance(module, nn.MultiheadAttention):
            for weight in ATTENTION_WEIGHTS:
                if getattr(module, weight, None) is not None:
                    kinds[_join(name, weight)] = "fc"
    return kinds


def default_kinds(model: nn.Module, output: str | None = None) -> dict[str, str]:
    """Parameter name -> kind for the Linear, Conv, Conv1D and attention weights of `model`; `output` names the
    output module (default: the last Linear module)."""
    kinds = _weights(model)
    if output is None:
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        output = linears[-1] if linears else None
    if output is not None and _join(output, "weight") in kinds:
        kinds[_join(output, "weight")] = "output"
    return kinds


def transformer_kinds(model: nn.Module) -> dict[str, str]:
    """Chen et al. 2020's prunable weights of a Hugging Face model: the Linear/Conv1D (and attention) weights inside
    the layer stacks (`nn.ModuleList`s) of its base model, all of kind 'fc'. Embeddings, LayerNorm, the pooler and
    the task head lie outside them. A model with no such stack gets `default_kinds`."""
    base = getattr(model, "base_model", model)
    base = base if isinstance(base, nn.Module) else model
    prefix = next((name for name, module in model.named_modules() if module is base), "")
    stacks = [name for name, module in base.named_modules() if isinstance(module, nn.ModuleList)]
    if not stacks:
        return default_kinds(model)

    def inside(name: str) -> bool:
        return any(name.startswith(f"{stack}.") for stack in stacks)

    return {_join(prefix, name): kind for name, kind in _weights(base, inside).items()}


def prunable(
    model: nn.Module,
    *,
    names: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    where: Callable[[str, nn.Parameter], bool | None] | None = None,
) -> dict[str, str]:
    """The prunable parameters of `model`: {parameter name: kind}, in the model's parameter order.

    - `names`: exactly these parameters (any floating-point parameter; kind from the defaults, else 'fc').
    - `kinds`: only parameters of these kinds (e.g. `kinds=("conv",)`).
    - `exclude`: leave these parameters (or modules, or kinds) out.
    - `where(name, parameter)`: asked about every floating-point parameter of the model; True adds it (kind from
      the defaults, else 'fc'), False leaves it out, None keeps the default decision.
    """
    params = dict(model.named_parameters())
    own = getattr(model, "layer_kinds", None)
    if callable(own):
        defaults = own()
    elif is_hugging_face(model):
        defaults = transformer_kinds(model)
    else:
        defaults = default_kinds(model)
    if names is not None:
        chosen = {}
        for name in names:
            if name not in params:
                raise UserError(f"prunable: '{name}' is not a parameter of {type(model).__name__}")
            if not params[name].is_floating_point():
                raise UserError(f"prunable: '{name}' is a {params[name].dtype} parameter; only floating point ones")
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
        for name, parameter in params.items():
            if not parameter.is_floating_point():
                continue
            decision = where(name, parameter)
            if decision is None:
                continue
            if decision:
                chosen.setdefault(name, defaults.get(name, "fc"))
            else:
                chosen.pop(name, None)
    aliases = {name for name, _ in model.named_parameters(remove_duplicate=False)} - set(params)
    chosen = {n: k for n, k in chosen.items() if n not in aliases}  # a tied weight: under its first name only
    order = {name: i for i, name in enumerate(params)}
    return dict(sorted(chosen.items(), key=lambda item: order[item[0]]))
