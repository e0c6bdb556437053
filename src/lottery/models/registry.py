"""Models by name (`lottery.registry.models`: built-in families and plugins, one registry registered through
`lottery.register_model`); `build` turns a ModelSpec into an initialized network."""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from lottery.errors import UserError
from lottery.models.base import Network
from lottery.registry import Plugin, models
from lottery.spec import ModelSpec


def names() -> list[str]:
    """One example name per family, and the plugin models' names."""
    return models.names()


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


BUILTIN_ONLY = ("init", "width", "batchnorm_init", "dropout", "shortcut")  # settings the factory reads from `spec`


def build(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, init_seed: int) -> nn.Module:
    """The network `spec.name` (built in, or a plugin model) for this data, initialized from `init_seed` alone: its
    factory is called with what its signature names of `spec`, `input_shape`, `num_classes` and [model.options],
    under `torch.manual_seed(init_seed)` (the global RNG restored after); a `Network` is then initialized by
    `model.init` from a generator seeded with `init_seed`."""
    entry = models.check(spec.name, spec.source_hash)
    kwargs = _arguments(entry, spec, input_shape, num_classes)
    if entry.builtin:
        _check_size(entry, spec, kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = entry(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"{entry.describe()} returned {type(model).__name__}, not a torch.nn.Module")
    if isinstance(model, Network):
        model.initialize(spec.init, torch.Generator().manual_seed(init_seed), spec.batchnorm_init)
    else:
        for name in ("init", "batchnorm_init"):  # (a factory that takes `spec` but returns a plain nn.Module)
            if getattr(spec, name) != getattr(ModelSpec(), name):
                raise UserError(f"model.{name} applies to lottery.models.Network models; {entry.describe()} is not one")
    return model


def _arguments(entry: Plugin, spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> dict:
    """The factory's keyword arguments: [model.options], and input_shape, num_classes (where its signature names them
    or takes **kwargs) and spec (where it names it); the built-in settings only for a factory that reads `spec`."""
    if spec.options and entry.builtin:
        raise UserError(f"model.options applies to plugin models; '{spec.name}' is built in (see its settings)")
    parameters = inspect.signature(entry.factory).parameters
    if "spec" not in parameters:
        default = ModelSpec()
        for name in BUILTIN_ONLY:
            if getattr(spec, name) != getattr(default, name):
                raise UserError(f"model.{name} applies to built-in models; give {entry.describe()} [model.options]")
    kwargs = dict(spec.options)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes), ("spec", spec)):
        if key in kwargs:
            raise UserError(f"model.options.{key} is set by lottery; remove it")
        if key in parameters or (takes_any and key != "spec"):
            kwargs[key] = value
    try:
        inspect.signature(entry.factory).bind(**kwargs)
    except TypeError as error:
        raise UserError(f"[model.options] do not fit {entry.describe()}: {error}") from None
    return kwargs


def _check_size(entry: Plugin, spec: ModelSpec, kwargs: dict) -> None:
    """Build the network on the meta device (nothing allocated) and refuse one that cannot fit in memory."""
    try:
        with torch.device("meta"):
            check_size(spec, entry.factory(**kwargs))
    except RuntimeError as error:  # a tensor whose size overflows 64 bits
        if "overflow" not in str(error):
            raise
        raise UserError(f"{_described(spec)} has a layer of more than 2**63 bytes: it cannot fit in memory") from None
