"""A-STAR on SDXL in the real AUTOMATIC1111 WebUI v1.10.1 (a tiny random SDXL checkpoint: sgm DiffusionEngine, CLIP-L
and OpenCLIP-G text towers, size conditioning; CPU), driven over its HTTP API.

The module switches the server to the SDXL checkpoint (tests/integration/make_models.py) and back to the SD1 one
at its end. Skipped unless SEGRET_WEBUI_DIR names the WebUI tree (see conftest.py).
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from tests.integration.sdxl_cases import ON, SdxlCases, title
from tests.integration.test_real_webui import params


class TestWebUISdxl(SdxlCases):
    MODEL = "c-tiny-sdxl"
    REFINER = "d-tiny-sdxl-refiner"
    REFINER_WORDS = "the SDXL refiner"
    REQUEST_EXTRA: ClassVar[dict] = {}
    HIRES_EXTRA: ClassVar[dict] = {}


HOST = TestWebUISdxl


@pytest.fixture(scope="module")
def xl(webui):
    """The server with the SDXL checkpoint loaded; the checkpoint before it is put back afterwards."""
    before = webui.get("/sdapi/v1/options")["sd_model_checkpoint"]
    webui.post("/sdapi/v1/options", {"sd_model_checkpoint": title(webui, HOST.MODEL)})
    try:
        yield webui
    finally:
        webui.post("/sdapi/v1/options", {"sd_model_checkpoint": before})


@pytest.fixture(scope="module")
def plain(xl):
    """The first SDXL request, before A-STAR ran on SDXL."""
    res = xl.txt2img(**HOST.request())
    assert params(res)["Model"] == HOST.MODEL, params(res)
    config = xl.work / "models" / "Stable-diffusion" / f"{HOST.MODEL}.yaml"  # the sgm DiffusionEngine config
    assert f"Creating model from config: {config}" in xl.log_text()
    return res


@pytest.fixture(scope="module")
def on(xl, plain):
    """A-STAR on with Euler a (the first request that refines on SDXL)."""
    return xl.txt2img(**HOST.request(alwayson_scripts=ON))
