"""The whole script lifecycle through a fake WebUI host (tests/fake_webui) with real models and samplers."""

import html
import json
import re

import pytest
import torch
from modules import infotext_utils, processing, script_callbacks, scripts, sd_samplers, shared
from modules.api import api

from segret_lib.engine.capture import cross_attention_modules
from segret_lib.engine.checkpointing import unet_blocks
from segret_lib.hosts import lifecycle as script_lifecycle
from segret_lib.settings.params import ASTAR_STEP_SIZE, AUTO, UI_FIELDS, SegretParams
from segret_lib.ui import accordion as script_ui
from segret_lib.ui import script_args, xyz_axes
from tests.webui_host import ROOT, Host

ON = {"enabled": True, "concepts": "cat, dog"}


@pytest.fixture(scope="module")
def host():
    return Host("sd1")


def instance_forwards(host):
    return [m.__dict__.get("forward") for m in cross_attention_modules(host.model.model.diffusion_model)]


def assert_clean(host, p=None):
    assert instance_forwards(host) == [None] * 7
    assert all("forward" not in b.__dict__ for b in unet_blocks(host.model.model.diffusion_model))
    if p is not None and p.sampler is not None:
        assert "forward" not in p.sampler.model_wrap_cfg.__dict__
        assert "callback_state" not in p.sampler.__dict__
    assert host.script.gen is None


def latents(res):
    return torch.stack(res.latents)


def without_extension(host, prompt="a cat and a dog", **kw):
    shared.sd_model = host.model
    p = processing.StableDiffusionProcessingTxt2Img(prompt=prompt, sd_model=host.model, scripts=None,
                                                    width=256, height=256, **kw)
    return processing.run_generation(p)


# ------------------------------------------------------------------------------------------------- UI
def test_ui_components_tooltips_and_ids(host):
    controls = host.script.controls
    assert len(controls) == len(UI_FIELDS) == host.script.args_to - host.script.args_from
    enabled = controls[0]
    assert enabled.value is False and enabled.accordion.label == "A-STAR (segregation & retention)"
    for name, comp in zip(UI_FIELDS[1:], controls[1:], strict=True):
        assert comp.elem_id == f"segret_txt2img_{name}" or name == "concepts"
    assert controls[1].info == script_ui.TIPS["concepts"]  # the only help shown below its control
    assert controls[1].elem_id == "segret_txt2img_concepts"
    # hover tooltips for javascript/segret.js: one per control, keyed by the elem_ids the controls really have
    chips = next(b for b in host.runner.blocks.blocks.values() if getattr(b, "elem_id", None) == "segret_txt2img_chips")
    tips = json.loads(html.unescape(re.search(r'data-tips="([^"]*)"', chips.value).group(1)))
    assert set(tips) == {enabled.accordion.elem_id} | {c.elem_id for c in controls[1:]}
    assert tips[enabled.accordion.elem_id] == script_ui.TIPS["enabled"]
    assert all(tips[c.elem_id] == script_ui.TIPS[name] for name, c in zip(UI_FIELDS[1:], controls[1:], strict=True))
    # defaults of the UI are the engine's defaults
    d = script_args.params_from_args(host.runner.default_args()[host.script.args_from:host.script.args_to])
    assert d.enabled is False and d.step_size == ASTAR_STEP_SIZE and d.threshold == 0.5


def test_img2img_tab_has_its_own_ids():
    h = Host("sd1", is_img2img=True)
    assert h.script.controls[1].elem_id == "segret_img2img_concepts"


# ------------------------------------------------------------------------------------------------- disabled
def test_disabled_is_bit_identical_to_no_extension(host):
    plain = without_extension(host, steps=4, batch_size=2)
    p, disabled = host.txt2img(script_args=host.args(enabled=False, concepts="cat, dog"), steps=4, batch_size=2)
    assert torch.equal(latents(plain), latents(disabled))
    assert "A-STAR" not in disabled.infotexts[0]
    assert_clean(host, p)
    p, defaults = host.txt2img(steps=4, batch_size=2)
    assert torch.equal(latents(plain), latents(defaults))


# ---------------------------------------------------------------------------------------- the default rule
@pytest.mark.parametrize(("sampler", "steps", "runs"), [("Euler", 4, 4), ("Euler a", 10, 10), ("DPM++ 2M", 25, 25),
                                                        ("DDIM", 8, 7)])
