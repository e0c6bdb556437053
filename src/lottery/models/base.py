"""What every network declares: its prunable parameters, their layer kinds, and its output layer."""

from __future__ import annotations

import torch
from torch import nn

from lottery.models import init as initializers

PRUNABLE_MODULES = (nn.Conv2d, nn.Linear)


class Network(nn.Module):
    """A plain `nn.Module` that knows which of its weights IMP may prune.

    Subclasses set `output_layer` to the name of the module producing the logits. By default the
    weights of every Conv2d and Linear module are prunable; biases and BatchNorm never are.
    """

    output_layer: str
    init_settings: tuple[str, str] | None = None  # (init, batchnorm_init) of `initialize`, rerun by reinitialize

    def prunable_names(self) -> list[str]:
        return [f"{name}.weight" for name, module in self.named_modules() if isinstance(module, PRUNABLE_MODULES)]

    def layer_kinds(self) -> dict[str, str]:
        """Prunable parameter name -> 'conv', 'fc' or 'output' (for per-kind pruning rates)."""
        kinds = {}
        for name, module in self.named_modules():
            if not isinstance(module, PRUNABLE_MODULES):
                continue
            if name == self.output_layer:
                kinds[f"{name}.weight"] = "output"
            else:
                kinds[f"{name}.weight"] = "conv" if isinstance(module, nn.Conv2d) else "fc"
        return kinds

    def initialize(self, init: str, generator: torch.Generator, batchnorm_init: str = "default") -> None:
        """Initialize every weight from `generator` alone (never the global RNG)."""
        self.init_settings = (init, batchnorm_init)
        weight_init = initializers.weight_initializers.get(init)
        bn_init = initializers.batchnorm_initializers.get(batchnorm_init)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, PRUNABLE_MODULES):
                    weight_init(module.weight, generator)
                    if module.bias is not None:
                        module.bias.zero_()
                elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                    bn_init(module, generator)
