"""A-STAR in the real AUTOMATIC1111 WebUI v1.10.1 (tiny random SD1 checkpoints, CPU), driven over its HTTP API.

Skipped unless SEGRET_WEBUI_DIR names the WebUI tree (see conftest.py); .ci/run sets it up and runs these.
"""

from __future__ import annotations

import re
import threading
import time

import pytest

PROMPT = "a photo of a cat and a dog"
# "steady" refines every step, so these tests see every sampler step refined; the default rule ("early") has
# test_infotext_names_the_step_rule_and_v1_requests_reproduce_v1
ON = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40}]}}
OFF = {"A-STAR": {"args": [{"enabled": False, "concepts": "cat, dog"}]}}


def request(**kw) -> dict:
    body = {"prompt": PROMPT, "negative_prompt": "", "steps": 6, "width": 128, "height": 128, "seed": 7,
            "sampler_name": "Euler a", "cfg_scale": 7, "batch_size": 1, "n_iter": 1, "alwayson_scripts": {}}
    body.update(kw)
    return body


def params(res, i=0) -> dict[str, str]:
    """Infotext of image i as a dict (the WebUI's own parser lives in the server; this one reads k: v pairs,
    quoted values included)."""
    text = res["info"]["infotexts"][i].split("\n")[-1]
    pairs = re.findall(r'\s*([\w \-/\[\]]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)', text)
    return {k: v.strip('"').replace('\\"', '"') for k, v in pairs}


def record(webui, case: str, info: dict) -> None:
    """What each case produced, for people reading the run: WORK/results.log."""
    keep = {k: v for k, v in info.items() if k.startswith("A-STAR ") and k not in ("A-STAR concepts",)}
    with open(webui.work / "results.log", "a") as f:
        f.write(f"{case}: {keep}\n")


def result_counts(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) steps", text)]


@pytest.fixture(scope="module")
def plain(webui):
    """The first request of the session, before A-STAR ever ran."""
    return webui.txt2img(**request())


def test_enabled_refines_and_disabled_stays_bit_identical(webui, plain):
    on = webui.txt2img(**request(alwayson_scripts=ON))
    info = params(on)
    record(webui, "enabled", info)
    assert info["A-STAR concepts"] == "cat, dog", info
    assert "A-STAR warnings" not in info, info
    assert result_counts(info["A-STAR result"]) == [(6, 6)], info
    assert on["pixels"][0] != plain["pixels"][0]
    off = webui.txt2img(**request(alwayson_scripts=OFF))
    assert "A-STAR" not in off["info"]["infotexts"][0]
    assert off["pixels"][0] == plain["pixels"][0]  # bit-identical: nothing of A-STAR is left in the model
    again = webui.txt2img(**request())
    assert again["pixels"][0] == plain["pixels"][0]


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M", "DDIM", "UniPC", "Heun", "DPM adaptive"])
def test_samplers_refine_every_step(webui, sampler):
    res = webui.txt2img(**request(sampler_name=sampler, alwayson_scripts=ON))
    info = params(res)
    record(webui, sampler, info)
    assert "A-STAR warnings" not in info, info
    (done, total), = result_counts(info["A-STAR result"])
    assert done == total >= 6, info  # DDIM/UniPC run 7 timesteps at 6 steps; DPM adaptive its own count


