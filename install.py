"""Run by the WebUI at launch. A-STAR needs only what the WebUI already ships (torch, numpy, pillow, gradio),
so nothing is installed; this only reports a missing package instead of failing later."""

import importlib.util

missing = [name for name in ("torch", "numpy", "PIL", "gradio") if importlib.util.find_spec(name) is None]
if missing:
    print(f"[A-STAR] packages the WebUI normally provides are missing: {', '.join(missing)}")
