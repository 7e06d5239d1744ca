"""A-STAR on low-bit UNet storage in the real Forge (issue 17, deliverable 4): what runs offline on the CPU here.

float8 storage (Forge's "float8-e4m3fn" UNet storage option, no LoRA) is refined. Not here: GGUF and NF4, because
Forge itself does not load them in this setup (see docs/forge.md#low-bit-weights); A-STAR's message for them is
checked in tests/test_forge_adapter.py. Skipped unless SEGRET_FORGE_DIR names the Forge tree (see conftest.py).
"""

from __future__ import annotations

from tests.integration.test_real_forge import ON, refined_all, request
from tests.integration.test_real_webui import params, record


def storage(forge, dtype: str, memory: int) -> None:
    # Forge re-reads its loading parameters only when a memory or module option changes with it
    forge.post("/sdapi/v1/options", {"forge_unet_storage_dtype": dtype, "forge_inference_memory": memory})


def test_float8_storage_refines_every_step(forge):
    memory = forge.get("/sdapi/v1/options")["forge_inference_memory"]
    full = forge.txt2img(**request(alwayson_scripts=ON))
    plain = forge.txt2img(**request())
    storage(forge, "float8-e4m3fn", memory + 1)
    try:
        before = forge.log_text().count("'storage_dtype': torch.float8_e4m3fn")
        res = forge.txt2img(**request(alwayson_scripts=ON))
        info = params(res)
        record(forge, "float8-e4m3fn storage", info)
        assert forge.log_text().count("'storage_dtype': torch.float8_e4m3fn") > before, "not stored in float8"
        assert refined_all(info) == (6, 6)
        assert res["pixels"][0] != full["pixels"][0]  # the float8 weights, not the full ones, made it
    finally:
        storage(forge, "Automatic", memory)
    # back to the full weights: a plain request as before
    assert forge.txt2img(**request())["pixels"][0] == plain["pixels"][0]