def test_infotext_names_the_step_rule_and_v1_requests_reproduce_v1(webui):
    """The default rule is written into the infotext; a v1 request (what an infotext without the key pastes as)
    writes none, as v1 did, and gives another image; A&E keeps v1 (no key)."""
    def run(**args):
        res = webui.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [{"concepts": "cat, dog", **args}]}}))
        return res, params(res)

    early, info = run()
    record(webui, "default step rule", info)
    assert info["A-STAR step rule"] == "early" and info["A-STAR step size"] == "30", info
    assert result_counts(info["A-STAR result"]) == [(3, 6)], info  # the first half of the steps
    # a dict without a method: the default method, Both at excite weight 0.25, written out
    assert info["A-STAR method"] == "Both" and info["A-STAR excite weight"] == "0.25", info
    astar, info_a = run(method="A-STAR")  # A-STAR's infotext has no method key, as in every version
    assert "A-STAR method" not in info_a and info_a["A-STAR step rule"] == "early", info_a
    assert astar["pixels"][0] != early["pixels"][0]
    # images made with the previous defaults (steady, balanced) name them, and their requests reproduce them
    steady, info_s = run(step_rule="steady")
    assert info_s["A-STAR step rule"] == "steady" and result_counts(info_s["A-STAR result"]) == [(6, 6)], info_s
    assert steady["pixels"][0] != early["pixels"][0]
    assert run(step_rule="steady")[0]["pixels"][0] == steady["pixels"][0]
    balanced, info_b = run(step_rule="balanced")
    assert info_b["A-STAR step rule"] == "balanced" and result_counts(info_b["A-STAR result"]) == [(6, 6)], info_b
    assert balanced["pixels"][0] != steady["pixels"][0]
    assert run(step_rule="balanced")[0]["pixels"][0] == balanced["pixels"][0]
    v1, info_v1 = run(step_rule="v1", step_size=10)
    assert "A-STAR step rule" not in info_v1 and info_v1["A-STAR step size"] == "10", info_v1
    assert result_counts(info_v1["A-STAR result"]) == [(6, 6)], info_v1
    assert v1["pixels"][0] != steady["pixels"][0]
    _, info_aae = run(method="Attend-and-Excite")
    assert "A-STAR step rule" not in info_aae and info_aae["A-STAR method"] == "Attend-and-Excite", info_aae


def test_attribute_binding_through_the_api_writes_and_reproduces_its_infotext(webui):
    """bind_weight in the API dict: the image changes, the infotext carries the weight and L_bind, and the
    request rebuilt from the infotext's values gives the same pixels; weight 0 writes no key."""
    prompt = "a photo of a black cat and a white dog"

    def run(**args):
        res = webui.txt2img(**request(prompt=prompt, alwayson_scripts={
            "A-STAR": {"args": [{"concepts": "black cat, white dog", "step_rule": "steady", **args}]}}))
        return res, params(res)

    off, info_off = run()
    assert "A-STAR bind weight" not in info_off, info_off
    on, info = run(bind_weight=2)
    record(webui, "attribute binding", info)
    assert info["A-STAR bind weight"] == "2" and "L_bind" in info["A-STAR result"], info
    assert "A-STAR warnings" not in info, info
    assert on["pixels"][0] != off["pixels"][0]
    again, _ = run(bind_weight=float(info["A-STAR bind weight"]), step_size=float(info["A-STAR step size"]))
    assert again["pixels"][0] == on["pixels"][0]


def test_excite_weight_in_both_through_the_api_writes_and_reproduces_its_infotext(webui):
    """excite_weight (Both's weight of Attend-and-Excite's term) in the API dict: the default, 0.25, is written;
    1 (Both's weight before) changes the image and is written; the request rebuilt from the infotext gives the
    same pixels."""
    prompt = "a photo of a cat and a dog"

    def run(**args):
        res = webui.txt2img(**request(prompt=prompt, alwayson_scripts={
            "A-STAR": {"args": [{"concepts": "cat, dog", "method": "both", "step_rule": "steady", **args}]}}))
        return res, params(res)

    quarter, info = run()
    assert info["A-STAR excite weight"] == "0.25" and info["A-STAR method"] == "Both", info
    assert "A-STAR warnings" not in info, info
    full, info_full = run(excite_weight=1.0)
    assert info_full["A-STAR excite weight"] == "1", info_full
    assert quarter["pixels"][0] != full["pixels"][0]
    again, _ = run(excite_weight=float(info["A-STAR excite weight"]))
    assert again["pixels"][0] == quarter["pixels"][0]


