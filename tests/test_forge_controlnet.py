"""ControlNet in the Forge adapter's refinement call, without Forge (tests/integration/test_real_forge_controlnet.py
runs the real one): the residuals as Forge's sampling call computes them, for the refined rows, with the gradient
going to the latent through the control model and the units' state put back; the out-of-place residual add; the
gradient guard covering a ControlNet's model.

`ForgeControlNet` follows what backend/patcher/controlnet.py's ControlNet.get_control does per call (Forge
f2.0.1v1.10.1): the previous unit first, the timestep range on t[0], the hint resized once and cached, broadcast
to the call's batch, each output times the strength, outputs as {'middle': [last], 'output': [the others]}.
"""

import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segret_lib.hosts.forge import (
    GradientGuard,
    _control_out_of_place_when_differentiating,
    control_residuals,
)
from segret_lib.testing.tiny_models import tiny_unet


def broadcast_image_to(tensor, target_batch_size, batched_number):
    """backend/patcher/controlnet.py's, as it is."""
    current_batch_size = tensor.shape[0]
    if current_batch_size == 1:
        return tensor
    per_batch = target_batch_size // batched_number
    tensor = tensor[:per_batch]
    if per_batch > tensor.shape[0]:
        tensor = torch.cat([tensor] * (per_batch // tensor.shape[0]) + [tensor[:(per_batch % tensor.shape[0])]], dim=0)
    current_batch_size = tensor.shape[0]
    if current_batch_size == target_batch_size:
        return tensor
    return torch.cat([tensor] * batched_number, dim=0)


class TinyControl(nn.Module):
    """A control model: features of the noisy latent plus the hint's, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.x_in = nn.Conv2d(4, 8, 3, padding=1)
        self.hint_in = nn.Conv2d(3, 8, 8, stride=8)
        self.out = nn.ModuleList([nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)])

    def forward(self, x, hint, context):
        h = torch.tanh(self.x_in(x) + self.hint_in(hint)) * context.mean()
        return [o(h) for o in self.out]


class ForgeControlNet:
    def __init__(self, model, hint, strength=1.0, timestep_range=None, previous=None):
        self.control_model = model
        self.cond_hint_original = hint
        self.cond_hint = None
        self.strength = strength
        self.timestep_range = timestep_range
        self.previous_controlnet = previous
        self.transformer_options = {}
        self.calls = []  # what each call saw: (transformer_options, weights frozen, hint rows)

    def get_control(self, x_noisy, t, cond, batched_number):
        prev = None
        if self.previous_controlnet is not None:
            prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return prev
        size = (x_noisy.shape[2] * 8, x_noisy.shape[3] * 8)
        if self.cond_hint is None or tuple(self.cond_hint.shape[2:]) != size:
            self.cond_hint = F.interpolate(self.cond_hint_original, size=size, mode="nearest-exact")
        if x_noisy.shape[0] != self.cond_hint.shape[0]:
            self.cond_hint = broadcast_image_to(self.cond_hint, x_noisy.shape[0], batched_number)
        self.calls.append((self.transformer_options,
                           not any(p.requires_grad for p in self.control_model.parameters()), self.cond_hint))
        outs = self.control_model(x_noisy, self.cond_hint, cond["c_crossattn"])
        for o in outs:
            o *= self.strength
        out = {"input": [], "middle": [outs[-1]], "output": outs[:-1]}
        if prev is not None:
            for k in out:
                out[k] = [a + b for a, b in zip(out[k], prev[k], strict=True)]
        return out


def _hints(n: int) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(n))


def test_residuals_for_the_refined_rows_with_the_gradient_through_the_control_model():
    torch.manual_seed(0)
    hint = _hints(2)  # a batch of two images, each its own hint
    first = ForgeControlNet(TinyControl(), _hints(1), strength=1.0)  # one hint for the whole batch
    unit = ForgeControlNet(TinyControl(), hint, strength=0.5, previous=first)
    sampling = {"cond_or_uncond": [0, 1]}  # what the last sampling call set, and the hint it left (cond + uncond)
    for u in (unit, first):
        u.transformer_options = sampling
    left = broadcast_image_to(hint, 4, 2)
    unit.cond_hint = left
    context = torch.randn(1, 77, 16) + 1
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    options = {"cond_or_uncond": [0]}

    control = control_residuals(unit, x, torch.tensor([3.0]), {"c_crossattn": context}, options, [1], 1)

    # every unit saw this call's options, with its weights frozen; the refined image's own hint
    assert [c[:2] for c in unit.calls + first.calls] == [(options, True), (options, True)]
    torch.testing.assert_close(unit.calls[0][2], hint[1:2])
    with torch.no_grad():
        expected = [0.5 * a + b for a, b in zip(unit.control_model(x, hint[1:2], context),
                                                first.control_model(x, _hints(1), context), strict=True)]
    torch.testing.assert_close(control["output"][0], expected[0])
    torch.testing.assert_close(control["middle"][0], expected[1])
    # the gradient reaches the latent through the control model; nothing reaches its weights
    loss = sum(t.square().sum() for t in control["output"] + control["middle"])
    (grad,) = torch.autograd.grad(loss, x)
    assert float(grad.abs().sum()) > 0
    for u in (unit, first):
        assert all(p.requires_grad and p.grad is None for p in u.control_model.parameters())
    # the units as the sampling call left them
    assert unit.transformer_options is sampling and first.transformer_options is sampling
    assert unit.cond_hint is left and unit.cond_hint_original is hint and first.cond_hint is None


def test_cfg_layout_and_the_timestep_range_as_in_sampling():
    torch.manual_seed(1)
    hint = _hints(3)
    late = ForgeControlNet(TinyControl(), hint, timestep_range=(2.0, 0.5))  # on from sigma 2 down to 0.5
    unit = ForgeControlNet(TinyControl(), hint, previous=late)
    context = torch.randn(2, 77, 16) + 1
    x = torch.randn(1, 4, 8, 8).repeat(2, 1, 1, 1)  # image 2's cond and uncond rows

    def residuals(sigma):
        return control_residuals(unit, x, torch.tensor([sigma, sigma]), {"c_crossattn": context}, {}, [2], 2)

    early = residuals(3.0)
    assert len(late.calls) == 0  # out of its range: no residuals from it, as in sampling
    torch.testing.assert_close(unit.calls[0][2], hint[2:3])  # image 2's hint (Forge broadcasts one row)
    with torch.no_grad():
        alone = unit.control_model(x, hint[2:3].repeat(2, 1, 1, 1), context)
    torch.testing.assert_close(early["output"][0], alone[0])
    both = residuals(1.0)
    assert len(late.calls) == 1
    torch.testing.assert_close(both["output"][0] - early["output"][0],
                               late.control_model(x, hint[2:3].repeat(2, 1, 1, 1), context)[0].detach())
    assert unit.cond_hint is None and unit.cond_hint_original is hint and late.cond_hint is None


def forge_apply_control(h, control, name):
    """backend/nn/unet.py's apply_control, as it is."""
    if control is not None and name in control and len(control[name]) > 0:
        ctrl = control[name].pop()
        if ctrl is not None:
            try:
                h += ctrl
            except Exception:
                print("warning control could not be applied", h.shape, ctrl.shape)
    return h


def test_residuals_added_out_of_place_while_differentiating():
    torch.manual_seed(2)
    conv, norm = nn.Conv2d(4, 8, 3, padding=1), nn.GroupNorm(2, 8)
    wrapped = _control_out_of_place_when_differentiating(forge_apply_control)
    wrapped.segret_inert = False
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    ctrl = torch.randn(1, 8, 8, 8, requires_grad=True)

    def unet(apply):  # a skip connection the next block saved, then the residual added to it (the output blocks)
        skip = conv(x)
        deeper = norm(skip)
        skip = apply(skip, {"output": [ctrl]}, "output")
        return (deeper.square().sum() + skip.square().sum()), skip

    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        unet(forge_apply_control)[0].backward()
    loss, out = unet(wrapped)
    (gx, gc) = torch.autograd.grad(loss, (x, ctrl))
    assert float(gx.abs().sum()) > 0 and float(gc.abs().sum()) > 0
    with torch.no_grad():
        torch.testing.assert_close(out, conv(x) + ctrl)
        h = conv(x)
        assert wrapped(h, {"output": [ctrl]}, "output") is h  # sampling: Forge's own in-place add
    assert wrapped(h, {"output": []}, "output") is h and wrapped(h, None, "output") is h
    assert wrapped(out, {"output": [torch.ones(1, 3, 8, 8)]}, "output") is out  # what Forge refuses: left out


def test_gradient_guard_covers_a_controlnet_model_and_undoes_it(monkeypatch):
    module = types.ModuleType("backend.nn.unet")
    module.apply_control = forge_apply_control
    monkeypatch.setitem(sys.modules, "backend.nn.unet", module)
    unet, net = tiny_unet("sd1", 0), tiny_unet("sd1", 1)
    with torch.inference_mode():  # Forge loads the ControlNet under inference mode
        for m in net.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=False)
    originals = dict(net.named_parameters())
    guard = GradientGuard(unet)
    guard.install()
    assert module.apply_control is not forge_apply_control
    guard.check()
    guard.cover(net)
    guard.cover(net)  # once per model
    assert guard.check() == len(originals) and guard.check() == 0
    assert not any(p.is_inference() for p in net.parameters())
    blocks = [m for m in net.modules() if hasattr(m, "attn2")]
    assert blocks and all("forward" in vars(m.norm1) for m in blocks)
    guard.remove()
    assert all(p is originals[name] for name, p in net.named_parameters())
    assert all("forward" not in vars(m.norm1) for m in blocks) and module.apply_control is forge_apply_control
    assert guard.models == [unet]


class UnetPatcher:
    """What reserve_backward_memory uses of backend/patcher/unet.py's UnetPatcher."""

    def __init__(self, control=None) -> None:
        self.controlnet_linked_list = control
        self.extra_preserved_memory_during_sampling = 0
        self.model = types.SimpleNamespace(memory_required=lambda shape: 1000.0 * shape[0])

    def clone(self):
        n = UnetPatcher(self.controlnet_linked_list)
        n.extra_preserved_memory_during_sampling = self.extra_preserved_memory_during_sampling
        return n

    def add_extra_preserved_memory_during_sampling(self, memory_in_bytes: int) -> None:
        self.extra_preserved_memory_during_sampling += memory_in_bytes


def test_backward_memory_reserved_for_the_controlnet_models_too():
    from segret_lib.hosts.forge import reserve_backward_memory
    from segret_lib.hosts.host_pass import HostPass

    def reserved(control) -> int:
        objects = types.SimpleNamespace(unet=UnetPatcher(control))
        p = types.SimpleNamespace(sd_model=types.SimpleNamespace(forge_objects=objects), batch_size=2, width=64,
                                  height=64)
        host_pass = HostPass()
        previous = objects.unet
        reserve_backward_memory(p, host_pass)
        need = objects.unet.extra_preserved_memory_during_sampling
        host_pass.close()
        assert objects.unet is previous
        return need

    two = ForgeControlNet(TinyControl(), _hints(1), previous=ForgeControlNet(TinyControl(), _hints(1)))
    assert reserved(None) == 6000  # 3x an inference call of the batch
    assert reserved(two) == 12000  # and half that again per ControlNet model
