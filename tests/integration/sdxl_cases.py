"""The SDXL cases both real hosts run (test_real_webui_sdxl.py, test_real_forge_sdxl.py): each host module
defines the fixtures `xl` (the server with its tiny SDXL checkpoint loaded), `plain` (its first SDXL request) and
`on` (A-STAR on, Euler a), and a `Test...(SdxlCases)` class with its checkpoint names and request differences."""

from __future__ import annotations

import base64
import re
from typing import ClassVar

import pytest

from tests.integration.test_real_forge import _png
from tests.integration.test_real_webui import (
    astar_axis,
    interrupted,
    params,
    record,
    reload_ui,
    result_counts,
    xyz_args,
)

PROMPT = "a photo of a cat and a dog"
# "steady" refines every step, so the cases see every sampler step refined; DEFAULT leaves the rule out ("early")
ON = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40}]}}
DEFAULT = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_size": 40}]}}
OFF = {"A-STAR": {"args": [{"enabled": False, "concepts": "cat, dog"}]}}


def spread(pixels: bytes) -> int:
    """Max - min of the decoded pixel bytes (0 for a blank image)."""
    body = pixels[pixels.index(b")") + 1:]
    return max(body) - min(body)


def title(server, name: str) -> str:
    return next(m["title"] for m in server.get("/sdapi/v1/sd-models") if m["model_name"] == name)


def request(model_extra: dict | None = None, **kw) -> dict:
    body = {"prompt": PROMPT, "negative_prompt": "", "steps": 4, "width": 128, "height": 128, "seed": 7,
            "sampler_name": "Euler a", "cfg_scale": 7, "batch_size": 1, "n_iter": 1, "alwayson_scripts": {},
            **(model_extra or {})}
    body.update(kw)
    return body


