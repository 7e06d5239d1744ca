"""What users run next to A-STAR, in the fake host made to behave like the real WebUI (issue 6): the Lora
extension's in-place weight swap, hooks that expect the CFG batch layout, the SDXL refiner's model switch,
per-batch infotext and step counts of every sampler."""

import logging

import pytest
import torch
from modules import infotext_utils, shared
from modules.sd_models import TinySDModel

from segret_lib.engine.capture import cross_attention_modules
from segret_lib.hosts import lifecycle as script_lifecycle
from tests.fake_webui import lora_networks
from tests.test_webui_extension import ON, assert_clean, latents, without_extension
from tests.webui_host import Host


@pytest.fixture(scope="module")
def host():
    return Host("sd1")


def info_of(res, i=0):
    return infotext_utils.parse_generation_parameters(res.infotexts[i])


# ------------------------------------------------------------------------------------------------- LoRA
@pytest.fixture
def lora(host):
    """The Lora extension installed on the host's UNet, whose weights require grad as in the WebUI."""
    unet = host.model.model.diffusion_model
    unet.requires_grad_(True)
    lora_networks.install(unet)
    try:
        yield lora_networks
    finally:
        lora_networks.uninstall(unet)
        unet.requires_grad_(False)


def test_lora_changes_refined_on_every_request(host, lora):
    """<lora:x:1> -> same again -> weight 0.7 -> removed -> added back: every image refined (issue 6, item 1)."""
    unet = host.model.model.diffusion_model
    for networks in ([("x", 1.0)], [("x", 1.0)], [("x", 0.7)], [], [("x", 1.0)]):
        lora.load_networks(networks)
        p, res = host.txt2img(script_args=host.args(**ON), steps=3)
        info = info_of(res)
        assert "A-STAR warnings" not in info, (networks, info)
        assert info["A-STAR result"].startswith("first pass: 3/3 steps"), (networks, info)
        assert all(prm.requires_grad for prm in unet.parameters())  # restored exactly
        assert_clean(host, p)


def test_parameters_frozen_restores_exactly_even_on_error():
    from segret_lib.engine.patching import parameters_frozen

    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    m[1].bias.requires_grad_(False)
    before = [p.requires_grad for p in m.parameters()]
    with pytest.raises(KeyError), parameters_frozen(m, None):
        assert not any(p.requires_grad for p in m.parameters())
        raise KeyError
    assert [p.requires_grad for p in m.parameters()] == before


