"""Other extensions' forward hooks on the UNet during A-STAR's refinement call, which runs under autograd.

Hooks are written for the sampler's model calls, which run without grad. Some write into views in place, which
autograd forbids under grad: Incantations' Smoothed Energy Guidance splits the to_q output with `chunk(2)` and
overwrites one half's query, seen as (images * heads, head_dim, h, w), with its mean in place; with one image
per half that reshape is a view of chunk's output and the write raises `RuntimeError: Output 0 of ReshapeAlias
is a view and is being modified inplace ... a function that returns multiple views`. Nothing A-STAR passes in is
that view: the hook makes it from the module's output.

`grad_safe_hooks(model)` wraps the forward hooks of the model's modules for the duration of a refinement step
(put back exactly after, also on errors). A hook that raises autograd's in-place error is run again, on a
detached copy of the output without grad: its forward value is kept and the gradient passes through it
unchanged (straight-through). For hooks that change only the rows A-STAR does not read (SEG's unconditional
half in the CFG batch layout) that is the exact gradient of the loss. Hooks that work under grad are called as
they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

INPLACE_ERRORS = ("modified inplace", "in-place operation")


def is_inplace_error(err: BaseException) -> bool:
    """Autograd's refusal of an in-place write under grad (a view of a multi-output or no-grad op, a leaf)."""
    return isinstance(err, RuntimeError) and any(s in str(err) for s in INPLACE_ERRORS)


class _PassGradient(torch.autograd.Function):
    """value in the forward, the gradient of `source` unchanged in the backward."""

    @staticmethod
    def forward(ctx, source: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _guarded(hook):
    def guarded(*args):
        try:
            return hook(*args)
        except RuntimeError as err:
            output = args[-1]
            if not (is_inplace_error(err) and torch.is_grad_enabled() and isinstance(output, torch.Tensor)
                    and output.requires_grad):
                raise
            copy = output.detach().clone()
            with torch.no_grad():
                result = hook(*args[:-1], copy)
            value = copy if result is None else result
            if (not isinstance(value, torch.Tensor) or value.shape != output.shape
                    or value.dtype != output.dtype):
                raise err from None
            return _PassGradient.apply(output, value)

    guarded.segret_hook = hook
    return guarded


@contextmanager
def grad_safe_hooks(model: nn.Module | None) -> Iterator[int]:
    """Wrap every forward hook of model's modules (see the module docstring); yields how many were wrapped.
    A hook removed meanwhile stays removed; one replaced by someone else is left as it is."""
    swapped = []
    if model is not None:
        for module in model.modules():
            hooks = module._forward_hooks
            for key, hook in list(hooks.items()):
                if getattr(hook, "segret_hook", None) is not None:
                    continue
                wrapper = _guarded(hook)
                hooks[key] = wrapper
                swapped.append((hooks, key, hook, wrapper))
    try:
        yield len(swapped)
    finally:
        for hooks, key, hook, wrapper in reversed(swapped):
            if hooks.get(key) is wrapper:
                hooks[key] = hook


def foreign_forward(model: nn.Module) -> str | None:
    """The name of a forward that another extension set on this module instance (sd-webui-controlnet sets one on
    the UNet while a unit is on), or None when the class's own forward runs."""
    forward = vars(model).get("forward")
    if forward is None:
        return None
    func = getattr(forward, "__func__", forward)
    if func is getattr(type(model), "forward", None):  # put back as a bound method (ControlNet's restore does)
        return None
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', type(forward).__name__)}"