@pytest.mark.parametrize("sampler", ["DDIM", "PLMS", "DDIM CFG++"])
@pytest.mark.parametrize("steps", [4, 8, 20])
def test_timestep_samplers_refine_every_step_they_run(webui, sampler, steps):
    """The WebUI's DDIM, PLMS and DDIM CFG++ run len(timesteps) - 1 model steps (3 at 4, 7 at 8, 19 at 20;
    6 at 6, the test above): each is refined and the count says so (it said 7/8 before)."""
    res = webui.txt2img(**request(sampler_name=sampler, steps=steps, alwayson_scripts=ON))
    info = params(res)
    record(webui, f"{sampler} {steps} steps", info)
    assert "A-STAR warnings" not in info, info
    runs = len(range(0, 1000, 1000 // steps)) - 1
    assert result_counts(info["A-STAR result"]) == [(runs, runs)], info


def test_hires_fix_refines_both_passes(webui):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "hires": True}]}}
    res = webui.txt2img(**request(enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
                                  hr_second_pass_steps=4, alwayson_scripts=args))
    info = params(res)
    record(webui, "hires fix", info)
    assert "A-STAR warnings" not in info, info
    assert "first pass: 6/6 steps" in info["A-STAR result"], info
    assert re.search(r"hires pass: (\d+)/\1 steps", info["A-STAR result"]), info
    assert res["parameters"]["enable_hr"] is True


def test_batch_count_infotext_per_batch(webui):
    res = webui.txt2img(**request(prompt="a cat and a bird", n_iter=2, alwayson_scripts=ON,
                                  prompt_styles=[]))
    first, second = params(res, 0), params(res, 1)
    record(webui, "batch count 2, image 1", first)
    record(webui, "batch count 2, image 2", second)
    for info in (first, second):
        assert "'dog' is not in the prompt" in info["A-STAR warnings"], info
        assert info["A-STAR result"].count("first pass") == 1, info


def test_lora_sequence_every_request_refined(webui):
    """Fresh LoRA set, same again, weight 0.7, removed, added back: every image refined (issue 6, item 1)."""
    for prompt in (f"{PROMPT} <lora:tiny-lora:1>", f"{PROMPT} <lora:tiny-lora:1>", f"{PROMPT} <lora:tiny-lora:0.7>",
                   PROMPT, f"{PROMPT} <lora:tiny-lora:1>"):
        res = webui.txt2img(**request(prompt=prompt, alwayson_scripts=ON))
        info = params(res)
        record(webui, f"LoRA: {prompt[len(PROMPT):].strip() or 'none'}", info)
        assert "A-STAR warnings" not in info, (prompt, info)
        assert result_counts(info["A-STAR result"]) == [(6, 6)], (prompt, info)
        if "lora" in prompt:
            assert "Lora hashes" in info, info


@pytest.mark.parametrize("batch_size", [1, 2])
def test_cfg_split_hook_uses_the_cfg_layout(webui, batch_size):
    """A SEG-like hook (Incantations' Smoothed Energy Guidance, see tests/integration/cfg_split_hook): it splits
    the batch into two halves and writes a smoothed query into a view in place. Batch size 1: the
    conditional-only call has one row (ValueError), the CFG layout one image per half (the in-place write that
    autograd forbids, which A-STAR's call runs without recording); batch size 2: the conditional-only call
    meets the in-place error. Both refine every step, in the CFG layout, and the layout is kept for the next
    batch."""
    hook = {"CFG split hook": {"args": [True]}}
    res = webui.txt2img(**request(alwayson_scripts={**ON, **hook}, n_iter=2, batch_size=batch_size))
    infos = [params(res, i) for i in range(2 * batch_size)]
    for i, info in enumerate(infos):
        record(webui, f"SEG-like hook, batch size {batch_size}, image {i + 1}", info)
    error = "ValueError: not enough values" if batch_size == 1 else "RuntimeError: Output 0 of ReshapeAlias"
    for info in infos[:batch_size]:
        assert f"conditional-only refinement call failed ({error}" in info["A-STAR warnings"], info
        assert "switched off" not in info["A-STAR warnings"], info
    for info in infos:
        assert info["A-STAR result"].startswith("first pass: 6/6 steps (CFG batch layout"), info
    for info in infos[batch_size:]:
        assert "A-STAR warnings" not in info, info
    hooked = webui.txt2img(**request(alwayson_scripts=hook, n_iter=2, batch_size=batch_size))
    assert len(res["pixels"]) == len(hooked["pixels"]) == 2 * batch_size
    assert all(a != b for a, b in zip(res["pixels"], hooked["pixels"], strict=True))  # refined images
    # nothing of the hook's run or of A-STAR is left: the next plain request is as before
    assert result_counts(params(webui.txt2img(**request(alwayson_scripts=ON)))["A-STAR result"]) == [(6, 6)]