# ------------------------------------------------------------------------------------------------- CFG-batch hooks
@pytest.fixture
def seg_hook(host):
    """An attention hook like Incantations' Smoothed Energy Guidance: `uncond, cond = output.chunk(2)`."""
    calls = []

    def hook(module, args, output):
        calls.append(output.shape[0])
        uncond, cond = output.chunk(2, dim=0)
        return torch.cat([uncond, cond])

    handles = [m.register_forward_hook(hook) for m in cross_attention_modules(host.model.model.diffusion_model)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def test_cfg_batch_hook_falls_back_to_the_cfg_layout(host, seg_hook):
    plain = without_extension(host, steps=3, n_iter=2)
    p, res = host.txt2img(script_args=host.args(**ON, step_size=60.0), steps=3, n_iter=2)
    first, second = info_of(res, 0), info_of(res, 1)
    assert "conditional-only refinement call failed (ValueError" in first["A-STAR warnings"], first
    assert first["A-STAR result"].startswith("first pass: 3/3 steps (CFG batch layout"), first
    # the layout is remembered for the next batch, which then has nothing to warn about
    assert "A-STAR warnings" not in second, second
    assert second["A-STAR result"].startswith("first pass: 3/3 steps (CFG batch layout"), second
    assert (latents(res) - latents(plain)).abs().max() > 1e-4
    assert_clean(host, p)


def test_cfg_layout_failing_too_switches_off_cleanly(host):
    def always_fails(module, args, output):
        if torch.is_grad_enabled():
            raise ValueError("this hook never works under grad")
        return output

    handles = [m.register_forward_hook(always_fails) for m in cross_attention_modules(host.model.model.diffusion_model)]
    try:
        p, res = host.txt2img(script_args=host.args(**ON), steps=3)
    finally:
        for h in handles:
            h.remove()
    info = info_of(res)
    assert "refinement failed (ValueError: this hook never works under grad)" in info["A-STAR warnings"], info
    assert torch.equal(latents(res), latents(without_extension(host, steps=3)))
    assert_clean(host, p)


def smooth_query_hook(heads: int):
    """Like Incantations' Smoothed Energy Guidance on to_q (tests/integration/cfg_split_hook): the batch as two
    halves (`chunk(2)`), the second half's query replaced by its spatial mean in place, on views."""

    def hook(module, args, output):
        first, second = output.chunk(2, dim=0)
        n, seq, inner = second.shape
        side = int(seq ** 0.5)
        grid = second.view(n, seq, heads, inner // heads).permute(0, 2, 3, 1).reshape(n * heads, -1, side, side)
        grid[:] = grid.mean(dim=(-2, -1), keepdim=True)
        return torch.cat([first, grid.reshape(n, heads, -1, seq).permute(0, 3, 1, 2).reshape(n, seq, inner)])

    return hook


@pytest.fixture
def seg_like_hook(host):
    unet = host.model.model.diffusion_model
    found = [m for n, m in unet.named_modules() if n.startswith("middle_block") and n.endswith("attn1")]
    assert found
    handles = [m.to_q.register_forward_hook(smooth_query_hook(m.heads)) for m in found]
    hooks = [dict(m.to_q._forward_hooks) for m in found]
    try:
        yield
    finally:
        assert [dict(m.to_q._forward_hooks) for m in found] == hooks  # A-STAR put the hooks back exactly
        for h in handles:
            h.remove()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_seg_like_hook_refines_every_step_in_the_cfg_layout(host, seg_like_hook, batch_size):
    """Batch size 1: the conditional-only call fails in chunk(2) (ValueError), the CFG layout's in-place write
    into a view under grad (RuntimeError ... ReshapeAlias ...) is run without autograd recording it; batch
    size 2: the conditional-only call meets the in-place error. Every step refined in the CFG layout."""
    plain = without_extension(host, steps=3, batch_size=batch_size)
    p, res = host.txt2img(script_args=host.args(**ON, step_size=60.0), steps=3, batch_size=batch_size)
    error = "ValueError: not enough values" if batch_size == 1 else "RuntimeError: Output 0 of ReshapeAlias"
    for i in range(batch_size):
        info = info_of(res, i)
        assert f"conditional-only refinement call failed ({error}" in info["A-STAR warnings"], info
        assert "switched off" not in info["A-STAR warnings"], info
        assert info["A-STAR result"].startswith("first pass: 3/3 steps (CFG batch layout"), info
    assert (latents(res) - latents(plain)).abs().max() > 1e-4
    assert_clean(host, p)


def test_grad_safe_hooks_pass_the_gradient_and_restore_the_hooks():
    from segret_lib.engine.foreign_hooks import grad_safe_hooks

    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Linear(16, 1)).requires_grad_(False)
    smooth = model[0].register_forward_hook(smooth_query_hook(heads=1))  # rows: 2 x (4 x 4) "pixels", 16 channels
    scaled = model[1].register_forward_hook(lambda m, a, out: out * 3)  # works under grad: called as it is
    before = {k: dict(m._forward_hooks) for k, m in enumerate(model)}
    x = torch.randn(2, 16, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="modified inplace"), torch.enable_grad():
        model(x)
    with grad_safe_hooks(model) as wrapped, torch.enable_grad():
        assert wrapped == 2
        out = model(x)
        (grad,) = torch.autograd.grad(out[0].sum(), x)  # the first row, which the hook does not change
    assert {k: dict(m._forward_hooks) for k, m in enumerate(model)} == before
    with torch.no_grad():
        assert torch.equal(out, model(x))  # the hook's forward value is kept
    with pytest.raises(KeyError), grad_safe_hooks(model):
        raise KeyError
    assert {k: dict(m._forward_hooks) for k, m in enumerate(model)} == before
    smooth.remove()
    scaled.remove()
    ref = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (expected,) = torch.autograd.grad(model(ref)[0].sum() * 3, ref)
    assert torch.allclose(grad, expected) and grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------- refiner
def test_refiner_switch_stops_cleanly(host, caplog):
    refiner = TinySDModel("sd1", seed=5)
    p, res = None, None
    try:
        with caplog.at_level(logging.WARNING):
            from modules import processing

            shared.sd_model = host.model
            p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat and a dog", sd_model=host.model,
                                                            scripts=host.runner, script_args=host.args(**ON),
                                                            width=256, height=256, steps=8)
            p.refiner_model, p.refiner_switch_at = refiner, 0.5
            res = processing.run_generation(p)
    finally:
        shared.sd_model = host.model
    info = info_of(res)
    assert info["Refiner"] == "refiner"
    assert info["A-STAR warnings"].startswith("the model was switched during sampling (the SDXL refiner)"), info
    assert "A-STAR stopped at step 6" in info["A-STAR warnings"]
    assert info["A-STAR result"].startswith("first pass: 5/8 steps"), info
    assert not any(r.exc_info for r in caplog.records)  # one line, no traceback
    assert_clean(host, p)


# ------------------------------------------------------------------------------------------------- counts, infotext
def test_each_batch_has_its_own_infotext(host):
    p, res = host.txt2img(prompt=["a cat and a bird", "a cat and a dog"], script_args=host.args(**ON), steps=3,
                          n_iter=2)
    first, second = info_of(res, 0), info_of(res, 1)
    assert "'dog' is not in the prompt" in first["A-STAR warnings"]
    assert "A-STAR warnings" not in second, second
    assert first["A-STAR result"].count("first pass") == second["A-STAR result"].count("first pass") == 1
    assert_clean(host, p)


def test_step_counts_follow_what_the_sampler_ran(host, monkeypatch):
    """A sampler that runs more steps than asked (the WebUI's UniPC runs 7 at 6 steps): the total follows it."""
    original = script_lifecycle.pass_steps
    monkeypatch.setattr(script_lifecycle, "pass_steps",
                        lambda host, denoiser, fallback: original(host, denoiser, fallback) - 1)
    _, res = host.txt2img(script_args=host.args(**ON), steps=6)  # the host says 5 steps, the sampler runs 6
    assert info_of(res)["A-STAR result"].startswith("first pass: 6/6 steps"), info_of(res)


def test_dpm_adaptive_counts_its_attempted_steps(host):
    p, res = host.txt2img(script_args=host.args(**ON), steps=4, sampler_name="DPM adaptive")
    text = info_of(res)["A-STAR result"]
    done, total = text.split(": ", 1)[1].split(" ")[0].split("/")
    assert int(done) <= int(total) and int(total) > 4, text
    assert_clean(host, p)
