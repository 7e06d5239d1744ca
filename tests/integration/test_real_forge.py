"""A-STAR in the real Stable Diffusion WebUI Forge (f2.0.1v1.10.1; a tiny random SD1.5-shaped checkpoint, CPU),
driven over its HTTP API.

Skipped unless SEGRET_FORGE_DIR names the Forge tree (see conftest.py); .ci/run sets it up and runs these.
What each case produced goes to .forge-work/results.log.
"""

from __future__ import annotations

import base64
import io
import re

import pytest

from tests.integration.test_real_webui import interrupted, params, record, result_counts, xyz_args

PROMPT = "a photo of a cat and a dog"
# "steady" refines every step, so these tests see every sampler step refined; the default rule ("early") refines
# the first half: DEFAULT and the tests that use it
ON = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40}]}}
DEFAULT = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_size": 40}]}}
OFF = {"A-STAR": {"args": [{"enabled": False, "concepts": "cat, dog"}]}}


def request(**kw) -> dict:
    body = {"prompt": PROMPT, "negative_prompt": "", "steps": 6, "width": 128, "height": 128, "seed": 7,
            "sampler_name": "Euler", "scheduler": "Automatic", "cfg_scale": 7, "batch_size": 1, "n_iter": 1,
            "alwayson_scripts": {}}
    body.update(kw)
    return body


def refined_all(info: dict) -> tuple[int, int]:
    assert "A-STAR warnings" not in info, info
    (done, total), = result_counts(info["A-STAR result"])
    assert done == total > 0, info
    return done, total


@pytest.fixture(scope="module")
def plain(forge):
    """The first request of the session, before A-STAR ever ran."""
    return forge.txt2img(**request())


def test_enabled_refines_and_disabled_stays_bit_identical(forge, plain):
    on = forge.txt2img(**request(alwayson_scripts=DEFAULT))
    info = params(on)
    record(forge, "enabled (Euler), default rule", info)
    assert info["A-STAR concepts"] == "cat, dog", info
    assert info["A-STAR step rule"] == "early", info  # the default rule, named in the infotext
    assert "A-STAR warnings" not in info and result_counts(info["A-STAR result"]) == [(3, 6)], info  # first half
    steady = params(forge.txt2img(**request(alwayson_scripts=ON)))
    assert steady["A-STAR step rule"] == "steady" and refined_all(steady) == (6, 6), steady
    assert on["pixels"][0] != plain["pixels"][0]
    off = forge.txt2img(**request(alwayson_scripts=OFF))
    assert "A-STAR" not in off["info"]["infotexts"][0]
    assert off["pixels"][0] == plain["pixels"][0]  # bit-identical: no hook or swapped weight left
    assert forge.txt2img(**request())["pixels"][0] == plain["pixels"][0]


@pytest.mark.parametrize("sampler", ["Euler", "DPM++ 2M", "Heun", "DDIM", "UniPC"])
def test_samplers_refine_every_step(forge, sampler):
    res = forge.txt2img(**request(sampler_name=sampler, alwayson_scripts=ON))
    info = params(res)
    record(forge, sampler, info)
    assert refined_all(info)[1] >= 6, info  # UniPC runs 7 at 6 steps


@pytest.mark.parametrize("steps", [4, 6, 8, 20])
def test_ddim_refines_every_step_it_runs(forge, steps):
    """Forge's DDIM runs len(timesteps) - 1 model steps (3 at 4, 6 at 6, 7 at 8, 19 at 20); each is refined
    and the count says so (it said 3/4 before)."""
    info = params(forge.txt2img(**request(sampler_name="DDIM", steps=steps, alwayson_scripts=ON)))
    record(forge, f"DDIM {steps} steps", info)
    runs = len(range(0, 1000, 1000 // steps)) - 1
    assert refined_all(info) == (runs, runs), info


def test_batch_of_two_refines_both_images(forge, plain):
    res = forge.txt2img(**request(batch_size=2, alwayson_scripts=ON))
    first, second = params(res, 0), params(res, 1)
    record(forge, "batch size 2", first)
    assert refined_all(first) == refined_all(second) == (6, 6)
    assert res["pixels"][0] != plain["pixels"][0]


def test_hires_fix_refines_both_passes(forge):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "hires": True}]}}
    res = forge.txt2img(**request(enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
                                  hr_second_pass_steps=4, hr_additional_modules=["Use same choices"],
                                  alwayson_scripts=args))
    info = params(res)
    record(forge, "hires fix", info)
    assert "A-STAR warnings" not in info, info
    assert "first pass: 6/6 steps" in info["A-STAR result"], info
    assert re.search(r"hires pass: (\d+)/\1 steps", info["A-STAR result"]), info