def test_refiner_switch_stops_cleanly(webui):
    log_before = len(webui.log_text())
    models = [m["title"] for m in webui.get("/sdapi/v1/sd-models")]
    current = webui.get("/sdapi/v1/options")["sd_model_checkpoint"]
    refiner = next(m for m in models if m != current)
    res = webui.txt2img(**request(steps=8, refiner_checkpoint=refiner, refiner_switch_at=0.5, alwayson_scripts=ON))
    info = params(res)
    record(webui, "refiner switch at 0.5", info)
    assert "Refiner" in info, info
    assert info["A-STAR warnings"].startswith("the model was switched during sampling (the SDXL refiner)"), info
    (done, total), = result_counts(info["A-STAR result"])
    assert 0 < done < total == 8, info
    assert "Traceback" not in webui.log_text()[log_before:]
    # the next request is back on the main model and refined again
    webui.post("/sdapi/v1/options", {"sd_model_checkpoint": current})
    assert result_counts(params(webui.txt2img(**request(alwayson_scripts=ON)))["A-STAR result"]) == [(6, 6)]


def test_bad_args_give_a_message_and_an_image(webui, plain):
    res = webui.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [{"concepts": "cat, dog", "step_siz": 3}]}}))
    assert len(res["images"]) == 1
    record(webui, "bad args", params(res))
    assert "not applied: unknown A-STAR setting(s): step_siz" in params(res)["A-STAR warnings"]
    assert res["pixels"][0] == plain["pixels"][0]
    res = webui.txt2img(**request(alwayson_scripts={"A-STAR": {"args": [True, "cat, dog", "heavy"]}}))
    assert len(res["images"]) == 1 and "not applied" in params(res)["A-STAR warnings"]


def interrupted(server, body: dict) -> dict:
    """The response to txt2img `body`, interrupted through the API once sampling reached step 2."""
    out = {}

    def run():
        out["res"] = server.txt2img(**body)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.time() + 300
    while time.time() < deadline:
        state = server.get("/sdapi/v1/progress?skip_current_image=true")["state"]
        if state.get("sampling_step", 0) >= 2:
            break
        time.sleep(0.2)
    server.post("/sdapi/v1/interrupt")
    t.join(300)
    assert not t.is_alive() and len(out["res"]["images"]) == 1
    record(server, "interrupted", params(out["res"]))
    return out["res"]


def test_interrupt_then_clean_request(webui, plain):
    res = interrupted(webui, request(steps=150, alwayson_scripts=ON))
    (done, total), = result_counts(params(res)["A-STAR result"])
    assert done < total == 150
    # nothing left hooked: a plain request is bit-identical, an enabled one refines every step
    assert webui.txt2img(**request())["pixels"][0] == plain["pixels"][0]
    assert result_counts(params(webui.txt2img(**request(alwayson_scripts=ON)))["A-STAR result"]) == [(6, 6)]


def xyz_args(axis_index: int, values: str) -> list:
    return [axis_index, values, [], 0, "", [], 0, "", [], True, False, False, False, False, False, False, 0, False]