class SdxlCases:
    MODEL: ClassVar[str]
    REFINER: ClassVar[str]
    REFINER_WORDS: ClassVar[str]  # how the host's switch warning names the refiner
    REQUEST_EXTRA: ClassVar[dict] = {}
    HIRES_EXTRA: ClassVar[dict] = {}

    @classmethod
    def request(cls, **kw) -> dict:
        return request(cls.REQUEST_EXTRA, **kw)

    @classmethod
    def refined_all(cls, info: dict) -> tuple[int, int]:
        """The one result of a generation that refined every step it ran, without a warning; (done, total)."""
        assert info["Model"] == cls.MODEL, info
        assert "A-STAR warnings" not in info, info
        (done, total), = result_counts(info["A-STAR result"])
        assert done == total > 0, info
        return done, total

    def test_sdxl_enabled_refines_and_disabled_stays_bit_identical(self, xl, plain, on):
        assert spread(plain["pixels"][0]) > 32  # the tiny model draws something (a blank image hides changes)
        info = params(on)
        record(xl, "SDXL enabled (Euler a)", info)
        assert info["A-STAR concepts"] == "cat, dog" and info["Model"] == self.MODEL, info
        assert self.refined_all(info) == (4, 4)
        assert on["pixels"][0] != plain["pixels"][0]
        off = xl.txt2img(**self.request(alwayson_scripts=OFF))
        assert "A-STAR" not in off["info"]["infotexts"][0]
        assert off["pixels"][0] == plain["pixels"][0]  # bit-identical to a request without A-STAR
        assert xl.txt2img(**self.request())["pixels"][0] == plain["pixels"][0]

    def test_sdxl_default_rule_refines_the_first_half(self, xl, on):
        res = xl.txt2img(**self.request(alwayson_scripts=DEFAULT))
        info = params(res)
        record(xl, "SDXL default rule (Euler a)", info)
        assert info["A-STAR step rule"] == "early" and "A-STAR warnings" not in info, info
        assert result_counts(info["A-STAR result"]) == [(2, 4)], info  # steps 1-2 of 4
        assert res["pixels"][0] != on["pixels"][0]  # steps 3-4 unrefined: another image than steady's


    @pytest.mark.parametrize(("sampler", "scheduler", "steps"),
                             [("DPM++ 2M", "Karras", 4), ("DDIM", "Automatic", 3)])
    def test_sdxl_samplers_refine_every_step(self, xl, sampler, scheduler, steps):
        """(Euler a: the test above.) DDIM runs len(timesteps) - 1 = 3 model steps at 4 steps, each refined."""
        res = xl.txt2img(**self.request(sampler_name=sampler, scheduler=scheduler, alwayson_scripts=ON))
        info = params(res)
        record(xl, f"SDXL {sampler} {scheduler}", info)
        assert self.refined_all(info) == (steps, steps), info
        assert "L_seg" in info["A-STAR result"], info


    def test_sdxl_batch_of_two_refines_both_images(self, xl, plain):
        res = xl.txt2img(**self.request(batch_size=2, alwayson_scripts=ON))
        first, second = params(res, 0), params(res, 1)
        record(xl, "SDXL batch size 2, image 1", first)
        record(xl, "SDXL batch size 2, image 2", second)
        assert self.refined_all(first) == self.refined_all(second) == (4, 4)
        assert res["pixels"][0] != plain["pixels"][0] and res["pixels"][0] != res["pixels"][1]


    def test_sdxl_hires_fix_refines_both_passes(self, xl):
        args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "hires": True}]}}
        res = xl.txt2img(**self.request(enable_hr=True, hr_scale=2, hr_upscaler="Latent", denoising_strength=0.5,
                                   hr_second_pass_steps=4, alwayson_scripts=args, **self.HIRES_EXTRA))
        info = params(res)
        record(xl, "SDXL hires fix", info)
        assert "A-STAR warnings" not in info, info
        assert "first pass: 4/4 steps" in info["A-STAR result"], info
        assert re.search(r"hires pass: (\d+)/\1 steps", info["A-STAR result"]), info
        assert res["pixels"][0].startswith(b"RGB(256, 256)")


    def test_sdxl_img2img_refines(self, xl, plain):
        init = base64.b64encode(_png(plain["pixels"][0])).decode()
        body = self.request(init_images=[init], denoising_strength=0.75, alwayson_scripts=ON)
        res = xl.img2img(**body)
        info = params(res)
        record(xl, "SDXL img2img", info)
        assert self.refined_all(info) == (4, 4), info  # the host runs int(0.75 * 4) + 1 steps
        off = xl.img2img(**{**body, "alwayson_scripts": OFF})
        assert off["pixels"][0] != res["pixels"][0]


    def test_sdxl_low_vram_refines_every_step(self, xl, on):
        """Checkpointed blocks recompute the same activations: the same image as without Low VRAM."""
        args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "step_size": 40,
                                     "low_vram": True}]}}
        res = xl.txt2img(**self.request(alwayson_scripts=args))
        info = params(res)
        record(xl, "SDXL low VRAM", info)
        assert self.refined_all(info) == (4, 4)
        assert res["pixels"][0] == on["pixels"][0]


    def test_sdxl_layout_with_overlays(self, xl):
        boxes = {"cat": [0.0, 0.0, 0.5, 1.0], "dog": [0.5, 0.1, 1.0, 0.9]}
        args = {"A-STAR": {"args": [{"concepts": "cat, dog", "step_rule": "steady", "layout": boxes,
                                     "layout_strength": 3, "show_maps": True}]}}
        res = xl.txt2img(**self.request(alwayson_scripts=args))
        info = params(res)
        record(xl, "SDXL layout + overlays", info)
        assert info["A-STAR layout"] == "cat: 0 0 0.5 1; dog: 0.5 0.1 1 0.9", info
        assert "in box" in info["A-STAR result"] and self.refined_all(info) == (4, 4), info
        # the image, then its overlay sheet (combined, cat, dog panels) with the same infotext
        assert len(res["images"]) == 2, len(res["images"])
        assert res["pixels"][1].startswith(f"RGB({3 * 384 + 2 * 4}, 384)".encode()), res["pixels"][1][:20]
        assert res["info"]["infotexts"][1] == res["info"]["infotexts"][0]


    def test_sdxl_refiner_switch_stops_cleanly(self, xl):
        log_before = len(xl.log_text())
        res = xl.txt2img(**self.request(steps=8, refiner_checkpoint=title(xl, self.REFINER), refiner_switch_at=0.5,
                                   alwayson_scripts=ON))
        info = params(res)
        record(xl, "SDXL refiner switch at 0.5", info)
        assert info["Refiner"].startswith(self.REFINER), info
        # one message, the switch; the steps before it refined
        assert re.fullmatch(rf"the model was switched during sampling \({self.REFINER_WORDS}\): A-STAR refines the "
                            r"first model only; A-STAR stopped at step \d+", info["A-STAR warnings"]), info
        (done, total), = result_counts(info["A-STAR result"])
        assert 0 < done < total == 8, info
        assert "Traceback" not in xl.log_text()[log_before:]
        # the next request is on the SDXL base model again and refined
        assert self.refined_all(params(xl.txt2img(**self.request(alwayson_scripts=ON)))) == (4, 4)


    def test_sdxl_interrupt_then_clean_requests(self, xl, plain):
        res = interrupted(xl, self.request(steps=150, alwayson_scripts=ON))
        (done, total), = result_counts(params(res)["A-STAR result"])
        assert 0 < done < total == 150
        assert xl.txt2img(**self.request())["pixels"][0] == plain["pixels"][0]
        assert self.refined_all(params(xl.txt2img(**self.request(alwayson_scripts=ON)))) == (4, 4)


    def xyz_cells(self, server, values: str) -> list[dict]:
        res = server.txt2img(**self.request(script_name="x/y/z plot", script_args=xyz_args(astar_axis(server), values),
                                       alwayson_scripts=ON))
        cells = [params({"info": {"infotexts": [t]}}) for t in res["info"]["infotexts"]]
        for cell in cells:
            record(server, f"SDXL X/Y/Z step size {values}", cell)
        assert all(self.refined_all(c) == (4, 4) for c in cells if "A-STAR result" in c), cells
        return cells


    def test_sdxl_xyz_axis_before_and_after_reload_ui(self, xl):
        """(Forge's Gradio 4 runs the Reload UI button's event through /run/predict as A1111's does.)"""
        assert {"10", "60"} <= {c.get("A-STAR step size") for c in self.xyz_cells(xl, "10, 60")}
        reload_ui(xl)
        assert {"20", "50"} <= {c.get("A-STAR step size") for c in self.xyz_cells(xl, "20, 50")}
        assert params(xl.txt2img(**self.request()))["Model"] == self.MODEL  # still the SDXL model
