"""Support for tests, benchmarks, quality/ and docs (never imported by the extension at run time, and never
importing a host at import time): real third-party components (thirdparty.py), tiny models (tiny_models.py), the
CFG wrapper that drives a k-diffusion sampler with a session (cfg.py), the real WebUI / Forge server process
(webui_process.py), cost counters (profiling.py)."""
