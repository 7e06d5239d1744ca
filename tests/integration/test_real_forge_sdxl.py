"""A-STAR on SDXL in the real Stable Diffusion WebUI Forge (f2.0.1v1.10.1; a tiny random checkpoint that Forge
recognises as SDXL: CLIP-L and CLIP-G text encoders, size conditioning; CPU), driven over its HTTP API.

The module switches the server to the SDXL checkpoint (tests/integration/make_forge_model.py) and back to the
SD1.5 one at its end. Skipped unless SEGRET_FORGE_DIR names the Forge tree (see conftest.py).
"""

from __future__ import annotations

import re
from typing import ClassVar

import pytest

from tests.integration.sdxl_cases import ON, SdxlCases, title
from tests.integration.test_real_webui import params


class TestForgeSdxl(SdxlCases):
    MODEL = "tiny-sdxl"
    REFINER = "tiny-sdxl-refiner"  # a link to the same file: another checkpoint to Forge
    REFINER_WORDS = "the refiner"
    REQUEST_EXTRA: ClassVar[dict] = {"scheduler": "Automatic"}
    HIRES_EXTRA: ClassVar[dict] = {"hr_additional_modules": ["Use same choices"]}


HOST = TestForgeSdxl


@pytest.fixture(scope="module")
def xl(forge):
    """The server with the SDXL checkpoint loaded; the checkpoint before it is put back afterwards."""
    before = forge.get("/sdapi/v1/options")["sd_model_checkpoint"]
    forge.post("/sdapi/v1/options", {"sd_model_checkpoint": title(forge, HOST.MODEL)})
    try:
        yield forge
    finally:
        forge.post("/sdapi/v1/options", {"sd_model_checkpoint": before})


@pytest.fixture(scope="module")
def plain(xl):
    """The first SDXL request, before A-STAR ran on SDXL."""
    res = xl.txt2img(**HOST.request())
    assert params(res)["Model"] == HOST.MODEL, params(res)
    # Forge split the checkpoint as SDXL's (a second text encoder, CLIP-G)
    assert re.search(r"StateDict Keys: \{'unet': \d+, 'vae': \d+, 'text_encoder': \d+, 'text_encoder_2': \d+",
                     xl.log_text()), "Forge did not load the checkpoint as SDXL"
    return res


@pytest.fixture(scope="module")
def on(xl, plain):
    """A-STAR on with Euler a (the first request that refines on SDXL)."""
    return xl.txt2img(**HOST.request(alwayson_scripts=ON))
