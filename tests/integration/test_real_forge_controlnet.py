"""A-STAR with a unit of Forge's built-in ControlNet (sd_forge_controlnet) in the real Forge: the refinement call
gets the same control residuals as the sampling call. A tiny random ControlNet and the tiny SD1.5 checkpoint
tiny-sd15_cnet, whose output blocks have cross-attention at the maps' level, where the residuals arrive
(tests/integration/make_forge_controlnet.py); preprocessor none, a fixed input image.

The module switches the server to that checkpoint and back at its end. Skipped unless SEGRET_FORGE_DIR names the
Forge tree (see conftest.py), like test_real_forge.py.
"""

from __future__ import annotations

import base64
import io
import re

import pytest

from tests.integration.test_real_forge import ON, refined_all, request
from tests.integration.test_real_webui import params, record

CHECKPOINT = "tiny-sd15_cnet"
MODEL = "tiny-controlnet"


def hint_png() -> str:
    """The unit's input image: fixed shapes (a bright square and a dark band) on grey, 128 px, base64 PNG."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (128, 128), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.rectangle([16, 16, 64, 64], fill=(255, 255, 255))
    draw.rectangle([0, 88, 127, 108], fill=(10, 10, 10))
    draw.ellipse([76, 20, 120, 70], fill=(250, 40, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def cn(forge):
    """The server with the checkpoint for the ControlNet loaded; the checkpoint before it is put back after."""
    before = forge.get("/sdapi/v1/options")["sd_model_checkpoint"]
    titles = [m["title"] for m in forge.get("/sdapi/v1/sd-models") if m["model_name"] == CHECKPOINT]
    assert titles, f"no {CHECKPOINT} checkpoint: run tests/integration/setup_forge.sh"
    forge.post("/sdapi/v1/options", {"sd_model_checkpoint": titles[0]})
    try:
        yield forge
    finally:
        forge.post("/sdapi/v1/options", {"sd_model_checkpoint": before})


@pytest.fixture(scope="module")
def model_name(cn) -> str:
    names = [n for n in cn.get("/controlnet/model_list")["model_list"] if n.startswith(MODEL + " [")]
    assert names, "the tiny ControlNet is not listed: run tests/integration/setup_forge.sh"
    return names[0]


def unit_args(model_name: str, **kw) -> dict:
    return {"enabled": True, "module": "None", "model": model_name, "image": hint_png(), "weight": 1.0,
            "resize_mode": "Just Resize", "processor_res": 128, "guidance_start": 0.0, "guidance_end": 1.0,
            "control_mode": "Balanced", "pixel_perfect": False, "save_detected_map": False, **kw}


def unit(model_name: str, **kw) -> dict:
    return {"ControlNet": {"args": [unit_args(model_name, **kw)]}}


def first_loss(info: dict) -> str:
    """The segregation loss at the first refined step, as the infotext prints it (3 decimals)."""
    (value,) = re.findall(r"first pass: \d+/\d+ steps, L_seg ([\d.]+)->", info["A-STAR result"])
    return value


def test_controlnet_residuals_enter_the_refinement_call(cn, model_name):
    """At the first step the latent is the same with and without the unit, so a first-step loss that differs
    can only come from the residuals in the refinement call; the unit's timestep range switches them as in
    sampling (start 0.5: none at step 1; end 0.5: there at step 1, gone later)."""
    before = cn.txt2img(**request())  # no ControlNet, no A-STAR
    assert params(before)["Model"] == CHECKPOINT, params(before)
    cn_only = cn.txt2img(**request(alwayson_scripts=unit(model_name)))
    assert "Current ControlNet ControlNetPatcher" in cn.log_text()  # Forge's loader took the tiny file
    assert cn_only["pixels"][0] != before["pixels"][0] and len(cn_only["images"]) == 1
    without = params(cn.txt2img(**request(alwayson_scripts=ON)))
    res = cn.txt2img(**request(alwayson_scripts={**ON, **unit(model_name)}))
    info = params(res)
    record(cn, "ControlNet unit (weight 1, steps 0-1)", info)
    assert refined_all(info) == (6, 6)
    assert first_loss(info) != first_loss(without), (info, without)
    assert res["pixels"][0] != cn_only["pixels"][0]  # A-STAR moved the latent under the unit

    late = params(cn.txt2img(**request(alwayson_scripts={**ON, **unit(model_name, guidance_start=0.5)})))
    record(cn, "ControlNet unit (steps 0.5-1)", late)
    early = params(cn.txt2img(**request(alwayson_scripts={**ON, **unit(model_name, guidance_end=0.5)})))
    record(cn, "ControlNet unit (steps 0-0.5)", early)
    assert refined_all(late) == refined_all(early) == (6, 6)
    assert first_loss(late) == first_loss(without), (late, without)
    assert first_loss(early) == first_loss(info), (early, info)
    assert late["A-STAR result"] != without["A-STAR result"]  # the residuals came in at the later steps
    assert early["A-STAR result"] != info["A-STAR result"]  # and went out again

    # nothing left behind: plain requests as before A-STAR ran with the unit, with and without the unit
    assert cn.txt2img(**request(alwayson_scripts=unit(model_name)))["pixels"][0] == cn_only["pixels"][0]
    assert cn.txt2img(**request())["pixels"][0] == before["pixels"][0]


def test_controlnet_batch_of_two_refines_both_images(cn, model_name):
    res = cn.txt2img(**request(batch_size=2, alwayson_scripts={**ON, **unit(model_name)}))
    first, second = params(res, 0), params(res, 1)
    record(cn, "ControlNet unit, batch size 2", first)
    assert refined_all(first) == refined_all(second) == (6, 6)
    alone = params(cn.txt2img(**request(batch_size=2, alwayson_scripts=ON)))
    assert first_loss(first) != first_loss(alone), (first, alone)


def test_controlnet_timestep_range_with_ddim(cn, model_name):
    """DDIM hands over timesteps (converted to sigmas for the model call): the unit's range still switches the
    residuals at the same steps as in sampling."""
    without = params(cn.txt2img(**request(sampler_name="DDIM", alwayson_scripts=ON)))
    full = params(cn.txt2img(**request(sampler_name="DDIM", alwayson_scripts={**ON, **unit(model_name)})))
    late = params(cn.txt2img(**request(sampler_name="DDIM",
                                       alwayson_scripts={**ON, **unit(model_name, guidance_start=0.5)})))
    record(cn, "ControlNet unit, DDIM", full)
    assert refined_all(full) == refined_all(late) == refined_all(without)
    assert first_loss(full) != first_loss(without) == first_loss(late), (full, late, without)


def test_controlnet_hires_fix_refines_both_passes(cn, model_name):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40, "hires": True}]}}
    res = cn.txt2img(**request(enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
                               hr_second_pass_steps=4, hr_additional_modules=["Use same choices"],
                               alwayson_scripts={**args, **unit(model_name)}))
    info = params(res)
    record(cn, "ControlNet unit, hires fix", info)
    assert "A-STAR warnings" not in info, info
    assert "first pass: 6/6 steps" in info["A-STAR result"], info
    assert re.search(r"hires pass: (\d+)/\1 steps", info["A-STAR result"]), info


def test_two_controlnet_units(cn, model_name):
    """Two units: Forge chains them (the newest first, each adding the previous one's residuals to its own).
    The newest starts at 0.5, so at the first step only the earlier one acts: the refinement call must go
    down the chain to get its residuals."""
    without = params(cn.txt2img(**request(alwayson_scripts=ON)))
    one = params(cn.txt2img(**request(alwayson_scripts={**ON, **unit(model_name)})))
    units = {"ControlNet": {"args": [unit_args(model_name), unit_args(model_name, guidance_start=0.5)]}}
    two = params(cn.txt2img(**request(alwayson_scripts={**ON, **units})))
    record(cn, "two ControlNet units (steps 0-1, 0.5-1)", two)
    assert refined_all(two) == (6, 6)
    assert first_loss(two) == first_loss(one) != first_loss(without), (two, one, without)
    assert two["A-STAR result"] != one["A-STAR result"]  # the second unit from the middle on


def test_controlnet_low_vram_refines_every_step(cn, model_name):
    """Low VRAM recomputes the UNet's blocks in the backward pass; the residuals are added between them."""
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40, "low_vram": True}]}}
    info = params(cn.txt2img(**request(alwayson_scripts={**args, **unit(model_name)})))
    record(cn, "ControlNet unit, low VRAM", info)
    assert refined_all(info) == (6, 6)
    full = params(cn.txt2img(**request(alwayson_scripts={**ON, **unit(model_name)})))
    assert first_loss(info) == first_loss(full), (info, full)  # the same maps, recomputed or not
