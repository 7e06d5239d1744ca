"""A-STAR on low-bit UNet storage in the real Forge (issue 17, deliverable 4): what runs offline on the CPU here.

float8 storage (Forge's "float8-e4m3fn" UNet storage option, no LoRA) is refined. GGUF: Forge itself does not load
a tiny GGUF checkpoint in this setup (docs/forge.md#low-bit-weights), so the weight check is run, in Forge's own
Python, on Forge's own ParameterGGUF read from a GGUF file written by Forge's bundled `gguf` (forge_gguf_check.py).
NF4: Forge does not install bitsandbytes, so setup_forge.sh puts it in a folder of its own, and a tiny NF4 layer
file is loaded by Forge's own 4-bit layer in Forge's Python (forge_nf4_check.py). Both are refused with the message.
Skipped unless SEGRET_FORGE_DIR names the Forge tree.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_real_forge import ON, refined_all, request
from tests.integration.test_real_webui import params, record

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("SEGRET_FORGE_WORK", ROOT / ".forge-work")).resolve()


def forge_check(script: str, tmp_path: Path, *work_dirs: str) -> dict:
    """Run `script` (beside this file) in Forge's own Python with the Forge tree, this repository, the named
    folders of the Forge work directory and tmp_path as arguments; the JSON it prints last."""
    tree, python = os.environ.get("SEGRET_FORGE_DIR"), WORK / "venv" / "bin" / "python"
    if not tree or not python.exists() or not all((WORK / d).is_dir() for d in work_dirs):
        pytest.skip("real-Forge tests: set SEGRET_FORGE_DIR and run tests/integration/setup_forge.sh")
    run = subprocess.run([str(python), str(Path(__file__).with_name(script)), tree, str(ROOT),
                          *(str(WORK / d) for d in work_dirs), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_forge_gguf_parameter_is_refused_with_the_message(tmp_path):
    seen = forge_check("forge_gguf_check.py", tmp_path)
    assert seen["class"] == "ParameterGGUF" and seen["shape"] == [64, 32]
    assert seen["dequantized_error"] < 0.05  # a real Q8_0 tensor, read back by Forge's code
    assert seen["before"] == "" and seen["after"] == "GGUF / NF4 / FP4 weights"
    assert seen["message"] == ("GGUF / NF4 / FP4 weights are not supported by A-STAR in Forge yet; the image is "
                               "rendered without it")


def test_forge_nf4_layer_is_refused_with_the_message(tmp_path):
    seen = forge_check("forge_nf4_check.py", tmp_path, "bnb")  # bitsandbytes, installed by setup_forge.sh
    # Forge's loader took the file's quant state: a packed uint8 weight, 2 values a byte
    assert seen["class"] == "ForgeParams4bit" and seen["quant_type"] == "nf4", seen
    assert seen["stored"] == ["torch.uint8", 64 * 32 // 2] and "weight.quant_state.bitsandbytes__nf4" in seen["keys"]
    assert seen["correlation"] > 0.95  # it dequantizes back to the weight
    assert seen["before"] == "" and seen["after"] == "GGUF / NF4 / FP4 weights"
    assert seen["message"] == ("GGUF / NF4 / FP4 weights are not supported by A-STAR in Forge yet; the image is "
                               "rendered without it")


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