def test_default_rule_refines_the_first_half_of_each_pass(host, sampler, steps, runs):
    """The UI's step rule ("auto") is A-STAR's "early": steps 1..ceil(T/2) of the T the sampler runs, each
    once; the infotext names the rule; an explicit last step wins; "steady" refines every step."""
    ui = host.args(**ON, step_rule=AUTO)
    _, res = host.txt2img(script_args=ui, steps=steps, sampler_name=sampler)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    half = -(-runs // 2)
    assert info["A-STAR step rule"] == "early" and info["A-STAR last step"] == "0"
    assert info["A-STAR result"].startswith(f"first pass: {half}/{runs} steps"), info
    _, res = host.txt2img(script_args=host.args(**ON, step_rule=AUTO, last_step=runs - 1), steps=steps,
                          sampler_name=sampler)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith(f"first pass: {runs - 1}/{runs} steps"), info
    _, res = host.txt2img(script_args=host.args(**ON, step_rule="steady"), steps=steps, sampler_name=sampler)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR step rule"] == "steady" and info["A-STAR result"].startswith(f"first pass: {runs}/{runs}")


def test_default_rule_halves_the_hires_pass_too(host):
    _, res = host.txt2img(script_args=host.args(**ON, step_rule=AUTO, hires=True), steps=4, enable_hr=True,
                          hr_scale=1.5, hr_second_pass_steps=6, denoising_strength=0.5)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert "first pass: 2/4 steps" in info["A-STAR result"] and "hires pass: 3/6 steps" in info["A-STAR result"]


# ------------------------------------------------------------------------------------------------- enabled
def test_enabled_changes_the_image_writes_infotext_and_unhooks(host):
    plain = without_extension(host, steps=4)
    calls_before = host.model.unet_calls
    p, res = host.txt2img(script_args=host.args(**ON, step_size=60.0), steps=4)
    assert host.model.unet_calls - calls_before == 4 * 2  # 4 CFG calls + 4 refinement forwards (early exit)
    assert (latents(res) - latents(plain)).abs().max() > 1e-3
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR concepts"] == "cat, dog" and info["A-STAR step size"] == "60"
    assert info["A-STAR result"].startswith("first pass: 4/4 steps")
    assert p.closed
    assert_clean(host, p)


@pytest.mark.parametrize(
    ("sampler", "evals"),
    [("Euler a", 5), ("Heun", 9), ("DPM++ 2M", 5), ("DPM++ SDE", 9), ("DPM2", 9), ("LMS", 5), ("DDIM", 4),
     ("PLMS", 5), ("Restart", 9)],
)
def test_every_sampler_refines_once_per_step(host, sampler, evals, monkeypatch):
    plain = without_extension(host, steps=5, sampler_name=sampler)
    created = spy_samplers(monkeypatch)
    p, res = host.txt2img(script_args=host.args(**ON, step_size=60.0), steps=5, sampler_name=sampler)
    assert created[0].model_wrap_cfg.calls == evals  # the sampler's own evaluations (refinement is extra)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    runs = 4 if sampler in ("DDIM", "PLMS") else 5  # the WebUI's DDIM and PLMS run len(timesteps) - 1 steps
    assert info["A-STAR result"].startswith(f"first pass: {runs}/{runs} steps"), info
    assert torch.isfinite(latents(res)).all()
    assert (latents(res) - latents(plain)).abs().max() > 1e-4
    assert_clean(host, p)


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS"])
@pytest.mark.parametrize("steps", [4, 6, 8, 20])
def test_timestep_samplers_refine_every_step_they_run(host, sampler, steps, monkeypatch):
    """DDIM and PLMS loop over len(timesteps) - 1 model steps (7 at 8 steps, 6 at 6: 1000 // 6 leaves one more
    timestep); every one is refined and the infotext counts those, not one more."""
    runs = len(range(0, 1000, 1000 // steps)) - 1
    created = spy_samplers(monkeypatch)
    p, res = host.txt2img(script_args=host.args(**ON), steps=steps, sampler_name=sampler)
    assert created[0].model_wrap_cfg.calls == runs + (sampler == "PLMS")  # PLMS's first step evaluates twice
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith(f"first pass: {runs}/{runs} steps"), info
    assert not hasattr(created[0].func, "segret_inert")  # the wrapper is gone
    assert_clean(host, p)


def spy_samplers(monkeypatch) -> list:
    created = []
    create = sd_samplers.create_sampler
    monkeypatch.setattr(sd_samplers, "create_sampler", lambda *a: created.append(create(*a)) or created[-1])
    return created


def test_restart_segment_is_refined_once_per_heun_step(host, monkeypatch):
    """From 20 steps on, Restart adds a noisy restart segment: 11 + 9 Heun steps, the last with one evaluation."""
    created = spy_samplers(monkeypatch)
    p, res = host.txt2img(script_args=host.args(**ON), steps=20, sampler_name="Restart")
    assert created[0].model_wrap_cfg.calls == 2 * 20 - 1
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith("first pass: 20/20 steps"), info
    assert torch.isfinite(latents(res)).all()
    assert_clean(host, p)


def test_dpm_fast_refines_once_per_solver_step(host, monkeypatch):
    """DPM fast spends its 5 evaluations on a third- and a second-order step and calls back after the first
    evaluation of each, so the callback cannot mark where a step starts."""
    created = spy_samplers(monkeypatch)
    callbacks = []
    monkeypatch.setattr(script_lifecycle.SegretSession, "on_sampler_callback",
                        lambda self: callbacks.append(1) or self.tracker.on_callback())
    plain = without_extension(host, steps=5, sampler_name="DPM fast")
    p, res = host.txt2img(script_args=host.args(**ON, step_size=60.0), steps=5, sampler_name="DPM fast")
    assert created[-1].model_wrap_cfg.calls == 5 and len(callbacks) == 2
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith("first pass: 2/2 steps"), info
    assert (latents(res) - latents(plain)).abs().max() > 1e-4
    assert_clean(host, p)


def test_timestep_sampler_uses_unit_scale(host, monkeypatch):
    seen = []
    original = script_lifecycle.SegretSession.begin_pass

    def spy(self, info):
        seen.append((info.parameterization, info.pattern))
        return original(self, info)

    monkeypatch.setattr(script_lifecycle.SegretSession, "begin_pass", spy)
    host.txt2img(script_args=host.args(**ON), steps=3, sampler_name="DDIM")
    host.txt2img(script_args=host.args(**ON), steps=3, sampler_name="Heun")
    assert seen == [("timestep", "first_order"), ("sigma", "second_order")]


def test_batch_and_iterations_with_different_prompts(host):
    prompts = ["a cat and a dog", "a dog on a red car", "a cat and a dog", "a bird"]
    p, res = host.txt2img(prompt=prompts, script_args=host.args(**ON), steps=3, batch_size=2, n_iter=2)
    assert len(res.latents) == 4
    first = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert "'cat' is not in the prompt (prompt tokens: a, dog, on, a, red, car)" in first["A-STAR warnings"]
    assert "bird" not in first["A-STAR warnings"]  # written per batch, before the second batch ran
    last = infotext_utils.parse_generation_parameters(res.infotexts[-1])
    assert "'dog' is not in the prompt (prompt tokens: a, bird)" in last["A-STAR warnings"]
    assert last["A-STAR result"].count("first pass: 3/3 steps") == 1  # this batch's own result
    assert "red, car" not in last["A-STAR warnings"]  # nor the first batch's warnings
    assert_clean(host, p)


def test_textual_inversion_embedding_name_as_a_concept(host, monkeypatch):
    encoder = host.model.cond_stage_model
    monkeypatch.setattr(encoder, "embeddings", {})
    encoder.add_embedding("tinycat", vectors=3)
    seen = []
    original = script_lifecycle.SegretSession.begin_pass

    def spy(self, info):
        seen.append([(c.word, c.positions) for c in self.concepts[0]])
        return original(self, info)

    monkeypatch.setattr(script_lifecycle.SegretSession, "begin_pass", spy)
    p, res = host.txt2img(prompt="a photo of (tinycat:1.1) and a dog",
                          script_args=host.args(enabled=True, concepts="tinycat, dog"), steps=3)
    # "a photo of" are tokens 1-3, the embedding's 3 vectors 4-6, "and a dog" 7-9
    assert seen == [[("tinycat", (4, 5, 6)), ("dog", (9,))]]
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert "A-STAR warnings" not in info and info["A-STAR result"].startswith("first pass: 3/3 steps")
    assert_clean(host, p)


def test_sdxl_dict_conditioning():
    h = Host("sdxl")
    assert h.model.is_sdxl
    _, plain = h.txt2img(steps=3)
    p, res = h.txt2img(script_args=h.args(**ON, step_size=60.0), steps=3)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith("first pass: 3/3")
    assert (latents(res) - latents(plain)).abs().max() > 1e-4
    assert_clean(h, p)


def test_hires_pass_off_by_default_and_on_by_setting(host):
    p, res = host.txt2img(script_args=host.args(**ON), steps=3, enable_hr=True, hr_scale=1.5,
                          hr_second_pass_steps=4, denoising_strength=0.5)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert "hires pass" not in info["A-STAR result"]
    assert res.latents[0].shape[-1] == 48
    p, res = host.txt2img(script_args=host.args(**ON, hires=True), steps=3, enable_hr=True, hr_scale=1.5,
                          hr_second_pass_steps=4, denoising_strength=0.5)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    # img2img-style second pass: t_enc + 1 = 4 sampling steps
    assert "first pass: 3/3 steps" in info["A-STAR result"] and "hires pass: 4/4 steps" in info["A-STAR result"]
    assert info["A-STAR hires"] == "True"
    assert_clean(host, p)


def test_img2img():
    h = Host("sd1", is_img2img=True)
    init = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    p, res = h.img2img(init, script_args=h.args(**ON), steps=6, denoising_strength=0.5)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith("first pass: 6/6 steps")
    assert_clean(h, p)


# ------------------------------------------------------------------------------------------------- bad input
def test_unknown_word_warns_and_image_still_generates(host, capsys):
    p, res = host.txt2img(script_args=host.args(enabled=True, concepts="cat, zebra", method="A-STAR"), steps=3)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert "'zebra' is not in the prompt" in info["A-STAR warnings"]
    # retention on the remaining concept: from the second step on (the first has no previous mask)
    assert info["A-STAR result"].startswith("first pass: 2/3")
    assert "[A-STAR] 'zebra' is not in the prompt" in capsys.readouterr().out
    assert len(res.images) == 1
    assert_clean(host, p)


def test_no_concept_found_changes_nothing(host):
    plain = without_extension(host, steps=3)
    p, res = host.txt2img(script_args=host.args(enabled=True, concepts="zebra, horse"), steps=3)
    assert torch.equal(latents(res), latents(plain))
    assert "none of the concepts" in res.infotexts[0]
    assert_clean(host, p)


@pytest.mark.parametrize(
    ("values", "needle"),
    [({"enabled": True, "concepts": ""}, "no concept words"),
     ({**ON, "step_size": float("inf")}, "step_size"),
     ({**ON, "seg_weight": 1e6}, "seg_weight"),
     ({**ON, "concepts": ",".join(f"w{i}" for i in range(12))}, "at most 8")],
)
def test_bad_settings_warn_and_generate_unchanged(host, values, needle, capsys):
    plain = without_extension(host, steps=3)
    p, res = host.txt2img(script_args=host.args(**values), steps=3)
    assert torch.equal(latents(res), latents(plain))
    assert needle in res.infotexts[0] and "A-STAR warnings: " in res.infotexts[0]
    assert "[A-STAR] not applied" in capsys.readouterr().out
    assert_clean(host, p)


def test_nan_gradient_warns_in_infotext(host):
    module = cross_attention_modules(host.model.model.diffusion_model)[3]

    def poison(mod, args, out):
        return out * float("nan") if torch.is_grad_enabled() else out

    handle = module.to_k.register_forward_hook(poison)
    try:
        p, res = host.txt2img(script_args=host.args(**ON), steps=3)
    finally:
        handle.remove()
    assert "non-finite" in res.infotexts[0]
    assert torch.isfinite(latents(res)).all()
    assert_clean(host, p)


def test_out_of_memory_in_refinement_is_reported(host):
    def oom(mod, args):
        if torch.is_grad_enabled():
            raise torch.OutOfMemoryError("CUDA out of memory")

    handle = host.model.model.diffusion_model.input_blocks[0].register_forward_pre_hook(oom)
    try:
        p, res = host.txt2img(script_args=host.args(**ON), steps=3)
    finally:
        handle.remove()
    plain = without_extension(host, steps=3)
    assert torch.equal(latents(res), latents(plain))
    assert "out of memory during refinement" in res.infotexts[0]
    assert_clean(host, p)


def test_out_of_memory_fallbacks_carry_over_to_the_next_batch(host):
    hits = []

    def oom(mod, args):
        if torch.is_grad_enabled():
            hits.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory")

    handle = host.model.model.diffusion_model.input_blocks[0].register_forward_pre_hook(oom)
    try:
        p, res = host.txt2img(script_args=host.args(**ON), steps=3, n_iter=2)
    finally:
        handle.remove()
    assert len(hits) == 2  # batch 1: normal pass, low-VRAM pass, then off; batch 2 does not try again
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert "low VRAM" in info["A-STAR warnings"] and "switched off for this generation" in info["A-STAR warnings"]
    last = infotext_utils.parse_generation_parameters(res.infotexts[-1])  # each batch's infotext is its own
    assert last["A-STAR warnings"] == "out of memory in an earlier batch; A-STAR switched off for this generation"
    assert_clean(host, p)


def test_low_vram_setting_refines_like_the_normal_pass(host):
    _, normal = host.txt2img(script_args=host.args(**ON, step_size=60.0), steps=3, batch_size=2)
    p, low = host.txt2img(script_args=host.args(**ON, step_size=60.0, low_vram=True), steps=3, batch_size=2)
    torch.testing.assert_close(latents(low), latents(normal), rtol=1e-4, atol=1e-5)
    assert "A-STAR warnings" not in low.infotexts[0]
    assert_clean(host, p)


# ------------------------------------------------------------------------------------------------- cleanup
def test_interrupt_mid_sampling_unhooks(host):
    original = script_lifecycle.SegretSession.before_model_call
    count = []

    def interrupt_after_two(self, x, sigma, run, run_cfg=None):
        count.append(1)
        if len(count) == 2:
            shared.state.interrupt()
        return original(self, x, sigma, run, run_cfg)

    script_lifecycle.SegretSession.before_model_call = interrupt_after_two
    try:
        p, res = host.txt2img(script_args=host.args(**ON), steps=6)
    finally:
        script_lifecycle.SegretSession.before_model_call = original
        shared.state.begin()
    assert len(res.latents) == 1 and len(count) == 2
    assert_clean(host, p)


def test_exception_elsewhere_in_generation_still_unhooks(host):
    def broken(mod, args):
        if not torch.is_grad_enabled():
            raise RuntimeError("another extension broke the UNet")

    handle = host.model.model.diffusion_model.middle_block.register_forward_pre_hook(broken)
    try:
        with pytest.raises(RuntimeError, match="another extension"):
            host.txt2img(script_args=host.args(**ON), steps=3)
    finally:
        handle.remove()
    assert_clean(host)
    # the next generation works normally
    _, res = host.txt2img(script_args=host.args(**ON), steps=3)
    assert "first pass: 3/3" in res.infotexts[0]


def test_attention_optimisation_on_the_class_keeps_working(host):
    from ldm.modules.attention import CrossAttention

    original = CrossAttention.forward

    def chunked_forward(self, x, context=None, mask=None, **kwargs):
        return original(self, x, context, mask)

    CrossAttention.forward = chunked_forward
    try:
        p, res = host.txt2img(script_args=host.args(**ON), steps=3)
        assert "first pass: 3/3" in res.infotexts[0]
        assert_clean(host, p)
        assert all(m.forward.__func__ is chunked_forward
                   for m in cross_attention_modules(host.model.model.diffusion_model))
    finally:
        CrossAttention.forward = original


# ------------------------------------------------------------------------------------------------- maps, API, paste
def test_show_maps_adds_a_grid_to_the_gallery(host):
    _, res = host.txt2img(script_args=host.args(**ON, show_maps=True), steps=4, batch_size=2)
    assert len(res.images) == 4 and len(res.infotexts) == 4
    grid = res.images[2]
    assert grid.size[0] > 4 * 128 and grid.size[1] > 2 * 128


def test_api_list_and_dict_args(host):
    by_list = api.init_script_args({"a-star": {"args": [True, "cat, dog", 1.0, 0.5, 30.0]}}, host.runner)
    by_dict = api.init_script_args({"A-STAR": {"args": [{"concepts": ["cat", "dog"], "ret_weight": 0.5,
                                                         "step_size": 30}]}}, host.runner)
    _, res_list = host.txt2img(script_args=by_list, steps=3)
    _, res_dict = host.txt2img(script_args=by_dict, steps=3)
    assert torch.equal(latents(res_list), latents(res_dict))
    assert "A-STAR ret weight: 0.5" in res_dict.infotexts[0] and "A-STAR step size: 30" in res_dict.infotexts[0]
    with pytest.raises(api.HTTPException):
        api.init_script_args({"astar": {"args": []}}, host.runner)


def test_api_dict_with_bad_value_says_what_is_wrong(host):
    args = api.init_script_args({"A-STAR": {"args": [{"concepts": "cat, dog", "step_siz": 3}]}}, host.runner)
    _, res = host.txt2img(script_args=args, steps=3)
    assert "unknown A-STAR setting(s): step_siz" in res.infotexts[0]
    args = api.init_script_args({"A-STAR": {"args": [{"concepts": "cat, dog", "last_step": "ten"}]}}, host.runner)
    _, res = host.txt2img(script_args=args, steps=3)
    assert "last_step: cannot read 'ten'" in res.infotexts[0]


def test_infotext_paste_restores_the_controls(host):
    values = {**ON, "seg_weight": 1.5, "ret_weight": 0.25, "step_size": 12.5, "last_step": 7,
              "threshold_mode": "otsu", "iterative": True, "hires": True}
    _, res = host.txt2img(script_args=host.args(**values), steps=3)
    params = infotext_utils.parse_generation_parameters(res.infotexts[0])
    pasted = {id(c): v for c, v in infotext_utils.apply_infotext(params, host.runner.infotext_fields)}
    controls = dict(zip(UI_FIELDS, host.script.controls, strict=True))
    for name, expected in values.items():
        got = pasted[id(controls[name])]
        assert str(got) == str(expected) or float(got) == float(expected), name
    empty = infotext_utils.apply_infotext({"Steps": "20"}, host.script.infotext_fields)
    assert empty == [(controls["enabled"], False)]


def test_xyz_axes_override_settings(host):
    class AxisOption:
        def __init__(self, label, type, apply, **kwargs):
            self.label, self.type, self.apply = label, type, apply

    xyz_module = type("xyz", (), {"AxisOption": AxisOption, "axis_options": []})
    xyz_class = type("Script", (scripts.Script,), {"__module__": "xyz_grid.py"})
    xyz_data = scripts.ScriptClassData(xyz_class, "xyz_grid.py", "", xyz_module)
    scripts.scripts_data.append(xyz_data)
    try:
        script_callbacks.before_ui_callback()
        script_callbacks.before_ui_callback()  # twice: no duplicate axes
        labels = [o.label for o in xyz_module.axis_options]
        assert labels == [a[0] for a in xyz_axes.XYZ_AXES]
        # "Reload UI": the WebUI clears every callback and re-executes scripts/*.py (segret_lib stays cached)
        script_callbacks.clear()
        xyz_module.axis_options.clear()
        scripts.load_scripts([str(ROOT / "scripts" / "segret.py")], str(ROOT), reload=True)
        script_callbacks.before_ui_callback()
        assert [o.label for o in xyz_module.axis_options] == labels
    finally:
        scripts.scripts_data.remove(xyz_data)
    p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat and a dog", sd_model=host.model,
                                                    scripts=host.runner, script_args=host.args(**ON),
                                                    steps=3, width=256, height=256)
    xyz_module.axis_options[2].apply(p, 33.0, [33.0])
    xyz_module.axis_options[3].apply(p, 2, [2])
    res = processing.run_generation(p)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR step size"] == "33" and info["A-STAR last step"] == "2"
    assert info["A-STAR result"].startswith("first pass: 2/3 steps")


def test_xyz_cells_sharing_extra_generation_params_do_not_leak_warnings(host):
    """X/Y/Z cells are shallow copies of one p: extra_generation_params is shared between them."""
    import copy

    base = processing.StableDiffusionProcessingTxt2Img(prompt="a cat and a dog", sd_model=host.model,
                                                       scripts=host.runner, steps=3, width=256, height=256,
                                                       script_args=host.args(enabled=True, concepts="cat, zebra"))
    first = processing.run_generation(copy.copy(base))
    assert "zebra" in first.infotexts[0]
    second_p = copy.copy(base)
    second_p.script_args = host.args(**ON)
    assert second_p.extra_generation_params is base.extra_generation_params
    second = processing.run_generation(second_p)
    assert "zebra" not in second.infotexts[0] and "A-STAR warnings" not in second.infotexts[0]
    third_p = copy.copy(base)
    third_p.script_args = host.args(enabled=False)
    third = processing.run_generation(third_p)
    assert "A-STAR" not in third.infotexts[0]


def test_script_errors_are_not_swallowed_silently(host):
    assert scripts.errors == []


# ------------------------------------------------------------------------------------------------- half precision
HALF = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16")] + (
    [pytest.param("cuda", torch.float16, id="cuda-fp16")] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("low_vram", [False, True], ids=["", "low-vram"])
@pytest.mark.parametrize(("device", "dtype"), HALF)
def test_half_precision_unet(device, dtype, low_vram):
    """The UNet in 16-bit under autocast, the sampler latent in float32 (the WebUI without --no-half); in low-VRAM
    mode the checkpointed blocks are recomputed under the same autocast."""
    h = Host("sd1", device=device, dtype=dtype)
    _, plain = h.txt2img(steps=4)
    p, res = h.txt2img(script_args=h.args(**ON, step_size=60.0, low_vram=low_vram), steps=4)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith("first pass: 4/4 steps"), info
    assert "A-STAR warnings" not in info
    assert torch.isfinite(latents(res)).all()
    assert (latents(res) - latents(plain)).abs().max() > 1e-3
    assert_clean(h, p)


# ------------------------------------------------------------------------------------------------- Attend-and-Excite
AAE = {**ON, "method": "Attend-and-Excite"}


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM", "Heun"])
def test_aae_refines_the_first_half_of_a_batch_with_each_sampler(host, sampler):
    plain = without_extension(host, steps=6, sampler_name=sampler, batch_size=2)
    # the UI's values: switching the radio to A&E also ticks Iterative refinement (its default)
    p, res = host.txt2img(script_args=host.args(**AAE, iterative=True, step_size=60.0), steps=6,
                          sampler_name=sampler, batch_size=2)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR method"] == "Attend-and-Excite"
    assert info["A-STAR iterative"] == "steps auto; target 0.95 0.5 0.2; max 20"
    assert info["A-STAR result"].startswith("first pass: 3/6 steps, L_A&E "), info  # steps 1-3 of 6
    assert "A-STAR warnings" not in info
    assert torch.isfinite(latents(res)).all()
    assert (latents(res) - latents(plain)).abs().max() > 1e-4
    assert_clean(host, p)


def test_aae_disabled_is_bit_identical(host):
    plain = without_extension(host, steps=3, batch_size=2)
    p, res = host.txt2img(script_args=host.args(**{**AAE, "enabled": False}), steps=3, batch_size=2)
    assert torch.equal(latents(plain), latents(res)) and "A-STAR" not in res.infotexts[0]
    assert_clean(host, p)


def test_aae_single_concept_and_bad_method(host):
    _, res = host.txt2img(script_args=host.args(enabled=True, concepts="dog", method="Attend-and-Excite"), steps=4)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert info["A-STAR result"].startswith("first pass: 2/4 steps")  # A&E needs no second concept, no mask
    plain = without_extension(host, steps=3)
    p, res = host.txt2img(script_args=host.args(**{**ON, "method": "excite"}), steps=3)
    assert torch.equal(latents(res), latents(plain))
    assert "A-STAR warnings: " in res.infotexts[0] and "method must be one of" in res.infotexts[0]
    assert_clean(host, p)


def test_aae_low_vram_and_out_of_memory_fallback(host):
    _, normal = host.txt2img(script_args=host.args(**AAE, step_size=60.0), steps=4, batch_size=2)
    p, low = host.txt2img(script_args=host.args(**AAE, step_size=60.0, low_vram=True), steps=4, batch_size=2)
    torch.testing.assert_close(latents(low), latents(normal), rtol=1e-4, atol=1e-5)
    assert_clean(host, p)

    def oom(mod, args):
        if torch.is_grad_enabled():
            raise torch.OutOfMemoryError("CUDA out of memory")

    handle = host.model.model.diffusion_model.input_blocks[0].register_forward_pre_hook(oom)
    try:
        p, res = host.txt2img(script_args=host.args(**AAE), steps=3)
    finally:
        handle.remove()
    assert "out of memory during refinement" in res.infotexts[0]
    assert_clean(host, p)


def test_aae_api_dict_and_positional_list(host):
    by_dict = api.init_script_args({"A-STAR": {"args": [{"concepts": "cat, dog", "method": "Attend-and-Excite",
                                                         "step_size": 30}]}}, host.runner)
    # the positional list: the 12 old values, the method appended at the end; every value is explicit
    by_list = api.init_script_args({"A-STAR": {"args": [True, "cat, dog", 1.0, 1.0, 30.0, 0, "fraction", 0.5, True,
                                                        False, False, False, "aae"]}}, host.runner)
    _, res_dict = host.txt2img(script_args=by_dict, steps=4)
    _, res_list = host.txt2img(script_args=by_list, steps=4)
    assert torch.equal(latents(res_dict), latents(res_list))
    info = infotext_utils.parse_generation_parameters(res_dict.infotexts[0])
    assert info["A-STAR method"] == "Attend-and-Excite" and info["A-STAR result"].startswith("first pass: 2/4")
    old = api.init_script_args({"A-STAR": {"args": [True, "cat, dog", 1.0, 1.0, 30.0]}}, host.runner)
    _, res_old = host.txt2img(script_args=old, steps=4)
    # the WebUI pads the list with the UI's defaults: the method Both (at its excite weight) and the step rule
    # "auto", the method's: "early", which refines the first half
    assert "A-STAR method: Both" in res_old.infotexts[0] and "first pass: 2/4" in res_old.infotexts[0]
    assert "A-STAR step rule: early" in res_old.infotexts[0] and "A-STAR excite weight: 0.25" in res_old.infotexts[0]


def test_expert_controls_sit_in_a_closed_advanced_group(host):
    """What a newcomer touches first is in the accordion itself; the expert controls in a closed "Advanced"
    group inside it, each with its elem_id (tooltips and paste go by those)."""
    import gradio as gr

    controls = dict(zip(UI_FIELDS, host.script.controls, strict=True))

    def groups(block):
        out = []
        while block is not None:
            if isinstance(block, gr.Accordion):
                out.append((block.label, block.open))
            block = getattr(block, "parent", None)
        return out

    advanced = {"seg_weight", "ret_weight", "bind_weight", "excite_weight", "threshold_mode",
                "threshold", "step_rule", "last_step", "iterative",
                "hires", "low_vram", "maps_view"}
    for name, control in controls.items():
        labels = [label for label, _ in groups(control)]
        if name in advanced:
            assert "Advanced" in labels and ("Advanced", False) in groups(control), name
        else:
            assert "Advanced" not in labels, name
        assert name == "enabled" or control.elem_id == f"segret_txt2img_{name}", (name, control.elem_id)


def test_method_radio_switches_iterative_and_paste_restores_the_method(host):
    controls = dict(zip(UI_FIELDS, host.script.controls, strict=True))
    radio = controls["method"]
    assert radio.choices in (["A-STAR", "Attend-and-Excite", "Both"],
                             [(c, c) for c in ("A-STAR", "Attend-and-Excite", "Both")])
    assert radio.value == "Both" and radio.elem_id == "segret_txt2img_method"  # DEFAULT_METHOD
    deps = [(d, fn) for d, fn in zip(host.runner.blocks.dependencies, host.runner.blocks.fns, strict=True)
            if radio._id in d["targets"] and d["trigger"] == "input"]
    assert len(deps) == 1  # user input only: paste does not fire it
    dep, fn = deps[0]
    assert dep["outputs"][:2] == [controls["iterative"]._id, controls["step_size"]._id]
    assert controls["step_size"].value == ASTAR_STEP_SIZE
    assert dep["outputs"][2:4] == [controls["step_rule"]._id, controls["excite_weight"]._id]
    update, step, rule, excite, previous = fn.fn("Attend-and-Excite", "A-STAR", False, ASTAR_STEP_SIZE, "early", 1.0)
    assert update["value"] is True and step["value"] == 20.0 and previous == "Attend-and-Excite"
    assert rule["value"] == "v1" and excite["value"] == 1.0  # A&E's published schedule
    update, step, rule, excite, previous = fn.fn("Both", "Attend-and-Excite", True, 20.0, "v1", 1.0)
    assert update["value"] is False and step["value"] == ASTAR_STEP_SIZE and previous == "Both"
    assert rule["value"] == "early" and excite["value"] == 0.25  # Both's own excite weight
    update, step, _, excite, _ = fn.fn("Both", "A-STAR", True, 15.0, "balanced", 0.5)
    assert update["value"] is True and step["value"] == 15.0  # set by the user under A-STAR: kept
    assert excite["value"] == 0.5
    # paste
    values = {**AAE, "iterative": False, "last_step": 2}
    _, res = host.txt2img(script_args=host.args(**values), steps=3)
    params = infotext_utils.parse_generation_parameters(res.infotexts[0])
    assert params["A-STAR iterative"] == "off"
    pasted = {id(c): v for c, v in infotext_utils.apply_infotext(params, host.runner.infotext_fields)}
    assert pasted[id(radio)] == "Attend-and-Excite" and pasted[id(controls["iterative"])] is False
    for method in ("A-STAR", "Both"):  # an A-STAR infotext has no method key (as in every version); Both's has
        _, res = host.txt2img(script_args=host.args(**ON, method=method), steps=3)
        params = infotext_utils.parse_generation_parameters(res.infotexts[0])
        assert ("A-STAR method" in params) == (method == "Both")
        pasted = {id(c): v for c, v in infotext_utils.apply_infotext(params, host.runner.infotext_fields)}
        assert pasted[id(radio)] == method and pasted[id(controls["iterative"])] is False


def test_xyz_method_axis_compares_methods_on_one_seed(host):
    class AxisOption:
        def __init__(self, label, type, apply, choices=None, **kwargs):
            self.label, self.type, self.apply, self.choices = label, type, apply, choices

    xyz_module = type("xyz", (), {"AxisOption": AxisOption, "axis_options": []})
    xyz_class = type("Script", (scripts.Script,), {"__module__": "xyz_grid.py"})
    assert xyz_axes.add_xyz_axes([scripts.ScriptClassData(xyz_class, "xyz_grid.py", "", xyz_module)])
    axis = next(o for o in xyz_module.axis_options if o.label == "[A-STAR] Method")
    assert axis.type is str and axis.choices() == ["A-STAR", "Attend-and-Excite", "Both"]
    results = {}
    for value in axis.choices():
        p = processing.StableDiffusionProcessingTxt2Img(prompt="a cat and a dog", sd_model=host.model,
                                                        scripts=host.runner,
                                                        script_args=host.args(**ON, step_rule=AUTO),  # the UI's
                                                        steps=4, width=256, height=256, seed=7)
        axis.apply(p, value, axis.choices())
        results[value] = processing.run_generation(p)
        assert_clean(host, p)
    infos = {k: infotext_utils.parse_generation_parameters(r.infotexts[0]) for k, r in results.items()}
    assert "A-STAR method" not in infos["A-STAR"] and infos["A-STAR"]["A-STAR result"].startswith("first pass: 2/4")
    # the UI's iterative value (off) was A-STAR's default: the A&E cell takes A&E's (on)
    assert infos["Attend-and-Excite"]["A-STAR iterative"] == "steps auto; target 0.95 0.5 0.2; max 20"
    assert infos["Attend-and-Excite"]["A-STAR result"].startswith("first pass: 2/4 steps, L_A&E")
    # so does the step size: the UI's 30 was A-STAR's default, the A&E cell takes A&E's 20
    assert infos["A-STAR"]["A-STAR step size"] == "30" and infos["Attend-and-Excite"]["A-STAR step size"] == "20"
    assert infos["Both"]["A-STAR method"] == "Both" and "L_A&E" in infos["Both"]["A-STAR result"]
    # the step rule "auto" is each method's: written for A-STAR and Both, absent (v1) for A&E
    assert infos["A-STAR"]["A-STAR step rule"] == infos["Both"]["A-STAR step rule"] == "early"
    assert "A-STAR step rule" not in infos["Attend-and-Excite"]
    assert len({latents(r).sum().item() for r in results.values()}) == 3


def test_aae_sdxl_and_hires():
    h = Host("sdxl")
    p, res = h.txt2img(script_args=h.args(**AAE, iterative=True, step_size=60.0, hires=True), steps=4,
                       enable_hr=True, hr_scale=1.5, hr_second_pass_steps=4, denoising_strength=0.5)
    info = infotext_utils.parse_generation_parameters(res.infotexts[0])
    # first half of each pass: 2 of 4 steps, and of the hires pass's 4 steps
    assert "first pass: 2/4 steps" in info["A-STAR result"] and "hires pass: 2/4 steps" in info["A-STAR result"]
    assert "A-STAR warnings" not in info and torch.isfinite(latents(res)).all()
    assert_clean(h, p)


def test_a_long_bad_value_is_cut_in_the_warning(host, capsys):
    """A 5000-character value comes back cut to a readable length, still naming the setting."""
    args = api.init_script_args({"A-STAR": {"args": [{"concepts": "cat, dog", "method": "x" * 5000}]}},
                                host.runner)
    _, res = host.txt2img(script_args=args, steps=3)
    warning = infotext_utils.parse_generation_parameters(res.infotexts[0])["A-STAR warnings"]
    assert warning.startswith("not applied: method must be one of") and "…" in warning
    assert len(warning) <= 300
    out = capsys.readouterr().out
    assert "[A-STAR] not applied: method must be one of" in out and "x" * 200 not in out
    _, res = host.txt2img(script_args=host.args(enabled=True, concepts="cat, " + "d" * 5000), steps=3)
    warning = infotext_utils.parse_generation_parameters(res.infotexts[0])["A-STAR warnings"]
    assert "tokens long" in warning and "…" in warning and len(warning) <= 300
    assert "d" * 200 not in capsys.readouterr().out


def test_excite_weight_through_the_api_and_paste(host):
    """Both's default weight (0.25) is written; 1 (Both before) makes another image; pasting an infotext, or an
    old Both infotext without the key (made with 1), reproduces its image."""
    prompt, base = "a cat and a dog", {"concepts": "cat, dog", "method": "both"}

    def run(**extra):
        _, res = host.txt2img(prompt=prompt, script_args=api.init_script_args(
            {"A-STAR": {"args": [{**base, **extra}]}}, host.runner), steps=3)
        return latents(res), infotext_utils.parse_generation_parameters(res.infotexts[0])

    default, info_default = run()
    quarter, info = run(excite_weight=0.25)
    full, info_full = run(excite_weight=1.0)
    assert torch.equal(default, quarter) and info_default["A-STAR excite weight"] == "0.25"
    assert (quarter - full).abs().max() > 1e-5 and info_full["A-STAR excite weight"] == "1"
    for made, text in ((quarter, info), (full, {k: v for k, v in info_full.items() if "excite" not in k})):
        pasted = SegretParams.from_infotext(text)
        assert pasted.method == "both"
        again, _ = run(excite_weight=pasted.excite_weight, step_rule=pasted.step_rule)
        assert torch.equal(again, made)