def test_img2img_refines(forge, plain):
    init = base64.b64encode(_png(plain["pixels"][0])).decode()
    body = request(init_images=[init], denoising_strength=0.75, alwayson_scripts=ON)
    res = forge.img2img(**body)
    info = params(res)
    record(forge, "img2img", info)
    refined_all(info)
    off = forge.img2img(**{**body, "alwayson_scripts": OFF})
    assert off["pixels"][0] != res["pixels"][0]


def test_api_list_args_and_infotext(forge):
    res = forge.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [True, "cat, dog", 1, 1, 40]}}))
    info = params(res)
    record(forge, "API list args", info)
    # no step rule in the list: the method's, "early", which refines steps 1-3 of 6
    assert info["A-STAR step size"] == "40" and info["A-STAR step rule"] == "early", info
    assert result_counts(info["A-STAR result"]) == [(3, 6)], info
    # the infotext reads back through Forge's own parser
    parsed = forge.post("/sdapi/v1/png-info", {"image": "data:image/png;base64," + res["images"][0]})
    assert parsed["parameters"].get("A-STAR concepts") == "cat, dog", parsed["parameters"]


def test_bad_args_give_a_message_and_an_image(forge, plain):
    res = forge.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [{"concepts": "cat, dog", "step_siz": 3}]}}))
    record(forge, "bad args", params(res))
    assert "not applied: unknown A-STAR setting(s): step_siz" in params(res)["A-STAR warnings"]
    assert res["pixels"][0] == plain["pixels"][0]


def test_interrupt_then_clean_request(forge, plain):
    interrupted(forge, request(steps=150, alwayson_scripts=ON))
    # nothing left hooked or swapped: a plain request is bit-identical, an enabled one refines every step
    assert forge.txt2img(**request())["pixels"][0] == plain["pixels"][0]
    assert refined_all(params(forge.txt2img(**request(alwayson_scripts=ON)))) == (6, 6)


def _png(pixels: bytes) -> bytes:
    """The PNG of decoded pixels as webui_process.pixels returns them (mode + size + raw bytes)."""
    from PIL import Image

    mode = "RGBA" if pixels.startswith(b"RGBA") else "RGB"
    size_text = pixels[len(mode):pixels.index(b")") + 1].decode()
    w, h = (int(v) for v in size_text.strip("()").split(","))
    img = Image.frombytes(mode, (w, h), pixels[len(mode) + len(size_text):])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_capture_through_another_extensions_attn2_patch(forge, plain):
    """An extension with attn2 replace patches (like the built-in IP-Adapter): Forge calls the patch instead of
    attn2.forward, so the maps are read inside it; the patch still computes the output."""
    hook = {"Forge attn2 hook": {"args": [True]}}
    before = forge.log_text().count("[Forge attn2 hook] patch calls:")
    res = forge.txt2img(**request(alwayson_scripts={**ON, **hook}))
    info = params(res)
    record(forge, "attn2 replace patch (IP-Adapter stand-in)", info)
    assert refined_all(info) == (6, 6)
    forge.wait_for_log("[Forge attn2 hook] patch calls:", before + 1, timeout=30)
    calls = int(re.findall(r"\[Forge attn2 hook\] patch calls: (\d+)", forge.log_text())[-1])
    assert calls > 6 * 4, calls  # every sampling call and every refinement call went through the patch
    assert forge.txt2img(**request())["pixels"][0] == plain["pixels"][0]


def test_low_vram_refines_every_step(forge):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40, "low_vram": True}]}}
    info = params(forge.txt2img(**request(alwayson_scripts=args)))
    record(forge, "low VRAM (checkpointed blocks)", info)
    assert refined_all(info) == (6, 6)


