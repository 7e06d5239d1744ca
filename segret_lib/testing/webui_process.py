"""The real AUTOMATIC1111 WebUI and WebUI Forge as server processes: start one from a tree that
tests/integration/setup_webui.sh (setup_forge.sh) prepared, on 127.0.0.1 and offline, drive it over its HTTP API,
stop it. Used by the real-host tests (tests/integration/conftest.py) and docs/make_screenshots.py."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT = float(os.environ.get("SEGRET_WEBUI_START_TIMEOUT", "900"))


def pixels(png: bytes) -> bytes:
    """The decoded pixels (the PNG also carries the infotext, which differs between requests)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return im.mode.encode() + repr(im.size).encode() + im.tobytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebUI:
    """The AUTOMATIC1111 WebUI v1.10.1 from the tree tests/integration/setup_webui.sh prepared in `work` (its venv,
    the writable tree, the models), started on 127.0.0.1 (CPU, offline) and driven over HTTP."""

    tree_name = "webui"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.tree = work / self.tree_name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "server.log"
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ process
    def command(self) -> list[str]:
        return [str(self.work / "venv" / "bin" / "python"), "launch.py", "--skip-install",
                "--skip-prepare-environment", "--skip-torch-cuda-test", "--skip-version-check", "--use-cpu", "all",
                "--no-half", "--no-half-vae", "--precision", "full", "--api", "--port", str(self.port),
                "--ckpt-dir", str(self.work / "models" / "Stable-diffusion"),
                "--lora-dir", str(self.work / "models" / "Lora"), "--no-download-sd-model", "--do-not-download-clip"]

    def start(self) -> None:
        env = dict(os.environ, HF_HOME=str(self.work / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
        env.pop("GRADIO_SERVER_NAME", None)  # never listen on anything but 127.0.0.1
        self.log = open(self.log_path, "w")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(self.command(), cwd=self.tree, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.wait_for_log("Startup time:", 1)
        self.wait_for_model()

    def wait_for_model(self) -> None:
        self.wait_for_log("Model loaded in", 1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, count: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.log_text().count(needle) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"the WebUI exited ({self.proc.returncode}); log:\n{self.log_text()[-4000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"no {needle!r} in the WebUI log after {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    # ------------------------------------------------------------------ HTTP
    def request(self, method: str, path: str, body=None, timeout: float = 600):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {e.read()[:2000]!r}") from e
        return json.loads(raw) if raw else None

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body=None, timeout: float = 600):
        return self.request("POST", path, body if body is not None else {}, timeout)

    def txt2img(self, **body) -> dict:
        return self.generate("txt2img", body)

    def img2img(self, **body) -> dict:
        return self.generate("img2img", body)

    def generate(self, kind: str, body: dict) -> dict:
        res = self.post(f"/sdapi/v1/{kind}", body)
        res["info"] = json.loads(res["info"])
        res["pixels"] = [pixels(base64.b64decode(i)) for i in res["images"]]
        return res


class Forge(WebUI):
    """Stable Diffusion WebUI Forge from the tree tests/integration/setup_forge.sh prepared (CPU, offline)."""

    tree_name = "forge"

    def command(self) -> list[str]:
        return [str(self.work / "venv" / "bin" / "python"), "launch.py", "--skip-install",
                "--skip-prepare-environment", "--skip-version-check", "--always-cpu", "--api",
                "--port", str(self.port), "--ckpt-dir", str(self.work / "models" / "Stable-diffusion"),
                "--lora-dir", str(self.work / "models" / "Lora")]

    def wait_for_model(self) -> None:
        """Forge loads the checkpoint at the first generation."""
