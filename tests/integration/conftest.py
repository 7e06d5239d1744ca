"""The real AUTOMATIC1111 WebUI as a test fixture: started once per test session from the tree that
tests/integration/setup_webui.sh prepared, on 127.0.0.1, and driven over HTTP.

SEGRET_WEBUI_DIR names the WebUI v1.10.1 source tree; without it these tests are skipped.
SEGRET_WEBUI_WORK is where setup_webui.sh put the venv, the writable tree and the models (default .webui-work).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segret_lib.testing.webui_process import Forge, WebUI

ROOT = Path(__file__).resolve().parents[2]


def _serve(kind: type, env: str, work_env: str, work_default: str, tree: str, setup: str, skip: str):
    """Start the prepared host server `kind` for the session (skipped without `env`), yield it, stop it."""
    if not os.environ.get(env):
        pytest.skip(skip)
    work = Path(os.environ.get(work_env, ROOT / work_default)).resolve()
    extension = work / tree / "extensions" / "sd-webui-segret"
    if not ((work / "venv" / "bin" / "python").exists() and extension.is_dir()):
        pytest.fail(f"{env} is set but {work} is not prepared: run tests/integration/{setup}")
    server = kind(work)
    try:
        (work / "results.log").unlink(missing_ok=True)
        server.start()
        server.post("/sdapi/v1/options", {"live_previews_enable": False, "samples_save": False, "grid_save": False,
                                          "save_images_add_number": False, "CLIP_stop_at_last_layers": 1})
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def webui():
    yield from _serve(WebUI, "SEGRET_WEBUI_DIR", "SEGRET_WEBUI_WORK", ".webui-work", "webui", "setup_webui.sh",
                      "real-WebUI tests: set SEGRET_WEBUI_DIR to an AUTOMATIC1111 WebUI v1.10.1 tree and run "
                      "tests/integration/setup_webui.sh (.ci/run does both)")


@pytest.fixture(scope="session")
def forge():
    yield from _serve(Forge, "SEGRET_FORGE_DIR", "SEGRET_FORGE_WORK", ".forge-work", "forge", "setup_forge.sh",
                      "real-Forge tests: set SEGRET_FORGE_DIR to a Stable Diffusion WebUI Forge tree (f2.0.1v1.10.1) "
                      "and run tests/integration/setup_forge.sh (.ci/run does both)")
