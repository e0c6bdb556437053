"""The exact fast step of SGD, Adam and AdamW: `exact_step(optimizer)` is `optimizer.step()` of `torch.optim.Adam` /
`AdamW` / `SGD` on the CPU, bit for bit (the same ATen kernels in the same order as torch's single-tensor
implementation, issued as `_foreach` calls) but without the per-parameter Python loop, and without the slow path
that PyTorch's CPU `sqrt` takes on exact zeros: a masked network's pruned coordinates have Adam second moments of
exactly 0 (see docs/performance.md). The training loop takes it, and `lottery.attach` routes `optimizer.step()`
through it; it depends on torch alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def _run_hooks(optimizer: torch.optim.Optimizer, post: bool) -> None:
    """The optimizer's step pre- or post-hooks, global and its own, in the order `Optimizer.step`'s wrapper runs
    them (e.g. an attached mask: `lottery.attach`)."""
    from torch.optim import optimizer as base

    if post:
        hooks = [*optimizer._optimizer_step_post_hooks.values(), *base._global_optimizer_post_hooks.values()]
    else:
        hooks = [*base._global_optimizer_pre_hooks.values(), *optimizer._optimizer_step_pre_hooks.values()]
    for hook in hooks:
        if hook(optimizer, (optimizer,), {}) is not None:
            raise RuntimeError("exact_step: an optimizer step hook that rewrites the step's arguments is not supported")


def _exact_supported(optimizer: torch.optim.Optimizer) -> bool:
    """True where `exact_step` reproduces `optimizer.step()` bit for bit: torch's single-tensor Adam or SGD (the
    implementation torch itself picks for CPU tensors), plain float hyperparameters."""
    kind = type(optimizer)
    if kind not in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
        return False
    for group in optimizer.param_groups:
        if group.get("foreach") or group.get("fused") or group.get("differentiable") or group.get("maximize"):
            return False
        if not isinstance(group["lr"], float) or not isinstance(group["weight_decay"], float | int):
            return False
        if kind in (torch.optim.Adam, torch.optim.AdamW):
            if group.get("amsgrad") or group.get("capturable"):
                return False
            if not all(isinstance(b, float) for b in group["betas"]) or not group["eps"] > 0:
                return False
        for p in group["params"]:
            if p.device.type != "cpu" or p.is_complex() or p.is_sparse or (p.grad is not None and p.grad.is_sparse):
                return False
    return True


def exact_step(optimizer: torch.optim.Optimizer) -> bool:
    """Take `optimizer.step()` bit for bit, faster; return False (having done nothing) where not supported.

    Supported: `torch.optim.Adam`, `AdamW` and `SGD` with parameters on the CPU and default flags (no foreach,
    fused, amsgrad, maximize, capturable or differentiable) -- the single-tensor implementation torch uses for
    CPU tensors, reproduced op for op with `_foreach` calls (whose CPU implementation applies the same per-tensor
    kernels). The one deviation is exact: Adam's denominator sqrt(v) / sqrt(1 - beta2^t) + eps is computed from
    max(v, smallest normal) when that provably rounds to the same value (it is eps either way for such v), which
    avoids PyTorch's slow CPU sqrt of zeros. The optimizer's step hooks run around the step, as
    `optimizer.step()` runs them: an attached mask (`lottery.attach`) holds.
    """
    if not _exact_supported(optimizer):
        return False
    _run_hooks(optimizer, post=False)
    with torch.no_grad():
        for group in optimizer.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if isinstance(optimizer, torch.optim.Adam):  # AdamW too (a subclass)
                _adam(optimizer, group, params)
            else:
                _sgd(optimizer, group, params)
    _run_hooks(optimizer, post=True)
    return True


def _adam(optimizer: torch.optim.Optimizer, group: dict[str, Any], params: list[Tensor]) -> None:
    beta1, beta2 = group["betas"]
    lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
    for p in params:
        state = optimizer.state[p]
        if len(state) == 0:  # as torch.optim.Adam._init_group
            scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            state["step"] = torch.tensor(0.0, dtype=scalar, device="cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    states = [optimizer.state[p] for p in params]
    grads = [p.grad for p in params]
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    if weight_decay != 0 and group.get("decoupled_weight_decay"):  # AdamW
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    elif weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    step_sizes, sqrt_corrections, floors = [], [], []
    for p, step_t in zip(params, steps):
        step = step_t.item()
        step_sizes.append(-(lr / (1 - beta1**step)))
        correction = (1 - beta2**step) ** 0.5
        sqrt_corrections.append(correction)
        # sqrt(v) / correction + eps is exactly eps for every v below the smallest normal number when even
        # sqrt(tiny) / correction stays under half an ulp of eps (ulp(eps) > eps * finfo.eps / 2).
        info = torch.finfo(p.dtype)
        floors.append(math.sqrt(info.tiny) / correction < eps * info.eps / 4)
    if all(floors):
        denoms = torch._foreach_clamp_min(exp_avg_sqs, torch.finfo(params[0].dtype).tiny)
        torch._foreach_sqrt_(denoms)
    else:
        denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, sqrt_corrections)
    torch._foreach_add_(denoms, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)


def _sgd(optimizer: torch.optim.Optimizer, group: dict[str, Any], params: list[Tensor]) -> None:
    lr, weight_decay, momentum = group["lr"], group["weight_decay"], group["momentum"]
    dampening, nesterov = group["dampening"], group["nesterov"]
    grads = [p.grad for p in params]
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum != 0:
        states = [optimizer.state[p] for p in params]
        old = [i for i, s in enumerate(states) if s.get("momentum_buffer") is not None]
        for i, s in enumerate(states):
            if s.get("momentum_buffer") is None:
                s["momentum_buffer"] = torch.clone(grads[i]).detach()
        if old:
            bufs = [states[i]["momentum_buffer"] for i in old]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, [grads[i] for i in old], alpha=1 - dampening)
        bufs = [s["momentum_buffer"] for s in states]
        grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    torch._foreach_add_(params, grads, alpha=-lr)
