"""Counting what a piece of torch code costs the host: dispatched operations and host-device synchronisations.

Works on the CPU, where no synchronisation really happens: it counts the calls that *would* wait for the GPU
if the tensors lived there. Used by tests/benchmark.py and by the tests that bound the refinement's cost.

* ops: every ATen operation dispatched (a TorchDispatchMode sees each one, autograd's backward included).
* syncs: reading a tensor's value on the host (`.item()`, `float(t)`, `int(t)`, `bool(t)`, `if t:` all end in
  `aten._local_scalar_dense`), ops whose output size depends on the data (`nonzero`, `masked_select`,
  `unique`, ...), copies to the host (`.cpu()`, `.tolist()`, `.numpy()`), and tensors made from host data with an
  explicit device (`torch.tensor(values, device=...)`: a blocking host-to-device copy on a GPU). A `.to(device)`
  is not counted: on the CPU it cannot tell a no-op from a transfer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# ATen ops that read values back to the host or whose output shape depends on the values
_SYNC_ATEN = {
    "aten::_local_scalar_dense", "aten::nonzero", "aten::nonzero_static", "aten::masked_select", "aten::unique_dim",
    "aten::_unique", "aten::_unique2", "aten::unique_consecutive", "aten::equal", "aten::is_nonzero",
}
_HOST_READS = {"tolist", "numpy", "cpu"}
_DEVICE_FACTORIES = {"tensor", "as_tensor"}


@dataclass
class OpCount:
    """Totals of one counting block; `syncs_by` and `ops_by` name where they came from."""

    ops: int = 0
    syncs: int = 0
    ops_by: Counter = field(default_factory=Counter)
    syncs_by: Counter = field(default_factory=Counter)

    def add_sync(self, name: str) -> None:
        self.syncs += 1
        self.syncs_by[name] += 1


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, count: OpCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.count.ops += 1
        self.count.ops_by[name] += 1
        if name in _SYNC_ATEN and name != "aten::is_nonzero":  # bool(t) dispatches is_nonzero, then a scalar read
            self.count.add_sync(name)
        return func(*args, **(kwargs or {}))


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, count: OpCount) -> None:
        super().__init__()
        self.count = count

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS and getattr(func, "__qualname__", "").startswith("TensorBase"):
            self.count.add_sync(f"Tensor.{name}")
        elif name in _DEVICE_FACTORIES and kwargs.get("device") is not None and not _is_tensor_arg(args):
            self.count.add_sync(f"torch.{name}(device=)")
        return func(*args, **kwargs)


def _is_tensor_arg(args) -> bool:
    return bool(args) and isinstance(args[0], torch.Tensor)


@contextmanager
def count_ops() -> Iterator[OpCount]:
    """Count dispatched ops and would-be synchronisations inside the block (see the module's docstring)."""
    count = OpCount()
    with _FunctionCounter(count), _DispatchCounter(count):
        yield count


@contextmanager
def per_refined_step(session) -> Iterator[list[OpCount]]:
    """Count each refined step of a SegretSession (a call of `before_model_call` that refined) on its own; the
    list fills as the sampler runs. The session's method is wrapped on the instance and put back on exit."""
    from ..engine.patching import InstancePatches

    steps: list[OpCount] = []
    patches = InstancePatches()

    def make_wrapper(original):
        def before_model_call(*args, **kwargs):
            with count_ops() as count:
                result = original(*args, **kwargs)
            if result is not None:
                steps.append(count)
            return result

        return before_model_call

    patches.patch(session, "before_model_call", make_wrapper)
    try:
        yield steps
    finally:
        patches.restore()
