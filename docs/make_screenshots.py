"""Screenshots of the Layout panel in the real WebUI (dark theme), driven through headless Chromium's DevTools
protocol with real mouse events, and the overlay sheet that generation adds to the gallery.

    export SEGRET_WEBUI_WORK=/tmp/segret-shot-work   # not under a hidden folder: gradio refuses to serve the
    SEGRET_WEBUI_DIR=... bash tests/integration/setup_webui.sh   # WebUI's javascript from one (HTTP 403)
    .venv/bin/python docs/make_screenshots.py      # needs `chromium` on PATH

Writes docs/layout_panel.png (the accordion with two boxes drawn) and docs/layout_gallery.png (the gallery after
generating: the image and its overlay sheet). The WebUI runs the random-weight test checkpoint, so the image
itself is noise; docs/overlay_shapes.png (quality/overlay_example.py) shows overlays on a trained model.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from segret_lib.testing.webui_process import WebUI  # noqa: E402

DOCS = ROOT / "docs"
PORT = 9333


class Page:
    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expr: str):
        res = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expr[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait(self, expr: str, timeout: float = 120.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if await self.js(expr):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(expr)

    async def mouse(self, kind: str, x: float, y: float) -> None:
        await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                        buttons=0 if kind == "mouseReleased" else 1, clickCount=1)

    async def drag(self, x0: float, y0: float, x1: float, y1: float) -> None:
        await self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x0, y=y0)
        await self.mouse("mousePressed", x0, y0)
        for k in range(1, 6):
            await self.mouse("mouseMoved", x0 + (x1 - x0) * k / 5, y0 + (y1 - y0) * k / 5)
        await self.mouse("mouseReleased", x1, y1)

    async def shot(self, selector: str, path: Path, pad: int = 6) -> None:
        r = await self.js(f"(() => {{ const e = gradioApp().querySelector('{selector}'); e.scrollIntoView(); "
                          "const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
        await asyncio.sleep(0.5)
        r = await self.js(f"(() => {{ const r = gradioApp().querySelector('{selector}').getBoundingClientRect(); "
                          "return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; })()")
        clip = {"x": max(r[0] - pad, 0), "y": max(r[1] - pad, 0), "width": r[2] + 2 * pad, "height": r[3] + 2 * pad,
                "scale": 1}
        import base64

        data = await self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        print("wrote", path)


async def drive(url: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json/list") as r:
        target = next(t for t in json.load(r) if t["type"] == "page")
    async with websockets.connect(target["webSocketDebuggerUrl"], max_size=2**26) as ws:
        page = Page(ws)
        await page.call("Page.enable")
        await page.call("Emulation.setDeviceMetricsOverride", width=1500, height=1400, deviceScaleFactor=1,
                        mobile=False)
        await page.call("Page.navigate", url=url + "/?__theme=dark")
        await page.wait("typeof gradioApp === 'function' && !!gradioApp().querySelector('#segret_txt2img')", 300)
        await asyncio.sleep(3)
        await page.js("""(() => {
            const app = gradioApp();
            const prompt = app.querySelector('#txt2img_prompt textarea');
            prompt.value = 'a photo of a cat and a dog on a sofa'; updateInput(prompt);
            app.querySelector('#segret_txt2img .label-wrap').click();
            const concepts = app.querySelector('#segret_txt2img_concepts textarea');
            concepts.value = 'cat, dog'; updateInput(concepts);
            const show = app.querySelector('#segret_txt2img_show_maps input');
            if (!show.checked) show.click();
            app.querySelector('#segret_txt2img_layout_panel .label-wrap').click();
            return true; })()""")
        await page.wait("!!gradioApp().querySelector('#segret_txt2img_layout_editor .segret-layout-stage')")
        await asyncio.sleep(1)
        stage = await page.js("(() => { const s = gradioApp().querySelector('.segret-layout-stage'); "
                              "s.scrollIntoView({block: 'center'}); const r = s.getBoundingClientRect(); "
                              "return [r.left, r.top, r.width, r.height]; })()")
        x, y, w, h = stage
        await page.drag(x + 0.05 * w, y + 0.25 * h, x + 0.48 * w, y + 0.9 * h)   # cat: left
        await page.drag(x + 0.55 * w, y + 0.15 * h, x + 0.95 * w, y + 0.8 * h)   # dog: right (selected next)
        boxes = await page.js("gradioApp().querySelector('#segret_txt2img_layout textarea').value")
        print("boxes:", boxes)
        assert '"cat"' in boxes and '"dog"' in boxes, boxes
        await page.js("(() => { const s = gradioApp().querySelector('#segret_txt2img_layout_strength input');"
                      " s.value = 3; updateInput(s); return true; })()")
        await asyncio.sleep(1)
        await page.shot("#segret_txt2img", DOCS / "layout_panel.png")
        await page.js("gradioApp().querySelector('#txt2img_generate').click()")
        await page.wait("gradioApp().querySelectorAll('#txt2img_gallery .thumbnail-item img, "
                        "#txt2img_gallery .grid-wrap img').length >= 2", 600)
        await asyncio.sleep(2)
        await page.js("(() => { const t = gradioApp().querySelectorAll('#txt2img_gallery .thumbnail-item'); "
                      "if (t.length > 1) t[1].click(); return t.length; })()")
        await asyncio.sleep(2)
        await page.shot("#txt2img_results", DOCS / "layout_gallery.png")


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed")
    url = os.environ.get("SEGRET_WEBUI_URL")  # a WebUI already running (e.g. `launch.py` by hand)
    work = Path(os.environ.get("SEGRET_WEBUI_WORK", ROOT / ".webui-work")).resolve()
    server = None if url else WebUI(work)
    if server is not None:
        server.start()
        url = server.url
    profile = tempfile.mkdtemp(prefix="segret-chromium-")
    browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                f"--user-data-dir={profile}", f"--remote-debugging-port={PORT}", "--force-dark-mode",
                                "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json/version").read()
                break
            except OSError:
                time.sleep(0.5)
        asyncio.run(drive(url))
    finally:
        browser.terminate()
        browser.wait(20)
        if server is not None:
            server.stop()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