def test_lora_refines_every_step(forge):
    """A LoRA that Forge merges into the weights (under inference mode): the gradient guard swaps them."""
    for prompt in (f"{PROMPT} <lora:tiny-lora:1>", f"{PROMPT} <lora:tiny-lora:0.7>", PROMPT):
        info = params(forge.txt2img(**request(prompt=prompt, alwayson_scripts=ON)))
        record(forge, f"LoRA: {prompt[len(PROMPT):].strip() or 'none'}", info)
        assert refined_all(info) == (6, 6), (prompt, info)
        if "lora" in prompt:
            assert "Lora hashes" in info, info


def test_online_lora_refines_every_step(forge):
    """A '(fp16 LoRA)' low-bits mode: the LoRA is merged into each weight per call, under inference mode (Forge
    applies LoRAs online only to low-bit weights, so the UNet is stored in float8 here)."""
    memory = forge.get("/sdapi/v1/options")["forge_inference_memory"]
    # Forge re-reads its loading parameters only when a memory or module option changes with it
    forge.post("/sdapi/v1/options", {"forge_unet_storage_dtype": "float8-e4m3fn (fp16 LoRA)",
                                     "forge_inference_memory": memory + 1})
    try:
        before = forge.log_text().count("on_the_fly = True")
        info = params(forge.txt2img(**request(prompt=f"{PROMPT} <lora:tiny-lora:1>", alwayson_scripts=ON)))
        record(forge, "online LoRA (float8-e4m3fn (fp16 LoRA))", info)
        assert forge.log_text().count("on_the_fly = True") > before, "the LoRA was not applied online"
        assert refined_all(info) == (6, 6)
    finally:
        forge.post("/sdapi/v1/options", {"forge_unet_storage_dtype": "Automatic", "forge_inference_memory": memory})


def test_xyz_step_size_axis(forge):
    info = next(s for s in forge.get("/sdapi/v1/script-info") if s["name"] == "x/y/z plot" and not s["is_img2img"])
    index = info["args"][0]["choices"].index("[A-STAR] Step size")
    res = forge.txt2img(**request(script_name="x/y/z plot", script_args=xyz_args(index, "10, 60"),
                                  alwayson_scripts=ON))
    texts = res["info"]["infotexts"]
    cells = [params({"info": {"infotexts": [t]}}) for t in texts]
    for cell in cells:
        record(forge, "X/Y/Z step size", cell)
    assert {"10", "60"} <= {c.get("A-STAR step size") for c in cells}, texts
    assert all("A-STAR warnings" not in c and result_counts(c["A-STAR result"]) == [(6, 6)]
               for c in cells if "A-STAR result" in c), texts


def test_batch_count_two_each_image_its_own_result(forge):
    res = forge.txt2img(**request(prompt="a cat and a bird", n_iter=2, alwayson_scripts=ON))
    first, second = params(res, 0), params(res, 1)
    record(forge, "batch count 2", first)
    for info in (first, second):
        assert "'dog' is not in the prompt" in info["A-STAR warnings"], info
        assert info["A-STAR result"].count("first pass") == 1, info


def test_layout_with_overlays_in_a_batch(forge):
    boxes = {"cat": [0.0, 0.0, 0.5, 1.0], "dog": [0.5, 0.1, 1.0, 0.9]}
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "layout": boxes, "layout_strength": 3,
                                 "show_maps": True}]}}
    res = forge.txt2img(**request(batch_size=2, alwayson_scripts=args))
    info = params(res, 1)
    record(forge, "layout + overlays, batch 2", info)
    assert "A-STAR warnings" not in info, info
    assert info["A-STAR layout"] == "cat: 0 0 0.5 1; dog: 0.5 0.1 1 0.9", info
    assert "in box" in info["A-STAR result"] and result_counts(info["A-STAR result"]) == [(6, 6)], info
    # the two images, then one overlay sheet per image, each with its own image's infotext
    infotexts = res["info"]["infotexts"]
    assert len(res["images"]) == 4 and len(infotexts) == 4, len(res["images"])
    assert infotexts[2] == infotexts[0] and infotexts[3] == infotexts[1] and infotexts[0] != infotexts[1]