def astar_axis(webui, label="[A-STAR] Step size") -> int:
    info = next(s for s in webui.get("/sdapi/v1/script-info") if s["name"] == "x/y/z plot" and not s["is_img2img"])
    return info["args"][0]["choices"].index(label)


def xyz_check(webui, index: int) -> None:
    res = webui.txt2img(**request(script_name="x/y/z plot", script_args=xyz_args(index, "10, 60"),
                                  alwayson_scripts=ON))
    texts = res["info"]["infotexts"]
    for t in texts:
        record(webui, f"X/Y/Z axis {index}", params({"info": {"infotexts": [t]}}))
    assert len(res["images"]) >= 1, texts  # the grid (the cells only with "include lone images")
    sizes = {params({"info": {"infotexts": [t]}}).get("A-STAR step size") for t in texts}
    assert {"10", "60"} <= sizes, texts
    assert all("A-STAR warnings" not in t for t in texts), texts


def reload_ui(webui) -> None:
    """Settings -> "Reload UI": the button's gradio event (js restart_reload) runs shared.state.request_restart;
    returns once the new app answers."""
    config = webui.get("/config")
    fn_index = next(i for i, d in enumerate(config["dependencies"]) if d.get("js") == "restart_reload")
    starts = webui.log_text().count("Startup time:")
    webui.post("/run/predict", {"fn_index": fn_index, "data": [], "session_hash": "segret-test"})
    webui.wait_for_log("Startup time:", starts + 1, timeout=600)
    for _ in range(100):  # the API answers again once the new app is up
        try:
            webui.get("/sdapi/v1/options")
            break
        except Exception:
            time.sleep(0.5)


def test_xyz_axis_before_and_after_reload_ui(webui):
    index = astar_axis(webui)
    xyz_check(webui, index)
    reload_ui(webui)
    assert astar_axis(webui) == index
    assert "[A-STAR] Segregation weight" in str(webui.get("/config"))
    xyz_check(webui, index)


LONG_PROMPT = "a cat " + " ".join(["blue"] * 140) + " and a dog"


@pytest.mark.parametrize("prompt", ["a photo of a cat BREAK a dog", "a photo of a cat AND a photo of a dog",
                                    LONG_PROMPT], ids=["break", "and", "150-tokens"])
def test_concepts_past_the_first_chunk_and_in_and_subprompts(webui, prompt):
    """The WebUI's own tokenize_line / multicond conditioning: 'dog' in chunk 2, in sub-prompt 2, at token ~145."""
    res = webui.txt2img(**request(prompt=prompt, alwayson_scripts=ON))
    info = params(res)
    record(webui, f"prompt {prompt[:40]}", info)
    assert "A-STAR warnings" not in info, info
    assert result_counts(info["A-STAR result"]) == [(6, 6)], info


def test_prompt_editing_refines_each_word_where_it_is(webui):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog, bird", "step_rule": "steady"}]}}
    res = webui.txt2img(**request(prompt="a photo of a [cat:dog:0.5] and a bird", alwayson_scripts=args))
    info = params(res)
    record(webui, "prompt editing", info)
    # the WebUI's schedule at 6 steps: [[3, '... cat ...'], [6, '... dog ...']], used while step <= end_at_step
    assert "'cat' is in the prompt only at steps 1-4 of 6" in info["A-STAR warnings"], info
    assert "'dog' is in the prompt only at steps 5-6 of 6" in info["A-STAR warnings"], info
    assert result_counts(info["A-STAR result"]) == [(6, 6)], info


def test_attend_and_excite_method(webui, plain):
    args = {"A-STAR": {"args": [{"concepts": "cat, dog", "method": "Attend-and-Excite"}]}}
    res = webui.txt2img(**request(alwayson_scripts=args))
    info = params(res)
    record(webui, "attend-and-excite", info)
    assert info.get("A-STAR method") == "Attend-and-Excite", info
    assert "L_A&E" in info["A-STAR result"] and result_counts(info["A-STAR result"]) == [(3, 6)], info
    assert res["pixels"][0] != plain["pixels"][0]
