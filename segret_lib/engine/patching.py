"""Temporary per-instance attribute replacement that restores exactly what was there before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_MISSING = object()


class InstancePatches:
    """Replace attributes on single objects (not classes) and put back the previous values.

    If someone else replaced our wrapper in the meantime, their attribute is left alone and our wrapper is
    marked inert (it must then pass calls straight through).
    """

    def __init__(self) -> None:
        self._patches: list[tuple[Any, str, object, Any]] = []

    def __len__(self) -> int:
        return len(self._patches)

    def patch(self, obj: Any, name: str, make_wrapper: Callable[[Any], Any]) -> Any:
        """Set obj.<name> = make_wrapper(current obj.<name>); returns the wrapper."""
        previous = obj.__dict__.get(name, _MISSING)
        wrapper = make_wrapper(getattr(obj, name))
        wrapper.segret_inert = False
        setattr(obj, name, wrapper)
        self._patches.append((obj, name, previous, wrapper))
        return wrapper

    def restore(self) -> int:
        """Undo every patch, newest first; returns how many attributes were put back. Idempotent."""
        restored = 0
        for obj, name, previous, wrapper in reversed(self._patches):
            wrapper.segret_inert = True
            if obj.__dict__.get(name) is wrapper:
                if previous is _MISSING:
                    delattr(obj, name)
                else:
                    setattr(obj, name, previous)
                restored += 1
        self._patches.clear()
        return restored


@contextmanager
def parameters_frozen(*modules: Any) -> Iterator[None]:
    """Parameters of `modules` that require grad stop requiring it inside the block; restored exactly after,
    also on errors.

    The refinement needs d(loss)/d(latent) only. Frozen parameters keep the autograd graph off the weights, and
    extensions that swap weights in place on the first forward after a change (the WebUI's Lora extension:
    `weight.copy_(backup)` outside no_grad) stay legal under grad mode.
    """
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
