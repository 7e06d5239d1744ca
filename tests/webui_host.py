"""Drives the extension through the fake WebUI host: load scripts/segret.py, build its UI, generate."""

from __future__ import annotations

from pathlib import Path

from modules import processing, scripts, shared
from modules.sd_models import TinySDModel

from segret_lib.settings.params import UI_FIELDS

ROOT = Path(__file__).resolve().parents[1]
MECHANICS_RULE = "steady"  # refines every step (see Host.args)

_loaded = False


def load_extension():
    global _loaded
    if not _loaded:
        scripts.load_scripts([str(ROOT / "scripts" / "segret.py")], str(ROOT))
        _loaded = True


class Host:
    def __init__(self, kind="sd1", is_img2img=False, device="cpu", dtype=None):
        load_extension()
        shared.sd_model = TinySDModel(kind, device=device, dtype=dtype or __import__("torch").float32)
        self.model = shared.sd_model
        self.runner = scripts.ScriptRunner()
        self.runner.initialize_scripts(is_img2img)
        self.runner.setup_ui()
        self.script = next(s for s in self.runner.alwayson_scripts if s.title() == "A-STAR")

    def args(self, **values):
        """Full script_args: UI defaults, with ours set by field name (or raw list via `raw`).

        The step rule is "steady" unless given: these tests check that every step of every sampler and pass is
        refined, and the default rule ("early") refines only the first half; its cutoff has tests of its own
        (test_webui_extension.py test_default_rule_*).
        """
        args = self.runner.default_args()
        raw = values.pop("raw", None)
        if raw is None:
            values.setdefault("step_rule", MECHANICS_RULE)
        if raw is not None:
            for i, v in enumerate(raw):
                args[self.script.args_from + i] = v
        for name, v in values.items():
            args[self.script.args_from + UI_FIELDS.index(name)] = v
        return args

    def txt2img(self, prompt="a cat and a dog", script_args=None, **kw):
        shared.sd_model = self.model
        kw.setdefault("width", 256)
        kw.setdefault("height", 256)
        p = processing.StableDiffusionProcessingTxt2Img(prompt=prompt, sd_model=self.model, scripts=self.runner,
                                                        script_args=script_args or self.runner.default_args(), **kw)
        return p, processing.run_generation(p)

    def img2img(self, init_latent, prompt="a cat and a dog", script_args=None, **kw):
        shared.sd_model = self.model
        kw.setdefault("width", 256)
        kw.setdefault("height", 256)
        p = processing.StableDiffusionProcessingImg2Img(init_latent=init_latent, prompt=prompt, sd_model=self.model,
                                                        scripts=self.runner,
                                                        script_args=script_args or self.runner.default_args(), **kw)
        return p, processing.run_generation(p)
