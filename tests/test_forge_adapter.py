"""The pure parts of the Forge adapter, on the real ldm UNet (the real-Forge tests run the rest): the weight
check, the gradient guard, the attn2 replace-patch wrapper, the transformer options and the timestep sigmas."""

import pytest
import torch
from torch import nn

from segret_lib.engine.capture import AttentionCapture
from segret_lib.hosts.forge import (
    GradientGuard,
    _sigmas_of_timesteps,
    transformer_options_for,
)
from segret_lib.hosts.lowbit import refusal, unsupported_weights
from segret_lib.testing.tiny_models import CONTEXT_DIM, tiny_unet


class GGUFParameter(nn.Parameter):
    """Stands for the storage class of a GGUF checkpoint's weights (the check goes by the class name)."""


def test_unsupported_weights_names_gguf_and_4bit_storage():
    plain = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert unsupported_weights(plain) == ""
    quantised = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    quantised[1].weight = GGUFParameter(torch.zeros(2, 2))
    assert unsupported_weights(quantised) == "GGUF / NF4 / FP4 weights"
    assert refusal(plain) == "" and refusal(quantised).startswith("GGUF / NF4 / FP4 weights are not supported")


def _as_inference_tensors(module: nn.Module) -> None:
    """Forge loads and casts weights under inference mode: every parameter becomes an inference tensor."""
    with torch.inference_mode():
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[name] = nn.Parameter(p.detach().clone(), requires_grad=False)


def test_gradient_guard_makes_an_inference_mode_unet_differentiable_and_undoes_it():
    unet = tiny_unet("sd1", 0)
    with torch.no_grad():  # ldm zero-initialises the output conv: give the output a dependence on the input
        for p in unet.out[-1].parameters():
            p.normal_(0, 0.1)
    _as_inference_tensors(unet)
    originals = {name: p for name, p in unet.named_parameters()}
    x = torch.randn(1, 4, 16, 16)
    t = torch.tensor([500.0])
    context = torch.randn(1, 77, CONTEXT_DIM)

    def grad_norm() -> float:
        z = x.clone().requires_grad_(True)
        out = unet(z, t, context=context)
        (g,) = torch.autograd.grad(out.square().mean(), z)
        return float(g.norm())

    with pytest.raises(RuntimeError, match=r"[Ii]nference tensors"):  # they cannot be saved for backward
        grad_norm()
    guard = GradientGuard(unet)
    guard.install()
    swapped = guard.check()
    assert swapped == len(originals) and guard.check() == 0  # nothing is an inference tensor any more
    norms = [m for m in unet.modules() if hasattr(m, "attn2")]
    assert norms and all("forward" in vars(m.norm1) for m in norms)
    assert grad_norm() > 0
    guard.remove()
    assert all(p is originals[name] for name, p in unet.named_parameters())  # the very same tensors back
    assert all("forward" not in vars(m.norm1) for m in norms)


def test_attn2_replace_patches_are_wrapped_to_record_and_options_mark_the_rows():
    calls = []

    def other_extensions_patch(q, k, v, extra_options):
        calls.append(q.shape)
        return q

    patcher = type("Patcher", (), {"model_options": {"transformer_options": {
        "patches_replace": {"attn2": {("input", 1): other_extensions_patch}}, "keep": 1}}})()
    capture = AttentionCapture()
    sigma = torch.tensor([2.0, 2.0, 2.0, 2.0])
    options = transformer_options_for(patcher, capture, sigma, [0, 1])
    assert options["keep"] == 1 and options["cond_or_uncond"] == [0, 1]
    assert options["cond_indices"] == [0, 1] and options["uncond_indices"] == [2, 3]
    assert options["cond_mark"].tolist() == [0.0, 0.0, 1.0, 1.0]
    # the sampler's own options are left alone
    assert patcher.model_options["transformer_options"]["patches_replace"]["attn2"][("input", 1)] is \
        other_extensions_patch
    wrapped = options["patches_replace"]["attn2"][("input", 1)]
    q, k = torch.randn(4, 64, 16), torch.randn(4, 77, 16)
    with capture.capturing(64) as probs:
        assert wrapped(q, k, k, {"n_heads": 2, "dim_head": 8}) is q
    assert len(probs) == 1 and probs[0].shape == (4, 64, 77)  # recorded, heads averaged
    torch.testing.assert_close(probs[0].sum(-1), torch.ones(4, 64))
    wrapped(q, k, k, {"n_heads": 2})  # not capturing: passes straight through
    assert len(probs) == 1 and len(calls) == 2


def test_timestep_sigmas_follow_alphas_cumprod():
    abar = torch.linspace(0.999, 0.01, 1000)
    inner = type("Inner", (), {"alphas_cumprod": abar})()
    denoiser = type("Denoiser", (), {"inner_model": type("Wrap", (), {"inner_model": inner})()})()
    t = torch.tensor([0.2, 499.6, 999.0, 2000.0])
    expected = ((1 - abar) / abar).sqrt()[torch.tensor([0, 500, 999, 999])]
    torch.testing.assert_close(_sigmas_of_timesteps(denoiser, t), expected)
