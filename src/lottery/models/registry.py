"""Model families by name pattern, and plugin models; `build` turns a ModelSpec into an initialized network."""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable

import torch
from torch import nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.registry import provide_builtin
from lottery.spec import ModelSpec

Builder = Callable[[ModelSpec, tuple[int, ...], int], Network]

# Example name -> (full-match pattern, builder). Builders take the spec, input shape (C, H, W), class count.
_families: dict[str, tuple[re.Pattern[str], Builder]] = {}


def register(pattern: str, example: str) -> Callable[[Builder], Builder]:
    """Register a family: names matching `pattern` (e.g. r'resnet(20|32|44|56|110)') build with it."""

    def add(builder: Builder) -> Builder:
        _families[example] = (re.compile(pattern), builder)
        return builder

    return add


def names() -> list[str]:
    """One example name per family."""
    return sorted(_families)


BYTES_PER_PARAMETER = 16  # float32 weights, gradients and two optimizer moments: the least training needs


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _described(spec: ModelSpec) -> str:
    return f"model {spec.name!r}" + (f" with model.width = {spec.width}" if spec.width is not None else "")


def check_size(spec: ModelSpec, model: torch.nn.Module) -> None:
    """Refuse a network that cannot fit in memory, saying how much it would need."""
    count = sum(p.numel() for p in model.parameters())
    need, have = count * BYTES_PER_PARAMETER, memory_bytes()
    if need > have:
        raise UserError(
            f"{_described(spec)} has {count:.3g} parameters: training it needs at least {need / 2**30:.3g} GiB of "
            f"memory (weights, gradients, optimizer state); this machine has {have / 2**30:.3g} GiB"
        )


def is_builtin(name: str) -> bool:
    """Whether a built-in family builds `name`."""
    return any(pattern.fullmatch(name) for pattern, _ in _families.values())


provide_builtin("model", is_builtin, names)


def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, init_seed: int) -> nn.Module:
    """The network `spec.name` (built in, or a plugin model) for this data, initialized from `init_seed` alone."""
    if spec.options and is_builtin(spec.name):
        raise UserError(f"model.options applies to plugin models; '{spec.name}' is built in (see its settings)")
    for pattern, builder in _families.values():
        if pattern.fullmatch(spec.name):
            try:
                with torch.device("meta"):  # its size first, without allocating anything
                    check_size(spec, builder(spec, input_shape, num_classes))
            except RuntimeError as error:  # a tensor whose size overflows 64 bits
                if "overflow" not in str(error):
                    raise
                too_big = f"{_described(spec)} has a layer of more than 2**63 bytes: it cannot fit in memory"
                raise UserError(too_big) from None
            model = builder(spec, input_shape, num_classes)
            model.initialize(spec.init, torch.Generator().manual_seed(init_seed), spec.batchnorm_init)
            return model
    return _build_plugin(spec, input_shape, num_classes, init_seed)


BUILTIN_ONLY = ("init", "width", "batchnorm_init", "dropout", "shortcut")  # settings of the shipped families


def _build_plugin(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, init_seed: int) -> nn.Module:
    """A plugin model (lottery.plugins.register_model): its factory called with [model.options] (and input_shape,
    num_classes where it takes them) under torch.manual_seed(init_seed), the global RNG restored after."""
    from lottery import plugins

    plugin = plugins.check("model", spec.name, spec.source_hash)
    default = ModelSpec()
    for name in BUILTIN_ONLY:
        if getattr(spec, name) != getattr(default, name):
            raise UserError(f"model.{name} applies to built-in models; give {plugin.describe()} [model.options]")
    kwargs = dict(spec.options)
    parameters = inspect.signature(plugin.factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)):
        if key in kwargs:
            raise UserError(f"model.options.{key} is set by lottery from the dataset; remove it")
        if key in parameters or takes_any:
            kwargs[key] = value
    try:
        inspect.signature(plugin.factory).bind(**kwargs)
    except TypeError as error:
        raise UserError(f"[model.options] do not fit {plugin.describe()}: {error}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = plugin.factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"{plugin.describe()} returned {type(model).__name__}, not a torch.nn.Module")
    return model
