"""The concept chips and tooltips in a real browser against a running WebUI or Forge page (by hand, not in CI):

    python tests/integration/browser_check.py http://127.0.0.1:7860 [/usr/bin/chromium]

Needs playwright (pip install playwright) and a Chromium binary (Debian: apt-get install chromium). Types a prompt
into txt2img, waits for the chips, clicks one, and checks the concepts field and the controls' hover titles.
Prints a JSON report and exits non-zero when a check fails.
"""

from __future__ import annotations

import json
import sys

from playwright.sync_api import sync_playwright

URL = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:7860"
CHROMIUM = sys.argv[2] if len(sys.argv) > 2 else "/usr/bin/chromium"


def main() -> int:
    report: dict[str, object] = {"url": URL}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if "segret" in m.text.lower() else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(URL, wait_until="domcontentloaded", timeout=300_000)
        page.wait_for_selector("#segret_txt2img_chips", state="attached", timeout=300_000)
        report["gradio"] = page.evaluate("() => (window.gradio_config || {}).version || null")
        page.fill("#txt2img_prompt textarea", "a photo of a cat and a dog")
        page.wait_for_selector("#segret_txt2img_chips .segret-chip", state="attached", timeout=30_000)
        chips = page.eval_on_selector_all("#segret_txt2img_chips .segret-chip", "els => els.map(e => e.textContent)")
        report["chips"] = chips
        page.eval_on_selector("#segret_txt2img_chips .segret-chip[data-word='cat']", "e => e.click()")
        page.wait_for_timeout(500)
        concepts = page.eval_on_selector("#segret_txt2img_concepts textarea, #segret_txt2img_concepts input",
                                         "e => e.value")
        report["concepts after clicking 'cat'"] = concepts
        titles = page.evaluate("""() => Array.from(document.querySelectorAll('[id^="segret_txt2img"][title]'))
                                   .map(e => [e.id, e.getAttribute('title').slice(0, 40)])""")
        report["controls with a tooltip"] = len(titles)
        report["tooltip examples"] = titles[:3]
        report["console/page errors"] = problems
        browser.close()
    ok = "cat" in (report["chips"] or []) and "cat" in str(concepts) and report["controls with a tooltip"] > 5
    ok = ok and not problems
    report["ok"] = ok
    print(json.dumps(report, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
